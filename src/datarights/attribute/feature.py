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
from typing import ClassVar

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
    region_stride: float = 0.5
    """A region query's crop is matched against windows of the region's size slid over every training
    image (step: this share of the window's side) and against the whole image; an image scores by
    its best match (regional retrieval: a part is found where a training image shows it, alone or
    beside another). 0: against the whole image only."""

    QUERY_ONLY: ClassVar[tuple] = ("region_stride",)

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


def _box(region: torch.Tensor) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the region's bounding box, end exclusive."""
    ys, xs = torch.nonzero(region > 0.5, as_tuple=True)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def crop_boxes(images: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """A box cut out of every image [N, 3, H, W], padded to a square with each crop's mean colour and
    resized to H x W (bilinear): what a region search embeds."""
    crop = images[:, :, y0:y1, x0:x1]
    h, w = crop.shape[-2:]
    side = max(h, w)
    square = crop.mean((2, 3), keepdim=True).expand(-1, -1, side, side).clone()
    square[:, :, (side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = crop
    if square.shape[-2:] == images.shape[-2:]:
        return square
    return torch.nn.functional.interpolate(square, size=tuple(images.shape[-2:]), mode="bilinear",
                                           align_corners=False).clamp(0, 1)


def region_crop(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """What a region search embeds, as image retrieval crops a region of interest: the region's bounding
    box cut out of the image [3, H, W], padded to a square with its mean colour, resized to H x W."""
    return crop_boxes(image[None], *_box(region))[0]


def windows(size: tuple[int, int], h: int, w: int, stride: float) -> list[tuple[int, int, int, int]]:
    """Boxes of h x w slid over an image of `size` in steps of `stride` times their side, the last one
    flush with the far edge."""
    def starts(n, k):
        step = max(1, round(k * stride))
        s = list(range(0, n - k + 1, step))
        return s if s[-1] == n - k else s + [n - k]
    return [(y, y + h, x, x + w) for y in starts(size[0], h) for x in starts(size[1], w)]


_WINDOWS: dict = {}
"""Window features of the last training sets searched by a region of some size (at most 2 kept):
a training set's windows are embedded once per region size, not once per query."""


def window_features(train, cfg, h: int, w: int) -> torch.Tensor:
    """[n_windows, N, d]: every training image's windows of h x w, embedded."""
    key = (train.hash, cfg.encoder, _weights_hash(cfg.encoder), h, w, cfg.region_stride)
    if key not in _WINDOWS:
        if len(_WINDOWS) >= 2:
            _WINDOWS.pop(next(iter(_WINDOWS)))
        images = train.images
        boxes = windows(tuple(images.shape[-2:]), h, w, cfg.region_stride)
        _WINDOWS[key] = torch.cat([torch.stack([embed(crop_boxes(images[i:i + 512].float(), *b), cfg) for b in boxes])
                                   for i in range(0, len(images), 512)], 1)   # crops made 512 images at a time
    return _WINDOWS[key]


def query_vector(query, cfg) -> torch.Tensor:
    """The query's feature [d]: of the whole image, or of its region's crop."""
    image = query.image if query.region is None else region_crop(query.image, query.region)
    return embed(image[None], cfg)[0]


def score(model, train, state, query, cfg) -> torch.Tensor:
    q = query_vector(query, cfg)
    whole = state["features"] @ q
    if query.region is None or cfg.region_stride <= 0:
        return whole
    y0, y1, x0, x1 = _box(query.region)
    return torch.maximum(whole, (window_features(train, cfg, y1 - y0, x1 - x0) @ q).amax(0))


register("feature", FeatureConfig, prepare, score, local=True)
register_rows("feature", RowSpec(lambda model, train, cfg, idx, seeds: embed(train.images[idx.cpu()], cfg),
                                 lambda model, train, query, cfg: query_vector(query, cfg),
                                 model_free=True))
