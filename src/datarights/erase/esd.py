"""Erased Stable Diffusion (Gandikota et al., ICCV 2023).

Negative guidance as a training target, from a frozen copy theta* of the base:
    eps_target(x_t, c) = eps*(x_t, empty) - eta [eps*(x_t, c) - eps*(x_t, empty)]
1. Roll the frozen model out under c (DDIM, with guidance) from noise to a random step t.
2. Regress the edited model's eps(x_t, c, t) onto eps_target.
ESD-x trains cross-attention (`--params xattn`), ESD-u everything else (`--params unet-noxattn`).
The anchor is not used by the objective (ESD erases towards 'nothing'); it is recorded for the audit.
Defaults (ESDConfig.DEFAULTS). World model, tuned on the audit of 'grumpy face': 150 steps at lr
1e-4, rollouts of 20 DDIM steps, batch 8 (lr 1e-3 erased as well but cut others_preserved to 0.24).
Stable Diffusion, the official settings (rohitgandikota/erasing, train-scripts/train-esd.py): ESD-x,
1000 iterations at lr 1e-5, batch 1, negative guidance eta 1.0, rollouts of 50 DDIM steps with
guidance 3 (start_guidance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..models import Edit, T2IModel
from ..registry import ModelDefaults, check_fields
from ..world import vocabulary_of
from .base import TrainOptions, concept_prompts, encode_cached, finish_edit, partial_rollout, register
from .robust import ROBUST_DEFAULTS, Adversary, RobustOptions


@dataclass
class ESDConfig(RobustOptions, TrainOptions, ModelDefaults):
    """Settings of ESD (None: the model's default, see DEFAULTS and the module docstring)."""

    steps: int | None = None
    """Optimisation steps, each with a fresh partial rollout (world 150; SD 1000)."""
    lr: float | None = None
    """Adam learning rate (world 1e-4; SD 1e-5)."""
    eta: float = 1.0
    """Negative-guidance strength."""
    batch_size: int | None = None
    """Rollouts per step (world 8; SD 1)."""
    rollout_steps: int | None = None
    """DDIM steps of a full rollout; each step stops at a random one of them (world 20; SD 50)."""
    guidance: float | None = None
    """Guidance of the frozen model's rollout (world: the model's, 1.0; SD 3.0)."""
    n_prompts: int = 48
    """Target prompts built from templates."""
    seed: int = 0
    """Seed of rollouts and noise."""

    DEFAULTS: ClassVar[dict] = {
        "world": dict(**ROBUST_DEFAULTS["world"], params="xattn", steps=150, lr=1e-4, batch_size=8, rollout_steps=20),
        "sd": dict(**ROBUST_DEFAULTS["sd"], params="xattn", steps=1000, lr=1e-5, batch_size=1, rollout_steps=50, guidance=3.0),
    }

    def __post_init__(self):
        self.check_robust()
        self.check_params(("xattn", "xattn-kv", "unet-noxattn", "full", *runtime.LORA_TARGETS), "esd")
        check_fields(self, at_least_one=("steps", "batch_size", "rollout_steps", "n_prompts"), positive=("lr",))


@register("esd", ESDConfig)
def esd(model: T2IModel, targets: list[str], anchors: list[str], cfg: ESDConfig, progress=True) -> Edit:
    t0 = time.time()
    cfg = cfg.for_model(model)
    prompts = [p for t, a in zip(targets, anchors) for p in concept_prompts(t, a, cfg.n_prompts, cfg.seed, vocab=vocabulary_of(model)).target]
    work, params = runtime.trainable_copy(model, cfg.params, cfg.lora_rank)
    enc = encode_cached(model, prompts, False)
    empty = encode_cached(model, [""], False)(torch.zeros(1, dtype=torch.long, device=model.device))
    adversary = Adversary(model, targets, cfg.robust_every, cfg.robust_attack_steps, cfg.seed) if cfg.robust else None
    micro, accumulate = runtime.micro_batches(model, cfg.batch_size, passes=1 + (cfg.robust or 0))
    w = model.default_guidance if cfg.guidance is None else cfg.guidance

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        idx = runtime.randint(len(prompts), (micro,), g, model.device)
        cond = enc(idx)
        unc = empty.expand_as(cond)
        x, t = partial_rollout(model, cond, cfg.rollout_steps, w, g)  # of the frozen model under c
        with torch.no_grad():
            e = model.predict_noise(torch.cat([x, x]), t, torch.cat([unc, cond]))
            eu, ec = e.chunk(2)
            goal = eu - cfg.eta * (ec - eu)
        loss = torch.nn.functional.mse_loss(work.predict_noise(x, t, cond), goal)
        if adversary is not None:  # the adversarial prompt must lead to the same negatively guided target
            adv = adversary.states(work, step // accumulate)
            c_adv = adv[runtime.randint(len(adv), (micro,), g, model.device)]
            loss = loss + torch.nn.functional.mse_loss(work.predict_noise(x, t, c_adv), goal)
            loss = loss + cfg.retain * adversary.retain_loss(work, model, x, t.expand(len(x)), g)
        return loss

    runtime.optimise(work, params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[esd]", progress, accumulate=accumulate)
    return finish_edit(model, params, "esd", targets, anchors, cfg, t0)
