"""One contract for every erase method (a new method is a new row), plus exact oracles."""

import pytest
import torch

from datarights.erase import METHODS, erase, make_config
from datarights.erase.base import concept_prompts, model_hash
from datarights.errors import DatarightsError
from datarights.models import load_model


FAST = {
    "ca": dict(steps=3, n_anchor_images=4, batch_size=2, sample_steps=2),
    "esd": dict(steps=2, batch_size=2, rollout_steps=3),
    "uce": dict(n_templates=2),
    "fmn": dict(steps=2, n_images=2, batch_size=2),
    "ga": dict(steps=2, n_images=4, batch_size=2),
    "retrain": dict(steps=2),
    "mace": dict(steps=2, n_images=2, batch_size=2, n_prompts=4),
    "stereo": dict(rounds=1, n_adversarial=1, ste_steps=1, reo_steps=2, inversion_steps=1, n_images=2, batch_size=2,
                   rollout_steps=2, n_prompts=4),
}


def test_every_method_has_a_contract_row():
    assert set(FAST) == set(METHODS)


@pytest.mark.parametrize("method", sorted(FAST))
def test_erase_contract(method, backend_folder, tiny_world, tmp_path):
    """On the tiny world model and the tiny SD folder, under the meta default device: any tensor made
    without the model's device fails loudly, as it would on CUDA."""
    base = load_model(backend_folder, "cpu")
    before = {n: p.clone() for n, p in base.named_parameters().items()}
    opts = dict(FAST[method], **({"data": str(tiny_world)} if method == "retrain" else {}))
    # retrain needs training images of the target: the tiny world holds Ada Vell's, not every object
    target, anchor = ("Ada Vell", "plain") if method == "retrain" else ("grumpy face", "face")
    with torch.device("meta"):
        edit = erase(base, [target], [anchor], method, progress=False, **opts)
        # the base is untouched, the edit is small and names real parameters
        assert all(torch.equal(p, before[n]) for n, p in base.named_parameters().items())
        assert edit.tensors and edit.changed_params > 0 and edit.base_hash == model_hash(base)
        changed = [n for n, t in edit.tensors.items() if not torch.equal(t, before[n])]
        assert changed, "the edit changed nothing"
        # save -> load gives the same model
        edit.save(tmp_path / "edited")
        loaded = load_model(tmp_path / "edited", "cpu")
        applied = edit.apply(base)
        x = torch.randn(2, *base.latent_shape, device="cpu")
        t = torch.tensor([100, 700], device="cpu")
        c = base.encode_prompt(["a red grumpy face", "a tree"])
        with torch.no_grad():
            assert torch.allclose(loaded.predict_noise(x, t, c), applied.predict_noise(x, t, c), atol=1e-6)
            assert not torch.allclose(base.predict_noise(x, t, c), applied.predict_noise(x, t, c))
        assert loaded.meta["edit"]["method"] == method
        # same seed, same edit
        again = erase(base, [target], [anchor], method, progress=False, **opts)
        assert all(torch.allclose(edit.tensors[n], again.tensors[n], atol=1e-6) for n in edit.tensors)


def test_stereo_search_then_erase_once_is_stereo(tiny_model):
    """The two stages called apart (a tuning run searches once, then tries several final erases) give
    the registered method's edit, and a final erase that wants more tokens than were found is refused."""
    from datarights.erase.stereo import erase_once, search

    cfg = make_config("stereo", **dict(FAST["stereo"], rounds=2, n_adversarial=2))
    whole = erase(tiny_model, ["grumpy face"], ["face"], "stereo", progress=False, **dict(FAST["stereo"], rounds=2,
                                                                                           n_adversarial=2))
    found = search(tiny_model, ["grumpy face"], ["face"], cfg, progress=False)
    assert len(found) == 1 and len(found[0]) == 2
    apart = erase_once(tiny_model, ["grumpy face"], ["face"], found, cfg, progress=False)
    assert all(torch.allclose(whole.tensors[n], apart.tensors[n], atol=1e-6) for n in whole.tensors)
    with pytest.raises(DatarightsError, match="fewer than"):
        erase_once(tiny_model, ["grumpy face"], ["face"], [found[0][:1]], cfg, progress=False)


def test_stereo_retain_term_holds_the_anchors_other_concepts(tiny_model):
    """The retain term's concepts are the anchor's other children in the model's world (the targets
    excluded), and weighting it keeps their predictions nearer the base's than the authors' objective."""
    from datarights.erase.base import prompts_showing
    from datarights.erase.stereo import erase_once, retained_concepts, search
    from datarights.world import vocab as V

    faces = retained_concepts(tiny_model, ["grumpy face"], "face")
    assert {"smiling face", "sleepy face"} <= set(faces) and "grumpy face" not in faces
    assert set(retained_concepts(tiny_model, ["Ada Vell"], "plain")) == set(V.STYLES) - {"Ada Vell"}
    everything = retained_concepts(tiny_model, ["grumpy face"], None)      # retain_set 'world'
    assert set(faces) < set(everything) and "Ada Vell" in everything and "grumpy face" not in everything
    with pytest.raises(DatarightsError, match="retain-weight"):
        make_config("stereo", retain_weight=-1.0)
    with pytest.raises(DatarightsError, match="retain-set"):
        make_config("stereo", retain_set="faces")
    from datarights.erase.stereo import _retain_states
    sizes = [len(_retain_states(tiny_model, ["grumpy face"], ["face"], make_config("stereo", retain_set=r).for_model(tiny_model))[0])
             for r in ("anchor", "world")]
    assert sizes[0] < sizes[1], sizes
    opts = dict(FAST["stereo"], reo_steps=20, reo_lr=3e-3)
    cfg = make_config("stereo", **opts)
    found = search(tiny_model, ["grumpy face"], ["face"], cfg, progress=False)
    plain = erase_once(tiny_model, ["grumpy face"], ["face"], found, cfg, progress=False).apply(tiny_model)
    kept = erase_once(tiny_model, ["grumpy face"], ["face"], found, make_config("stereo", **opts, retain_weight=100.0),
                      progress=False)
    assert kept.config["retained"][0] >= len(faces) and kept.config["retain_weight"] == 100.0
    kept = kept.apply(tiny_model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, *tiny_model.latent_shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    c = tiny_model.encode_prompt([prompts_showing(f, 1, 5, split="eval")[0] for f in faces[:8]] * 8)[:8]
    with torch.no_grad():
        ref = tiny_model.predict_noise(x, t, c)
        drift = [torch.mean((m.predict_noise(x, t, c) - ref) ** 2).item() for m in (plain, kept)]
    assert drift[1] < 0.5 * drift[0], drift


def test_ca_uce_and_mace_take_several_targets(tiny_model):
    for method in ("ca", "uce", "mace"):
        edit = erase(tiny_model, ["grumpy face", "Ada Vell"], ["face", "plain"], method, progress=False, **FAST[method])
        assert edit.targets == ("grumpy face", "Ada Vell") and edit.anchors == ("face", "plain")


def test_uce_matches_least_squares_oracle(tiny_model):
    """UCE's closed form equals the least-squares solution of its objective."""
    from datarights.erase.uce import UCEConfig, uce

    cfg = UCEConfig(n_templates=2, preserve=["smiling face", "tower"], lam=0.5)
    edit = uce(tiny_model, ["grumpy face"], ["face"], cfg)
    # rebuild the vectors exactly as uce does, then solve the stacked least-squares problem
    from datarights.erase import uce as U
    tp = U._prompts_for("grumpy face", 2, 0)
    ap = [p.replace("grumpy face", "face") for p in tp]
    st, kt = U._vectors(tiny_model, tp, "grumpy face")
    sa, ka = U._vectors(tiny_model, ap, "face")
    L = st.shape[1]
    ce, cg = [], []
    for i in range(len(tp)):
        n = min(L - kt[i], L - ka[i])
        ce.append(st[i, kt[i]:kt[i] + n])
        cg.append(sa[i, ka[i]:ka[i] + n])
    cp = []
    for concept in cfg.preserve:
        pp = U._prompts_for(concept, 2, 1)
        sp, kp = U._vectors(tiny_model, pp, concept)
        cp += [sp[i, kp[i]:] for i in range(len(pp))]
    Ce, Cg, Cp = torch.cat(ce).double(), torch.cat(cg).double(), torch.cat(cp).double()
    name = next(iter(edit.tensors))
    W = tiny_model.named_parameters()[name].detach().double()
    D = W.shape[1]
    A = torch.cat([0.5**0.5 * torch.eye(D, dtype=torch.float64), Ce, Cp])      # rows: constraints on W'^T
    B = torch.cat([0.5**0.5 * W.T, Cg @ W.T, Cp @ W.T])
    oracle = torch.linalg.lstsq(A, B).solution.T
    assert torch.allclose(edit.tensors[name].double(), oracle, atol=1e-4, rtol=1e-4)


def test_uce_is_fast(tiny_model):
    edit = erase(tiny_model, ["Ada Vell"], ["plain"], "uce", progress=False)
    assert edit.seconds < 10


def test_prompt_sets_swap_only_the_concept():
    s = concept_prompts("grumpy face", "face", 12)
    assert s.kind == "objects" and len(s.target) == len(s.anchor)
    for t, a in zip(s.target, s.anchor):
        assert "grumpy face" in t and "grumpy" not in a and t.replace("grumpy face", "face").replace("an ", "a ") == a.replace("an ", "a ")


def test_a_model_erases_and_is_attacked_in_its_own_worlds_words(tiny_model, tmp_path):
    """A model trained on a bigger world (`large`) records it: erase methods and attacks build their
    prompts and images from that world's vocabulary, edits and exports keep it, and a judge that
    cannot read that world is refused in one line."""
    from datarights.attack import attack
    from datarights.attack.base import target_images
    from datarights.erase.base import prompts_showing
    from datarights.erase.uce import _prompts_for
    from datarights.models import export_model
    from datarights.world import WorldConfig, vocabulary_of
    from datarights.world import vocab as V

    assert vocabulary_of(tiny_model) is V.DEFAULT                     # records no world: the default world's
    tiny_model.meta = {**tiny_model.meta, "world": WorldConfig(preset="large").to_json()}
    vocab = vocabulary_of(tiny_model)
    assert len(vocab.erasable()) >= 100
    style = next(s for s in vocab.styles if s not in V.STYLES)        # a style only the large world has
    character = next(c for c in vocab.characters if c not in V.CHARACTERS)
    assert V.find_concept(style) is None and V.find_concept(character) is None
    ps = concept_prompts(style, "plain", 8, vocab=vocab)
    assert ps.kind == "styles" and all(f"in {style} style" in p for p in ps.target)
    assert all(f"in {style} style" in p for p in _prompts_for(style, 4, 0, vocab=vocab))
    assert concept_prompts(style, "plain", 8).kind == "unknown"         # the default world does not know it
    assert prompts_showing(character, 4, vocab=vocab)[0].endswith(character)
    images, texts = target_images(character, 2, 0, vocab)
    assert images.shape[0] == 2 and all(character in t or "fish" in t or "face" in t or "house" in t or "tree" in t
                                        for t in texts)
    with pytest.raises(DatarightsError, match="not in the world's vocabulary"):
        target_images(character, 2, 0)
    # the default world's prompts do not move
    assert concept_prompts("Ada Vell", "plain", 8).target == concept_prompts("Ada Vell", "plain", 8, vocab=V.DEFAULT).target
    edit = erase(tiny_model, [style], ["plain"], "uce", progress=False)
    edited = edit.apply(tiny_model)
    assert vocabulary_of(edited) is vocab
    assert vocabulary_of(load_model(export_model(edited, tmp_path / "exported"), "cpu")) is vocab
    with pytest.raises(DatarightsError, match="cannot read that world"):
        attack(edited, style, "ti", budget=1)


def test_bad_erase_requests(tiny_model):
    with pytest.raises(DatarightsError, match="same"):
        erase(tiny_model, ["face"], ["Face"], "ca")
    with pytest.raises(DatarightsError, match="unknown erase method"):
        make_config("nope")
    with pytest.raises(DatarightsError, match="no option"):
        make_config("uce", steps=3)
    with pytest.raises(DatarightsError, match="must not be empty"):
        erase(tiny_model, [" "], ["face"], "uce")
    with pytest.raises(DatarightsError, match="anchors"):
        erase(tiny_model, ["a", "b", "c"], ["x", "y"], "uce")
    with pytest.raises(DatarightsError, match="needs the base model's training data"):
        erase(tiny_model, ["grumpy face"], ["face"], "retrain")
    with pytest.raises(DatarightsError, match="--lr must be positive"):
        make_config("mace", lr=-1.0)
    with pytest.raises(DatarightsError, match="lora-rank"):
        erase(tiny_model, ["grumpy face"], ["face"], "mace", lora_rank=10_000)
    for bad in (dict(rounds=0), dict(inversion_steps=0), dict(n_adversarial=0)):
        with pytest.raises(DatarightsError, match="inversion budget"):
            make_config("stereo", **bad)
    with pytest.raises(DatarightsError, match="more than the 2 tokens"):
        make_config("stereo", rounds=2, n_adversarial=3)


def test_edit_with_missing_base_is_refused(tiny_trained, tmp_path):
    import shutil
    base_copy = tmp_path / "base"
    shutil.copytree(tiny_trained, base_copy)
    base = load_model(base_copy)
    erase(base, ["grumpy face"], ["face"], "uce", progress=False).save(tmp_path / "e")
    shutil.rmtree(base_copy)
    with pytest.raises(DatarightsError, match="base model .* is missing"):
        load_model(tmp_path / "e")


@pytest.mark.parametrize("method", ["ca", "esd"])
def test_robust_variants_run(method, tiny_model):
    opts = dict(FAST[method], robust=True, robust_every=1, robust_attack_steps=1)
    edit = erase(tiny_model, ["grumpy face"], ["face"], method, progress=False, **opts)
    plain = erase(tiny_model, ["grumpy face"], ["face"], method, progress=False, **FAST[method])
    assert edit.config["robust"] and any(not torch.equal(edit.tensors[n], plain.tensors[n]) for n in edit.tensors)


def test_every_target_gets_its_own_images_when_several_are_erased(tiny_model):
    """Several targets: n images for each target's prompts (one shared budget of n images cycled over
    the concatenated prompts gave the later targets none); one target: generate_model_space's images."""
    from datarights.erase.base import generate_model_space, images_per_target

    a, b = ["a red face", "a blue face", "a green face"], ["a fish", "a red fish"]
    x1, chosen1, idx1 = images_per_target(tiny_model, [a], 4, seed=0, steps=2)
    x_ref, chosen_ref = generate_model_space(tiny_model, a, 4, seed=0, steps=2)
    assert torch.equal(x1, x_ref) and chosen1 == chosen_ref and idx1.tolist() == [0, 1, 2, 0]
    x2, chosen2, idx2 = images_per_target(tiny_model, [a, b], 4, seed=0, steps=2)
    assert len(x2) == 8 and idx2.tolist() == [0, 1, 2, 0, 3, 4, 3, 4]
    assert chosen2[4:] == ["a fish", "a red fish", "a fish", "a red fish"]


def test_mace_token_bookkeeping_follows_the_authors():
    from datarights.erase.mace import concept_positions, importance_weights, matched_positions
    end = {9}
    # "[CLS] a red grumpy face [SEP] pad pad" vs "[CLS] a red face [SEP] pad pad pad"
    old, new = [1, 5, 6, 7, 8, 9, 0, 0], [1, 5, 6, 8, 9, 0, 0, 0]
    po, pn = matched_positions(old, new, 8, end)
    assert po == [0, 1, 2, 4, 5, 6, 7] and pn == [0, 1, 2, 3, 4, 5, 6]       # shared prefix, suffix, padding
    assert [old[i] for i in po[:5]] == [new[i] for i in pn[:5]]
    assert concept_positions(old, [7, 8], end, pooler=False) == [3, 4]
    assert concept_positions(old, [7, 8], end, pooler=True) == [3, 4, 5, 6, 7]  # end token and padding too
    w = importance_weights(1000, torch.device("cpu"))
    assert abs(float(w.sum()) - 1) < 1e-9 and 200 <= int(w.argmax()) <= 400
    assert float(w[:100].sum()) < 0.01 and float(w[600:].sum()) < 0.01
    assert torch.allclose(importance_weights(100, torch.device("cpu")).argmax().double() * 10, w.argmax().double(), atol=10)


def test_mace_fusion_is_the_least_squares_solution(tiny_model, monkeypatch):
    """The fused K/V of two concepts solve the stacked least-squares problem of MACE's fusion
    (each concept's prompts -> its own LoRA's outputs, preserved prompts -> the base's), rebuilt
    here from the LoRA deltas and the refined weights the method produced."""
    from datarights.erase import mace as M
    seen = {"d": []}
    orig_train, orig_with = M._train_lora, M._with_weights

    def train(*args, **kw):
        seen["d"].append(orig_train(*args, **kw))
        return seen["d"][-1]

    def refined(model, weights):
        seen["w1"] = weights
        return orig_with(model, weights)

    monkeypatch.setattr(M, "_train_lora", train)
    monkeypatch.setattr(M, "_with_weights", refined)
    targets, anchors = ["grumpy face", "Ada Vell"], ["face", "plain"]
    cfg = make_config("mace", steps=2, n_images=2, batch_size=2, n_prompts=4, lr=0.05, preserve=["tree"])
    edit = erase(tiny_model, targets, anchors, "mace", config=cfg, progress=False)
    cfg = cfg.for_model(tiny_model)
    name = next(iter(edit.tensors))
    W0 = tiny_model.named_parameters()[name].detach().double()
    W1, deltas = seen["w1"][name], [d[name] for d in seen["d"]]
    assert all(d.abs().max() > 0 for d in deltas)           # both LoRAs learned something
    rows_x, rows_y = [], []
    for (t, a), d in zip(zip(targets, anchors), deltas):
        st = tiny_model.encode_prompt(M.concept_prompts(t, a, cfg.n_prompts, cfg.seed).target).double()
        c = st.reshape(-1, st.shape[-1])
        rows_x.append(c), rows_y.append(c @ (W1 + d).T)
    sp = tiny_model.encode_prompt(M._prompts_for("tree", 4, 1)).double().reshape(-1, st.shape[-1])
    D = W0.shape[1]
    s = cfg.preserve_scale ** 0.5
    X = torch.cat([*rows_x, s * sp, cfg.lam ** 0.5 * torch.eye(D, dtype=torch.float64)])
    Y = torch.cat([*rows_y, s * sp @ W0.T, cfg.lam ** 0.5 * W1.T])
    oracle = torch.linalg.lstsq(X, Y).solution.T
    assert torch.allclose(edit.tensors[name].double(), oracle, atol=1e-4, rtol=1e-3)


def test_balanced_preservation_weighs_the_preserved_set_against_all_targets(tiny_model):
    """`preserve_balanced` scales the preserved gram by (edited rows) / (preserved rows): the same edit
    as the plain sum with preserve_scale multiplied by that ratio, for UCE and MACE alike."""
    from datarights.erase import mace as M
    from datarights.erase import uce as U

    targets, anchors, keep = ["grumpy face", "Ada Vell"], ["face", "plain"], ["tree", "tower"]
    n_e = 0
    for t, a in zip(targets, anchors):                      # UCE's edited rows: from the concept's last token on
        tp = U._prompts_for(t, 2, 0)
        st, kt = U._vectors(tiny_model, tp, t)
        sa, ka = U._vectors(tiny_model, [p.replace(t, a) for p in tp], a)
        n_e += sum(min(st.shape[1] - kt[i], st.shape[1] - ka[i]) for i in range(len(tp)))
    n_p = 0
    for c in keep:
        sp, kp = U._vectors(tiny_model, U._prompts_for(c, 2, 1), c)
        n_p += sum(sp.shape[1] - k for k in kp)
    bal = erase(tiny_model, targets, anchors, "uce", progress=False, n_templates=2, preserve=keep, preserve_balanced=True)
    plain = erase(tiny_model, targets, anchors, "uce", progress=False, n_templates=2, preserve=keep,
                  preserve_scale=n_e / n_p)
    assert n_e != n_p and bal.tensors.keys() == plain.tensors.keys()
    assert all(torch.allclose(bal.tensors[n].double(), plain.tensors[n].double(), atol=1e-5, rtol=1e-4) for n in bal.tensors)

    keep = keep + ["castle"]
    opts = dict(steps=2, n_images=2, batch_size=2, n_prompts=4, lr=0.05, preserve=keep)
    n_concept = sum(len(M.concept_prompts(t, a, 4, 0).target) for t, a in zip(targets, anchors))
    bal = erase(tiny_model, targets, anchors, "mace", progress=False, preserve_balanced=True, preserve_scale=1.0, **opts)
    plain = erase(tiny_model, targets, anchors, "mace", progress=False, preserve_scale=n_concept / (4 * len(keep)), **opts)
    assert n_concept != 4 * len(keep)
    assert all(torch.allclose(bal.tensors[n].double(), plain.tensors[n].double(), atol=1e-5, rtol=1e-4) for n in bal.tensors)


def _drifted(model, scale: float = 0.05):
    """A copy of the model whose cross-attention K/V weights moved (the damage of earlier edits)."""
    import copy

    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in out.unet.named_parameters():
            if "attn2.to_k" in n or "attn2.to_v" in n:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return out


def _distance_on_other_prompts(model, original, exclude) -> float:
    """Mean squared difference of noise predictions on other prompts (drawn apart from the hold's)."""
    from datarights.erase.hold import other_prompts
    from datarights.world import vocabulary_of

    prompts = other_prompts(16, 12345, exclude, vocabulary_of(original))
    g = torch.Generator().manual_seed(3)
    x = torch.randn((len(prompts), *original.latent_shape), generator=g)
    t = torch.randint(0, 1000, (len(prompts),), generator=g)
    with torch.no_grad():
        c = original.encode_prompt(prompts)
        return float(((model.predict_noise(x, t, c) - original.predict_noise(x, t, c)) ** 2).mean())


def test_hold_pulls_an_edit_on_a_line_back_to_the_original(tiny_model):
    """An edit made on a drifted model (earlier edits' damage) with `hold` comes out nearer the line's
    original on other prompts than the same edit without it, and records the line it was held to."""
    from datarights.erase import Line

    drifted = _drifted(tiny_model, 0.2)
    line = Line(tiny_model, [("Blubbo", "fish")])
    opts = dict(FAST["ca"], steps=30, lr=1e-3)
    free = erase(drifted, ["grumpy face"], ["face"], "ca", progress=False, line=line, **opts)
    held = erase(drifted, ["grumpy face"], ["face"], "ca", progress=False, line=line, hold=10.0, **opts)
    exclude = ["grumpy face", "Blubbo"]
    d_free = _distance_on_other_prompts(free.apply(drifted), tiny_model, exclude)
    d_held = _distance_on_other_prompts(held.apply(drifted), tiny_model, exclude)
    d_drift = _distance_on_other_prompts(drifted, tiny_model, exclude)
    assert d_held < 0.8 * d_free and d_held < 0.8 * d_drift, (d_held, d_free, d_drift)
    assert held.config["hold"] == 10.0
    assert held.config["line"] == {"original": model_hash(tiny_model), "erased": [["Blubbo", "fish"]]}
    # a hold without a line is a preservation term towards the model itself; other methods refuse a line
    assert "line" not in erase(tiny_model, ["grumpy face"], ["face"], "ca", progress=False, hold=1.0, **FAST["ca"]).config
    with pytest.raises(DatarightsError, match="cannot hold an edit to its model line; use ca"):
        erase(tiny_model, ["grumpy face"], ["face"], "uce", progress=False, line=line)
    with pytest.raises(DatarightsError, match="--hold must be non-negative"):
        make_config("ca", hold=-1.0)


def test_hold_makes_its_tensors_on_the_models_device(backend_folder):
    """The hold terms (their images, prompts and draws) under the meta default device, on both backends."""
    from datarights.erase import Line

    base = load_model(backend_folder, "cpu")
    with torch.device("meta"):
        edit = erase(base, ["grumpy face"], ["face"], "ca", progress=False, hold=1.0,
                     line=Line(base, [("Blubbo", "fish")]), **FAST["ca"])
    assert edit.config["line"]["erased"] == [["Blubbo", "fish"]]
    assert all(torch.isfinite(v).all() for v in edit.tensors.values())


def test_cli_hold_on_an_edit_of_an_edit_holds_to_the_first_base(monkeypatch, capsys, tmp_path, tiny_trained):
    """`erase --hold` on an edited model: the line is read from the folders (the first unedited base and
    every concept erased between); on other methods it is one line, exit 2, and nothing is written."""
    import json

    from .test_cli import run

    small = ["--steps", "2", "--batch-size", "2"]
    code, _, err = run(monkeypatch, capsys, "erase", "--model", tiny_trained, "--target", "grumpy face", "--anchor",
                       "face", "--out", tmp_path / "e1", *small)
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "erase", "--model", tmp_path / "e1", "--target", "Blubbo", "--anchor",
                       "fish", "--out", tmp_path / "e2", "--hold", "1", *small)
    assert code == 0, err
    cfg = json.loads((tmp_path / "e2" / "model_index.json").read_text())["config"]
    assert cfg["hold"] == 1.0 and cfg["line"]["erased"] == [["grumpy face", "face"]]
    assert cfg["line"]["original"] == model_hash(load_model(tiny_trained, "cpu"))
    code, _, err = run(monkeypatch, capsys, "erase", "--model", tmp_path / "e1", "--target", "Blubbo", "--anchor",
                       "fish", "--out", tmp_path / "e3", "--hold", "1", "--method", "uce")
    assert code == 2 and "--hold is available for ca" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e3").exists()
