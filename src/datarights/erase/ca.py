"""Concept Ablation (Kumari et al., ICCV 2023).

Make p(x | c_target) match p(x | c_anchor): the KL between the two trajectories reduces to an L2
between noise predictions.

1. Generate anchor images once with the frozen base model from the anchor prompts.
2. Noise them with the forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
3. model-based (default, eq. 4):  L = || eps_theta(x_t, c_target, t) - sg(eps_theta(x_t, c_anchor, t)) ||^2
   noise-based:                   L = || eps_theta(x_t, c_target, t) - eps ||^2
   optional prior preservation:   + || eps_theta(x_t, c_anchor, t) - eps ||^2 on the same anchor images.
4. Update only the chosen parameter group (cross-attention K/V by default).

Defaults (CAConfig.DEFAULTS). World model, tuned on the audit of 'grumpy face' (BENCHMARKS.md):
64 anchor images, batch 16, 100 steps at lr 3e-4 with prior preservation (lr 1e-3 erased as well
but cut nearby_preserved to 0.75). Stable Diffusion, the official settings (nupurkmr9/concept-ablation,
diffusers/README.md): cross-attention K/V, 100 steps, batch 4 on 2 GPUs (8) at base lr 2e-6 scaled by
the batch (--scale_lr: 1.6e-5), 200 anchor images (1000 in the paper), no prior preservation
(added for 'grumpy cat' only), anchor images sampled with 50 steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import Edit, T2IModel, model_hash
from ..registry import ModelDefaults, check_fields
from ..world import vocabulary_of
from .hold import HoldTerms, Line
from .base import PromptSet, TrainOptions, concept_prompts, encode_cached, finish_edit, images_per_target, register
from .robust import ROBUST_DEFAULTS, Adversary, RobustOptions


@dataclass
class CAConfig(RobustOptions, TrainOptions, ModelDefaults):
    """Settings of Concept Ablation (None: the model's default, see DEFAULTS and the module docstring)."""

    loss: str = "model"
    """'model' (match the model's own anchor prediction, stop-gradient) or 'noise' (anchor images captioned with the target)."""
    steps: int | None = None
    """Optimisation steps (world 100; SD 100)."""
    lr: float | None = None
    """Adam learning rate (world 3e-4; SD 1.6e-5 = 2e-6 x batch 8, the paper's --scale_lr)."""
    batch_size: int | None = None
    """Noised anchor images per step (world 16; SD 8); split into micro-batches that fit the device."""
    n_anchor_images: int | None = None
    """Anchor images generated once by the base model, for each target (world 64; SD 200)."""
    prior: float | None = None
    """Weight of the prior-preservation loss on anchor prompts, 0 disables it (world 1.0; SD 0)."""
    n_prompts: int = 48
    """Target/anchor prompt pairs built from templates."""
    sample_steps: int | None = None
    """DDIM steps used to generate the anchor images (world 20; SD 50)."""
    seed: int = 0
    """Seed of anchor images, timesteps and noise."""
    hold: float = 0.0
    """Weight of holding the edit to its line's original model (erase.hold): other prompts keep the
    original's predictions and concepts erased earlier on the line the current model's; 0 disables it."""
    hold_prompts: int = 64
    """Other prompts (and images of them) the hold term keeps."""

    DEFAULTS: ClassVar[dict] = {
        "world": dict(**ROBUST_DEFAULTS["world"], params="xattn-kv", steps=100, lr=3e-4, batch_size=16, n_anchor_images=64, prior=1.0, sample_steps=20),
        "sd": dict(**ROBUST_DEFAULTS["sd"], params="xattn-kv", steps=100, lr=1.6e-5, batch_size=8, n_anchor_images=200, prior=0.0, sample_steps=50),
    }

    def __post_init__(self):
        self.check_robust()
        self.check_params(("xattn-kv", "xattn", "embedding", "full", "attn", *runtime.LORA_TARGETS), "ca")
        if self.loss not in ("model", "noise"):
            raise DatarightsError(f"--loss must be 'model' or 'noise', got {self.loss!r}")
        check_fields(self, at_least_one=("steps", "batch_size", "n_anchor_images", "n_prompts", "sample_steps"),
                     positive=("lr",), non_negative=("prior", "hold"))
        if self.hold_prompts < 1:
            raise DatarightsError(f"--hold-prompts must be at least 1, got {self.hold_prompts}")


@register("ca", CAConfig)
def concept_ablation(model: T2IModel, targets: list[str], anchors: list[str], cfg: CAConfig,
                     progress=True, line: Line | None = None) -> Edit:
    """Erase each target towards its anchor (several targets share one optimisation). `line`: the
    model line this edit extends (its original model and earlier erasures), which `hold` keeps to."""
    t0 = time.time()
    cfg = cfg.for_model(model)
    sets = [concept_prompts(t, a, cfg.n_prompts, cfg.seed, vocab=vocabulary_of(model)) for t, a in zip(targets, anchors)]
    tgt = [p for s in sets for p in s.target]
    anc = [p for s in sets for p in s.anchor]
    # every target gets its own anchor images; image i was generated from anc[pair[i]]: it is paired
    # with that prompt and its target twin tgt[pair[i]]
    x0, _, pair = images_per_target(model, [s.anchor for s in sets], cfg.n_anchor_images, cfg.seed, cfg.sample_steps)
    work, params = runtime.trainable_copy(model, cfg.params, cfg.lora_rank)
    with_grad = cfg.params == "embedding"
    enc_t, enc_a = encode_cached(work, tgt, with_grad), encode_cached(work, anc, with_grad)
    adversary = Adversary(model, targets, cfg.robust_every, cfg.robust_attack_steps, cfg.seed) if cfg.robust else None
    hold = HoldTerms(model, work, line, targets, cfg.hold_prompts, cfg.n_anchor_images, cfg.seed, cfg.sample_steps,
                     with_grad) if cfg.hold > 0 else None
    micro, accumulate = runtime.micro_batches(model, cfg.batch_size,
                                              passes=2 + (cfg.robust or 0) + (hold.passes if hold else 0))

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = runtime.randint(len(x0), (micro,), g, model.device)
        t, noise = runtime.timesteps_and_noise(model, x0[b].shape, g)
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
            adv = adversary.states(work, step // accumulate)
            c_adv = adv[runtime.randint(len(adv), (micro,), g, model.device)]
            loss = loss + torch.nn.functional.mse_loss(work.predict_noise(x_t, t, c_adv), goal)
            loss = loss + cfg.retain * adversary.retain_loss(work, model, x_t, t, g)
        if hold is not None:
            loss = loss + cfg.hold * hold.loss(work, micro, g)
        return loss

    runtime.optimise(work, params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[ca]", progress, accumulate=accumulate)
    extra = {"line": {"original": model_hash(line.original), "erased": [list(p) for p in line.erased]}} \
        if line is not None else None
    return finish_edit(model, params, "ca", targets, anchors, cfg, t0, extra)


__all__ = ["CAConfig", "PromptSet", "concept_ablation"]
