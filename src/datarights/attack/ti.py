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
from .base import AttackResult, judge_attempts, register, states_with_soft_tokens, target_images, timed

TEMPLATES = ["{}", "a picture of {}", "an image of {}", "a photo of {}"]


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
    images, _ = target_images(model, target, cfg.n_images, cfg.seed)
    x0 = model.to_model_space(images)
    g = torch.Generator().manual_seed(cfg.seed)
    emb = model.token_embedding().weight
    start = model.tokenizer("picture", add_special_tokens=False).input_ids[0]
    v = torch.nn.Parameter(emb[start].detach().clone()[None])                       # [1, D]
    opt = torch.optim.Adam([v], lr=cfg.lr)
    for step in range(cfg.steps):
        b = torch.randint(0, len(x0), (cfg.batch_size,), generator=g)
        t = torch.randint(0, model.num_train_timesteps, (cfg.batch_size,), generator=g)
        noise = torch.randn(x0[b].shape, generator=g)
        tmpl = TEMPLATES[step % len(TEMPLATES)]
        cond = states_with_soft_tokens(model, tmpl.format("").strip() or "", v, position="append")
        cond = cond[None].expand(cfg.batch_size, -1, -1)
        loss = torch.nn.functional.mse_loss(model.predict_noise(model.add_noise(x0[b], noise, t), t, cond), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        cond = states_with_soft_tokens(model, "a picture of", v.detach(), position="append")
        uncond = model.encode_prompt([""])[0]
        out = _sample_with_states(model, cond, uncond, cfg.budget, cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("ti", target, sum(ok) / len(ok), len(ok), 0.0, ["a picture of <v*>"] * len(ok), out, ok)


def _sample_with_states(model: T2IModel, cond: torch.Tensor, uncond: torch.Tensor, n: int, seed: int,
                        steps: int = 25, guidance: float | None = None) -> torch.Tensor:
    """DDIM + guidance from ready text states (a learned embedding has no prompt string)."""
    guidance = model.default_guidance if guidance is None else guidance
    x = model.initial_noise(n, seed)
    sched = model.ddim(steps)
    ctx = torch.cat([uncond[None].expand(n, -1, -1), cond[None].expand(n, -1, -1)])
    for t in sched.timesteps:
        eu, ec = model.predict_noise(torch.cat([x, x]), t, ctx).chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    return model.from_model_space(x)
