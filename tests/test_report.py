import json

import torch

from datarights.report import grid, write_report


def test_report_has_grids_tables_and_json(tmp_path):
    imgs = torch.rand(3, 3, 16, 16)
    html = write_report(tmp_path / "r", "title <x>", [
        {"title": "s1", "text": "hello", "metrics": {"a": 1},
         "grids": [grid("g", imgs, ["one", "two", "three"], ["ok", "bad", ""])]},
        {"title": "s2", "table": {"header": ["h"], "rows": [[1]]}, "bars": [{"label": "o", "value": 0.5}]},
    ], {"a": 1})
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 3 and "title &lt;x&gt;" in page and 'class="bad"' in page
    assert json.loads((tmp_path / "r" / "results.json").read_text()) == {"a": 1}
