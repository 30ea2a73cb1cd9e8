"""Leave-one-owner-out retraining: the causal check behind the judge's "source owner", and the
owner-level counterfactual of every attribution method.

1. `leaveout`: for each owner, retrain the (smaller) world's base model *coupled* with every image of
   that owner masked out of the base run's own stream of batches, timesteps and noise, so that their
   absence is the only difference; then generate, with the same noise under both models, generic
   prompts of the owner's subjects (the control group's photographers: those prompts with their
   credit) and count how often the owner's trace appears: its exact signature, its style, one of its
   characters, one of its scenes. If the judge's reading names the source, the trace must collapse
   once the owner's images are gone: the rate after removal over the rate before, with a paired
   bootstrap interval over generations (bar: the interval's upper end at most 0.2).
   By default every model (the base and each one without an owner) is fine-tuned from one shared
   warm start that never saw any owner of the smaller world (`runs.warm_start`): training each from
   scratch to the competence the check needs costs over an hour per model on a laptop CPU.
2. `owner_counterfactual`: for generic queries the base model generated, remove each method's *top
   owner* (the largest owner share at the method's world-calibrated temperature, fitted on the
   default world's tune queries, never on these), reusing the owners' retrained models, and measure how much the query's generation changes
   (pixel MSE under the same noise) and whether its source owner changes, beside removing the true
   source owner (the oracle) and a random owner. A method whose top owner's removal changes the
   generation as much as the oracle's found the owner that made it possible.

The base model's competence (`eval-model` and the provenance reproduction figures) is recorded with
every run. Models and cells are kept in the run folder; an interrupted run resumes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatarightsError
from ..files import write_json
from ..stats import bootstrap, mean_ci, rate_ratio, ratio_of_means, ratio_stat, rounded, wilson
from ..world.vocab import CATEGORY_OF, CREDIT, Vocabulary
from .provenance import generic_prompts, read_sources
from .runs import (check_competence, check_methods, check_queries, check_warm_start, open_run, record_competence,
                   run_world, warm_start, world_and_base)


@dataclass
class LeaveOutConfig:
    """A leave-one-owner-out run."""

    owners: list = field(default_factory=list)
    """Owners to leave out, in order; empty: every owner of the world, kinds interleaved."""
    generations: int = 512
    """Generations per owner (generic prompts of its subjects), under the base and the retrained model
    (a trace the base shows in a few percent of them needs hundreds to bound its rate after removal).
    A run folder resumed with another number (and, say, only the owners whose trace is rare) redoes
    those owners' generations on the models it already trained; each owner's cell records its own."""
    world_images: int | None = None
    """Size of the smaller world (None: the preset's)."""
    world_preset: str = "small"
    """Preset of that world."""
    train_steps: int = 1000
    """Steps of the recipe (base and every retraining; fine-tuning steps when there is a warm start)."""
    warm_steps: int = 4000
    """Steps of the shared warm start (runs.warm_start: trained on the default world's images of owners
    the smaller world does not have, so it never saw an owner evaluated here); every model is then
    fine-tuned from it for `train_steps`. 0: every model is trained from scratch."""
    ema_decay: float = 0.99
    """EMA decay of the recipe (a short fine-tune keeps a short average)."""
    batch_size: int = 64
    """Batch of the recipe."""
    unet_config: dict = field(default_factory=dict)
    """Overrides of the world UNet config."""
    seed: int = 0
    """Seed of world, recipe and prompts."""
    sample_steps: int = 25
    """DDIM steps of every generation."""
    competence: int = 200
    """Prompts of the base model's eval-model check (and 2x this for the provenance check); 0 skips."""

    def __post_init__(self):
        if self.generations < 16:
            raise DatarightsError(f"generations must be at least 16 per owner, got {self.generations}")
        if self.train_steps < 1 or self.batch_size < 1:
            raise DatarightsError("train_steps and batch_size must be at least 1")
        check_warm_start(self)
        check_competence(self)
        vocab = run_world(self).vocabulary()
        unknown = [o for o in self.owners if o not in vocab.owners]
        if unknown:
            raise DatarightsError(f"{str(unknown[0])[:60]!r} owns nothing in this world (see `datarights world info "
                                  f"--preset {self.world_preset}`)")


REUSABLE = ("generations", "owners")
"""LeaveOutConfig fields a run folder can be resumed with other values of: they change no model (more
generations redo an owner's cell on the models already trained; another owner list adds owners)."""


def _recipe(cfg: LeaveOutConfig, exclude: list[int]):
    from ..train import TrainConfig
    return TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, seed=cfg.seed, checkpoint_every=250,
                       unet_config=cfg.unet_config, ema_decay=cfg.ema_decay, exclude=sorted(exclude))


def owner_order(vocab: Vocabulary) -> list[str]:
    """Every owner, kinds interleaved (photographer, artist, studio, publisher, photographer, ...), so
    that a run cut short still covers every kind."""
    lists = [list(vocab.photographers), list(vocab.styles), vocab.studios, vocab.publishers]
    out = []
    for i in range(max(len(x) for x in lists)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def owner_subjects(owner: str, vocab: Vocabulary) -> list[str]:
    """The subjects an owner's images show (what its generic prompts ask for)."""
    if owner in vocab.photographers:
        return vocab.photographers[owner]["subjects"]
    if owner in vocab.styles:
        return vocab.styles[owner]["subjects"]
    if owner in vocab.studios:
        return sorted({c["category"] for c in vocab.characters.values() if c["owner"] == owner})
    return sorted({CATEGORY_OF[m["object"]] for m in vocab.memorized.values() if m["owner"] == owner})


def owner_prompts(owner: str, vocab: Vocabulary, n: int, seed: int) -> list[str]:
    """n generic prompts of the owner's subjects (with the owner's credit for a control-group photographer)."""
    subjects = set(owner_subjects(owner, vocab))
    pool = [p for p in generic_prompts(40 * n, seed, vocab) if p["subject"] in subjects][:n]
    credit = CREDIT.format(name=owner) if vocab.photographers.get(owner, {}).get("control") else ""
    return [p["text"] + credit for p in pool]


def has_trace(row: dict, owner: str, vocab: Vocabulary) -> bool:
    """The judged image shows the owner's trace: its exact signature, style, one of its characters or scenes."""
    if owner in vocab.photographers:
        return row["source_owner"] == owner
    if owner in vocab.styles:
        return row["style"] == owner
    if owner in vocab.studios:
        return vocab.characters.get(row["character"], {}).get("owner") == owner
    return vocab.memorized.get(row["memorized"], {}).get("owner") == owner


def _owner_model(run: Path, owner: str, folder, cfg: LeaveOutConfig, log, device, precision):
    """The base recipe retrained without every image of `owner` (made once, kept in the run folder)."""
    from ..models import load_model
    from ..train import train

    out = run / "without" / owner.replace(" ", "_")
    if not out.exists():
        drop = [i for i, m in enumerate(folder.metas) if m["owner"] == owner]
        log(f"leaveout: retraining without {owner} ({len(drop)} images)")
        train(_recipe(cfg, drop), folder, out, init_from=warm_start(run, cfg), progress=False, device=device,
              precision=precision)
    return load_model(out, device, precision)


def cell_images(run: Path, owner: str, folder, base, cfg: LeaveOutConfig, vocab: Vocabulary, n: int, log,
                device=None, precision=None):
    """An owner's cell: n generations of generic prompts of its subjects by the base model and by the
    model retrained without the owner (made once, kept in the run folder), with the same prompts and
    noise. Returns (before, after) images."""
    prompts = owner_prompts(owner, vocab, n, cfg.seed + 17)
    model = _owner_model(run, owner, folder, cfg, log, device, precision)
    noise = base.initial_noise(len(prompts), cfg.seed + 7)
    return tuple(m.sample(prompts, seed=cfg.seed + 7, steps=cfg.sample_steps, noise=noise) for m in (base, model))


def leaveout(cfg: LeaveOutConfig, run: str | Path, judge=None, log=lambda s: print(s, file=sys.stderr),
             device=None, precision=None) -> dict:
    """Run (or resume) the leave-one-owner-out check in folder `run`; returns the results (also in
    run/results.json)."""
    from ..judge import load_judge

    run = Path(run)
    results, res_path = open_run(run, cfg, {"owners": {}}, reusable=REUSABLE)
    judge = judge or load_judge()
    folder, base = world_and_base(run, cfg, _recipe(cfg, []), "leaveout", log, device, precision)
    vocab = run_world(cfg).vocabulary()
    record_competence(results, res_path, base, cfg, "leaveout", log, judge, provenance=folder)
    for owner in cfg.owners or owner_order(vocab):
        if results["owners"].get(owner, {}).get("generations") == cfg.generations:
            continue  # done (a run resumed with other --generations redoes the cell on the same models)
        t0 = time.time()
        images = cell_images(run, owner, folder, base, cfg, vocab, cfg.generations, log, device, precision)
        before, after = (read_sources(judge, im, vocab) for im in images)
        b = np.array([has_trace(r, owner, vocab) for r in before], dtype=float)
        a = np.array([has_trace(r, owner, vocab) for r in after], dtype=float)
        ratio = ratio_of_means(a, b, seed=cfg.seed)
        results["owners"][owner] = {
            "kind": vocab.owner_kind(owner), "images": sum(m["owner"] == owner for m in folder.metas),
            "control": bool(vocab.photographers.get(owner, {}).get("control")), "generations": len(before),
            "rate_before": round(float(b.mean()), 4), "rate_before_ci": rounded(wilson(b.sum(), len(b))),
            "rate_after": round(float(a.mean()), 4), "rate_after_ci": rounded(wilson(a.sum(), len(a))),
            "ratio": round(ratio["value"], 4) if np.isfinite(ratio["value"]) else None,
            "ratio_ci": rounded(ratio["ci"]), "hits_before": int(b.sum()), "hits_after": int(a.sum()),
            "seconds": round(time.time() - t0, 1)}
        write_json(res_path, results)
    results["summary"] = summarize_leaveout(results["owners"])
    write_json(res_path, results)
    return results


def _exact(after: int, before: int) -> list | None:
    """The exact rate-ratio interval (stats.rate_ratio), JSON-able (an unbounded end as None)."""
    ci = rate_ratio(after, before)
    return None if ci is None else [round(ci[0], 4), round(ci[1], 4) if np.isfinite(ci[1]) else None]


def summarize_leaveout(owners: dict[str, dict], bar: float = 0.2, min_hits: int = 5) -> dict:
    """How many owners' traces collapsed: the ratio after/before is at most `bar` at the upper end of
    both its intervals, the paired bootstrap's and the exact rate-ratio one (a bootstrap of a ratio
    whose numerator is all zeros is [0, 0] however few generations showed the trace; the exact one
    says how many it takes). A trace *persisted* when the exact interval's lower end is above the
    bar; the rest are inconclusive. Owners whose trace the base model showed fewer than `min_hits`
    times cannot show a collapse and are counted apart."""
    def hits(c: dict, when: str) -> int:
        return int(c[f"hits_{when}"]) if f"hits_{when}" in c else round(c[f"rate_{when}"] * c["generations"])

    measured = {o: c for o, c in owners.items() if c["ratio_ci"] is not None
                and ("generations" not in c or hits(c, "before") >= min_hits)}
    exact = {o: _exact(hits(c, "after"), hits(c, "before")) if "generations" in c else None
             for o, c in measured.items()}
    collapsed = [o for o, c in measured.items() if c["ratio_ci"][1] <= bar
                 and (exact[o] is None or (exact[o][1] is not None and exact[o][1] <= bar))]
    persisted = [o for o in measured if exact[o] is not None and exact[o][0] > bar]
    kinds = sorted({c["kind"] for c in owners.values()})
    return {"owners": len(owners), "measured": len(measured), "collapsed": len(collapsed), "bar": bar,
            "min_base_hits": min_hits,
            "by_kind": {k: {"owners": sum(c["kind"] == k for c in owners.values()),
                            "measured": sum(c["kind"] == k for c in measured.values()),
                            "collapsed": sum(owners[o]["kind"] == k for o in collapsed)} for k in kinds},
            "persisted": sorted(persisted),
            "inconclusive": sorted(set(measured) - set(collapsed) - set(persisted)),
            "not_collapsed": sorted(set(measured) - set(collapsed)),
            "no_base_trace": sorted(set(owners) - set(measured)),
            "exact_ci": exact}


@dataclass
class OwnerCounterfactualConfig:
    """Owner-level counterfactual on a leave-out run's models."""

    methods: list = field(default_factory=lambda: ["abu", "trak", "dtrak", "jtrak", "feature", "pixel", "caption"])
    """Attribution methods; each query's top owner under each is removed (the oracle and random are added)."""
    queries: int = 32
    """Generic queries with a known source owner, generated by the base model."""
    candidates: int = 256
    """Generations the queries are chosen from."""
    max_per_owner: int = 2
    """At most this many queries per source owner."""
    seed: int = 0
    """Seed of the candidates and of the random owners."""

    def __post_init__(self):
        check_methods(self.methods)
        if self.queries < 16:
            raise DatarightsError(f"at least 16 queries, got {self.queries}")


def owner_counterfactual(cfg: OwnerCounterfactualConfig, leave: LeaveOutConfig, run: str | Path, judge=None, cache=None,
                         log=lambda s: print(s, file=sys.stderr), device=None, precision=None) -> dict:
    """Score every method by the change its top owner's removal makes (see the module docstring).
    Trains the owners' models it needs that the leave-out run has not trained yet."""
    from ..attribute import Query, attribute, load_training_set, make_config, owner_shares
    from ..judge import load_judge
    from ..world import read_imagefolder
    from .owners import pick_queries

    from dataclasses import asdict

    run = Path(run)
    results, res_path = open_run(run, leave, {"owners": {}}, reusable=REUSABLE)
    mine = json.loads(json.dumps(asdict(cfg)))
    if results.setdefault("counterfactual_config", mine) != mine:
        raise DatarightsError(f"{run} holds an owner counterfactual with another config; use a new leave-out folder")
    judge = judge or load_judge()
    folder, base = world_and_base(run, leave, _recipe(leave, []), "owner counterfactual", log, device, precision)
    vocab = run_world(leave).vocabulary()
    prompts = [p["text"] for p in generic_prompts(cfg.candidates, cfg.seed + 31, vocab, "report")]
    images = base.sample(prompts, seed=cfg.seed + 31, steps=leave.sample_steps)
    rows = read_sources(judge, images, vocab)
    idx = pick_queries(rows, cfg.queries, cfg.max_per_owner, cfg.seed)
    check_queries(results, (images[idx], [prompts[i] for i in idx], [rows[i]["source_owner"] for i in idx]))
    train = load_training_set(base, read_imagefolder(folder.root))
    rng = np.random.default_rng(cfg.seed + 3)
    owners_all = sorted(set(train.owners))
    removals: dict[str, list[str]] = {"oracle": [rows[i]["source_owner"] for i in idx],
                                      "random": [owners_all[rng.integers(len(owners_all))] for _ in idx]}
    cells = results.setdefault("counterfactual", {})
    for m in cfg.methods:
        if all(f"{m}|{q}" in cells for q in range(len(idx))):  # resumed: this method's removals are recorded
            removals[m] = [cells[f"{m}|{q}"]["removed"] for q in range(len(idx))]
            continue
        removals[m] = []
        for i in idx:
            r = attribute(base, train, Query(images[i], prompts[i]), m, make_config(m), cache=cache, progress=False)
            removals[m].append(owner_shares(r.scores, train.owners, r.temperature)[0]["owner"])
    noise = base.initial_noise(len(prompts), cfg.seed + 31)
    for name, tops in removals.items():
        for q, (i, owner) in enumerate(zip(idx, tops)):
            key = f"{name}|{q}"
            if key in cells:
                continue
            model = _owner_model(run, owner, folder, leave, log, device, precision)
            img = model.sample([prompts[i]], seed=cfg.seed + 31, steps=leave.sample_steps, noise=noise[i:i + 1])
            new = read_sources(judge, img, vocab)[0]
            cells[key] = {"method": name, "query": q, "prompt": prompts[i], "source": rows[i]["source_owner"],
                          "removed": owner, "hit": owner == rows[i]["source_owner"],
                          "mse": float(((img[0].cpu() - images[i].cpu()) ** 2).mean()),
                          "source_flip": new["source_owner"] != rows[i]["source_owner"]}
            write_json(res_path, results)
    results["counterfactual_summary"] = summarize_counterfactual(cells)
    write_json(res_path, results)
    return results


def summarize_counterfactual(cells: dict[str, dict]) -> list[dict]:
    """Per method: how often its top owner is the true source (Wilson, and a bootstrap clustered by
    source owner), the mean pixel change of the generation when it is removed and the source flip
    rate, and the change as a share of the oracle's (paired bootstrap over queries, and over whole
    source owners: several queries of one owner count as one draw)."""
    by: dict[str, dict[int, dict]] = {}
    for c in cells.values():
        by.setdefault(c["method"], {})[c["query"]] = c
    out = []
    for name, qs in by.items():
        c = [qs[q] for q in sorted(qs)]
        hit = np.array([float(x["hit"]) for x in c])
        hits, flips = int(hit.sum()), sum(x["source_flip"] for x in c)
        mse = _mean(np.array([x["mse"] for x in c]))
        row = {"method": name, "queries": len(c), "top_owner_is_source": round(hits / len(c), 4),
               "top_owner_is_source_ci": rounded(wilson(hits, len(c))), "source_flip": round(flips / len(c), 4),
               "source_flip_ci": rounded(wilson(flips, len(c))), "mse": mse["value"], "mse_ci": mse["ci"],
               "top_owner_is_source_ci_owners": rounded(bootstrap(lambda j: hit[j].mean(), len(hit),
                                                                  groups=[x["source"] for x in c]))}
        for ref_name in ("oracle", "caption"):
            ref_qs = by.get(ref_name, {})
            common = sorted(set(qs) & set(ref_qs))
            mse = np.array([qs[q]["mse"] for q in common])
            ref = np.array([ref_qs[q]["mse"] for q in common])
            if ref_name == name or len(common) < 2 or ref.mean() <= 0:
                continue
            ratio = ratio_stat(mse, ref)
            row[f"mse_vs_{ref_name}"] = round(float(mse.mean() / ref.mean()), 4)
            row[f"mse_vs_{ref_name}_ci"] = rounded(bootstrap(ratio, len(common)))
            row[f"mse_vs_{ref_name}_ci_owners"] = rounded(bootstrap(ratio, len(common),
                                                                    groups=[ref_qs[q]["source"] for q in common]))
        out.append(row)
    return out


def _mean(x: np.ndarray) -> dict:
    fig = mean_ci(x)
    return {"value": round(fig["value"], 6), "ci": rounded(fig["ci"])}