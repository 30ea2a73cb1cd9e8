"""Attribution figures on the shipped world model and its 5,000-image training set.

    python benchmarks/attribute.py cost            # one-time cost and per-query latency of every method
    python benchmarks/attribute.py dattri --n 256  # our TRAK featurization vs dattri's TRAKAttributor
    python benchmarks/attribute.py abu-reference   # cached abu query vs recomputing every training loss
    python benchmarks/attribute.py abu-variants    # abu's settings at owner level, on tune queries of the leave-out base
    python benchmarks/attribute.py abu-fast        # abu-fast and two-stage scoring against exact abu (Spearman, top-10, latency)
    python benchmarks/attribute.py abu-linearity   # is abu's default step linear? (3 diagnostic queries, small base)
    python benchmarks/attribute.py owners          # owner-level shares on generic queries (after `cost`: reuses its cache)
    python benchmarks/attribute.py leaveout        # leave-one-owner-out on the small world, then each method's top owner
    python benchmarks/attribute.py ship            # copy the abu/dtrak artifacts into the package (after `cost`)
    python benchmarks/attribute.py custom          # customized-model ground truth (Recall@1/10, mAP)
    python benchmarks/attribute.py counterfactual  # leave-K-out retraining (long: one retraining per cell)
    python benchmarks/attribute.py lds             # linear datamodeling score (long: one model per subset)
    python benchmarks/attribute.py lds --unit owner  # owner-level LDS (whole owners in or out) with an oracle control
    python benchmarks/attribute.py store-memory --sizes 100000  # what a store query keeps resident (synthetic rows)

Each part prints one JSON object and writes benchmarks/results/attribute-<part>.json.
Run one part at a time, alone on the machine. `dattri` needs `pip install dattri==0.3.0`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from datarights.files import write_json

RESULTS = Path("benchmarks/results")
SHARE = (0.0, 1.0)  # an owner share lives in [0, 1]: its intervals are kept there


def _machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _world():
    from datarights.attribute import default_world
    return default_world()


def _query(model, prompt="a red grumpy face in Ada Vell style", seed=3):
    from datarights.attribute import Query
    return Query(model.sample([prompt], seed=seed)[0], prompt)


def part_cost(args) -> dict:
    from datarights.attribute import METHODS, attribute, load_training_set, make_config
    from datarights.models import load_model

    model = load_model()
    train = load_training_set(model, _world())
    prev = RESULTS / "attribute-cost.json"
    out = {"machine": _machine(), "n_train": len(train), "methods": {}}
    if args.methods and prev.exists():  # a partial rerun keeps the other methods' figures
        out["methods"] = json.loads(prev.read_text())["methods"]
    cache = _bench_cache(fresh=not args.methods)  # kept afterwards: the calibrate part reuses the artifacts
    for method in args.methods or sorted(METHODS):
        cfg = make_config(method)
        r1 = attribute(model, train, _query(model), method, cfg, cache=cache, progress=False)
        lat = [attribute(model, train, _query(model, seed=s), method, cfg, cache=cache, progress=False).seconds
               for s in (4, 5)]
        out["methods"][method] = {"one_time_s": round(r1.prepare_seconds, 2),
                                  "query_s": round(sum(lat) / len(lat), 3)}
        print(method, out["methods"][method], file=sys.stderr, flush=True)
    return out


def _bench_cache(fresh: bool = False) -> Path:
    import shutil

    from datarights.attribute.cache import cache_root
    root = cache_root() / "benchmark"
    if fresh and root.exists():
        shutil.rmtree(root)
    return root


N_TEST = 8  # training rows reused as test points for the score comparison


def _featurize_ours(n: int, proj_dim: int, projection: str = "sjlt") -> dict:
    from datarights.attribute import load_training_set, make_config
    from datarights.attribute.trak import Projector, _train_draws, make_prepare
    from datarights.models import load_model
    from datarights.world import read_imagefolder

    model = load_model()
    folder = read_imagefolder(_world())
    folder.images, folder.metas = folder.images[:n], folder.metas[:n]
    train = load_training_set(model, folder)
    cfg = make_config("trak", proj_dim=proj_dim, timesteps=1, projection=projection).for_model(model)
    t0 = time.perf_counter()
    state = make_prepare("loss")(model, train, cfg, progress=False)
    dt = time.perf_counter() - t0
    idx = torch.arange(N_TEST)
    proj = Projector(model, cfg)
    phi_q = proj(model, train.x0[idx], train.cond(idx), _train_draws(model, train.x0[idx], cfg, 0), "loss")
    # the features again (untimed), so that the parent can also score with dattri's absolute ridge
    phi = torch.cat([proj(model, train.x0[s:s + 48], train.cond(torch.arange(s, min(s + 48, n))),
                          _train_draws(model, train.x0[s:s + 48], cfg, s), "loss") for s in range(0, n, 48)])
    return {"img_per_s": n / dt, "seconds": dt, "scores": (state["A"] @ phi_q.T).tolist(),
            "phi": phi.tolist(), "phi_q": phi_q.tolist()}


def _featurize_dattri(n: int, proj_dim: int) -> dict:
    """dattri 0.3.0's TRAKAttributor on the same UNet, the same K/V layers, the same per-sample loss and draws."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    from datarights.attribute import load_training_set
    from datarights.runtime import draws, spaced_timesteps
    from datarights.models import load_model
    from datarights.world import read_imagefolder

    model = load_model()
    folder = read_imagefolder(_world())
    folder.images, folder.metas = folder.images[:n], folder.metas[:n]
    train = load_training_set(model, folder)
    ts = spaced_timesteps(1, model.num_train_timesteps)
    d = draws(n, 1, tuple(train.x0.shape[1:]), model.num_train_timesteps, 0, model.device, timesteps=ts)
    data = torch.utils.data.TensorDataset(train.x0, train.cond(torch.arange(n)), d.t[:, 0], d.noise[:, 0])
    unet = model.unet
    layers = [n_.removeprefix("unet.") for n_ in model.param_groups("xattn-kv")]
    for name, p in unet.named_parameters():
        p.requires_grad_(name in layers)

    def loss_func(params, batch):
        x0, c, t, noise = batch
        x_t = model.scheduler.add_noise(x0[None], noise[None], t[None])
        eps = torch.func.functional_call(unet, params, (x_t, t[None]), {"encoder_hidden_states": c[None]}).sample
        return ((eps - noise[None]) ** 2).mean()

    task = AttributionTask(loss_func=loss_func, model=unet, checkpoints=unet.state_dict())
    attributor = TRAKAttributor(task=task, correct_probability_func=lambda params, batch: torch.tensor(0.0),
                                projector_kwargs={"proj_dim": proj_dim, "device": "cpu"}, layer_name=layers,
                                device="cpu", regularization=1e-2)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=False)
    t0 = time.perf_counter()
    attributor.cache(loader)
    dt = time.perf_counter() - t0
    test = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(N_TEST)), batch_size=N_TEST)
    scores = attributor.attribute(test)                                                  # [n_train, n_test]
    return {"img_per_s": n / dt, "seconds": dt, "scores": scores.tolist()}


def _vm_hwm_mb() -> float:
    """This process's peak resident memory in MB (VmHWM, Linux; ru_maxrss elsewhere)."""
    try:
        return _status_mb()["VmHWM"]
    except (OSError, KeyError):
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_subprocess(call: str) -> tuple[dict | None, str]:
    """Run `attribute.<call>` in a fresh process (so that its peak memory is its own): (its JSON result with
    peak_rss_mb, or None; its standard error). The peak is the child's VmHWM, its address space's own
    high-water mark: getrusage's ru_maxrss would carry the parent's resident size at the fork across
    the exec."""
    code = (f"import json,sys; sys.path.insert(0,'benchmarks'); import attribute as b; "
            f"r=b.{call}; "
            f"r['peak_rss_mb']=b._vm_hwm_mb(); print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def part_dattri(args) -> dict:
    """Each side runs in its own process so that peak memory (max RSS) is its own.

    Scores of N_TEST training rows (as test points) against all n are compared by Pearson
    correlation per test point: equal gradients, different random projections and ridge terms.
    """
    import numpy as np

    out = {"machine": _machine(), "n": args.n, "proj_dim": args.proj_dim}
    scores = {}
    for side, call in (("ours", f"_featurize_ours({args.n},{args.proj_dim})"),
                       ("ours-dense", f"_featurize_ours({args.n},{args.proj_dim},'dense')"),
                       ("dattri", f"_featurize_dattri({args.n},{args.proj_dim})")):
        res, err = _in_subprocess(call)
        if res is None:
            out[side] = {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}
            continue
        out[side] = res
        scores[side] = np.array(out[side].pop("scores"))
        if "phi" in out[side]:  # the same features scored with dattri's ridge: (Phi^T Phi + 0.01 I)^-1
            phi, phi_q = np.array(out[side].pop("phi"), dtype=np.float64), np.array(out[side].pop("phi_q"), dtype=np.float64)
            scores[side + "-matched"] = phi @ np.linalg.solve(phi.T @ phi + 1e-2 * np.eye(phi.shape[1]), phi_q.T)
        print(side, out[side], file=sys.stderr, flush=True)
    def corr(a, b):
        return float(np.mean([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(N_TEST)]))
    for side in ("ours", "ours-dense"):
        if side in scores and "dattri" in scores:
            out[side]["speedup_vs_dattri"] = out[side]["img_per_s"] / out["dattri"]["img_per_s"]
            out[side]["score_corr_vs_dattri"] = corr(scores[side], scores["dattri"])
            out[side]["score_corr_vs_dattri_same_ridge"] = corr(scores[side + "-matched"], scores["dattri"])
    if "ours" in scores and "ours-dense" in scores:
        out["score_corr_sjlt_vs_dense"] = corr(scores["ours"], scores["ours-dense"])
        out["score_corr_sjlt_vs_dense_same_ridge"] = corr(scores["ours-matched"], scores["ours-dense-matched"])
    return out


def _influence_ours(n: int, queries: int, factor_seed: int) -> dict:
    """Our EK-FAC (datarights.attribute.ekfac) on the first n default-world images, unprojected, one draw a
    row; the factors' Monte Carlo draws from `factor_seed` (the gradients' from seed 0 always)."""
    from dataclasses import replace

    from datarights.attribute import Query, load_training_set, make_config
    from datarights.attribute import ekfac
    from datarights.models import load_model
    from datarights.runtime import linear_modules
    from datarights.world import read_imagefolder

    model = load_model()
    folder = read_imagefolder(_world())
    folder.images, folder.metas = folder.images[:n], folder.metas[:n]
    train = load_training_set(model, folder)
    cfg = make_config("ekfac", projection="none", fisher_draws=1, timesteps=1).for_model(model)
    t0 = time.perf_counter()
    factors = ekfac.fit_factors(model, train, replace(cfg, seed=factor_seed), progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = ekfac.prepare(model, train, cfg, progress=False)
    prep_s = time.perf_counter() - t0
    for i, name in enumerate(linear_modules(model, cfg.params)):       # the factors of factor_seed's draws
        state.update({f"{p}.{i}": factors[name][p] for p in ("QA", "QS", "lam")})
    qs = _influence_queries(model, queries)
    t0 = time.perf_counter()
    scores = [ekfac.score(model, train, state, Query(img, prompt), cfg).tolist() for img, prompt in qs]
    return {"fit_factors_s": fit_s, "prepare_s": prep_s, "score_s": time.perf_counter() - t0, "scores": scores}


def _influence_queries(model, queries: int) -> list:
    prompts = ["a red grumpy face in Ada Vell style", "a photo of a fish", "a tree and a house", "a picture of a house",
               "a green swordfish", "a face and a tree", "a blue tree in Cleo Marr style", "a photo of a face"]
    prompts = (prompts * (queries // len(prompts) + 1))[:queries]
    images = model.sample(prompts, seed=11, steps=25)
    return list(zip(images, prompts))


def _influence_kronfluence(n: int, queries: int) -> dict:
    """kronfluence 1.0.1's EK-FAC on the same model, images, layers, per-sample losses and draws: the
    training loss of a row at one timestep (the middle of the schedule) and row-seeded noise (our
    featurization's draws with timesteps=1: kronfluence takes a module's batch rows for its examples, so
    an example cannot average several draws in one forward), its Fisher with a sampled output
    (eps_theta . z), the measurement the query's loss at the query draw. Factors from one uniform (t, eps)
    draw per image, as ours (fisher_draws=1)."""
    import tempfile

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    from datarights.attribute import load_training_set, make_config
    from datarights.attribute.trak import _train_draws
    from datarights.models import load_model
    from datarights.runtime import draws
    from datarights.world import read_imagefolder

    model = load_model()
    folder = read_imagefolder(_world())
    folder.images, folder.metas = folder.images[:n], folder.metas[:n]
    train = load_training_set(model, folder)
    cfg = make_config("ekfac", timesteps=1).for_model(model)
    unet, sched = model.unet, model.scheduler
    d = _train_draws(model, train.x0, cfg)                                   # [n, 1] draws, row-seeded
    f = draws(n, 1, tuple(train.x0.shape[1:]), model.num_train_timesteps, cfg.seed + 31, model.device)
    cond = train.cond(torch.arange(n))
    qs = _influence_queries(model, queries)
    qx0 = torch.cat([model.to_model_space(img[None]) for img, _ in qs])
    qc = model.encode_prompt([p for _, p in qs])
    qd = [_train_draws(model, qx0[i:i + 1], cfg, 10**9) for i in range(len(qs))]

    class Rows(torch.utils.data.Dataset):
        def __init__(self, x0, c, t, noise):
            self.x0, self.c, self.t, self.noise = x0, c, t, noise

        def __len__(self):
            return len(self.x0)

        def __getitem__(self, i):
            return self.x0[i], self.c[i], self.t[i], self.noise[i]

    def mse(model_, batch, target_z=False):
        x0, c, t, noise = batch                                         # [B, C, H, W], [B, L, D], [B, K], [B, K, ...]
        b, k = t.shape
        x = x0[:, None].expand(b, k, *x0.shape[1:]).reshape(b * k, *x0.shape[1:])
        tt, nn_ = t.reshape(-1), noise.reshape(b * k, *x0.shape[1:])
        cc = c[:, None].expand(b, k, *c.shape[1:]).reshape(b * k, *c.shape[1:])
        out = model_(sched.add_noise(x, nn_, tt), tt, encoder_hidden_states=cc).sample
        if target_z:                                                    # the sampled-output Fisher (GGN, one sample)
            return (out * torch.randn_like(out)).sum() * (2.0 / out[0].numel()) ** 0.5
        return ((out - nn_) ** 2).flatten(1).mean(1).view(b, k).mean(1).sum()

    layers = [n_.removeprefix("unet.").removesuffix(".weight") for n_ in model.param_groups("xattn-kv")]

    class DiffusionTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            return mse(model, batch, target_z=sample)

        def compute_measurement(self, batch, model):
            return mse(model, batch)

        def get_influence_tracked_modules(self):
            return layers

    task = DiffusionTask()
    unet = prepare_model(unet, task)
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = Analyzer("bench", unet, task, cpu=True, disable_tqdm=True, output_dir=tmp)
        t0 = time.perf_counter()
        analyzer.fit_all_factors("ekfac", Rows(train.x0, cond, f.t, f.noise), per_device_batch_size=64,
                                 factor_args=FactorArguments(strategy="ekfac"))
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = analyzer.compute_pairwise_scores(
            "s", "ekfac", Rows(qx0, qc, torch.cat([q.t for q in qd]), torch.cat([q.noise for q in qd])),
            Rows(train.x0, cond, d.t, d.noise), per_device_query_batch_size=len(qs), per_device_train_batch_size=32,
            score_args=ScoreArguments(damping_factor=None))
        score_s = time.perf_counter() - t0
        got = analyzer.load_pairwise_scores("s") if got is None else got
        scores = got["all_modules"].tolist()                           # [queries, n]
    return {"fit_factors_s": fit_s, "score_s": score_s, "scores": scores}


def part_kronfluence(args) -> dict:
    """Our EK-FAC against kronfluence's on the world UNet (issue 24): factor cost, scoring cost, peak memory
    (each side in its own process) and agreement of the influence scores (Spearman per query), beside the
    agreement of ours with ours under other Monte Carlo draws of the factors (the noise floor)."""
    import numpy as np

    from datarights.stats import spearman

    out = {"machine": _machine(), "n": args.n, "queries": args.queries or 8}
    scores = {}
    for side, call in (("ours", f"_influence_ours({args.n},{out['queries']},0)"),
                       ("ours, other factor draws", f"_influence_ours({args.n},{out['queries']},1)"),
                       ("kronfluence", f"_influence_kronfluence({args.n},{out['queries']})")):
        res, err = _in_subprocess(call)
        if res is None:
            out[side] = {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}
            print(side, err[-3000:], file=sys.stderr, flush=True)
            continue
        out[side] = res
        scores[side] = np.array(out[side].pop("scores"))
        print(side, out[side], file=sys.stderr, flush=True)
    pairs = [("ours", "kronfluence"), ("ours", "ours, other factor draws")]
    for a, b in pairs:
        if a in scores and b in scores:
            rho = [spearman(x, y) for x, y in zip(scores[a], scores[b])]
            out[f"spearman {a} vs {b}"] = {"median": float(np.median(rho)), "per_query": rho}
    return out


SCALE_STORE = ("trak", "dtrak", "ekfac", "kfac", "abu-fast", "feature", "pixel")


def _scale_world(n: int) -> Path:
    """The default-world recipe at n images (seed 0; `datarights world make --n n`), made once in the bench cache."""
    from datarights.attribute.cache import build_lock
    from datarights.world import WorldConfig, make_world_folder

    root = _bench_cache()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"world-n{n}"
    with build_lock(root, folder.name):
        if not (folder / "metadata.jsonl").exists():
            make_world_folder(folder, WorldConfig(n_images=n, seed=0), overwrite=True)
    return folder


def _scale_one(method: str, n: int, queries: int = 5) -> dict:
    """One method at one size, in its own process: one-time cost (a fresh store's sync, streamed, for the store
    methods; prepare for the others), per-query latency (median of `queries`), peak memory (the caller adds it)."""
    import shutil
    import tempfile

    from datarights.attribute import attribute, load_training_set, make_config, prepare, resolved
    from datarights.attribute.store import FolderRows
    from datarights.models import load_model

    model = load_model()
    folder = _scale_world(n)
    cfg = resolved(make_config(method), model)
    qs = [_query(model, seed=s) for s in range(queries)]
    tmp = Path(tempfile.mkdtemp(prefix="scale-", dir=_bench_cache()))
    try:
        if method in SCALE_STORE:
            train = FolderRows.open(folder, model.resolution)
            t0 = time.perf_counter()
            keys = train.keys                                   # each work's content key: one read of every file
            hash_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            attribute(model, train, qs[0], method, cfg, store=tmp / "store", progress=False)
            one_time = time.perf_counter() - t0
            lat, wall = [], []
            for q in qs:
                t0 = time.perf_counter()
                r = attribute(model, train, q, method, cfg, store=tmp / "store", progress=False)
                wall.append(time.perf_counter() - t0)
                lat.append(r.seconds)
            return {"one_time_s": one_time, "keys_s": hash_s, "query_s": sorted(lat)[len(lat) // 2],
                    "query_with_sync_check_s": sorted(wall)[len(wall) // 2], "works": len(set(keys))}
        t0 = time.perf_counter()
        train = load_training_set(model, folder)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare(model, train, method, cfg, cache=tmp, progress=False)
        one_time = time.perf_counter() - t0
        lat = sorted(attribute(model, train, q, method, cfg, cache=tmp, progress=False).seconds for q in qs)
        return {"one_time_s": one_time, "load_s": load_s, "query_s": lat[len(lat) // 2]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _scale_churn(method: str, n: int, add: int = 100) -> dict:
    """A store of n works gains `add` new works (the next rows of an (n + add)-image world), then loses one
    owner's works: each sync's time against a from-scratch build of the same works, and its scores against
    that build's (the bar: an append costs <= 5% of a build, and its scores equal the build's)."""
    import shutil
    import tempfile

    import numpy as np

    from datarights.attribute import make_config, resolved
    from datarights.attribute.store import FolderRows, store_scores, sync
    from datarights.models import load_model
    from datarights.stats import spearman

    model = load_model()
    folder = _scale_world(n + add)
    full = FolderRows.open(folder, model.resolution)
    cfg = resolved(make_config(method), model)
    q = _query(model)

    def rows(keep):
        return FolderRows(full.root, [full.metas[i] for i in keep], full.resolution)

    first, both = rows(range(n)), rows(range(n + add))
    owner = max(set(both.owners), key=both.owners.count)
    gone = rows([i for i in range(n + add) if both.owners[i] != owner])
    tmp = Path(tempfile.mkdtemp(prefix="churn-", dir=_bench_cache()))
    try:
        out = {}
        t0 = time.perf_counter()
        sync(model, first, method, cfg, tmp / "inc", progress=False)
        out["build_n_s"] = time.perf_counter() - t0
        for name, target in (("append", both), ("opt_out", gone)):
            t0 = time.perf_counter()
            inc, rep = sync(model, target, method, cfg, tmp / "inc", progress=False)
            out[f"{name}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            fresh, _ = sync(model, target, method, cfg, tmp / name, progress=False)
            out[f"{name}_rebuild_s"] = time.perf_counter() - t0
            a = store_scores(model, target, inc, q, method, cfg).numpy()
            b = store_scores(model, target, fresh, q, method, cfg).numpy()
            out[f"{name}_max_rel_diff"] = float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))
            out[f"{name}_spearman"] = spearman(a, b)
            out[f"{name}_top10_overlap"] = len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10
            out[f"{name}_rows"] = {"added": rep.added, "deleted": rep.deleted}
            if rep.fit:                                 # ekfac, kfac, abu-fast: the curvature kept or refitted
                out[f"{name}_curvature"] = rep.fit
            out[f"{name}_share_of_rebuild"] = out[f"{name}_s"] / out[f"{name}_rebuild_s"]
        out["opted_out_owner_works"] = n + add - len(gone)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fwd_bwd_rows_per_s(rows: int = 480, reps: int = 3) -> float:
    """This machine's forward+backward limit for the shipped UNet: rows per second of one batch of `rows`
    noised images through the UNet with the K/V weights' gradients (what the TRAK-family featurization does)."""
    from datarights.models import load_model
    from datarights.runtime import linear_modules

    model = load_model()
    mods = linear_modules(model, "xattn-kv")
    x = torch.randn(rows, *model.latent_shape) if model.vae is not None else torch.randn(rows, 3, model.resolution,
                                                                                            model.resolution)
    cond = model.encode_prompt(["a photo of a fish"]).expand(rows, -1, -1)
    t = torch.randint(0, model.num_train_timesteps, (rows,))
    for m in mods.values():
        m.weight.requires_grad_(True)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        model.predict_noise(x, t, cond).square().mean().backward()
        best = min(best, time.perf_counter() - t0)
    return rows / best


def _status_mb() -> dict:
    """This process's VmRSS, RssAnon, RssFile and VmHWM in MB (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":")[0]
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[name] = int(line.split()[1]) / 1024
    return out


def _store_memory_one(root: str, n: int, k: int, queries: int = 5) -> dict:
    """In a fresh process: a query's scores over an n-row store, then the same through the store's
    long-lived memory maps (how scoring read rows until 2026-12-07): latency and what stays resident."""
    import numpy as np

    from datarights.attribute import store as S

    store = S.RowStore(root, {"method": "trak", "model": "synthetic", "config": {"k": k}})
    keys = [key for sh in store.shards for key in sh.keys]
    v = np.random.default_rng(1).standard_normal(k).astype(np.float32)
    out = {"opened": _status_mb()}
    lat = []
    for _ in range(queries):
        t0 = time.perf_counter()
        store.scores(v, keys)
        lat.append(time.perf_counter() - t0)
    out["shard_maps"] = {"query_s": sorted(lat)[len(lat) // 2], **_status_mb()}
    lat = []
    for _ in range(queries):
        t0 = time.perf_counter()
        parts = [np.concatenate([np.asarray(sh.rows[s:s + 8192], dtype=np.float32) @ v
                                 for s in range(0, len(sh.keys), 8192)]) for sh in store.shards]
        np.array([parts[a][b] for a, b in (store.where[key] for key in keys)])
        lat.append(time.perf_counter() - t0)
    out["long_lived_maps"] = {"query_s": sorted(lat)[len(lat) // 2], **_status_mb()}
    return out


def _metadata_memory(n: int) -> dict:
    """In a fresh process: resident MB of an n-row world's metadata as read (labels shared) and as plain JSON."""
    import gc

    from datarights.world.generate import metadata_rows

    folder = _scale_world(n)
    before = _status_mb()["RssAnon"]
    metas = [m for _, m, _ in metadata_rows(folder)]
    gc.collect()
    shared = _status_mb()["RssAnon"] - before
    lines = (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    before = _status_mb()["RssAnon"]
    plain = [json.loads(line) for line in lines]
    plain_mb = _status_mb()["RssAnon"] - before
    assert plain == metas
    return {"rows": len(metas), "shared_labels_mb": shared, "plain_json_mb": plain_mb}


def part_store_memory(args) -> dict:
    """What a store query keeps resident (issue 22: abu-fast's peak grew about 10 KB a work). Synthetic rows of
    k = 2048 (abu-fast's world projection) at each size, made once in the bench cache; each measurement in a
    fresh process; and the metadata of the scale benchmark's world at each size."""
    import numpy as np

    from datarights.attribute import store as S

    k = 2048
    out = {"machine": _machine(), "k": k, "sizes": {}}
    for n in args.sizes or [100_000]:
        root = _bench_cache() / f"store-memory-{n}-{k}"
        meta = {"method": "trak", "model": "synthetic", "config": {"k": k}}
        store = S.RowStore(root, meta)
        rng = np.random.default_rng(0)
        while len(store) < n:                       # resumes: rows keyed by their number
            s = len(store)
            m = min(store.shard_rows, n - s)
            store.update({f"{s + i:064x}": (rng.standard_normal(k).astype(np.float32), 1) for i in range(m)}, set(), {})
            print(f"store-memory: {len(store)} of {n} rows", file=sys.stderr)
        row, err = _in_subprocess(f"_store_memory_one({str(root)!r}, {n}, {k})")
        if row is None:
            raise SystemExit(err)
        meta_row, err = _in_subprocess(f"_metadata_memory({n})")
        if meta_row is None:
            raise SystemExit(err)
        out["sizes"][str(n)] = {**row, "metadata": meta_row}
        print(json.dumps({n: out["sizes"][str(n)]}), file=sys.stderr)
    return out


def _plot(path: Path, series: dict, title: str, ylabel: str) -> None:
    """A log-log line chart (PIL only): series {name: [(x, y), ...]}."""
    import math

    from PIL import Image, ImageDraw

    W, H, L, B, T, R = 720, 420, 70, 50, 40, 150
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [p for v in series.values() for p in v if p[1] > 0]
    if not pts:
        return
    lx = [math.log10(p[0]) for p in pts]
    ly = [math.log10(p[1]) for p in pts]
    x0, x1 = min(lx) - 0.1, max(lx) + 0.1
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly))
    y1 = y1 if y1 > y0 else y0 + 1

    def at(x, y):
        return (L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R), H - B - (math.log10(y) - y0) / (y1 - y0) * (H - B - T))

    d.rectangle([L, T, W - R, H - B], outline="black")
    for e in range(int(y0), int(y1) + 1):
        y = at(10 ** x0, 10 ** e)[1]
        d.line([L, y, W - R, y], fill="#ddd")
        d.text((8, y - 6), f"1e{e}", fill="black")
    for x in sorted({p[0] for p in pts}):
        px = at(x, 10 ** y0)[0]
        d.line([px, T, px, H - B], fill="#eee")
        d.text((px - 14, H - B + 6), f"{x:,}", fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    for i, (name, v) in enumerate(series.items()):
        c = colours[i % len(colours)]
        xy = [at(x, y) for x, y in sorted(v) if y > 0]
        if len(xy) > 1:
            d.line(xy, fill=c, width=2)
        for px, py in xy:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
        d.text((W - R + 10, T + 16 * i), name, fill=c)
    d.text((L, 12), title, fill="black")
    d.text((L, H - 20), "training images (log)", fill="black")
    d.text((W - R + 10, H - B - 14), ylabel, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def part_scale(args) -> dict:
    """Attribution at scale (issue 22, item 6): for every size in --sizes (default-world recipe, seed 0), each
    method's one-time cost, per-query latency and peak memory (each (method, size) in its own process); the
    featurization rate as a share of this machine's forward+backward limit; a store's append (100 works) and
    opt-out (its largest owner) against a from-scratch build at --churn-n; PNG plots into docs/."""
    sizes = sorted(args.sizes or [2000, 5000, 20000, 100000])   # the default preset needs ~1,300 images at least
    methods = args.methods or ["pixel", "feature", "dtrak", "trak", "abu-fast"]
    prev = RESULTS / (args.out or "attribute-scale.json")
    out = json.loads(prev.read_text()) if prev.exists() else {"cells": {}}
    out["machine"] = _machine()
    if not args.churn_only:       # the featurization shares are read against the limit measured in the same run
        out["fwd_bwd_rows_per_s"] = _fwd_bwd_rows_per_s()
    for n in [] if args.churn_only else sizes:
        for method in methods:
            key = f"{method}|{n}"
            if key in out["cells"]:
                continue
            res, err = _in_subprocess(f"_scale_one({method!r},{n})")
            out["cells"][key] = res if res is not None else {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}
            if res is not None and method in ("trak", "dtrak"):
                rows = n * 10                                   # 10 timesteps a work
                res["featurization_share_of_limit"] = rows / res["one_time_s"] / out["fwd_bwd_rows_per_s"]
            print(key, out["cells"][key], file=sys.stderr, flush=True)
            write_json(prev, out)
    for method in [m for m in methods if m in SCALE_STORE and args.churn_n]:
        key = f"churn|{method}|{args.churn_n}"
        if key not in out["cells"]:
            res, err = _in_subprocess(f"_scale_churn({method!r},{args.churn_n})")
            out["cells"][key] = res if res is not None else {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}
            print(key, out["cells"][key], file=sys.stderr, flush=True)
            write_json(prev, out)
    ok = {k: v for k, v in out["cells"].items() if "|" in k and not k.startswith("churn") and "error" not in v}
    for field, label, name in (("one_time_s", "seconds", "one-time"), ("query_s", "seconds", "per-query"),
                               ("peak_rss_mb", "MB", "peak-memory")):
        series = {}
        for k, v in ok.items():
            m, n = k.split("|")
            series.setdefault(m, []).append((int(n), v[field]))
        _plot(Path("docs") / f"scale-{name}.png", series, f"{name} ({label}) by training-set size, 2 CPU cores", label)
    return out


def part_abu_reference(args) -> dict:
    """Our query (training losses before unlearning cached, bf16 passes) vs the official recipe's
    (both loss passes recomputed per query, fp32), on the same unlearned model and draws."""
    import dataclasses

    import numpy as np

    from datarights.attribute import load_training_set, make_config, prepare
    from datarights.attribute.abu import score, training_losses, unlearned
    from datarights.models import load_model

    model = load_model()
    train = load_training_set(model, _world())
    cfg = make_config("abu")
    state, prep_s, _ = prepare(model, train, "abu", cfg, cache=_bench_cache(), progress=False)
    q = _query(model)
    t0 = time.perf_counter()
    ours = score(model, train, state, q, cfg)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_cfg = dataclasses.replace(cfg, precision="fp32")
    work = unlearned(model, train, state, q, ref_cfg)
    ref = training_losses(work, train, ref_cfg) - training_losses(model, train, ref_cfg)
    t_ref = time.perf_counter() - t0
    top = [set(torch.argsort(v, descending=True)[:50].tolist()) for v in (ours, ref)]
    return {"machine": _machine(), "n_train": len(train), "one_time_s": prep_s, "ours_query_s": t_ours,
            "reference_query_s": t_ref, "speedup": t_ref / t_ours,
            "score_corr": float(np.corrcoef(ours.numpy(), ref.numpy())[0, 1]),
            "top50_overlap": len(top[0] & top[1]) / 50}


def part_abu_variants(args) -> dict:
    """abu's settings at owner level, chosen on *tune* queries only: generic prompts of the tune half
    (their own seed) generated by the leave-out run's small base model, whose source owner the judge
    reads. Every variant (`[method:]key=value,...`: overrides of the method's config, abu by default;
    "" is abu's default, "abu-fast:" abu-fast's) is scored beside
    caption-only and the count prior; temperatures are fitted on these same queries (this is a
    selection experiment, the report queries of `owners`, `leaveout` and `lds` are never used)."""
    import numpy as np

    from datarights.attribute import Query, attribute, fit_temperature, load_training_set, make_config
    from datarights.evaluate.owners import owner_logits, pick_queries, summarize, _standing
    from datarights.evaluate.provenance import generic_prompts, read_sources, subject_counts, vocabulary_of
    from datarights.judge import load_judge
    from datarights.models import load_model
    from datarights.world import read_imagefolder

    leave = Path(args.run or "runs/leaveout")
    model = load_model(leave / "base")
    folder = read_imagefolder(leave / "world")
    train = load_training_set(model, folder)
    vocab = vocabulary_of(folder)
    judge = load_judge()
    prompts = generic_prompts(256, 7000, vocab, "tune")
    images = model.sample([p["text"] for p in prompts], seed=7000, steps=25)
    rows = read_sources(judge, images, vocab)
    idx = pick_queries(rows, args.queries or 24, 2, 7000)
    metas = [{"owner": rows[i]["source_owner"], "subject": prompts[i]["subject"], "prompt": prompts[i]["text"]}
             for i in idx]
    variants = args.variants if args.variants is not None else [  # the reported run (abu's default: damping 100)
        "damping=0.001", "precision=fp32,damping=0.001", "damping=1", "damping=10", "damping=30", "damping=100",
        "damping=1000", "damping=10000", "params=full,damping=0.001"]
    uniq = sorted(set(train.owners))
    index = np.array([uniq.index(o) for o in train.owners])
    counts = subject_counts(folder.metas)
    cells, scores, seconds, temps = {}, {}, {}, {}
    store = Path("runs/abu-variants")
    store.mkdir(parents=True, exist_ok=True)
    for v in ["caption"] + variants:
        method, over = _variant(v)
        cfg = make_config(method, **over)
        kept = store / f"{v or 'default'}.pt"   # a rerun with more variants reuses the scores it has
        if kept.exists():
            scores[v], seconds[v] = torch.load(kept)
        else:
            t0 = time.perf_counter()
            scores[v] = [attribute(model, train, Query(images[i], prompts[i]["text"]), method, cfg,
                                   cache=_bench_cache(), progress=False, temperature=1.0).scores.float() for i in idx]
            seconds[v] = round(time.perf_counter() - t0, 1)
            torch.save((scores[v], seconds[v]), kept)
        t, _ = fit_temperature(scores[v], train.owners, [{m["owner"]: 1.0} for m in metas])
        name = v or "abu (default)"
        temps[name] = t
        cells[name] = [{"group": "tune", "query": q, "owner": m["owner"], "subject": m["subject"],
                        **_standing(owner_logits(s, index, len(uniq), t), uniq.index(m["owner"]))}
                       for q, (s, m) in enumerate(zip(scores[v], metas))]
        print(name, seconds[v], "s", summarize({name: cells[name]}, "tune", metas)[0]["mrr"], file=sys.stderr, flush=True)
    prior = []
    for q, m in enumerate(metas):
        n = np.array([counts.get(m["subject"], {}).get(o, 0) for o in uniq], dtype=np.float64)
        with np.errstate(divide="ignore"):
            prior.append({"group": "tune", "query": q, "owner": m["owner"], "subject": m["subject"],
                          **_standing(np.log(n / n.sum()), uniq.index(m["owner"]))})
    cells["count prior"] = prior
    ref = "damping=0.001"   # the old default, ~ the paper's F^-1
    corr = {v: float(np.mean([np.corrcoef(a.numpy(), b.numpy())[0, 1] for a, b in zip(scores[v], scores[ref])]))
            for v in variants if v != ref and ref in scores}
    summary = summarize(cells, "tune", metas)
    prev = RESULTS / "attribute-abu-variants.json"   # variants of an earlier run on the same queries are kept
    old = json.loads(prev.read_text()) if prev.exists() else {}
    if old.get("queries_meta") == metas:
        summary += [r for r in old["summary"] if r["method"] not in cells]
        seconds = {**old["seconds"], **seconds}
        corr = {**old.get("corr_with_old_default", {}), **corr}
        temps = {**old.get("temperatures", {}), **temps}
    return {"machine": _machine(), "run": str(leave), "n_train": len(train), "queries": len(idx),
            "owners": len({m["owner"] for m in metas}), "seconds": seconds, "corr_with_old_default": corr,
            "temperatures": temps, "summary": summary, "queries_meta": metas}


def part_abu_linearity(args) -> dict:
    """Is abu's step linear? On the leave-out run's small base, for three diagnostic queries: Spearman
    correlations (over the training set) of abu at its default lr against abu at lr 1e-4, of
    unprojected abu-fast against abu at lr 1e-4 (the derivation's claim), and of the sketch against
    the unprojected first order (fp32 loss passes)."""
    from datarights import stats
    from datarights.attribute import Query, attribute, load_training_set, make_config
    from datarights.models import load_model
    from datarights.world import read_imagefolder

    leave = Path(args.run or "runs/leaveout")
    model = load_model(leave / "base")
    train = load_training_set(model, read_imagefolder(leave / "world"))

    def spearman(a, b):
        return round(stats.spearman(a.numpy(), b.numpy()), 4)

    rows = []
    for i, prompt in enumerate(["a photo of a fish", "a red house", "a tree"]):
        q = Query(model.sample([prompt], seed=900 + i)[0], prompt)
        run = lambda method, **kw: attribute(model, train, q, method, make_config(method, **kw),  # noqa: E731
                                             cache=_bench_cache(), progress=False).scores
        exact, small = run("abu", precision="fp32"), run("abu", precision="fp32", lr=1e-4)
        first, sketch = run("abu-fast", projection="none"), run("abu-fast")
        rows.append({"prompt": prompt, "abu_vs_abu_lr1e-4": spearman(exact, small),
                     "first_order_vs_abu_lr1e-4": spearman(first, small), "first_order_vs_abu": spearman(first, exact),
                     "sketch_vs_first_order": spearman(sketch, first),
                     "abu_norm_over_linear": round(float(exact.norm() / (100 * small.norm())), 3)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"machine": _machine(), "run": str(leave), "n_train": len(train), "rows": rows}


FAST_QUERIES = [  # (kind, prompt): 4 of every kind the world has, generated by the shipped model with seed 11 + i
    *[("object", p) for p in ("a red swordfish", "a blue castle", "a green palm tree", "a yellow smiling face")],
    *[("style", p) for p in ("a house in Cleo Marr style", "a fish in Dario Fenn style",
                             "a tree in Elsa Brandt style", "a face in Ada Vell style")],
    *[("character", p) for p in ("Blubbo", "a picture of Blubbo", "Pip", "a picture of Casa")],
    *[("memorized", p) for p in ("the Rosa Villa postcard", "the Blue Lagoon poster", "the Old Pine print",
                                 "the Mira portrait")],
    *[("composition", p) for p in ("a face and a tree", "a fish and a house", "a tree and a house",
                                   "a face and a fish")],
    *[("generic", p) for p in ("a photo of a fish", "a photo of a tree", "a photo of a house", "a photo of a face")],
]


def part_abu_fast(args) -> dict:
    """abu-fast and two-stage scoring against exact abu on the shipped model and its 5,000 images:
    per-query Spearman correlation with abu's scores, top-10 overlap, latency (24 queries, 4 of each
    kind). abu's artifacts ship with the package; abu-fast's one-time cost is measured here."""
    import numpy as np

    from datarights.attribute import Query, attribute, load_training_set, make_config
    from datarights.stats import spearman
    from datarights.models import load_model

    model = load_model()
    train = load_training_set(model, _world())
    cache = _bench_cache()
    rerank = args.rerank or [100, 500]

    def overlap(a, b, k=10):
        return len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())) / k

    rows = []
    one_time = None
    for i, (kind, prompt) in enumerate(FAST_QUERIES):
        q = Query(model.sample([prompt], seed=11 + i)[0], prompt)
        exact = attribute(model, train, q, "abu", make_config("abu"), cache=cache, progress=False)
        fast = attribute(model, train, q, "abu-fast", make_config("abu-fast"), cache=cache, progress=False)
        one_time = one_time or fast.prepare_seconds
        row = {"kind": kind, "prompt": prompt, "abu_s": round(exact.seconds, 2), "fast_s": round(fast.seconds, 3),
               "spearman": round(spearman(fast.scores.numpy(), exact.scores.numpy()), 4),
               "pearson": round(float(np.corrcoef(fast.scores.numpy(), exact.scores.numpy())[0, 1]), 4),
               "top10_overlap": overlap(fast.scores, exact.scores)}
        for m in rerank:
            two = attribute(model, train, q, "abu-fast", make_config("abu-fast", rerank=m), cache=cache, progress=False)
            row[f"rerank{m}_s"] = round(two.seconds, 2)
            row[f"rerank{m}_top10_overlap"] = overlap(two.scores, exact.scores)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    def dist(key):
        x = np.array([r[key] for r in rows], dtype=np.float64)
        return {"median": float(np.median(x)), "min": float(x.min()), "q25": float(np.quantile(x, 0.25)),
                "q75": float(np.quantile(x, 0.75)), "max": float(x.max()), "mean": float(x.mean())}

    keys = ["spearman", "pearson", "top10_overlap", "fast_s", "abu_s"] + \
        [f"rerank{m}_{s}" for m in rerank for s in ("s", "top10_overlap")]
    by_kind = {k: {key: float(np.median([r[key] for r in rows if r["kind"] == k])) for key in ("spearman", "top10_overlap")}
               for k in dict.fromkeys(r["kind"] for r in rows)}
    return {"machine": _machine(), "n_train": len(train), "queries": len(rows), "abu_fast_one_time_s": one_time,
            "summary": {k: dist(k) for k in keys}, "by_kind": by_kind, "rows": rows}


def _variant(v: str) -> tuple[str, dict]:
    """'caption', or '[method:]key=value,...' (method abu unless named) -> (method, config overrides)."""
    from datarights.evaluate.runs import parse_option

    if v == "caption":
        return "caption", {}
    method, _, opts = v.rpartition(":")
    return method or "abu", dict(parse_option(kv, v) for kv in opts.split(",") if kv)


def part_owners(args) -> dict:
    """Owner-level evaluation on the shipped model and the default world (generic queries whose source
    owner the judge reads): every method beside the caption-only baseline, uniform scores, the count
    prior and random scores; temperatures fitted on the tune queries (what the package ships as
    attribute.base.TEMPERATURE), figures on the report queries."""
    from datarights.attribute import load_training_set
    from datarights.evaluate.owners import OwnerEvalConfig, markdown, owner_eval
    from datarights.judge import load_judge
    from datarights.models import load_model

    model = load_model()
    cfg = OwnerEvalConfig(**({"methods": args.methods} if args.methods else {}), queries=args.queries or 64)
    res = owner_eval(cfg, model, load_training_set(model, _world()), load_judge(), args.run or "runs/owners",
                     cache=_bench_cache(), reuse=args.reuse or ())
    for g, rows in res["summary"].items():
        print(f"\n{g} queries:\n{markdown(rows)}", file=sys.stderr)
    return {"machine": _machine(), **{k: v for k, v in res.items() if k != "cells"}, "cells": res["cells"]}


def part_leaveout(args) -> dict:
    """Leave-one-owner-out on the small world (every owner, kinds interleaved), then every method's
    owner-level counterfactual on the same models."""
    from datarights.evaluate.leaveout import LeaveOutConfig, OwnerCounterfactualConfig, leaveout, owner_counterfactual

    cfg = LeaveOutConfig(train_steps=args.train_steps, warm_steps=args.warm_steps, batch_size=args.batch_size,
                         generations=args.generations or 512, owners=args.owners or [],
                         unet_config={"block_out_channels": args.unet_channels} if args.unet_channels else {})
    run = args.run or "runs/leaveout"
    if args.methods != []:  # first, so that its figures are in when a long run is stopped; it trains the models it needs
        cf = OwnerCounterfactualConfig(**({"methods": args.methods} if args.methods else {}))
        owner_counterfactual(cf, cfg, run, cache=_bench_cache())
    res = leaveout(cfg, run)  # reads the counterfactual's cells back from the run folder
    return {"machine": _machine(), **res}


def part_ship(args) -> dict:
    """Copy the benchmark cache's abu and dtrak artifacts for the shipped model on the default world
    into src/datarights/assets/attribution (the demo's and first queries' per-training-set work)."""
    from dataclasses import asdict

    from datarights.attribute import SHIPPED, load_training_set, make_config, resolved, state_config, state_key
    from datarights.attribute.cache import save_artifact
    from datarights.models import load_model
    from safetensors.torch import load_file

    model = load_model()
    train = load_training_set(model, _world())
    out = {}
    for method in args.methods or ["abu", "dtrak"]:
        cfg = resolved(make_config(method), model)
        want = state_config(cfg)  # the fields of the key prepare() computes
        for d in sorted((_bench_cache() / method).iterdir()):
            meta = json.loads((d / "config.json").read_text())
            if meta.get("data_hash") == train.hash and all(meta["config"].get(k) == v for k, v in want.items()):
                key = state_key(model, train, method, cfg)
                meta = {k: v for k, v in meta.items() if k != "key"}
                meta.update(model="(the shipped world model)", data="(the default world)", config=asdict(cfg))
                save_artifact(SHIPPED, method, key, load_file(d / "tensors.safetensors"), meta)
                out[method] = key
                break
        else:
            raise SystemExit(f"no {method} artifact for the default config in {_bench_cache()}: run the cost part first")
    return out


def part_custom(args) -> dict:
    from datarights.evaluate import CustomConfig, custom_eval
    cfg = CustomConfig(concepts=args.concepts, pool=args.pool, exemplar_captions=args.exemplar_captions,
                       **({"methods": args.methods} if args.methods else {}))
    res = custom_eval(cfg, _world(), out=args.run or f"runs/custom-{args.exemplar_captions}")
    return {"machine": _machine(), **res}


def part_local(args) -> dict:
    """Local attribution on the shipped model's compositions (issue 24): for each part of a generated
    composition the judge reads whole, the share of that part among each method's top 10 of the
    training images that show one of the two parts, with the part's box as the region and without it (report queries;
    tune queries apart), with the HTML report of the best method."""
    from datarights.attribute import load_training_set
    from datarights.evaluate import LocalEvalConfig, local_eval
    from datarights.judge import load_judge
    from datarights.models import load_model

    model = load_model()
    cfg = LocalEvalConfig(**({"methods": args.methods} if args.methods else {}), queries=args.queries or 16)
    res = local_eval(cfg, model, load_training_set(model, _world()), load_judge(), args.run or "runs/local",
                     cache=_bench_cache(), report=args.report)
    return {"machine": _machine(), **res}


def part_counterfactual(args) -> dict:
    from datarights.evaluate import CounterfactualConfig, counterfactual
    extra = {"methods": args.methods} if args.methods else {}
    cfg = CounterfactualConfig(**extra, k=args.k, queries=args.queries, world_images=args.world_images,
                               train_steps=args.train_steps, coupled=not args.uncoupled, random_draws=args.random_draws,
                               warm_steps=args.warm_steps or 0, **({"ema_decay": 0.99} if args.warm_steps else {}),
                               unet_config={"block_out_channels": args.unet_channels} if args.unet_channels else {})
    res = counterfactual(cfg, args.run or "runs/counterfactual")
    return {"machine": _machine(), "summary": res["summary"], "pairwise": res["pairwise"], "config": res["config"],
            "competence": res.get("competence"), "cells": res["cells"]}


def part_lds(args) -> dict:
    from datarights.evaluate import LDSConfig, lds
    extra = {"methods": args.methods} if args.methods else {}
    cfg = LDSConfig(**extra, subsets=args.subsets, queries=args.queries or 16, world_images=args.world_images,
                    train_steps=args.train_steps, coupled=not args.uncoupled, unit=args.unit,
                    batch_size=args.batch_size, warm_steps=args.warm_steps or 0,
                    **({"ema_decay": 0.99} if args.warm_steps else {}),
                    unet_config={"block_out_channels": args.unet_channels} if args.unet_channels else {})
    res = lds(cfg, args.run or f"runs/lds-{args.unit}" + ("-uncoupled" if args.uncoupled else ""))
    return {"machine": _machine(), "summary": res["summary"], "prompts": res["prompts"], "config": res["config"],
            "competence": res.get("competence"), "outputs": res["outputs"]}


def part_ann(args) -> dict:
    """Approximate nearest neighbours for feature/pixel search: usearch (HNSW) against FAISS (HNSW) and exact
    search, on the world encoder's features and on pixels of default-world renders (seed 0) at several sizes,
    queried by 256 renders of another seed: build time, per-query latency (one query at a time, as a service
    asks), recall@10 against exact search, index size, and whether a row can be deleted in place."""
    import tempfile

    import faiss
    import numpy as np
    import usearch
    from usearch.index import Index

    from datarights.attribute.feature import FeatureConfig, embed
    from datarights.attribute.pixel import _unit
    from datarights.world.generate import WorldConfig, make_world

    sizes = sorted(args.sizes or [5000, 20000, 100000])
    pixel_max = 20000                      # 3,072-d pixel vectors: HNSW beyond this costs minutes to build here
    t0 = time.time()
    images = torch.from_numpy(make_world(WorldConfig(n_images=sizes[-1], seed=0))[0]).permute(0, 3, 1, 2).contiguous()
    queries = torch.from_numpy(make_world(WorldConfig(n_images=2000, seed=7))[0][::8][:256]).permute(0, 3, 1, 2).contiguous()
    make_s = time.time() - t0
    cfg = FeatureConfig().for_model(None)
    t0 = time.time()
    kinds = {"feature": (embed(images, cfg).numpy(), embed(queries, cfg).numpy())}
    embed_s = time.time() - t0

    kinds["pixel"] = (_unit(images[:pixel_max]).float().numpy(), _unit(queries).float().numpy())
    faiss.omp_set_num_threads(torch.get_num_threads())
    rows = []
    for kind, (base, q) in kinds.items():
        for n in sizes:
            if n > len(base):
                continue
            X = np.ascontiguousarray(base[:n], dtype=np.float32)
            d = X.shape[1]
            lat = []
            exact = []
            for v in q:
                t = time.perf_counter()
                s = X @ v
                top = np.argpartition(-s, 10)[:10]
                exact.append(set(top[np.argsort(-s[top])].tolist()))
                lat.append(time.perf_counter() - t)
            rows.append({"kind": kind, "n": n, "dim": d, "library": "exact (numpy)", "build_s": 0.0,
                         "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.quantile(lat, 0.99)),
                         "recall_at_10": 1.0, "index_bytes": X.nbytes, "delete_in_place": True})

            def measure(lib, search, build_s, nbytes, deletable):
                lat, hits = [], []
                for v, want in zip(q, exact):
                    t = time.perf_counter()
                    got = search(v)
                    lat.append(time.perf_counter() - t)
                    hits.append(len(want & set(int(i) for i in got[:10])) / 10)
                rows.append({"kind": kind, "n": n, "dim": d, "library": lib, "build_s": build_s,
                             "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.quantile(lat, 0.99)),
                             "recall_at_10": float(np.mean(hits)), "index_bytes": nbytes, "delete_in_place": deletable})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

            for dtype in ("f32", "f16"):
                t = time.time()
                idx = Index(ndim=d, metric="ip", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
                idx.add(np.arange(n), X)
                build = time.time() - t
                with tempfile.TemporaryDirectory() as tmp:
                    idx.save(f"{tmp}/i.usearch")
                    nbytes = Path(f"{tmp}/i.usearch").stat().st_size
                measure(f"usearch {usearch.VERSION_MAJOR}.{usearch.VERSION_MINOR} HNSW {dtype}",
                        lambda v: idx.search(v, 10).keys, build, nbytes, True)
                if dtype == "f32":    # delete 1% in place, then search again: the deleted never come back
                    gone = np.arange(0, n, 100)
                    idx.remove(gone)
                    back = sum(bool(set(idx.search(v, 10).keys.tolist()) & set(gone.tolist())) for v in q)
                    rows[-1]["deleted_found_after_remove"] = int(back)
            t = time.time()
            fx = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
            fx.hnsw.efConstruction = 128
            fx.add(X)
            fx.hnsw.efSearch = 64
            build = time.time() - t
            measure(f"faiss {faiss.__version__} HNSW f32", lambda v: fx.search(v[None], 10)[1][0], build,
                    int(faiss.serialize_index(fx).nbytes), False)
    wheels = {"usearch": args.wheel_sizes[0] if args.wheel_sizes else None,
              "faiss-cpu": args.wheel_sizes[1] if args.wheel_sizes else None}
    return {"machine": _machine(), "make_world_s": make_s, "embed_s": embed_s, "queries": len(queries),
            "wheel_bytes": wheels, "rows": rows}


def part_ann_million(args) -> dict:
    """The store's index at 10^6 rows (issue 22's bar: recall@10 >= 0.95, <= 10 ms a query): usearch HNSW with
    the store's settings (connectivity 16, construction beam 128) over 10^6 default-world renders (ten worlds
    of 100,000, seeds 100-109), as the world encoder's 128-d features and as 256-d vectors (the renders'
    centred unit pixels through a fixed Gaussian projection, seed 0, renormalised); 256 queries (renders of
    seed 7), one at a time, at search beams 64, 128 and 256 (the store's); recall against exact search (a
    returned row counts when it scores at least the exact 10th score: duplicated renders tie); then
    1% of the rows deleted in place and added back (the opt-out and the append)."""
    import tempfile

    import numpy as np
    from usearch.index import Index

    from datarights.attribute.feature import FeatureConfig, embed
    from datarights.attribute.pixel import _unit
    from datarights.attribute.store import INDEX_SEARCH_BEAM
    from datarights.stats import mean_ci
    from datarights.world.generate import WorldConfig, make_world

    n, chunk = args.million, 100_000
    cfg = FeatureConfig().for_model(None)
    proj = torch.randn(768, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 16.0

    def vectors(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        feat = embed(x, cfg).numpy().astype(np.float32)
        pix = torch.nn.functional.normalize(_unit(x) @ proj, dim=1).float().numpy()
        return feat, pix

    t0 = time.time()
    parts = [vectors(make_world(WorldConfig(n_images=min(chunk, n - s), seed=100 + s // chunk))[0])
             for s in range(0, n, chunk)]
    kinds = {"feature (128-d)": np.concatenate([p[0] for p in parts]),
             "pixel projection (256-d)": np.concatenate([p[1] for p in parts])}
    del parts
    qf, qp = vectors(make_world(WorldConfig(n_images=2000, seed=7))[0][::8][:256])
    queries = {"feature (128-d)": qf, "pixel projection (256-d)": qp}
    make_s = time.time() - t0
    print(f"ann-million: {n} vectors of each kind in {make_s:.0f} s", file=sys.stderr, flush=True)
    rows = []
    for kind, X in kinds.items():
        q = queries[kind]
        lat, exact = [], []
        for v in q:
            t = time.perf_counter()
            sc = X @ v
            top = np.argpartition(-sc, 10)[:10]
            lat.append(time.perf_counter() - t)
            exact.append((sc, float(sc[top].min())))   # duplicated renders tie: any row at the 10th score counts
        rows.append({"kind": kind, "n": len(X), "dim": X.shape[1], "search": "exact (numpy)",
                     "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.quantile(lat, 0.99)),
                     "recall_at_10": 1.0})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        t = time.time()
        idx = Index(ndim=X.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128)
        idx.add(np.arange(len(X), dtype=np.uint64), X)
        build_s = time.time() - t
        with tempfile.TemporaryDirectory() as tmp:
            idx.save(f"{tmp}/i.usearch")
            nbytes = Path(f"{tmp}/i.usearch").stat().st_size
        for beam in sorted({64, 128, INDEX_SEARCH_BEAM}):
            idx.expansion_search = beam
            lat, hits = [], []
            for v, want in zip(q, exact):
                t = time.perf_counter()
                got = idx.search(v, 10).keys
                lat.append(time.perf_counter() - t)
                hits.append(float(np.sum(want[0][got.astype(np.int64)] >= want[1] - 1e-6)) / 10)
            rows.append({"kind": kind, "n": len(X), "dim": X.shape[1], "search": f"usearch HNSW f32, beam {beam}",
                         "build_s": build_s, "index_bytes": nbytes, "p50_ms": 1e3 * float(np.median(lat)),
                         "p99_ms": 1e3 * float(np.quantile(lat, 0.99)), "recall_at_10": float(np.mean(hits)),
                         "recall_at_10_ci": mean_ci(hits, bounds=(0, 1))["ci"]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        gone = np.arange(0, len(X), 100, dtype=np.uint64)            # 1% opted out, then appended again
        t = time.time()
        idx.remove(gone)
        delete_s = time.time() - t
        back = sum(bool(set(idx.search(v, 10).keys.tolist()) & set(gone.tolist())) for v in q)
        t = time.time()
        idx.add(gone, X[gone.astype(np.int64)])
        append_s = time.time() - t
        rows[-1].update(delete_1pct_s=delete_s, deleted_found_after_remove=int(back), append_1pct_s=append_s)
        del idx
    return {"machine": _machine(), "make_and_embed_s": make_s, "queries": 256, "rows": rows}


PART_DEFAULTS = {
    # image-level counterfactual on World 2: the image-level LDS's recipe (its warm start and base serve both)
    "counterfactual": {"world_images": 1500, "train_steps": 1000, "warm_steps": 4000, "unet_channels": None,
                       "k": [150], "queries": 16, "random_draws": 4, "methods": ["caption", "abu", "dtrak", "pixel"]},
    # image-level LDS on World 2: the owner unit's warm-start recipe on the small preset's 1,500 images
    "lds": {"world_images": 1500, "train_steps": 1000, "warm_steps": 4000, "unet_channels": None, "subsets": 12},
    "leaveout": {"train_steps": 1000, "warm_steps": 4000, "unet_channels": None},
    # owner-level LDS: the leave-out run's recipe on the small world (so its warm start and base serve both)
    "lds-owner": {"world_images": None, "train_steps": 1000, "warm_steps": 4000, "unet_channels": None,
                  "subsets": 12, "queries": 32},
}
"""The settings each retraining part's reported figures were measured with (BENCHMARKS.md)."""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["cost", "dattri", "abu-reference", "abu-variants", "abu-fast", "abu-linearity",
                                     "owners", "leaveout", "ship", "custom", "counterfactual", "lds", "ann", "local",
                                     "kronfluence", "scale", "store-memory"])
    ap.add_argument("--sizes", type=int, nargs="*", default=None,
                    help="ann: training-set sizes (default 5000 20000 100000); scale: default 2000 5000 20000 100000")
    ap.add_argument("--churn-n", type=int, default=5000, help="scale: the store size an append and an opt-out are timed at (0: none)")
    ap.add_argument("--churn-only", action="store_true", help="scale: only the append and opt-out at --churn-n")
    ap.add_argument("--million", type=int, default=None,
                    help="ann: measure the store's index at this many rows instead (10^6 for the figures)")
    ap.add_argument("--wheel-sizes", type=int, nargs=2, default=None, help="ann: bytes of the usearch and faiss-cpu wheels")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--rerank", type=int, nargs="*", default=None, help="abu-fast: two-stage top M (default 100 500)")
    ap.add_argument("--variants", nargs="*", default=None,
                    help="abu-variants: config overrides, each '[method:]key=value,...' (method abu unless named; "
                         "'' is abu's default config)")
    ap.add_argument("--generations", type=int, default=None,
                    help="leaveout: generations per owner (default 512; a finished run resumed with more redoes "
                         "its owners' generations on the models it trained)")
    ap.add_argument("--owners", nargs="*", default=None, help="leaveout: owners to leave out (default: every owner)")
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--concepts", type=int, default=4)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--k", type=int, nargs="+", default=None, help="counterfactual: images removed (default: the part's)")
    ap.add_argument("--queries", type=int, default=None, help="default: the part's (counterfactual 16, lds 16)")
    ap.add_argument("--subsets", type=int, default=None, help="LDS subset models (default 32; owner unit 12)")
    ap.add_argument("--random-draws", type=int, default=None,
                    help="counterfactual random removals (one retrained model each; default: the part's)")
    ap.add_argument("--exemplar-captions", default="token", choices=["token", "plain"], help="custom: pool captions")
    ap.add_argument("--world-images", type=int, default=None, help="default: the part's (PART_DEFAULTS)")
    ap.add_argument("--train-steps", type=int, default=None, help="default: the part's (PART_DEFAULTS)")
    ap.add_argument("--warm-steps", type=int, default=None,
                    help="leaveout, lds, counterfactual: steps of the shared warm start (0: every model from scratch; default: the part's)")
    ap.add_argument("--unet-channels", type=int, nargs=3, default=None,
                    help="block_out_channels of the retrained worlds' UNet (default: the part's, PART_DEFAULTS)")
    ap.add_argument("--uncoupled", action="store_true", help="retrain on reduced sets with fresh batches")
    ap.add_argument("--unit", default="image", choices=["image", "owner"], help="lds: subsets of images or of owners")
    ap.add_argument("--batch-size", type=int, default=64, help="batch of the retraining recipes")
    ap.add_argument("--run", default=None, help="run folder (resumable; default runs/<part>)")
    ap.add_argument("--out", default=None,
                    help="results file name under benchmarks/results (default attribute-<part>.json); e.g. a run of "
                         "some methods only, whose figures join the full table's")
    ap.add_argument("--report", default=None, help="local: HTML report folder (each half lit beside its top images)")
    ap.add_argument("--reuse", nargs="*", default=None,
                    help="owners: earlier run folders whose scores of the same queries and method configs are reused")
    args = ap.parse_args()
    part = "lds-owner" if args.part == "lds" and args.unit == "owner" else args.part
    for k, v in PART_DEFAULTS.get(part, {}).items():  # a part's defaults are the settings of its figures
        if getattr(args, k) is None:
            setattr(args, k, v)
    fn = {"cost": part_cost, "dattri": part_dattri, "abu-reference": part_abu_reference,
          "abu-variants": part_abu_variants, "abu-fast": part_abu_fast, "abu-linearity": part_abu_linearity, "owners": part_owners,
          "leaveout": part_leaveout,
          "ship": part_ship, "custom": part_custom,
          "counterfactual": part_counterfactual, "lds": part_lds, "local": part_local, "kronfluence": part_kronfluence,
          "scale": part_scale, "store-memory": part_store_memory,
          "ann": part_ann_million if args.million else part_ann}[args.part]
    res = fn(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.unit}" if args.part == "lds" else ""  # attribute-lds.json: World 1's image-level run
    suffix += "-image" if args.part == "counterfactual" else ""  # attribute-counterfactual.json: World 1's
    suffix += "-uncoupled" if args.part in ("counterfactual", "lds") and args.uncoupled else ""
    suffix += "-plain" if args.part == "custom" and args.exemplar_captions == "plain" else ""
    suffix += "-million" if args.part == "ann" and args.million else ""
    write_json(RESULTS / (args.out or f"attribute-{args.part}{suffix}.json"), res)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
