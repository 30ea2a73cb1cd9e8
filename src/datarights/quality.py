"""Model quality on the world: does each generated image show what its prompt asked for?"""

from __future__ import annotations

import time

import torch

from .judge import Judge, load_judge
from .stats import rounded, wilson
from .models import T2IModel, load_model
from .world import sample_eval_prompts
from .world.vocab import NONE

# accuracy name -> (label the prompt asks for, which prompts count)
METRICS = {
    "object_acc": "object",
    "color_acc": "color",
    "style_acc": "style",
    "character_acc": "character",
    "memorized_acc": "memorized",
    "composition_acc": "composition",
}


def judge_accuracy(asked: list[dict], read: list[dict]) -> dict:
    """Share of images whose judged label equals the asked one, per label (over prompts that ask for it).

    A prompt asks for a style only if it names an artist (unstyled prompts are not counted under
    style_acc); every other label counts where the prompt's label is not 'none'.
    """
    out = {}
    for name, key in METRICS.items():
        pairs = [(a[key], r[key]) for a, r in zip(asked, read)
                 if a[key] != NONE and not (key == "style" and a["kind"] != "styled")]
        k = sum(x == y for x, y in pairs)
        out[name] = round(k / len(pairs), 4) if pairs else None
        out[f"{name}_ci"] = rounded(wilson(k, len(pairs)))
        out[f"{name.removesuffix('_acc')}_n"] = len(pairs)
    return out


def eval_model(model: T2IModel | None = None, judge: Judge | None = None, n: int = 200, seed: int = 0,
               steps: int = 25, guidance: float | None = None, batch_size: int = 100, progress=None,
               vocab=None) -> dict:
    """Sample n prompts from the world grammar, generate one image each, and let the judge score them.

    Returns the accuracies (object, color, style, character, memorized, composition), `n` and
    `seconds`, plus the prompts, images and readings under private keys for reports.
    """
    from .world import vocabulary_of

    model = model or load_model()
    judge = judge or load_judge()
    vocab = vocab if vocab is not None else vocabulary_of(model)  # the model's world (default: the default world)
    asked = sample_eval_prompts(n, seed, vocab)
    t0 = time.time()
    images = model.sample([a["text"] for a in asked], seed=seed, steps=steps, guidance=guidance,
                          batch_size=batch_size, callback=progress)
    read = judge.read(images, vocab=vocab)
    result = judge_accuracy(asked, read)
    result.update(n=n, seed=seed, steps=steps, guidance=model.default_guidance if guidance is None else guidance, seconds=round(time.time() - t0, 2))
    result["_asked"], result["_read"], result["_images"] = asked, read, images
    return result


def public(result: dict) -> dict:
    """Drop the private keys (tensors, per-image rows) before printing JSON."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def to_pil_grid(images: torch.Tensor, ncol: int = 8, scale: int = 4, pad: int = 1):
    """Images [B, 3, H, W] in [0, 1] -> one PIL grid image, upscaled with nearest neighbours."""
    import numpy as np
    from PIL import Image

    b, _, h, w = images.shape
    ncol = max(1, min(ncol, b))
    nrow = (b + ncol - 1) // ncol
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), dtype=np.uint8) * 255
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    for i in range(b):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = arr[i]
    img = Image.fromarray(grid)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img
