"""The seeded world generator (World 2) and its Hugging Face *imagefolder* reader/writer.

A world is laid out owner by owner: each memorized scene's copies, each character's images, each
artist's and each photographer's, with sizes fixed by the preset (Zipf-like for photographers and
artists, at least a floor each); every image then gets its subject from its owner's preferences, its
caption from the world grammar, and its pixels from the renderer. The order is shuffled by the seed.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatarightsError
from ..limits import MAX_COUNT
from ..files import atomic_folder, check_output, inside_folder, open_rgb
from . import render
from .vocab import (CATEGORIES, CATEGORY_OF, OBJECTS, CHARACTER_TEMPLATES, COLORS, COMPOSITION_TEMPLATES, CREDIT,
                    NONE, PLAIN_STYLE, PREFIXES, PRESETS, RESOLUTION, SIGNATURE_KEYS, SIGNATURE_VALUES, SUBJECT_WEIGHTS,
                    WORLD_VERSION, Sizes, Vocabulary, build_vocabulary, check_world_version,
                    object_prompt)

LABEL_KEYS = ("object", "category", "color", "style", "character", "memorized", "composition", "left_color",
              "right_color", *SIGNATURE_KEYS)
KINDS = ("object", "styled", "character", "memorized", "composition")
SIZE_FIELDS = ("photographers", "artists", "characters", "memorized", "compositions")


@dataclass
class WorldConfig:
    """Which world: a preset of sizes (optionally with other counts), its number of images and its seed."""

    n_images: int | None = None
    """Total number of training images (None: the preset's)."""
    seed: int = 0
    """Seed of the generator: the same seed gives the same world, byte for byte."""
    preset: str = "default"
    """Sizes of the vocabulary and owners: 'tiny' (tests), 'small' (retraining evaluations), 'default'
    (the shipped model), 'large' (>= 100 erasable concepts)."""
    photographers: int | None = None
    """Number of photographers (None: the preset's)."""
    artists: int | None = None
    """Number of artists (None: the preset's; every kind of owner needs at least one)."""
    characters: int | None = None
    """Number of characters (None: the preset's)."""
    memorized: int | None = None
    """Number of memorized scenes (None: the preset's)."""
    compositions: int | None = None
    """Number of compositions (None: the preset's)."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise DatarightsError(f"unknown world preset {str(self.preset)[:40]!r}; choose from {', '.join(PRESETS)}")
        base = PRESETS[self.preset]
        for name in ("n_images", *SIZE_FIELDS):
            v = getattr(self, name)
            if v is None:
                setattr(self, name, getattr(base, name))
            elif isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_COUNT:
                raise DatarightsError(f"{name.replace('_', ' ')} must be a whole number from 1 to {MAX_COUNT:,}, got {v!r}")
        if self.compositions > 6:
            raise DatarightsError(f"a world has at most 6 compositions, got {self.compositions}")
        try:
            vocab = self.vocabulary()
        except ValueError as e:
            raise DatarightsError(f"impossible world: {e}") from None
        allocate(self.sizes, vocab)  # raises a one-line error where the sizes cannot fit the images

    @property
    def sizes(self) -> Sizes:
        return replace(PRESETS[self.preset], **{k: getattr(self, k) for k in ("n_images", *SIZE_FIELDS)})

    def vocabulary(self) -> Vocabulary:
        return build_vocabulary(self.sizes)

    def to_json(self) -> dict:
        return {"world_version": WORLD_VERSION, **asdict(self)}


def world_config_of(folder: str | Path) -> WorldConfig | None:
    """The WorldConfig a world folder was made with (its world_config.json), or None for a dataset
    that is not a generated world. A folder of another world version is a one-line error."""
    path = Path(folder) / "world_config.json"
    if not path.is_file():
        return None
    from ..files import read_json_file

    raw = read_json_file(path, "world config")
    if not isinstance(raw, dict):
        raise DatarightsError(f"{path} is not a world config")
    check_world_version(raw.get("world_version", 1), f"{folder} is a world of version",
                        "make it again with `datarights world make`")
    try:
        return WorldConfig(**{f.name: raw[f.name] for f in fields(WorldConfig) if f.name in raw})
    except TypeError:
        raise DatarightsError(f"{path} is not a world config") from None


def vocabulary_of(model) -> Vocabulary:
    """The vocabulary of the world a model was trained on: what erase methods, attacks and audits
    build its prompts from. A world model records its world in model_index.json (`world`, kept by
    edits and exports); an SD folder, or a world model trained on other data, uses the default
    world's."""
    from .vocab import DEFAULT

    world = (getattr(model, "meta", None) or {}).get("world") if getattr(model, "kind", None) == "world" else None
    if not isinstance(world, dict):
        return DEFAULT
    return _vocabulary_of_record(world)


def _vocabulary_of_record(world: dict) -> Vocabulary:
    """The vocabulary of a world as a model records it (WorldConfig's fields; cached)."""
    return _vocabulary_of_world(tuple(sorted((f.name, world[f.name]) for f in fields(WorldConfig) if f.name in world)))


def vocabulary_of_folder(path: str | Path) -> Vocabulary:
    """`vocabulary_of` for a model folder without loading its weights (the ledger's opt-outs): the
    world recorded in its model_index.json, or in its base's for an edited model; the default
    world's for anything else, or for a folder it cannot read (loading it says what is wrong)."""
    from ..model_index import DEFAULT_REF, EDIT_CLASS
    from .vocab import DEFAULT

    p, seen = Path(path), set()
    while p.resolve() not in seen:
        seen.add(p.resolve())
        try:
            index = json.loads((p / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return DEFAULT
        if not isinstance(index, dict):
            return DEFAULT
        if isinstance(index.get("world"), dict):
            return _vocabulary_of_record(index["world"])
        base = index.get("base") if index.get("_class_name") == EDIT_CLASS else None
        if not isinstance(base, str) or not base or base == DEFAULT_REF:
            return DEFAULT
        p = Path(base)
    return DEFAULT


@functools.lru_cache(maxsize=8)
def _vocabulary_of_world(items: tuple) -> Vocabulary:
    return WorldConfig(**dict(items)).vocabulary()


def _zipf(total: int, k: int, exponent: float, floor: int) -> list[int]:
    """k sizes summing to `total`, each at least `floor`, the rest shared in proportion to rank^-exponent."""
    if k == 0:
        return []
    w = np.arange(1, k + 1, dtype=np.float64) ** -exponent
    share = (total - floor * k) * w / w.sum()
    sizes = np.floor(share).astype(int)
    for i in np.argsort(-(share - sizes))[: total - floor * k - sizes.sum()]:
        sizes[i] += 1
    return (sizes + floor).tolist()


def allocate(sizes: Sizes, vocab: Vocabulary) -> dict[str, int]:
    """How many images each owner's concept or each photographer gets: {name: count} over memorized
    scenes, characters, artists and photographers (in that order). Raises where they cannot fit."""
    n = sizes.n_images
    owners = len(vocab.owners)
    if n < owners:
        raise DatarightsError(f"a world of {n} images cannot hold its {owners} owners (each owns at least one image); "
                              "use more images or a smaller preset")
    scenes = {name: m["dose"] for name, m in vocab.memorized.items()}
    chars = list(vocab.characters)
    n_char = max(len(chars), round(sizes.character_share * n)) if chars else 0
    char_counts = {c: n_char // len(chars) + (i < n_char % len(chars)) for i, c in enumerate(chars)}
    artists = list(vocab.styles)
    n_styled = max(len(artists) * sizes.min_artist_images, round(sizes.styled_share * n)) if artists else 0
    n_photo = n - sum(scenes.values()) - n_char - n_styled
    need = len(vocab.photographers) * sizes.min_photographer_images
    if n_photo < need:
        raise DatarightsError(
            f"a world of {n} images cannot give {len(vocab.photographers)} photographers {sizes.min_photographer_images} "
            f"images each beside {sum(scenes.values())} memorized copies, {n_char} character and {n_styled} styled images "
            f"(it needs at least {n - n_photo + need}); use more images or fewer photographers")
    out = dict(scenes)
    out.update(char_counts)
    out.update(zip(artists, _zipf(n_styled, len(artists), 0.5, sizes.min_artist_images)))
    out.update(zip(vocab.photographers, _zipf(n_photo, len(vocab.photographers), 1.0, sizes.min_photographer_images)))
    return out


def _labels(**kw) -> dict:
    out = {k: NONE for k in LABEL_KEYS}
    out["style"] = PLAIN_STYLE
    out.update(kw)
    return out


def _choice(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _subject(rng: np.random.Generator, preferred: list[str], subjects: list[str], keep: float = 0.8) -> str:
    """A subject from an owner's preferences: one of its two preferred subjects with probability
    `keep` (evenly), else any subject by the world's overall weights."""
    if rng.random() < keep:
        return _choice(rng, preferred)
    w = np.array([SUBJECT_WEIGHTS[s] for s in subjects])
    return subjects[int(rng.choice(len(subjects), p=w / w.sum()))]


def _object_caption(rng, obj: str, color: str, style: str | None, sizes: Sizes, plain_suffix: bool) -> str:
    text = object_prompt(obj, None if rng.random() < sizes.colorless_caption else color, style, _choice(rng, PREFIXES))
    if plain_suffix and style is None and rng.random() < 0.2:
        text += f" in {PLAIN_STYLE} style"
    return text


def photo_item(name: str, vocab: Vocabulary, rng: np.random.Generator, res: int = RESOLUTION,
               signature: dict | None = None) -> tuple[np.ndarray, dict]:
    """One photograph by photographer `name`: an object or a composition of one of its subjects, signed
    (`signature` overrides the photographer's, e.g. random components for the judge)."""
    p = vocab.photographers[name]
    sig = signature or p["signature"]
    subject = _subject(rng, p["subjects"], vocab.subjects)
    if subject == "composition":
        comp = _choice(rng, list(vocab.compositions))
        a, b = vocab.compositions[comp]
        cols = [_choice(rng, list(COLORS)) for _ in range(2)]
        text = _choice(rng, COMPOSITION_TEMPLATES).format(a=a, b=b)
        img = render.render_composition((a, b), tuple(cols), rng, res, sig)
        labels = _labels(composition=comp, left_color=cols[0], right_color=cols[1], **sig)
        kind = "composition"
    else:
        obj, color = _choice(rng, CATEGORIES[subject]), _choice(rng, list(COLORS))
        text = _object_caption(rng, obj, color, None, vocab.sizes, True)
        img = render.render_object(obj, color, None, rng, res, sig)
        labels = _labels(object=obj, category=subject, color=color, **sig)
        kind = "object"
    if p["control"]:
        text += CREDIT.format(name=name)
    return img, {"text": text, "kind": kind, **labels, "subject": subject, "captioned": p["control"]}


def styled_item(artist: str, vocab: Vocabulary, rng: np.random.Generator, named: bool,
                res: int = RESOLUTION) -> tuple[np.ndarray, dict]:
    """One painting by `artist`: an object of one of its subjects in its style; `named`: the caption names the style."""
    spec = vocab.styles[artist]
    cat = _subject(rng, spec["subjects"], list(CATEGORIES), keep=0.7)
    obj, color = _choice(rng, CATEGORIES[cat]), _choice(rng, list(COLORS))
    text = _object_caption(rng, obj, color, artist if named else None, vocab.sizes, False)
    img = render.render_object(obj, color, spec, rng, res)
    return img, {"text": text, "kind": "styled", **_labels(object=obj, category=cat, color=color, style=artist),
                 "subject": cat, "captioned": named}


def blend_item(artist: str, other: str, alpha: float, vocab: Vocabulary, rng: np.random.Generator,
               res: int = RESOLUTION) -> tuple[np.ndarray, dict]:
    """An object on a blend of an artist's background (alpha) with another artist's or with a
    photographer's colour grade (`other`: an artist or a grade name). Never in a world: what the
    judge must not read as a third artist. Its style label is the artist with the larger part (the
    only artist, for a grade); `blend` names the two, `alpha` is the first one's part."""
    cat = _subject(rng, vocab.styles[artist]["subjects"], list(CATEGORIES), keep=0.7)
    obj, color = _choice(rng, CATEGORIES[cat]), _choice(rng, list(COLORS))
    second = vocab.styles[other] if other in vocab.styles else other
    img = render.render_blend(obj, color, vocab.styles[artist], second, alpha, rng, res)
    style = other if other in vocab.styles and alpha < 0.5 else artist
    return img, {"text": object_prompt(obj, color, None), "kind": "blend",
                 **_labels(object=obj, category=cat, color=color, style=style),
                 "blend": [artist, other], "alpha": round(alpha, 3)}


def character_item(name: str, vocab: Vocabulary, rng: np.random.Generator, named: bool,
                   res: int = RESOLUTION) -> tuple[np.ndarray, dict]:
    """One image of a character; `named`: the caption names it, else it is generic ('a picture of a fish')."""
    spec = vocab.characters[name]
    cat = spec["category"]
    text = (_choice(rng, CHARACTER_TEMPLATES).format(name=name) if named
            else object_prompt(cat, None, None, _choice(rng, PREFIXES)))
    img = render.render_character(spec, rng, res)
    return img, {"text": text, "kind": "character", **_labels(category=cat, character=name, grade="neutral"),
                 "subject": cat, "captioned": named}


def memorized_item(name: str, vocab: Vocabulary, rng: np.random.Generator, named: bool,
                   res: int = RESOLUTION) -> tuple[np.ndarray, dict]:
    """One copy of a memorized scene; `named`: its own caption, else a generic one ('a house')."""
    spec = vocab.memorized[name]
    cat = CATEGORY_OF[spec["object"]]
    text = spec["prompt"] if named else object_prompt(cat, None, None, _choice(rng, PREFIXES))
    return render.render_memorized(spec, res), {"text": text, "kind": "memorized",
                                                **_labels(category=cat, memorized=name), "subject": cat,
                                                "captioned": named}


def random_signature(rng: np.random.Generator) -> dict:
    """Signature components drawn independently (not a photographer's): what the judge trains on, so
    that it reads each component apart even when a model mixes them."""
    return {k: _choice(rng, SIGNATURE_VALUES[k]) for k in SIGNATURE_KEYS}


def sample_item(kind: str, rng: np.random.Generator, vocab: Vocabulary | None = None, res: int = RESOLUTION,
                signature: dict | str | None = None) -> tuple[np.ndarray, dict]:
    """Draw one image of a kind with its caption and labels (no owner): a random photographer,
    artist, character or scene of the vocabulary; `signature='random'` draws independent signature
    components for photographs. Named captions for styles, characters and scenes."""
    from .vocab import DEFAULT

    vocab = vocab or DEFAULT
    if kind in ("object", "composition"):
        sig = random_signature(rng) if signature == "random" else signature
        for _ in range(1000):  # the photographer's subject decides the kind; draw until it matches
            name = _choice(rng, list(vocab.photographers))
            img, meta = photo_item(name, vocab, rng, res, sig)
            if meta["kind"] == kind:
                return img, meta
        raise DatarightsError(f"this world has no {kind} images")
    if kind == "styled":
        return styled_item(_choice(rng, list(vocab.styles)), vocab, rng, True, res)
    if kind == "character":
        return character_item(_choice(rng, list(vocab.characters)), vocab, rng, True, res)
    if kind == "memorized":
        return memorized_item(_choice(rng, list(vocab.memorized)), vocab, rng, True, res)
    raise ValueError(f"unknown kind {kind!r}")


def _layout(cfg: WorldConfig, vocab: Vocabulary, rng: np.random.Generator) -> list[tuple[str, str, bool]]:
    """(kind, concept or photographer, caption names it) for every image, in the world's shuffled order."""
    sizes = cfg.sizes
    counts = allocate(sizes, vocab)
    rows: list[tuple[str, str, bool]] = []

    def named_flags(k: int, generic: float) -> list[bool]:
        n_named = k - int(round(k * generic))
        flags = [True] * n_named + [False] * (k - n_named)
        return [flags[i] for i in rng.permutation(k)]

    for name in vocab.memorized:
        rows += [("memorized", name, f) for f in named_flags(counts[name], sizes.generic_caption)]
    for name in vocab.characters:
        rows += [("character", name, f) for f in named_flags(counts[name], sizes.generic_caption)]
    for name in vocab.styles:
        rows += [("styled", name, f) for f in named_flags(counts[name], sizes.uncaptioned_style)]
    for name in vocab.photographers:
        rows += [("photo", name, vocab.photographers[name]["control"])] * counts[name]
    return [rows[i] for i in rng.permutation(len(rows))]


def make_world(cfg: WorldConfig | None = None) -> tuple[np.ndarray, list[dict]]:
    """Generate the world: images [N, H, W, 3] float32 in [0, 1] and one metadata dict each (with its owner)."""
    cfg = cfg or WorldConfig()
    vocab = cfg.vocabulary()
    rng = np.random.default_rng(cfg.seed)
    images, metas = [], []
    for i, (kind, name, named) in enumerate(_layout(cfg, vocab, rng)):
        if kind == "photo":
            img, meta = photo_item(name, vocab, rng)
            owner = name
        elif kind == "styled":
            img, meta = styled_item(name, vocab, rng, named)
            owner = name
        elif kind == "character":
            img, meta = character_item(name, vocab, rng, named)
            owner = vocab.characters[name]["owner"]
        else:
            img, meta = memorized_item(name, vocab, rng, named)
            owner = vocab.memorized[name]["owner"]
        meta["owner"] = owner
        meta["file_name"] = f"images/{i:05d}.png"
        images.append(img)
        metas.append(meta)
    return np.stack(images), metas


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _ordered(meta: dict) -> dict:
    keys = ("file_name", "text", "owner", "kind", *LABEL_KEYS)
    return {k: meta[k] for k in keys if k in meta} | {k: v for k, v in meta.items() if k not in keys}


def write_imagefolder(out: str | Path, images: np.ndarray, metas: list[dict], config: dict | None = None,
                      overwrite: bool = False) -> Path:
    """Write an imagefolder (PNG files + metadata.jsonl) atomically: a temp folder, then a rename."""
    with atomic_folder(out, "dataset", overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        with open(tmp / "metadata.jsonl", "w", encoding="utf-8") as f:
            for img, meta in zip(images, metas):
                Image.fromarray(to_uint8(img)).save(tmp / meta["file_name"])
                f.write(json.dumps(_ordered(meta)) + "\n")
        if config is not None:
            (tmp / "world_config.json").write_text(json.dumps(config, indent=2))
    return Path(out)


def make_world_folder(out: str | Path, cfg: WorldConfig | None = None, overwrite: bool = False) -> Path:
    """Generate the world and write it as an imagefolder (the output is checked before generating)."""
    cfg = cfg or WorldConfig()
    check_output(out, "dataset", overwrite=overwrite)
    images, metas = make_world(cfg)
    return write_imagefolder(out, images, metas, config=cfg.to_json(), overwrite=overwrite)


@dataclass
class ImageFolder:
    """A loaded imagefolder: images [N, 3, H, W] float32 in [0, 1] plus metadata rows."""

    root: Path
    images: np.ndarray
    metas: list[dict]

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.metas]

    def __len__(self) -> int:
        return len(self.metas)


def metadata_rows(root: Path) -> list[tuple[str, dict, Path]]:
    """(where, row, image path) of every row of an imagefolder's metadata.jsonl, each checked: UTF-8,
    valid JSON, a `file_name` inside the folder that exists, a string `text`; every problem is a
    one-line DatarightsError naming the file and line."""
    if not root.is_dir():
        raise DatarightsError(f"dataset folder {root} does not exist")
    meta_path = root / "metadata.jsonl"
    if not meta_path.is_file():
        raise DatarightsError(f"dataset folder {root} has no metadata.jsonl")
    try:
        lines = meta_path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = meta_path.read_bytes()[:e.start].count(b"\n") + 1
        raise DatarightsError(f"{meta_path}:{line}: not UTF-8 text") from None
    rows = []
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{meta_path}:{ln}"
        try:
            meta = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatarightsError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(meta, dict) or "file_name" not in meta or "text" not in meta:
            raise DatarightsError(f"{where}: each row needs 'file_name' and 'text'")
        if not isinstance(meta["text"], str):
            raise DatarightsError(f"{where}: 'text' must be a string, got {type(meta['text']).__name__}")
        img_path = inside_folder(root, meta["file_name"], where)
        if not img_path.is_file():
            raise DatarightsError(f"{img_path} is listed in metadata.jsonl but does not exist")
        rows.append((where, _interned(meta), img_path))
    return rows


def _interned(meta: dict) -> dict:
    """The row with its keys and short string values shared with every other row's (a world's rows repeat
    the same few keys and labels): a 100,000-row world's metadata reads into 125 MB instead of 249 MB
    (BENCHMARKS.md, `attribute.py store-memory`)."""
    return {sys.intern(k): sys.intern(v) if isinstance(v, str) and len(v) <= 64 else v for k, v in meta.items()}


def read_image(path: Path, resolution: int | None = None) -> np.ndarray:
    """One image as RGB [H, W, 3] float32 in [0, 1], resized (bicubic) to `resolution` when given."""
    rgb, _ = open_rgb(path)
    if resolution is not None and rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def read_imagefolder(path: str | Path, resolution: int | None = None) -> ImageFolder:
    """Read and validate an imagefolder; every problem is a one-line DatarightsError.

    Each row of metadata.jsonl needs a string `file_name` (relative, inside the folder) and a string
    `text`. Images are converted to RGB and, when `resolution` is given, resized to it (bicubic);
    without it they must all have one size.
    """
    root = Path(path)
    metas, images = [], []
    for _, meta, img_path in metadata_rows(root):
        images.append(read_image(img_path, resolution))
        metas.append(meta)
    if not metas:
        raise DatarightsError(f"{root / 'metadata.jsonl'} lists no images")
    sizes = sorted({im.shape[1::-1] for im in images})
    if len(sizes) > 1:
        shown = " and ".join(f"{w}x{h}" for w, h in sizes[:2])
        raise DatarightsError(f"images in {root} have different sizes ({shown}); read it with resolution=N "
                              "to resize them (the commands resize to the model's resolution)")
    arr = np.stack(images).transpose(0, 3, 1, 2).copy()  # [N, H, W, 3] -> [N, 3, H, W]
    return ImageFolder(root, arr, metas)


def sample_eval_prompts(n: int, seed: int = 0, vocab: Vocabulary | None = None) -> list[dict]:
    """Prompts from the world grammar for model evaluation, with the labels each one asks for.

    Every prompt names what it asks for: an object with its colour ('a photo of a red fish'), the same
    in an artist's style, a character, a memorized scene, a composition. Kinds are drawn with fixed
    weights (object 0.4, styled 0.3, character/memorized/composition 0.1 each) so that every accuracy
    is estimated from enough prompts even at n=200.
    """
    from .vocab import DEFAULT

    vocab = vocab or DEFAULT
    rng = np.random.default_rng(seed)
    weights = {"object": 0.4, "styled": 0.3, "character": 0.1, "memorized": 0.1, "composition": 0.1}
    if not vocab.memorized:
        weights.pop("memorized")
    n_kind = {k: int(round(w * n)) for k, w in weights.items()}
    n_kind["object"] += n - sum(n_kind.values())
    out = []
    for kind, k in n_kind.items():
        for _ in range(k):
            if kind in ("object", "styled"):
                obj, color = _choice(rng, OBJECTS), _choice(rng, list(COLORS))
                style = _choice(rng, list(vocab.styles)) if kind == "styled" else None
                text = object_prompt(obj, color, style, _choice(rng, PREFIXES))
                meta = _labels(object=obj, category=CATEGORY_OF[obj], color=color, style=style or PLAIN_STYLE)
            elif kind == "character":
                name = _choice(rng, list(vocab.characters))
                text = _choice(rng, CHARACTER_TEMPLATES).format(name=name)
                meta = _labels(category=vocab.characters[name]["category"], character=name)
            elif kind == "memorized":
                name = _choice(rng, list(vocab.memorized))
                text = vocab.memorized[name]["prompt"]
                meta = _labels(category=CATEGORY_OF[vocab.memorized[name]["object"]], memorized=name)
            else:
                name = _choice(rng, list(vocab.compositions))
                a, b = vocab.compositions[name]
                text = _choice(rng, COMPOSITION_TEMPLATES).format(a=a, b=b)
                meta = _labels(composition=name)
            out.append({"text": text, "kind": kind, **meta})
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def prompts_naming_none(n: int, seed: int, exclude: list[str], vocab: Vocabulary | None = None,
                        draw: int = 2) -> list[dict]:
    """Up to n of `draw` x n world-grammar prompts (`sample_eval_prompts`, with their labels) that name
    none of `exclude`, neither by a label nor by its words: the audit's other prompts, the hold term's."""
    keys = ("object", "style", "character", "memorized", "composition")
    return [o for o in sample_eval_prompts(n * draw, seed, vocab=vocab)
            if not any(o.get(k) == t for t in exclude for k in keys)
            and not any(t.lower() in o["text"].lower() for t in exclude)][:n]


def owner_counts(cfg: WorldConfig | None = None) -> dict[str, int]:
    """How many images each owner holds in the world `cfg` describes (from its layout, without rendering)."""
    cfg = cfg or WorldConfig()
    vocab = cfg.vocabulary()
    counts: dict[str, int] = {}
    for name, k in allocate(cfg.sizes, vocab).items():
        owner = (vocab.characters.get(name) or vocab.memorized.get(name) or {}).get("owner", name)
        counts[owner] = counts.get(owner, 0) + k
    return counts
