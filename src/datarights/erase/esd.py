"""Erased Stable Diffusion (Gandikota et al., ICCV 2023).

Negative guidance as a training target, from a frozen copy theta* of the base:
    eps_target(x_t, c) = eps*(x_t, empty) - eta [eps*(x_t, c) - eps*(x_t, empty)]
1. Roll the frozen model out under c (DDIM, with guidance) from noise to a random step t.
2. Regress the edited model's eps(x_t, c, t) onto eps_target.
ESD-x trains cross-attention (`--params xattn`), ESD-u everything else (`--params unet-noxattn`).
The anchor is not used by the objective (ESD erases towards 'nothing'); it is recorded for the audit.
Our choices for the world model: 150 steps at lr 1e-4, rollouts of 20 DDIM steps, batch 8
(lr 1e-3 erased as well but cut others_preserved of 'grumpy face' to 0.24; 1e-4 gave 0.67).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .robust import Adversary, RobustOptions
from .base import (Edit, base_ref, changed_tensors, concept_prompts, config_dict, encode_cached, model_hash,
                   optimise, register, trainable_copy)


@dataclass
class ESDConfig(RobustOptions):
    """Settings of ESD."""

    params: str = "xattn"
    """'xattn' (ESD-x, specific concepts such as styles) or 'unet-noxattn' (ESD-u, global concepts)."""
    steps: int = 150
    """Optimisation steps (each with a fresh partial rollout)."""
    lr: float = 1e-4
    """Adam learning rate."""
    eta: float = 1.0
    """Negative-guidance strength."""
    batch_size: int = 8
    """Rollouts per step."""
    rollout_steps: int = 20
    """DDIM steps of a full rollout; each step stops at a random one of them."""
    guidance: float | None = None
    """Guidance of the frozen model's rollout (None: the model's default)."""
    n_prompts: int = 48
    """Target prompts built from templates."""
    seed: int = 0
    """Seed of rollouts and noise."""

    def __post_init__(self):
        self.check_robust()
        if self.params not in ("xattn", "xattn-kv", "unet-noxattn", "full"):
            raise DatarightsError(f"esd trains 'xattn' (ESD-x) or 'unet-noxattn' (ESD-u), got {self.params!r}")
        if self.steps < 1 or self.batch_size < 1 or self.rollout_steps < 1:
            raise DatarightsError("steps, batch_size and rollout_steps must be at least 1")


@register("esd", ESDConfig)
def esd(model: T2IModel, targets: list[str], anchors: list[str], cfg: ESDConfig, progress: bool = True) -> Edit:
    t0 = time.time()
    prompts = [p for t, a in zip(targets, anchors) for p in concept_prompts(t, a, cfg.n_prompts, cfg.seed).target]
    work, params = trainable_copy(model, cfg.params)
    enc = encode_cached(model, prompts, False)
    empty = encode_cached(model, [""], False)([0])
    adversary = Adversary(model, targets, cfg.robust_every, cfg.robust_attack_steps, cfg.seed) if cfg.robust else None

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(prompts), (cfg.batch_size,), generator=g)
        cond = enc(idx)
        unc = empty.expand_as(cond)
        sched = model.ddim(cfg.rollout_steps)
        w = model.default_guidance if cfg.guidance is None else cfg.guidance
        stop = int(torch.randint(0, cfg.rollout_steps, (1,), generator=g))
        noise = torch.randn((cfg.batch_size, *model.latent_shape), generator=g)
        with torch.no_grad():  # partial rollout of the frozen model under c, stopped at a random step
            x = model.sample_states(cond, steps=cfg.rollout_steps, guidance=w, noise=noise, stop_at=stop)
            t = sched.timesteps[stop]
            e = model.predict_noise(torch.cat([x, x]), t, torch.cat([unc, cond]))
            eu, ec = e.chunk(2)
            goal = eu - cfg.eta * (ec - eu)
        loss = torch.nn.functional.mse_loss(work.predict_noise(x, t, cond), goal)
        if adversary is not None:  # the adversarial prompt must lead to the same negatively guided target
            adv = adversary.states(work, step)
            c_adv = adv[torch.randint(0, len(adv), (cfg.batch_size,), generator=g)]
            loss = loss + torch.nn.functional.mse_loss(work.predict_noise(x, t, c_adv), goal)
            loss = loss + cfg.retain * adversary.retain_loss(work, model, x, t.expand(len(x)), g)
        return loss

    optimise(params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[esd]", progress)
    return Edit(changed_tensors(params), base_ref(model), model_hash(model), "esd", tuple(targets), tuple(anchors),
                config_dict(cfg), time.time() - t0)
