"""Every limit on what a user may send, in one place, each checked before any work is done.

The README's "Limits" table lists these constants (a test keeps the two in step). The CLI and the
web service call the same checks, so a value refused by one is refused by the other, with the same
words. An id outside what the database can store is an unknown id (`NotFound`: the web answers
404), never an overflow.
"""

from __future__ import annotations

import json
import re

from .errors import DatarightsError, NotFound

MAX_ID = 2**63 - 1
"""Largest row id (ids, offsets, --model-id, work ids): a signed 64-bit integer, as SQL stores it."""
MAX_SEED = 2**63 - 1
"""Largest --seed (seeds are at least 0): a signed 64-bit integer, as every random generator takes it."""
MAX_COUNT = 1_000_000
"""Largest count any command takes (--n, --steps, --queries, --budget, --top, --workers, ...), and the
most images a world may have: more is a typo, not a job this library could finish."""
MAX_NAME = 200
"""Characters in an owner's, an admin's or a dataset's name (the schema's String(200))."""
MAX_CONCEPT = 200
"""Characters in an opt-out's concept and in its anchor (the schema's String(200))."""
MAX_PROMPT = 2000
"""Characters in a paid generation's prompt."""
MAX_CAPTION = 2000
"""Characters in a dataset row's `text` (the work's caption)."""
MAX_LABEL = 200
"""Characters in each label of a dataset row (`object`, `style`, `character`, ...)."""
MAX_WORKS_PER_OPTOUT = 10_000
"""Works one opt-out may list."""
MAX_PAGE = 1000
"""Rows one listing returns (`limit`)."""
MAX_TOKEN = 512
"""Characters in an API token as sent (issued tokens have 32)."""
MAX_UPLOAD = 8 * 1024 * 1024
"""Bytes of one uploaded image (also limited to files.MAX_IMAGE_PIXELS once its header is read)."""
MAX_UPLOAD_REQUEST = MAX_UPLOAD + 64 * 1024
"""Bytes of a whole upload request (the image plus its form fields and multipart framing)."""
MAX_JSON_BODY = 64 * 1024
"""Bytes of a JSON request body, and of a form without a file."""
MAX_JSON_DEPTH = 32
"""Nesting of a JSON document (request bodies, certificates): deeper is refused before parsing."""
MAX_CERTIFICATE_BYTES = 1024 * 1024
"""Bytes of a certificate file given to verify-certificate (issued ones are a few kB)."""
MAX_REVENUE_CENTS = 100_000_000
"""Largest revenue of one paid generation: 1,000,000.00 (a decimal amount with at most two places)."""
MAX_LORA_RANK = 1024
"""Largest --lora-rank before a model is loaded; once it is, the rank must also not exceed the
smaller side of the adapted matrices (a larger rank adds parameters and learns nothing more)."""
PERIOD_YEARS = (1970, 2999)
"""Years a statement period (YYYY-MM) may name."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(value, what: str, max_len: int, *, empty: bool = False, multiline: bool = False) -> str:
    """A string of at most `max_len` characters, stripped, without NUL or control characters
    (newlines and tabs allowed with `multiline`); refused with a one-line error otherwise."""
    if not isinstance(value, str):
        raise DatarightsError(f"{what} must be text, got {_kind(value)}")
    value = value.strip()
    if not value and not empty:
        raise DatarightsError(f"{what} must not be empty")
    if len(value) > max_len:
        raise DatarightsError(f"{what} is {len(value):,} characters long; at most {max_len:,} are allowed")
    bad = _CONTROL.search(value.replace("\n", "").replace("\t", "") if multiline else value)
    if bad:
        raise DatarightsError(f"{what} contains a control character ({ord(bad.group()):#04x}); use plain text")
    return value


def check_id(value, what: str) -> int:
    """A row id: a whole number (an int, or a string of ASCII digits); one outside 1..MAX_ID names no row
    (NotFound), anything else is refused as malformed."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DatarightsError(f"{what} must be a whole number, got {_kind(value)}")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,40}", value.strip()):
            raise DatarightsError(f"{what} must be a whole number, got {value[:40]!r}")
        value = int(value.strip())
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"unknown {what} {value if abs(value) < 10**24 else 'beyond any id'}")
    return value


def check_count(value: int, what: str, low: int = 0, high: int = MAX_ID) -> int:
    """An integer option such as --limit or offset, within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatarightsError(f"{what} must be a whole number, got {_kind(value)}")
    if not low <= value <= high:
        raise DatarightsError(f"{what} must be between {low:,} and {high:,}, got {short_repr(value)}")
    return value


PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def check_period(period) -> tuple[int, int]:
    """(year, month) of a statement period 'YYYY-MM' (ASCII digits, years in PERIOD_YEARS)."""
    m = PERIOD.fullmatch(period) if isinstance(period, str) else None
    if m is None:
        raise DatarightsError(f"the period must be a month such as 2026-11, got {short_repr(period)}")
    year, month = int(m.group(1)), int(m.group(2))
    if not PERIOD_YEARS[0] <= year <= PERIOD_YEARS[1]:
        raise DatarightsError(f"the period's year must be between {PERIOD_YEARS[0]} and {PERIOD_YEARS[1]}, got {year}")
    return year, month


def json_depth_ok(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests no deeper than `max_depth` (counted without parsing, so that a
    document nested 100,000 deep is refused before the parser recurses into it)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    depth, in_str, esc = 0, False, False
    for ch in data:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def loads_json(data: bytes | str, what: str, max_depth: int = MAX_JSON_DEPTH):
    """Parse untrusted JSON: UTF-8, at most `max_depth` deep, no NaN/Infinity; a one-line error otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DatarightsError(f"{what} is not UTF-8 text") from None
    if not json_depth_ok(data, max_depth):
        raise DatarightsError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError; so is a refused NaN
        raise DatarightsError(f"{what} is not valid JSON ({getattr(e, 'msg', e)})") from None


def _kind(value) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "nothing"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def short_repr(value) -> str:
    """repr(value), cut to 40 characters (an error message never repeats a huge input)."""
    s = repr(value)
    return s if len(s) <= 40 else s[:37] + "..."
