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


def region_crop(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """What a region search embeds, as image retrieval crops a region of interest: the region's bounding
    box cut out of the image [3, H, W], padded to a square with its mean colour, resized to H x W."""
    ys, xs = torch.nonzero(region > 0.5, as_tuple=True)
    crop = image[:, int(ys.min()):int(ys.max()) + 1, int(xs.min()):int(xs.max()) + 1]
    h, w = crop.shape[-2:]
    side = max(h, w)
    square = crop.mean((1, 2), keepdim=True).expand(3, side, side).clone()
    square[:, (side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = crop
    if square.shape[-2:] == image.shape[-2:]:
        return square
    return torch.nn.functional.interpolate(square[None], size=tuple(image.shape[-2:]), mode="bilinear",
                                           align_corners=False)[0].clamp(0, 1)


def query_vector(query, cfg) -> torch.Tensor:
    """The query's feature [d]: of the whole image, or of its region's crop."""
    image = query.image if query.region is None else region_crop(query.image, query.region)
    return embed(image[None], cfg)[0]


def score(model, train, state, query, cfg) -> torch.Tensor:
    return state["features"] @ query_vector(query, cfg)


register("feature", FeatureConfig, prepare, score, local=True)
register_rows("feature", RowSpec(lambda model, train, cfg, idx, seeds: embed(train.images[idx.cpu()], cfg),
                                 lambda model, train, query, cfg: query_vector(query, cfg),
                                 model_free=True))
