"""The large world for erasure at scale (issue 23): World 2's `large` preset (20,000 images, 143
owners, 119 erasable concepts), a judge that reads it and a world model trained on it. This
benchmark makes them once and caches them in ~/.cache/datarights/benchmark/large/ (judge/, world/,
model/); nothing is shipped (the model is for the benchmarks). Every stage resumes: the judge and
the world are written atomically, and the model's training writes a checkpoint every 500 steps,
so an interrupted run goes on from its last checkpoint with the same command.

    python benchmarks/large_world.py                 # judge, world, model (the model: hours on 2 cores)
    python benchmarks/large_world.py --check 400     # and the model's competence on its world

--check N: the judge's held-out accuracy on renders of the large world (its training report), the
model's `eval-model` on N prompts of the large world's grammar, and each erasable concept's rate on
its own held-out prompts (64 images each, the audit's prompt half and seed) by kind: the base rates
that `erase.py --many --world large` needs (a concept the base does not draw cannot be erased).
Results: benchmarks/results/large-world.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

JUDGE = dict(preset="large", blends=0.3, fade=0.7, seed=0, n_train=80000)
"""The shipped judge's recipe (blends 0.3, fade 0.7, seed 0) on the large world's vocabulary, with
twice the renders (four times the classes)."""
WORLD = dict(preset="large", seed=0)
TRAIN = dict(steps=12000, batch_size=128, lr=8e-4, warmup=200, ema_decay=0.999, cond_drop=0.1, seed=0)
"""The shipped model's recipe (same UNet) for longer: the large world has four times the images and
four times the concepts, each concept about as many images as in the default world."""


def root() -> Path:
    from datarights.attribute.cache import cache_root
    return cache_root() / "benchmark" / "large"


def judge_path(log=print) -> Path:
    from datarights.judge import JudgeConfig, train_judge

    out = root() / "judge"
    if not (out / "model.safetensors").is_file():
        log(f"training the large world's judge into {out}")
        train_judge(JudgeConfig(**JUDGE), out=out)
    return out


def world_path(log=print) -> Path:
    from datarights.world import WorldConfig, make_world_folder

    out = root() / "world"
    if not (out / "metadata.jsonl").is_file():
        log(f"making the large world in {out}")
        make_world_folder(out, WorldConfig(**WORLD))
    return out


def model_path(steps: int | None = None, log=print) -> Path:
    from datarights.train import TrainConfig, train

    out = root() / "model"
    if not (out / "model_index.json").is_file():
        cfg = TrainConfig(**{**TRAIN, **({"steps": steps} if steps else {})})
        log(f"training the large world's model into {out} ({cfg.steps} steps; resumes from {out}.ckpt)")
        train(cfg, world_path(log), out)
    return out


def check(n: int) -> dict:
    from datarights.erase.base import prompts_showing
    from datarights.judge import load_judge, shows
    from datarights.models import load_model
    from datarights.quality import eval_model, public
    from datarights.stats import wilson
    from datarights.world import vocabulary_of

    judge = load_judge(judge_path())
    model = load_model(model_path())
    vocab = vocabulary_of(model)
    t0 = time.time()
    res = {"judge_report": judge.report, "eval_model": public(eval_model(model, judge, n=n, seed=0))}
    seed = 2                               # erase.py's audit seed (AUDIT_SEED), on the held-out prompt half
    rows, kinds = [], {}
    for entry in vocab.erasable():
        prompts = prompts_showing(entry["name"], 64, seed, split="eval", vocab=vocab)
        images = model.sample([prompts[i % len(prompts)] for i in range(64)], seed=seed)
        hit = shows(judge.read(images), entry["name"], judge.vocab)
        kind = vocab.find_concept(entry["name"])[0]
        rows.append({"concept": entry["name"], "kind": kind, "rate": float(hit.mean())})
        kinds.setdefault(kind, []).append(int(hit.sum()))
    res["concepts"] = rows
    res["by_kind"] = {k: {"concepts": len(v), "rate": sum(v) / (64 * len(v)), "rate_ci": wilson(sum(v), 64 * len(v)),
                          "drawn_half": sum(x >= 32 for x in v)} for k, v in kinds.items()}
    res["check_s"] = round(time.time() - t0, 1)
    return res


def drawn_concepts(min_rate: float = 0.5, path: str = "benchmarks/results/large-world.json") -> list[tuple[str, str]]:
    """(target, anchor) of every erasable concept that the large model draws on at least `min_rate` of
    its held-out prompts (measured by `--check`), interleaved by kind (object, style, character,
    memorized, composition, object, ...) so that every prefix mixes the kinds: `erase.py --many
    --world large` erases the first k. A concept the base does not draw cannot be erased, so the rule
    is fixed before any erasure is measured."""
    from datarights.models import load_model
    from datarights.world import vocabulary_of

    try:
        rows = json.loads(Path(path).read_text())["concepts"]
    except (OSError, KeyError, ValueError):
        raise SystemExit(f"{path} has no per-concept rates: run `python benchmarks/large_world.py --check 400` first")
    vocab = vocabulary_of(load_model(model_path()))
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        if r["rate"] >= min_rate:
            by_kind.setdefault(r["kind"], []).append((r["concept"], vocab.find_concept(r["concept"])[1]["anchor"]))
    out, queues = [], [list(v) for v in by_kind.values()]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default {TRAIN['steps']})")
    ap.add_argument("--check", type=int, default=0, help="also measure the model on N prompts and every concept")
    ap.add_argument("--out", default="benchmarks/results/large-world.json")
    args = ap.parse_args()
    t0 = time.time()
    judge_path(), world_path(), model_path(args.steps)
    out = {"machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
           "judge": JUDGE, "world": WORLD, "train": {**TRAIN, **({"steps": args.steps} if args.steps else {})},
           "model_meta": json.loads((root() / "model" / "model_index.json").read_text()).get("training", {}),
           "made_s": round(time.time() - t0, 1)}
    if args.check:
        out.update(check(args.check))
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "concepts"}, indent=1))


if __name__ == "__main__":
    main()
