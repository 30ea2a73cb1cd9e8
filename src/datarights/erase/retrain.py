"""Exact removal: drop every training image that shows the concept and retrain with the base recipe.

The gold standard that every approximate method is measured against, and the most expensive: a
full training run (about 50 minutes for the shipped world model on 2 CPU cores).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatarightsError
from ..models import Edit, T2IModel, base_ref, model_hash
from ..world import vocab as V
from ..world import vocabulary_of
from .base import config_dict, register

LABEL_OF_KIND = {"objects": "object", "categories": "category", "styles": "style", "characters": "character",
                 "memorized": "memorized", "compositions": "composition"}


def concept_mask(metas: list[dict], targets: list[str], vocab: V.Vocabulary | None = None) -> np.ndarray:
    """Which training images show any of the targets: by their labels for world concepts (of `vocab`,
    the model's world; default: the default world's), else by caption words."""
    hit = np.zeros(len(metas), dtype=bool)
    for target in targets:
        found = (vocab or V.DEFAULT).find_concept(target)
        if found is not None:
            key, name = LABEL_OF_KIND[found[0]], found[1]["name"]
            hit |= np.array([m.get(key) == name for m in metas])
        else:
            hit |= np.array([target.lower() in m["text"].lower() for m in metas])
    return hit


@dataclass
class RetrainConfig:
    """Settings of exact retraining."""

    data: str = ""
    """The base model's training imagefolder (required)."""
    steps: int = 0
    """Training steps; 0: the base model's own recipe."""
    seed: int = -1
    """Training seed; -1: the base model's own."""

    def __post_init__(self):
        if self.steps < 0:
            raise DatarightsError("steps must be non-negative")


@register("retrain", RetrainConfig)
def retrain(model: T2IModel, targets: list[str], anchors: list[str], cfg: RetrainConfig, progress=True) -> Edit:
    from ..train import TrainConfig, data_hash, train
    from ..world import ImageFolder, read_imagefolder

    t0 = time.time()
    if not cfg.data:
        raise DatarightsError("retrain needs the base model's training data: pass --data DIR")
    recipe = dict(model.meta.get("training") or {})
    if not recipe:
        raise DatarightsError("the base model records no training recipe; retrain needs one (train it with `datarights train`)")
    data = read_imagefolder(cfg.data, resolution=model.resolution)
    if recipe.get("data_hash") and recipe["data_hash"] != data_hash(data):
        raise DatarightsError(f"{cfg.data} is not the data the base model was trained on (hash differs)")
    drop = concept_mask(data.metas, targets, vocabulary_of(model))
    if not drop.any():
        raise DatarightsError(f"no training image in {cfg.data} shows {list(targets)}")
    keep = ~drop
    subset = ImageFolder(Path(cfg.data), data.images[keep], [m for m, k in zip(data.metas, keep) if k])
    fields = set(TrainConfig.__dataclass_fields__)
    tcfg = TrainConfig(**{k: v for k, v in recipe.items() if k in fields})
    if cfg.steps:
        tcfg.steps = cfg.steps
    if cfg.seed >= 0:
        tcfg.seed = cfg.seed
    init_from = recipe.get("init_from")  # a fine-tuned base (e.g. Stable Diffusion) is retrained from its own start
    if init_from and not Path(init_from).exists():
        raise DatarightsError(f"the base model was trained from {init_from}, which is missing; retrain needs it")
    with tempfile.TemporaryDirectory() as tmp:
        new = train(tcfg, subset, Path(tmp) / "retrained", init_from=init_from, progress=progress, device=model.device,
                    precision=model.precision)
    tensors = {f"unet.{n}": p.detach().clone() for n, p in new.unet.named_parameters()}
    return Edit(tensors, base_ref(model), model_hash(model), "retrain", tuple(targets), tuple(anchors),
                {**config_dict(cfg), "removed_images": int(drop.sum()), "train": config_dict(tcfg)}, time.time() - t0)
