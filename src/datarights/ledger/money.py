"""Money is integer cents, and a split always sums exactly to what was split."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from ..errors import DatarightsError


def to_cents(amount: str | float | Decimal) -> int:
    """'0.04' -> 4. Refuses negative, non-finite and sub-cent amounts (no silent rounding of money)."""
    try:
        d = Decimal(str(amount).strip())
    except InvalidOperation:
        raise DatarightsError(f"--revenue must be an amount such as 0.04, got {amount!r}") from None
    if not d.is_finite() or d < 0:
        raise DatarightsError(f"--revenue must be a finite amount of at least 0, got {amount!r}")
    cents = d * 100
    if cents != cents.to_integral_value():
        raise DatarightsError(f"--revenue {amount!r} has a fraction of a cent; give whole cents (e.g. 0.04)")
    return int(cents)


def split_cents(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Split `total` cents by `shares` (largest-remainder rounding, the Hamilton method).

    Each owner first gets the floor of total * share (shares normalised to sum 1); the cents left
    over go, one each, to the owners with the largest fractional parts (ties: by name, so a split is
    reproducible). The parts sum exactly to `total`, and no part differs from its exact value by a
    cent or more.
    """
    if total < 0:
        raise DatarightsError(f"cannot split a negative amount ({total} cents)")
    clean = {o: float(s) for o, s in shares.items() if math.isfinite(float(s)) and float(s) > 0}
    mass = sum(clean.values())
    if not clean or mass <= 0:
        raise DatarightsError("no owner has a positive share to split revenue by")
    exact = {o: total * s / mass for o, s in clean.items()}
    out = {o: int(math.floor(v)) for o, v in exact.items()}
    left = total - sum(out.values())
    for o in sorted(exact, key=lambda o: (-(exact[o] - out[o]), o))[:left]:
        out[o] += 1
    return out
