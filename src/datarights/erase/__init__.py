"""Erase (opt-out): remove a concept from a model while nearby concepts stay intact.

One module per method, each a config dataclass plus a function registered by name:
`ca` (Concept Ablation), `esd`, `uce`, `fmn`, `ga`, `retrain`, `mace` (many concepts at once), `stereo` (erasure that resists inversion). Every method returns a frozen
`Edit` (the changed tensors + the base's identity) that can be applied, saved and loaded.
"""

from __future__ import annotations

from ..errors import DatarightsError
from ..models import Edit, T2IModel, load_edited
from ..registry import build_config
from ..runtime import LORA_TARGETS, check_lora_rank
from . import ca, esd, fmn, ga, mace, retrain, stereo, uce  # noqa: F401  (registers the methods)
from .base import METHODS, concept_prompts
from .hold import Line


def make_config(method: str, **options):
    """The method's config dataclass from keyword options (None values keep the defaults)."""
    return build_config(METHODS, method, "erase method", options)


def erase(model: T2IModel, targets: list[str] | str, anchors: list[str] | str, method: str = "ca", config=None,
          progress=True, line: Line | None = None, **options) -> Edit:
    """Erase targets towards anchors with a registered method; returns an `Edit` (the model is untouched).

    `line`: the model line the edit extends (`erase.hold.Line`: its original model and the concepts
    erased on it before), for the methods with a `hold` term (ca), which keeps the edit to the original."""
    targets, anchors = check_targets(targets, anchors)
    cfg = config if config is not None else make_config(method, **options)
    if getattr(cfg, "params", None) in LORA_TARGETS:   # before any anchor image is generated
        check_lora_rank(model, cfg.params, cfg.lora_rank)
    if line is None:
        return METHODS[method].fn(model, targets, anchors, cfg, progress=progress)
    if not can_hold(method):
        raise DatarightsError(f"erase method {method!r} cannot hold an edit to its model line; use "
                              f"{', '.join(m for m in sorted(METHODS) if can_hold(m))}")
    return METHODS[method].fn(model, targets, anchors, cfg, progress=progress, line=line)


def can_hold(method: str) -> bool:
    """Whether the method has a `hold` term (erase.hold), so that an edit can be held to its model line."""
    return hasattr(METHODS[method].config_cls, "hold")


def steps_per_concept(method: str, model: T2IModel, k: int) -> int | None:
    """The method's default steps on this model once for each of k concepts erased in one edit (one
    shared budget weakens the edit: benchmarks/erase.py --many, CA's pooled target_erased fell from
    0.98 to 0.86 with 8 concepts), or None for a method without steps (UCE's closed form)."""
    cfg = make_config(method)
    steps = getattr(cfg.for_model(model) if hasattr(cfg, "for_model") else cfg, "steps", None)
    return steps * k if steps else None


def check_targets(targets: list[str] | str, anchors: list[str] | str) -> tuple[list[str], list[str]]:
    """Validate target/anchor lists (one anchor may serve every target); returns them paired."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    anchors = [anchors] if isinstance(anchors, str) else list(anchors)
    if not targets:
        raise DatarightsError("give at least one --target")
    if len(anchors) == 1 and len(targets) > 1:
        anchors = anchors * len(targets)
    if len(anchors) != len(targets):
        raise DatarightsError(f"{len(targets)} targets but {len(anchors)} anchors; give one anchor or one per target")
    for t, a in zip(targets, anchors):
        if not t.strip() or not a.strip():
            raise DatarightsError("target and anchor must not be empty")
        if t.strip().lower() == a.strip().lower():
            raise DatarightsError(f"target and anchor are the same ({t!r}); choose a more general anchor")
    return targets, anchors


__all__ = ["METHODS", "Edit", "Line", "can_hold", "check_targets", "concept_prompts", "erase", "load_edited", "make_config", "steps_per_concept"]
