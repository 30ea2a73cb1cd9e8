"""Money is integer cents, and a split always sums exactly to what was split."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from ..errors import DatarightsError
from ..limits import MAX_REVENUE_CENTS, short_repr


AMOUNT = re.compile(r"([0-9]{1,9})(?:\.([0-9]{1,2}))?")


def to_cents(amount: str | float | Decimal) -> int:
    """'0.04' -> 4: a decimal amount in ASCII digits with at most two places, from 0 to
    limits.MAX_REVENUE_CENTS / 100. No exponent ('1e3'), no digit separators ('1_000'), no other
    scripts' digits, no fractions of a cent (no silent rounding of money)."""
    if isinstance(amount, (int, float, Decimal)) and not isinstance(amount, bool):
        if not Decimal(str(amount)).is_finite():
            raise DatarightsError(f"the revenue must be an amount such as 0.04, got {amount!r}")
        amount = format(Decimal(str(amount)), "f")
    text = amount.strip() if isinstance(amount, str) else None
    m = AMOUNT.fullmatch(text) if text is not None else None
    if m is None:
        shown = short_repr(amount)
        if text is not None and re.fullmatch(r"[0-9]+\.[0-9]{3,}", text):
            raise DatarightsError(f"the revenue {shown} has a fraction of a cent; give whole cents (e.g. 0.04)")
        raise DatarightsError(f"the revenue must be an amount such as 0.04 (digits, at most two decimals), got {shown}")
    cents = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if cents > MAX_REVENUE_CENTS:
        raise DatarightsError(f"the revenue {text} is more than one generation may earn "
                              f"(at most {MAX_REVENUE_CENTS // 100:,}.00)")
    return cents


CURRENCY = re.compile(r"[A-Z]{3}")


def check_currency(code) -> str:
    """An ISO 4217 code such as USD or EUR (amounts are kept in its minor unit, cents)."""
    if not isinstance(code, str) or not CURRENCY.fullmatch(code.strip().upper()):
        raise DatarightsError(f"the currency must be a three-letter code such as USD or EUR, got {str(code)[:20]!r}")
    return code.strip().upper()


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
