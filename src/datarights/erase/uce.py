"""Unified Concept Editing (Gandikota et al., WACV 2024): a closed-form edit, no gradients.

For every cross-attention K or V projection W (out x in), with text-state vectors c_e of the edited
concepts, their guide outputs v*_e = W c_guide (the anchor's states at the aligned positions), and
vectors c_p of the preserved concepts:
    W' = (lam W + s_e sum_e v*_e c_e^T + s_p sum_p W c_p c_p^T) (lam I + s_e sum_e c_e c_e^T + s_p sum_p c_p c_p^T)^-1
which minimises lam ||W' - W||^2 + s_e sum_e ||W' c_e - v*_e||^2 + s_p sum_p ||W' c_p - W c_p||^2.
As in the official code, the vectors are the token states from the concept's last token onward,
aligned with the anchor's from its last token onward. Defaults lam = 0.5, scales 1.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from ..errors import DatarightsError
from ..models import Edit, T2IModel, base_ref, model_hash
from ..world import vocab as V
from ..world import vocabulary_of
from .base import GENERIC_TEMPLATES, config_dict, half, register


@dataclass
class UCEConfig:
    """Settings of UCE."""

    lam: float = 0.5
    """Weight of staying close to the original matrix."""
    erase_scale: float = 1.0
    """Weight of the edited concepts."""
    preserve_scale: float = 1.0
    """Weight of the preserved concepts."""
    preserve: list = field(default_factory=list)
    """Concepts whose outputs must not change; empty: the world's nearby concepts plus every other
    world object and style (for non-world models: none)."""
    preserve_balanced: bool = False
    """Weigh the preserved vectors against all edited vectors together: their gram is scaled by
    (edited vectors) / (preserved vectors), so that preserve_scale / erase_scale is the ratio of the
    two at every number of targets (off: the plain sums, where k targets outweigh a fixed preserved
    set k-fold, and a world's preserved set shrinks as more of its concepts become targets)."""
    keys: bool = True
    """Also edit K (not only V)."""
    n_templates: int = 8
    """Prompts per concept."""

    def __post_init__(self):
        if self.lam <= 0 or self.erase_scale < 0 or self.preserve_scale < 0:
            raise DatarightsError("uce needs lam > 0 and non-negative scales")


def _last_token(tokenizer, ids: list[int], concept: str) -> int:
    """Index of the concept's last token inside a tokenized prompt (the last occurrence)."""
    sub = tokenizer(concept, add_special_tokens=False).input_ids
    for s in range(len(ids) - len(sub), -1, -1):
        if ids[s:s + len(sub)] == sub:
            return s + len(sub) - 1
    raise DatarightsError(f"could not find {concept!r} in its own prompt (tokenizer mismatch)")


def _prompts_for(concept: str, n: int, seed: int, split: str = "train", vocab: V.Vocabulary | None = None) -> list[str]:
    """The edit's prompts for a concept, from the 'train' half of colours, prefixes and templates
    (`vocab`: the model's world, `world.vocabulary_of(model)`; default: the default world's)."""
    found = (vocab or V.DEFAULT).find_concept(concept)
    rng = random.Random(seed)
    colors, prefixes = half(list(V.COLORS), split), half(V.PREFIXES, split)
    if found and found[0] == "styles":
        return [V.object_prompt(rng.choice(V.OBJECTS), rng.choice(colors), concept, rng.choice(prefixes))
                for _ in range(n)]
    if found and found[0] in ("objects", "categories"):
        return [concept] + [V.object_prompt(concept, rng.choice(colors), None, rng.choice(prefixes))
                            for _ in range(n - 1)]
    return [t.format(concept) for t in half(GENERIC_TEMPLATES, split)[:n]]


@torch.no_grad()
def _vectors(model: T2IModel, prompts: list[str], concept: str, start_from: list[int] | None = None):
    """Token states [sum_k (L - k_i), D] from each prompt's last concept token onward."""
    ids = model.tokenize(prompts)
    states = model.encode_ids(ids)
    starts = start_from or [_last_token(model.tokenizer, row.tolist(), concept) for row in ids]
    return states, starts


def default_preserve(targets: list[str], vocab: V.Vocabulary | None = None) -> list[str]:
    """Nearby concepts of the targets, plus every other world object and style (of `vocab`, the
    model's world; default: the default world's)."""
    vocab = vocab or V.DEFAULT
    tset = {t.lower() for t in targets}
    keep: list[str] = []
    for t in targets:
        found = vocab.find_concept(t)
        if found:
            keep += found[1].get("nearby", [])
    keep += V.OBJECTS + list(vocab.styles)
    return [c for c in dict.fromkeys(keep) if c.lower() not in tset and vocab.find_concept(c)]


@register("uce", UCEConfig)
def uce(model: T2IModel, targets: list[str], anchors: list[str], cfg: UCEConfig, progress: bool = True) -> Edit:
    t0 = time.time()
    vocab = vocabulary_of(model)
    ce, ve_src = [], []  # edited concept vectors and their guide vectors (before W)
    for target, anchor in zip(targets, anchors):
        if target.strip().lower() == anchor.strip().lower():
            raise DatarightsError(f"target and anchor are the same ({target!r})")
        tp = _prompts_for(target, cfg.n_templates, 0, vocab=vocab)
        ap = [p.replace(target, anchor) for p in tp]
        st, kt = _vectors(model, tp, target)
        sa, ka = _vectors(model, ap, anchor)
        L = st.shape[1]
        for i in range(len(tp)):
            n = min(L - kt[i], L - ka[i])
            ce.append(st[i, kt[i]:kt[i] + n])
            ve_src.append(sa[i, ka[i]:ka[i] + n])
    preserve = cfg.preserve or (default_preserve(targets, vocab) if model.kind == "world" else [])
    cp = []
    for concept in preserve:
        pp = _prompts_for(concept, max(2, cfg.n_templates // 4), 1, vocab=vocab)
        sp, kp = _vectors(model, pp, concept)
        cp += [sp[i, kp[i]:] for i in range(len(pp))]
    C_e = torch.cat(ce).double().T            # [D, n_e]
    C_g = torch.cat(ve_src).double().T        # [D, n_e]
    C_p = torch.cat(cp).double().T if cp else C_e.new_zeros(C_e.shape[0], 0)
    D = C_e.shape[0]
    ps = cfg.preserve_scale * (C_e.shape[1] / C_p.shape[1] if cfg.preserve_balanced and C_p.shape[1] else 1.0)
    rhs_c = (cfg.lam * torch.eye(D, dtype=torch.float64, device=C_e.device) + cfg.erase_scale * C_e @ C_e.T
             + ps * C_p @ C_p.T)
    names = [n for n in model.param_groups("xattn-kv") if cfg.keys or ".to_v." in n]
    params = model.named_parameters()
    tensors = {}
    for name in names:
        W = params[name].detach().double()    # [out, D]
        lhs = cfg.lam * W + cfg.erase_scale * (W @ C_g) @ C_e.T + ps * (W @ C_p) @ C_p.T
        tensors[name] = torch.linalg.solve(rhs_c, lhs.T).T.to(params[name].dtype)  # lhs @ rhs_c^-1 (rhs_c symmetric)
    return Edit(tensors, base_ref(model), model_hash(model), "uce", tuple(targets), tuple(anchors),
                {**config_dict(cfg), "preserve": preserve}, time.time() - t0)
