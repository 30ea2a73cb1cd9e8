"""One contract for every attribution method, plus exact checks of the shared machinery."""

import pytest
import torch

from datarights.attribute import METHODS, Query, attribute, load_training_set, make_config, owner_shares
from datarights.runtime import Draws, draws, linear_modules, per_sample_grads, per_sample_loss
from datarights.errors import DatarightsError

FAST = {
    "abu": dict(query_draws=8, eval_timesteps=2, fisher_draws=1, batch_size=16),
    "abu-fast": dict(query_draws=8, eval_timesteps=2, fisher_draws=1, batch_size=16, proj_dim=64, rerank=4),
    "trak": dict(proj_dim=16, timesteps=2, batch_size=16),
    "dtrak": dict(proj_dim=16, timesteps=2, batch_size=16),
    "jtrak": dict(proj_dim=16, timesteps=3, batch_size=16),
    "ekfac": dict(proj_dim=16, timesteps=2, batch_size=16, fisher_draws=1),
    "kfac": dict(proj_dim=16, timesteps=2, batch_size=16, fisher_draws=1),
    "feature": {},
    "pixel": {},
    "caption": {},
}


@pytest.fixture(scope="module")
def train_set(tiny_world):
    from datarights.models import build_world_model

    from .conftest import TINY_UNET
    model = build_world_model(TINY_UNET, seed=0).eval()
    return model, load_training_set(model, tiny_world)


def test_every_method_has_a_contract_row():
    assert set(FAST) == set(METHODS)


@pytest.fixture(params=["world", "sd"])
def backend_train_set(request, train_set, tiny_world):
    if request.param == "world":
        return train_set
    from datarights.models import load_model
    model = load_model(request.getfixturevalue("tiny_sd_trained"), "cpu")
    return model, load_training_set(model, tiny_world)


@pytest.mark.parametrize("method", sorted(FAST))
def test_attribution_contract(method, backend_train_set, tmp_path, monkeypatch):
    """On the tiny world model and the tiny SD folder; the scoring under the meta default device."""
    model, train = backend_train_set
    q = Query(train.images[5], train.folder.texts[5])
    cfg = make_config(method, **FAST[method])
    with torch.device("meta"):
        r = attribute(model, train, q, method, cfg, cache=tmp_path, progress=False)
    assert r.scores.shape == (len(train),) and torch.isfinite(r.scores).all()
    out = r.to_json(5)
    assert len(out["top"]) == 5 and {"file", "owner", "score"} <= set(out["top"][0])
    assert abs(sum(o["share"] for o in out["owners"]) - 1) < 1e-6
    # the per-training-set work is cached: a second query must not recompute it
    monkeypatch.setattr(METHODS[method], "prepare", lambda *a, **k: pytest.fail("recomputed a cached artifact"))
    r2 = attribute(model, train, q, method, cfg, cache=tmp_path, progress=False)
    assert r2.prepare_seconds == 0.0 and torch.allclose(r.scores, r2.scores)


def test_cache_from_other_data_is_not_used(train_set, tiny_world, tmp_path):
    from datarights.world import read_imagefolder
    model, train = train_set
    folder = read_imagefolder(tiny_world)
    folder.images = folder.images[::-1].copy()  # same captions, other pixels: another content hash
    other = load_training_set(model, folder)
    q = Query(train.images[0], train.folder.texts[0])
    attribute(model, train, q, "pixel", cache=tmp_path, progress=False)
    r = attribute(model, other, q, "pixel", cache=tmp_path, progress=False)
    assert r.prepare_seconds > 0  # rebuilt, not reused
    assert int(torch.argmax(r.scores)) == len(train) - 1


def test_pixel_and_feature_find_an_exact_copy(train_set):
    model, train = train_set
    for method in ("pixel", "feature"):
        q = Query(train.images[7], train.folder.texts[7])
        r = attribute(model, train, q, method, cache=None, progress=False)
        assert r.top(1)[0]["index"] == 7 or method == "feature"
        assert 7 in [t["index"] for t in r.top(10)]


def test_linear_per_sample_grads_are_exact(train_set):
    model, train = train_set
    mods = linear_modules(model, "xattn-kv")
    idx = torch.arange(3)
    d = draws(3, 2, tuple(train.x0.shape[1:]), model.num_train_timesteps, seed=0, device=model.device)
    fast = per_sample_grads(model, mods, train.x0[idx], train.cond(idx), d)
    for i in range(3):
        for m in mods.values():
            m.weight.requires_grad_(True)
        di = Draws(d.t[i:i + 1], d.noise[i:i + 1])
        loss = per_sample_loss(model, train.x0[i:i + 1], train.cond(idx[i:i + 1]), di)[0]
        grads = torch.autograd.grad(loss, [m.weight for m in mods.values()])
        for m in mods.values():
            m.weight.requires_grad_(False)
        slow = torch.cat([g.flatten() for g in grads])
        assert torch.allclose(fast[i], slow, atol=1e-6, rtol=1e-4)


def test_per_draw_grads_average_to_per_sample_grads(train_set):
    model, train = train_set
    mods = linear_modules(model, "xattn-kv")
    idx = torch.arange(3)
    d = draws(3, 2, tuple(train.x0.shape[1:]), model.num_train_timesteps, seed=1, device=model.device)
    full = per_sample_grads(model, mods, train.x0[idx], train.cond(idx), d, per_draw=True)     # [6, P]
    mean = per_sample_grads(model, mods, train.x0[idx], train.cond(idx), d)                   # [3, P]
    assert torch.allclose(full.view(3, 2, -1).mean(1), mean, atol=1e-6, rtol=1e-4)


def test_sketch_preserves_inner_products():
    from datarights.attribute.trak import sketch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=g) @ torch.randn(8, 20000, generator=g)  # low rank, like gradients
    bucket, sign = sketch(20000, 2048, 0)
    px = torch.zeros(40, 2048).index_add_(1, bucket, x * sign)
    exact, approx = (x[0] @ x[1:].T), (px[0] @ px[1:].T)
    assert torch.corrcoef(torch.stack([exact, approx]))[0, 1] > 0.9
    assert (approx - exact).abs().mean() < 0.1 * exact.abs().mean()


def test_trak_projections_agree_up_to_projection_noise(train_set, tmp_path):
    model, train = train_set
    q = Query(train.images[2], train.folder.texts[2])
    scores = [attribute(model, train, q, "trak", make_config("trak", proj_dim=256, timesteps=2, batch_size=16,
                                                             projection=p), cache=tmp_path, progress=False).scores
              for p in ("sjlt", "dense")]
    assert torch.corrcoef(torch.stack(scores))[0, 1] > 0.5


def test_jtrak_journey_ends_at_the_image_and_reports_steps(train_set, tmp_path):
    from datarights.attribute.trak import journey
    model, train = train_set
    x0 = train.x0[:1]
    ts = torch.tensor([1, 500, 999])
    hats = journey(model, x0, train.cond(torch.arange(1)), ts)
    assert hats.shape == (3, *x0.shape[1:])
    # at t=1 there is almost no noise: the model's x0-prediction is the image itself
    assert (hats[0] - x0[0]).abs().max() < 0.05
    r = attribute(model, train, Query(train.images[0], train.folder.texts[0]), "jtrak",
                  make_config("jtrak", **FAST["jtrak"]), cache=tmp_path, progress=False)
    assert [s["t"] for s in r.to_json()["journey"]] == [166, 500, 833]


def test_abu_influence_is_zero_without_an_update(train_set, tmp_path):
    model, train = train_set
    cfg = make_config("abu", **FAST["abu"])
    cfg.lr = 0.0
    r = attribute(model, train, Query(train.images[1], train.folder.texts[1]), "abu", cfg, cache=tmp_path, progress=False)
    assert torch.count_nonzero(r.scores) == 0


def test_abu_fast_is_abu_to_first_order_and_its_second_stage_is_abu(train_set, tmp_path):
    """The oracle is exact abu (fp32 loss passes): without a projection, abu-fast's scores are abu's
    up to a remainder of order lr^2 (its relative error falls about tenfold with lr; this random tiny
    model's Fisher is so small that the step is linear only below lr ~1e-5); with a sketch they keep
    abu's ranking; the reranked top images carry abu's exact scores."""
    import numpy as np

    from datarights.stats import spearman

    model, train = train_set
    q = Query(train.images[3], train.folder.texts[3])
    # damping pinned: the lr at which the step turns non-linear depends on it
    common = dict(query_draws=8, eval_timesteps=2, fisher_draws=1, batch_size=16, precision="fp32", damping=1e-3)
    errors = []
    for lr in (1e-4, 1e-5):
        exact = attribute(model, train, q, "abu", make_config("abu", lr=lr, **common), cache=tmp_path,
                          progress=False).scores.double()
        fast = attribute(model, train, q, "abu-fast", make_config("abu-fast", lr=lr, projection="none", **common),
                         cache=tmp_path, progress=False).scores.double()
        errors.append(float((fast - exact).norm() / exact.norm()))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 4, errors
    sketched = attribute(model, train, q, "abu-fast", make_config("abu-fast", lr=1e-5, proj_dim=4096, **common),
                         cache=tmp_path, progress=False).scores
    assert spearman(sketched.numpy(), exact.numpy()) > 0.9
    two = attribute(model, train, q, "abu-fast", make_config("abu-fast", lr=1e-5, projection="none", rerank=5, **common),
                    cache=tmp_path, progress=False)
    top = torch.argsort(fast, descending=True)[:5]
    assert two.extra["reranked"] == 5 and two.prepare_seconds == 0.0   # one artifact serves every rerank
    assert np.allclose(two.scores[top].double(), exact[top], rtol=1e-3, atol=1e-3 * float(exact.abs().max()))
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[top] = False
    assert torch.equal(two.scores[rest].double(), fast[rest])
    with pytest.raises(DatarightsError, match="one unlearning step"):
        make_config("abu-fast", steps=2)
    with pytest.raises(DatarightsError, match="projection"):
        make_config("abu-fast", projection="pca")


def test_owner_shares_sum_to_one():
    g = torch.Generator().manual_seed(0)
    shares = owner_shares(torch.randn(500, generator=g), [f"o{i % 37}" for i in range(500)])
    assert abs(sum(s["share"] for s in shares) - 1) < 1e-6
    assert shares == sorted(shares, key=lambda s: -s["share"])


def test_bad_attribution_requests():
    with pytest.raises(DatarightsError, match="prompt is required"):
        Query(torch.zeros(3, 16, 16), " ")
    with pytest.raises(DatarightsError, match="unknown attribution method"):
        make_config("magic")


def test_memo_builds_once_across_processes_rebuilds_a_damaged_entry_and_survives_no_cache(tmp_path, monkeypatch):
    from datarights.attribute.cache import memo

    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(4.0)}, {"words": ["a", "b"]}

    monkeypatch.setenv("DATARIGHTS_CACHE", str(tmp_path / "cache"))
    first = memo("table", "k1", build)
    again = memo("table", "k1", build)                       # what a new process finds: read from disk
    assert len(calls) == 1 and torch.equal(first[0]["x"], again[0]["x"]) and again[1]["words"] == ["a", "b"]
    (tmp_path / "cache" / "table" / "k1" / "tensors.safetensors").write_bytes(b"truncated")
    assert torch.equal(memo("table", "k1", build)[0]["x"], torch.arange(4.0)) and len(calls) == 2
    assert memo("table", "k1", build)[1]["words"] == ["a", "b"] and len(calls) == 2    # the rebuilt entry is kept
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DATARIGHTS_CACHE", str(tmp_path / "file"))                      # no writable cache
    assert memo("table", "k2", build)[1]["words"] == ["a", "b"] and len(calls) == 3


def test_the_realness_bank_is_rendered_once_per_judge_and_read_back_the_same(monkeypatch):
    from datarights.judge import load_judge, scorer

    judge = load_judge()
    a = scorer.fit_realness(judge)
    monkeypatch.setattr(scorer, "_REALNESS", {})
    monkeypatch.setattr("datarights.judge.render_labelled", lambda *a, **k: pytest.fail("rendered again"))
    b = scorer.fit_realness(judge)
    assert torch.equal(a.feat_bank, b.feat_bank) and torch.equal(a.pix_bank, b.pix_bank)
    assert (a.feat_threshold, a.pix_threshold) == (b.feat_threshold, b.pix_threshold)


# ---------------------------------------------------------------- influence functions (kfac, ekfac)
def _query_grad(model, cfg, q):
    """The query's flat loss gradient [P] at TRAK's query draws (what the influence methods precondition)."""
    from datarights.attribute.trak import _train_draws
    x0 = model.to_model_space(q.image[None].float())
    return per_sample_grads(model, linear_modules(model, cfg.params), x0, model.encode_prompt([q.prompt]),
                            _train_draws(model, x0, cfg, 10**9), "loss")[0].double()


def _layer_grads(model, train, cfg, rows):
    """Per-sample loss gradients of each tracked layer at TRAK's training draws: {name: [len(rows), out, in]}."""
    from datarights.attribute.trak import _train_draws
    mods = linear_modules(model, cfg.params)
    idx = torch.tensor(rows)
    x0 = train.x0[idx]
    g = per_sample_grads(model, mods, x0, train.cond(idx), _train_draws(model, x0, cfg, indices=rows), "loss")
    out, start = {}, 0
    for n, m in mods.items():
        out[n] = g[:, start:start + m.weight.numel()].view(len(rows), *m.weight.shape).double()
        start += m.weight.numel()
    return out


def test_the_kronecker_preconditioner_is_the_dense_damped_inverse():
    """The oracle: the curvature built as a dense matrix, (Q_A (x) Q_S) diag(vec Lambda) (Q_A (x) Q_S)^T
    + lambda I, and solved with torch.linalg.solve."""
    from datarights.attribute import ekfac
    g = torch.Generator().manual_seed(0)
    QA = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64))[0]
    QS = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0]
    lam = torch.rand(5, 7, generator=g, dtype=torch.float64) ** 3
    grad = torch.randn(5, 7, generator=g, dtype=torch.float64)
    U = torch.kron(QA, QS)                      # vec() stacks columns: vec(Q_S X Q_A^T) = (Q_A (x) Q_S) vec(X)
    G = U @ torch.diag(lam.T.flatten()) @ U.T + 0.1 * lam.mean() * torch.eye(35, dtype=torch.float64)
    want = torch.linalg.solve(G, grad.T.flatten())
    got = ekfac.precondition(grad, {"QA": QA, "QS": QS, "lam": lam}, 0.1)
    assert torch.allclose(got.T.flatten(), want, rtol=1e-10, atol=1e-12)


def test_influence_scores_are_the_preconditioned_gradient_products(train_set):
    """Without a projection, the scores must be sum over layers of g_i . precondition(g_q) with each layer's
    own factors (the preconditioner is checked against the dense inverse above)."""
    from datarights.attribute import ekfac, resolved
    model, train = train_set
    for method in ("ekfac", "kfac"):
        cfg = resolved(make_config(method, projection="none", timesteps=2, batch_size=16, fisher_draws=1), model)
        state = METHODS[method].prepare(model, train, cfg, progress=False)
        q = Query(train.images[3], train.folder.texts[3])
        got = METHODS[method].score(model, train, state, q, cfg).double()
        mods = linear_modules(model, cfg.params)
        gq = _query_grad(model, cfg, q)
        gi = _layer_grads(model, train, cfg, list(range(len(train))))
        want, start = torch.zeros(len(train), dtype=torch.float64), 0
        for i, (n, m) in enumerate(mods.items()):
            QA, QS, lam = (state[f"{p}.{i}"].double() for p in ("QA", "QS", "lam"))
            size = m.weight.numel()
            pre = ekfac.precondition(gq[start:start + size].view_as(m.weight), {"QA": QA, "QS": QS, "lam": lam},
                                     cfg.damping)
            want += gi[n].flatten(1) @ pre.flatten()
            start += size
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max())), method


def test_ekfac_eigenvalues_are_the_pseudo_gradients_second_moments_and_kfac_the_products(train_set):
    """EK-FAC's Lambda is E[(Q_S^T D Q_A)^2] over the per-draw pseudo-gradients D (recomputed here with
    autograd, one draw at a time, not the hooks); K-FAC's is l_S l_A^T from the same factors."""
    from datarights.attribute import ekfac, resolved
    from datarights.runtime import draws, generator
    model, train = train_set
    cfg = resolved(make_config("ekfac", timesteps=2, batch_size=16, fisher_draws=1), model)
    facs = ekfac.fit_factors(model, train, cfg, progress=False)
    kf = ekfac.fit_factors(model, train, resolved(make_config("kfac", timesteps=2, batch_size=16, fisher_draws=1),
                                                  model), progress=False)
    mods = linear_modules(model, cfg.params)
    bs = max(1, 16 * cfg.timesteps // cfg.fisher_draws // 2)
    second = {n: 0 for n in mods}
    for s in range(0, len(train), bs):
        idx = torch.arange(s, min(s + bs, len(train)))
        x0 = train.x0[idx]
        d = draws(len(idx), 1, tuple(x0.shape[1:]), model.num_train_timesteps, cfg.seed + 31, model.device, offset=s)
        g = generator(cfg.seed + 37, s)
        z = torch.randn((len(idx), *x0.shape[1:]), generator=g)
        for r in range(len(idx)):                     # each draw's own autograd gradient
            for m in mods.values():
                m.weight.requires_grad_(True)
            with torch.enable_grad():
                out = model.predict_noise(model.add_noise(x0[r:r + 1], d.noise[r], d.t[r]), d.t[r],
                                          train.cond(idx[r:r + 1]))
                loss = (out * z[r]).sum() * (2.0 / out[0].numel()) ** 0.5
                grads = torch.autograd.grad(loss, [m.weight for m in mods.values()])
            for m in mods.values():
                m.weight.requires_grad_(False)
            for (n, _), D in zip(mods.items(), grads):
                second[n] = second[n] + (facs[n]["QS"].double().T @ D.double() @ facs[n]["QA"].double()) ** 2
    for n in mods:
        lam = second[n] / len(train)
        assert torch.allclose(facs[n]["lam"].double(), lam, rtol=1e-3, atol=1e-6 * float(lam.max())), n
        assert torch.equal(kf[n]["QA"], facs[n]["QA"]) and torch.equal(kf[n]["QS"], facs[n]["QS"])
        assert not torch.allclose(kf[n]["lam"], facs[n]["lam"])       # the correction changes them


def test_influence_damping_is_a_query_setting_and_its_limit_is_the_layer_scaled_gradient_product(train_set, tmp_path):
    """One artifact serves every damping; at a huge damping, (G + lambda_l I)^-1 -> I / lambda_l per layer,
    so the scores become sum_l g_q,l . g_i,l / (damping x mean Lambda_l)."""
    model, train = train_set
    q = Query(train.images[2], train.folder.texts[2])
    common = dict(timesteps=2, batch_size=16, fisher_draws=1, projection="none")
    a = attribute(model, train, q, "ekfac", make_config("ekfac", **common), cache=tmp_path, progress=False)
    b = attribute(model, train, q, "ekfac", make_config("ekfac", damping=1e8, **common), cache=tmp_path, progress=False)
    assert b.prepare_seconds == 0.0
    from datarights.attribute import prepare, resolved
    cfg = resolved(make_config("ekfac", damping=1e8, **common), model)
    state, _, _ = prepare(model, train, "ekfac", cfg, cache=tmp_path, progress=False)
    mods = linear_modules(model, cfg.params)
    gq = _query_grad(model, cfg, q)
    gi = _layer_grads(model, train, cfg, list(range(len(train))))
    want, start = torch.zeros(len(train), dtype=torch.float64), 0
    for i, (n, m) in enumerate(mods.items()):
        size = m.weight.numel()
        want += gi[n].flatten(1) @ gq[start:start + size] / (1e8 * state[f"lam.{i}"].double().mean())
        start += size
    assert torch.allclose(b.scores.double(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))
    assert not torch.allclose(a.scores.double() / a.scores.abs().max(), want / want.abs().max(), atol=1e-2)


def test_influence_configs_refuse_bad_settings():
    for kw, msg in [(dict(damping=0), "--damping must be positive"), (dict(damping=-1), "--damping must be positive"),
                    (dict(fisher_draws=0), "--fisher-draws must be at least 1"),
                    (dict(projection="pca"), "projection must be one of")]:
        for method in ("ekfac", "kfac"):
            with pytest.raises(DatarightsError, match=msg):
                make_config(method, **kw)


# ---------------------------------------------------------------- local attribution (a region of the query)
def test_a_region_loss_is_the_mean_over_its_positions(train_set):
    from datarights.runtime import region_weight
    model, train = train_set
    x0, cond = train.x0[:3], train.cond(torch.arange(3))
    d = draws(3, 2, tuple(x0.shape[1:]), model.num_train_timesteps, 0, model.device)
    region = torch.zeros(model.resolution, model.resolution)
    region[2:9, 0:5] = 1.0
    w = region_weight(model, region)
    got = per_sample_loss(model, x0, cond, d, "loss", w)
    # by hand: each draw's squared error averaged over the region's positions and the channels
    n, k = d.t.shape
    x = x0[:, None].expand(n, k, *x0.shape[1:]).reshape(n * k, *x0.shape[1:])
    t, noise = d.t.reshape(-1), d.noise.reshape(n * k, *x0.shape[1:])
    c = cond[:, None].expand(n, k, *cond.shape[1:]).reshape(n * k, *cond.shape[1:])
    err = (model.predict_noise(model.add_noise(x, noise, t), t, c) - noise) ** 2
    want = err[:, :, 2:9, 0:5].flatten(1).mean(1).view(n, k).mean(1)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    everywhere = region_weight(model, torch.ones(model.resolution, model.resolution))
    assert torch.allclose(per_sample_loss(model, x0, cond, d, "loss", everywhere), per_sample_loss(model, x0, cond, d),
                          rtol=1e-5, atol=1e-7)


def test_a_latent_region_weighs_each_vae_patch_by_its_share_inside():
    from types import SimpleNamespace

    from datarights.runtime import region_weight
    model = SimpleNamespace(vae=object(), latent_shape=(4, 2, 2), resolution=16, device=torch.device("cpu"))
    region = torch.zeros(16, 16)
    region[0:8, 0:4] = 1.0                           # half of the top-left 8 x 8 patch
    w = region_weight(model, region)
    assert w.shape == (1, 1, 2, 2) and torch.allclose(w[0, 0], torch.tensor([[0.5, 0.0], [0.0, 0.0]]))


def test_region_attribution_is_honoured_or_refused(train_set, tmp_path):
    from datarights.attribute import LOCAL
    model, train = train_set
    region = torch.zeros(model.resolution, model.resolution)
    region[:, : model.resolution // 2] = 1.0
    whole = Query(train.images[4], train.folder.texts[4])
    left = Query(train.images[4], train.folder.texts[4], region)
    for method in sorted(LOCAL):
        a = attribute(model, train, whole, method, make_config(method, **FAST[method]), cache=tmp_path, progress=False)
        b = attribute(model, train, left, method, make_config(method, **FAST[method]), cache=tmp_path, progress=False)
        assert torch.isfinite(b.scores).all() and not torch.allclose(a.scores, b.scores), method
    # pixel: the region's pixels against the same pixels of every training image
    r = attribute(model, train, left, "pixel", cache=None, progress=False)
    half = train.images[:, :, :, : model.resolution // 2].flatten(1).double()
    q = train.images[4][:, :, : model.resolution // 2].flatten().double()
    half, q = half - half.mean(1, keepdim=True), q - q.mean()
    want = (half @ q) / (half.norm(dim=1) * q.norm())
    assert torch.allclose(r.scores.double(), want, atol=1e-5)
    # feature: the region's crop, centred on its mean colour, embedded
    from datarights.attribute.feature import FeatureConfig, embed, region_crop
    crop = region_crop(train.images[4], region)
    h = model.resolution // 2                    # the left half, padded to a square: the image's size already
    assert torch.equal(crop[:, :, h // 2: h // 2 + h], train.images[4][:, :, :h])
    box = torch.zeros_like(region)
    box[2:6, 3:7] = 1.0                          # a 4 x 4 box is scaled up to the image's size
    small = region_crop(train.images[4], box)
    want = torch.nn.functional.interpolate(train.images[4][None, :, 2:6, 3:7], size=region.shape, mode="bilinear",
                                           align_corners=False)[0]
    assert torch.allclose(small, want.clamp(0, 1), atol=1e-6)
    cfg = FeatureConfig(region_stride=0).for_model(model)
    got = attribute(model, train, left, "feature", cfg, cache=None, progress=False).scores
    whole = embed(train.images, cfg) @ embed(crop[None], cfg)[0]
    assert torch.allclose(got, whole, atol=1e-5)
    # by default each image also offers its windows of the region's size (a half: 3 of them across) and
    # scores by its best match: the oracle cuts each window out as a region of its own
    from datarights.attribute.feature import windows
    res, h = model.resolution, model.resolution // 2
    assert windows((res, res), res, h, 0.5) == [(0, res, 0, h), (0, res, h // 2, h // 2 + h), (0, res, h, res)]
    assert windows((10, 10), 4, 4, 0.5)[-1] == (6, 10, 6, 10)           # the last one flush with the edge
    best = whole.clone()
    for y0, y1, x0, x1 in windows((res, res), res, h, 0.5):
        box = torch.zeros_like(region)
        box[y0:y1, x0:x1] = 1.0
        cut = torch.stack([region_crop(im, box) for im in train.images])
        best = torch.maximum(best, embed(cut, cfg) @ embed(crop[None], cfg)[0])
    got = attribute(model, train, left, "feature", cache=None, progress=False).scores
    assert torch.allclose(got, best, atol=1e-5) and not torch.allclose(got, whole, atol=1e-3)
    for method, why in [("caption", "reads only the prompt"), ("jtrak", "sampling journey")]:
        with pytest.raises(DatarightsError, match=f"{method} cannot attribute a region: .*{why}"):
            attribute(model, train, left, method, cache=tmp_path, progress=False)
    for method in ("pixel", "feature"):
        with pytest.raises(DatarightsError, match="the store does not keep"):
            attribute(model, train, left, method, store=tmp_path / "s", progress=False)
    with pytest.raises(DatarightsError, match="the region is empty"):
        Query(train.images[4], "a face", torch.zeros(model.resolution, model.resolution))
    with pytest.raises(DatarightsError, match="must be the same size"):
        Query(train.images[4], "a face", torch.ones(3, 3))


def test_a_region_attributes_through_the_vae_on_a_latent_model(tiny_world, tiny_sd_trained, tmp_path):
    from datarights.models import load_model
    model = load_model(tiny_sd_trained, "cpu")
    train = load_training_set(model, tiny_world)
    region = torch.zeros(model.resolution, model.resolution)
    region[:, : model.resolution // 2] = 1.0
    w = Query(train.images[4], "a face", region).weight(model)
    assert w.shape[-2:] == model.latent_shape[1:] and torch.isclose(w.mean(), torch.tensor(0.5))
    for method in ("dtrak", "ekfac"):
        cfg = make_config(method, **FAST[method])
        whole = attribute(model, train, Query(train.images[4], "a face"), method, cfg, cache=tmp_path, progress=False)
        left = attribute(model, train, Query(train.images[4], "a face", region), method, cfg, cache=tmp_path,
                         progress=False)
        assert torch.isfinite(left.scores).all() and not torch.allclose(whole.scores, left.scores), method


def test_the_realness_bank_is_drawn_from_the_judges_own_world(monkeypatch):
    """A judge of another world (a large world's: 48 styles, 143 owners) is calibrated on renders of its
    own world, not the default one's: with the default world's bank, the large judge flagged 59% of the
    large model's own puffer-fish drawings as degenerate (BENCHMARKS.md)."""
    import datarights.judge as J
    from datarights.judge import Judge, scorer
    from datarights.world.vocab import PRESETS, build_vocabulary

    large = build_vocabulary(PRESETS["large"])
    torch.manual_seed(0)
    judge = Judge(vocab=large).eval()
    seen, real = [], J.render_labelled
    monkeypatch.setattr(J, "render_labelled", lambda n, seed, vocab=None, **k: seen.append(vocab) or real(n, seed, vocab, **k))
    r = scorer.fit_realness(judge, n_bank=64, n_heldout=32)
    assert seen == [large, large] and r.pix_bank.shape == (64, 3 * 16 * 16)
