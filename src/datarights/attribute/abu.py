"""Attribution by unlearning (Wang et al., NeurIPS 2024).

Once per training set (cached):
  1. The diagonal Fisher F of the chosen parameters: the mean squared per-sample gradient of the
     diffusion loss over the training set.
  2. Every training image's loss L(z_i; theta) under fixed draws (evenly spaced timesteps, noise
     seeded by the image's index).
Per query (the generated image z^ and its prompt c):
  3. Unlearn it: theta' = theta + lr F^-1 grad L(z^, c) / N (natural-gradient *ascent*, EWC-style),
     the gradient averaged over many (t, eps) draws; `steps` > 1 repeats the step.
  4. Influence of z_i = L(z_i; theta') - L(z_i; theta), with the *same* draws before and after.
Only the per-query loss pass over the training set is repeated; step 2's losses are reused
(the official code recomputes both per query).
Defaults for the world model: cross-attention K/V, 1 step, 256 query draws, 10 timesteps per
training image, damping 1e-3 of the mean Fisher, loss passes in bf16 autocast.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from .base import register
from .task import draws, linear_modules, per_sample_grads, per_sample_loss, spaced_timesteps


@dataclass
class AbUConfig:
    """Settings of attribution by unlearning."""

    params: str = "xattn-kv"
    """Linear-layer parameter group that is unlearned."""
    lr: float = 0.01
    """Step size of the Fisher-preconditioned ascent (scaled by 1/N as in the paper)."""
    steps: int = 1
    """Unlearning steps."""
    query_draws: int = 256
    """(t, eps) draws the query gradient is averaged over."""
    eval_timesteps: int = 10
    """Evenly spaced timesteps at which each training loss is evaluated (same noise before/after)."""
    fisher_draws: int = 4
    """(t, eps) draws per training image for the Fisher."""
    damping: float = 1e-3
    """Added to F, relative to its mean."""
    batch_size: int = 256
    """Training images per batch."""
    precision: str = "bf16"
    """Arithmetic of the training-loss passes: 'bf16' (autocast; ~1.6x faster on CPU, same ranking:
    correlation 0.99994 with fp32, identical top-50, see BENCHMARKS.md) or 'fp32'."""
    seed: int = 0
    """Seed of every draw."""

    def __post_init__(self):
        if self.lr <= 0 or self.steps < 1 or self.query_draws < 1 or self.eval_timesteps < 1:
            raise DatarightsError("abu needs lr > 0 and steps, query_draws, eval_timesteps >= 1")
        if self.precision not in ("bf16", "fp32"):
            raise DatarightsError(f"abu precision must be bf16 or fp32, got {self.precision!r}")


def _bar(total, desc, progress):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not progress, dynamic_ncols=True)


@torch.no_grad()
def training_losses(model, train, cfg: AbUConfig, progress: bool = False) -> torch.Tensor:
    """L(z_i; theta) for every training image under its fixed draws: [N]."""
    ts = spaced_timesteps(cfg.eval_timesteps, model.num_train_timesteps)
    out = []
    bar = _bar(len(train), "abu losses", progress)
    bs = max(1, cfg.batch_size // cfg.eval_timesteps * 4)
    for s in range(0, len(train), bs):
        idx = torch.arange(s, min(s + bs, len(train)))
        d = draws(len(idx), cfg.eval_timesteps, tuple(train.x0.shape[1:]), model.num_train_timesteps, cfg.seed,
                  offset=s, timesteps=ts)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out.append(per_sample_loss(model, train.x0[idx], train.cond(idx), d).float())
        bar.update(len(idx))
    bar.close()
    return torch.cat(out)


def prepare(model, train, cfg: AbUConfig, progress=True) -> dict:
    mods = linear_modules(model, cfg.params)
    if not mods:
        raise DatarightsError(f"abu needs a group of linear layers; {cfg.params!r} has none")
    fisher = None
    bar = _bar(len(train), "abu fisher", progress)
    for s in range(0, len(train), cfg.batch_size):
        idx = torch.arange(s, min(s + cfg.batch_size, len(train)))
        d = draws(len(idx), cfg.fisher_draws, tuple(train.x0.shape[1:]), model.num_train_timesteps, cfg.seed + 1, offset=s)
        g = per_sample_grads(model, mods, train.x0[idx], train.cond(idx), d)           # [B, P]
        sq = (g.double() ** 2).sum(0)
        fisher = sq if fisher is None else fisher + sq
        bar.update(len(idx))
    bar.close()
    return {"fisher": (fisher / len(train)).float(), "losses": training_losses(model, train, cfg, progress)}


def unlearned(model, train, state, query, cfg: AbUConfig):
    """A copy of the model with the query unlearned (Fisher-preconditioned ascent)."""
    import copy

    work = copy.copy(model)
    work.unet = copy.deepcopy(model.unet)
    mods = linear_modules(work, cfg.params)
    fisher = state["fisher"]
    precond = 1.0 / (fisher + cfg.damping * fisher.mean())
    x0 = work.to_model_space(query.image[None].float())
    cond = work.encode_prompt([query.prompt])
    n = len(train)
    for step in range(cfg.steps):
        d = draws(1, cfg.query_draws, tuple(x0.shape[1:]), work.num_train_timesteps, cfg.seed + 2 + step)
        g = per_sample_grads(work, mods, x0, cond, d)[0]                                 # [P]
        delta = cfg.lr * precond * g / n
        with torch.no_grad():
            off = 0
            for m in mods.values():
                k = m.weight.numel()
                m.weight.add_(delta[off:off + k].view_as(m.weight))
                off += k
    return work


def score(model, train, state, query, cfg: AbUConfig) -> torch.Tensor:
    work = unlearned(model, train, state, query, cfg)
    return training_losses(work, train, cfg) - state["losses"]


register("abu", AbUConfig, prepare, score)
