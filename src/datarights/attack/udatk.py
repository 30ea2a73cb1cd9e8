"""UnlearnDiffAtk-style attack (Zhang et al., ECCV 2024): the erased model is its own classifier.

1. Render images of the target concept (world ground truth, independent of any model).
2. Optimise n soft token embeddings prepended to the target prompt so that the *edited* model's
   denoising loss on those images is low (random t and noise each step).
3. Project each soft token to its nearest real token, generate with the hard prompt, and let the
   judge decide whether the target is back. ASR = share of generated images that show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .base import (AttackResult, fit_embeddings, judge_attempts, nearest_tokens, register, states_with_soft_tokens,
                   target_images, timed)


@dataclass
class UDAtkConfig:
    """Settings of the soft-prompt attack."""

    n_tokens: int = 3
    """Soft tokens prepended to the target prompt."""
    steps: int = 60
    """Optimisation steps."""
    lr: float = 0.05
    """Adam learning rate on the soft embeddings."""
    n_images: int = 16
    """Rendered images of the target."""
    batch_size: int = 8
    """Noised images per step."""
    budget: int = 16
    """Generated images (attempts) with the projected prompt."""
    seed: int = 0
    """Seed of images, noise and generation."""

    def __post_init__(self):
        if min(self.n_tokens, self.steps, self.n_images, self.batch_size, self.budget) < 1:
            raise DatarightsError("n_tokens, steps, n_images, batch_size and budget must be at least 1")


def optimise_soft_prompt(model: T2IModel, prompt: str, images: torch.Tensor, cfg: UDAtkConfig) -> torch.Tensor:
    """Soft token embeddings [n_tokens, D] that lower the model's denoising loss on `images` under `prompt`."""
    emb = model.token_embedding().weight
    g = torch.Generator().manual_seed(cfg.seed)
    soft = torch.nn.Parameter(emb[torch.randint(1000, emb.shape[0], (cfg.n_tokens,), generator=g)].detach().clone())
    return fit_embeddings(model, images, soft, lambda step: states_with_soft_tokens(model, prompt, soft),
                          cfg.steps, cfg.lr, cfg.batch_size, g)


@register("udatk", UDAtkConfig)
@timed
def udatk(model: T2IModel, target: str, cfg: UDAtkConfig, judge=None) -> AttackResult:
    images, texts = target_images(target, cfg.n_images, cfg.seed)
    prompt = texts[0]
    soft = optimise_soft_prompt(model, prompt, images, cfg)
    words = model.tokenizer.decode(nearest_tokens(model, soft)).strip()
    hard = f"{words} {prompt}"
    out = model.sample([hard] * cfg.budget, seed=cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("udatk", target, sum(ok) / len(ok), len(ok), 0.0, [hard] * len(ok), out, ok)
