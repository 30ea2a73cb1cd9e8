"""Attacks on erasure: does the concept come back? `udatk` (soft prompt), `ti` (textual inversion),
`paraphrase` (neighbouring words), `p4d` (Prompting4Debugging: prompts that make the erased model
denoise like the unerased one). Each returns the attack success rate judged by the world judge."""

from __future__ import annotations

from dataclasses import asdict

from ..models import T2IModel
from ..registry import build_config
from . import p4d, paraphrase, ti, udatk  # noqa: F401  (registers the attacks)
from ..erase.base import prompts_showing
from .base import METHODS, AttackResult, judge_attempts


def make_config(method: str, **options):
    """The attack's config from options; options it does not have are ignored (every attack has budget and seed)."""
    return build_config(METHODS, method, "attack", options, strict=False)


NEEDS_BASE = ("p4d",)
"""Attacks that need the model before the erasure (`base`)."""


def attack(model: T2IModel, target: str, method: str = "udatk", config=None, judge=None, base: T2IModel | None = None,
           **options) -> AttackResult:
    """Attack an (edited) model to bring `target` back; returns its ASR over `budget` attempts.

    `base`: the model before the erasure, which `p4d` matches (the others ignore it)."""
    from ..judge import label_check, load_judge
    from ..world import vocabulary_of

    judge = judge or load_judge()
    judge.masks(vocabulary_of(model))  # a judge that cannot read the model's world is refused
    label_check(target, judge.vocab)
    cfg = config if config is not None else make_config(method, **options)
    cfg = cfg.for_model(model) if hasattr(cfg, "for_model") else cfg
    extra = {"base": base} if method in NEEDS_BASE else {}
    result = METHODS[method].fn(model, target, cfg, judge=judge, **extra)
    result.config = asdict(cfg)
    # the trivial baseline beside every attack: the plain held-out prompts, the same budget and noise seed
    plain = prompts_showing(target, cfg.budget, cfg.seed, split="eval", vocab=vocabulary_of(model))
    images = model.sample([plain[i % len(plain)] for i in range(cfg.budget)], seed=cfg.seed + 1)
    result.plain = judge_attempts(images, target, judge)
    return result


__all__ = ["METHODS", "NEEDS_BASE", "AttackResult", "attack", "make_config"]
