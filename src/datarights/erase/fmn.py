"""Forget-Me-Not (Zhang et al., 2023): attention re-steering.

Minimise the cross-attention mass that the image queries put on the concept's tokens,
    L = sum over cross-attention layers of mean || A[:, :, concept tokens] ||^2,
on reference images of the concept (generated once by the base model from target prompts and
noised at random t). Fast, and known to be the weakest under attack.
Defaults (FMNConfig.DEFAULTS): Stable Diffusion as the official code (SHI-Labs/Forget-Me-Not,
attn.yaml): 35 steps at lr 2e-6 on cross-attention, batch 1, a handful (8) of reference images;
the world model needs a larger step: 35 steps at lr 1e-3, batch 16, 32 reference images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import Edit, T2IModel
from ..registry import ModelDefaults, check_fields
from ..world import vocabulary_of
from .base import TrainOptions, concept_prompts, encode_cached, finish_edit, images_per_target, register


class CaptureCrossAttention:
    """An attention processor that computes attention as diffusers' AttnProcessor does and keeps the probabilities."""

    def __init__(self, store: list):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        key, value = attn.to_k(ctx), attn.to_v(ctx)
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)  # [B*heads, HW, L]
        self.store.append(probs)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@dataclass
class FMNConfig(TrainOptions, ModelDefaults):
    """Settings of Forget-Me-Not (None: the model's default, see DEFAULTS and the module docstring)."""

    steps: int = 35
    """Optimisation steps."""
    lr: float | None = None
    """Adam learning rate (world 1e-3; SD 2e-6)."""
    batch_size: int | None = None
    """Noised reference images per step (world 16; SD 1)."""
    n_images: int | None = None
    """Reference images of each target concept, generated once by the base model (world 32; SD 8)."""
    seed: int = 0
    """Seed of images, timesteps and noise."""

    DEFAULTS: ClassVar[dict] = {"world": dict(params="xattn", lr=1e-3, batch_size=16, n_images=32),
                                "sd": dict(params="xattn", lr=2e-6, batch_size=1, n_images=8)}

    def __post_init__(self):
        self.check_params(method="fmn")
        check_fields(self, at_least_one=("steps", "batch_size", "n_images"), positive=("lr",))


@register("fmn", FMNConfig)
def forget_me_not(model: T2IModel, targets: list[str], anchors: list[str], cfg: FMNConfig,
                  progress=True) -> Edit:
    t0 = time.time()
    cfg = cfg.for_model(model)
    stop = {"a", "an", "and", "the", "of", "in", "style"}
    prompts, spans, per_target = [], [], []
    for t, a in zip(targets, anchors):
        per_target.append([])
        # the concept's tokens: every token of its content words (a composition's parts are apart)
        word_ids = {i for w in t.split() if w.lower() not in stop
                    for i in model.tokenizer(w, add_special_tokens=False).input_ids}
        for p in concept_prompts(t, a, 16, cfg.seed, vocab=vocabulary_of(model)).target:
            ids = model.tokenize([p])[0].tolist()
            pos = [j for j, i in enumerate(ids) if i in word_ids]
            if pos:
                prompts.append(p)
                per_target[-1].append(p)
                spans.append(pos)
    if not prompts:
        raise DatarightsError(f"fmn found no prompt that contains the words of {targets}")
    x0, _, pair = images_per_target(model, [ps for ps in per_target if ps], cfg.n_images, cfg.seed)
    mask = torch.zeros(len(prompts), model.max_length, device=model.device)
    for i, s in enumerate(spans):
        mask[i, s] = 1.0
    work, params = runtime.trainable_copy(model, cfg.params, cfg.lora_rank)
    store: list = []
    procs = {n: (CaptureCrossAttention(store) if ".attn2." in n else p) for n, p in work.unet.attn_processors.items()}
    work.unet.set_attn_processor(procs)
    enc = encode_cached(work, prompts, False)
    micro, accumulate = runtime.micro_batches(model, cfg.batch_size)

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = runtime.randint(len(x0), (micro,), g, model.device)
        t, noise = runtime.timesteps_and_noise(model, x0[b].shape, g)
        x_t = work.add_noise(x0[b], noise, t)
        store.clear()
        work.predict_noise(x_t, t, enc(pair[b]))
        m = mask[pair[b]]                                                 # [B, L]
        loss = 0.0
        for probs in store:                                               # [B*heads, HW, L]
            heads = probs.shape[0] // micro
            mm = m.repeat_interleave(heads, 0)[:, None, :]                # [B*heads, 1, L]
            loss = loss + ((probs.float() * mm) ** 2).sum(-1).mean()
        return loss

    runtime.optimise(work, params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[fmn]", progress, accumulate=accumulate)
    return finish_edit(model, params, "fmn", targets, anchors, cfg, t0)
