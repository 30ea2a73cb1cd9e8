"""Concept Ablation (Kumari et al., ICCV 2023).

Make p(x | c_target) match p(x | c_anchor): the KL between the two trajectories reduces to an L2
between noise predictions.

1. Generate anchor images once with the frozen base model from the anchor prompts.
2. Noise them with the forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
3. model-based (default, eq. 4):  L = || eps_theta(x_t, c_target, t) - sg(eps_theta(x_t, c_anchor, t)) ||^2
   noise-based:                   L = || eps_theta(x_t, c_target, t) - eps ||^2
   optional prior preservation:   + || eps_theta(x_t, c_anchor, t) - eps ||^2 on the same anchor images.
4. Update only the chosen parameter group (cross-attention K/V by default).

Our choices for a 16x16 world model on a CPU: 64 anchor images, batch 16, 100 steps at lr 3e-4
(the paper uses ~1000 images, batch 8, lr 2e-6 for SD's 860M-parameter UNet; a tiny model needs a
larger step). Tuned on the audit: lr 1e-3 erased as well but cut nearby_preserved of 'grumpy face'
to 0.75; lr 3e-4 kept it at 0.96 (BENCHMARKS.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .robust import Adversary, RobustOptions
from .base import (Edit, PromptSet, base_ref, changed_tensors, concept_prompts, config_dict, encode_cached,
                   generate_model_space, model_hash, optimise, register, trainable_copy)


@dataclass
class CAConfig(RobustOptions):
    """Settings of Concept Ablation."""

    loss: str = "model"
    """'model' (match the model's own anchor prediction, stop-gradient) or 'noise' (anchor images captioned with the target)."""
    params: str = "xattn-kv"
    """Parameter group: xattn-kv (default), xattn, embedding, full."""
    steps: int = 100
    """Optimisation steps."""
    lr: float = 3e-4
    """Adam learning rate."""
    batch_size: int = 16
    """Noised anchor images per step."""
    n_anchor_images: int = 64
    """Anchor images generated once by the base model."""
    prior: float = 1.0
    """Weight of the prior-preservation loss on anchor prompts (0 disables it)."""
    n_prompts: int = 48
    """Target/anchor prompt pairs built from templates."""
    sample_steps: int = 20
    """DDIM steps used to generate the anchor images."""
    seed: int = 0
    """Seed of anchor images, timesteps and noise."""

    def __post_init__(self):
        self.check_robust()
        if self.loss not in ("model", "noise"):
            raise DatarightsError(f"--loss must be 'model' or 'noise', got {self.loss!r}")
        if self.params not in ("xattn-kv", "xattn", "embedding", "full", "attn"):
            raise DatarightsError(f"ca cannot train parameter group {self.params!r}")
        if self.steps < 1 or self.batch_size < 1 or self.n_anchor_images < 1:
            raise DatarightsError("steps, batch_size and n_anchor_images must be at least 1")
        if not self.lr > 0 or self.prior < 0:
            raise DatarightsError("lr must be positive and prior non-negative")


@register("ca", CAConfig)
def concept_ablation(model: T2IModel, targets: list[str], anchors: list[str], cfg: CAConfig,
                     progress: bool = True) -> Edit:
    """Erase each target towards its anchor (several targets share one optimisation)."""
    t0 = time.time()
    sets = [concept_prompts(t, a, cfg.n_prompts, cfg.seed) for t, a in zip(targets, anchors)]
    tgt = [p for s in sets for p in s.target]
    anc = [p for s in sets for p in s.anchor]
    x0, _ = generate_model_space(model, anc, cfg.n_anchor_images, cfg.seed, cfg.sample_steps)
    # anchor image i was generated from anc[i % len(anc)]: pair it with that prompt and its target twin
    pair = torch.arange(cfg.n_anchor_images) % len(anc)
    work, params = trainable_copy(model, cfg.params)
    with_grad = cfg.params == "embedding"
    enc_t, enc_a = encode_cached(work, tgt, with_grad), encode_cached(work, anc, with_grad)
    adversary = Adversary(model, targets, cfg.robust_every, cfg.robust_attack_steps, cfg.seed) if cfg.robust else None

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = torch.randint(0, len(x0), (cfg.batch_size,), generator=g)
        t = torch.randint(0, model.num_train_timesteps, (cfg.batch_size,), generator=g)
        noise = torch.randn(x0[b].shape, generator=g)
        x_t = work.add_noise(x0[b], noise, t)
        eps_t = work.predict_noise(x_t, t, enc_t(pair[b]))
        eps_a = None
        if cfg.loss == "model" or cfg.prior > 0:
            with torch.set_grad_enabled(cfg.prior > 0):  # one anchor pass serves both terms
                eps_a = work.predict_noise(x_t, t, enc_a(pair[b]))
        goal = eps_a.detach() if cfg.loss == "model" else noise
        loss = torch.nn.functional.mse_loss(eps_t, goal)
        if cfg.prior > 0:
            loss = loss + cfg.prior * torch.nn.functional.mse_loss(eps_a, noise)
        if adversary is not None:
            adv = adversary.states(work, step)
            c_adv = adv[torch.randint(0, len(adv), (cfg.batch_size,), generator=g)]
            loss = loss + torch.nn.functional.mse_loss(work.predict_noise(x_t, t, c_adv), goal)
            loss = loss + cfg.retain * adversary.retain_loss(work, model, x_t, t, g)
        return loss

    optimise(params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[ca]", progress)
    return Edit(changed_tensors(params), base_ref(model), model_hash(model), "ca", tuple(targets), tuple(anchors),
                config_dict(cfg), time.time() - t0)


__all__ = ["CAConfig", "PromptSet", "concept_ablation"]
