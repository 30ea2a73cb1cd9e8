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
