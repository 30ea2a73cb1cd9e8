"""Gradient ascent ("maximize loss"): the naive unlearning baseline (cf. Bourtoule et al., 2019).

Maximise the ordinary diffusion loss ||eps - eps_theta(x_t, c_target, t)||^2 on images of the
target concept: its training images when `--data` is given, otherwise images the base model
generates from the target prompts. Nothing keeps other concepts in place, which is the point
of the baseline: the talk shows it changing nearby concepts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import Edit, T2IModel
from ..registry import ModelDefaults, check_fields
from ..world import vocabulary_of
from .base import TrainOptions, concept_prompts, encode_cached, finish_edit, images_per_target, register
from .retrain import concept_mask


@dataclass
class GAConfig(TrainOptions, ModelDefaults):
    """Settings of gradient ascent (no paper settings: a baseline; SD values follow CA's scale)."""

    steps: int = 30
    """Optimisation steps (ascent diverges: keep it short)."""
    lr: float | None = None
    """Adam learning rate (world 1e-4; SD 1e-5)."""
    batch_size: int | None = None
    """Images per step (world 16; SD 4)."""
    n_images: int | None = None
    """Generated images of each target when no training data is given (world 64; SD 16)."""
    data: str = ""
    """Training imagefolder; its images of the target are used when given."""
    seed: int = 0
    """Seed of images, timesteps and noise."""

    DEFAULTS: ClassVar[dict] = {"world": dict(params="full", lr=1e-4, batch_size=16, n_images=64),
                                "sd": dict(params="full", lr=1e-5, batch_size=4, n_images=16)}

    def __post_init__(self):
        self.check_params(method="ga")
        check_fields(self, at_least_one=("steps", "batch_size", "n_images"), positive=("lr",))


@register("ga", GAConfig)
def gradient_ascent(model: T2IModel, targets: list[str], anchors: list[str], cfg: GAConfig, progress=True) -> Edit:
    t0 = time.time()
    cfg = cfg.for_model(model)
    if cfg.data:
        from ..world import read_imagefolder
        data = read_imagefolder(cfg.data, resolution=model.resolution)
        keep = concept_mask(data.metas, targets, vocabulary_of(model))
        if not keep.any():
            raise DatarightsError(f"no training image in {cfg.data} shows {targets}")
        with torch.no_grad():
            x0 = model.to_model_space(torch.from_numpy(data.images[keep]))
        prompts = [data.texts[i] for i in keep.nonzero()[0]]
    else:
        x0, prompts, _ = images_per_target(model, [concept_prompts(t, a, 48, cfg.seed, vocab=vocabulary_of(model)).target
                                                   for t, a in zip(targets, anchors)], cfg.n_images, cfg.seed)
    work, params = runtime.trainable_copy(model, cfg.params, cfg.lora_rank)
    enc = encode_cached(work, prompts, cfg.params == "embedding")
    micro, accumulate = runtime.micro_batches(model, cfg.batch_size)

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = runtime.randint(len(x0), (micro,), g, model.device)
        return runtime.diffusion_loss(work, x0[b], enc(b), g)

    runtime.optimise(work, params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[ga]", progress, maximize=True,
                     accumulate=accumulate)
    return finish_edit(model, params, "ga", targets, anchors, cfg, t0)
