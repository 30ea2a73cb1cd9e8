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


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a rate k/n (95% by default); None when n == 0 (no interval)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """The exact (Clopper-Pearson) interval of a binomial rate k/n; None when n == 0."""
    if n <= 0:
        return None

    def crossing(f, rising: bool) -> float:  # the p in [0, 1] where the monotone f(p) crosses alpha / 2 (bisection)
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (f(mid) < alpha / 2) == rising else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else crossing(lambda p: 1 - _binom_cdf(k - 1, n, p), rising=True)   # P(X >= k)
    upper = 1.0 if k == n else crossing(lambda p: _binom_cdf(k, n, p), rising=False)          # P(X <= k)
    return (lower, upper)


def rate_ratio(k_after: int, k_before: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Exact interval of the ratio of two rare-event rates over equal numbers of trials (the
    conditional test of two Poisson counts): given K = k_after + k_before, k_after ~ Binomial(K,
    r / (1 + r)); the Clopper-Pearson interval of that share gives r's. None when K == 0 (no evidence)."""
    total = k_after + k_before
    if total == 0:
        return None
    lo, hi = clopper_pearson(k_after, total, alpha)
    return (lo / (1 - lo), hi / (1 - hi) if hi < 1 else float("inf"))


def rate(flags: Sequence[bool] | np.ndarray) -> dict:
    """A rate with its count and Wilson interval: {"value", "k", "n", "ci"}."""
    flags = np.asarray(flags, dtype=bool)
    k, n = int(flags.sum()), int(flags.size)
    return {"value": k / n if n else float("nan"), "k": k, "n": n, "ci": as_list(wilson(k, n))}


def as_list(ci: tuple | None) -> list | None:
    return None if ci is None else list(ci)


def rounded(ci: Sequence[float] | None, digits: int = 4) -> list | None:
    """An interval rounded for JSON; None stays None."""
    return None if ci is None else [round(float(v), digits) for v in ci]


def bootstrap(stat: Callable[[np.ndarray], float], n: int, reps: int = 2000, seed: int = 0,
              level: float = 0.95, groups: Sequence | None = None) -> tuple[float, float] | None:
    """Percentile bootstrap interval of stat(indices) over n resampled units (images, queries, pairs);
    None when it has no interval (fewer than 2 units, or no finite resample). With `groups` (one
    label per unit) whole groups are resampled (a cluster bootstrap): units that share a label, such
    as several queries of one concept, count as one draw, so the interval does not treat them as
    independent."""
    rng = np.random.default_rng(seed)
    if groups is None:
        if n <= 1:
            return None
        draw = lambda: rng.integers(0, n, n)  # noqa: E731
    else:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} labels for {n} units")
        labels = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
        members = [np.flatnonzero(labels == g) for g in range(labels.max() + 1)] if n else []
        if len(members) <= 1:
            return None
        draw = lambda: np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])  # noqa: E731
    vals = np.array([stat(draw()) for _ in range(reps)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return None
    a = (1 - level) / 2
    return (float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)))


def ratio_of_means(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0) -> dict:
    """mean(a) / mean(b) for paired units (e.g. per-image correctness of the edited and the base
    model on the same prompt and seed), with a paired bootstrap interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    value = a.mean() / b.mean() if b.size and b.mean() > 0 else float("nan")
    stat = ratio_stat(a, b)
    return {"value": float(value), "n": int(a.size), "ci": as_list(bootstrap(stat, a.size, reps, seed))}


def ratio_stat(a: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], float]:
    """The bootstrap statistic mean(a[idx]) / mean(b[idx]) of paired units: nan (left out by
    `bootstrap`) for a resample whose mean of b is not positive, never a division by zero."""
    def stat(idx):
        d = b[idx].mean()
        return float(a[idx].mean() / d) if d > 0 else float("nan")
    return stat


def mean_ci(x: Sequence[float], reps: int = 2000, seed: int = 0, groups: Sequence | None = None,
            bounds: tuple[float, float] | None = None) -> dict:
    """A mean with its bootstrap interval (over the units in x; over whole groups with `groups`).
    `bounds`: the range the quantity lives in (a share or a rate: (0, 1)); the mean and the interval
    are kept inside it, where float rounding could step a hair outside."""
    x = np.asarray(x, dtype=np.float64)
    value = float(x.mean()) if x.size else float("nan")
    ci = as_list(bootstrap(lambda idx: x[idx].mean(), x.size, reps, seed, groups=groups))
    if bounds is not None:
        lo, hi = bounds
        value = value if not np.isfinite(value) else min(hi, max(lo, value))
        ci = None if ci is None else [min(hi, max(lo, v)) for v in ci]
    return {"value": value, "n": int(x.size), "ci": ci}


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    xs = x[order]
    for v in np.unique(xs[1:][np.diff(xs) == 0]):
        r[x == v] = r[x == v].mean()                       # ties share their average rank
    return r


def meets(ci: Sequence[float] | None, bar: float, above: bool = True) -> bool:
    """A bar is met only when the whole interval is on its side (never without an interval)."""
    if ci is None:
        return False
    lo, hi = ci
    return bool(lo >= bar) if above else bool(hi <= bar)


def fmt(value: float, ci: Sequence[float] | None, digits: int = 2) -> str:
    """'0.94 [0.89, 0.97]' for tables; '0.94 [no interval]' where there is none."""
    if value is None or not np.isfinite(value):
        return "–"
    if ci is None:
        return f"{value:.{digits}f} [no interval]"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def finite(obj):
    """`obj` with every non-finite float replaced by None, so that JSON written from it is valid JSON
    (json.dumps would write NaN, which strict parsers refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
