"""A 64-bit perceptual hash (DCT hash): near copies of an image hash within a few bits of it."""

from __future__ import annotations

import numpy as np
from PIL import Image

_N = 32


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_D = _dct_matrix(_N)


def phash(image: Image.Image) -> int:
    """1. grey, 32x32 (bicubic); 2. 2-D DCT-II; 3. the 8x8 lowest frequencies without the DC term's
    influence on the threshold: bit = coefficient > median. Returned as a signed 64-bit integer."""
    g = np.asarray(image.convert("L").resize((_N, _N), Image.BICUBIC), dtype=np.float64)
    c = (_D @ g @ _D.T)[:8, :8].ravel()
    bits = c > np.median(c[1:])
    v = int("".join("1" if b else "0" for b in bits), 2)
    return v - (1 << 64) if v >= 1 << 63 else v

