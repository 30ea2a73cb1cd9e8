"""Forget-Me-Not (Zhang et al., 2023): attention re-steering.

Minimise the cross-attention mass that the image queries put on the concept's tokens,
    L = sum over cross-attention layers of mean || A[:, :, concept tokens] ||^2,
on reference images of the concept (generated once by the base model from target prompts and
noised at random t). Fast, and known to be the weakest under attack. The paper uses ~35 steps
at lr 2e-6 on SD; for the world model we use 35 steps at lr 1e-3 on cross-attention.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .base import (Edit, base_ref, changed_tensors, concept_prompts, config_dict, encode_cached,
                   generate_model_space, model_hash, optimise, register, trainable_copy)


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
class FMNConfig:
    """Settings of Forget-Me-Not."""

    params: str = "xattn"
    """Parameter group to train."""
    steps: int = 35
    """Optimisation steps."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 16
    """Noised reference images per step."""
    n_images: int = 32
    """Reference images of the concept, generated once by the base model."""
    seed: int = 0
    """Seed of images, timesteps and noise."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.n_images < 1:
            raise DatarightsError("steps, batch_size and n_images must be at least 1")


@register("fmn", FMNConfig)
def forget_me_not(model: T2IModel, targets: list[str], anchors: list[str], cfg: FMNConfig,
                  progress: bool = True) -> Edit:
    t0 = time.time()
    stop = {"a", "an", "and", "the", "of", "in", "style"}
    prompts, spans = [], []
    for t, a in zip(targets, anchors):
        # the concept's tokens: every token of its content words (a composition's parts are apart)
        word_ids = {i for w in t.split() if w.lower() not in stop
                    for i in model.tokenizer(w, add_special_tokens=False).input_ids}
        for p in concept_prompts(t, a, 16, cfg.seed).target:
            ids = model.tokenize([p])[0].tolist()
            pos = [j for j, i in enumerate(ids) if i in word_ids]
            if pos:
                prompts.append(p)
                spans.append(pos)
    if not prompts:
        raise DatarightsError(f"fmn found no prompt that contains the words of {targets}")
    x0, _ = generate_model_space(model, prompts, cfg.n_images, cfg.seed)
    pair = torch.arange(cfg.n_images) % len(prompts)
    mask = torch.zeros(len(prompts), model.max_length)
    for i, s in enumerate(spans):
        mask[i, s] = 1.0
    work, params = trainable_copy(model, cfg.params)
    store: list = []
    procs = {n: (CaptureCrossAttention(store) if ".attn2." in n else p) for n, p in work.unet.attn_processors.items()}
    work.unet.set_attn_processor(procs)
    enc = encode_cached(work, prompts, False)

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        b = torch.randint(0, len(x0), (cfg.batch_size,), generator=g)
        t = torch.randint(0, model.num_train_timesteps, (cfg.batch_size,), generator=g)
        x_t = work.add_noise(x0[b], torch.randn(x0[b].shape, generator=g), t)
        store.clear()
        work.predict_noise(x_t, t, enc(pair[b]))
        m = mask[pair[b]]                                                 # [B, L]
        loss = 0.0
        for probs in store:                                               # [B*heads, HW, L]
            heads = probs.shape[0] // cfg.batch_size
            mm = m.repeat_interleave(heads, 0)[:, None, :]                # [B*heads, 1, L]
            loss = loss + ((probs * mm) ** 2).sum(-1).mean()
        return loss

    optimise(params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "erase[fmn]", progress)
    from diffusers.models.attention_processor import AttnProcessor2_0
    work.unet.set_attn_processor(AttnProcessor2_0())
    return Edit(changed_tensors(params), base_ref(model), model_hash(model), "fmn", tuple(targets), tuple(anchors),
                config_dict(cfg), time.time() - t0)
