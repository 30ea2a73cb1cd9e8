"""What every attack shares: images of the target, soft prompts, judging attempts, the registry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import T2IModel
from ..registry import Method, registrar
from ..world import vocab as V


@dataclass
class AttackResult:
    """Attack success rate over attempts, the prompts tried and the images they gave."""

    method: str
    target: str
    asr: float
    attempts: int
    seconds: float
    prompts: list = field(default_factory=list)
    images: torch.Tensor | None = None
    success: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    """The attack's settings as run."""
    plain: list = field(default_factory=list)
    """The trivial baseline: whether each of as many images from plain held-out target prompts (same
    model, same noise seed) shows the target."""
    extra: dict = field(default_factory=dict)
    """What an attack reports beyond its rate (p4d: its ideal prompts and each variant's successes)."""

    @property
    def asr_plain(self) -> float:
        return sum(self.plain) / len(self.plain) if self.plain else float("nan")

    def to_json(self) -> dict:
        from ..stats import rounded, wilson
        k = sum(self.success) if self.success else round(self.asr * self.attempts)
        return {"asr": round(self.asr, 4), "asr_ci": rounded(wilson(k, self.attempts)),
                "attempts": self.attempts, "asr_plain": round(self.asr_plain, 4),
                "asr_plain_ci": rounded(wilson(sum(self.plain), len(self.plain))),
                "gain": round(self.asr - self.asr_plain, 4), "method": self.method, "target": self.target,
                "seconds": round(self.seconds, 2), "prompts": sorted(set(self.prompts))[:20], "config": self.config,
                **self.extra}


METHODS: dict[str, Method] = {}
register = registrar(METHODS, "attack")  # @register("udatk", UDAtkConfig)


def target_images(target: str, n: int, seed: int, vocab: V.Vocabulary | None = None) -> tuple[torch.Tensor, list[str]]:
    """Ground-truth images of a world concept, rendered by the world generator (not by any model), from
    `vocab` (the attacked model's world, `world.vocabulary_of(model)`; default: the default world's)."""
    from ..world.generate import sample_item

    vocab = vocab or V.DEFAULT
    found = vocab.find_concept(target)
    if found is None:
        raise DatarightsError(f"{target!r} is not in the world's vocabulary; attacks need images of it")
    kind, entry = found
    rng = np.random.default_rng(seed)
    imgs, texts = [], []
    key = {"objects": "object", "categories": "object", "styles": "style", "characters": "character",
           "memorized": "memorized", "compositions": "composition"}[kind]
    item_kind = {"objects": ("object", "styled"), "categories": ("object", "styled"), "styles": ("styled",),
                 "characters": ("character",), "memorized": ("memorized",), "compositions": ("composition",)}[kind]
    tries = 0
    while len(imgs) < n and tries < 200 * n:
        tries += 1
        img, meta = sample_item(item_kind[rng.integers(len(item_kind))], rng, vocab)
        if meta[key] == entry["name"]:
            imgs.append(img)
            texts.append(meta["text"])
    if not imgs:
        raise DatarightsError(f"could not render images of {target!r}")
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, texts


def judge_attempts(images: torch.Tensor, target: str, judge=None) -> list[bool]:
    from ..judge import shows
    from ..judge import load_judge
    judge = judge or load_judge()
    return shows(judge.read(images), target, judge.vocab).tolist()


def embed_prompt(model: T2IModel, prompt: str) -> torch.Tensor:
    """Token embeddings [L, D] of a prompt (input layer of the text encoder)."""
    ids = model.tokenize([prompt])
    return model.token_embedding()(ids)[0].detach()


def states_with_soft_tokens(model: T2IModel, prompt: str, soft: torch.Tensor, position: str = "prepend") -> torch.Tensor:
    """Text states of `prompt` with soft token embeddings [n, D] inserted after the start token (or before the end)."""
    ids = model.tokenize([prompt])[0]
    emb = model.token_embedding()(ids)                                                # [L, D]
    n_real = int((ids != model.tokenizer.pad_token_id).sum()) if model.tokenizer.pad_token_id is not None else len(ids)
    at = 1 if position == "prepend" else n_real - 1
    full = torch.cat([emb[:at], soft, emb[at:]])[: len(ids)]                        # keep max_length
    return model.encode_ids(None, inputs_embeds=full[None])[0]


_WORDS: dict[int, torch.Tensor] = {}


def word_mask(model: T2IModel) -> torch.Tensor:
    """[V] bool: vocabulary entries that are whole alphabetic words (no special or subword tokens); once per tokenizer."""
    key = id(model.tokenizer)
    if key not in _WORDS:
        vocab = model.tokenizer.convert_ids_to_tokens(list(range(model.token_embedding().weight.shape[0])))
        _WORDS.clear()
        _WORDS[key] = torch.tensor([not (w.startswith(("##", "[", "<|")) or not w.replace("</w>", "").isalpha())
                                    for w in vocab], device="cpu")
    return _WORDS[key]


def nearest_tokens(model: T2IModel, soft: torch.Tensor) -> list[int]:
    """Project soft embeddings to the nearest whole-word tokens (cosine): the result must read as a prompt."""
    table = model.token_embedding().weight.detach()
    sims = torch.nn.functional.normalize(soft.detach(), dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    sims[:, ~word_mask(model).to(sims.device)] = -2
    return sims.argmax(-1).tolist()


def projected(model: T2IModel, soft: torch.Tensor) -> torch.Tensor:
    """Straight-through projection (PEZ, Wen et al. 2023): the forward pass sees the nearest real tokens'
    embeddings, the gradient updates the continuous ones, so the optimised prompt is a hard prompt."""
    hard = model.token_embedding().weight[nearest_tokens(model, soft)].detach()
    return soft + (hard - soft).detach()


def fit_embeddings(model: T2IModel, images: torch.Tensor, emb: torch.nn.Parameter,
                   states: Callable[[int, torch.Tensor], torch.Tensor], steps: int, lr: float, batch_size: int,
                   g: torch.Generator) -> torch.Tensor:
    """Adam on token embeddings `emb` so that the model's denoising loss on `images` is low.

    `states(step, b)` gives the text states built from the current `emb` (a soft prompt, a new
    token) for the batch's image indices b: [L, D] shared by the batch, or [B, L, D]. Every step
    draws its batch, timesteps and noise from the one stream `g` (runtime.generator(seed)).
    """
    if images.shape[-1] != model.resolution:  # rendered world images, for a model of another resolution
        images = torch.nn.functional.interpolate(images, size=(model.resolution, model.resolution), mode="bicubic",
                                                 align_corners=False).clamp(0, 1)
    x0 = model.to_model_space(images)

    def loss_fn(step: int, _: torch.Generator) -> torch.Tensor:
        b = runtime.randint(len(x0), (batch_size,), g, model.device)
        t, noise = runtime.timesteps_and_noise(model, x0[b].shape, g)
        cond = states(step, b)
        cond = cond[None].expand(batch_size, -1, -1) if cond.ndim == 2 else cond
        return runtime.diffusion_loss(model, x0[b], cond, t=t, noise=noise)

    with runtime.frozen(model.unet, model.text_encoder):  # only `emb` learns (model may be mid-erasure)
        runtime.optimise(model, {"emb": emb}, loss_fn, steps, lr, 0, "fit embeddings", progress=False)
    return emb.detach()


PLACEHOLDER = "*"
"""Stands for a learned token inside a caption (a single token in BERT and CLIP vocabularies)."""


def states_with_placeholder(model: T2IModel, texts: list[str], v: torch.Tensor) -> torch.Tensor:
    """Text states [B, L, D] of captions in which every PLACEHOLDER token is replaced by the embedding v [D]."""
    ids = model.tokenize(texts)
    star = model.tokenizer.convert_tokens_to_ids(PLACEHOLDER if PLACEHOLDER in model.tokenizer.get_vocab()
                                                 else PLACEHOLDER + "</w>")
    emb = model.token_embedding()(ids)
    mask = (ids == star)[..., None]
    return model.encode_ids(None, inputs_embeds=torch.where(mask, v.view(1, 1, -1).expand_as(emb), emb))


def best_of(model: T2IModel, candidates: list[Callable[[int, int], torch.Tensor]], target: str, probes: int,
            seed: int, judge=None) -> tuple[int, list[float]]:
    """Black-box choice among candidate conditionings: each generates `probes` images (seed + 2) and
    the one whose images the judge most often labels with the target wins (ties: the first)."""
    rates = []
    for make in candidates:
        out = make(probes, seed + 2)
        ok = judge_attempts(out, target, judge)
        rates.append(sum(ok) / len(ok))
    return max(range(len(rates)), key=lambda i: (rates[i], -i)), rates


def timed(fn):
    def wrapper(*a, **k):
        t0 = time.time()
        res = fn(*a, **k)
        res.seconds = time.time() - t0
        return res
    return wrapper
