"""The vocabulary of the embedded world: every concept, its words, its owner and its neighbours.

This module is the single source of truth for names. The generator draws them, the judge predicts
them, `datarights world info` prints them, and erasure/attribution use them as targets.
"""

from __future__ import annotations

import random

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

# Artist styles: (artist name, the look it signs, its two most similar styles).
STYLES: dict[str, dict] = {
    "Ada Vell": {"look": "horizontal pastel-blue stripes", "nearby": ["Bruno Kask", "Elsa Brandt"]},
    "Bruno Kask": {"look": "vertical pastel-green stripes", "nearby": ["Ada Vell", "Elsa Brandt"]},
    "Cleo Marr": {"look": "pink checkerboard", "nearby": ["Dario Fenn", "Hugo Tamm"]},
    "Dario Fenn": {"look": "brown polka dots on cream", "nearby": ["Cleo Marr", "Farid Osei"]},
    "Elsa Brandt": {"look": "diagonal lavender stripes", "nearby": ["Ada Vell", "Bruno Kask"]},
    "Farid Osei": {"look": "starry night sky", "nearby": ["Greta Lund", "Dario Fenn"]},
    "Greta Lund": {"look": "orange-to-purple sunset gradient", "nearby": ["Farid Osei", "Hugo Tamm"]},
    "Hugo Tamm": {"look": "black frame and outlines on beige", "nearby": ["Cleo Marr", "Greta Lund"]},
}
PLAIN_STYLE = "plain"
STYLE_LABELS: list[str] = [PLAIN_STYLE, *STYLES]

CHARACTERS: dict[str, dict] = {
    "Blubbo": {"owner": "Finwave Studios", "anchor": "fish", "nearby": ["puffer fish", "swordfish"]},
}

MEMORIZED: dict[str, dict] = {
    "Rosa Villa postcard": {
        "owner": "Harbor Postcard Co",
        "prompt": "the Rosa Villa postcard",
        "anchor": "house",
        "nearby": ["tower", "castle"],
    },
}

# Compositions: two generic objects side by side; each part also appears alone.
COMPOSITIONS: dict[str, tuple[str, str]] = {
    "face and tree": ("face", "tree"),
    "fish and house": ("fish", "house"),
    "tree and house": ("tree", "house"),
}

NONE = "none"
# Label spaces of the judge (order is the class index).
LABELS: dict[str, list[str]] = {
    "object": [NONE, *OBJECTS],
    "category": [NONE, *CATEGORIES],
    "color": [NONE, *COLORS],
    "style": STYLE_LABELS,
    "character": [NONE, *CHARACTERS],
    "memorized": [NONE, *MEMORIZED],
    "composition": [NONE, *COMPOSITIONS],
}

PREFIXES = ["a", "a photo of a", "a picture of a", "an image of a"]
CHARACTER_TEMPLATES = ["{name}", "a picture of {name}", "an image of {name}", "a drawing of {name}"]
COMPOSITION_TEMPLATES = ["a {a} and a {b}", "a picture of a {a} and a {b}", "a photo of a {a} and a {b}"]


def _owner_names(n: int, seed: int = 7) -> list[str]:
    first = ["Ana", "Ben", "Chen", "Dana", "Emil", "Fay", "Goran", "Hiro", "Iris", "Jonas", "Kemi", "Lars",
             "Mina", "Nils", "Omar", "Pia", "Quinn", "Rafa", "Sami", "Tove"]
    last = ["Abe", "Berg", "Costa", "Dahl", "Eze", "Frost", "Gale", "Holm", "Ito", "Juul", "Kerr", "Lind",
            "Mori", "Nash", "Ortiz", "Park", "Quist", "Ruiz", "Sato", "Toft"]
    pairs = [f"{f} {l}" for f in first for l in last]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


N_PHOTOGRAPHERS = 60
PHOTOGRAPHERS: list[str] = _owner_names(N_PHOTOGRAPHERS)


def object_prompt(obj: str, color: str | None = None, style: str | None = None, prefix: str = "a") -> str:
    """The canonical caption of a single object, e.g. 'a red grumpy face in Ada Vell style'."""
    words = f"{color} {obj}" if color else obj
    if prefix.endswith(" a") or prefix == "a":
        prefix = prefix[:-1] + ("an" if words[0] in "aeiou" else "a")
    text = f"{prefix} {words}"
    if style:
        text += f" in {style} style"
    return text


def info(counts: dict[str, int] | None = None) -> dict:
    """The world's vocabulary as one JSON-able dict (`datarights world info --json`).

    Every concept entry has `name` (the words that name it, usable as an erase target), `prompt`,
    `anchor`, `nearby` and, where one owner holds it, `owner`.
    """
    objects = []
    for cat, insts in CATEGORIES.items():
        for obj in insts[1:]:
            objects.append({
                "name": obj, "category": cat, "prompt": object_prompt(obj, "red"), "anchor": cat,
                "nearby": [o for o in insts[1:] if o != obj],
            })
    categories = [{"name": c, "prompt": object_prompt(c, "blue"), "instances": insts[1:]}
                  for c, insts in CATEGORIES.items()]
    styles = [{"name": s, "prompt": object_prompt("house", "red", s), "anchor": PLAIN_STYLE,
               "nearby": v["nearby"], "owner": s, "look": v["look"]} for s, v in STYLES.items()]
    characters = [{"name": n, "prompt": f"a picture of {n}", "anchor": v["anchor"], "nearby": v["nearby"],
                   "owner": v["owner"]} for n, v in CHARACTERS.items()]
    memorized = [{"name": n, "prompt": v["prompt"], "anchor": v["anchor"], "nearby": v["nearby"],
                  "owner": v["owner"]} for n, v in MEMORIZED.items()]
    compositions = [{"name": n, "prompt": f"a {a} and a {b}", "anchor": a, "parts": [a, b],
                     "nearby": [b] + [m for m in COMPOSITIONS if m != n][:1]} for n, (a, b) in COMPOSITIONS.items()]
    owner_list = [*STYLES, *(v["owner"] for v in CHARACTERS.values()), *(v["owner"] for v in MEMORIZED.values()),
                  *PHOTOGRAPHERS]
    owners = [{"name": o, "images": (counts or {}).get(o, 0)} for o in owner_list]
    return {
        "resolution": RESOLUTION,
        "colors": list(COLORS),
        "objects": objects,
        "categories": categories,
        "styles": styles,
        "characters": characters,
        "memorized": memorized,
        "compositions": compositions,
        "owners": owners,
    }


def find_concept(name: str) -> tuple[str, dict] | None:
    """Look a concept up by its name (case-insensitive); returns (kind, entry) or None."""
    vocab = info()
    key = name.strip().lower()
    for kind in ("objects", "styles", "characters", "memorized", "compositions"):
        for entry in vocab[kind]:
            if entry["name"].lower() == key:
                return kind, entry
    for entry in vocab["categories"]:
        if entry["name"].lower() == key:
            return "categories", entry
    return None
