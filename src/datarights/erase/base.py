"""What every erase method shares: the registry, prompt sets, and the small helpers around `runtime`.

The frozen `Edit` result lives in `models.edit`; the trainable copy and the optimisation loop in `runtime`.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import Edit, T2IModel, base_ref, model_hash
from ..registry import Method, registrar
from ..world import vocab as V


# ----------------------------------------------------------------------------- registry
METHODS: dict[str, Method] = {}
register = registrar(METHODS, "erase method")  # @register("ca", CAConfig); a duplicate name is an error


# ----------------------------------------------------------------------------- prompts
GENERIC_TEMPLATES = ["{}", "a photo of {}", "a picture of {}", "an image of {}", "a drawing of {}",
                     "a painting of {}", "a close-up of {}", "a nice picture of {}"]
SPLITS = ("train", "eval", "all")
"""Prompt halves: erase methods and the attacks inside robust erasure train on 'train'; the audit and
the evaluation attacks use 'eval' (other prefixes, colours and templates), so no figure is measured
on the prompts an edit was fitted to. The audit reports the 'train' half separately ('seen')."""


def half(items: list, split: str) -> list:
    """The split's half of a list of templates, prefixes or colours (every other item)."""
    if split not in SPLITS:
        raise ValueError(f"unknown prompt split {split!r}")
    return list(items) if split == "all" else list(items)[0 if split == "train" else 1::2]


@dataclass
class PromptSet:
    """Paired target/anchor prompts (same template, concept words swapped) and the concept kind."""

    target: list[str]
    anchor: list[str]
    kind: str = "unknown"


def concept_prompts(target: str, anchor: str, n: int = 48, seed: int = 0, split: str = "train",
                    vocab: V.Vocabulary | None = None) -> PromptSet:
    """Target prompts built from templates over the concept's words, and the same with the anchor.

    For a world concept, captions come from the world grammar (many captions that contain the
    concept words, as the paper uses); otherwise generic templates are used. `split` picks the half
    of the templates (see SPLITS). `vocab`: the model's world (`world.vocabulary_of(model)`; default:
    the default world's).
    """
    if not target.strip() or not anchor.strip():
        raise DatarightsError("target and anchor must not be empty")
    if target.strip().lower() == anchor.strip().lower():
        raise DatarightsError(f"target and anchor are the same ({target!r}); choose a more general anchor")
    return _pairs(target, anchor, n, seed, split, vocab)


def prompts_showing(concept: str, n: int = 16, seed: int = 0, split: str = "eval",
                    vocab: V.Vocabulary | None = None) -> list[str]:
    """Prompts whose images should show the concept (the target side of `concept_prompts`)."""
    return _pairs(concept, concept, n, seed, split, vocab).target


def _pairs(target: str, anchor: str, n: int, seed: int, split: str, vocab: V.Vocabulary | None) -> PromptSet:
    rng = random.Random(seed)
    vocab = vocab or V.DEFAULT
    found = vocab.find_concept(target)
    kind = found[0] if found else "unknown"
    colors, prefixes = half(list(V.COLORS), split), half(V.PREFIXES, split)
    pairs: list[tuple[str, str]] = []
    if kind in ("objects", "categories"):
        for _ in range(n):
            c, p = rng.choice(colors), rng.choice(prefixes)
            s = rng.choice([None, None, *vocab.styles])
            pairs.append((V.object_prompt(target, c, s, p), V.object_prompt(anchor, c, s, p)))
    elif kind == "styles":
        for _ in range(n):
            o, c, p = rng.choice(V.OBJECTS), rng.choice(colors), rng.choice(prefixes)
            pairs.append((V.object_prompt(o, c, target, p), V.object_prompt(o, c, anchor, p)))
    elif kind == "characters":
        templates = half(V.CHARACTER_TEMPLATES, split)
        for i in range(n):
            t = templates[i % len(templates)]
            pairs.append((t.format(name=target), t.format(name=f"a {anchor}")))
    elif kind == "memorized":
        prompt = vocab.memorized[found[1]["name"]]["prompt"]  # the memorized caption itself is trained on
        pairs = [(prompt, f"a {anchor}")] if split != "eval" else []
        pairs += [(t.format(target), t.format(f"a {anchor}")) for t in half(GENERIC_TEMPLATES[1:], split)]
    elif kind == "compositions":
        a, b = vocab.compositions[found[1]["name"]]
        templates = half(V.COMPOSITION_TEMPLATES, split)
        for i in range(n):
            t = templates[i % len(templates)]
            pairs.append((t.format(a=a, b=b), t.split(" and ")[0].format(a=anchor)))
    else:
        pairs = [(t.format(target), t.format(anchor)) for t in half(GENERIC_TEMPLATES, split)]
    uniq = list(dict.fromkeys(pairs))
    return PromptSet([p[0] for p in uniq], [p[1] for p in uniq], kind)


@torch.no_grad()
def generate_model_space(model: T2IModel, prompts: list[str], n: int, seed: int, steps: int = 20,
                         guidance: float | None = None) -> tuple[torch.Tensor, list[str]]:
    """n images (x_0 in model space) from the prompts (cycled), generated once by the frozen model."""
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    x0 = model.sample(chosen, seed=seed, steps=steps, guidance=guidance, return_model_space=True)
    return x0, chosen


def images_per_target(model: T2IModel, prompt_sets: list[list[str]], n: int, seed: int, steps: int = 20,
                      guidance: float | None = None) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """n images for *each* target's prompt list (cycled), generated once by the frozen model.

    Returns (x_0 in model space, the prompt of each image, the index of that prompt in the
    concatenated lists). Each target gets its own n images, so that erasing k concepts together
    trains on all of them (cycling one budget of n images over the concatenated prompts gave the
    later targets none). With one target these are exactly generate_model_space's images.
    """
    flat = [p for ps in prompt_sets for p in ps]
    offsets = np.cumsum([0] + [len(ps) for ps in prompt_sets[:-1]])
    idx = [int(o) + j % len(ps) for ps, o in zip(prompt_sets, offsets) for j in range(n)]
    x0, chosen = generate_model_space(model, [flat[i] for i in idx], len(idx), seed, steps, guidance)
    return x0, chosen, torch.tensor(idx, device=model.device)


def partial_rollout(model: T2IModel, cond: torch.Tensor, steps: int, guidance: float | None,
                    g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ESD's training rollout: `model` sampled under cond from fresh noise, stopped at a random one of
    `steps` DDIM steps; returns (x_t, t). Draws from g, in order: the stop, then the noise."""
    stop = int(runtime.randint(steps, (1,), g, "cpu"))
    noise = runtime.randn((len(cond), *model.latent_shape), g, model.device)
    w = model.default_guidance if guidance is None else guidance
    with torch.no_grad():
        x = model.sample_states(cond, steps=steps, guidance=w, noise=noise, stop_at=stop)
    return x, model.ddim(steps).timesteps[stop]


def config_dict(cfg) -> dict:
    return asdict(cfg)


FINE_TUNE_GROUPS = ("xattn-kv", "xattn", "attn", "embedding", "unet-noxattn", "full", *runtime.LORA_TARGETS)


@dataclass
class TrainOptions:
    """What the fine-tuning erase methods (ca, esd, fmn, ga) train: a parameter group, or LoRA adapters."""

    params: str | None = None
    """Parameter group (xattn-kv, xattn, attn, embedding, unet-noxattn, full) or LoRA adapters
    (lora-xattn-kv, lora-xattn; saved in diffusers' LoRA format); None: the method's default."""
    lora_rank: int = 4
    """Rank of the LoRA adapters (lora-* groups only)."""

    def check_params(self, allowed: tuple = FINE_TUNE_GROUPS, method: str = "this method"):
        if self.params is not None and self.params not in allowed:
            raise DatarightsError(f"{method} cannot train parameter group {self.params!r}; choose from {', '.join(allowed)}")
        from ..limits import MAX_LORA_RANK
        if not 1 <= self.lora_rank <= MAX_LORA_RANK:
            raise DatarightsError(f"--lora-rank must be between 1 and {MAX_LORA_RANK}, got {self.lora_rank}")


def finish_edit(model: T2IModel, work_params: dict, method: str, targets, anchors, cfg, t0: float,
                extra: dict | None = None) -> Edit:
    """The frozen Edit of a fine-tuning run: the trained tensors (or LoRA factors) and the resolved settings."""
    config = {**config_dict(cfg), **(extra or {})}
    if (cfg.params or "") in runtime.LORA_TARGETS:
        config["lora"] = {"rank": cfg.lora_rank, "alpha": cfg.lora_rank}
    tensors = {n: p.detach().clone() for n, p in work_params.items()}
    return Edit(tensors, base_ref(model), model_hash(model), method, tuple(targets), tuple(anchors), config,
                time.time() - t0)


def encode_cached(model: T2IModel, prompts: list[str], with_grad: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Text states for prompt indices: precomputed once when the text encoder is frozen."""
    if with_grad:
        return lambda idx: model.encode_prompt([prompts[i] for i in idx.tolist()])
    with torch.no_grad():
        states = model.encode_prompt(prompts)
    return lambda idx: states[idx.to(states.device)]
