"""Concept recovery by textual inversion (Pham et al., "Circumventing Concept Erasure", 2023).

Learn one new token embedding v* on the *edited* model from rendered images of the target, each
with its own caption in which the target's words are replaced by v* ("a red <v*>", "a tree in <v*>
style"), then generate from the target's prompts with v* in place of its words: if the weights
still hold the concept, a new word finds it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import T2IModel
from .base import (PLACEHOLDER, AttackResult, fit_embeddings, judge_attempts, register, states_with_placeholder,
                   target_images, timed)


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
    from ..erase.base import prompts_showing
    from ..world import vocabulary_of

    vocab = vocabulary_of(model)
    images, texts = target_images(target, cfg.n_images, cfg.seed, vocab)
    captions = [_with_placeholder(t, target) for t in texts]
    g = runtime.generator(cfg.seed)
    start = model.tokenizer("picture", add_special_tokens=False).input_ids[0]
    v = torch.nn.Parameter(model.token_embedding().weight[start].detach().clone())          # [D]
    v = fit_embeddings(model, images, v, lambda step, b: states_with_placeholder(model, [captions[i] for i in b], v),
                       cfg.steps, cfg.lr, cfg.batch_size, g)
    prompts = [_with_placeholder(p, target) for p in prompts_showing(target, cfg.budget, cfg.seed + 1, vocab=vocab)][:cfg.budget]
    prompts = [prompts[i % len(prompts)] for i in range(cfg.budget)]
    with torch.no_grad():
        cond = states_with_placeholder(model, prompts, v)
    out = model.sample_states(cond, seed=cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("ti", target, sum(ok) / len(ok), len(ok), 0.0, [p.replace(PLACEHOLDER, "<v*>") for p in prompts],
                        out, ok)


def _with_placeholder(text: str, target: str) -> str:
    """The caption with the target's words replaced by the placeholder (appended where it does not
    name the target literally, e.g. 'a face and a tree' for the composition 'face and tree')."""
    i = text.lower().find(target.lower())
    return f"{text} {PLACEHOLDER}" if i < 0 else text[:i] + PLACEHOLDER + text[i + len(target):]
