"""Linearised attribution by unlearning (`abu-fast`): AbU's scores to first order, in one gradient and
one matrix-vector product per query.

AbU (see `abu`) takes one Fisher-preconditioned ascent step on the query's loss,

    d = theta' - theta = (lr / N) F~^-1 g_q,     F~ = F + damping * mean(F)   (diagonal),

with g_q the query's loss gradient averaged over its draws, and scores training image i by the rise
of its loss at fixed draws D_i: s_i = L_i(theta'; D_i) - L_i(theta; D_i). By Taylor's theorem,

    s_i = g_i^T d + O(|d|^2) = (lr / N) g_i^T F~^-1 g_q + O(|d|^2),     g_i = grad L_i(theta; D_i).

The step is tiny (lr / N), so the first-order term is AbU's score up to a remainder that vanishes
with lr^2 (the test checks both). Writing u = F~^-1/2 g, s_i = (lr / N) u_i^T u_q: an inner product
that a Johnson-Lindenstrauss projection S [k, P] keeps in expectation, s_i ~ (lr / N) (S u_i)^T (S u_q).

Once per training set (cached): AbU's Fisher (same draws and damping), then phi_i = S F~^-1/2 g_i at
AbU's own evaluation draws (its evenly spaced timesteps, row i's noise seeded by i): [N, k].
Per query: g_q over AbU's query draws, phi_q = S F~^-1/2 g_q, scores = (lr / N) Phi phi_q.
`projection="none"` keeps u itself (exact first order; memory N x P). One step only: AbU with
`steps` > 1 is not linear in the query gradient.

Two-stage (`rerank` M > 0): the M training images with the largest linearised scores are re-scored
exactly (the query unlearned as `abu` does, their losses recomputed under the same draws); both
stages estimate the same loss rise, so the other images keep their first-order values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..runtime import per_sample_grads
from .abu import AbUConfig, images_per_batch, eval_draws, fisher_diagonal, modules, preconditioner, query_gradient, \
    query_inputs, training_losses, unlearned
from .base import register
from .store import RowSpec, register_rows, require_projection
from .trak import PROJECTIONS, Projector


@dataclass
class AbUFastConfig(AbUConfig):
    """`abu`'s settings (the step, draws, Fisher and damping it linearises) plus the projection."""

    proj_dim: int | None = None
    """Projection dimension k (world 2048; SD 4096)."""
    projection: str = "sjlt"
    """'sjlt' (sparse sign sketch), 'dense' (Gaussian), or 'none' (no projection: exact first order)."""
    rerank: int = 0
    """Re-score the top M exactly (two-stage); 0: linearised scores only."""

    DEFAULTS: ClassVar[dict] = {"world": dict(query_draws=256, eval_timesteps=10, batch_size=64, proj_dim=2048),
                                "sd": dict(query_draws=50_000, eval_timesteps=20, proj_dim=4096)}
    QUERY_ONLY: ClassVar[tuple] = ("rerank", "lr", "query_draws")
    """Fields that change how a query is scored but not the cached state (one artifact serves them all;
    unlike abu's, the damping is not one of them: Phi is whitened with it)."""

    def __post_init__(self):
        super().__post_init__()
        if self.steps != 1:
            raise DatarightsError(f"abu-fast linearises one unlearning step; got steps={self.steps} (use abu)")
        if self.projection not in PROJECTIONS + ("none",):
            raise DatarightsError(f"projection must be one of {', '.join(PROJECTIONS + ('none',))}, got {self.projection!r}")
        if self.proj_dim is not None and self.proj_dim < 1:
            raise DatarightsError(f"proj_dim must be at least 1, got {self.proj_dim}")
        if self.rerank < 0:
            raise DatarightsError(f"rerank must be 0 (off) or a number of images, got {self.rerank}")


def _projection(model, cfg: AbUFastConfig):
    """u [B, P] -> phi [B, k]: the configured sketch, or u itself for projection 'none'."""
    return (lambda u: u) if cfg.projection == "none" else Projector(model, cfg).project


def prepare(model, train, cfg: AbUFastConfig, progress=True) -> dict:
    fisher = fisher_diagonal(model, train, cfg, progress)
    scale = preconditioner(fisher, cfg).sqrt().to(model.device)                       # F~^-1/2
    mods, project = modules(model, cfg), _projection(model, cfg)
    bs = images_per_batch(model, cfg, cfg.eval_timesteps, backward=True)
    phis = []
    bar = runtime.progress_bar(progress, len(train), "abu-fast features")
    for s in range(0, len(train), bs):
        rows = torch.arange(s, min(s + bs, len(train)), device="cpu")
        idx = rows.to(model.device)
        g = per_sample_grads(model, mods, train.x0[idx], train.cond(idx), eval_draws(model, train, cfg, rows))
        phis.append(project(g.mul_(scale)).cpu())
        bar.update(len(rows))
    bar.close()
    # the training losses before unlearning: what the exact second stage compares against
    return {"fisher": fisher, "phi": torch.cat(phis), "losses": training_losses(model, train, cfg, progress).cpu()}


def score(model, train, state, query, cfg: AbUFastConfig):
    mods = modules(model, cfg)
    x0, cond = query_inputs(model, query)
    g = query_gradient(model, mods, x0, cond, cfg.query_draws, cfg.seed + 2, query.weight(model))  # abu's first step's draws
    scale = preconditioner(state["fisher"].to(g.device), cfg).sqrt()
    phi_q = _projection(model, cfg)((g * scale)[None])[0].cpu()
    scores = (cfg.lr / len(train)) * (state["phi"] @ phi_q)
    if not cfg.rerank:
        return scores
    top = torch.argsort(scores, descending=True)[:cfg.rerank]
    work = unlearned(model, train, state, query, cfg, first_gradient=g)
    exact = training_losses(work, train, cfg, rows=top).cpu() - state["losses"][top]
    scores = scores.clone()
    scores[top] = exact
    return scores, {"reranked": len(top)}


# ------------------------------------------------------------------ the store's rows
# A store keeps rows that never depend on the whole set: phi_i = S g_i, the *unwhitened* gradients, and
# the Fisher beside them as its whole-set fit (refitted once enough works changed: store.REFIT_SHARE);
# the query carries all of the preconditioner, phi_q = S F~^-1 g_q. Then phi_i . phi_q estimates the
# same g_i^T F~^-1 g_q as the in-memory path's (S F~^-1/2 g_i) . (S F~^-1/2 g_q), equal to it without a
# projection, and an appended work needs its own gradient only.

def _row_featurize(model, train, cfg: AbUFastConfig, idx, seeds) -> torch.Tensor:
    g = per_sample_grads(model, modules(model, cfg), train.x0[idx], train.cond(idx),
                         eval_draws(model, train, cfg, torch.tensor(seeds, dtype=torch.long)))
    return _projection(model, cfg)(g)


def _row_fit(model, train, seeds: list[int], cfg: AbUFastConfig, progress: bool) -> dict:
    return {"fisher": fisher_diagonal(model, train, cfg, progress, seeds).numpy()}


def _row_query(model, train, query, cfg: AbUFastConfig, fitted: dict) -> torch.Tensor:
    mods = modules(model, cfg)
    x0, cond = query_inputs(model, query)
    g = query_gradient(model, mods, x0, cond, cfg.query_draws, cfg.seed + 2, query.weight(model))
    precond = preconditioner(torch.from_numpy(fitted["fisher"]).to(g.device), cfg)
    return (cfg.lr / len(train)) * _projection(model, cfg)((g * precond)[None])[0]


def _row_check(cfg: AbUFastConfig) -> None:
    require_projection(cfg)
    if cfg.rerank:
        raise DatarightsError("abu-fast's two-stage re-scoring (rerank) reads every training image's loss in "
                              "memory, which a store does not keep: drop the re-scoring or the store")


register("abu-fast", AbUFastConfig, prepare, score, local=True)
register_rows("abu-fast", RowSpec(_row_featurize, _row_query, batch=lambda model, cfg: images_per_batch(
    model, cfg, cfg.eval_timesteps, backward=True), fit=_row_fit, check=_row_check))
