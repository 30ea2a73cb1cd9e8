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
Defaults (AbUConfig.DEFAULTS): the world model: cross-attention K/V, 1 step at lr 0.01, 256 query
draws, 10 timesteps per training image, damping 100 x the mean Fisher, loss passes in bf16
autocast, 256 images per batch. The damping was chosen at owner level on World 2 (`python
benchmarks/attribute.py abu-variants`: 24 tune queries, never the reported ones): the official code
divides by F alone, and with F (+ 1e-3 mean F) abu ranked the true owner no better than the
caption-only baseline (MRR 0.16 vs 0.27): F^-1 lets the parameters that barely move on any training
image dominate the step. Damping 100 (MRR 0.53) sits between that and plain gradient ascent
(1e4: 0.24). Stable Diffusion, the paper's COCO setting (PeterWang512/
AttributeByUnlearning): K/V, 1 step at lr 0.01, the query gradient averaged over 50,000 draws,
20 timesteps per training loss; batches sized to the device's free memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..registry import ModelDefaults, check_fields
from ..runtime import draws, linear_modules, per_sample_grads, per_sample_loss, spaced_timesteps
from .base import register
from .store import set_batches


@dataclass
class AbUConfig(ModelDefaults):
    """Settings of attribution by unlearning (None: the model's default, see DEFAULTS)."""

    params: str = "xattn-kv"
    """Linear-layer parameter group that is unlearned."""
    lr: float = 0.01
    """Step size of the Fisher-preconditioned ascent (scaled by 1/N as in the paper)."""
    steps: int = 1
    """Unlearning steps."""
    query_draws: int | None = None
    """(t, eps) draws the query gradient is averaged over (world 256; SD 50,000)."""
    eval_timesteps: int | None = None
    """Evenly spaced timesteps at which each training loss is evaluated, same noise before/after (world 10; SD 20)."""
    fisher_draws: int = 4
    """(t, eps) draws per training image for the Fisher."""
    damping: float = 100.0
    """Added to F, relative to its mean (1e-3 ~ the paper's F^-1; large values ~ plain gradient ascent)."""
    batch_size: int | None = None
    """Training images per gradient batch (world 256); None on SD: what fits in the device's memory.
    Changes speed and memory only, never a score."""
    precision: str = "bf16"
    """Arithmetic of the training-loss passes: 'bf16' (autocast; ~1.6x faster on CPU, same ranking:
    correlation 0.99994 with fp32, identical top-50, see BENCHMARKS.md) or 'fp32'."""
    seed: int = 0
    """Seed of every draw."""

    DEFAULTS: ClassVar[dict] = {"world": dict(query_draws=256, eval_timesteps=10, batch_size=256),
                                "sd": dict(query_draws=50_000, eval_timesteps=20)}
    QUERY_ONLY: ClassVar[tuple] = ("lr", "steps", "query_draws", "damping")
    """The unlearning step's settings: they change a query's scores, never the Fisher or the losses
    before unlearning, so one cached state serves them all."""

    def __post_init__(self):
        check_fields(self, at_least_one=("steps", "query_draws", "eval_timesteps", "fisher_draws", "batch_size"),
                     positive=("lr",))
        if self.precision not in ("bf16", "fp32"):
            raise DatarightsError(f"abu precision must be bf16 or fp32, got {self.precision!r}")


def images_per_batch(model, cfg: AbUConfig, rows_per_image: int, backward: bool) -> int:
    if cfg.batch_size is not None:
        return cfg.batch_size
    return max(1, runtime.rows_that_fit(model, backward=backward) // rows_per_image)


def eval_draws(model, train, cfg: AbUConfig, rows: torch.Tensor):
    """The fixed draws of training rows (evenly spaced timesteps; row i's noise seeded by its index i)."""
    return draws(len(rows), cfg.eval_timesteps, tuple(train.x0.shape[1:]), model.num_train_timesteps, cfg.seed,
                 model.device, timesteps=spaced_timesteps(cfg.eval_timesteps, model.num_train_timesteps),
                 indices=rows.tolist())


@torch.no_grad()
def training_losses(model, train, cfg: AbUConfig, progress=False, rows: torch.Tensor | None = None) -> torch.Tensor:
    """L(z_i; theta) for every training image (or the given rows) under its fixed draws: [N] (or [len(rows)])."""
    rows = torch.arange(len(train), device="cpu") if rows is None else rows.cpu()
    out = []
    bar = runtime.progress_bar(progress, len(rows), "abu losses")
    bs = max(1, cfg.batch_size // cfg.eval_timesteps * 4) if cfg.batch_size else images_per_batch(
        model, cfg, cfg.eval_timesteps, backward=False)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else model.precision
    for s in range(0, len(rows), bs):
        part = rows[s:s + bs]
        idx = part.to(model.device)
        d = eval_draws(model, train, cfg, part)
        with runtime.autocast(model.device, dtype):
            out.append(per_sample_loss(model, train.x0[idx], train.cond(idx), d).float())
        bar.update(len(idx))
    bar.close()
    return torch.cat(out)


def modules(model, cfg: AbUConfig) -> dict:
    mods = linear_modules(model, cfg.params)
    if not mods:
        raise DatarightsError(f"abu needs a group of linear layers; {cfg.params!r} has none")
    return mods


def fisher_diagonal(model, train, cfg: AbUConfig, progress=True, seeds: list[int] | None = None) -> torch.Tensor:
    """F: the mean squared per-sample gradient over the training set (cfg.fisher_draws draws each): [P], on the CPU.

    Row i's draws come from stream (seed + 1, seeds[i]) (default: its row number); `train` may be a
    store's streamed FolderRows (`store.set_batches`)."""
    mods = modules(model, cfg)
    fisher = None
    bar = runtime.progress_bar(progress, len(train), "abu fisher")
    for t, idx, part in set_batches(model, train, images_per_batch(model, cfg, cfg.fisher_draws, backward=True), seeds):
        x0 = t.x0[idx]
        d = draws(len(idx), cfg.fisher_draws, tuple(x0.shape[1:]), model.num_train_timesteps, cfg.seed + 1,
                  model.device, indices=part)
        g = per_sample_grads(model, mods, x0, t.cond(idx), d)                             # [B, P]
        sq = (g.double() ** 2).sum(0)
        fisher = sq if fisher is None else fisher + sq
        bar.update(len(idx))
    bar.close()
    return (fisher / len(train)).float().cpu()


def prepare(model, train, cfg: AbUConfig, progress=True) -> dict:
    return {"fisher": fisher_diagonal(model, train, cfg, progress),
            "losses": training_losses(model, train, cfg, progress).cpu()}


def preconditioner(fisher: torch.Tensor, cfg: AbUConfig) -> torch.Tensor:
    """(F + damping * mean(F))^-1, elementwise."""
    return 1.0 / (fisher + cfg.damping * fisher.mean())


def query_gradient(model, mods, x0: torch.Tensor, cond: torch.Tensor, n_draws: int, seed: int,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """The query's loss gradient averaged over n_draws (t, eps) draws, in chunks that fit the device: [P].
    `weight`: the loss of a region only (Query.weight)."""
    d = draws(1, n_draws, tuple(x0.shape[1:]), model.num_train_timesteps, seed, "cpu")
    chunk = max(1, runtime.rows_that_fit(model, backward=True))
    total = None
    for s in range(0, n_draws, chunk):
        part = runtime.Draws(d.t[:, s:s + chunk].to(model.device), d.noise[:, s:s + chunk].to(model.device))
        g = per_sample_grads(model, mods, x0, cond, part, weight=weight)[0] * part.t.shape[1]
        total = g if total is None else total + g
    return total / n_draws


def query_inputs(model, query) -> tuple[torch.Tensor, torch.Tensor]:
    """The query image in model space [1, C, H, W] and its prompt's text states."""
    return model.to_model_space(query.image[None].float()), model.encode_prompt([query.prompt])


def unlearned(model, train, state, query, cfg: AbUConfig, first_gradient: torch.Tensor | None = None):
    """A copy of the model with the query unlearned (Fisher-preconditioned ascent). `first_gradient`:
    the first step's query gradient, when the caller has it already (the same draws)."""
    import copy

    work = copy.copy(model)
    work.unet = copy.deepcopy(model.unet)
    mods = modules(work, cfg)
    precond = preconditioner(state["fisher"].to(work.device), cfg)
    x0, cond = query_inputs(work, query)
    n = len(train)
    for step in range(cfg.steps):
        g = first_gradient.to(work.device) if step == 0 and first_gradient is not None else \
            query_gradient(work, mods, x0, cond, cfg.query_draws, cfg.seed + 2 + step, query.weight(work))  # [P]
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
    return training_losses(work, train, cfg).cpu() - state["losses"].cpu()


register("abu", AbUConfig, prepare, score, local=True)
