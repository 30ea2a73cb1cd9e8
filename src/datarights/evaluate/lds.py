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
from ..stats import mean_ci
from .counterfactual import QUERY_SEED, _subset, check_methods, open_run, query_concepts, world_base_queries


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
    world_images: int = 600
    """Size of the (smaller) world the models are trained on."""
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
    coupled: bool = True
    """Train each subset model with the left-out images masked out of one shared batch, timestep and
    noise stream (TrainConfig.exclude), so that subset models differ only in their data; False:
    train on each subset with its own batches (training noise then swamps the subset effect here)."""

    def __post_init__(self):
        check_methods(self.methods)
        if self.subsets < 3:
            raise DatarightsError(f"LDS needs at least 3 subset models to rank, got {self.subsets}")
        if not 0 < self.alpha < 1 or int(self.alpha * self.world_images) < 1:
            raise DatarightsError(f"alpha must be in (0, 1) and keep at least one image, got {self.alpha}")
        if self.queries < 1 or self.loss_draws < 1:
            raise DatarightsError("queries and loss_draws must be at least 1")


def _recipe(cfg: LDSConfig, exclude: list[int] | None = None):
    from ..train import TrainConfig
    return TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, seed=cfg.seed, checkpoint_every=250,
                       unet_config=cfg.unet_config, exclude=exclude)


def subset_indices(cfg: LDSConfig) -> list[list[int]]:
    """The M random subsets (sorted indices), fixed by the seed."""
    rng = np.random.default_rng(cfg.seed + 11)
    size = int(cfg.alpha * cfg.world_images)
    return [sorted(rng.choice(cfg.world_images, size=size, replace=False).tolist()) for _ in range(cfg.subsets)]


@torch.no_grad()
def query_loss(model, image: torch.Tensor, prompt: str, n_draws: int, seed: int) -> float:
    """The diffusion loss of one image under its prompt, over fixed evenly spaced timesteps and seeded noise."""
    from ..runtime import draws, per_sample_loss, spaced_timesteps
    x0 = model.to_model_space(image[None].float())
    d = draws(1, n_draws, tuple(x0.shape[1:]), model.num_train_timesteps, seed, model.device,
              timesteps=spaced_timesteps(n_draws, model.num_train_timesteps))
    return float(per_sample_loss(model, x0, model.encode_prompt([prompt]), d)[0])


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    xs = x[order]
    for v in np.unique(xs[1:][np.diff(xs) == 0]):
        r[x == v] = r[x == v].mean()                       # ties share their average rank
    return r


def lds(cfg: LDSConfig, run: str | Path, cache: str | Path | None = None,
        log=lambda s: print(s, file=sys.stderr), device=None, precision=None) -> dict:
    """Run (or resume) the LDS evaluation in folder `run`; returns the results (also in run/results.json)."""
    from ..attribute import Query, attribute, load_training_set, make_config
    from ..models import load_model
    from ..train import train

    run = Path(run)
    results, res_path = open_run(run, cfg, {"outputs": {}})
    folder, base, prompts = world_base_queries(run, cfg, _recipe(cfg), "lds", log, device, precision)
    images = base.sample(prompts, seed=cfg.seed + 7, steps=cfg.sample_steps)
    train_set = load_training_set(base, folder)
    scores: dict[str, list[np.ndarray]] = {}
    for method in cfg.methods:
        scores[method] = [attribute(base, train_set, Query(images[q], p), method, make_config(method), cache=cache,
                                    progress=False).scores.double().numpy() for q, p in enumerate(prompts)]
    rng = np.random.default_rng(cfg.seed + 5)
    scores["random"] = [rng.standard_normal(len(folder)) for _ in prompts]
    subsets = subset_indices(cfg)
    for m, idx in enumerate(subsets):
        key = f"subset-{m}"
        if key in results["outputs"]:
            continue
        out = run / "subsets" / key
        if not out.exists():
            log(f"lds: training subset model {m + 1}/{cfg.subsets}")
            drop = np.setdiff1d(np.arange(len(folder)), idx).tolist()
            if cfg.coupled:
                train(_recipe(cfg, drop), folder, out, progress=False, device=device, precision=precision)
            else:
                train(_recipe(cfg), _subset(folder, drop), out, progress=False, device=device, precision=precision)
        model = load_model(out, device, precision)
        results["outputs"][key] = [-query_loss(model, images[q], p, cfg.loss_draws, cfg.seed + 13 + q)
                                   for q, p in enumerate(prompts)]
        write_json(res_path, results)
    measured = np.array([results["outputs"][f"subset-{m}"] for m in range(cfg.subsets)])       # [M, Q]
    concepts = query_concepts(cfg.queries, cfg.seed + QUERY_SEED)  # the units of the concept-level interval
    summary = []
    for method, per_query in scores.items():
        per_q = []
        for q in range(len(prompts)):
            predicted = [per_query[q][idx].sum() for idx in subsets]
            per_q.append(spearman(predicted, measured[:, q]))
        fig = mean_ci(per_q)  # bootstrap over queries
        summary.append({"method": method, "lds": fig["value"], "lds_ci": fig["ci"], "queries": len(per_q),
                        "concepts": len(set(concepts)), "lds_ci_concepts": mean_ci(per_q, groups=concepts)["ci"],
                        "per_query": per_q})
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
    write_json(res_path, results)
    return results
