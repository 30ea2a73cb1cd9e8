"""Feature similarity: cosine similarity of image features.

The default encoder is the world's own self-supervised encoder (`attribute.encoder`, trained on
renders apart from the judge, as DINO is trained apart from any benchmark's labels), never the
judge that grades attribution. `encoder` may name a local folder of any transformers image model
(CLIP, DINO, ViT) whose pooled output is used instead (no download), or an encoder folder
written by `datarights train-encoder`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from .base import register
from .store import RowSpec, register_rows


@dataclass
class FeatureConfig:
    """Which image encoder embeds the images."""

    encoder: str = "world"
    """'world' (the shipped self-supervised world encoder), an encoder folder from `train-encoder`, or a
    local folder of a transformers image model."""
    encoder_weights: str | None = None
    """Content hash of the encoder's weights, filled in when it runs (so cached features of another
    encoder are never reused)."""

    def for_model(self, model) -> "FeatureConfig":
        from dataclasses import replace
        return replace(self, encoder_weights=_weights_hash(self.encoder))


def _encoder(cfg: FeatureConfig):
    return _encoder_for(cfg.encoder, cfg.encoder_weights or _weights_hash(cfg.encoder))


@functools.lru_cache(maxsize=8)
def _weights_hash(encoder: str) -> str:
    """sha256 (16 hex digits) of the encoder folder's weight files."""
    import hashlib
    from pathlib import Path

    from .encoder import DEFAULT_ENCODER

    folder = DEFAULT_ENCODER if encoder == "world" else Path(encoder)
    if not folder.is_dir():
        raise DatarightsError(f"feature encoder folder {folder} does not exist")
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def _encoder_for(encoder: str, weights: str):
    """The embedding function of an encoder (cached by its path and weights' hash)."""
    from pathlib import Path

    from .encoder import load_encoder

    folder = Path(encoder)
    ours = encoder == "world" or ((folder / "config.json").is_file() and (folder / ".datarights").is_file())
    if ours:  # the world encoder, or one written by `datarights train-encoder`
        enc = load_encoder(None if encoder == "world" else folder)
        return lambda x: enc.features(x)
    from transformers import AutoImageProcessor, AutoModel
    proc = AutoImageProcessor.from_pretrained(encoder, local_files_only=True)
    enc = AutoModel.from_pretrained(encoder, local_files_only=True).eval()

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
register_rows("feature", RowSpec(lambda model, train, cfg, idx, seeds: embed(train.images[idx.cpu()], cfg),
                                 lambda model, train, query, cfg: embed(query.image[None], cfg)[0],
                                 model_free=True))
