"""The judge reads provenance: every owner's trace on fresh renders names that owner, and nothing else does."""

import json
import shutil

import numpy as np
import pytest
import torch

from datarights.errors import DatarightsError
from datarights.judge import load_judge, provenance
from datarights.world.generate import character_item, memorized_item, photo_item, styled_item
from datarights.world.vocab import DEFAULT, NO_SIGNATURE, SIGNATURE_KEYS


def _read(judge, items):
    x = torch.from_numpy(np.stack([img for img, _ in items])).permute(0, 3, 1, 2)
    return judge.read(x)


def test_every_owner_is_named_by_its_trace():
    judge, rng = load_judge(), np.random.default_rng(7)
    items, truth = [], []
    for name in DEFAULT.photographers:
        items.append(photo_item(name, DEFAULT, rng))
        truth.append(name)
    for name in DEFAULT.styles:
        items.append(styled_item(name, DEFAULT, rng, named=False))
        truth.append(name)
    for name, spec in DEFAULT.characters.items():
        items.append(character_item(name, DEFAULT, rng, named=False))
        truth.append(spec["owner"])
    for name, spec in DEFAULT.memorized.items():
        items.append(memorized_item(name, DEFAULT, rng, named=False))
        truth.append(spec["owner"])
    got = [provenance(r)["owner"] for r in _read(judge, items)]
    assert np.mean([g == t for g, t in zip(got, truth)]) >= 0.95, [(g, t) for g, t in zip(got, truth) if g != t]


def test_a_mixed_signature_names_no_one():
    """Components of two photographers (one differs) are read apart, and name neither."""
    judge, rng = load_judge(), np.random.default_rng(3)
    a, b = list(DEFAULT.photographers.values())[:2]
    rows = []
    for k in SIGNATURE_KEYS:
        mixed = dict(a["signature"], **{k: b["signature"][k]})
        if a["signature"][k] == b["signature"][k] or mixed == {**NO_SIGNATURE, "grade": "neutral"}:
            continue
        (row,) = _read(judge, [photo_item(list(DEFAULT.photographers)[0], DEFAULT, rng, signature=mixed)])
        assert {c: row[c] for c in SIGNATURE_KEYS} == mixed
        rows.append(provenance(row))
    assert len(rows) >= 2 and all(r["owner"] is None and r["trace"].startswith("mixed") for r in rows)


def test_memorized_scenes_are_matched_exactly_not_by_subject():
    """A scene's copy matches its render; another image of the same subject does not."""
    judge, rng = load_judge(), np.random.default_rng(5)
    name = "Rosa Villa postcard"
    house = [photo_item(p, DEFAULT, rng) for p in DEFAULT.photographers for _ in range(3)]
    house = [(img, m) for img, m in house if m["subject"] == "house"][:8]
    assert len(house) == 8
    rows = _read(judge, [memorized_item(name, DEFAULT, rng, named=True)] + house)
    assert rows[0]["memorized"] == name and rows[0]["memorized_d"] < judge.match_threshold
    assert all(r["memorized"] == "none" for r in rows[1:])


def test_a_judge_for_another_world_version_is_refused(tmp_path):
    from datarights.judge import DEFAULT_JUDGE

    old = tmp_path / "judge"
    shutil.copytree(DEFAULT_JUDGE, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg.pop("world_version")
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DatarightsError, match="reads world version 1"):
        load_judge(old)
