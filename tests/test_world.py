import json

import numpy as np
import pytest

from datarights.errors import DatarightsError
from datarights.world import LABELS, WorldConfig, info, make_world, read_imagefolder
from datarights.world.generate import owner_counts


def test_world_is_deterministic_and_labelled():
    a_img, a_meta = make_world(WorldConfig(n_images=50, seed=1))
    b_img, b_meta = make_world(WorldConfig(n_images=50, seed=1))
    c_img, _ = make_world(WorldConfig(n_images=50, seed=2))
    assert np.array_equal(a_img, b_img) and a_meta == b_meta
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (50, 16, 16, 3) and a_img.min() >= 0 and a_img.max() <= 1
    for m in a_meta:
        for key, space in LABELS.items():
            assert m[key] in space, (key, m[key])
        assert m["text"] and m["owner"]


def test_vocabulary_shape():
    v = info(owner_counts(WorldConfig(n_images=500)))
    for key in ("objects", "categories", "styles", "characters", "memorized", "compositions", "owners"):
        assert key in v
    for kind in ("objects", "styles", "characters", "memorized", "compositions"):
        assert v[kind], kind
        for e in v[kind]:
            assert {"name", "prompt", "anchor", "nearby"} <= set(e), e
            assert e["name"] != e["anchor"] and e["anchor"] not in e["nearby"]
            assert e["name"].lower() in e["prompt"].lower() or kind == "compositions"
    assert len(v["styles"]) >= 8 and all("owner" in s for s in v["styles"])
    assert len({s["owner"] for s in v["styles"]}) == len(v["styles"])
    assert len(v["owners"]) >= 50
    assert sum(o["images"] for o in v["owners"]) == 500
    sizes = sorted(o["images"] for o in v["owners"])
    assert sizes[len(sizes) // 2] < 500 / len(sizes)  # most owners are small


def test_memorized_image_repeats_exactly():
    imgs, metas = make_world(WorldConfig(n_images=400, seed=0))
    mem = [i for i, m in enumerate(metas) if m["memorized"] != "none"]
    assert len(mem) >= 5
    assert all(np.array_equal(imgs[mem[0]], imgs[i]) for i in mem)
    assert len({metas[i]["text"] for i in mem}) == 1


def test_imagefolder_roundtrip(tiny_world):
    data = read_imagefolder(tiny_world)
    assert len(data) == 64 and data.images.shape == (64, 3, 16, 16)
    rows = [json.loads(line) for line in open(tiny_world / "metadata.jsonl")]
    assert [r["text"] for r in rows] == data.texts
    assert {"file_name", "text", "owner", "object", "style"} <= set(rows[0])


def test_imagefolder_errors(tmp_path, tiny_world):
    with pytest.raises(DatarightsError, match="does not exist"):
        read_imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatarightsError, match="no metadata.jsonl"):
        read_imagefolder(tmp_path / "empty")
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "images" / "x.png").write_bytes(b"not a png")
    (bad / "metadata.jsonl").write_text(json.dumps({"file_name": "images/x.png", "text": "a face"}) + "\n")
    with pytest.raises(DatarightsError, match="not a readable image"):
        read_imagefolder(bad)
    with pytest.raises(DatarightsError, match="already exists"):
        from datarights.world import make_world_folder
        make_world_folder(tiny_world, WorldConfig(n_images=10))
