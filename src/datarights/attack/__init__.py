"""Attacks on erasure: does the concept come back? `udatk` (soft prompt), `ti` (textual inversion),
`paraphrase` (neighbouring words). Each returns the attack success rate judged by the world judge."""

from __future__ import annotations

from dataclasses import asdict

from ..models import T2IModel
from ..registry import build_config
from . import paraphrase, ti, udatk  # noqa: F401  (registers the attacks)
from ..erase.base import prompts_showing
from .base import METHODS, AttackResult, judge_attempts


def make_config(method: str, **options):
    """The attack's config from options; options it does not have are ignored (every attack has budget and seed)."""
    return build_config(METHODS, method, "attack", options, strict=False)


def attack(model: T2IModel, target: str, method: str = "udatk", config=None, judge=None, **options) -> AttackResult:
    """Attack an (edited) model to bring `target` back; returns its ASR over `budget` attempts."""
    from ..judge import label_check

    label_check(target)
    cfg = config if config is not None else make_config(method, **options)
    result = METHODS[method].fn(model, target, cfg, judge=judge)
    result.config = asdict(cfg)
    # the trivial baseline beside every attack: the plain held-out prompts, the same budget and noise seed
    plain = prompts_showing(target, cfg.budget, cfg.seed, split="eval")
    images = model.sample([plain[i % len(plain)] for i in range(cfg.budget)], seed=cfg.seed + 1)
    result.plain = judge_attempts(images, target, judge)
    return result


__all__ = ["METHODS", "AttackResult", "attack", "make_config"]
