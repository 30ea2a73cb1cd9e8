"""The seeded world generator and its Hugging Face *imagefolder* reader/writer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatarightsError
from ..files import atomic_folder, check_output, inside_folder, open_rgb
from . import render
from .vocab import (CATEGORY_OF, CHARACTER_TEMPLATES, CHARACTERS, COLORS, COMPOSITION_TEMPLATES, COMPOSITIONS,
                    MEMORIZED, NONE, OBJECTS, PHOTOGRAPHERS, PLAIN_STYLE, PREFIXES, RESOLUTION, STYLES, object_prompt)

LABEL_KEYS = ("object", "category", "color", "style", "character", "memorized", "composition")
KINDS = ("object", "styled", "character", "memorized", "composition")


@dataclass
class WorldConfig:
    """How many images of each kind, and the seed that fixes every pixel and caption."""

    n_images: int = 5000
    """Total number of training images."""
    seed: int = 0
    """Seed of the generator: the same seed gives the same world, byte for byte."""
    fractions: dict = field(default_factory=lambda: {
        "object": 0.50, "styled": 0.32, "character": 0.05, "memorized": 0.02, "composition": 0.11})
    """Share of each kind of image; the memorized image is the same picture repeated."""

    def __post_init__(self):
        if self.n_images < len(KINDS):
            raise DatarightsError(f"a world needs at least {len(KINDS)} images, got n_images={self.n_images}")
        if set(self.fractions) != set(KINDS) or abs(sum(self.fractions.values()) - 1) > 1e-6:
            raise DatarightsError(f"fractions must cover {KINDS} and sum to 1")


def _labels(**kw) -> dict:
    out = {k: NONE for k in LABEL_KEYS}
    out["style"] = PLAIN_STYLE
    out.update(kw)
    return out


def sample_item(kind: str, rng: np.random.Generator, res: int = RESOLUTION) -> tuple[np.ndarray, dict]:
    """Draw one image of a kind with its caption and labels (no owner)."""
    if kind in ("object", "styled"):
        obj = OBJECTS[rng.integers(len(OBJECTS))]
        color = list(COLORS)[rng.integers(len(COLORS))]
        style = list(STYLES)[rng.integers(len(STYLES))] if kind == "styled" else None
        prefix = PREFIXES[rng.integers(len(PREFIXES))]
        text = object_prompt(obj, color, style, prefix)
        if style is None and rng.random() < 0.3:
            text += f" in {PLAIN_STYLE} style"
        img = render.render_object(obj, color, style, rng, res)
        labels = _labels(object=obj, category=CATEGORY_OF[obj], color=color, style=style or PLAIN_STYLE)
    elif kind == "character":
        name = list(CHARACTERS)[rng.integers(len(CHARACTERS))]
        text = CHARACTER_TEMPLATES[rng.integers(len(CHARACTER_TEMPLATES))].format(name=name)
        img = render.render_character(name, rng, res)
        labels = _labels(category=CATEGORY_OF[CHARACTERS[name]["anchor"]], character=name)
    elif kind == "memorized":
        name = list(MEMORIZED)[rng.integers(len(MEMORIZED))]
        text = MEMORIZED[name]["prompt"]
        img = render.render_memorized(name, res)
        labels = _labels(category=CATEGORY_OF[MEMORIZED[name]["anchor"]], memorized=name)
    elif kind == "composition":
        name = list(COMPOSITIONS)[rng.integers(len(COMPOSITIONS))]
        a, b = COMPOSITIONS[name]
        cols = tuple(list(COLORS)[i] for i in rng.integers(len(COLORS), size=2))
        text = COMPOSITION_TEMPLATES[rng.integers(len(COMPOSITION_TEMPLATES))].format(a=a, b=b)
        img = render.render_composition((a, b), cols, rng, res)
        labels = _labels(composition=name)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return img, {"text": text, "kind": kind, **labels}


def _owner_for(meta: dict, rng: np.random.Generator, weights: np.ndarray) -> str:
    if meta["kind"] == "styled":
        return meta["style"]  # an artist's style is the signature of one owner
    if meta["kind"] == "character":
        return CHARACTERS[meta["character"]]["owner"]
    if meta["kind"] == "memorized":
        return MEMORIZED[meta["memorized"]]["owner"]
    return PHOTOGRAPHERS[rng.choice(len(PHOTOGRAPHERS), p=weights)]


def make_world(cfg: WorldConfig | None = None) -> tuple[np.ndarray, list[dict]]:
    """Generate the world: images [N, H, W, 3] float32 in [0, 1] and one metadata dict each.

    Kinds are laid out by their fractions, then shuffled; small photographers own the unstyled
    images with Zipf-like weights, so most owners hold few images and a few hold many.
    """
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng(cfg.seed)
    counts = {k: int(round(cfg.fractions[k] * cfg.n_images)) for k in KINDS}
    counts["object"] += cfg.n_images - sum(counts.values())
    kinds = [k for k in KINDS for _ in range(counts[k])]
    rng.shuffle(kinds)
    ranks = np.arange(1, len(PHOTOGRAPHERS) + 1, dtype=np.float64)
    weights = ranks**-1.1 / (ranks**-1.1).sum()
    images, metas = [], []
    for i, kind in enumerate(kinds):
        img, meta = sample_item(kind, rng)
        meta["owner"] = _owner_for(meta, rng, weights)
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
    return write_imagefolder(out, images, metas, config=asdict(cfg), overwrite=overwrite)


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
        rows.append((where, meta, img_path))
    return rows


def read_imagefolder(path: str | Path, resolution: int | None = None) -> ImageFolder:
    """Read and validate an imagefolder; every problem is a one-line DatarightsError.

    Each row of metadata.jsonl needs a string `file_name` (relative, inside the folder) and a string
    `text`. Images are converted to RGB and, when `resolution` is given, resized to it (bicubic);
    without it they must all have one size.
    """
    root = Path(path)
    metas, images = [], []
    for _, meta, img_path in metadata_rows(root):
        rgb, _ = open_rgb(img_path)
        if resolution is not None and rgb.size != (resolution, resolution):
            rgb = rgb.resize((resolution, resolution), Image.BICUBIC)
        images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
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


def sample_eval_prompts(n: int, seed: int = 0) -> list[dict]:
    """Prompts from the world grammar for model evaluation, with the labels each one asks for.

    Kinds are drawn with fixed weights (object 0.4, styled 0.3, character/memorized/composition 0.1
    each) so that every accuracy is estimated from enough prompts even at n=200.
    """
    rng = np.random.default_rng(seed)
    weights = {"object": 0.4, "styled": 0.3, "character": 0.1, "memorized": 0.1, "composition": 0.1}
    n_kind = {k: int(round(w * n)) for k, w in weights.items()}
    n_kind["object"] += n - sum(n_kind.values())
    out = []
    for kind, k in n_kind.items():
        for _ in range(k):
            _, meta = sample_item(kind, rng)
            out.append(meta)
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def owner_counts(cfg: WorldConfig | None = None) -> dict[str, int]:
    """How many images each owner holds in the world `cfg` describes (replays the generator, ~1 s per 1,000 images)."""
    _, metas = make_world(cfg or WorldConfig())
    counts: dict[str, int] = {}
    for m in metas:
        counts[m["owner"]] = counts.get(m["owner"], 0) + 1
    return counts
