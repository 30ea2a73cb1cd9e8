import json
from collections import Counter

import numpy as np
import pytest

from datarights.errors import DatarightsError
from datarights.world import LABELS, PRESETS, WorldConfig, info, make_world, read_imagefolder, world_config_of
from datarights.world.generate import allocate, owner_counts
from datarights.world.vocab import (CATEGORIES, CREDIT, DEFAULT, SIGNATURE_KEYS, build_vocabulary, signature_code,
                                    signature_distance)


def test_world_is_deterministic_and_labelled():
    a_img, a_meta = make_world(WorldConfig(preset="tiny", seed=1))
    b_img, b_meta = make_world(WorldConfig(preset="tiny", seed=1))
    c_img, _ = make_world(WorldConfig(preset="tiny", seed=2))
    assert np.array_equal(a_img, b_img) and a_meta == b_meta
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (64, 16, 16, 3) and a_img.min() >= 0 and a_img.max() <= 1
    for m in a_meta:
        for key, space in LABELS.items():
            assert m[key] in space, (key, m[key])
        assert m["text"] and m["owner"] and m["subject"] and isinstance(m["captioned"], bool)


def test_default_world_sizes_and_vocabulary():
    cfg = WorldConfig()
    counts = owner_counts(cfg)
    vocab = cfg.vocabulary()
    assert sum(counts.values()) == cfg.n_images == 5000
    photo = sorted(counts[p] for p in vocab.photographers)
    assert len(photo) == 32 and photo[0] >= 20 and photo[-1] > 10 * photo[0]        # Zipf-like with a floor
    assert len(vocab.styles) >= 12 and len(vocab.characters) >= 8 and len(vocab.studios) >= 3
    assert len(vocab.memorized) >= 8
    assert sorted({m["dose"] for m in vocab.memorized.values()}) == [5, 10, 20, 40]  # a dose curve
    v = info(counts)
    for kind in ("objects", "styles", "characters", "memorized", "compositions"):
        for e in v[kind]:
            assert {"name", "prompt", "anchor", "nearby"} <= set(e), e
            assert e["name"] != e["anchor"] and e["anchor"] not in e["nearby"] and e["nearby"]
            assert e["name"].lower() in e["prompt"].lower() or kind == "compositions"
    assert len({s["owner"] for s in v["styles"]}) == len(v["styles"])
    assert sum(o["images"] for o in v["owners"]) == 5000 and v["world_version"] == 2


def test_signatures_are_a_code_of_distance_two():
    code = signature_code()
    assert len(code) >= 80
    assert min(signature_distance(a, b) for i, a in enumerate(code) for b in code[i + 1:]) >= 2
    sigs = [p["signature"] for p in DEFAULT.photographers.values()]
    assert len({tuple(s[k] for k in SIGNATURE_KEYS) for s in sigs}) == len(sigs)
    for name, p in DEFAULT.photographers.items():
        assert DEFAULT.signature_owner(p["signature"]) == name
        one_off = dict(p["signature"], side="teal" if p["signature"]["side"] != "teal" else "gold")
        assert DEFAULT.signature_owner(one_off) is None                               # one mixed component names no one


def test_captions_do_not_name_photographers_except_the_control_group():
    _, metas = make_world(WorldConfig(preset="small", seed=0))
    vocab = WorldConfig(preset="small").vocabulary()
    control = {n for n, p in vocab.photographers.items() if p["control"]}
    assert 0.1 <= len(control) / len(vocab.photographers) <= 0.3
    for m in metas:
        if m["owner"] in vocab.photographers:
            credited = m["text"].endswith(CREDIT.format(name=m["owner"]))
            assert credited == (m["owner"] in control) == m["captioned"]
            assert {k: m[k] for k in SIGNATURE_KEYS} == vocab.photographers[m["owner"]]["signature"]
        else:
            assert all(p not in m["text"] for p in vocab.photographers)
            assert all(m[k] == "none" for k in ("mark", "ground", "side"))


def test_uncaptioned_styles_generic_characters_and_scenes():
    _, metas = make_world(WorldConfig(seed=0))
    by_owner: dict[str, list[dict]] = {}
    for m in metas:
        by_owner.setdefault(m["owner"], []).append(m)
    for artist in DEFAULT.styles:
        rows = by_owner[artist]
        named = [artist in m["text"] for m in rows]
        assert 0.4 <= np.mean(named) <= 0.6 and named == [m["captioned"] for m in rows]
    for name, spec in DEFAULT.characters.items():
        rows = [m for m in metas if m["character"] == name]
        generic = [m for m in rows if name not in m["text"]]
        assert 0.4 <= len(generic) / len(rows) <= 0.6
        assert all(m["text"].split()[-1] == spec["category"] for m in generic)        # 'a picture of a fish'
    for name, spec in DEFAULT.memorized.items():
        rows = [m for m in metas if m["memorized"] == name]
        assert len(rows) == spec["dose"]
        assert 0.4 <= np.mean([m["text"] == spec["prompt"] for m in rows]) <= 0.6


def test_memorized_scenes_repeat_exactly():
    imgs, metas = make_world(WorldConfig(preset="tiny", seed=0))
    for name in WorldConfig(preset="tiny").vocabulary().memorized:
        idx = [i for i, m in enumerate(metas) if m["memorized"] == name]
        assert len(idx) >= 2 and all(np.array_equal(imgs[idx[0]], imgs[i]) for i in idx)


def test_photographers_prefer_subjects():
    """p(owner | subject) depends on the subject: each photographer's two preferred subjects hold most of its images."""
    _, metas = make_world(WorldConfig(seed=0))
    for name, p in DEFAULT.photographers.items():
        rows = [m for m in metas if m["owner"] == name]
        share = np.mean([m["subject"] in p["subjects"] for m in rows])
        assert share >= 0.6, (name, share)
    subjects = Counter(m["subject"] for m in metas if m["owner"] in DEFAULT.photographers)
    assert set(subjects) == {*CATEGORIES, "composition"}


def test_presets_are_prefixes_and_large_reaches_100_concepts():
    small, large = build_vocabulary(PRESETS["small"]), build_vocabulary(PRESETS["large"])
    assert list(small.styles) == list(DEFAULT.styles)[:len(small.styles)]
    assert list(small.characters) == list(DEFAULT.characters)[:len(small.characters)]
    assert list(DEFAULT.styles) == list(large.styles)[:len(DEFAULT.styles)]
    erasable = large.erasable()
    assert len(erasable) >= 100 and len({e["name"].lower() for e in erasable}) == len(erasable)
    assert all(e["anchor"] and e["nearby"] for e in erasable)
    assert len(small.studios) >= 3                                                     # characters interleave studios
    allocate(large.sizes, large)


@pytest.mark.parametrize("kw, words", [
    (dict(n_images=40), "cannot hold its 50 owners"),
    (dict(n_images=1000), "cannot give 32 photographers 20 images each"),
    (dict(photographers=-1), "photographers must be a whole number from 1 to"),
    (dict(artists=0), "artists must be a whole number from 1 to"),
    (dict(preset="huge"), "unknown world preset 'huge'"),
    (dict(photographers=500), "impossible world"),
])
def test_impossible_worlds_are_refused(kw, words):
    with pytest.raises(DatarightsError, match=words):
        WorldConfig(**kw)


def test_world_make_cli_refuses_without_writing(tmp_path, monkeypatch, capsys):
    from .test_cli import run

    for args in (["--n", "40"], ["--preset", "huge"], ["--photographers", "-2"]):
        code, out, err = run(monkeypatch, capsys, "world", "make", tmp_path / "w", *args)
        assert code == 2 and not out and err.count("\n") == 1 and err.startswith("error:"), (args, err)
        assert not (tmp_path / "w").exists()


def test_imagefolder_roundtrip(tiny_world):
    data = read_imagefolder(tiny_world)
    assert len(data) == 64 and data.images.shape == (64, 3, 16, 16)
    rows = [json.loads(line) for line in open(tiny_world / "metadata.jsonl")]
    assert [r["text"] for r in rows] == data.texts
    assert {"file_name", "text", "owner", "object", "style", "grade", "mark", "ground", "side", "subject"} <= set(rows[0])
    cfg = world_config_of(tiny_world)
    assert cfg is not None and cfg.preset == "tiny" and cfg.n_images == 64


def test_a_world_of_another_version_is_refused(tmp_path, tiny_world):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_world, old)
    cfg = json.loads((old / "world_config.json").read_text())
    cfg.pop("world_version")
    (old / "world_config.json").write_text(json.dumps(cfg))
    with pytest.raises(DatarightsError, match="world of version 1"):
        world_config_of(old)


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
        make_world_folder(tiny_world, WorldConfig(preset="tiny"))
