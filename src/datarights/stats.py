"""Intervals for every figure: Wilson for rates, the bootstrap for ratios and correlations.

A figure without its interval is not reported; a bar is met only when the interval's lower end
(or upper end, for a bar that is a ceiling) meets it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054
MIN_QUERIES = 16
"""No claim rests on fewer queries (images, prompts, attempts) than this."""


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a rate k/n (95% by default); (nan, nan) when n == 0."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(flags: Sequence[bool] | np.ndarray) -> dict:
    """A rate with its count and Wilson interval: {"value", "k", "n", "ci"}."""
    flags = np.asarray(flags, dtype=bool)
    k, n = int(flags.sum()), int(flags.size)
    return {"value": k / n if n else float("nan"), "k": k, "n": n, "ci": list(wilson(k, n))}


def bootstrap(stat: Callable[[np.ndarray], float], n: int, reps: int = 2000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of stat(indices) over n resampled units (images, queries, pairs)."""
    if n <= 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(reps)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return (float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)))


def ratio_of_means(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0) -> dict:
    """mean(a) / mean(b) for paired units (e.g. per-image correctness of the edited and the base
    model on the same prompt and seed), with a paired bootstrap interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    value = a.mean() / b.mean() if b.size and b.mean() > 0 else float("nan")

    def stat(idx):
        d = b[idx].mean()
        return a[idx].mean() / d if d > 0 else float("nan")

    return {"value": float(value), "n": int(a.size), "ci": list(bootstrap(stat, a.size, reps, seed))}


def mean_ci(x: Sequence[float], reps: int = 2000, seed: int = 0) -> dict:
    """A mean with its bootstrap interval (over the units in x)."""
    x = np.asarray(x, dtype=np.float64)
    return {"value": float(x.mean()) if x.size else float("nan"), "n": int(x.size),
            "ci": list(bootstrap(lambda idx: x[idx].mean(), x.size, reps, seed))}


def meets(ci: Sequence[float], bar: float, above: bool = True) -> bool:
    """A bar is met only when the whole interval is on its side."""
    lo, hi = ci
    return bool(lo >= bar) if above else bool(hi <= bar)


def fmt(value: float, ci: Sequence[float], digits: int = 2) -> str:
    """'0.94 [0.89, 0.97]' for tables."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
