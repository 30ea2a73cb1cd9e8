"""TRAK for diffusion and D-TRAK: projected per-sample gradients and a kernel.

Once per training set (cached):
  1. Per-sample gradients g_i = grad_theta f(z_i) of the chosen linear layers, exact and batched
     (one backward pass per batch, via forward/backward hooks; see task.LinearGrads).
  2. Random projection phi_i = P^T g_i, P a seeded Gaussian [p, k] / sqrt(k).
  3. The kernel: A = Phi (Phi^T Phi + lam I)^-1, so that score(q, i) = A_i . phi_q.
Per query: phi_q = P^T grad f(query), score = A phi_q.

f: `trak` the diffusion loss averaged over the draws; `dtrak` the squared output norm
||eps_theta(x_t, t, c)||^2 (Zheng et al., ICLR 2024). (Journey-TRAK is not built yet.)
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from .base import register
from .task import draws, linear_modules, per_sample_grads, spaced_timesteps


@dataclass
class TRAKConfig:
    """Settings of the TRAK family."""

    params: str = "xattn-kv"
    """Linear-layer parameter group whose gradients are projected."""
    proj_dim: int = 512
    """Projection dimension k."""
    timesteps: int = 10
    """Evenly spaced timesteps per sample that f averages over."""
    lam: float = 1e-2
    """Ridge term, relative to the mean diagonal of Phi^T Phi."""
    batch_size: int = 128
    """Training images per batch."""
    seed: int = 0
    """Seed of the projection and of the noise draws."""

    def __post_init__(self):
        if self.proj_dim < 1 or self.timesteps < 1:
            raise DatarightsError("proj_dim and timesteps must be at least 1")


@functools.lru_cache(maxsize=1)  # rebuilding it per query costs seconds; it depends only on these three
def projection(n_params: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 12345)
    return torch.randn(n_params, k, generator=g) / k**0.5


def _features(model, mods, x0, cond, cfg, offset, output, P):
    ts = spaced_timesteps(cfg.timesteps, model.num_train_timesteps)
    d = draws(len(x0), cfg.timesteps, tuple(x0.shape[1:]), model.num_train_timesteps, cfg.seed, offset=offset, timesteps=ts)
    return per_sample_grads(model, mods, x0, cond, d, output) @ P                      # [B, k]


def make_prepare(output: str):
    def prepare(model, train, cfg: TRAKConfig, progress=True) -> dict:
        from tqdm.auto import tqdm

        mods = linear_modules(model, cfg.params)
        if not mods:
            raise DatarightsError(f"trak needs a group of linear layers; {cfg.params!r} has none")
        n_params = sum(m.weight.numel() for m in mods.values())
        P = projection(n_params, cfg.proj_dim, cfg.seed)
        phis = []
        bar = tqdm(total=len(train), desc=f"{output} features", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        for s in range(0, len(train), cfg.batch_size):
            idx = torch.arange(s, min(s + cfg.batch_size, len(train)))
            phis.append(_features(model, mods, train.x0[idx], train.cond(idx), cfg, s, output, P))
            bar.update(len(idx))
        bar.close()
        phi = torch.cat(phis).double()                                                  # [N, k]
        gram = phi.T @ phi
        gram += cfg.lam * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64)
        return {"A": torch.linalg.solve(gram, phi.T).T.float()}                          # [N, k]
    return prepare


def make_score(output: str):
    def score(model, train, state, query, cfg: TRAKConfig) -> torch.Tensor:
        mods = linear_modules(model, cfg.params)
        P = projection(sum(m.weight.numel() for m in mods.values()), cfg.proj_dim, cfg.seed)
        x0 = model.to_model_space(query.image[None].float())
        cond = model.encode_prompt([query.prompt])
        phi_q = _features(model, mods, x0, cond, cfg, 10**9, output, P)[0]               # [k]
        return state["A"] @ phi_q
    return score


register("trak", TRAKConfig, make_prepare("loss"), make_score("loss"))
register("dtrak", TRAKConfig, make_prepare("norm"), make_score("norm"))
