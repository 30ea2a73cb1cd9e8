"""Feature similarity: cosine similarity of image features.

The default encoder is the world judge's feature layer; `encoder` may name a local folder of any
transformers image model (CLIP, DINO, ViT) whose pooled output is used instead (no download).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from .base import register


@dataclass
class FeatureConfig:
    """Which image encoder embeds the images."""

    encoder: str = "judge"
    """'judge' (the world judge) or a local folder of a transformers image model."""


def _encoder(cfg: FeatureConfig):
    return _encoder_for(cfg.encoder)


@functools.lru_cache(maxsize=2)
def _encoder_for(encoder: str):
    cfg = FeatureConfig(encoder)
    if cfg.encoder == "judge":
        from ..judge import load_judge
        judge = load_judge()
        return lambda x: judge.features(x)
    from pathlib import Path
    if not Path(cfg.encoder).is_dir():
        raise DatarightsError(f"feature encoder folder {cfg.encoder} does not exist")
    from transformers import AutoImageProcessor, AutoModel
    proc = AutoImageProcessor.from_pretrained(cfg.encoder, local_files_only=True)
    enc = AutoModel.from_pretrained(cfg.encoder, local_files_only=True).eval()

    def embed(x):
        inputs = proc(images=list((x.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()), return_tensors="pt")
        if hasattr(enc, "get_image_features"):
            return enc.get_image_features(**inputs)
        out = enc(**inputs)
        return out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]
    return embed


@torch.no_grad()
def embed(images: torch.Tensor, cfg: FeatureConfig, batch: int = 512) -> torch.Tensor:
    enc = _encoder(cfg)
    f = torch.cat([enc(images[i:i + batch].float()) for i in range(0, len(images), batch)])
    return torch.nn.functional.normalize(f, dim=1)


def prepare(model, train, cfg, progress=True) -> dict:
    return {"features": embed(train.images, cfg)}


def score(model, train, state, query, cfg) -> torch.Tensor:
    return state["features"] @ embed(query.image[None], cfg)[0]


register("feature", FeatureConfig, prepare, score)
