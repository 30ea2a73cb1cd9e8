"""Attribution figures on the shipped world model and its 5,000-image training set.

    python benchmarks/attribute.py cost            # one-time cost and per-query latency of every method
    python benchmarks/attribute.py dattri --n 256  # our TRAK featurization vs dattri's TRAKAttributor
    python benchmarks/attribute.py abu-reference   # cached abu query vs recomputing every training loss
    python benchmarks/attribute.py custom          # customized-model ground truth (Recall@1/10, mAP)
    python benchmarks/attribute.py counterfactual  # leave-K-out retraining (long: one retraining per cell)

Each part prints one JSON object and writes benchmarks/results/attribute-<part>.json.
Run one part at a time, alone on the machine. `dattri` needs `pip install dattri==0.3.0`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path("benchmarks/results")


def _machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _world():
    from datarights.attribute.cache import cache_root
    from datarights.world import make_world_folder

    folder = cache_root() / "world-default"
    if not folder.exists():
        make_world_folder(folder)
    return folder


def _query(model, prompt="a red grumpy face in Ada Vell style", seed=3):
    from datarights.attribute import Query
    return Query(model.sample([prompt], seed=seed)[0], prompt)


def part_cost(args) -> dict:
    from datarights.attribute import METHODS, attribute, load_training_set, make_config
    from datarights.models import load_model

    model = load_model()
    train = load_training_set(model, _world())
    out = {"machine": _machine(), "n_train": len(train), "methods": {}}
    with tempfile.TemporaryDirectory() as cache:
        for method in sorted(METHODS):
            cfg = make_config(method)
            r1 = attribute(model, train, _query(model), method, cfg, cache=cache, progress=False)
            lat = [attribute(model, train, _query(model, seed=s), method, cfg, cache=cache, progress=False).seconds
                   for s in (4, 5)]
            out["methods"][method] = {"one_time_s": round(r1.prepare_seconds, 2),
                                      "query_s": round(sum(lat) / len(lat), 3)}
            print(method, out["methods"][method], file=sys.stderr, flush=True)
    return out


def _featurize_ours(n: int, proj_dim: int) -> dict:
    from datarights.attribute import load_training_set, make_config
    from datarights.attribute.trak import make_prepare
    from datarights.models import load_model
    from datarights.world import read_imagefolder

    model = load_model()
    folder = read_imagefolder(_world())
    folder.images, folder.metas = folder.images[:n], folder.metas[:n]
    train = load_training_set(model, folder)
    cfg = make_config("trak", proj_dim=proj_dim, timesteps=1)
    t0 = time.perf_counter()
    state = make_prepare("loss")(model, train, cfg, progress=False)
    dt = time.perf_counter() - t0
    return {"img_per_s": n / dt, "seconds": dt, "A": state["A"]}


def _featurize_dattri(n: int, proj_dim: int) -> dict:
    """dattri 0.3.0's TRAKAttributor on the same UNet, the same K/V layers, the same per-sample loss."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    from datarights.attribute import load_training_set
    from datarights.attribute.task import draws, spaced_timesteps
    from datarights.models import load_model
    from datarights.world import read_imagefolder

    model = load_model()
    folder = read_imagefolder(_world())
    folder.images, folder.metas = folder.images[:n], folder.metas[:n]
    train = load_training_set(model, folder)
    ts = spaced_timesteps(1, model.num_train_timesteps)
    d = draws(n, 1, tuple(train.x0.shape[1:]), model.num_train_timesteps, 0, timesteps=ts)
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
    return {"img_per_s": n / dt, "seconds": dt}


def part_dattri(args) -> dict:
    """Each side runs in its own process so that peak memory (max RSS) is its own."""
    out = {"machine": _machine(), "n": args.n, "proj_dim": args.proj_dim}
    for side in ("ours", "dattri"):
        code = (f"import json,resource,sys; sys.path.insert(0,'benchmarks'); import attribute as b; "
                f"r=b._featurize_{side}({args.n},{args.proj_dim}); r.pop('A',None); "
                f"r['peak_rss_mb']=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024; print(json.dumps(r))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            out[side] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        else:
            out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "img_per_s" in out.get("ours", {}) and "img_per_s" in out.get("dattri", {}):
        out["speedup"] = out["ours"]["img_per_s"] / out["dattri"]["img_per_s"]
    return out


def part_abu_reference(args) -> dict:
    """Our query (training losses before unlearning cached) vs the official recipe's (recomputed per query)."""
    from datarights.attribute import load_training_set, make_config, prepare
    from datarights.attribute.abu import score, training_losses, unlearned
    from datarights.models import load_model

    model = load_model()
    train = load_training_set(model, _world())
    cfg = make_config("abu")
    with tempfile.TemporaryDirectory() as cache:
        state, prep_s, _ = prepare(model, train, "abu", cfg, cache=cache, progress=False)
        q = _query(model)
        t0 = time.perf_counter()
        ours = score(model, train, state, q, cfg)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        work = unlearned(model, train, state, q, cfg)
        ref = training_losses(work, train, cfg) - training_losses(model, train, cfg)
        t_ref = time.perf_counter() - t0
    return {"machine": _machine(), "n_train": len(train), "one_time_s": prep_s, "ours_query_s": t_ours,
            "reference_query_s": t_ref, "speedup": t_ref / t_ours, "max_abs_diff": float((ours - ref).abs().max())}


def part_custom(args) -> dict:
    from datarights.evaluate import CustomConfig, custom_eval
    res = custom_eval(CustomConfig(concepts=args.concepts, pool=args.pool), _world())
    return {"machine": _machine(), **res}


def part_counterfactual(args) -> dict:
    from datarights.evaluate import CounterfactualConfig, counterfactual
    cfg = CounterfactualConfig(k=args.k, queries=args.queries, world_images=args.world_images,
                               train_steps=args.train_steps)
    res = counterfactual(cfg, args.run)
    return {"machine": _machine(), "summary": res["summary"], "config": res["config"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["cost", "dattri", "abu-reference", "custom", "counterfactual"])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--concepts", type=int, default=4)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--k", type=int, nargs="+", default=[50])
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--world-images", type=int, default=1000)
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--run", default="runs/counterfactual")
    args = ap.parse_args()
    fn = {"cost": part_cost, "dattri": part_dattri, "abu-reference": part_abu_reference, "custom": part_custom,
          "counterfactual": part_counterfactual}[args.part]
    res = fn(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"attribute-{args.part}.json").write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
