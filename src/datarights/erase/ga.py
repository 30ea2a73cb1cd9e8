"""Gradient ascent ("maximize loss"): the naive unlearning baseline (cf. Bourtoule et al., 2019).

Maximise the ordinary diffusion loss ||eps - eps_theta(x_t, c_target, t)||^2 on images of the
target concept: its training images when `--data` is given, otherwise images the base model
generates from the target prompts. Nothing keeps other concepts in place, which is the point
of the baseline: the talk shows it changing nearby concepts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .base import (Edit, base_ref, changed_tensors, concept_prompts, config_dict, encode_cached,
                   generate_model_space, model_hash, optimise, register, trainable_copy)
from .retrain import concept_mask


@dataclass
class GAConfig:
    """Settings of gradient ascent."""

    params: str = "full"
    """Parameter group to train."""
    steps: int = 30
    """Optimisation steps (ascent diverges: keep it short)."""
    lr: float = 1e-4
    """Adam learning rate."""
    batch_size: int = 16
    """Images per step."""
    n_images: int = 64
    """Generated images of the target when no training data is given."""
    data: str = ""
    """Training imagefolder; its images of the target are used when given."""
    seed: int = 0
    """Seed of images, timesteps and noise."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise DatarightsError("steps and batch_size must be at least 1")


@register("ga", GAConfig)
def gradient_ascent(model: T2IModel, targets: list[str], anchors: list[str], cfg: GAConfig,
                    progress: bool = True) -> Edit:
    t0 = time.time()
    if cfg.data:
        from ..world import read_imagefolder
        data = read_imagefolder(cfg.data, resolution=model.resolution)
        keep = concept_mask(data.metas, targets)
        if not keep.any():
            raise DatarightsError(f"no training image in {cfg.data} shows {targets}")
        with torch.no_grad():
            x0 = model.to_model_space(torch.from_numpy(data.images[keep]))
        prompts = [data.texts[i] for i in keep.nonzero()[0]]
    else:
        prompts = [p for t, a in zip(targets, anchors) for p in concept_prompts(t, a, 48, cfg.seed).target]
        x0, prompts = generate_model_space(model, prompts, cfg.n_images, cfg.seed)
    work, params = trainable_copy(model, cfg.params)
    enc = encode_cached(work, prompts, cfg.params == "embedding")

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = torch.randint(0, len(x0), (cfg.batch_size,), generator=g)
        t = torch.randint(0, model.num_train_timesteps, (cfg.batch_size,), generator=g)
        noise = torch.randn(x0[b].shape, generator=g)
        return torch.nn.functional.mse_loss(work.predict_noise(work.add_noise(x0[b], noise, t), t, enc(b)), noise)

    optimise(params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[ga]", progress, maximize=True)
    return Edit(changed_tensors(params), base_ref(model), model_hash(model), "ga", tuple(targets), tuple(anchors),
                config_dict(cfg), time.time() - t0)
