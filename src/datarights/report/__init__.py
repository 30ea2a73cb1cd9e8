"""Readable, self-contained HTML reports (Jinja2) with image grids; results also go to JSON."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import jinja2
import torch

from ..files import atomic_folder, write_json, write_text_atomic

TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; margin: .5em 0 1em; }
.cell { width: 96px; font-size: 11px; line-height: 1.25; }
.cell img { width: 96px; height: 96px; image-rendering: pixelated; display: block; border: 1px solid #ccc; }
.ok { color: #17803d; } .bad { color: #b42318; } .muted { color: #666; font-size: .9em; }
.bar { background: #4f7cff; height: 12px; display: inline-block; vertical-align: middle; }
</style></head><body>
<h1>{{ title }}</h1>
{% if subtitle %}<p class="muted">{{ subtitle }}</p>{% endif %}
{% for s in sections %}
<h2>{{ s.title }}</h2>
{% if s.text %}<p>{{ s.text }}</p>{% endif %}
{% if s.metrics %}<table>{% for k, v in s.metrics.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% if s.table %}<table><tr>{% for h in s.table.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in s.table.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% if s.bars %}<table>{% for b in s.bars %}<tr><td>{{ b.label }}</td><td><span class="bar" style="width: {{ (b.value * 400)|round|int }}px"></span> {{ '%.3f'|format(b.value) }}</td></tr>{% endfor %}</table>{% endif %}
{% for g in s.grids or [] %}
<h3>{{ g.caption }}</h3><div class="grid">
{% for it in g["items"] %}<div class="cell"><img src="{{ it.uri }}" alt="{{ it.label }}"><span class="{{ it.cls or '' }}">{{ it.label }}</span></div>{% endfor %}
</div>{% endfor %}
{% endfor %}
<p class="muted">Written by datarights. Results: <code>results.json</code> beside this page.</p>
</body></html>
""")


def image_uri(image: torch.Tensor, scale: int = 1) -> str:
    """One image [3, H, W] in [0, 1] -> a PNG data URI (the page upscales it without smoothing)."""
    from PIL import Image

    arr = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype("uint8")
    pil = Image.fromarray(arr)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def dim_outside(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The image [3, H, W] with everything outside the region (weights [H, W]) dimmed: a local query's view."""
    return image * (0.3 + 0.7 * region.to(image)[None].clamp(0, 1))


def grid(caption: str, images: torch.Tensor, labels: list[str], classes: list[str] | None = None) -> dict:
    """A report grid: one cell per image with its label (and an optional css class: ok / bad)."""
    classes = classes or [""] * len(labels)
    return {"caption": caption, "items": [{"uri": image_uri(im), "label": lb, "cls": c}
                                          for im, lb, c in zip(images, labels, classes)]}


def render_report(folder: str | Path, title: str, sections: list[dict], results: dict, subtitle: str = "") -> Path:
    """Write index.html and results.json into an existing folder (each file atomically); returns the HTML path."""
    folder = Path(folder)
    write_json(folder / "results.json", results)
    write_text_atomic(folder / "index.html", TEMPLATE.render(title=title, subtitle=subtitle, sections=sections))
    return folder / "index.html"


def write_report(out_dir: str | Path, title: str, sections: list[dict], results: dict, subtitle: str = "",
                 overwrite: bool = False, inputs: tuple = ()) -> Path:
    """Write the report folder <out_dir> (index.html + results.json) atomically; returns the HTML path.

    An existing report folder is replaced only with `overwrite`; see files.atomic_folder.
    """
    with atomic_folder(out_dir, "report", inputs, overwrite, flag="--report") as tmp:
        render_report(tmp, title, sections, results, subtitle)
    return Path(out_dir) / "index.html"
