"""The training-set store: rows keyed by content that grow and shrink, checked shards, rank-updated kernel."""

import numpy as np
import pytest
import torch

from datarights.attribute import Query, attribute, load_training_set, make_config, resolved
from datarights.attribute import store as S
from datarights.attribute.trak import _kernel
from datarights.errors import DatarightsError
from datarights.stats import spearman
from datarights.world import ImageFolder

CFG = dict(proj_dim=16, timesteps=2, batch_size=16)


@pytest.fixture(scope="module")
def world(tiny_world):
    from datarights.models import build_world_model

    from .conftest import TINY_UNET
    model = build_world_model(TINY_UNET, seed=0).eval()
    return model, load_training_set(model, tiny_world)


def subset(model, train, rows):
    f = train.folder
    return load_training_set(model, ImageFolder(f.root, f.images[rows].copy(), [f.metas[i] for i in rows]))


def cfg_of(model, method="trak", **kw):
    return resolved(make_config(method, **{**(CFG if method in ("trak", "dtrak") else {}), **kw}), model)


def query(train, i=5):
    return Query(train.images[i], train.folder.texts[i])


def test_store_scores_are_the_in_memory_kernel_of_the_same_rows(world, tmp_path):
    model, train = world
    cfg = cfg_of(model)
    store, rep = S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    keys = train.keys
    assert rep.added == len(set(keys)) and len(store) == len(set(keys))
    spec = S.spec_for("trak")
    phi = spec.featurize(model, train, cfg, torch.arange(len(train)), [S.key_seed(k) for k in keys])
    ref = _kernel(phi, cfg.lam) @ spec.query(model, train, query(train), cfg)
    got = S.store_scores(model, train, store, query(train), "trak", cfg)
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    # through attribute(): the same scores, and a second call computes nothing
    r = attribute(model, train, query(train), "trak", cfg, store=tmp_path / "s", progress=False)
    assert torch.allclose(r.scores, got) and r.extra["store"].startswith("store: 0 rows added, 0 deleted")


def test_store_grows_and_shrinks_like_a_rebuild(world, tmp_path, monkeypatch):
    model, train = world
    cfg = cfg_of(model)
    a, b = subset(model, train, list(range(0, 44))), subset(model, train, list(range(20, len(train))))
    S.sync(model, a, "trak", cfg, tmp_path / "inc", progress=False)
    made = []
    spec = S.ROWS["trak"]
    real = spec.featurize
    monkeypatch.setattr(spec, "featurize", lambda m, t, c, idx, seeds: made.append(len(idx)) or real(m, t, c, idx, seeds))
    inc, rep = S.sync(model, b, "trak", cfg, tmp_path / "inc", progress=False)
    ka, kb = set(a.keys), set(b.keys)
    assert sum(made) == rep.added == len(kb - ka) and rep.deleted == len(ka - kb) > 0 and rep.kept == len(ka & kb)
    fresh, _ = S.sync(model, b, "trak", cfg, tmp_path / "fresh", progress=False)
    # rows of one work made in batches of other sizes agree to float rounding (which depends on the thread count)
    np.testing.assert_allclose(inc.gram, fresh.gram, rtol=1e-4, atol=1e-5 * np.abs(fresh.gram).max())
    s_inc = S.store_scores(model, b, inc, query(b), "trak", cfg)
    s_fresh = S.store_scores(model, b, fresh, query(b), "trak", cfg)
    assert torch.allclose(s_inc, s_fresh, rtol=1e-4, atol=1e-5 * float(s_fresh.abs().max()))
    # the rows left behind by the old shards are gone from disk
    named = {e["id"] for e in inc.entries.values()} | {inc._manifest()["gram"]["id"]}
    assert {p.name.split(".")[0] for p in (tmp_path / "inc" / "rows").glob("*.npy")} == named


def test_a_work_seen_twice_is_one_row_counted_twice(world, tmp_path):
    model, train = world
    cfg = cfg_of(model)
    rows = list(range(10)) + [3, 3]
    dup = subset(model, train, rows)
    store, rep = S.sync(model, dup, "trak", cfg, tmp_path / "s", progress=False)
    k3 = dup.keys[3]
    assert rep.added == 10 and store.counts()[k3] == 3
    phi = np.stack([store.row(k) for k in dup.keys]).astype(np.float64)
    np.testing.assert_allclose(store.gram, phi.T @ phi, rtol=1e-9, atol=1e-9 * np.abs(store.gram).max())
    # one copy fewer: a recount, no new row
    _, rep = S.sync(model, subset(model, train, rows[:-1]), "trak", cfg, tmp_path / "s", progress=False)
    assert (rep.added, rep.deleted, rep.recounted) == (0, 0, 1)


@pytest.mark.parametrize("damage", ["flip", "truncate", "gram"])
def test_a_damaged_file_is_detected_and_rebuilt_never_used(world, tmp_path, damage):
    model, train = world
    cfg = cfg_of(model)
    store, _ = S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    before = S.store_scores(model, train, store, query(train), "trak", cfg)
    man = store._manifest()
    if damage == "gram":
        path = tmp_path / "s" / "rows" / f"{man['gram']['id']}.gram.npy"
    else:
        path = tmp_path / "s" / "rows" / f"{man['shards'][0]['id']}.rows.npy"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    opened = S.RowStore(tmp_path / "s", S.store_meta(model, "trak", cfg))
    assert opened.gram_damaged and (damage == "gram" or (opened.dropped and len(opened) < len(store)))
    if damage != "gram":
        with pytest.raises(DatarightsError, match="lacks"):
            opened.scores(np.zeros(16), train.keys)
    again, rep = S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    assert rep.gram_rebuilt and (rep.added > 0) == (damage != "gram")
    after = S.store_scores(model, train, again, query(train), "trak", cfg)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5 * float(before.abs().max()))


def test_a_service_hashes_settled_files_once_and_still_sees_a_later_change(world, tmp_path, monkeypatch):
    import os
    import time

    model, train = world
    cfg = cfg_of(model)
    store, _ = S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    before = S.store_scores(model, train, store, query(train), "trak", cfg)
    files = list((tmp_path / "s" / "rows").glob("*.npy"))
    old = time.time() - 60
    for f in files:                          # settled: written a minute ago
        os.utime(f, (old, old))
    hashed = []
    real = S.file_sha256
    monkeypatch.setattr(S, "file_sha256", lambda p: hashed.append(p) or real(p))
    meta = S.store_meta(model, "trak", cfg)
    S.RowStore(tmp_path / "s", meta)
    assert len(hashed) == len(files)
    opened = S.RowStore(tmp_path / "s", meta)          # the next query's open: nothing hashed again
    assert len(hashed) == len(files) and not opened.gram_damaged
    assert torch.allclose(S.store_scores(model, train, opened, query(train), "trak", cfg), before)
    assert (opened.gram_id, S.spec_for("trak").lam(cfg)) in S._KERNELS
    # a shard changed in place, same size, is hashed again and dropped
    path = tmp_path / "s" / "rows" / f"{opened._manifest()['shards'][0]['id']}.rows.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    damaged = S.RowStore(tmp_path / "s", meta)
    assert damaged.dropped and damaged.gram_damaged


def test_an_interrupted_update_leaves_the_store_as_it_was(world, tmp_path, monkeypatch):
    model, train = world
    cfg = cfg_of(model)
    a = subset(model, train, list(range(30)))
    store, _ = S.sync(model, a, "trak", cfg, tmp_path / "s", progress=False)
    before = S.store_scores(model, a, store, query(a), "trak", cfg)

    def crash(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    monkeypatch.undo()
    opened = S.RowStore(tmp_path / "s", S.store_meta(model, "trak", cfg))
    assert not opened.dropped and not opened.gram_damaged and len(opened) == len(store)
    assert torch.allclose(S.store_scores(model, a, opened, query(a), "trak", cfg), before)


def test_float16_rows_rank_like_float32(world, tmp_path):
    model, train = world
    for method in ("trak", "feature", "pixel"):
        cfg = cfg_of(model, method)
        s32 = S.store_scores(model, train, S.sync(model, train, method, cfg, tmp_path / f"{method}32",
                                                   progress=False)[0], query(train), method, cfg)
        s16 = S.store_scores(model, train, S.sync(model, train, method, cfg, tmp_path / f"{method}16", "float16",
                                                   progress=False)[0], query(train), method, cfg)
        assert spearman(s32.numpy(), s16.numpy()) > 0.99, method


def test_feature_and_pixel_rows_give_the_in_memory_scores(world, tmp_path):
    model, train = world
    for method in ("feature", "pixel"):
        ref = attribute(model, train, query(train, 7), method, cache=tmp_path / "cache", progress=False).scores
        got = attribute(model, train, query(train, 7), method, store=tmp_path / method, progress=False).scores
        assert torch.allclose(ref, got, atol=1e-5), method


def test_a_store_is_refused_for_another_config_method_or_folder(world, tmp_path):
    model, train = world
    S.sync(model, train, "trak", cfg_of(model), tmp_path / "s", progress=False)
    with pytest.raises(DatarightsError, match="another config"):
        S.sync(model, train, "trak", cfg_of(model, proj_dim=8), tmp_path / "s", progress=False)
    with pytest.raises(DatarightsError, match="another .*method"):
        S.sync(model, train, "dtrak", cfg_of(model, "dtrak"), tmp_path / "s", progress=False)
    with pytest.raises(DatarightsError, match="keeps no per-image rows"):
        attribute(model, train, query(train), "abu", store=tmp_path / "t", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DatarightsError, match="not empty"):
        S.sync(model, train, "pixel", cfg_of(model, "pixel"), tmp_path / "busy", progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_store_and_attribute_store_commands(monkeypatch, capsys, tmp_path, tiny_world, tiny_trained):
    import json

    from PIL import Image

    from .test_cli import run
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "q.png")
    common = ["--model", tiny_trained, "--data", tiny_world]
    code, out, err = run(monkeypatch, capsys, "store", tmp_path / "s", "--method", "pixel", *common, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["added"] == res["works"] > 0 and res["deleted"] == 0
    code, out, err = run(monkeypatch, capsys, "attribute", tmp_path / "q.png", "--prompt", "a red face", *common,
                         "--method", "pixel", "--store", tmp_path / "s", "--json")
    assert code == 0, err
    assert "store: 0 rows added, 0 deleted" in err and len(json.loads(out)["top"]) == 10
    code, out, err = run(monkeypatch, capsys, "store", tmp_path / "s", "--method", "pixel", "--index", *common, "--json")
    assert code == 0 and json.loads(out)["index"] == "built", err
    for extra, did in (([], "fitted"), ([], "kept (0 of"), (["--refit"], "refitted")):
        code, out, err = run(monkeypatch, capsys, "store", tmp_path / "k", "--method", "ekfac", *extra, *common, "--json")
        assert code == 0 and json.loads(out)["curvature"].startswith(did), err
    for args, message in [
        (["store", tmp_path / "t", "--method", "trak", "--index", *common], "scores go through its kernel"),
        (["store", tmp_path / "t", "--method", "abu", *common], "keeps no per-image rows"),
        (["store", tmp_path / "t", "--method", "pixel", "--dtype", "int8", *common], "--dtype must be one of"),
        (["store", tiny_world / "rows", "--method", "pixel", *common], "lies inside the input"),
        (["store", tmp_path / "s", "--method", "feature", *common], "another config, method"),
        (["attribute", tmp_path / "q.png", "--prompt", "a face", "--method", "abu", "--store", tmp_path / "t", *common],
         "keeps no per-image rows"),
    ]:
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists() and not (tiny_world / "rows").exists()


def test_model_free_rows_are_shared_by_every_model_and_model_rows_are_not(world, tmp_path):
    from datarights.models import build_world_model

    from .conftest import TINY_UNET
    model, train = world
    other = build_world_model(TINY_UNET, seed=1).eval()          # another model, e.g. an edited one
    S.sync(model, train, "pixel", cfg_of(model, "pixel"), tmp_path / "p", progress=False)
    _, rep = S.sync(other, train, "pixel", cfg_of(other, "pixel"), tmp_path / "p", progress=False)
    assert rep.added == 0 and rep.kept > 0
    S.sync(model, train, "trak", cfg_of(model), tmp_path / "t", progress=False)
    with pytest.raises(DatarightsError, match="another model"):
        S.sync(other, train, "trak", cfg_of(other), tmp_path / "t", progress=False)


def test_ray_workers_make_the_single_process_rows(world, tmp_path):
    """Two local Ray workers (starting Ray takes ~10 s: in the slow stage)."""
    from datarights.attribute.workers import ray_featurize
    model, train = world
    cfg = cfg_of(model)
    one, _ = S.sync(model, train, "trak", cfg, tmp_path / "one", progress=False)
    featurize, shutdown = ray_featurize(model, "trak", cfg, workers=2)
    try:
        two, rep = S.sync(model, train, "trak", cfg, tmp_path / "two", progress=False, featurize=featurize)
    finally:
        shutdown()
    assert rep.added == len(one)
    for k in train.keys:
        np.testing.assert_allclose(two.row(k), one.row(k), rtol=1e-4, atol=1e-6 * float(np.abs(one.row(k)).max()))
    np.testing.assert_allclose(two.gram, one.gram, rtol=1e-4, atol=1e-6 * np.abs(one.gram).max())


def test_workers_without_ray_say_how_to_install_it(monkeypatch, capsys, tmp_path, tiny_world, tiny_trained):
    import sys

    from .test_cli import run
    monkeypatch.setitem(sys.modules, "ray", None)               # import ray fails as if not installed
    code, _, err = run(monkeypatch, capsys, "store", tmp_path / "s", "--method", "pixel", "--model", tiny_trained,
                       "--data", tiny_world, "--workers", "2")
    assert code == 2 and "pip install 'datarights[ray]'" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "store", tmp_path / "s", "--method", "pixel", "--model", tiny_trained,
                       "--data", tiny_world, "--ray-address", "auto")
    assert code == 2 and "give --workers N too" in err
    assert not (tmp_path / "s").exists()


def test_a_streamed_folder_makes_the_in_memory_rows_reading_one_batch_at_a_time(world, tiny_world, tmp_path,
                                                                               monkeypatch):
    model, train = world
    cfg = cfg_of(model)
    mem, _ = S.sync(model, train, "trak", cfg, tmp_path / "mem", progress=False)
    rows = S.FolderRows.open(tiny_world, model.resolution)
    read = []
    real = S.FolderRows.images_of
    monkeypatch.setattr(S.FolderRows, "images_of", lambda self, r: read.append(len(r)) or real(self, r))
    streamed, rep = S.sync(model, rows, "trak", cfg, tmp_path / "stream", progress=False)
    assert rows.keys == train.keys and rep.added == len(mem)
    assert max(read) <= cfg.batch_size < len(train) and sum(read) == len(mem)
    for k in train.keys:
        np.testing.assert_allclose(streamed.row(k), mem.row(k), rtol=1e-4, atol=1e-6 * float(np.abs(mem.row(k)).max()))
    # scoring needs no images at all: the query and the rows
    r = attribute(model, rows, query(train), "trak", cfg, store=tmp_path / "stream", progress=False)
    ref = S.store_scores(model, train, mem, query(train), "trak", cfg)
    assert torch.allclose(r.scores, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max())) and sum(read) == len(mem)
    with pytest.raises(DatarightsError, match="needs a store"):
        attribute(model, rows, query(train), "trak", cfg, progress=False)
    # a model-free method reads the pixels only: no text states, no model-space encoding
    import datarights.attribute.base as B
    monkeypatch.setattr(B, "load_training_set", lambda *a: pytest.fail("pixel rows loaded the model's inputs"))
    for method in ("pixel", "feature"):
        mcfg = resolved(make_config(method), model)
        mem, _ = S.sync(model, train, method, mcfg, tmp_path / f"mem-{method}", progress=False)
        streamed, _ = S.sync(model, rows, method, mcfg, tmp_path / f"stream-{method}", progress=False)
        for k in train.keys[:8]:
            np.testing.assert_allclose(streamed.row(k), mem.row(k), atol=1e-6)


def test_an_interrupted_sync_keeps_its_committed_rows_and_resumes(world, tmp_path, monkeypatch):
    model, train = world
    cfg = cfg_of(model)
    spec = S.ROWS["trak"]
    real, calls = spec.featurize, []

    def dies_on_third(m, t, c, idx, seeds):
        calls.append(len(idx))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(m, t, c, idx, seeds)

    monkeypatch.setattr(spec, "featurize", dies_on_third)
    monkeypatch.setattr(S.RowStore, "__init__", _small_shards(S.RowStore.__init__))
    with pytest.raises(KeyboardInterrupt):
        S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    monkeypatch.setattr(spec, "featurize", real)
    kept = S.RowStore(tmp_path / "s", S.store_meta(model, "trak", cfg))
    assert len(kept) == sum(calls[:2]) > 0 and not kept.gram_damaged
    again, rep = S.sync(model, train, "trak", cfg, tmp_path / "s", progress=False)
    assert rep.kept == len(kept) and rep.added == len(again) - len(kept)
    fresh, _ = S.sync(model, train, "trak", cfg, tmp_path / "fresh", progress=False)
    np.testing.assert_allclose(again.gram, fresh.gram, rtol=1e-9, atol=1e-9 * np.abs(fresh.gram).max())


def _small_shards(init):
    def wrapped(self, root, meta, dtype="float32", shard_rows=4096):
        init(self, root, meta, dtype, shard_rows=8)         # commit every 8 rows (one batch is 16)
    return wrapped


# ---------------------------------------------------------------- the approximate index (feature, pixel)
def test_an_index_query_scores_the_true_top_and_gives_the_exact_owner_shares(world, tmp_path):
    model, train = world
    for method in ("feature", "pixel"):
        exact = attribute(model, train, query(train, 7), method, store=tmp_path / method, progress=False)
        _, rep = S.sync(model, train, method, cfg_of(model, method), tmp_path / method, progress=False, index=True)
        assert rep.index == "built" and "index built" in rep.line()
        # below the size threshold the store still scores every row exactly
        assert "approximate" not in attribute(model, train, query(train, 7), method, store=tmp_path / method,
                                              progress=False).extra
        few = attribute(model, train, query(train, 7), method, store=tmp_path / method, progress=False,
                        index_min_rows=0, candidates=12)
        ap = few.extra["approximate"]
        assert ap["candidates"] == 12 and ap["rows"] == len(train) and len(few.scores) == ap["rows_scored"] >= 12
        # the candidates are the exact top (a tiny index searches exhaustively), scored exactly
        assert [t["index"] for t in few.top(10)] == [t["index"] for t in exact.top(10)], method
        assert torch.allclose(few.scores, exact.scores[few.rows], atol=1e-5)
        # shares standardised with the exact centre: each owner's share differs from the exact one by at
        # most the bounded tail mass; with every row a candidate they are the exact shares
        full = dict((o["owner"], o["share"]) for o in exact.owner_shares())
        bound = ap["tail_share_bound"]
        assert 0 < bound < 1
        for o in few.owner_shares():
            assert abs(o["share"] * (1 - bound) - full[o["owner"]]) <= bound + 1e-6, (method, o)
        all_rows = attribute(model, train, query(train, 7), method, store=tmp_path / method, progress=False,
                             index_min_rows=0, candidates=len(train))
        assert all_rows.extra["approximate"]["tail_share_bound"] == 0.0
        got = {o["owner"]: o["share"] for o in all_rows.owner_shares()}
        assert all(abs(got[o] - full[o]) < 1e-4 for o in full), method


def test_the_index_follows_appends_and_opt_outs_and_a_damaged_one_is_rebuilt(world, tmp_path):
    model, train = world
    cfg = cfg_of(model, "pixel")
    a, b = subset(model, train, list(range(0, 40))), subset(model, train, list(range(10, len(train))))
    S.sync(model, a, "pixel", cfg, tmp_path / "s", progress=False, index=True)
    store, rep = S.sync(model, b, "pixel", cfg, tmp_path / "s", progress=False)      # works come and go
    assert rep.index == "kept" and rep.added > 0 and rep.deleted > 0
    gone = set(a.keys) - set(b.keys)
    q = S.spec_for("pixel").query(model, b, query(b), cfg).numpy()
    found = store.search(q, len(store))
    assert sorted(found) == sorted(set(b.keys)) and not gone & set(found)
    assert store.index_entry["rows"] == len(store)
    # the same index as a rebuild on b: the same top 10
    fresh, _ = S.sync(model, b, "pixel", cfg, tmp_path / "fresh", progress=False, index=True)
    assert fresh.search(q, 10) == store.search(q, 10)
    # a damaged index is never searched, and the next sync rebuilds it
    p = store.index_path()
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    opened = S.RowStore(tmp_path / "s", S.store_meta(model, "pixel", cfg))
    assert opened.index_damaged and not opened.has_index
    with pytest.raises(DatarightsError, match="no usable index"):
        opened.search(q, 10)
    r = attribute(model, b, query(b), "pixel", store=tmp_path / "s", progress=False, index_min_rows=0)
    assert "index rebuilt (damaged)" in r.extra["store"] and "approximate" in r.extra
    store, rep = S.sync(model, b, "pixel", cfg, tmp_path / "s", progress=False, index=False)
    assert rep.index == "dropped" and store.index_entry is None
    assert not list((tmp_path / "s" / "rows").glob("*.usearch"))


def test_an_index_is_refused_for_kernel_rows_and_without_usearch(world, tmp_path, monkeypatch):
    import builtins

    model, train = world
    with pytest.raises(DatarightsError, match="scores go through its kernel"):
        S.sync(model, train, "trak", cfg_of(model), tmp_path / "t", progress=False, index=True)
    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("usearch") else real(name, *a, **k))
    with pytest.raises(DatarightsError, match=r"pip install 'datarights\[ann\]'"):
        S.sync(model, train, "pixel", cfg_of(model, "pixel"), tmp_path / "p", progress=False, index=True)
    assert not (tmp_path / "t").exists() and not (tmp_path / "p").exists()


def test_attribute_region_and_mask_options(monkeypatch, capsys, tmp_path, tiny_world, tiny_trained):
    import json

    import numpy as np
    from PIL import Image

    from .test_cli import run
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "q.png")      # resized to the model's 16 x 16
    m = np.zeros((32, 32), dtype=np.uint8)
    m[:, :16] = 255
    Image.fromarray(m).save(tmp_path / "left.png")
    common = ["--model", tiny_trained, "--data", tiny_world, "--method", "pixel", "--prompt", "a red face"]
    code, out, err = run(monkeypatch, capsys, "attribute", tmp_path / "q.png", *common, "--region", "0,0,16,32",
                         "--json", "--report", tmp_path / "rep")
    assert code == 0, err
    box = json.loads(out)
    assert box["region"] == [0, 0, 16, 32] and "dimmed" in (tmp_path / "rep" / "index.html").read_text()
    code, out, err = run(monkeypatch, capsys, "attribute", tmp_path / "q.png", *common, "--mask", tmp_path / "left.png",
                         "--json")
    assert code == 0, err
    assert [t["index"] for t in json.loads(out)["top"]] == [t["index"] for t in box["top"]]
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "black.png")
    for extra, message in [
        (["--region", "0,0,40,8"], "lies outside the 32x32 image"),
        (["--region", "4,4,4,9"], "has no area"),
        (["--region", "1,2,3"], "four whole pixel numbers"),
        (["--mask", tmp_path / "small.png"], "the region mask is 8x8 but the image is 32x32"),
        (["--mask", tmp_path / "grey.png"], "black and white only"),
        (["--mask", tmp_path / "black.png"], "marks no region"),
        (["--mask", tmp_path / "left.png", "--region", "0,0,4,4"], "not both"),
        (["--region", "0,0,4,4", "--method", "caption"], "caption cannot attribute a region"),
        (["--region", "0,0,4,4", "--store", tmp_path / "s"], "the store does not keep"),
    ]:
        code, _, err = run(monkeypatch, capsys, "attribute", tmp_path / "q.png", *common, *extra)
        assert code == 2 and message in err, (extra, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


EK = dict(proj_dim=16, timesteps=2, batch_size=8, fisher_draws=2)


def test_ekfac_store_gives_the_in_memory_scores_when_its_draws_are_the_in_memory_ones(world, tmp_path, monkeypatch):
    """The store's rows and curvature factors are the in-memory ones but for their draws (seeded by the work's
    content, not its row number): with the content seeds mapped to row numbers, both paths are one estimator."""
    from datarights.attribute import METHODS

    model, train = world
    rows = [i for i in range(len(train)) if train.keys[i] not in train.keys[:i]]   # one row per work
    train = subset(model, train, rows)
    monkeypatch.setattr(S, "key_seed", {k: i for i, k in enumerate(train.keys)}.__getitem__)
    for method in ("ekfac", "kfac"):
        cfg = cfg_of(model, method, **EK)
        store, rep = S.sync(model, train, method, cfg, tmp_path / method, progress=False)
        assert rep.fit == "fitted" and set(store.fitted) == {f"{p}.{i}" for i in range(len(store.fitted) // 3)
                                                              for p in ("QA", "QS", "lam")}
        state = METHODS[method].prepare(model, train, cfg, progress=False)
        ref = METHODS[method].score(model, train, state, query(train), cfg)
        got = S.store_scores(model, train, store, query(train), method, cfg)
        assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max())), method
        r = attribute(model, train, query(train), method, cfg, store=tmp_path / method, progress=False)
        assert torch.allclose(r.scores, got) and "curvature kept (0 of" in r.extra["store"]


def test_ekfac_store_keeps_its_factors_through_small_changes_and_refits_past_the_share(world, tmp_path, monkeypatch):
    model, train = world
    cfg = cfg_of(model, "ekfac", **EK)
    spec = S.ROWS["ekfac"]
    fits = []
    real = spec.fit
    monkeypatch.setattr(spec, "fit", lambda *a: fits.append(len(a[2])) or real(*a))   # the rows each fit reads
    n = len(set(train.keys))
    small = max(1, int(S.REFIT_SHARE * n))            # works that may change before a refit
    base = list(range(len(train) - small))
    S.sync(model, subset(model, train, base), "ekfac", cfg, tmp_path / "s", progress=False)
    works = len(set(subset(model, train, base).keys))
    monkeypatch.setattr(S, "REFIT_SHARE", (small + 0.5) / works)   # `small` changes are within the share
    full = subset(model, train, list(range(len(train))))
    store, rep = S.sync(model, full, "ekfac", cfg, tmp_path / "s", progress=False)
    changed = store._manifest()["fit"]["changed"]
    assert len(fits) == 1 and rep.fit == f"kept ({changed} of {works} works changed since)" and 0 < rep.added <= changed
    kept = S.store_scores(model, full, store, query(full), "ekfac", cfg)
    # one change more than the share allows: the factors are refitted over the whole set, as a fresh store's
    monkeypatch.setattr(S, "REFIT_SHARE", (changed + 0.5) / works)
    _, rep = S.sync(model, subset(model, train, list(range(1, len(train)))), "ekfac", cfg, tmp_path / "s",
                    progress=False)
    assert rep.fit == "refitted" and len(fits) == 2 and fits[-1] == len(train) - 1
    store, rep = S.sync(model, full, "ekfac", cfg, tmp_path / "s", progress=False, refit=True)
    assert rep.fit == "refitted" and len(fits) == 3
    fresh, _ = S.sync(model, full, "ekfac", cfg, tmp_path / "fresh", progress=False)
    a = S.store_scores(model, full, store, query(full), "ekfac", cfg)
    b = S.store_scores(model, full, fresh, query(full), "ekfac", cfg)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert spearman(kept.numpy(), b.numpy()) > 0.5          # the kept factors rank close to the refit's
    # only the files the manifest names are on disk
    man = store._manifest()
    named = {e["id"] for e in man["shards"]} | {man["gram"]["id"], man["fit"]["id"]}
    assert {p.name.split(".")[0] for p in (tmp_path / "s" / "rows").iterdir()} == named


def test_a_damaged_curvature_fit_is_refitted_never_used(world, tmp_path):
    model, train = world
    cfg = cfg_of(model, "ekfac", **EK)
    store, _ = S.sync(model, train, "ekfac", cfg, tmp_path / "s", progress=False)
    before = S.store_scores(model, train, store, query(train), "ekfac", cfg)
    path = tmp_path / "s" / "rows" / f"{store._manifest()['fit']['id']}.fit.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    opened = S.RowStore(tmp_path / "s", S.store_meta(model, "ekfac", cfg))
    assert opened.fit_damaged and opened.fitted is None and len(opened) == len(store)
    with pytest.raises(DatarightsError, match="no usable curvature fit"):
        S.store_scores(model, train, opened, query(train), "ekfac", cfg)
    again, rep = S.sync(model, train, "ekfac", cfg, tmp_path / "s", progress=False)
    assert rep.fit == "refitted (damaged)" and rep.added == 0
    after = S.store_scores(model, train, again, query(train), "ekfac", cfg)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5 * float(before.abs().max()))


def test_abu_fast_store_sketches_the_in_memory_first_order_score_and_refuses_what_it_cannot_keep(world, tmp_path,
                                                                                                 monkeypatch):
    """The store keeps unwhitened projected gradients and puts all of the Fisher preconditioner on the query's
    side: its Fisher is the in-memory one (draws mapped to the in-memory ones), and its scores sketch the same
    inner product g_i^T F~^-1 g_q as the in-memory path's."""
    from datarights.attribute.abu import fisher_diagonal

    model, train = world
    rows = [i for i in range(len(train)) if train.keys[i] not in train.keys[:i]]
    train = subset(model, train, rows)
    monkeypatch.setattr(S, "key_seed", {k: i for i, k in enumerate(train.keys)}.__getitem__)
    common = dict(query_draws=8, eval_timesteps=2, fisher_draws=1, batch_size=16, proj_dim=2048)
    cfg = cfg_of(model, "abu-fast", **common)
    ref = attribute(model, train, query(train), "abu-fast", cfg, cache=tmp_path / "c", progress=False).scores
    got = attribute(model, train, query(train), "abu-fast", cfg, store=tmp_path / "s", progress=False)
    assert "curvature fitted" in got.extra["store"]
    store = S.RowStore(tmp_path / "s", S.store_meta(model, "abu-fast", cfg))
    fisher = fisher_diagonal(model, train, cfg, progress=False).numpy()
    np.testing.assert_allclose(store.fitted["fisher"], fisher, rtol=1e-5, atol=1e-6 * float(fisher.max()))
    assert spearman(got.scores.numpy(), ref.numpy()) > 0.9
    for kw, message in (({"rerank": 5}, "re-scoring"), ({"projection": "none"}, "choose a projection")):
        with pytest.raises(DatarightsError, match=message):
            attribute(model, train, query(train), "abu-fast", cfg_of(model, "abu-fast", **{**common, **kw}),
                      store=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def _rss_file_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("RssFile:"))
    except (OSError, StopIteration):
        return None


def test_scoring_reads_every_row_without_keeping_the_store_resident(tmp_path):
    """A service keeps its store open between queries: the rows a query read must not stay mapped in
    the process (at 100,000 works of k = 2048 that was 0.8 GB of its peak). Scores equal rows . v."""
    if _rss_file_mb() is None:
        pytest.skip("needs Linux's /proc/self/status")
    k, n = 512, 32_768                                   # 64 MB of float32 rows in 8 shards
    meta = {"method": "trak", "model": "synthetic", "config": {}}
    store = S.RowStore(tmp_path / "s", meta, shard_rows=4096)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((n, k)).astype(np.float32)
    keys = [f"{i:064x}" for i in range(n)]
    store.update({key: (r, 1) for key, r in zip(keys, rows)}, set(), {})
    store = S.RowStore(tmp_path / "s", meta, shard_rows=4096)
    v = rng.standard_normal(k).astype(np.float32)
    before = _rss_file_mb()
    for _ in range(2):
        got = store.scores(v, keys[::-1])
    assert _rss_file_mb() - before < 16, "the rows a query read stayed resident"
    np.testing.assert_allclose(got, (rows.astype(np.float64) @ v)[::-1], rtol=1e-4, atol=1e-3)
    shard = tmp_path / "s" / "rows" / f"{store.shards[0].id}.rows.npy"
    with open(shard, "r+b") as f:                        # cut short after the store was opened
        f.truncate(shard.stat().st_size // 2)
    with pytest.raises(DatarightsError, match="cut short"):
        store.scores(v, keys)
    shard.unlink()
    with pytest.raises(DatarightsError, match="gone"):
        store.scores(v, keys)


def test_a_folders_rows_share_their_labels():
    """A folder's rows share their keys and short labels (100,000 rows: 125 MB in memory, not 249 MB)."""
    from datarights.world.generate import _interned

    a = _interned({"file_name": "images/0.png", "text": "a red face", "color": "red", "n": 3})
    b = _interned({"file_name": "images/1.png", "text": "a blue face", "color": "".join(["r", "ed"]), "n": 3})
    assert a["color"] is b["color"] and [x for x in a if x == "color"][0] is [x for x in b if x == "color"][0]
    assert a == {"file_name": "images/0.png", "text": "a red face", "color": "red", "n": 3}
