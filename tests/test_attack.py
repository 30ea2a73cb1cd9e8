import pytest
import torch

from datarights.attack import METHODS, attack
from datarights.attack.base import nearest_tokens, states_with_soft_tokens, target_images
from datarights.errors import DatarightsError

FAST = {"udatk": dict(steps=2, n_images=2, batch_size=2, budget=2, restarts=1, probes=1),
        "ti": dict(steps=2, n_images=2, batch_size=2, budget=2),
        "paraphrase": dict(neighbours=2, budget=2, probes=2)}


def test_every_attack_has_a_contract_row():
    assert set(FAST) == set(METHODS)


@pytest.mark.parametrize("method", sorted(FAST))
def test_attack_contract(method, backend_folder):
    """On the tiny world model and the tiny SD folder, under the meta default device."""
    from datarights.models import load_model
    model = load_model(backend_folder, "cpu")
    with torch.device("meta"):
        r = attack(model, "grumpy face", method, **FAST[method])
    out = r.to_json()
    assert set(out) >= {"asr", "attempts", "method", "seconds"}
    assert out["attempts"] == 2 and 0 <= out["asr"] <= 1 and out["method"] == method
    assert r.images.shape == (2, 3, 16, 16)


def test_rendered_target_images_show_the_target():
    from datarights.judge import shows
    from datarights.judge import load_judge
    x, _ = target_images("Ada Vell", 8, seed=0)
    assert shows(load_judge().read(x), "Ada Vell").all()


def test_soft_tokens_that_equal_real_tokens_reproduce_the_prompt(tiny_model):
    ids = tiny_model.tokenizer("angry", add_special_tokens=False).input_ids  # one whole-word token
    soft = tiny_model.token_embedding().weight[ids].detach()
    with torch.no_grad():
        a = states_with_soft_tokens(tiny_model, "a red face", soft)
        b = tiny_model.encode_prompt(["angry a red face"])[0]
    assert torch.allclose(a, b, atol=1e-5)
    assert nearest_tokens(tiny_model, soft) == ids


def test_attack_needs_a_known_concept(tiny_model):
    with pytest.raises(DatarightsError, match="cannot score"):
        attack(tiny_model, "a golden retriever", "udatk")
