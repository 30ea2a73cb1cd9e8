"""Pixel-space similarity: Pearson correlation between the query's pixels and each training image's
(with a region: between the region's pixels and the same pixels of each training image)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import register
from .store import RowSpec, register_rows


@dataclass
class PixelConfig:
    """No options: centred, normalised pixel vectors compared by cosine."""


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    return x / (x.norm(dim=1, keepdim=True) + 1e-12)


def prepare(model, train, cfg, progress=True) -> dict:
    return {"vectors": _unit(train.images).float()}


def score(model, train, state, query, cfg) -> torch.Tensor:
    if query.region is not None:      # the region's pixels, where they are, against the same pixels of every image
        inside = query.region > 0.5
        return _unit(train.images[:, :, inside]).float() @ _unit(query.image[None][:, :, inside]).float()[0]
    return state["vectors"] @ _unit(query.image[None]).float()[0]


register("pixel", PixelConfig, prepare, score, local=True)
register_rows("pixel", RowSpec(lambda model, train, cfg, idx, seeds: _unit(train.images[idx.cpu()]).float(),
                               lambda model, train, query, cfg: _unit(query.image[None]).float()[0],
                               model_free=True))
