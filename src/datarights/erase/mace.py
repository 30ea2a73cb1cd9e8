"""MACE, mass concept erasure (Lu et al., CVPR 2024): closed-form refinement, a LoRA per concept,
closed-form fusion. Built for erasing many concepts in one edit.

Every cross-attention K and V projection W (out x in) of the UNet is edited; c are text-encoder token
states (the projections' inputs), C(S) = sum_{c in S} c c^T. For each concept i the prompt pairs are
its training prompts and the same prompts with the concept replaced by its anchor.

1. **Closed-form refinement** (CFR). The words that co-exist with the concept in a prompt carry its
   residue (the text encoder mixes it into every state). Their states c_old (the tokens the pair
   has in common: the shared prefix, the shared suffix and the padding after it) are mapped to what
   W gives the same words in the anchor prompt (c_new):
       W' = argmin sum ||W' c_old - W c_new||^2 + s_p sum_p ||W' c_p - W c_p||^2 + lam ||W' - W||^2
          = W (lam I + A + s_p P)(lam I + B + s_p P)^-1,
   with A = sum c_new c_old^T, B = C(old), P = C(preserved prompts). One D x D matrix serves every layer.
2. **A LoRA per concept** (rank 1 on every attn2 to_k / to_v, trained from the refined model through
   `runtime.optimise`): on images of the concept generated once by the base model, minimise the
   attention the image queries pay the concept's tokens,
       L = sum over cross-attention layers ||A_l[:, :, concept positions]||_F  (a norm, not squared),
   with timesteps drawn by MACE's relation-focal importance sampling f(t) proportional to
   sigmoid(0.05 (t - 200)) - sigmoid(0.05 (t - 400)) (t on a 1000-step schedule). `pooler` also
   marks the end token and the padding after it, as the authors' use_pooler does (SD's CLIP pads
   with its end token). The authors restrict the loss to a Grounded-SAM mask of the object; no
   segmentation model ships here, so the whole image is used (the authors' choice for styles).
3. **Closed-form fusion** of the LoRAs (W_i = W' + B_i A_i): one matrix that gives every concept's
   prompts what its own LoRA gives them, and the preserved prompts what the base gives them,
       W* = (lam W' + sum_i W_i C_i + s_p W P)(lam I + sum_i C_i + s_p P)^-1,  C_i = C(concept i's prompts),
   so k concepts cost k LoRAs (each 50 steps) and one solve, never one shared optimisation.

Defaults (MACEConfig.DEFAULTS). Stable Diffusion: the authors' object settings (Shilin-LU/MACE
configs/object/*.yaml, also UnlearnCanvas's): 50 steps per LoRA at lr 1e-5, batch 1, rank 1,
lam 1e3, no preservation term, 8 generated images and 30 augmented prompts per concept. Their
100-artist setting instead uses lam 0, lr 1e-4 and preservation caches of COCO and art captions.
The world model: tuned on the defaults' tuning concepts (grumpy face, Ada Vell) and read on others
(BENCHMARKS.md, erase section); the preserved prompts are the world's nearby and other concepts (as UCE's).
`preserve_balanced` (off by default) weighs them against all concepts' prompts together at every k:
on the default world at 16 concepts it keeps other prompts at 0.90 instead of 0.76 but erases less
(pooled 0.60 instead of 0.66; BENCHMARKS.md, many concepts in one edit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import Edit, T2IModel, base_ref, model_hash
from ..registry import ModelDefaults, check_fields
from ..world import vocabulary_of
from .base import concept_prompts, config_dict, images_per_target, register
from .fmn import CaptureCrossAttention
from .uce import _prompts_for, default_preserve

GROUP = "lora-xattn-kv"


@dataclass
class MACEConfig(ModelDefaults):
    """Settings of MACE (None: the model's default, see DEFAULTS and the module docstring)."""

    steps: int = 50
    """Optimisation steps of each concept's LoRA."""
    lr: float | None = None
    """AdamW learning rate of the LoRAs (world 3e-3; SD 1e-5)."""
    batch_size: int | None = None
    """Images per LoRA step (world 4; SD 1)."""
    n_images: int | None = None
    """Images of each concept, generated once by the base model (world 16; SD 8)."""
    lora_rank: int = 1
    """Rank of each concept's LoRA."""
    lam: float | None = None
    """Weight of staying close to the current matrix in both closed forms (world 1; SD 1e3)."""
    preserve_scale: float | None = None
    """Weight of the preserved prompts in both closed forms (world 1; SD 0: none)."""
    preserve: list = field(default_factory=list)
    """Concepts to preserve; empty: the world's nearby and other concepts (SD folders: none)."""
    preserve_balanced: bool = False
    """Weigh the preserved prompts against all concepts' prompts together: their gram is scaled by
    (concepts' prompts) / (preserved prompts), so that preserve_scale is the ratio of the two at
    every k. Off (the plain sum), k concepts outweigh a fixed preserved set k-fold, and a world's
    preserved set shrinks as more of its concepts become targets."""
    n_prompts: int = 30
    """Prompts per concept (the authors' aug_length)."""
    pooler: bool = True
    """Also suppress the attention on the end token and the padding (the authors' use_pooler)."""
    importance_sampling: bool = True
    """Draw LoRA timesteps from the relation-focal importance sampling (else uniform)."""
    seed: int = 0
    """Seed of images, timesteps and noise."""

    DEFAULTS: ClassVar[dict] = {"world": dict(lr=3e-3, batch_size=4, n_images=16, lam=1.0, preserve_scale=1.0),
                                "sd": dict(lr=1e-5, batch_size=1, n_images=8, lam=1e3, preserve_scale=0.0)}

    def __post_init__(self):
        check_fields(self, at_least_one=("steps", "batch_size", "n_images", "lora_rank", "n_prompts"),
                     positive=("lr",), non_negative=("lam", "preserve_scale"))


# ----------------------------------------------------------------------------- token bookkeeping
def _content(ids: list[int], special: set[int]) -> int:
    """Length of a padded id row up to and including its end token (the padding is what follows)."""
    ends = [j for j, i in enumerate(ids) if i in special and j > 0]
    return ends[0] + 1 if ends else len(ids)


def matched_positions(old: list[int], new: list[int], length: int, special: set[int]) -> tuple[list[int], list[int]]:
    """Positions the two prompts share: the common prefix, the common suffix (up to the end token),
    then the padding of both aligned from the end token on (the authors' find_matching_indices and
    its extension to the full context)."""
    lo, ln = _content(old, special), _content(new, special)
    a, b = old[:lo], new[:ln]
    start = 0
    while start < min(lo, ln) and a[start] == b[start]:
        start += 1
    eo, en = lo - 1, ln - 1
    while eo >= start and en >= start and a[eo] == b[en]:
        eo, en = eo - 1, en - 1
    po = list(range(start)) + list(range(eo + 1, lo))
    pn = list(range(start)) + list(range(en + 1, ln))
    tail = min(length - lo, length - ln)
    return po + list(range(lo, lo + tail)), pn + list(range(ln, ln + tail))


def concept_positions(ids: list[int], concept_ids: list[int], special: set[int], pooler: bool) -> list[int]:
    """Where the concept's tokens sit in a padded id row (every occurrence), plus, with `pooler`,
    the end token and the padding after it."""
    n = len(concept_ids)
    pos = {j + k for j in range(len(ids) - n + 1) if ids[j:j + n] == concept_ids for k in range(n)}
    if pooler:
        pos |= set(range(_content(ids, special) - 1, len(ids)))
    return sorted(pos)


def _special(model: T2IModel) -> set[int]:
    tok = model.tokenizer
    ids = {getattr(tok, "sep_token_id", None), getattr(tok, "eos_token_id", None)}
    return {i for i in ids if i is not None}


def importance_weights(num_train_timesteps: int, device: torch.device) -> torch.Tensor:
    """MACE's relation-focal sampling weights over the schedule (its 1000-step curve, rescaled)."""
    t = torch.arange(num_train_timesteps, dtype=torch.float64, device="cpu") * (1000.0 / num_train_timesteps)
    w = torch.sigmoid(0.05 * (t - 200)) - torch.sigmoid(0.05 * (t - 400))
    return (w / w.sum()).to(device)


# ----------------------------------------------------------------------------- closed forms
@torch.no_grad()
def _gram(states: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """sum_rows other_row state_row^T (other defaults to states): [D, D] in float64."""
    s = states.double()
    return (s if other is None else other.double()).T @ s


@torch.no_grad()
def _preserve_gram(model: T2IModel, concepts: list[str], seed: int = 1) -> tuple[torch.Tensor, int]:
    """The preserved prompts' gram (4 prompts a concept) and how many prompts it sums."""
    D = model.encode_prompt(["x"]).shape[-1]
    P = torch.zeros(D, D, dtype=torch.float64, device=model.device)
    vocab = vocabulary_of(model)
    n = 0
    for c in concepts:
        prompts = _prompts_for(c, 4, seed, vocab=vocab)
        states = model.encode_prompt(prompts)
        P += _gram(states.reshape(-1, states.shape[-1]))
        n += len(prompts)
    return P, n


def _solve(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """lhs @ rhs^-1 for a symmetric positive (semi)definite rhs; a singular one is a one-line error."""
    try:
        return torch.linalg.solve(rhs, lhs.T).T
    except RuntimeError as e:  # torch.linalg.LinAlgError is a RuntimeError
        raise DatarightsError("mace's closed form is singular: give --lam a positive value") from e


@register("mace", MACEConfig)
def mace(model: T2IModel, targets: list[str], anchors: list[str], cfg: MACEConfig, progress: bool = True) -> Edit:
    t0 = time.time()
    cfg = cfg.for_model(model)
    runtime.check_lora_rank(model, GROUP, cfg.lora_rank)
    special, L, dev = _special(model), model.max_length, model.device
    names = list(model.param_groups("xattn-kv"))
    W0 = {n: p.detach().double() for n, p in model.named_parameters().items() if n in names}
    D = next(iter(W0.values())).shape[1]
    eye = torch.eye(D, dtype=torch.float64, device=dev)

    # the prompts of each concept (target side) and their anchor twins
    sets = [concept_prompts(t, a, cfg.n_prompts, cfg.seed, vocab=vocabulary_of(model)) for t, a in zip(targets, anchors)]
    for t, s in zip(targets, sets):
        if not s.target:
            raise DatarightsError(f"mace found no training prompt for {t!r}")
    preserve = cfg.preserve or (default_preserve(targets, vocabulary_of(model)) if model.kind == "world" else [])
    P, n_preserved = (_preserve_gram(model, preserve) if preserve and cfg.preserve_scale > 0
                      else (torch.zeros_like(eye), 0))
    sp = cfg.preserve_scale
    if cfg.preserve_balanced and n_preserved:
        sp = sp * sum(len(s.target) for s in sets) / n_preserved

    # 1. closed-form refinement of the co-existing words
    A, B = torch.zeros_like(eye), torch.zeros_like(eye)
    with torch.no_grad():
        for s in sets:
            old_ids, new_ids = model.tokenize(s.target), model.tokenize(s.anchor)
            old_st, new_st = model.encode_ids(old_ids), model.encode_ids(new_ids)
            for i in range(len(s.target)):
                po, pn = matched_positions(old_ids[i].tolist(), new_ids[i].tolist(), L, special)
                A += _gram(old_st[i, po], new_st[i, pn])
                B += _gram(old_st[i, po])
    M = _solve(cfg.lam * eye + A + sp * P, cfg.lam * eye + B + sp * P)          # W' = W M
    W1 = {n: w @ M for n, w in W0.items()}

    refined = _with_weights(model, W1)
    # 2. one LoRA per concept, from the refined model, on the base model's images of the concept
    x0, _, pair = images_per_target(model, [s.target for s in sets], cfg.n_images, cfg.seed)
    owner = torch.repeat_interleave(torch.arange(len(sets), device=dev), cfg.n_images)
    flat = [p for s in sets for p in s.target]
    probs_t = importance_weights(model.num_train_timesteps, dev) if cfg.importance_sampling else None
    deltas = []
    for i, (target, s) in enumerate(zip(targets, sets)):
        concept_ids = model.tokenizer(target, add_special_tokens=False).input_ids
        rows = (owner == i).nonzero().flatten()
        deltas.append(_train_lora(refined, x0[rows], pair[rows], flat, concept_ids, special, cfg, probs_t,
                                  i, f"erase[mace] {i + 1}/{len(targets)}", progress))

    # 3. closed-form fusion of the LoRAs
    with torch.no_grad():
        C = [_gram(st.reshape(-1, st.shape[-1])) for st in (model.encode_prompt(s.target) for s in sets)]
        rhs = cfg.lam * eye + sum(C) + sp * P
        tensors = {}
        for n in names:
            lhs = cfg.lam * W1[n] + sp * W0[n] @ P
            for Ci, delta in zip(C, deltas):
                lhs = lhs + (W1[n] + delta[n]) @ Ci
            tensors[n] = _solve(lhs, rhs).to(model.named_parameters()[n].dtype)
    config = {**config_dict(cfg), "preserve": preserve, "mask": "whole image"}
    return Edit(tensors, base_ref(model), model_hash(model), "mace", tuple(targets), tuple(anchors), config,
                time.time() - t0)


def _with_weights(model: T2IModel, weights: dict[str, torch.Tensor]) -> T2IModel:
    """A copy of the model with these parameters replaced (the base is untouched)."""
    work = runtime.unet_copy(model)
    params = work.named_parameters()
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].dtype))
    return work


def _train_lora(refined: T2IModel, x0: torch.Tensor, pair: torch.Tensor, prompts: list[str], concept_ids: list[int],
                special: set[int], cfg: MACEConfig, probs_t: torch.Tensor | None, index: int, desc: str,
                progress) -> dict[str, torch.Tensor]:
    """Train one concept's LoRA (attention suppression on its tokens); returns its merged W deltas (float64)."""
    dev = refined.device
    ids = refined.tokenize(prompts)
    mask = torch.zeros(len(prompts), refined.max_length, device=dev)
    for j in pair.unique().tolist():
        mask[j, concept_positions(ids[j].tolist(), concept_ids, special, cfg.pooler)] = 1.0
    with torch.no_grad():
        states = refined.encode_ids(ids)
    work, params = runtime.trainable_copy(refined, GROUP, cfg.lora_rank, runtime.seed_of(cfg.seed, index))
    store: list = []
    work.unet.set_attn_processor({n: (CaptureCrossAttention(store) if ".attn2." in n else p)
                                  for n, p in work.unet.attn_processors.items()})
    micro, accumulate = runtime.micro_batches(refined, cfg.batch_size)

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = runtime.randint(len(x0), (micro,), g, dev)
        if probs_t is not None:
            t = torch.multinomial(probs_t.cpu(), micro, replacement=True, generator=g).to(dev)
            noise = runtime.randn(x0[b].shape, g, dev)
        else:
            t, noise = runtime.timesteps_and_noise(refined, x0[b].shape, g)
        store.clear()
        work.predict_noise(work.add_noise(x0[b], noise, t), t, states[pair[b]])
        m = mask[pair[b]] > 0                                             # [B, L]
        loss = 0.0
        for probs in store:                                               # [B*heads, HW, L]
            heads = probs.shape[0] // micro
            mm = m.repeat_interleave(heads, 0)[:, None, :].expand(-1, probs.shape[1], -1)
            loss = loss + torch.linalg.vector_norm(probs.float()[mm])
        return loss

    runtime.optimise(work, params, loss_fn, cfg.steps, cfg.lr, runtime.seed_of(cfg.seed, index), desc, progress,
                     accumulate=accumulate, clip=1.0, optimizer="adamw", weight_decay=0.01)
    out = {}
    with torch.no_grad():
        for name, a in params.items():
            if ".lora_A." not in name:
                continue
            layer = name.replace(".lora_A.weight", "")
            b = params[f"{layer}.lora_B.weight"]
            out[f"{layer}.weight"] = b.detach().double() @ a.detach().double()   # alpha = rank: scale 1
    return out


__all__ = ["MACEConfig", "concept_positions", "importance_weights", "mace", "matched_positions"]
