"""The audit: held-out prompts, intervals on every figure, a verdict that a broken model cannot pass,
an unbiased paired KID, and a CLIP judge for models outside the world."""

import copy
import json

import numpy as np
import pytest
import torch

from datarights.audit import AuditConfig, audit, kid
from datarights.judge import label_check
from datarights.erase import erase
from datarights.erase.base import concept_prompts
from datarights.errors import DatarightsError
from datarights.models import load_model

from .test_cli import run
from .test_safety import one_line

SMALL = AuditConfig(n_target=20, n_seen=20, n_nearby=16, n_others=16, n_anchor=16, steps=10)
"""Small, but every figure still rests on at least 16 non-degenerate images (a few may be flagged)."""


@pytest.fixture()
def small_cli_audits(monkeypatch):
    """The `audit` command with SMALL's image counts for the families it has no flags for, and few
    sampling steps: the tests that use it check the command's output, not a figure."""
    import dataclasses

    import datarights.audit as A

    @dataclasses.dataclass
    class Small(AuditConfig):
        n_nearby: int = 16
        n_others: int = 16
        n_anchor: int = 16
        steps: int = 4

    monkeypatch.setattr(A, "AuditConfig", Small)


@pytest.fixture(scope="module")
def shipped():
    return load_model(None, "cpu")


def test_audit_of_an_unchanged_model_is_neutral(shipped):
    r = audit(shipped, shipped, "grumpy face", "face", SMALL, log=lambda s: None, progress=False)
    assert r["nearby_preserved"] == 1.0 and r["others_preserved"] == 1.0
    assert r["kid"] == 0.0 and r["kid_std"] == 0.0          # paired estimator: identical models give exactly 0
    assert r["verdict"] == "not erased" and r["target_erased"] < 0.5
    for key in ("target_erased", "target_erased_seen", "anchor_fidelity", "degenerate_share", "nearby_preserved",
                "others_preserved", "base_target_present"):
        lo, hi = r[f"{key}_ci"]
        assert lo <= r[key] <= hi and r[f"{key}_n"] >= 16, key
    assert r["kid_to_anchor"] > r["kid"]                      # target images do not look like anchor images


def test_a_model_that_emits_noise_is_broken_not_erased(shipped):
    """Before the degenerate check, such a model scored target_erased ~ 1: the judge filed its noise
    under other labels. Now it is 'model broken on target'."""
    noise = copy.copy(shipped)
    noise.unet = copy.deepcopy(shipped.unet)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in noise.unet.parameters():
            p.copy_(torch.randn_like(p) * p.std().clamp(min=1e-3))
    r = audit(noise, shipped, "grumpy face", "face", SMALL, log=lambda s: None, progress=False)
    assert r["verdict"] == "model broken on target"
    assert r["degenerate_share_ci"][0] > 0.5


def test_gradient_ascent_does_not_pass_as_erasure(shipped):
    edited = erase(shipped, ["grumpy face"], ["face"], "ga", progress=False).apply(shipped)
    r = audit(edited, shipped, "grumpy face", "face", SMALL, log=lambda s: None, progress=False)
    assert r["verdict"] != "erased"
    assert r["degenerate_share"] > 0.5 and r["others_preserved_ci"][1] < 0.5


def test_audit_json_and_held_out_prompts(small_cli_audits, tiny_trained, monkeypatch, capsys, tmp_path):
    # the command's output and its prompts, not a figure: the tiny model keeps it fast
    erase(load_model(tiny_trained, "cpu"), ["grumpy face"], ["face"], "uce", progress=False).save(tmp_path / "e")
    code, out, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "e", "--target", "grumpy face",
                         "--anchor", "face", "--n-target", "35", "--n-seen", "35", "--json", "--device", "cpu")
    assert code == 0, err
    r = json.loads(out)
    assert {"verdict", "degenerate_share", "degenerate_share_ci", "target_erased_ci", "target_erased_seen_ci",
            "nearby_preserved_ci", "kid_to_anchor"} <= set(r)
    # the audit's held-out prompts share no prompt with the erase's half
    held = set(concept_prompts("grumpy face", "face", 200, 1, split="eval").target)
    seen = set(concept_prompts("grumpy face", "face", 200, 0, split="train").target)
    assert held and seen and not held & seen


def test_audit_reads_with_a_world_judge_that_knows_the_models_world(small_cli_audits, tiny_trained, monkeypatch, capsys, tmp_path):
    """`--judge` takes a world judge folder (from `train-judge`) as well as a CLIP folder, and an audit
    whose judge cannot read the model's world (a `large` model, the shipped judge) is refused in one line."""
    import shutil

    from datarights.judge import DEFAULT_JUDGE
    from datarights.world import WorldConfig

    shutil.copytree(DEFAULT_JUDGE, tmp_path / "judge")
    erase(load_model(tiny_trained, "cpu"), ["grumpy face"], ["face"], "uce", progress=False).save(tmp_path / "e")
    code, out, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "e", "--target", "grumpy face",
                         "--anchor", "face", "--n-target", "35", "--n-seen", "0", "--json", "--device", "cpu",
                         "--judge", tmp_path / "judge")
    assert code == 0, err
    assert json.loads(out)["judge"] == "world judge"
    base = load_model(tiny_trained, "cpu")
    base.meta = {**base.meta, "world": WorldConfig(preset="large").to_json()}
    with pytest.raises(DatarightsError, match="cannot read that world"):
        audit(base, base, "grumpy face", "face", AuditConfig(n_target=35, n_seen=0), progress=False)


def test_kid_is_unbiased_for_identical_and_separates_shifted():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    assert kid(a, a.clone(), subset_size=100) == (0.0, 0.0)
    same, same_std = kid(a, b, subset_size=100)
    shifted, _ = kid(a, b + 1.0, subset_size=100)
    assert abs(same) <= 2 * same_std and shifted > 10 * abs(same)


def test_bad_audit_requests(monkeypatch, capsys, tmp_path, tiny_trained):
    with pytest.raises(DatarightsError, match="cannot score"):
        label_check("a golden retriever")
    assert label_check("face") == ("object", "face") and label_check("plain") == ("style", "plain")
    with pytest.raises(DatarightsError, match="at least 16"):
        AuditConfig(n_target=5)
    (tmp_path / "notclip").mkdir()
    (tmp_path / "notclip" / "config.json").write_text('{"model_type": "bert"}')
    for args, message in [
        (["--n-target", "4"], "--n-target must be at least 16"),
        (["--judge", tmp_path / "notclip"], "not a CLIP model"),
        (["--judge", tmp_path / "missing"], "not a CLIP model"),
        (["--target", "unicorn"], "not in the world's vocabulary"),
    ]:
        base = ["audit", "--model", tiny_trained, "--anchor", "face"]
        if "--target" not in args:
            base += ["--target", "grumpy face"]
        code, _, err = run(monkeypatch, capsys, *base, *args)
        one_line(code, err, message)


def test_audit_with_a_clip_judge_on_the_tiny_sd_folder(small_cli_audits, monkeypatch, capsys, tmp_path, tiny_sd_folder):
    from datarights.testing import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "judge")
    base = load_model(tiny_sd_folder, "cpu")
    erase(base, ["grumpy face"], ["face"], "uce", progress=False).save(tmp_path / "e")
    code, out, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "e", "--target", "grumpy face",
                         "--anchor", "face", "--nearby", "smiling face", "--judge", clip, "--n-target", "35",
                         "--n-seen", "35", "--json", "--device", "cpu", "--report", tmp_path / "r")
    assert code == 0, err
    r = json.loads(out)
    assert r["judge"] == "CLIP" and r["verdict"] in ("erased", "not erased", "model broken on target")
    assert np.isfinite(r["kid"]) and len(r["target_erased_ci"]) == 2
    assert (tmp_path / "r" / "index.html").is_file()
    code, _, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "e", "--target", "  ", "--anchor", "face",
                       "--judge", clip, "--n-target", "35")
    one_line(code, err, "must not be empty")


def test_too_few_images_for_a_verdict_are_refused(monkeypatch, capsys, tmp_path):
    """Even 34/34 erased has a Wilson interval starting below 0.9: such an audit could never say
    'erased', so the command refuses it before any model loads."""
    for flag in ("--n-target", "--n-seen"):
        code, _, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "missing", "--target", "grumpy face",
                           "--anchor", "face", flag, "34")
        one_line(code, err, "too few images for a verdict")
