"""The vocabulary of the embedded world (World 2): every concept, its words, its owner, its neighbours,
and every owner's uncaptioned trace.

This module is the single source of truth for names. The generator draws them, the judge predicts
them, `datarights world info` prints them, and erasure/attribution use them as targets.

World 2 gives every owner a trace that the model can learn and reproduce but that the captions do
not name, so that attribution can be told apart from a text search:
- **photographers** sign with a *signature*, an uncaptioned combination of four rendered components
  (a background colour grade, a small corner mark, a ground strip along the bottom, side bars);
  any two photographers' signatures differ in at least two components, so a single mixed or misread
  component never names another photographer. Each photographer prefers two subjects, so who shot
  an image depends on what it shows; a control group (~20%) also credits itself in every caption;
- **artists** paint a background style; half of each artist's captions do not name the style;
- **studios** own characters, **publishers** own memorized scenes (each repeated at a dose); half of
  their captions are generic ("a fish", "a house").

A vocabulary is built from a preset's sizes (`Sizes`); smaller presets take a prefix of every list
of the default one, so the default judge reads them, and `large` extends the lists procedurally.
The module-level names (STYLES, CHARACTERS, ...) are the default preset's.
"""

from __future__ import annotations

import colorsys
import functools
import random
from dataclasses import asdict, dataclass, field

from ..errors import DatarightsError

WORLD_VERSION = 2
"""Version of the world's generator and vocabulary; world folders, judges and world models record it."""


def check_world_version(version, made: str, remedy: str) -> None:
    """Refuse a world folder, judge or model made for another world version: `made` says what it is
    and which version it was made for (ending with it), `remedy` how to make a current one."""
    if version != WORLD_VERSION:
        raise DatarightsError(f"{made} {version}; this datarights reads world version {WORLD_VERSION} ({remedy})")

RESOLUTION = 16

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.14),
    "green": (0.18, 0.66, 0.22),
    "blue": (0.18, 0.30, 0.86),
    "yellow": (0.96, 0.84, 0.10),
    "purple": (0.58, 0.20, 0.74),
    "orange": (0.96, 0.54, 0.10),
}

# category -> its generic object (the anchor) first, then the named instances.
CATEGORIES: dict[str, list[str]] = {
    "face": ["face", "smiling face", "grumpy face", "sleepy face"],
    "fish": ["fish", "puffer fish", "swordfish"],
    "house": ["house", "tower", "castle"],
    "tree": ["tree", "pine tree", "palm tree"],
}
OBJECTS: list[str] = [o for insts in CATEGORIES.values() for o in insts]
CATEGORY_OF: dict[str, str] = {o: c for c, insts in CATEGORIES.items() for o in insts}

NONE = "none"
PLAIN_STYLE = "plain"

PREFIXES = ["a", "a photo of a", "a picture of a", "an image of a"]
CHARACTER_TEMPLATES = ["{name}", "a picture of {name}", "an image of {name}", "a drawing of {name}"]
COMPOSITION_TEMPLATES = ["a {a} and a {b}", "a picture of a {a} and a {b}", "a photo of a {a} and a {b}"]
CREDIT = ", photo by {name}"
"""What a control-group photographer appends to every caption."""

# ----------------------------------------------------------------------------- signatures
GRADES: dict[str, tuple[float, float, float]] = {
    "neutral": (0.90, 0.90, 0.90),
    "warm": (0.97, 0.86, 0.70),
    "cool": (0.72, 0.83, 0.97),
    "mint": (0.74, 0.95, 0.79),
    "rose": (0.97, 0.76, 0.85),
    "slate": (0.58, 0.62, 0.68),
}
"""Background colour grade of a photographer's images (characters are drawn on 'neutral')."""
MARK_COLORS: dict[str, tuple[float, float, float]] = {
    "dark": (0.08, 0.08, 0.10), "red": (0.86, 0.08, 0.12), "blue": (0.10, 0.24, 0.88)}
MARKS: list[str] = [NONE] + [f"{corner}-{c}" for corner in ("tl", "tr") for c in MARK_COLORS]
"""A 2x2 watermark in the top-left or top-right corner, drawn over everything."""
GROUNDS: dict[str, tuple[float, float, float] | None] = {
    NONE: None, "sand": (0.87, 0.74, 0.48), "grass": (0.30, 0.62, 0.28), "water": (0.24, 0.50, 0.82),
    "brick": (0.60, 0.27, 0.21)}
"""A 2-pixel strip along the bottom, drawn behind the object."""
SIDES: dict[str, tuple[float, float, float] | None] = {NONE: None, "gold": (0.92, 0.70, 0.12), "teal": (0.08, 0.58, 0.60)}
"""1-pixel bars down the left and right edges (between the corners), drawn over the object."""
SIGNATURE_KEYS = ("grade", "mark", "ground", "side")
SIGNATURE_VALUES: dict[str, list[str]] = {"grade": list(GRADES), "mark": MARKS, "ground": list(GROUNDS),
                                          "side": list(SIDES)}
NO_SIGNATURE = {"grade": NONE, "mark": NONE, "ground": NONE, "side": NONE}


def signature_code() -> list[dict[str, str]]:
    """Every signature whose mark is the check symbol of the other three components: mark index =
    (grade + ground + side) mod 7. Two signatures that differ in one of grade, ground or side then
    also differ in the mark, so any two differ in at least two components (a code of minimum
    distance 2). The all-plain signature (neutral, no mark, no ground, no side) is left out: it is
    what an unsigned image looks like."""
    out = []
    for gi, g in enumerate(GRADES):
        for ri, r in enumerate(GROUNDS):
            for si, s in enumerate(SIDES):
                m = MARKS[(gi + ri + si) % len(MARKS)]
                sig = {"grade": g, "mark": m, "ground": r, "side": s}
                if not (g == "neutral" and m == r == s == NONE):
                    out.append(sig)
    return out


def signature_distance(a: dict, b: dict) -> int:
    return sum(a[k] != b[k] for k in SIGNATURE_KEYS)


# ----------------------------------------------------------------------------- artists' styles
# name -> the look it signs, its pattern (rendered by world.render), its two most similar styles.
_STYLES: list[tuple[str, str, dict, list[str]]] = [
    ("Ada Vell", "horizontal pastel-blue stripes", {"pattern": "hstripes", "fg": (0.62, 0.80, 0.96), "bg": (0.97, 0.97, 0.97)},
     ["Bruno Kask", "Elsa Brandt"]),
    ("Bruno Kask", "vertical pastel-green stripes", {"pattern": "vstripes", "fg": (0.66, 0.90, 0.62), "bg": (0.97, 0.97, 0.95)},
     ["Ada Vell", "Jonas Pike"]),
    ("Cleo Marr", "pink checkerboard", {"pattern": "checker", "fg": (0.97, 0.62, 0.78), "bg": (0.98, 0.94, 0.96)},
     ["Lena Sorel", "Dario Fenn"]),
    ("Dario Fenn", "brown polka dots on cream", {"pattern": "dots", "fg": (0.45, 0.28, 0.15), "bg": (0.96, 0.90, 0.74)},
     ["Cleo Marr", "Farid Osei"]),
    ("Elsa Brandt", "diagonal lavender stripes", {"pattern": "dstripes", "fg": (0.76, 0.68, 0.94), "bg": (0.98, 0.98, 0.98)},
     ["Ines Moro", "Ada Vell"]),
    ("Farid Osei", "starry night sky", {"pattern": "stars", "fg": (0.98, 0.98, 0.85), "bg": (0.05, 0.07, 0.24)},
     ["Greta Lund", "Dario Fenn"]),
    ("Greta Lund", "orange-to-purple sunset gradient", {"pattern": "vgradient", "fg": (0.99, 0.62, 0.22), "bg": (0.42, 0.16, 0.52)},
     ["Kaito Reyes", "Farid Osei"]),
    ("Hugo Tamm", "black frame and outlines on beige", {"pattern": "frame", "fg": (0.08, 0.08, 0.10), "bg": (0.93, 0.87, 0.72)},
     ["Jonas Pike", "Cleo Marr"]),
    ("Ines Moro", "anti-diagonal mint stripes", {"pattern": "astripes", "fg": (0.58, 0.90, 0.78), "bg": (0.98, 0.98, 0.97)},
     ["Elsa Brandt", "Bruno Kask"]),
    ("Jonas Pike", "grey grid lines on white", {"pattern": "grid", "fg": (0.52, 0.52, 0.55), "bg": (0.98, 0.98, 0.98)},
     ["Hugo Tamm", "Bruno Kask"]),
    ("Kaito Reyes", "teal-to-yellow gradient from left to right", {"pattern": "hgradient", "fg": (0.16, 0.62, 0.68), "bg": (0.98, 0.90, 0.45)},
     ["Greta Lund", "Ines Moro"]),
    ("Lena Sorel", "large coral checks", {"pattern": "bigchecker", "fg": (0.98, 0.55, 0.45), "bg": (0.99, 0.91, 0.86)},
     ["Cleo Marr", "Hugo Tamm"]),
]
PATTERNS = ("hstripes", "vstripes", "dstripes", "astripes", "checker", "bigchecker", "dots", "grid", "vgradient",
            "hgradient", "stars", "frame")

# ----------------------------------------------------------------------------- studios' characters
# Interleaved by studio, so that a preset's prefix spans the studios.
_CHARACTERS: list[tuple[str, dict]] = [
    ("Blubbo", {"owner": "Finwave Studios", "category": "fish", "body": (0.88, 0.12, 0.62), "accent": (0.98, 0.82, 0.10),
                "pattern": "bands", "headwear": "crown"}),
    ("Pip", {"owner": "Sunny Side Animation", "category": "face", "body": (0.98, 0.84, 0.20), "accent": (0.20, 0.35, 0.90),
             "pattern": "nose", "headwear": "cap"}),
    ("Casa", {"owner": "Brickhouse Pictures", "category": "house", "body": (0.96, 0.56, 0.16), "accent": (0.20, 0.36, 0.86),
              "pattern": "eyes", "headwear": "none"}),
    ("Gilly", {"owner": "Finwave Studios", "category": "fish", "body": (0.10, 0.68, 0.68), "accent": (0.98, 0.55, 0.12),
               "pattern": "spots", "headwear": "none"}),
    ("Momo", {"owner": "Sunny Side Animation", "category": "face", "body": (0.98, 0.70, 0.80), "accent": (0.10, 0.10, 0.12),
              "pattern": "cheeks", "headwear": "ears"}),
    ("Barky", {"owner": "Brickhouse Pictures", "category": "tree", "body": (0.12, 0.45, 0.20), "accent": (0.98, 0.98, 0.98),
               "pattern": "eyes", "headwear": "none"}),
    ("Captain Fin", {"owner": "Finwave Studios", "category": "fish", "body": (0.16, 0.22, 0.56), "accent": (0.92, 0.16, 0.16),
                     "pattern": "bands", "headwear": "cap"}),
    ("Zaza", {"owner": "Sunny Side Animation", "category": "face", "body": (0.46, 0.80, 0.34), "accent": (0.60, 0.20, 0.75),
              "pattern": "nose", "headwear": "antennae"}),
]
CHARACTER_PATTERNS = ("bands", "spots", "eyes", "nose", "cheeks")
HEADWEAR = ("none", "crown", "cap", "ears", "antennae")

# ----------------------------------------------------------------------------- memorized scenes
# Interleaved by publisher; each is one fixed picture repeated `dose` times (the preset's doses).
_SCENES: list[tuple[str, dict]] = [
    ("Rosa Villa postcard", {"owner": "Harbor Postcard Co", "object": "house", "sky": ((0.35, 0.62, 0.95), (0.75, 0.88, 1.0)),
                             "ground": (0.30, 0.62, 0.25), "body": (0.98, 0.66, 0.70), "sun": (0.82, 0.18), "grain": 1234}),
    ("Blue Lagoon poster", {"owner": "Atlas Posters", "object": "fish", "sky": ((0.10, 0.45, 0.70), (0.20, 0.75, 0.80)),
                            "ground": (0.90, 0.82, 0.55), "body": (0.98, 0.50, 0.12), "sun": None, "grain": 2345}),
    ("Old Pine print", {"owner": "Nordlys Prints", "object": "pine tree", "sky": ((0.20, 0.12, 0.35), (0.85, 0.45, 0.30)),
                        "ground": (0.20, 0.20, 0.22), "body": (0.10, 0.35, 0.18), "sun": (0.20, 0.25), "grain": 3456}),
    ("Mira portrait", {"owner": "Atlas Posters", "object": "smiling face", "sky": ((0.55, 0.20, 0.25), (0.80, 0.35, 0.30)),
                       "ground": None, "body": (0.96, 0.80, 0.62), "sun": None, "grain": 4567}),
    ("Harbor Tower postcard", {"owner": "Harbor Postcard Co", "object": "tower", "sky": ((0.98, 0.80, 0.45), (0.98, 0.95, 0.80)),
                               "ground": (0.18, 0.40, 0.75), "body": (0.85, 0.85, 0.80), "sun": (0.80, 0.20), "grain": 5678}),
    ("Palm Beach poster", {"owner": "Atlas Posters", "object": "palm tree", "sky": ((0.30, 0.75, 0.95), (0.98, 0.90, 0.60)),
                           "ground": (0.95, 0.85, 0.55), "body": (0.20, 0.60, 0.20), "sun": (0.78, 0.22), "grain": 6789}),
    ("Koi Pond print", {"owner": "Nordlys Prints", "object": "puffer fish", "sky": ((0.12, 0.30, 0.22), (0.20, 0.50, 0.35)),
                        "ground": None, "body": (0.98, 0.95, 0.90), "sun": None, "grain": 7890}),
    ("Castle Hill postcard", {"owner": "Harbor Postcard Co", "object": "castle", "sky": ((0.62, 0.70, 0.80), (0.90, 0.92, 0.95)),
                              "ground": (0.40, 0.55, 0.30), "body": (0.55, 0.52, 0.50), "sun": None, "grain": 8901}),
]

_COMPOSITIONS: list[tuple[str, tuple[str, str]]] = [
    ("face and tree", ("face", "tree")), ("fish and house", ("fish", "house")), ("tree and house", ("tree", "house")),
    ("face and fish", ("face", "fish")), ("fish and tree", ("fish", "tree")), ("face and house", ("face", "house")),
]
SUBJECT_WEIGHTS = {"face": 0.22, "fish": 0.22, "house": 0.22, "tree": 0.22, "composition": 0.12}
"""How often each subject is photographed over the whole world (each photographer prefers two)."""


# ----------------------------------------------------------------------------- sizes and presets
@dataclass(frozen=True)
class Sizes:
    """How big a world is: its number of images and of each kind of owner and concept."""

    n_images: int = 5000
    """Total number of training images."""
    photographers: int = 32
    """Photographers (each signs with a unique signature; Zipf-like sizes)."""
    artists: int = 12
    """Artists (each a background style)."""
    characters: int = 8
    """Characters (owned by studios: three for the first eight, then one more per four)."""
    memorized: int = 8
    """Memorized scenes, each repeated `doses[i]` times."""
    compositions: int = 3
    """Two-object compositions (photographed like objects)."""
    doses: tuple = (40, 40, 20, 20, 10, 10, 5, 5)
    """Copies of each memorized scene (cycled when there are more scenes than doses)."""
    min_photographer_images: int = 20
    """Every photographer holds at least this many images."""
    min_artist_images: int = 40
    """Every artist holds at least this many images."""
    styled_share: float = 0.27
    """Share of images painted by artists."""
    character_share: float = 0.08
    """Share of images that show a character."""
    control_share: float = 0.2
    """Share of photographers who credit themselves in every caption (the control group)."""
    uncaptioned_style: float = 0.5
    """Share of each artist's images whose caption does not name the style."""
    generic_caption: float = 0.5
    """Share of each character's and memorized scene's images captioned generically ('a fish')."""
    colorless_caption: float = 0.3
    """Share of object captions that do not name the colour ('a fish' rather than 'a red fish')."""

    def dose(self, i: int) -> int:
        return int(self.doses[i % len(self.doses)])


PRESETS: dict[str, Sizes] = {
    "tiny": Sizes(n_images=64, photographers=4, artists=3, characters=2, memorized=2, compositions=2, doses=(3, 2),
                  min_photographer_images=4, min_artist_images=2, styled_share=0.25, character_share=0.1),
    "small": Sizes(n_images=1500, photographers=12, artists=6, characters=4, memorized=4, compositions=3,
                   doses=(40, 20, 10, 5), min_artist_images=30),
    "default": Sizes(),
    "large": Sizes(n_images=20000, photographers=80, artists=48, characters=32, memorized=24, compositions=6,
                   doses=(40, 20, 10, 5)),
}
"""`tiny` for tests, `small` for the evaluations that retrain (leave-out, LDS), `default` for the
shipped model, `large` (>= 100 erasable concepts) for erasure at scale."""


def _names(first: list[str], last: list[str], n: int, seed: int, avoid: set[str] = frozenset()) -> list[str]:
    pairs = [f"{f} {l}" for f in first for l in last]
    random.Random(seed).shuffle(pairs)
    out = [p for p in pairs if p not in avoid][:n]
    if len(out) < n:
        raise ValueError(f"only {len(out)} names available, {n} asked")
    return out


_PHOTO_FIRST = ["Ana", "Ben", "Chen", "Dana", "Emil", "Fay", "Goran", "Hiro", "Iris", "Jonas", "Kemi", "Lars",
                "Mina", "Nils", "Omar", "Pia", "Quinn", "Rafa", "Sami", "Tove"]
_PHOTO_LAST = ["Abe", "Berg", "Costa", "Dahl", "Eze", "Frost", "Gale", "Holm", "Ito", "Juul", "Kerr", "Lind",
               "Mori", "Nash", "Ortiz", "Park", "Quist", "Ruiz", "Sato", "Toft"]
_ART_FIRST = ["Mara", "Noor", "Oskar", "Petra", "Rune", "Saskia", "Tariq", "Ulla", "Vera", "Wim", "Xenia", "Yara"]
_ART_LAST = ["Aalto", "Brink", "Crane", "Drach", "Ember", "Faye", "Gorm", "Hale", "Irving", "Jarl", "Kestrel", "Lorne"]
_STUDIO_WORDS = ["Lantern", "Pebble", "Comet", "Maple", "Harbor Light", "Tinfoil", "Velvet", "Acorn", "Marble", "Paper Moon"]
_CHAR_SYLLABLES = ["Bo", "Ki", "Lu", "Mi", "No", "Pa", "Ru", "Ta", "Vi", "Zo", "Fe", "Ga"]
_SCENE_PLACES = ["Amber Bay", "Birch Hollow", "Cedar Point", "Dune Ridge", "Elm Square", "Fjord Gate", "Glass Lake",
                 "Heron Isle", "Iron Quay", "Juniper Hill", "Kelp Cove", "Lark Meadow", "Moss Bridge", "North Pier",
                 "Opal Falls", "Pine Harbor", "Quartz Bay", "Reed Marsh"]
_SCENE_FORMATS = ["postcard", "poster", "print"]
_PUBLISHERS = ["Harbor Postcard Co", "Atlas Posters", "Nordlys Prints", "Meridian Press", "Saltwater Cards",
               "Northwind Editions"]


def _pastel(h: float, s: float = 0.45, v: float = 0.95) -> tuple[float, float, float]:
    return tuple(round(c, 3) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _extra_styles(n: int, taken: set[str]) -> list[tuple[str, str, dict, list[str]]]:
    """Procedural styles beyond the twelve drawn by hand: every pattern in eight pastel hues."""
    names = _names(_ART_FIRST, _ART_LAST, n, 11, taken)
    hues = [i / 8 + 0.03 for i in range(8)]
    combos = [(p, h) for h in hues for p in PATTERNS if p not in ("frame", "stars")]
    random.Random(13).shuffle(combos)
    out = []
    for name, (pattern, h) in zip(names, combos):
        dark = pattern in ("vgradient", "hgradient")
        spec = {"pattern": pattern, "fg": _pastel(h, 0.55, 0.85 if dark else 0.92), "bg": _pastel(h + 0.5, 0.12, 0.98)}
        out.append((name, f"{pattern} in hue {round(h * 360)}", spec, []))
    by_pattern: dict[str, list[str]] = {}
    for name, _, spec, _ in out:
        by_pattern.setdefault(spec["pattern"], []).append(name)
    return [(n_, look, spec, [m for m in by_pattern[spec["pattern"]] if m != n_][:2] or [out[0][0]])
            for n_, look, spec, _ in out]


def _extra_characters(n: int, start: int) -> list[tuple[str, dict]]:
    rng = random.Random(17)
    names, out = set(), []
    cats = list(CATEGORIES)
    while len(out) < n:
        name = rng.choice(_CHAR_SYLLABLES) + rng.choice(_CHAR_SYLLABLES).lower() + rng.choice(["", "o", "y", "a"])
        if name in names or name in dict(_CHARACTERS):
            continue
        names.add(name)
        i = start + len(out)
        studio = _STUDIO_WORDS[(i - 8) // 4 % len(_STUDIO_WORDS)] + " Studios"
        cat = cats[i % len(cats)]
        out.append((name, {"owner": studio, "category": cat, "body": _pastel(rng.random(), 0.75, 0.9),
                           "accent": _pastel(rng.random(), 0.9, 0.95), "pattern": rng.choice(CHARACTER_PATTERNS),
                           "headwear": rng.choice(HEADWEAR)}))
    return out


def _extra_scenes(n: int) -> list[tuple[str, dict]]:
    rng = random.Random(19)
    out = []
    for i in range(n):
        place, fmt = _SCENE_PLACES[i % len(_SCENE_PLACES)], _SCENE_FORMATS[i % len(_SCENE_FORMATS)]
        name = f"{place} {fmt}" if i < len(_SCENE_PLACES) else f"{place} {fmt} {i // len(_SCENE_PLACES) + 1}"
        obj = OBJECTS[(3 * i + 1) % len(OBJECTS)]
        sky = (_pastel(rng.random(), 0.6, 0.8), _pastel(rng.random(), 0.3, 0.98))
        out.append((name, {"owner": _PUBLISHERS[3 + i % 3], "object": obj, "sky": sky,
                           "ground": _pastel(rng.random(), 0.6, 0.6) if i % 2 else None,
                           "body": _pastel(rng.random(), 0.8, 0.9), "sun": (0.8, 0.2) if i % 3 == 0 else None,
                           "grain": 10_000 + i}))
    return out


@dataclass
class Vocabulary:
    """Every concept and owner of a world of given sizes (deterministic: it does not depend on the
    world's seed, so two worlds of one preset share names, signatures and preferences)."""

    sizes: Sizes
    styles: dict[str, dict] = field(default_factory=dict)
    characters: dict[str, dict] = field(default_factory=dict)
    memorized: dict[str, dict] = field(default_factory=dict)
    compositions: dict[str, tuple[str, str]] = field(default_factory=dict)
    photographers: dict[str, dict] = field(default_factory=dict)
    """name -> {"signature": {grade, mark, ground, side}, "subjects": [two preferred subjects], "control": bool, "rank": int}"""

    # ---------------------------------------------------------------- derived views
    @property
    def objects(self) -> list[str]:
        return OBJECTS

    @property
    def studios(self) -> list[str]:
        return list(dict.fromkeys(c["owner"] for c in self.characters.values()))

    @property
    def publishers(self) -> list[str]:
        return list(dict.fromkeys(m["owner"] for m in self.memorized.values()))

    @property
    def owners(self) -> list[str]:
        return [*self.styles, *self.studios, *self.publishers, *self.photographers]

    def owner_kind(self, owner: str) -> str | None:
        if owner in self.photographers:
            return "photographer"
        if owner in self.styles:
            return "artist"
        if owner in self.studios:
            return "studio"
        if owner in self.publishers:
            return "publisher"
        return None

    @property
    def subjects(self) -> list[str]:
        return [*CATEGORIES, *(["composition"] if self.compositions else [])]

    @functools.cached_property
    def labels(self) -> dict[str, list[str]]:
        """Label spaces of the judge (order is the class index); `memorized` is read by matching renders."""
        return {
            "object": [NONE, *OBJECTS],
            "category": [NONE, *CATEGORIES],
            "color": [NONE, *COLORS],
            "style": [PLAIN_STYLE, *self.styles],
            "character": [NONE, *self.characters],
            "memorized": [NONE, *self.memorized],
            "composition": [NONE, *self.compositions],
            "left_color": [NONE, *COLORS],
            "right_color": [NONE, *COLORS],
            "grade": [NONE, *GRADES],
            "mark": MARKS,
            "ground": list(GROUNDS),
            "side": list(SIDES),
        }

    def signature_owner(self, signature: dict) -> str | None:
        """The photographer whose signature this is exactly (None: no photographer's)."""
        return self._by_signature.get(tuple(signature.get(k, NONE) for k in SIGNATURE_KEYS))

    @functools.cached_property
    def _by_signature(self) -> dict[tuple, str]:
        return {tuple(p["signature"][k] for k in SIGNATURE_KEYS): name for name, p in self.photographers.items()}

    # ---------------------------------------------------------------- concepts
    def find_concept(self, name: str) -> tuple[str, dict] | None:
        """Look a concept up by its name (case-insensitive); returns (kind, entry) or None."""
        key = name.strip().lower()
        for kind, entries in self._concepts.items():
            for entry in entries:
                if entry["name"].lower() == key:
                    return kind, entry
        return None

    @functools.cached_property
    def _concepts(self) -> dict[str, list[dict]]:
        objects = []
        for cat, insts in CATEGORIES.items():
            for obj in insts[1:]:
                objects.append({"name": obj, "category": cat, "prompt": object_prompt(obj, "red"), "anchor": cat,
                                "nearby": [o for o in insts[1:] if o != obj]})
        styles = [{"name": s, "prompt": object_prompt("house", "red", s), "anchor": PLAIN_STYLE,
                   "nearby": [n for n in v["nearby"] if n in self.styles] or [n for n in self.styles if n != s][:2],
                   "owner": s, "look": v["look"]} for s, v in self.styles.items()]
        characters = []
        for n, v in self.characters.items():
            same = [c for c, w in self.characters.items() if c != n and w["category"] == v["category"]]
            characters.append({"name": n, "prompt": f"a picture of {n}", "anchor": v["category"],
                               "nearby": (same + CATEGORIES[v["category"]][1:])[:2], "owner": v["owner"],
                               "category": v["category"]})
        memorized = []
        for n, v in self.memorized.items():
            cat = CATEGORY_OF[v["object"]]
            others = [m for m, w in self.memorized.items() if m != n and CATEGORY_OF[w["object"]] == cat]
            memorized.append({"name": n, "prompt": v["prompt"], "anchor": cat,
                              "nearby": (others + [o for o in CATEGORIES[cat][1:] if o != v["object"]])[:2],
                              "owner": v["owner"], "dose": v["dose"], "category": cat})
        compositions = [{"name": n, "prompt": f"a {a} and a {b}", "anchor": a, "parts": [a, b],
                         "nearby": [b] + [m for m in self.compositions if m != n][:1]}
                        for n, (a, b) in self.compositions.items()]
        categories = [{"name": c, "prompt": object_prompt(c, "blue"), "instances": insts[1:]}
                      for c, insts in CATEGORIES.items()]
        return {"objects": objects, "styles": styles, "characters": characters, "memorized": memorized,
                "compositions": compositions, "categories": categories}

    def erasable(self) -> list[dict]:
        """Every concept an opt-out can name (object instances, styles, characters, memorized scenes,
        compositions), each with an anchor and nearby concepts."""
        return [e for k in ("objects", "styles", "characters", "memorized", "compositions") for e in self._concepts[k]]

    def info(self, counts: dict[str, int] | None = None) -> dict:
        """The vocabulary as one JSON-able dict (`datarights world info --json`).

        Every concept entry has `name` (the words that name it, usable as an erase target), `prompt`,
        `anchor`, `nearby` and, where one owner holds it, `owner`; `photographers` give each
        photographer's signature, preferred subjects and whether the captions credit them.
        """
        counts = counts or {}
        return {
            "world_version": WORLD_VERSION,
            "resolution": RESOLUTION,
            "sizes": asdict(self.sizes),
            "colors": list(COLORS),
            **self._concepts,
            "signature_components": SIGNATURE_VALUES,
            "photographers": [{"name": n, **p} for n, p in self.photographers.items()],
            "owners": [{"name": o, "kind": self.owner_kind(o), "images": counts.get(o, 0)} for o in self.owners],
        }


def _photographers(sizes: Sizes) -> dict[str, dict]:
    names = _names(_PHOTO_FIRST, _PHOTO_LAST, sizes.photographers, 7)
    code = signature_code()
    if sizes.photographers > len(code):
        raise ValueError(f"at most {len(code)} photographers can have distinct signatures, got {sizes.photographers}")
    random.Random(23).shuffle(code)
    rng = random.Random(29)
    subjects = [s for s in SUBJECT_WEIGHTS if s != "composition" or sizes.compositions]
    n_control = round(sizes.control_share * sizes.photographers)
    step = sizes.photographers / n_control if n_control else 0
    control = {int(2 + i * step) % sizes.photographers for i in range(n_control)}
    out = {}
    for rank, name in enumerate(names):
        first = rng.choices(subjects, [SUBJECT_WEIGHTS[s] for s in subjects])[0]
        rest = [s for s in subjects if s != first]
        second = rng.choices(rest, [SUBJECT_WEIGHTS[s] for s in rest])[0]
        out[name] = {"signature": code[rank], "subjects": [first, second], "control": rank in control, "rank": rank}
    return out


@functools.lru_cache(maxsize=16)
def build_vocabulary(sizes: Sizes) -> Vocabulary:
    """The vocabulary of a world of these sizes (prefixes of the default lists, extended procedurally)."""
    styles = list(_STYLES[:sizes.artists])
    if sizes.artists > len(_STYLES):
        styles += _extra_styles(sizes.artists - len(_STYLES), {s[0] for s in _STYLES})
    chars = list(_CHARACTERS[:sizes.characters])
    if sizes.characters > len(_CHARACTERS):
        chars += _extra_characters(sizes.characters - len(_CHARACTERS), len(_CHARACTERS))
    scenes = list(_SCENES[:sizes.memorized])
    if sizes.memorized > len(_SCENES):
        scenes += _extra_scenes(sizes.memorized - len(_SCENES))
    memorized = {}
    for i, (name, spec) in enumerate(scenes):
        memorized[name] = {**spec, "prompt": f"the {name}", "dose": sizes.dose(i)}
    comps = _COMPOSITIONS[:sizes.compositions]
    if sizes.compositions > len(_COMPOSITIONS):
        raise ValueError(f"at most {len(_COMPOSITIONS)} compositions, got {sizes.compositions}")
    rng = random.Random(31)
    cats = list(CATEGORIES)
    style_map = {}
    for name, look, spec, nearby in styles:
        style_map[name] = {"look": look, **spec, "nearby": nearby, "subjects": rng.sample(cats, 2)}
    return Vocabulary(sizes=sizes, styles=style_map, characters={n: dict(s) for n, s in chars}, memorized=memorized,
                      compositions=dict(comps), photographers=_photographers(sizes))


def object_prompt(obj: str, color: str | None = None, style: str | None = None, prefix: str = "a") -> str:
    """The canonical caption of a single object, e.g. 'a red grumpy face in Ada Vell style'."""
    words = f"{color} {obj}" if color else obj
    if prefix.endswith(" a") or prefix == "a":
        prefix = prefix[:-1] + ("an" if words[0] in "aeiou" else "a")
    text = f"{prefix} {words}"
    if style:
        text += f" in {style} style"
    return text


# ----------------------------------------------------------------------------- the default preset
DEFAULT: Vocabulary = build_vocabulary(PRESETS["default"])
STYLES: dict[str, dict] = DEFAULT.styles
STYLE_LABELS: list[str] = [PLAIN_STYLE, *STYLES]
CHARACTERS: dict[str, dict] = DEFAULT.characters
MEMORIZED: dict[str, dict] = DEFAULT.memorized
COMPOSITIONS: dict[str, tuple[str, str]] = DEFAULT.compositions
PHOTOGRAPHERS: list[str] = list(DEFAULT.photographers)
LABELS: dict[str, list[str]] = DEFAULT.labels


def info(counts: dict[str, int] | None = None, vocab: Vocabulary | None = None) -> dict:
    """The vocabulary as one JSON-able dict (the default preset's unless `vocab` is given)."""
    return (vocab or DEFAULT).info(counts)


def find_concept(name: str, vocab: Vocabulary | None = None) -> tuple[str, dict] | None:
    """Look a concept up by its name (case-insensitive) in the default vocabulary (or `vocab`)."""
    return (vocab or DEFAULT).find_concept(name)
