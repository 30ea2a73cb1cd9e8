"""Local attribution on compositions: which training images made *this part* of a generated image.

World 2's compositions ("a face and a tree") draw their two parts side by side, the first in the left
half and the second in the right, each in its own colour that no caption names. So each part of a
generated composition has exact ground truth: the training images that made it are those that show
that part (a face, not a tree), in its colour. For each generated composition the judge reads whole
(its composition and both part colours), and for each part, every method ranks the training set for
the query restricted to the part's box (`Query.region`, `part_box`) and for the whole image. Among each ranking's top
K of the training images that show exactly one of the two parts (a face or a tree, alone or in
another composition), the measure is the share showing the region's part, and the share showing it
in the colour the judge read there. Without the region a method has no reason to prefer either part,
so about half is what it should score; random ranking scores the eligible images' own proportion.

Controls the harness must tell apart (tests plant them): the *oracle* ranks the eligible images of
the region's part first (share 1), the *swapped oracle* those of the other part (share 0). Intervals
resample queries (both parts of a query together); the tune queries (other seeds) are reported
apart. Chosen on tune queries (seed 1000) before any report query was scored: the part's box rather
than the image's half as the region (feature crop 0.57 -> 0.71 on 8 tune queries, the others unchanged);
then `feature`'s regional matching, the crop against every training image's windows as well as the
whole image (0.81 -> 0.87 on the tune queries; `FeatureConfig.region_stride`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..files import write_json
from ..stats import mean_ci
from .runs import check_methods, open_run

SIDES = ("left", "right")


@dataclass
class LocalEvalConfig:
    """A local-attribution evaluation on the model's world compositions."""

    methods: list = field(default_factory=lambda: ["pixel", "feature", "trak", "dtrak", "ekfac", "abu-fast"])
    """Methods that can attribute a region (attribute.LOCAL)."""
    queries: int = 16
    """Report queries: generated compositions the judge reads whole."""
    tune_queries: int = 8
    """Queries from other seeds, reported apart (for tuning a setting; none is tuned here)."""
    top_k: int = 10
    """How many of the eligible training images (those showing exactly one of the two parts) are read."""
    candidates: int = 256
    """Generations to draw each group's queries from."""
    sample_steps: int = 25
    """DDIM steps of every generation."""
    seed: int = 0
    """Seed of the report queries (tune: seed + 1000)."""
    method_options: dict = field(default_factory=dict)
    """Per-method config options ({"dtrak": {"proj_dim": 64}}); empty: every method's defaults."""

    def __post_init__(self):
        from ..attribute import check_local

        check_methods(self.methods)
        for m in self.methods:
            check_local(m)
        for name in ("queries", "top_k", "candidates", "sample_steps"):
            if getattr(self, name) < 1:
                raise DatarightsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.tune_queries < 0:
            raise DatarightsError(f"tune_queries must be 0 or more, got {self.tune_queries}")


def part_box(resolution: int, side: str) -> torch.Tensor:
    """The region of a composition's part, [H, W] weights: the square of side H/2 the renderer draws it in
    (centred at 0.27 H or 0.73 H across and H/2 down, `world.render.render_composition`), cut at the
    image's middle so that it holds one part only."""
    r = torch.zeros(resolution, resolution)
    rows = slice(resolution // 4, resolution - resolution // 4)
    r[rows, : resolution // 2 if side == "left" else resolution] = 1.0
    if side == "right":
        r[:, : resolution // 2] = 0.0
    return r


def parts_shown(meta: dict) -> dict[str, str | None]:
    """The parts (categories) a training image shows and each one's colour (None: not recorded)."""
    if meta.get("kind") == "composition" or meta.get("composition", "none") != "none":
        a, b = meta["composition"].split(" and ")
        return {a: meta.get("left_color"), b: meta.get("right_color")} if a != b else {a: None}
    cat = meta.get("category", "none")
    if cat in (None, "none"):
        return {}
    color = meta.get("color")
    return {cat: None if color in (None, "none") else color}


def part_shares(order: np.ndarray, shown: list[dict], parts: tuple[str, str], side: int, color: str,
                k: int) -> dict:
    """Among the first k of `order` (training indices, best first) that show exactly one of `parts`:
    the share showing parts[side], and the share showing it in `color`. Also the random expectation."""
    want, other = parts[side], parts[1 - side]
    eligible = [i for i in order if (want in shown[i]) != (other in shown[i])]
    top = eligible[:k]
    if not top:
        raise DatarightsError(f"no training image shows exactly one of {want!r} and {other!r}")
    part = [want in shown[i] for i in top]
    colour = [want in shown[i] and shown[i][want] == color for i in top]
    all_part = [want in shown[i] for i in eligible]
    all_colour = [want in shown[i] and shown[i][want] == color for i in eligible]
    return {"part": float(np.mean(part)), "colour": float(np.mean(colour)), "top": [int(i) for i in top],
            "random_part": float(np.mean(all_part)), "random_colour": float(np.mean(all_colour))}


def _queries(model, judge, vocab, n: int, cfg: LocalEvalConfig, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """Generated compositions whose composition and both part colours the judge reads."""
    from ..world.vocab import COMPOSITION_TEMPLATES

    comps = sorted(vocab.compositions)
    if not comps or n == 0:
        if n:
            raise DatarightsError("this world has no compositions to attribute locally")
        return torch.zeros(0, 3, model.resolution, model.resolution), []
    prompts, names = [], []
    for i in range(cfg.candidates):
        name = comps[i % len(comps)]
        a, b = vocab.compositions[name]
        prompts.append(COMPOSITION_TEMPLATES[(i // len(comps)) % len(COMPOSITION_TEMPLATES)].format(a=a, b=b))
        names.append(name)
    images = model.sample(prompts, seed=seed, steps=cfg.sample_steps)
    rows = judge.read(images, vocab=vocab)
    keep, metas = [], []
    for i, (r, name) in enumerate(zip(rows, names)):
        if r["composition"] == name and r["left_color"] != "none" and r["right_color"] != "none":
            keep.append(i)
            metas.append({"prompt": prompts[i], "composition": name, "parts": list(vocab.compositions[name]),
                          "colors": [r["left_color"], r["right_color"]], "candidate": i})
        if len(keep) == n:
            break
    if len(keep) < n:
        raise DatarightsError(f"only {len(keep)} of {n} queries: the judge read the composition whole in too few of "
                              f"{cfg.candidates} generations; raise candidates or train the model longer")
    return images[keep].cpu(), metas


def local_eval(cfg: LocalEvalConfig, model, train, judge, run: str | Path, cache=None,
               log=lambda s: print(s, file=sys.stderr), report: str | Path | None = None) -> dict:
    """Run (or resume) the evaluation in folder `run`; returns the results (also run/results.json)."""
    from safetensors.torch import load_file, save_file

    from ..attribute import Query, attribute, make_config
    from ..attribute.base import ranking
    from ..files import atomic_file
    from ..models import model_hash
    from .provenance import vocabulary_of

    run = Path(run)
    results, res_path = open_run(run, cfg, {"cells": {}}, reusable=("methods",),
                                 made_with={"model": model_hash(model), "data": train.hash})
    vocab = vocabulary_of(train.folder)
    t0 = time.time()
    if not (run / "queries.safetensors").exists():
        log("local: generating compositions and keeping those the judge reads whole")
        groups = {"report": _queries(model, judge, vocab, cfg.queries, cfg, cfg.seed),
                  "tune": _queries(model, judge, vocab, cfg.tune_queries, cfg, cfg.seed + 1000)}
        tensors = {g: v[0].contiguous() for g, v in groups.items() if len(v[1])}
        atomic_file(run / "queries.safetensors", lambda tmp: save_file(tensors, tmp))
        write_json(run / "queries.json", {g: v[1] for g, v in groups.items()})
    images = load_file(run / "queries.safetensors")
    from ..files import read_json_file
    metas = read_json_file(run / "queries.json", "queries")
    shown = [parts_shown(m) for m in train.folder.metas]
    cells = results["cells"]
    for method in cfg.methods:
        todo = [(g, q) for g in ("report", "tune") for q in range(len(metas.get(g, [])))
                if f"{method}|{g}|{q}" not in cells]
        if todo:
            log(f"local: {method} on {len(todo)} queries")
        for g, q in todo:
            m = metas[g][q]
            parts = tuple(m["parts"])
            cell = {}
            mcfg = make_config(method, **cfg.method_options.get(method, {}))
            whole = attribute(model, train, Query(images[g][q], m["prompt"]), method, mcfg,
                              cache=cache, progress=False, temperature=1.0)
            order_whole = ranking(whole.scores).numpy()
            for s, side in enumerate(SIDES):
                r = attribute(model, train, Query(images[g][q], m["prompt"], part_box(model.resolution, side)), method,
                              mcfg, cache=cache, progress=False, temperature=1.0)
                cell[side] = part_shares(ranking(r.scores).numpy(), shown, parts, s, m["colors"][s], cfg.top_k)
                cell[f"{side}_whole"] = part_shares(order_whole, shown, parts, s, m["colors"][s], cfg.top_k)
            cells[f"{method}|{g}|{q}"] = cell
            write_json(res_path, results)
    results["summary"] = {g: summarize(cells, cfg.methods, g, len(metas.get(g, []))) for g in ("report", "tune")
                          if metas.get(g)}
    results["seconds"] = results.get("seconds", 0.0) + time.time() - t0
    write_json(res_path, results)
    if report is not None:
        write_local_report(report, results, images, metas, train, cfg)
    return results


def summarize(cells: dict, methods: list[str], group: str, n: int) -> list[dict]:
    """Per method: the share of the region's part among its top K with the region and without it, in the
    judge-read colour, and random's; intervals resample queries (a query's two halves together)."""
    rows = []
    for method in methods:
        keys = [f"{method}|{group}|{q}" for q in range(n)]
        if not all(k in cells for k in keys):
            continue
        per = {name: [] for name in ("part", "whole", "colour", "whole_colour", "random", "random_colour", "gain")}
        groups = []
        for q, k in enumerate(keys):
            for side in SIDES:
                c, w = cells[k][side], cells[k][f"{side}_whole"]
                per["part"].append(c["part"])
                per["whole"].append(w["part"])
                per["colour"].append(c["colour"])
                per["whole_colour"].append(w["colour"])
                per["random"].append(c["random_part"])
                per["random_colour"].append(c["random_colour"])
                per["gain"].append(c["part"] - w["part"])
                groups.append(q)
        row = {"method": method, "queries": n, "halves": 2 * n}
        for name, vals in per.items():
            ci = mean_ci(vals, groups=groups, bounds=None if name == "gain" else (0, 1))
            row[name], row[f"{name}_ci"] = ci["value"], ci["ci"]
        rows.append(row)
    return rows


def write_local_report(out: str | Path, results: dict, images: dict, metas: dict, train, cfg: LocalEvalConfig,
                       shown_queries: int = 4) -> Path:
    """For the best method on the report queries: each query's parts lit in turn beside their top images."""
    from ..report import dim_outside, grid, write_report

    summary = results["summary"].get("report", [])
    if not summary:
        raise DatarightsError("no method has every report query scored yet")
    best = max(summary, key=lambda r: r["part"])["method"]
    sections = []
    for q, m in enumerate(metas["report"][:shown_queries]):
        grids = []
        for s, side in enumerate(SIDES):
            cell = results["cells"][f"{best}|report|{q}"][side]
            region = part_box(images["report"].shape[-1], side)
            grids.append(grid(f"{side} part ({m['colors'][s]} {m['parts'][s]}) and {best}'s top {cfg.top_k} of the "
                              "images that show one part", torch.cat([dim_outside(images['report'][q], region)[None],
                                                                      train.images[cell["top"]]]),
                              ["query"] + [f"{train.owners[i]}: {train.folder.texts[i]}"[:48] for i in cell["top"]]))
        sections.append({"title": m["prompt"], "grids": grids})
    table = {"header": ["method", "part share, with the region", "without it (0.5 by construction)",
                        "in the judge-read colour, with the region", "colour, without it", "colour, random"],
             "rows": [[r["method"], f"{r['part']:.2f} [{r['part_ci'][0]:.2f}, {r['part_ci'][1]:.2f}]",
                       f"{r['whole']:.2f}", f"{r['colour']:.2f} [{r['colour_ci'][0]:.2f}, {r['colour_ci'][1]:.2f}]",
                       f"{r['whole_colour']:.2f}", f"{r['random_colour']:.2f}"] for r in summary]}
    sections.insert(0, {"title": f"Share of the region's part among each method's top {cfg.top_k} (report queries)",
                        "table": table})
    return write_report(out, "datarights: local attribution on compositions", sections, results["summary"],
                        overwrite=True)
