"""Caption similarity: the trivial text-only baseline (no pixels at all).

Every training image is scored by the cosine similarity of its caption to the query's prompt, in
the model's own text encoder (token states mean-pooled over the real tokens). A method that does no
better than this on a benchmark has learnt the captions, not the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import register


@dataclass
class CaptionConfig:
    """No options: the model's text encoder, mean-pooled."""


@torch.no_grad()
def _embed(model, texts: list[str]) -> torch.Tensor:
    out = []
    for s in range(0, len(texts), 256):
        ids = model.tokenize(texts[s:s + 256])
        states = model.encode_ids(ids)                                                  # [B, L, D]
        pad = model.tokenizer.pad_token_id
        mask = (ids != pad).float()[..., None] if pad is not None else torch.ones_like(states[..., :1])
        out.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=1).cpu())
    return torch.cat(out)


def prepare(model, train, cfg, progress=True) -> dict:
    uniq = sorted(set(train.folder.texts))
    table = _embed(model, uniq)
    pos = {t: i for i, t in enumerate(uniq)}
    return {"vectors": table[torch.tensor([pos[t] for t in train.folder.texts], device="cpu")]}


def score(model, train, state, query, cfg) -> torch.Tensor:
    return state["vectors"] @ _embed(model, [query.prompt])[0]


register("caption", CaptionConfig, prepare, score)
