"""Methods found by name: one small helper shared by erase, attribute and attack."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Callable, ClassVar

from .errors import DatarightsError


@dataclass
class Method:
    """A registered method: its config dataclass and the function that runs it."""

    name: str
    config_cls: type
    fn: Callable


def registrar(registry: dict, kind: str):
    """A `@register(name, Config)` decorator that adds functions to `registry` as `Method`s."""
    def register(name: str, config_cls: type):
        def deco(fn):
            register_method(registry, name, Method(name, config_cls, fn), kind)
            return fn
        return deco
    return register


def register_method(registry: dict, name: str, entry, kind: str) -> None:
    """Add `entry` under `name`; a duplicate name is a programming error."""
    if name in registry:
        raise ValueError(f"{kind} {name!r} is registered twice")
    registry[name] = entry


def build_config(registry: dict, method: str, kind: str, options: dict, strict: bool = True):
    """The method's config dataclass from options (None keeps a default).

    An unknown method, or (when strict) an option the method does not have, is a one-line error.
    """
    if method not in registry:
        raise DatarightsError(f"unknown {kind} {method!r}; choose from {', '.join(sorted(registry))}")
    cls = registry[method].config_cls
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - names
    if unknown and strict:
        raise DatarightsError(f"{kind} {method} has no option {', '.join(sorted('--' + u.replace('_', '-') for u in unknown))}")
    types = {f.name: set(str(f.type).replace(" ", "").split("|")) for f in fields(cls)}
    for k, v in given.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise DatarightsError(f"--{k.replace('_', '-')} must be a finite number, got {v}")
        if isinstance(v, str) and types.get(k, set()) & {"int", "float", "bool"}:  # text where a number was due
            want = "true or false" if "bool" in types[k] else "a number"
            raise DatarightsError(f"--{k.replace('_', '-')} must be {want}, got {v[:40]!r}")
    return cls(**{k: v for k, v in given.items() if k in names})


class ModelDefaults:
    """Mixin for method configs whose defaults depend on the model: a field left as None takes
    `DEFAULTS['world']` for world models and `DEFAULTS['sd']` for Stable Diffusion folders.

    `for_model(model)` returns the resolved config (validated again); results record that one.
    """

    DEFAULTS: ClassVar[dict[str, dict]] = {"world": {}, "sd": {}}

    def for_model(self, model):
        kind = "world" if model.kind == "world" else "sd"
        fill = {k: v for k, v in self.DEFAULTS[kind].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill) if fill else self


def check_fields(cfg, at_least_one: tuple = (), positive: tuple = (), non_negative: tuple = ()) -> None:
    """One-line errors for numeric fields out of range; fields still None (a model default) are skipped."""
    for names, ok, what in ((at_least_one, lambda v: v >= 1, "at least 1"), (positive, lambda v: v > 0, "positive"),
                            (non_negative, lambda v: v >= 0, "non-negative")):
        for n in names:
            v = getattr(cfg, n)
            if v is not None and not ok(v):
                raise DatarightsError(f"--{n.replace('_', '-')} must be {what}, got {v}")
