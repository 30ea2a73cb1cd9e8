"""Counterfactual leave-K-out evaluation of attribution (as in the AbU and D-TRAK papers).

For Q generated queries: remove each method's top-K training images, retrain from scratch with
the same recipe and seed (by default *coupled*: the removed images are masked out of the base
run's own batch/timestep/noise stream, so that their absence is the only difference; otherwise
every removal, even a random one, also reshuffles training and changes the image by itself),
regenerate with the same prompt and noise, and measure how much the
image changed (pixel MSE, judge-feature distance; higher = the removed images mattered more),
whether the judge's reading of the asked concept flipped, and the AbU paper's own metric: the rise
of the query's diffusion loss under the retrained model (fixed timesteps and noise). Removing K
random images (several draws; a random removal does not depend on the query, so each draw is one
retrained model scored on every query) is the reference. Queries cover every kind of world prompt. Every
figure is a mean over queries with a bootstrap interval, and each method's ratio to random has a
paired bootstrap interval over queries. Retraining is the cost, so this runs on a smaller world
with a shorter recipe (`warm_steps`: every model fine-tuned from one shared warm start that never saw
the smaller world's owners); every model and cell is kept in the run folder, so an interrupted run
resumes. The base model's `eval-model` figures are recorded with the results (`competence`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..files import read_json_file, write_json
from .runs import (QUERY_SEED, check_competence, check_methods, check_queries, check_warm_start, concept_matches,
                   derangement, open_run, query_concepts, query_loss, record_competence, run_world, subset_folder,
                   warm_start, world_base_queries)


@dataclass
class CounterfactualConfig:
    """A leave-K-out run."""

    methods: list = field(default_factory=lambda: ["abu", "caption", "dtrak", "feature", "pixel", "trak", "jtrak"])
    """Attribution methods to compare (random-K is always added), retrained in this order, each over
    every query before the next, so that an interrupted run already holds whole comparisons. A resumed
    run may name other methods (added ones are ranked and retrained; its measured cells stay)."""
    k: list = field(default_factory=lambda: [50])
    """How many top images to remove."""
    queries: int = 20
    """Generated queries, spread over the world's kinds of prompt (object, styled, character,
    memorized, composition)."""
    random_draws: int = 6
    """Random removals of K images (the reference). A random removal does not depend on the query, so
    each draw is one retrained model, scored on every query."""
    loss_draws: int = 64
    """(t, eps) draws of the query loss (AbU's metric)."""
    world_images: int = 1000
    """Size of the (smaller) world the models are trained on."""
    world_preset: str = "small"
    """Preset of that world (its owners and concepts; see `datarights world info --preset small`)."""
    train_steps: int = 1500
    """Steps of the base recipe (and of every retraining)."""
    batch_size: int = 64
    """Batch of the recipe."""
    seed: int = 0
    """Seed of world, recipe, queries and random removals."""
    sample_steps: int = 25
    """DDIM steps of every generation."""
    unet_config: dict = field(default_factory=dict)
    """Overrides of the world UNet config (tests use tiny models)."""
    competence: int = 200
    """Prompts of the base model's `eval-model` check, recorded with the results (0: none)."""
    warm_steps: int = 0
    """Steps of a shared warm start (runs.warm_start: trained on the default world's images of owners
    the smaller world does not have); the base and every retrained model are then fine-tuned from it
    for `train_steps`. 0: every model is trained from scratch."""
    ema_decay: float = 0.999
    """EMA decay of the recipe (a short fine-tune after a warm start wants a shorter average, e.g. 0.99)."""
    coupled: bool = True
    """Retrain with the removed images masked out of the base run's own batch, timestep and noise
    stream (TrainConfig.exclude), so that only their absence differs; False: retrain on the reduced
    set, whose batches are then drawn afresh (a different trajectory even for random removals)."""

    def __post_init__(self):
        check_methods(self.methods)
        if any(k < 1 or k >= self.world_images for k in self.k):
            raise DatarightsError(f"every K must be in [1, {self.world_images - 1}] (the training set's size)")
        if self.queries < 1 or self.random_draws < 1 or self.loss_draws < 1:
            raise DatarightsError("queries, random_draws and loss_draws must be at least 1")
        check_competence(self)
        check_warm_start(self)
        run_world(self)  # a world its preset cannot fit is refused before anything is trained


def _recipe(cfg: CounterfactualConfig, exclude: list[int] | None = None):
    from ..train import TrainConfig
    return TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, seed=cfg.seed, checkpoint_every=250,
                       unet_config=cfg.unet_config, ema_decay=cfg.ema_decay,
                       exclude=sorted(exclude or []) if cfg.coupled else None)


def counterfactual(cfg: CounterfactualConfig, run: str | Path, cache: str | Path | None = None,
                   log=lambda s: print(s, file=sys.stderr), judge=None, device=None, precision=None,
                   queries=None) -> dict:
    """Run (or resume) the evaluation in folder `run`; returns the results (also in run/results.json).

    `queries`: (images [Q, 3, H, W], prompts, source owners) to use instead of the base model's
    generations of the world's prompts. With known sources two controls join the methods: the
    *oracle* ranks the source owner's images first (it must change the image more than random
    removals do: the harness's positive control) and the *shuffled oracle* ranks another owner's
    images first (it must not: the negative control). On the world's own queries the positive control
    is the *concept oracle*: the images whose metadata match the query's concept first
    (runs.concept_matches), retrained right after the random reference."""
    from ..attribute import Query, attribute, load_training_set, make_config, result_config
    from ..attribute.base import ranking
    from ..judge import load_judge
    from ..models import load_model
    from ..train import train

    run = Path(run)
    # methods may change: a resume adds (or drops) a method; the cells already measured stay valid
    results, res_path = open_run(run, cfg, {"cells": {}}, reusable=("competence", "methods"))
    judge = judge or load_judge()
    folder, base, prompts = world_base_queries(run, cfg, _recipe(cfg), "counterfactual", log, device, precision)
    vocab = run_world(cfg).vocabulary()
    record_competence(results, res_path, base, cfg, "counterfactual", log, judge)
    if queries is not None:  # given queries: attributed and scored (loss rise) as given; the image
        check_queries(results, queries)  # change compares the models' generations under the same noise
        prompts, sources = list(queries[1]), list(queries[2])
        results["concepts"] = sources  # the units of the clustered intervals
    generated = base.sample(prompts, seed=cfg.seed + 7, steps=cfg.sample_steps)
    originals = generated if queries is None else queries[0].to(base.device)
    train_set = load_training_set(base, folder)
    rankings: dict[str, list[list[int]]] = {}
    rng = np.random.default_rng(cfg.seed + 3)
    for d in range(cfg.random_draws):  # a random removal does not depend on the query: one model per draw
        perm = rng.permutation(len(folder)).tolist()
        rankings[f"random#{d}"] = [perm] * len(prompts)  # first: the reference every method is compared to
    if queries is None:  # the positive control, retrained right after the reference: the images of the
        # query's concept first, read from the metadata (does the set-up see a removal that matters?)
        rankings["concept oracle"] = [ranking(torch.from_numpy(m)).tolist() for m in
                                      concept_matches(cfg.queries, cfg.seed + QUERY_SEED, folder.metas, vocab)]
    kept_path = run / "rankings.json"  # each method's rankings, kept so that a resume need not recompute them
    kept = read_json_file(kept_path, "run rankings") if kept_path.exists() else {}
    for method in cfg.methods:
        method_cfg = make_config(method)
        settings = json.loads(json.dumps(result_config(method_cfg)))
        if isinstance(kept.get(method), dict) and kept[method].get("config") == settings \
                and len(kept[method].get("rankings", [])) == len(prompts):
            rankings[method] = kept[method]["rankings"]
            continue
        rankings[method] = []
        for qi, p in enumerate(prompts):
            r = attribute(base, train_set, Query(originals[qi], p), method, method_cfg, cache=cache, progress=False)
            rankings[method].append(ranking(r.scores).tolist())
        kept[method] = {"config": settings, "rankings": rankings[method]}
        write_json(kept_path, kept)
    if queries is not None:
        owners = np.array(train_set.owners)
        relabel = derangement(sorted(set(owners)), cfg.seed + 6)
        for name, pick in (("oracle", lambda s: s), ("shuffled oracle", lambda s: relabel[s])):
            rankings[name] = [ranking(torch.from_numpy((owners == pick(s)).astype(np.float64))).tolist() for s in sources]
    with torch.no_grad():
        f_orig = judge.features(generated)
    read_orig = judge.read(generated, vocab=vocab)
    loss_orig = [query_loss(base, originals[qi], p, cfg.loss_draws, cfg.seed + 13 + qi) for qi, p in enumerate(prompts)]
    init = warm_start(run, cfg)  # made with the base (world_base_queries): every retraining starts from it
    for k in cfg.k:
        for method, ranks in rankings.items():
            for qi, p in enumerate(prompts):
                key = f"{method}|k={k}|q={qi}"
                if key in results["cells"]:
                    continue
                t0 = time.time()
                shared = method.startswith("random#")  # the same removal for every query
                out = run / "retrained" / (f"{method.replace('#', '-')}-k{k}" if shared else f"{method.replace(' ', '-')}-k{k}-q{qi}")
                if not out.exists():
                    log(f"counterfactual: retraining without {method}'s {k} images" if shared else
                        f"counterfactual: retraining without {method}'s top {k} for query {qi}")
                    if cfg.coupled:
                        train(_recipe(cfg, ranks[qi][:k]), folder, out, init_from=init, progress=False, device=device,
                              precision=precision)
                    else:
                        train(_recipe(cfg), subset_folder(folder, ranks[qi][:k]), out, init_from=init, progress=False,
                              device=device, precision=precision)
                model = load_model(out, device, precision)
                img = model.sample([p], seed=cfg.seed + 7, steps=cfg.sample_steps,
                                   noise=base.initial_noise(len(prompts), cfg.seed + 7)[qi:qi + 1])
                with torch.no_grad():
                    f_new = judge.features(img)
                read_new = judge.read(img, vocab=vocab)[0]
                flip = any(read_new[key_] != read_orig[qi][key_] for key_ in ("object", "color", "style"))
                results["cells"][key] = {
                    "method": method.split("#")[0], "k": k, "query": qi, "prompt": p,
                    "mse": float(((img[0].cpu() - generated[qi].cpu()) ** 2).mean()),
                    # cosine distance lies in [0, 2]; float32 rounding can put identical features at -1e-7
                    "feature_distance": min(2.0, max(0.0, float(
                        1 - torch.nn.functional.cosine_similarity(f_new, f_orig[qi:qi + 1])[0]))),
                    "loss_rise": query_loss(model, originals[qi], p, cfg.loss_draws, cfg.seed + 13 + qi) - loss_orig[qi],
                    "label_flip": bool(flip), "seconds": round(time.time() - t0, 1)}
                write_json(res_path, results)
    results["summary"] = summarize(results)
    results["pairwise"] = pairwise(results)
    write_json(res_path, results)
    return results


METRICS = ("mse", "feature_distance", "loss_rise")


def _per_query(results: dict) -> dict[tuple, dict[int, list[dict]]]:
    per: dict[tuple, dict[int, list[dict]]] = {}
    for c in results["cells"].values():
        per.setdefault((c["method"], c["k"]), {}).setdefault(c["query"], []).append(c)
    return per


def _concept_of(results: dict) -> dict[int, str] | None:
    if "concepts" in results:  # given queries: their sources
        return dict(enumerate(results["concepts"]))
    cfg = results.get("config", {})
    if "queries" not in cfg or "seed" not in cfg:
        return None
    from ..world import WorldConfig
    vocab = WorldConfig(preset=cfg.get("world_preset", "small"), n_images=cfg.get("world_images"),
                        seed=cfg["seed"]).vocabulary()
    return dict(enumerate(query_concepts(cfg["queries"], cfg["seed"] + QUERY_SEED, vocab)))


def _paired(mine: dict[int, list[dict]], theirs: dict[int, list[dict]], metric: str, common: list[int],
            concept_of: dict[int, str] | None = None) -> tuple[np.ndarray, np.ndarray, float | None, list | None, list | None]:
    """Per-query means of `metric` for two rankings over the queries `common` to both, and their
    comparison with a paired bootstrap interval over queries: the difference of the means for the
    loss rise (it can be negative), else the ratio (None where the second mean is not positive).
    The last item is the same interval resampling concepts instead of queries (`concept_of`: query
    -> the concept it draws on), since several queries of one concept are not independent."""
    from ..stats import as_list, bootstrap, ratio_stat

    x = np.array([np.mean([c.get(metric, np.nan) for c in mine[q]]) for q in common])
    y = np.array([np.mean([c.get(metric, np.nan) for c in theirs[q]]) for q in common])
    if metric == "loss_rise":
        stat = lambda j: float((x[j] - y[j]).mean())  # noqa: E731
    elif y.mean() > 0:
        stat = ratio_stat(x, y)
    else:
        return x, y, None, None, None
    groups = [concept_of[q] for q in common] if concept_of else None
    return (x, y, stat(np.arange(len(common))), as_list(bootstrap(stat, len(common))),
            as_list(bootstrap(stat, len(common), groups=groups)) if groups else None)


def pairwise(results: dict) -> list[dict]:
    """Every pair of (non-random) methods at each K, paired over the queries both have: the ratio
    of their mean image change (pixel MSE, judge-feature distance) and the difference of their mean
    loss rise, each with a paired bootstrap interval over queries, and on how many queries the
    first method's removal changed the image more (`*_ci_concepts`: the same intervals resampling
    concepts). `a` beats `b` on a metric where the interval lies above 1 (ratios) or above 0 (the
    difference)."""
    per = _per_query(results)
    concept_of = _concept_of(results)
    names = list(dict.fromkeys(c["method"] for c in results["cells"].values() if c["method"] != "random"))
    out = []
    for k in sorted({k for _, k in per}):
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if (a, k) not in per or (b, k) not in per:
                    continue
                common = sorted(set(per[(a, k)]) & set(per[(b, k)]))
                if not common:
                    continue
                row = {"a": a, "b": b, "k": k, "queries": len(common)}
                if concept_of:
                    row["concepts"] = len({concept_of[q] for q in common})
                for m in METRICS:
                    x, y, value, ci, ci_concepts = _paired(per[(a, k)], per[(b, k)], m, common, concept_of)
                    row[f"{m}_a_wins"] = int((x > y).sum())
                    if value is not None:
                        name = f"{m}_a_minus_b" if m == "loss_rise" else f"{m}_a_over_b"
                        row[name], row[f"{name}_ci"] = value, ci
                        if ci_concepts is not None:
                            row[f"{name}_ci_concepts"] = ci_concepts
                out.append(row)
    return out


def summarize(results: dict) -> list[dict]:
    """Per (method, K): each metric's mean over queries with a bootstrap interval (random: its draws
    averaged per query first), the flip rate with a Wilson interval (random: a bootstrap over queries
    of each query's share of flipping draws), and each metric's ratio to
    random with a paired bootstrap interval over queries (and `*_ci_concepts`, over concepts)."""
    from ..stats import as_list, mean_ci, wilson

    per = _per_query(results)
    concept_of = _concept_of(results)
    out = []
    for (method, k), queries in sorted(per.items()):
        row = {"method": method, "k": k, "queries": len(queries), "cells": sum(len(v) for v in queries.values())}
        if concept_of:
            row["concepts"] = len({concept_of[q] for q in queries})
        for m in METRICS:
            vals = [float(np.mean([c.get(m, np.nan) for c in cs])) for cs in queries.values()]
            fig = mean_ci(vals)
            row[m], row[f"{m}_ci"] = fig["value"], fig["ci"]
        flips = [c["label_flip"] for cs in queries.values() for c in cs]
        row["flip_rate"] = float(np.mean(flips))
        if row["cells"] == row["queries"]:  # one removal per query: independent trials
            row["flip_rate_ci"] = as_list(wilson(sum(flips), len(flips)))
        else:  # random: several draws per query are not independent trials; resample queries
            row["flip_rate_ci"] = mean_ci([float(np.mean([c["label_flip"] for c in cs])) for cs in queries.values()],
                                         bounds=(0.0, 1.0))["ci"]
        out.append(row)
    rand = {r["k"]: r for r in out if r["method"] == "random"}
    for r in out:
        ref = rand.get(r["k"])
        if ref is None or r["method"] == "random":
            continue
        mine, theirs = per[(r["method"], r["k"])], per[("random", r["k"])]
        common = sorted(set(mine) & set(theirs))
        for m in METRICS:
            _, _, value, ci, ci_concepts = _paired(mine, theirs, m, common, concept_of)
            if value is not None:
                name = f"{m}_minus_random" if m == "loss_rise" else f"{m}_vs_random"
                r[name], r[f"{name}_ci"] = value, ci
                if ci_concepts is not None:
                    r[f"{name}_ci_concepts"] = ci_concepts
    return out
