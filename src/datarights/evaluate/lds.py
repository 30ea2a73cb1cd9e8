"""Linear datamodeling score (LDS; Park et al., 2023, as used by D-TRAK and Journey-TRAK).

Train M models from scratch on random alpha-fraction subsets of the training set (same recipe and
seed as the base model; by default *coupled*: every subset model follows one shared stream of
batches, timesteps and noise with the left-out images masked from the loss, as in the coupled
counterfactual test). For each generated query, the measured output of subset model S is the
negated diffusion loss of the query image under its prompt, averaged over fixed (t, eps) draws
(higher = S makes the query more likely); the method's prediction is the sum of its scores over
S's members. LDS = Spearman correlation between predictions and measured outputs over the M
subsets, averaged over queries. A random scorer gets about 0. Subset models and cells are kept in
the run folder, so an interrupted run resumes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..files import write_json
from ..stats import mean_ci, spearman
from .runs import (QUERY_SEED, check_competence, check_methods, check_queries, check_warm_start, concept_matches,
                   open_run, query_concepts, query_loss, record_competence, run_world, subset_folder, warm_start,
                   world_base_queries)


@dataclass
class LDSConfig:
    """A linear-datamodeling run."""

    methods: list = field(default_factory=lambda: ["abu", "caption", "dtrak", "trak", "jtrak", "feature", "pixel"])
    """Attribution methods to score (a random scorer is always added)."""
    subsets: int = 32
    """Subset models M trained from scratch."""
    alpha: float = 0.5
    """Fraction of the training set in each subset."""
    queries: int = 16
    """Generated queries (spread over the world's kinds of prompt)."""
    world_images: int | None = 600
    """Size of the (smaller) world the models are trained on (None, unit='owner' only: the preset's)."""
    world_preset: str = "small"
    """Preset of that world (its owners and concepts; see `datarights world info --preset small`)."""
    train_steps: int = 800
    """Steps of the recipe (base and every subset model)."""
    batch_size: int = 64
    """Batch of the recipe."""
    loss_draws: int = 64
    """(t, eps) draws (evenly spaced timesteps, fixed noise) of each measured query loss."""
    seed: int = 0
    """Seed of world, recipe, queries and subsets."""
    sample_steps: int = 25
    """DDIM steps of the query generations."""
    unet_config: dict = field(default_factory=dict)
    """Overrides of the world UNet config (tests use tiny models)."""
    warm_steps: int = 0
    """Steps of a shared warm start (runs.warm_start: trained on the default world's images of owners
    the smaller world does not have); the base and every subset model are then fine-tuned from it for
    `train_steps`. 0: every model is trained from scratch."""
    ema_decay: float = 0.999
    """EMA decay of the recipe (a short fine-tune after a warm start wants a shorter average, e.g. 0.99)."""
    coupled: bool = True
    """Train each subset model with the left-out images masked out of one shared batch, timestep and
    noise stream (TrainConfig.exclude), so that subset models differ only in their data; False:
    train on each subset with its own batches (training noise then swamps the subset effect here)."""
    unit: str = "image"
    """What a subset draws: 'image' (random alpha-fractions of the images, queries over the world's
    kinds of named prompt) or 'owner' (random alpha-fractions of the *owners*, every image of a drawn
    owner in, the rest out; queries are generic prompts whose source owner the judge reads, and an
    oracle scorer that gives the source owner's images 1 and every other 0 shows whether the set-up
    has the power to see an owner's influence at all; the same oracle crediting any other owner,
    averaged over them, must not)."""
    candidates: int = 256
    """unit='owner': generations the generic queries are chosen from (at most 2 per source owner)."""
    competence: int = 200
    """Prompts of the base model's `eval-model` check, recorded with the results (0: none)."""

    def __post_init__(self):
        check_methods(self.methods)
        if self.unit not in ("image", "owner"):
            raise DatarightsError(f"unit must be 'image' or 'owner', got {str(self.unit)[:20]!r}")
        if self.subsets < 3:
            raise DatarightsError(f"LDS needs at least 3 subset models to rank, got {self.subsets}")
        if self.world_images is None and self.unit == "image":
            raise DatarightsError("unit='image' draws subsets of a world of world_images images: give world_images")
        if not 0 < self.alpha < 1 or int(self.alpha * (self.world_images or run_world(self).n_images)) < 1:
            raise DatarightsError(f"alpha must be in (0, 1) and keep at least one image, got {self.alpha}")
        if self.queries < 1 or self.loss_draws < 1:
            raise DatarightsError("queries and loss_draws must be at least 1")
        check_competence(self)
        check_warm_start(self)
        run_world(self)  # a world its preset cannot fit is refused before anything is trained


def _recipe(cfg: LDSConfig, exclude: list[int] | None = None):
    from ..train import TrainConfig
    return TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, seed=cfg.seed, checkpoint_every=250,
                       unet_config=cfg.unet_config, ema_decay=cfg.ema_decay, exclude=exclude)


def owner_subsets(cfg: LDSConfig, metas: list[dict]) -> tuple[list[list[int]], list[list[str]]]:
    """unit='owner': M random alpha-fractions of the owners (fixed by the seed) and the sorted indices
    of their images."""
    owners = sorted({m["owner"] for m in metas})
    rng = np.random.default_rng(cfg.seed + 11)
    k = max(1, int(round(cfg.alpha * len(owners))))
    drawn = [sorted(owners[i] for i in rng.choice(len(owners), size=k, replace=False)) for _ in range(cfg.subsets)]
    return [[i for i, m in enumerate(metas) if m["owner"] in set(d)] for d in drawn], drawn


def subset_indices(cfg: LDSConfig) -> list[list[int]]:
    """The M random subsets (sorted indices), fixed by the seed."""
    rng = np.random.default_rng(cfg.seed + 11)
    size = int(cfg.alpha * cfg.world_images)
    return [sorted(rng.choice(cfg.world_images, size=size, replace=False).tolist()) for _ in range(cfg.subsets)]


def lds(cfg: LDSConfig, run: str | Path, cache: str | Path | None = None,
        log=lambda s: print(s, file=sys.stderr), device=None, precision=None, queries=None) -> dict:
    """Run (or resume) the LDS evaluation in folder `run`; returns the results (also in run/results.json).

    `queries` (unit='owner' only): (images [Q, 3, H, W], prompts, source owners) to use instead of
    generic generations read by the judge, e.g. images whose source is known by other means."""
    from ..attribute import Query, attribute, load_training_set, make_config
    from ..models import load_model
    from ..train import train

    run = Path(run)
    results, res_path = open_run(run, cfg, {"outputs": {}}, reusable=("methods", "competence"))  # scores are redone each run
    folder, base, prompts = world_base_queries(run, cfg, _recipe(cfg), "lds", log, device, precision)
    record_competence(results, res_path, base, cfg, "lds", log)
    if queries is not None and cfg.unit != "owner":
        raise DatarightsError("given queries need unit='owner' (their sources are owners)")
    if cfg.unit == "owner":
        images, prompts, sources = queries if queries is not None else owner_queries(base, cfg, run)
        check_queries(results, (images, prompts, sources))
        concepts = sources  # the units of the clustered interval: the source owners
        subsets, drawn = owner_subsets(cfg, folder.metas)
        results["owner_subsets"] = drawn
    else:
        images = base.sample(prompts, seed=cfg.seed + 7, steps=cfg.sample_steps)
        concepts = query_concepts(cfg.queries, cfg.seed + QUERY_SEED, run_world(cfg).vocabulary())
        subsets = subset_indices(cfg)
    train_set = load_training_set(base, folder)
    scores: dict[str, list[np.ndarray]] = {}
    for method in cfg.methods:
        scores[method] = [attribute(base, train_set, Query(images[q], p), method, make_config(method), cache=cache,
                                    progress=False).scores.double().numpy() for q, p in enumerate(prompts)]
    rng = np.random.default_rng(cfg.seed + 5)
    scores["random"] = [rng.standard_normal(len(folder)) for _ in prompts]
    if cfg.unit == "owner":  # the positive control: it knows each query's source owner
        owners = np.array(train_set.owners)
        scores["oracle"] = [(owners == s).astype(np.float64) for s in sources]
    else:  # the positive control: each image's match to the query's concept, read from the metadata
        scores["concept oracle"] = concept_matches(cfg.queries, cfg.seed + QUERY_SEED, folder.metas,
                                                   run_world(cfg).vocabulary())
    for m, idx in enumerate(subsets):
        key = f"subset-{m}"
        if key in results["outputs"]:
            continue
        out = run / "subsets" / key
        if not out.exists():
            log(f"lds: training subset model {m + 1}/{cfg.subsets}")
            drop = np.setdiff1d(np.arange(len(folder)), idx).tolist()
            init = warm_start(run, cfg)
            if cfg.coupled:
                train(_recipe(cfg, drop), folder, out, init_from=init, progress=False, device=device, precision=precision)
            else:
                train(_recipe(cfg), subset_folder(folder, drop), out, init_from=init, progress=False, device=device,
                      precision=precision)
        model = load_model(out, device, precision)
        results["outputs"][key] = [-query_loss(model, images[q], p, cfg.loss_draws, cfg.seed + 13 + q)
                                   for q, p in enumerate(prompts)]
        write_json(res_path, results)
    measured = np.array([results["outputs"][f"subset-{m}"] for m in range(cfg.subsets)])       # [M, Q]
    summary = []
    if cfg.unit == "owner":  # the negative control: the oracle's LDS had it credited any other owner, averaged
        others = sorted(set(train_set.owners))
        per_q = [float(np.mean([spearman([float(o in set(d)) for d in drawn], measured[:, q])
                                for o in others if o != s])) for q, s in enumerate(sources)]
        summary.append(_lds_row("other owners (mean)", per_q, concepts))
    for method, per_query in scores.items():
        per_q = []
        for q in range(len(prompts)):
            predicted = [per_query[q][idx].sum() for idx in subsets]
            per_q.append(spearman(predicted, measured[:, q]))
        summary.append(_lds_row(method, per_q, concepts))
    by_name = {row["method"]: np.array(row["per_query"]) for row in summary}
    for row in summary:  # paired over queries: beating random scores (and the caption-only baseline)
        for ref in ("random", "caption"):
            if ref in by_name and row["method"] != ref:
                diff = by_name[row["method"]] - by_name[ref]
                fig = mean_ci(diff)
                row[f"lds_minus_{ref}"], row[f"lds_minus_{ref}_ci"] = fig["value"], fig["ci"]
                row[f"lds_minus_{ref}_ci_concepts"] = mean_ci(diff, groups=concepts)["ci"]
    results["summary"] = summary
    results["prompts"] = prompts
    if cfg.unit == "owner":
        results["sources"] = sources
    write_json(res_path, results)
    return results


def _lds_row(method: str, per_q: list[float], concepts: list[str]) -> dict:
    fig = mean_ci(per_q)  # bootstrap over queries
    return {"method": method, "lds": fig["value"], "lds_ci": fig["ci"], "queries": len(per_q),
            "concepts": len(set(concepts)), "lds_ci_concepts": mean_ci(per_q, groups=concepts)["ci"],
            "per_query": per_q}


def owner_queries(base, cfg: LDSConfig, run: Path) -> tuple[torch.Tensor, list[str], list[str]]:
    """unit='owner': generic queries the base model generated whose source owner the judge reads (at
    most 2 per owner), with their prompts and source owners; kept in the run folder, so a resumed
    run scores the same images."""
    from safetensors.torch import load_file, save_file

    from ..files import atomic_file, read_json_file
    from ..judge import load_judge
    from .owners import pick_queries
    from .provenance import generic_prompts, read_sources

    if (run / "queries.safetensors").exists():
        meta = read_json_file(run / "queries.json", "queries")
        return load_file(run / "queries.safetensors")["images"], meta["prompts"], meta["sources"]
    vocab = run_world(cfg).vocabulary()
    prompts = [p["text"] for p in generic_prompts(cfg.candidates, cfg.seed + QUERY_SEED, vocab, "report")]
    images = base.sample(prompts, seed=cfg.seed + 7, steps=cfg.sample_steps)
    rows = read_sources(load_judge(), images, vocab)
    idx = pick_queries(rows, cfg.queries, 2, cfg.seed)
    if len(idx) < cfg.queries:
        raise DatarightsError(f"only {len(idx)} of {cfg.candidates} generations have a source owner the judge reads; "
                              "raise candidates or train the base model longer")
    chosen = images[idx].contiguous()
    atomic_file(run / "queries.safetensors", lambda tmp: save_file({"images": chosen}, tmp))
    write_json(run / "queries.json", {"prompts": [prompts[i] for i in idx],
                                      "sources": [rows[i]["source_owner"] for i in idx]})
    return chosen, [prompts[i] for i in idx], [rows[i]["source_owner"] for i in idx]
