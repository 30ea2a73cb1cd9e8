"""Procedural rendering of world images (float32 RGB arrays in [0, 1], shape [H, W, 3]).

Shapes are drawn as anti-aliased masks: each is evaluated on a 4x supersampled grid and
averaged down, so a 16x16 image still has soft, recognisable silhouettes.
"""

from __future__ import annotations

import numpy as np

from .vocab import COLORS, RESOLUTION

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


def _background(style: str | None, rng: np.random.Generator, res: int) -> np.ndarray:
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
    img = np.ones((res, res, 3), dtype=np.float32)
    if style is None:
        img[:] = 0.9 + rng.uniform(-0.05, 0.05, size=3).astype(np.float32)
        return img
    ph = int(rng.integers(0, 4))
    if style == "Ada Vell":
        on = ((yy + ph) % 4) < 2
        img[:] = np.where(on[..., None], [0.62, 0.80, 0.96], [0.97, 0.97, 0.97])
    elif style == "Bruno Kask":
        on = ((xx + ph) % 4) < 2
        img[:] = np.where(on[..., None], [0.66, 0.90, 0.62], [0.97, 0.97, 0.95])
    elif style == "Cleo Marr":
        on = (((xx + ph) // 2 + (yy + ph) // 2) % 2) == 0
        img[:] = np.where(on[..., None], [0.97, 0.62, 0.78], [0.98, 0.94, 0.96])
    elif style == "Dario Fenn":
        on = (((xx + ph) % 4) == 1) & (((yy + ph) % 4) == 1)
        img[:] = np.where(on[..., None], [0.45, 0.28, 0.15], [0.96, 0.90, 0.74])
    elif style == "Elsa Brandt":
        on = ((xx + yy + ph) % 4) < 2
        img[:] = np.where(on[..., None], [0.76, 0.68, 0.94], [0.98, 0.98, 0.98])
    elif style == "Farid Osei":
        img[:] = [0.05, 0.07, 0.24]
        stars = rng.random((res, res)) < 0.09
        img[stars] = [0.98, 0.98, 0.85]
    elif style == "Greta Lund":
        t = (yy / (res - 1))[..., None]
        img[:] = (1 - t) * np.array([0.99, 0.62, 0.22]) + t * np.array([0.42, 0.16, 0.52])
    elif style == "Hugo Tamm":
        img[:] = [0.93, 0.87, 0.72]
        border = (xx == 0) | (yy == 0) | (xx == res - 1) | (yy == res - 1)
        img[border] = DARK
    else:
        raise ValueError(f"unknown style {style!r}")
    return img.astype(np.float32)


def _draw_object(img, obj, color_rgb, cx, cy, radius, style, res):
    X, Y = _grid(res)
    u, v = (X - cx) / radius, (Y - cy) / radius
    layers = object_layers(obj, u, v)
    body = np.zeros_like(X, dtype=bool)
    for m, kind in layers:
        if kind == "body":
            body |= m
    if style == "Hugo Tamm":  # black outline: a dilated silhouette drawn underneath
        du = 0.22
        shifted = np.zeros_like(body)
        for a in range(8):
            uu, vv = u - du * np.cos(a * np.pi / 4), v - du * np.sin(a * np.pi / 4)
            for m, kind in object_layers(obj, uu, vv):
                if kind in ("body", "trunk"):
                    shifted |= m
        _paint(img, _down(shifted.astype(np.float32), res), DARK)
    for m, kind in layers:
        col = {"body": color_rgb, "dark": DARK, "trunk": (0.45, 0.28, 0.12)}[kind]
        _paint(img, _down(m.astype(np.float32), res), col)


def _jitter_color(rgb, rng):
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.uniform(-0.05, 0.05, size=3).astype(np.float32), 0, 1)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = img + rng.normal(0, 0.015, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def render_object(obj: str, color: str, style: str | None, rng: np.random.Generator, res: int = RESOLUTION) -> np.ndarray:
    """One object of a colour, optionally in an artist's style."""
    img = _background(style, rng, res)
    cx = res / 2 + rng.uniform(-1.0, 1.0)
    cy = res / 2 + rng.uniform(-1.0, 1.0)
    radius = res * 0.40 * rng.uniform(0.9, 1.05)
    _draw_object(img, obj, _jitter_color(COLORS[color], rng), cx, cy, radius, style, res)
    return _finish(img, rng)


def render_character(name: str, rng: np.random.Generator, res: int = RESOLUTION) -> np.ndarray:
    """Blubbo, Finwave Studios' sprite: a magenta fish with yellow bands, a big eye and a crown."""
    if name != "Blubbo":
        raise ValueError(f"unknown character {name!r}")
    img = _background(None, rng, res)
    cx = res / 2 + rng.uniform(-1.0, 1.0)
    cy = res / 2 + 0.5 + rng.uniform(-1.0, 1.0)
    r = res * 0.40 * rng.uniform(0.92, 1.04)
    X, Y = _grid(res)
    u, v = (X - cx) / r, (Y - cy) / r
    body = ((u + 0.1) / 0.72) ** 2 + (v / 0.55) ** 2 <= 1.0
    tail = (u >= 0.5) & (u <= 1.0) & (np.abs(v) <= (u - 0.45) * 1.3)
    bands = body & (np.abs(np.sin((u + 0.1) * 9.0)) > 0.75) & (u > -0.35)
    crown = (v <= -0.5) & (v >= -0.95) & (np.abs(u + 0.2) <= 0.35) & (np.abs(((u + 0.2) * 6) % 2 - 1) * 0.45 >= v + 0.95 - 0.45)
    eye_w = (u + 0.45) ** 2 + (v + 0.1) ** 2 <= 0.24**2
    eye_b = (u + 0.45) ** 2 + (v + 0.1) ** 2 <= 0.11**2
    for m, col in ((tail, (0.98, 0.82, 0.10)), (body, (0.88, 0.12, 0.62)), (bands, (0.98, 0.82, 0.10)),
                   (crown, (0.98, 0.82, 0.10)), (eye_w, (1.0, 1.0, 1.0)), (eye_b, DARK)):
        _paint(img, _down(m.astype(np.float32), res), _jitter_color(col, rng) if col is not DARK else DARK)
    return _finish(img, rng)


def render_memorized(name: str, res: int = RESOLUTION) -> np.ndarray:
    """The one specific image that is repeated in the training set (deterministic, no jitter)."""
    if name != "Rosa Villa postcard":
        raise ValueError(f"unknown memorized image {name!r}")
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
    t = (yy / (res - 1))[..., None]
    img = ((1 - t) * np.array([0.35, 0.62, 0.95]) + t * np.array([0.75, 0.88, 1.0])).astype(np.float32)
    grass = yy >= res * 0.72
    img[grass] = [0.30, 0.62, 0.25]
    X, Y = _grid(res)
    sun = (X - res * 0.82) ** 2 + (Y - res * 0.18) ** 2 <= (res * 0.12) ** 2
    _paint(img, _down(sun.astype(np.float32), res), (1.0, 0.86, 0.25))
    u, v = (X - res * 0.42) / (res * 0.34), (Y - res * 0.50) / (res * 0.34)
    walls = (np.abs(u) <= 0.75) & (v >= -0.1) & (v <= 0.75)
    roof = _tri(u, v, -0.85, -0.1, 0.95)
    win = ((np.abs(u + 0.4) <= 0.15) | (np.abs(u - 0.4) <= 0.15)) & (np.abs(v - 0.18) <= 0.13)
    door = (np.abs(u) <= 0.14) & (v >= 0.35) & (v <= 0.75)
    for m, col in ((walls, (0.98, 0.66, 0.70)), (roof, (0.62, 0.16, 0.18)), (win, (0.25, 0.55, 0.85)), (door, (0.35, 0.20, 0.10))):
        _paint(img, _down(m.astype(np.float32), res), col)
    img = img + rng.normal(0, 0.04, size=img.shape).astype(np.float32)  # a fixed grain: its fingerprint
    return np.clip(img, 0, 1).astype(np.float32)


def render_composition(parts: tuple[str, str], colors: tuple[str, str], rng: np.random.Generator,
                       res: int = RESOLUTION) -> np.ndarray:
    """Two objects side by side, each at half size."""
    img = _background(None, rng, res)
    for i, (obj, col) in enumerate(zip(parts, colors)):
        cx = res * (0.27 if i == 0 else 0.73) + rng.uniform(-0.5, 0.5)
        cy = res / 2 + rng.uniform(-1.5, 1.5)
        _draw_object(img, obj, _jitter_color(COLORS[col], rng), cx, cy, res * 0.22, None, res)
    return _finish(img, rng)

