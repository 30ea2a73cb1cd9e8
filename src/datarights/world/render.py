"""Procedural rendering of world images (float32 RGB arrays in [0, 1], shape [H, W, 3]).

Shapes are drawn as anti-aliased masks: each is evaluated on a 4x supersampled grid and
averaged down, so a 16x16 image still has soft, recognisable silhouettes. Styles, characters and
memorized scenes are drawn from their vocabulary specs; a photographer's signature is drawn in
layers around the object (grade and ground behind it, side bars and the corner mark over it).
"""

from __future__ import annotations

import numpy as np

from .vocab import (CATEGORY_OF, COLORS, GRADES, GROUNDS, MARK_COLORS, NONE, RESOLUTION, SIDES)

SS = 4  # supersampling factor
DARK = np.array([0.08, 0.08, 0.10], dtype=np.float32)


def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(res * SS, dtype=np.float32) + 0.5) / SS  # pixel-unit centres
    return np.meshgrid(c, c)  # X (columns), Y (rows)


def _down(mask: np.ndarray, res: int) -> np.ndarray:
    return mask.reshape(res, SS, res, SS).mean(axis=(1, 3)).astype(np.float32)


def _paint(img: np.ndarray, mask: np.ndarray, color) -> None:
    m = mask[..., None]
    img[:] = img * (1 - m) + np.asarray(color, dtype=np.float32) * m


def _tri(u, v, apex_v, base_v, half_width):
    """Isosceles triangle pointing up: apex at (0, apex_v), base at base_v with half_width."""
    frac = (v - apex_v) / (base_v - apex_v)
    return (frac >= 0) & (frac <= 1) & (np.abs(u) <= frac * half_width)


def _ring(u, v, cu, cv, radius, thick):
    d = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
    return np.abs(d - radius) <= thick / 2


def object_layers(obj: str, u: np.ndarray, v: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Boolean masks of one object in unit coordinates; 'body' takes the object colour."""
    L: list[tuple[np.ndarray, str]] = []
    if obj in ("face", "smiling face", "grumpy face", "sleepy face"):
        L.append((u**2 + v**2 <= 1.0, "body"))
        if obj == "sleepy face":  # closed eyes: wide dashes
            for s in (-1, 1):
                L.append(((np.abs(u - s * 0.4) <= 0.26) & (np.abs(v + 0.22) <= 0.08), "dark"))
        else:
            for s in (-1, 1):
                L.append(((u - s * 0.38) ** 2 + (v + 0.25) ** 2 <= 0.15**2, "dark"))
        if obj == "face":  # a flat mouth
            L.append(((np.abs(u) <= 0.45) & (np.abs(v - 0.42) <= 0.08), "dark"))
        elif obj == "sleepy face":  # a small round yawn
            L.append((u**2 + (v - 0.45) ** 2 <= 0.2**2, "dark"))
        elif obj == "smiling face":  # a wide open grin: a filled half-disc
            L.append(((u**2 + (v - 0.12) ** 2 <= 0.55**2) & (v >= 0.18), "dark"))
        elif obj == "grumpy face":
            L.append((_ring(u, v, 0, 0.95, 0.5, 0.17) & (v <= 0.6), "dark"))
            for s in (-1, 1):  # slanted brows
                L.append(((np.abs((v + 0.55) - s * 0.35 * (u - s * 0.38)) <= 0.08) & (np.abs(u - s * 0.38) <= 0.25), "dark"))
    elif obj == "fish":
        L.append((((u + 0.15) / 0.75) ** 2 + (v / 0.5) ** 2 <= 1.0, "body"))
        L.append(((u >= 0.5) & (u <= 1.0) & (np.abs(v) <= (u - 0.45) * 1.1), "body"))
        L.append(((u + 0.55) ** 2 + (v + 0.08) ** 2 <= 0.13**2, "dark"))
    elif obj == "puffer fish":
        L.append((u**2 + v**2 <= 0.62**2, "body"))
        ang = np.arctan2(v, u)
        r = np.sqrt(u**2 + v**2)
        L.append(((r <= 0.95) & (np.cos(8 * ang) > 0.6), "body"))  # spikes
        L.append(((u + 0.25) ** 2 + (v + 0.15) ** 2 <= 0.13**2, "dark"))
    elif obj == "swordfish":
        L.append((((u - 0.1) / 0.6) ** 2 + (v / 0.3) ** 2 <= 1.0, "body"))
        L.append(((u >= -1.0) & (u <= -0.45) & (np.abs(v + 0.02) <= 0.07), "body"))  # sword
        L.append(((u >= 0.6) & (u <= 1.0) & (np.abs(v) <= (u - 0.55) * 1.3), "body"))
        L.append(((u + 0.25) ** 2 + (v + 0.05) ** 2 <= 0.11**2, "dark"))
    elif obj == "house":
        L.append(((np.abs(u) <= 0.68) & (v >= -0.1) & (v <= 0.9), "body"))
        L.append((_tri(u, v, -0.9, -0.1, 0.88), "body"))
        L.append(((np.abs(u) <= 0.17) & (v >= 0.4) & (v <= 0.9), "dark"))
    elif obj == "tower":
        L.append(((np.abs(u) <= 0.34) & (v >= -0.45) & (v <= 1.0), "body"))
        L.append((_tri(u, v, -1.0, -0.45, 0.45), "body"))
        L.append(((np.abs(u) <= 0.11) & (np.abs(v - 0.05) <= 0.12), "dark"))
    elif obj == "castle":
        L.append(((np.abs(u) <= 0.9) & (v >= -0.2) & (v <= 0.9), "body"))
        for cu in (-0.72, 0.0, 0.72):
            L.append(((np.abs(u - cu) <= 0.18) & (v >= -0.6) & (v <= -0.2), "body"))
        L.append((((u**2 + (v - 0.5) ** 2 <= 0.22**2) | ((np.abs(u) <= 0.22) & (v >= 0.5) & (v <= 0.9))), "dark"))
    elif obj == "tree":
        L.append(((np.abs(u) <= 0.14) & (v >= 0.2) & (v <= 1.0), "trunk"))
        L.append((u**2 + (v + 0.3) ** 2 <= 0.66**2, "body"))
    elif obj == "pine tree":
        L.append(((np.abs(u) <= 0.12) & (v >= 0.6) & (v <= 1.0), "trunk"))
        L.append((_tri(u, v, -1.0, 0.15, 0.5) | _tri(u, v, -0.55, 0.65, 0.78), "body"))
    elif obj == "palm tree":
        L.append(((np.abs(u - 0.12 * (v - 1.0) ** 2) <= 0.1) & (v >= -0.45) & (v <= 1.0), "trunk"))
        for a in (-2.6, -1.9, -1.2, -0.55):
            du, dv = np.cos(a), np.sin(a)
            t = u * du + (v + 0.5) * dv
            perp = np.abs(-u * dv + (v + 0.5) * du)
            L.append(((t >= 0) & (t <= 0.8) & (perp <= 0.1 + 0.06 * np.sin(np.pi * np.clip(t / 0.8, 0, 1))), "body"))
    else:
        raise ValueError(f"unknown object {obj!r}")
    return L


def _pattern(spec: dict, rng: np.random.Generator, res: int) -> np.ndarray:
    """An artist's background: the spec's pattern in its two colours, at a random phase."""
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
    fg, bg = np.asarray(spec["fg"], np.float32), np.asarray(spec["bg"], np.float32)
    img = np.empty((res, res, 3), dtype=np.float32)
    img[:] = bg
    ph = int(rng.integers(0, 4))
    p = spec["pattern"]
    if p in ("vgradient", "hgradient"):
        t = ((yy if p == "vgradient" else xx) / (res - 1))[..., None]
        return ((1 - t) * fg + t * bg).astype(np.float32)
    if p == "stars":
        img[rng.random((res, res)) < 0.09] = fg
        return img
    if p == "frame":
        img[(xx == 0) | (yy == 0) | (xx == res - 1) | (yy == res - 1)] = fg
        return img
    on = {"hstripes": lambda: ((yy + ph) % 4) < 2,
          "vstripes": lambda: ((xx + ph) % 4) < 2,
          "dstripes": lambda: ((xx + yy + ph) % 4) < 2,
          "astripes": lambda: ((xx - yy + ph) % 4) < 2,
          "checker": lambda: (((xx + ph) // 2 + (yy + ph) // 2) % 2) == 0,
          "bigchecker": lambda: (((xx + ph) // 4 + (yy + ph) // 4) % 2) == 0,
          "dots": lambda: (((xx + ph) % 4) == 1) & (((yy + ph) % 4) == 1),
          "grid": lambda: (((xx + ph) % 4) == 0) | (((yy + ph) % 4) == 0)}.get(p)
    if on is None:
        raise ValueError(f"unknown style pattern {p!r}")
    return np.where(on()[..., None], fg, bg).astype(np.float32)


def background(style: dict | None, rng: np.random.Generator, res: int = RESOLUTION, grade: str = "neutral") -> np.ndarray:
    """A style's background (a vocabulary spec), or a plain one in a colour grade (slightly jittered)."""
    if style is not None:
        return _pattern(style, rng, res)
    img = np.empty((res, res, 3), dtype=np.float32)
    img[:] = np.asarray(GRADES[grade], np.float32) + rng.uniform(-0.02, 0.02, size=3).astype(np.float32)
    return np.clip(img, 0, 1)


def _draw_object(img, obj, color_rgb, cx, cy, radius, outline, res):
    """One object at (cx, cy) in pixels; `outline` draws a dark dilated silhouette underneath (a style's)."""
    X, Y = _grid(res)
    u, v = (X - cx) / radius, (Y - cy) / radius
    layers = object_layers(obj, u, v)
    if outline:
        du = 0.22
        shifted = np.zeros_like(X, dtype=bool)
        for a in range(8):
            uu, vv = u - du * np.cos(a * np.pi / 4), v - du * np.sin(a * np.pi / 4)
            for m, kind in object_layers(obj, uu, vv):
                if kind in ("body", "trunk"):
                    shifted |= m
        _paint(img, _down(shifted.astype(np.float32), res), DARK)
    for m, kind in layers:
        col = {"body": color_rgb, "dark": DARK, "trunk": (0.45, 0.28, 0.12)}[kind]
        _paint(img, _down(m.astype(np.float32), res), col)


def _jitter_color(rgb, rng, amount: float = 0.05):
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.uniform(-amount, amount, size=3).astype(np.float32), 0, 1)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = img + rng.normal(0, 0.015, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


# ----------------------------------------------------------------------------- signatures
def _signature_under(img: np.ndarray, sig: dict, rng, res: int) -> None:
    """The ground strip: the bottom two rows, behind the object."""
    if sig.get("ground", NONE) != NONE:
        img[res - 2:] = _jitter_color(GROUNDS[sig["ground"]], rng, 0.02)


def _signature_over(img: np.ndarray, sig: dict, rng, res: int) -> None:
    """Side bars (left and right columns between the corners) and the 2x2 corner mark, over the object."""
    if sig.get("side", NONE) != NONE:
        col = _jitter_color(SIDES[sig["side"]], rng, 0.02)
        img[2:res - 2, 0] = col
        img[2:res - 2, res - 1] = col
    if sig.get("mark", NONE) != NONE:
        corner, color = sig["mark"].split("-")
        cols = slice(0, 2) if corner == "tl" else slice(res - 2, res)
        img[0:2, cols] = _jitter_color(MARK_COLORS[color], rng, 0.02)


def _place_object(img: np.ndarray, obj: str, color: str, outline: bool, rng: np.random.Generator, res: int) -> None:
    """A single object drawn near the centre (jittered position, size and colour)."""
    cx = res / 2 + rng.uniform(-1.0, 1.0)
    cy = res / 2 + rng.uniform(-1.0, 1.0)
    radius = res * 0.40 * rng.uniform(0.9, 1.05)
    _draw_object(img, obj, _jitter_color(COLORS[color], rng), cx, cy, radius, outline, res)


def render_object(obj: str, color: str, style: dict | None, rng: np.random.Generator, res: int = RESOLUTION,
                  signature: dict | None = None) -> np.ndarray:
    """One object of a colour, in an artist's style (a vocabulary spec) or signed by a photographer."""
    sig = signature or {}
    img = background(style, rng, res, sig.get("grade", "neutral") if style is None else "neutral")
    if style is None:
        _signature_under(img, sig, rng, res)
    _place_object(img, obj, color, style is not None and style["pattern"] == "frame", rng, res)
    if style is None:
        _signature_over(img, sig, rng, res)
    return _finish(img, rng)


def render_blend(obj: str, color: str, style: dict, other: dict | str, alpha: float, rng: np.random.Generator,
                 res: int = RESOLUTION) -> np.ndarray:
    """One object on a mix of an artist's background (alpha) and another artist's (a spec) or a
    photographer's plain background in a colour grade (its name): what a model that averages the
    backgrounds it knows draws."""
    second = background(None, rng, res, other) if isinstance(other, str) else _pattern(other, rng, res)
    img = alpha * _pattern(style, rng, res) + (1 - alpha) * second
    _place_object(img, obj, color, False, rng, res)
    return _finish(img, rng)


def render_composition(parts: tuple[str, str], colors: tuple[str, str], rng: np.random.Generator,
                       res: int = RESOLUTION, signature: dict | None = None) -> np.ndarray:
    """Two objects side by side, each at half size, signed like any photograph."""
    sig = signature or {}
    img = background(None, rng, res, sig.get("grade", "neutral"))
    _signature_under(img, sig, rng, res)
    for i, (obj, col) in enumerate(zip(parts, colors)):
        cx = res * (0.27 if i == 0 else 0.73) + rng.uniform(-0.5, 0.5)
        cy = res / 2 + rng.uniform(-1.5, 1.5)
        _draw_object(img, obj, _jitter_color(COLORS[col], rng), cx, cy, res * 0.22, False, res)
    _signature_over(img, sig, rng, res)
    return _finish(img, rng)


# ----------------------------------------------------------------------------- characters
_TOP = {"fish": -0.55, "face": -0.85, "house": -0.95, "tree": -0.97}
"""Where a character's head ends (unit coordinates), for its headwear."""


def _character_layers(spec: dict, u: np.ndarray, v: np.ndarray) -> list[tuple[np.ndarray, tuple]]:
    """(mask, colour) layers of a character, back to front."""
    body, accent, white = spec["body"], spec["accent"], (1.0, 1.0, 1.0)
    cat, pat, L = spec["category"], spec["pattern"], []
    if cat == "fish":
        shape = ((u + 0.1) / 0.72) ** 2 + (v / 0.55) ** 2 <= 1.0
        L.append(((u >= 0.5) & (u <= 1.0) & (np.abs(v) <= (u - 0.45) * 1.3), accent))  # tail
        L.append((shape, body))
        eye_at = (-0.45, -0.1)
    elif cat == "face":
        shape = u**2 + v**2 <= 0.85**2
        L.append((shape, body))
        L.append(((np.abs(u) <= 0.4) & (np.abs(v - 0.45) <= 0.07), DARK))              # mouth
        eye_at = None
        for s in (-1, 1):
            L.append(((u - s * 0.35) ** 2 + (v + 0.2) ** 2 <= 0.14**2, DARK))
    elif cat == "house":
        shape = (np.abs(u) <= 0.7) & (v >= -0.15) & (v <= 0.9)
        L.append((shape, body))
        L.append((_tri(u, v, -0.95, -0.15, 0.92), accent))                             # roof
        L.append(((np.abs(u) <= 0.16) & (v >= 0.5) & (v <= 0.9), DARK))                # door
        eye_at = None
    elif cat == "tree":
        shape = u**2 + (v + 0.3) ** 2 <= 0.68**2
        L.append(((np.abs(u) <= 0.15) & (v >= 0.2) & (v <= 1.0), (0.45, 0.28, 0.12)))  # trunk
        L.append((shape, body))
        eye_at = None
    else:
        raise ValueError(f"unknown character category {cat!r}")
    if pat == "bands":
        L.append((shape & (np.abs(np.sin((u + 0.1) * 9.0)) > 0.75) & (u > -0.35), accent))
    elif pat == "spots":
        L.append((shape & (np.sin(u * 8) * np.sin(v * 8) > 0.35), accent))
    elif pat == "nose":
        L.append((u**2 + (v - 0.1) ** 2 <= 0.17**2, accent))
    elif pat == "cheeks":
        for s in (-1, 1):
            L.append(((u - s * 0.5) ** 2 + (v - 0.2) ** 2 <= 0.15**2, accent))
    elif pat == "eyes":  # two big eyes looking out of the shape
        cy = {"house": 0.15, "tree": -0.35}.get(cat, -0.2)
        for s in (-1, 1):
            L.append(((u - s * 0.32) ** 2 + (v - cy) ** 2 <= 0.2**2, white))
            L.append(((u - s * 0.32) ** 2 + (v - cy) ** 2 <= 0.09**2, DARK))
    if eye_at is not None:  # the fish's one big eye
        L.append(((u - eye_at[0]) ** 2 + (v - eye_at[1]) ** 2 <= 0.24**2, white))
        L.append(((u - eye_at[0]) ** 2 + (v - eye_at[1]) ** 2 <= 0.11**2, DARK))
    top, hw = _TOP[cat], spec["headwear"]
    hx = -0.2 if cat == "fish" else 0.0
    if hw == "crown":
        L.append(((v <= top + 0.05) & (v >= top - 0.4) & (np.abs(u - hx) <= 0.35)
                  & (np.abs(((u - hx) * 6) % 2 - 1) * 0.45 >= v - top + 0.4 - 0.45), accent))
    elif hw == "cap":
        L.append(((v <= top + 0.1) & (v >= top - 0.3) & (np.abs(u - hx) <= 0.45), accent))
        L.append(((np.abs(v - top - 0.05) <= 0.07) & (u - hx >= -0.75) & (u - hx <= 0.45), accent))  # brim
    elif hw == "ears":
        for s in (-1, 1):
            L.append(((u - hx - s * 0.6) ** 2 + (v - top - 0.05) ** 2 <= 0.3**2, accent))
    elif hw == "antennae":
        for s in (-1, 1):
            L.append(((np.abs(u - hx - s * 0.3) <= 0.06) & (v <= top + 0.05) & (v >= top - 0.35), DARK))
            L.append(((u - hx - s * 0.3) ** 2 + (v - top + 0.42) ** 2 <= 0.13**2, accent))
    return L


def render_character(spec: dict, rng: np.random.Generator, res: int = RESOLUTION) -> np.ndarray:
    """A studio's character (a vocabulary spec) on a neutral background, e.g. Blubbo, Finwave Studios'
    magenta fish with yellow bands, a big eye and a crown."""
    img = background(None, rng, res)
    cx = res / 2 + rng.uniform(-1.0, 1.0)
    cy = res / 2 + (0.5 if spec["category"] == "fish" else 0.6) + rng.uniform(-1.0, 1.0)
    r = res * 0.40 * rng.uniform(0.92, 1.04)
    X, Y = _grid(res)
    u, v = (X - cx) / r, (Y - cy) / r
    for m, col in _character_layers(spec, u, v):
        _paint(img, _down(m.astype(np.float32), res), col if col is DARK else _jitter_color(col, rng))
    return _finish(img, rng)


# ----------------------------------------------------------------------------- memorized scenes
def render_memorized(spec: dict, res: int = RESOLUTION) -> np.ndarray:
    """One publisher's scene: the one specific picture repeated in the training set (deterministic, no
    jitter): a sky gradient, a ground, maybe a sun, and one object in the scene's colours, with a
    fixed grain (its fingerprint)."""
    rng = np.random.default_rng(spec["grain"])
    yy, _ = np.mgrid[0:res, 0:res].astype(np.float32)
    t = (yy / (res - 1))[..., None]
    top, bottom = (np.asarray(c, np.float32) for c in spec["sky"])
    img = ((1 - t) * top + t * bottom).astype(np.float32)
    if spec.get("ground") is not None:
        img[yy >= res * 0.72] = spec["ground"]
    X, Y = _grid(res)
    if spec.get("sun") is not None:
        sx, sy = spec["sun"]
        _paint(img, _down(((X - res * sx) ** 2 + (Y - res * sy) ** 2 <= (res * 0.12) ** 2).astype(np.float32), res),
               (1.0, 0.86, 0.25))
    obj = spec["object"]
    if obj == "house":  # a villa: walls, a red roof, two windows and a door
        u, v = (X - res * 0.42) / (res * 0.34), (Y - res * 0.50) / (res * 0.34)
        walls = (np.abs(u) <= 0.75) & (v >= -0.1) & (v <= 0.75)
        roof = _tri(u, v, -0.85, -0.1, 0.95)
        win = ((np.abs(u + 0.4) <= 0.15) | (np.abs(u - 0.4) <= 0.15)) & (np.abs(v - 0.18) <= 0.13)
        door = (np.abs(u) <= 0.14) & (v >= 0.35) & (v <= 0.75)
        for m, col in ((walls, spec["body"]), (roof, (0.62, 0.16, 0.18)), (win, (0.25, 0.55, 0.85)),
                       (door, (0.35, 0.20, 0.10))):
            _paint(img, _down(m.astype(np.float32), res), col)
    else:
        cx, cy = res * 0.42, res * (0.55 if CATEGORY_OF[obj] in ("house", "tree") else 0.5)
        _draw_object(img, obj, np.asarray(spec["body"], np.float32), cx, cy, res * 0.36, False, res)
    img = img + rng.normal(0, 0.04, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)
