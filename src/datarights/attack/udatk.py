"""UnlearnDiffAtk-style attack (Zhang et al., ECCV 2024): the erased model is its own classifier.

1. Render images of the target concept (world ground truth, independent of any model).
2. Optimise n token embeddings prepended to the target prompt so that the *edited* model's
   denoising loss on those images is low (random t and noise each step), as a hard prompt: the
   forward pass uses the nearest real whole-word tokens, the gradient moves the continuous
   embeddings (PEZ-style straight-through projection, as UnlearnDiffAtk's discrete search).
3. The attacker is black-box about which prompt to use: the original prompt and the hard prompts
   of `restarts` optimisations each generate `probes` images, and the budget is spent, with fresh
   noise, on the one the judge most often reads as the target (on an unedited model that is
   usually the original prompt). ASR = share of the budget's images that show the target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import T2IModel
from .base import (AttackResult, best_of, fit_embeddings, judge_attempts, nearest_tokens, projected, register,
                   states_with_soft_tokens, target_images, timed)


@dataclass
class UDAtkConfig:
    """Settings of the soft-prompt attack."""

    n_tokens: int = 5
    """Tokens prepended to the target prompt."""
    steps: int = 60
    """Optimisation steps."""
    lr: float = 0.1
    """Adam learning rate on the continuous embeddings behind the hard prompt."""
    n_images: int = 16
    """Rendered images of the target."""
    batch_size: int = 8
    """Noised images per step."""
    restarts: int = 2
    """Independent optimisations (seeds), each giving one hard prompt."""
    probes: int = 8
    """Images per candidate prompt to choose the prompt with."""
    budget: int = 16
    """Generated images (attempts) with the chosen prompt."""
    seed: int = 0
    """Seed of images, noise and generation."""

    def __post_init__(self):
        if min(self.n_tokens, self.steps, self.n_images, self.batch_size, self.budget, self.restarts, self.probes) < 1:
            raise DatarightsError("n_tokens, steps, n_images, batch_size, restarts, probes and budget must be at least 1")


def optimise_soft_prompt(model: T2IModel, prompt: str, images: torch.Tensor, cfg: UDAtkConfig) -> torch.Tensor:
    """Soft token embeddings [n_tokens, D] that lower the model's denoising loss on `images` under `prompt`."""
    emb = model.token_embedding().weight
    g = runtime.generator(cfg.seed)
    low = min(1000, emb.shape[0] // 2)  # past the special and most frequent tokens
    start = torch.randint(low, emb.shape[0], (cfg.n_tokens,), generator=g, device="cpu")
    soft = torch.nn.Parameter(emb[start.to(emb.device)].detach().clone())
    return fit_embeddings(model, images, soft, lambda step, b: states_with_soft_tokens(model, prompt, projected(model, soft)),
                          cfg.steps, cfg.lr, cfg.batch_size, g)


@register("udatk", UDAtkConfig)
@timed
def udatk(model: T2IModel, target: str, cfg: UDAtkConfig, judge=None) -> AttackResult:
    from ..erase.base import prompts_showing
    from ..world import vocabulary_of

    vocab = vocabulary_of(model)
    images, _ = target_images(target, cfg.n_images, cfg.seed, vocab)
    prompt = prompts_showing(target, 1, cfg.seed, split="eval", vocab=vocab)[0]  # a held-out prompt (erasure trained on the other half)
    hard = [prompt]
    for r in range(cfg.restarts):
        soft = optimise_soft_prompt(model, prompt, images, dataclasses.replace(cfg, seed=cfg.seed + 1000 * r))
        hard.append(f"{model.tokenizer.decode(nearest_tokens(model, soft)).strip()} {prompt}")
    best, _ = best_of(model, [lambda n, s, p=p: model.sample([p] * n, seed=s) for p in hard], target, cfg.probes,
                      cfg.seed, judge)
    out = model.sample([hard[best]] * cfg.budget, seed=cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("udatk", target, sum(ok) / len(ok), len(ok), 0.0, [hard[best]] * len(ok), out, ok)
