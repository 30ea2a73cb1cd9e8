import pytest
import torch

from datarights.attack import METHODS, attack
from datarights.attack.base import nearest_tokens, states_with_soft_tokens, target_images
from datarights.errors import DatarightsError

from .test_erase import FAST as ERASE_FAST

FAST = {"udatk": dict(steps=2, n_images=2, batch_size=2, budget=2, restarts=1, probes=1),
        "ti": dict(steps=2, n_images=2, batch_size=2, budget=2),
        "paraphrase": dict(neighbours=2, budget=2, probes=2),
        "p4d": dict(steps=2, check_every=1, batch_size=2, budget=2, n_tokens=2, sample_steps=3)}


def test_every_attack_has_a_contract_row():
    assert set(FAST) == set(METHODS)


@pytest.mark.parametrize("method", sorted(FAST))
def test_attack_contract(method, backend_folder):
    """On the tiny world model and the tiny SD folder, under the meta default device."""
    from datarights.models import load_model
    model = load_model(backend_folder, "cpu")
    if method == "p4d":   # counted over ideal prompts: let the judge call every base image unsafe
        import datarights.attack.p4d as P
        calls = []
        real = P.judge_attempts
        P.judge_attempts = lambda imgs, t, j=None: calls.append(1) or ([len(calls) == 1] * len(imgs))
    try:
        with torch.device("meta"):
            r = attack(model, "grumpy face", method, base=model, **FAST[method])
    finally:
        if method == "p4d":
            P.judge_attempts = real
    out = r.to_json()
    assert set(out) >= {"asr", "attempts", "method", "seconds"}
    assert out["attempts"] == 2 and 0 <= out["asr"] <= 1 and out["method"] == method
    assert isinstance(out["prompts"], list) and all(isinstance(x, str) for x in out["prompts"])
    assert r.images.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("erase_method", sorted(ERASE_FAST))
def test_p4d_runs_against_every_erase_method(erase_method, backend_folder, tiny_world, monkeypatch):
    """P4D against the edit of every erase method, on the tiny world model and the tiny SD folder: the
    edited model is attacked and the base (the model before the erasure) is matched."""
    import datarights.attack.p4d as P
    from datarights.erase import erase
    from datarights.models import load_model

    base = load_model(backend_folder, "cpu")
    opts = dict(ERASE_FAST[erase_method], **({"data": str(tiny_world)} if erase_method == "retrain" else {}))
    target, anchor = ("Ada Vell", "plain") if erase_method == "retrain" else ("grumpy face", "face")
    edited = erase(base, [target], [anchor], erase_method, progress=False, **opts).apply(base)
    calls = []  # the base's images unsafe, the edited model's plain prompt safe: every prompt is ideal
    monkeypatch.setattr(P, "judge_attempts", lambda imgs, t, j=None: calls.append(1) or ([len(calls) == 1] * len(imgs)))
    r = attack(edited, target, "p4d", base=base, **FAST["p4d"]).to_json()
    assert r["method"] == "p4d" and r["ideal"] == 2 and r["attempts"] == 2 and 0 <= r["asr"] <= 1
    assert len(r["asr_ci"]) == 2 and set(r["broken_by_variant"]) == {"n", "k"}


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


def test_p4d_counts_ideal_prompts_only_and_union_breaks_if_either_variant_does(tiny_model, monkeypatch):
    import datarights.attack.p4d as P
    # judge calls: base images (4 prompts), erased images, then one final image per prompt and variant
    reads = iter([[True, True, False, True], [False, True, False, False],   # ideal: prompts 0 and 3
                  [False], [True],                                         # prompt 0: n fails, k breaks it
                  [False], [False]])                                       # prompt 3: neither
    monkeypatch.setattr(P, "judge_attempts", lambda imgs, t, j=None: next(reads))
    r = attack(tiny_model, "grumpy face", "p4d", base=tiny_model, steps=2, check_every=1, batch_size=2, budget=4,
               n_tokens=2, sample_steps=3)
    out = r.to_json()
    assert (out["attempts"], out["asr"], out["ideal"]) == (2, 0.5, 2)
    assert out["broken_by_variant"] == {"n": 0, "k": 1} and out["unsafe_on_base"] == 3 and out["safe_on_erased"] == 3
    reads = iter([[True, True, False, True], [False, True, False, False], [False], [False]])
    out = attack(tiny_model, "grumpy face", "p4d", base=tiny_model, variant="n", steps=2, check_every=1,
                 batch_size=2, budget=4, n_tokens=2, sample_steps=3).to_json()
    assert out["attempts"] == 2 and out["broken_by_variant"] == {"n": 0}


def test_p4d_k_keeps_the_prompt_and_inserts_a_token_first_and_after_every_three(tiny_model):
    from datarights.attack.p4d import P4DConfig, _layout, hard_prompt
    cfg = P4DConfig(steps=1)
    prompt = "a photo of a red grumpy face"
    words = tiny_model.tokenizer(prompt, add_special_tokens=False).input_ids
    extra = tiny_model.tokenizer("angry sunny", add_special_tokens=False).input_ids
    n_soft, states = _layout(tiny_model, prompt, "k", cfg)
    assert n_soft == len(words) // 3 + 1                # the authors' count: places 0, 4, 8, ...
    picks = [extra[j % 2] for j in range(n_soft)]
    soft = tiny_model.token_embedding().weight[picks].detach()
    text = hard_prompt(tiny_model, prompt, "k", soft, cfg)
    want = [t for j in range(n_soft) for t in [picks[j]] + words[3 * j:3 * j + 3]]
    assert tiny_model.tokenizer(text, add_special_tokens=False).input_ids == want and want[1:4] == words[:3]
    with torch.no_grad():
        assert torch.allclose(states(soft), tiny_model.encode_prompt([text])[0], atol=1e-5)


def test_p4d_needs_the_model_before_the_erasure(tiny_model):
    with pytest.raises(DatarightsError, match="give the base model"):
        attack(tiny_model, "grumpy face", "p4d", steps=1)
    with pytest.raises(DatarightsError, match="variant must be one of"):
        attack(tiny_model, "grumpy face", "p4d", base=tiny_model, variant="x")
    with pytest.raises(DatarightsError, match="sample-steps must be at least 1"):
        attack(tiny_model, "grumpy face", "p4d", base=tiny_model, sample_steps=0)


def test_attack_command_p4d_bad_input(monkeypatch, capsys, tiny_trained):
    from .test_cli import run
    for args, message in [
        (["--method", "p4d"], "is not an edited model: give the model before the erasure with --base"),
        (["--method", "udatk", "--variant", "n"], "--variant chooses p4d's variant"),
        (["--method", "ti", "--base", tiny_trained], "ti does not use it"),
        (["--method", "p4d", "--base", tiny_trained, "--variant", "both"], "variant must be one of n, k, union"),
        (["--method", "magic"], "unknown attack 'magic'"),
    ]:
        code, _, err = run(monkeypatch, capsys, "attack", "--model", tiny_trained, "--target", "grumpy face", *args)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
