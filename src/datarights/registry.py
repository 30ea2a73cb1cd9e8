"""Methods found by name: one small helper shared by erase, attribute and attack."""

from __future__ import annotations

from dataclasses import fields

from .errors import DatarightsError


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
    return cls(**{k: v for k, v in given.items() if k in names})
