"""Concept recovery by textual inversion (Pham et al., "Circumventing Concept Erasure", 2023).

Learn one new token embedding v* on the *edited* model from rendered images of the target
(prompts "a picture of <v*>" and friends), then generate with it: if the weights still hold the
concept, a new word finds it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .base import AttackResult, fit_embeddings, judge_attempts, register, states_with_soft_tokens, target_images, timed

TEMPLATES = ["", "a picture of", "an image of", "a photo of"]  # the new token is appended


@dataclass
class TIConfig:
    """Settings of textual inversion."""

    steps: int = 80
    """Optimisation steps."""
    lr: float = 0.05
    """Adam learning rate on the new embedding."""
    n_images: int = 16
    """Rendered images of the target."""
    batch_size: int = 8
    """Noised images per step."""
    budget: int = 16
    """Generated images (attempts)."""
    seed: int = 0
    """Seed."""

    def __post_init__(self):
        if min(self.steps, self.n_images, self.batch_size, self.budget) < 1:
            raise DatarightsError("steps, n_images, batch_size and budget must be at least 1")


@register("ti", TIConfig)
@timed
def textual_inversion(model: T2IModel, target: str, cfg: TIConfig, judge=None) -> AttackResult:
    images, _ = target_images(target, cfg.n_images, cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    start = model.tokenizer("picture", add_special_tokens=False).input_ids[0]
    v = torch.nn.Parameter(model.token_embedding().weight[start].detach().clone()[None])  # [1, D]
    v = fit_embeddings(model, images, v,
                       lambda step: states_with_soft_tokens(model, TEMPLATES[step % len(TEMPLATES)], v, position="append"),
                       cfg.steps, cfg.lr, cfg.batch_size, g)
    with torch.no_grad():
        cond = states_with_soft_tokens(model, "a picture of", v, position="append")
    out = model.sample_states(cond[None].expand(cfg.budget, -1, -1), seed=cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("ti", target, sum(ok) / len(ok), len(ok), 0.0, ["a picture of <v*>"] * len(ok), out, ok)
