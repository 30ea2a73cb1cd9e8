"""The judge as ground truth: a candidate judge beside the shipped one, on the same images.

    python benchmarks/judge.py --candidate runs/judge-candidate [--run runs/leaveout] [--owners ...]

Every figure on the world is the judge's reading of generated images, so a judge is changed only on
evidence. Each part reads the same images with both judges:
- `renders`: held-out accuracy of every head on 5,000 fresh renders (seed 10,000, as the training
  report), clean and noise/blur augmented;
- `blends`: objects on a blend of an artist's background with another artist's or a photographer's
  colour grade (`judge.blend_check`, seed 31,000: not a training seed of either judge): an artist of
  the blend, no style, or a third artist who had no part;
- `fades`: every artist's paintings washed out to contrast 0.5 and 0.3 (`judge.fade_check`, seed
  33,000): the artist's own style, no style, or another artist;
- `eval-model`: the shipped model's `eval-model` generations (200 prompts, seed 0): each judge's
  accuracy per label (recall on prompts that name a style, a character, ...);
- `generic`: 1,024 generations of generic prompts (seed 0, as `eval-model --provenance`): how often
  the two judges name a different source owner, and each one's artist readings;
- `leaveout`: for the leave-out run's artists (default), the base and leave-one-out generations of
  each owner's cell (the cell's prompts and noise): the owner's trace rate before and after, per
  judge (nothing is retrained; the run's models are read).
Results: benchmarks/results/judge-candidate.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from datarights.files import write_json
from datarights.judge import accuracy, augment, blend_check, fade_check, load_judge, render_labelled
from datarights.stats import rounded, wilson


def rate(hits) -> dict:
    hits = np.asarray(hits, dtype=bool)
    return {"rate": round(float(hits.mean()), 4), "ci": rounded(wilson(int(hits.sum()), len(hits))), "n": len(hits)}


def part_renders(judges: dict) -> dict:
    x, ys = render_labelled(5000, 10_000)
    xa = augment(x, torch.Generator().manual_seed(1))
    return {name: {"clean": accuracy(j, x, ys), "augmented": accuracy(j, xa, ys)} for name, j in judges.items()}


def part_blends(judges: dict) -> dict:
    return {name: blend_check(j, n=4000, seed=31_000) for name, j in judges.items()}


def part_fades(judges: dict) -> dict:
    return {name: fade_check(j, n_per_artist=300, seed=33_000) for name, j in judges.items()}


def part_eval_model(judges: dict) -> dict:
    from datarights.quality import eval_model, judge_accuracy

    first = next(iter(judges.values()))
    r = eval_model(judge=first, n=200, seed=0)
    return {name: judge_accuracy(r["_asked"], j.read(r["_images"])) for name, j in judges.items()}


def part_generic(judges: dict) -> dict:
    from datarights.evaluate.provenance import generic_prompts, read_sources
    from datarights.models import load_model

    model = load_model()
    prompts = generic_prompts(1024, 0)
    images = model.sample([p["text"] for p in prompts], seed=0, steps=25)
    rows = {name: read_sources(j, images) for name, j in judges.items()}
    a, b = rows.values()
    out = {"n": len(images),
           "source_differs": rate([x["source_owner"] != y["source_owner"] for x, y in zip(a, b)])}
    for name, rs in rows.items():
        out[name] = {"source_known": rate([r["source_owner"] is not None for r in rs]),
                     "artist": rate([r["source_kind"] == "artist" for r in rs])}
    return out


def part_leaveout(judges: dict, run: Path, owners: list[str] | None) -> dict:
    from datarights.evaluate.leaveout import LeaveOutConfig, _recipe, cell_images, has_trace
    from datarights.evaluate.provenance import read_sources
    from datarights.evaluate.runs import run_world, world_and_base
    from datarights.files import read_json_file

    results = read_json_file(run / "results.json", "run results")      # read only: the run is not changed
    cfg = LeaveOutConfig(**results["config"])
    folder, base = world_and_base(run, cfg, _recipe(cfg, []), "leaveout", print)
    vocab = run_world(cfg).vocabulary()
    owners = owners or [o for o in vocab.styles]
    out = {}
    for owner in owners:
        t0 = time.time()
        n = results["owners"].get(owner, {}).get("generations", cfg.generations)
        imgs = dict(zip(("before", "after"), cell_images(run, owner, folder, base, cfg, vocab, n, print)))
        cell = {"generations": n}
        for name, j in judges.items():
            hits = {w: [has_trace(r, owner, vocab) for r in read_sources(j, im, vocab)] for w, im in imgs.items()}
            cell[name] = {w: rate(h) for w, h in hits.items()}
            cell[name]["hits"] = {w: int(np.sum(h)) for w, h in hits.items()}
        cell["seconds"] = round(time.time() - t0, 1)
        out[owner] = cell
        print(owner, {name: cell[name]["hits"] for name in judges}, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidate", required=True, help="judge folder to compare with the shipped judge")
    ap.add_argument("--parts", default="renders,blends,fades,eval-model,generic,leaveout")
    ap.add_argument("--run", default="runs/leaveout", help="leave-out run folder (its models are read)")
    ap.add_argument("--owners", nargs="*", help="leave-out owners (default: the run world's artists)")
    ap.add_argument("--out", default="benchmarks/results/judge-candidate.json")
    args = ap.parse_args()
    judges = {"shipped": load_judge(), "candidate": load_judge(args.candidate)}
    res = {"candidate": args.candidate, "candidate_config": judges["candidate"].config}
    for part in args.parts.split(","):
        t0 = time.time()
        if part == "leaveout":
            res[part] = part_leaveout(judges, Path(args.run), args.owners)
        else:
            res[part] = {"renders": part_renders, "blends": part_blends, "fades": part_fades, "eval-model": part_eval_model,
                         "generic": part_generic}[part](judges)
        res[f"{part}_seconds"] = round(time.time() - t0, 1)
        print(part, "done", res[f"{part}_seconds"], "s", flush=True)
        write_json(args.out, res)


if __name__ == "__main__":
    main()
