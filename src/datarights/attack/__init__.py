"""Attacks on erasure: does the concept come back? `udatk` (soft prompt), `ti` (textual inversion),
`paraphrase` (neighbouring words). Each returns the attack success rate judged by the world judge."""

from __future__ import annotations

from dataclasses import fields

from ..errors import DatarightsError
from ..models import T2IModel
from . import paraphrase, ti, udatk  # noqa: F401  (registers the attacks)
from .base import METHODS, AttackResult


def make_config(method: str, **options):
    if method not in METHODS:
        raise DatarightsError(f"unknown attack {method!r}; choose from {', '.join(sorted(METHODS))}")
    cls = METHODS[method].config_cls
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in options.items() if v is not None and k in names}
    return cls(**given)


def attack(model: T2IModel, target: str, method: str = "udatk", config=None, judge=None, **options) -> AttackResult:
    """Attack an (edited) model to bring `target` back; returns its ASR over `budget` attempts."""
    from ..audit import label_check

    label_check(target)
    cfg = config if config is not None else make_config(method, **options)
    return METHODS[method].fn(model, target, cfg, judge=judge)


__all__ = ["METHODS", "AttackResult", "attack", "make_config"]
