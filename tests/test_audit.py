import pytest
import torch

from datarights.audit import AuditConfig, audit, kid, label_check
from datarights.erase import erase
from datarights.errors import DatarightsError

SMALL = AuditConfig(n_target=4, n_nearby=2, n_others=6, n_anchor=2, steps=2)


def test_audit_of_an_unchanged_model_is_neutral(tiny_model):
    r = audit(tiny_model, tiny_model, "grumpy face", "face", SMALL, log=lambda s: None, progress=False)
    assert r["nearby_preserved"] in (1.0, None) and r["others_preserved"] in (1.0, None)
    assert r["target_erased"] == pytest.approx(1 - r["base_target_present"])
    for key in ("target_erased", "anchor_fidelity", "kid", "kid_std", "n_target", "n_nearby", "n_others"):
        assert key in r


def test_audit_of_an_edit(tiny_model):
    edited = erase(tiny_model, ["Ada Vell"], ["plain"], "uce", progress=False).apply(tiny_model)
    r = audit(edited, tiny_model, "Ada Vell", "plain", SMALL, log=lambda s: None, progress=False)
    assert 0 <= r["target_erased"] <= 1 and 0 <= r["anchor_fidelity"] <= 1
    assert r["method"] == "uce" and r["changed_params"] > 0
    assert len(r["_grids"]) == 4


def test_kid_separates_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    same, same_std = kid(a, b, subset_size=100)
    shifted, _ = kid(a, b + 1.0, subset_size=100)
    assert abs(same) < 3 * same_std and shifted > 10 * abs(same)


def test_unknown_concept_cannot_be_scored():
    with pytest.raises(DatarightsError, match="cannot score"):
        label_check("a golden retriever")
    assert label_check("face") == ("object", "face") and label_check("plain") == ("style", "plain")
