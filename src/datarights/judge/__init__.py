"""The world judge: ground truth read from a world image.

A small multi-head CNN reads every label the world's generator writes: object, category, colour,
style, character, composition and its parts' colours, and the four components of a photographer's
signature (grade, mark, ground, side); memorized scenes are recognised by an exact nearest-render
match (a scene is one fixed picture, so a copy is within a small pixel distance of its render). From
those readings `provenance` names the image's *source owner* by construction: the scene's publisher,
the character's studio, the style's artist, or the photographer whose signature it carries.

It plays the role CLIP or a concept detector plays for Stable Diffusion: every audit, quality and
attribution figure on the world is the judge's reading of generated images. It is trained on
freshly rendered world images with noise and blur augmentation, so that it reads imperfect
generations too, and with signature components drawn independently, so that it reads each
component apart even where a model mixes two photographers' signatures. The judge is ground truth
only: no erasure or attribution method uses its network (the `feature` baseline has its own encoder).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import DatarightsError
from ..files import atomic_folder, check_output, read_json_file
from ..world import vocab as V
from ..world.generate import blend_item, sample_item, styled_item
from ..world.render import render_memorized
from ..world.vocab import (NONE, PLAIN_STYLE, RESOLUTION, SIGNATURE_KEYS, WORLD_VERSION, Sizes, Vocabulary,
                          check_world_version)

DEFAULT_JUDGE = Path(__file__).resolve().parent.parent / "assets" / "judge"
JUDGE_KINDS = {"object": 0.3, "composition": 0.12, "styled": 0.3, "character": 0.16, "memorized": 0.12}
MATCH_KEY = "memorized"
"""The one label read by matching renders rather than by a head."""


class Judge(nn.Module):
    """Multi-head CNN classifier for 16x16 world images; `features` are its penultimate layer.

    `scenes` [S, 3, 16, 16] are the memorized scenes' renders; an image whose mean squared pixel
    distance to the nearest one is below `match_threshold` is a copy of that scene.
    """

    def __init__(self, vocab: Vocabulary | None = None, width: int = 48, feat_dim: int = 128,
                 match_threshold: float = 0.01):
        super().__init__()
        self.vocab = vocab or V.DEFAULT
        self.labels = {k: list(v) for k, v in self.vocab.labels.items() if k != MATCH_KEY}
        self.config = {"width": width, "feat_dim": feat_dim, "match_threshold": match_threshold}
        self.match_threshold = match_threshold
        self.scene_names = list(self.vocab.memorized)
        with torch.device("cpu"):
            scenes = [torch.from_numpy(render_memorized(s)).permute(2, 0, 1) for s in self.vocab.memorized.values()]
            self.register_buffer("scenes", torch.stack(scenes) if scenes else torch.zeros(0, 3, RESOLUTION, RESOLUTION),
                                 persistent=False)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),       # 16 -> 8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 3 * w, 3, stride=2, padding=1), nn.GELU(),   # 8 -> 4
            nn.Flatten(),                                                  # [B, 3w*4*4]
            nn.Linear(3 * w * 16, 256), nn.GELU(),
            nn.Linear(256, feat_dim), nn.GELU(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(feat_dim, len(v)) for k, v in self.labels.items()})

    @staticmethod
    def _pixels(images: torch.Tensor, device) -> torch.Tensor:
        images = images.to(device, torch.float32)
        if images.shape[-2:] != (RESOLUTION, RESOLUTION):
            images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 16, 16] in [0, 1] -> features [B, feat_dim]."""
        return self.body(self._pixels(images, next(self.parameters()).device) * 2 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {k: h(f) for k, h in self.heads.items()}

    def masks(self, vocab: Vocabulary | None) -> tuple[dict[str, int], int]:
        """How many classes of each head, and how many scenes, a world's vocabulary uses. Presets take a
        prefix of the default lists, so a smaller world is read by the first classes of each head;
        a vocabulary that is not a prefix of the judge's is refused."""
        if vocab is None or vocab is self.vocab:
            return {k: len(v) for k, v in self.labels.items()}, len(self.scene_names)
        out = {}
        for k, v in self.labels.items():
            mine = vocab.labels[k]
            if v[:len(mine)] != mine:
                raise DatarightsError(f"this judge cannot read that world: its {k} labels are not the judge's "
                                      f"(train one with `datarights train-judge --preset ...`)")
            out[k] = len(mine)
        if self.scene_names[:len(vocab.memorized)] != list(vocab.memorized):
            raise DatarightsError("this judge cannot read that world: its memorized scenes are not the judge's")
        return out, len(vocab.memorized)

    @torch.no_grad()
    def scene_distance(self, images: torch.Tensor, n_scenes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the nearest memorized scene [B], its mean squared pixel distance [B]), among the
        first `n_scenes` scenes (all by default)."""
        x = self._pixels(images, self.scenes.device)
        scenes = self.scenes[:n_scenes]
        if len(scenes) == 0:
            return torch.zeros(len(x), dtype=torch.long), torch.full((len(x),), float("inf"))
        d = ((x[:, None] - scenes[None]) ** 2).mean(dim=(2, 3, 4))          # [B, S]
        dist, idx = d.min(1)
        return idx, dist

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 512, vocab: Vocabulary | None = None) -> list[dict]:
        """One dict per image: {label: name, label + '_p': probability}, and `memorized` (with
        `memorized_d`, the distance to the nearest scene's render). With `vocab` (a smaller world's),
        every head reads only the labels that world has."""
        self.eval()
        sizes, n_scenes = self.masks(vocab)
        out = []
        for s in range(0, len(images), batch):
            chunk = images[s:s + batch].float()
            logits = self(chunk)
            probs = {k: v[:, :sizes[k]].softmax(-1) for k, v in logits.items()}
            idx, dist = self.scene_distance(chunk, n_scenes)
            for i in range(len(chunk)):
                row = {}
                for k, p in probs.items():
                    j = int(p[i].argmax())
                    row[k] = self.labels[k][j]
                    row[f"{k}_p"] = round(float(p[i, j]), 4)
                hit = float(dist[i]) < self.match_threshold
                row[MATCH_KEY] = self.scene_names[int(idx[i])] if hit else NONE
                row[f"{MATCH_KEY}_d"] = round(float(dist[i]), 5)
                out.append(row)
        return out


def describe(row: dict) -> str:
    """A short human reading of one judged image, e.g. 'grumpy face / Ada Vell'."""
    parts = [row[k] for k in ("object", "character", "memorized", "composition") if row.get(k, NONE) != NONE]
    if row.get("style", PLAIN_STYLE) != PLAIN_STYLE:
        parts.append(row["style"])
    return " / ".join(parts) or "?"


# ----------------------------------------------------------------------------- what a reading shows
CHECK_KEY = {"objects": "object", "categories": "object", "styles": "style", "characters": "character",
             "memorized": "memorized", "compositions": "composition"}


def label_check(concept: str, vocab: Vocabulary | None = None) -> tuple[str, str]:
    """(judge label, value) that says an image shows the concept; categories mean their generic object."""
    if concept.strip().lower() == PLAIN_STYLE:
        return "style", PLAIN_STYLE
    found = (vocab or V.DEFAULT).find_concept(concept)
    if found is None:
        raise DatarightsError(f"{concept!r} is not in the world's vocabulary, so the world judge cannot score it "
                              "(see `datarights world info`)")
    return CHECK_KEY[found[0]], found[1]["name"]


def shows(rows: list[dict], concept: str, vocab: Vocabulary | None = None) -> np.ndarray:
    """[B] bool: each judged image shows the concept."""
    key, value = label_check(concept, vocab)
    return np.array([r[key] == value for r in rows])


def provenance(row: dict, vocab: Vocabulary | None = None) -> dict:
    """The source owner a judged image shows by construction, and the trace that says so.

    In order: a copy of a memorized scene (its publisher), a character (its studio), an artist's
    style (the artist), a photographer's exact signature (the photographer). Returns {"owner",
    "kind", "trace"}; owner None when no trace names one: "unsigned" (no signature component) or
    "mixed signature" (components that are no photographer's signature, e.g. two mixed).
    """
    vocab = vocab or V.DEFAULT
    if row.get("memorized", NONE) != NONE:
        m = row["memorized"]
        if m not in vocab.memorized:
            return {"owner": None, "kind": None, "trace": f"outside this world: memorized {m}"}
        return {"owner": vocab.memorized[m]["owner"], "kind": "publisher", "trace": f"memorized: {m}"}
    if row.get("character", NONE) != NONE:
        c = row["character"]
        if c not in vocab.characters:
            return {"owner": None, "kind": None, "trace": f"outside this world: character {c}"}
        return {"owner": vocab.characters[c]["owner"], "kind": "studio", "trace": f"character: {c}"}
    if row.get("style", PLAIN_STYLE) != PLAIN_STYLE:
        if row["style"] not in vocab.styles:
            return {"owner": None, "kind": None, "trace": f"outside this world: style {row['style']}"}
        return {"owner": row["style"], "kind": "artist", "trace": f"style: {row['style']}"}
    sig = {k: row.get(k, NONE) for k in SIGNATURE_KEYS}
    trace = "signature: " + " / ".join(sig[k] for k in SIGNATURE_KEYS)
    owner = vocab.signature_owner(sig)
    if owner is not None:
        return {"owner": owner, "kind": "photographer", "trace": trace}
    unsigned = sig["grade"] in (NONE, "neutral") and all(sig[k] == NONE for k in ("mark", "ground", "side"))
    return {"owner": None, "kind": None, "trace": "unsigned" if unsigned else f"mixed {trace}"}


# ----------------------------------------------------------------------------- training
@dataclass
class JudgeConfig:
    """How the judge is trained."""

    n_train: int = 40000
    """Rendered training images (fresh draws, balanced over kinds)."""
    n_test: int = 5000
    """Held-out images (another seed) for the accuracy report."""
    epochs: int = 8
    """Passes over the training images."""
    batch_size: int = 256
    """Images per step."""
    lr: float = 2e-3
    """Peak Adam learning rate, cosine-decayed."""
    seed: int = 0
    """Seed of rendering, initialisation and augmentation."""
    width: int = 48
    """Channel width of the first convolution."""
    preset: str = "default"
    """World preset whose vocabulary the judge reads."""
    blends: float = 0.0
    """Share of training images that are objects on a blend of an artist's background (30-70%) with
    another artist's (soft-labelled on the two) or a photographer's colour grade (labelled with the
    artist), so that the style head names an artist of a model's mixture, never a third one."""
    fade: float = 0.0
    """Training augmentation: half the images washed out toward their mean colour by up to this much
    (contrast down to 1 - fade), so that a faint copy of one artist's pattern is not read as another's."""

    def __post_init__(self):
        from ..world.vocab import PRESETS
        if self.preset not in PRESETS:
            raise DatarightsError(f"unknown world preset {str(self.preset)[:40]!r}; choose from {', '.join(PRESETS)}")
        for name in ("n_train", "n_test", "epochs", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise DatarightsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.fade < 1:
            raise DatarightsError(f"fade is how far contrast may drop, from 0 up to (not including) 1; got {self.fade}")
        if not 0 <= self.blends < 1:
            raise DatarightsError(f"blends is a share of the training images, from 0 up to (not including) 1; got {self.blends}")


def render_labelled(n: int, seed: int, vocab: Vocabulary | None = None,
                    kinds: dict[str, float] = JUDGE_KINDS,
                    blends: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n freshly rendered world images [n, 3, 16, 16] with their label indices (photographs carry
    independently drawn signature components; `memorized` holds 1 + the scene's index, 0 for none).
    `blends`: the share replaced by blends (`_blend`); a blend of two artists has a soft style
    label, `style` the larger part's artist with weight `style_weight` and `style_other` the other
    (both keys only when blends > 0, weight 1 on every other image; 0 draws exactly the images it
    always did)."""
    vocab = vocab or V.DEFAULT
    rng = np.random.default_rng(seed)
    names = [k for k in kinds if k != "memorized" or vocab.memorized]
    w = np.array([kinds[k] for k in names])
    draws = rng.choice(len(names), size=n, p=w / w.sum())
    blend = rng.random(n) < blends if blends > 0 and len(vocab.styles) >= 2 else np.zeros(n, bool)
    labels = vocab.labels
    imgs, ys = [], {k: [] for k in labels}
    for d, b in zip(draws, blend):
        img, meta = (_blend(rng, vocab) if b else sample_item(names[d], rng, vocab, signature="random"))
        imgs.append(img)
        for k in labels:
            ys[k].append(labels[k].index(meta[k]))
        if blends > 0:
            a = meta.get("alpha", 1.0)
            other = [n for n in meta.get("blend", []) if n != meta["style"] and n in vocab.styles]
            ys.setdefault("style_other", []).append(labels["style"].index(other[0] if other else meta["style"]))
            ys.setdefault("style_weight", []).append(max(a, 1 - a) if other else 1.0)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, {k: torch.tensor(v) for k, v in ys.items()}


BLEND_ALPHA = (0.3, 0.7)
"""The range of a blend's share of its (first) artist's background."""


def _blend(rng: np.random.Generator, vocab: Vocabulary) -> tuple[np.ndarray, dict]:
    """An artist's background blended with another artist's (half) or a photographer's grade (half)."""
    names, grades = list(vocab.styles), list(V.GRADES)
    a, b = rng.choice(len(names), size=2, replace=False)
    other = names[b] if rng.random() < 0.5 else grades[int(rng.integers(len(grades)))]
    return blend_item(names[a], other, float(rng.uniform(*BLEND_ALPHA)), vocab, rng)


@torch.no_grad()
def blend_check(judge: "Judge", n: int = 2000, seed: int = 30_000) -> dict:
    """How the style head reads objects on blends of an artist's background with another artist's
    or a photographer's colour grade (half each; noise/blur augmented, as generations are): an artist
    of the blend (`parent`: a true source), no style, or a third artist who had no part in it
    (`third`: a false owner, the failure that makes a model that averages styles look like it
    copied someone). Rates with 95% Wilson intervals. A head that
    never names a style has no third reads: read this beside the style head's accuracy."""
    vocab = judge.vocab
    if len(vocab.styles) < 2:
        return {"n": 0}
    rng = np.random.default_rng(seed)
    items = [_blend(rng, vocab) for _ in range(n)]
    x = torch.from_numpy(np.stack([i[0] for i in items])).permute(0, 3, 1, 2).contiguous()
    rows = judge.read(augment(x, torch.Generator().manual_seed(seed)))
    counts = {"no_style": 0, "parent": 0, "third": 0}
    for r, (_, meta) in zip(rows, items):
        s = r.get("style", PLAIN_STYLE)
        counts["no_style" if s == PLAIN_STYLE else "parent" if s in meta["blend"] else "third"] += 1
    return {"n": n, "alpha": list(BLEND_ALPHA), **_rates(counts, n)}


@torch.no_grad()
def fade_check(judge: "Judge", n_per_artist: int = 200, seed: int = 32_000, contrasts=(0.5, 0.3)) -> dict:
    """How the style head reads every artist's paintings washed out toward their mean colour (then
    noise/blur augmented): the artist's own style (right), no style, or another artist (a false
    owner). Rates over all artists with 95% Wilson intervals, per contrast."""
    vocab = judge.vocab
    if not vocab.styles:
        return {"n": 0}
    rng = np.random.default_rng(seed)
    names = [a for a in vocab.styles for _ in range(n_per_artist)]
    x = torch.from_numpy(np.stack([styled_item(a, vocab, rng, True)[0] for a in names])).permute(0, 3, 1, 2)
    m = x.mean((2, 3), keepdim=True)
    out = {"n": len(names)}
    for c in contrasts:
        rows = judge.read(augment(m + c * (x - m), torch.Generator().manual_seed(seed)))
        counts = {"own": 0, "no_style": 0, "other": 0}
        for r, a in zip(rows, names):
            s = r.get("style", PLAIN_STYLE)
            counts["own" if s == a else "no_style" if s == PLAIN_STYLE else "other"] += 1
        out[str(c)] = _rates(counts, len(names))
    return out


def _rates(counts: dict[str, int], n: int) -> dict[str, dict]:
    """Each count as a rate of n with its 95% Wilson interval."""
    from ..stats import rounded, wilson

    return {k: {"rate": round(c / n, 4), "ci": rounded(wilson(c, n))} for k, c in counts.items()}


def augment(x: torch.Tensor, g: torch.Generator, fade: float = 0.0) -> torch.Tensor:
    """Noise and blur of random strength: generated images are noisier and softer than renders.
    `fade` > 0 also washes half the images out toward their mean colour (contrast 1 - U(0, fade)),
    as a model's faint copies of a pattern are (0 draws exactly what it always did)."""
    b = x.shape[0]
    if fade > 0:
        c = 1 - (torch.rand(b, 1, 1, 1, generator=g) < 0.5) * torch.rand(b, 1, 1, 1, generator=g) * fade
        m = x.mean((2, 3), keepdim=True)
        x = m + c * (x - m)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(b, 1, 1, 1, generator=g) * 0.6
    x = (1 - a) * x + a * blur
    x = x + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 0.06
    return x.clamp(0, 1)


@torch.no_grad()
def accuracy(judge: Judge, x: torch.Tensor, ys: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Held-out accuracy of every head, and of the memorized match, with 95% Wilson intervals."""
    from ..stats import rounded, wilson

    judge.eval()
    heads = [k for k in ys if k in judge.labels]
    chunks = [judge(x[s:s + 1024]) for s in range(0, len(x), 1024)]        # one forward pass per chunk
    logits = {k: torch.cat([c[k] for c in chunks]) for k in heads}
    hits = {k: (logits[k].argmax(-1) == ys[k]) for k in heads}
    if MATCH_KEY in ys:
        idx, dist = judge.scene_distance(x)
        pred = torch.where(dist < judge.match_threshold, idx + 1, torch.zeros_like(idx))
        hits[MATCH_KEY] = pred == ys[MATCH_KEY]
    out = {}
    for k, h in hits.items():
        n, c = len(h), int(h.sum())
        out[k] = {"accuracy": round(c / n, 4), "ci": rounded(wilson(c, n)), "n": n}
    return out


def fit_match_threshold(vocab: Vocabulary, seed: int, n: int = 4000) -> dict:
    """The memorized-match threshold: the geometric mean of the largest distance of an augmented
    copy of a scene to its render (99.9th percentile) and the smallest distance of any other world
    image to its nearest scene (0.1th percentile); both are recorded. Refuses a world whose scenes
    cannot be told from other images that way."""
    if not vocab.memorized:
        return {"match_threshold": 0.01}
    probe = Judge(vocab)
    g = torch.Generator().manual_seed(seed)
    scenes = probe.scenes.repeat(max(1, n // (4 * len(probe.scenes))), 1, 1, 1)
    copies = augment(scenes, g)
    others, ys = render_labelled(n, seed, vocab, {k: v for k, v in JUDGE_KINDS.items() if k != "memorized"})
    d_copy = probe.scene_distance(copies)[1]
    d_other = probe.scene_distance(augment(others, g))[1]
    hi, lo = float(torch.quantile(d_copy, 0.999)), float(torch.quantile(d_other, 0.001))
    if not hi < lo:
        raise DatarightsError(f"memorized scenes cannot be matched: copies reach distance {hi:.4f}, other images {lo:.4f}")
    return {"match_threshold": float(np.sqrt(hi * lo)), "copy_distance_p999": round(hi, 5),
            "other_distance_p001": round(lo, 5)}


def head_loss(logits: dict, ys: dict, k: str, b: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of head k on batch rows b; the style head's is soft on a blend's two artists
    (weight `style_weight` on `style`, the rest on `style_other`) where those labels exist."""
    if k == "style" and "style_weight" in ys:
        w = ys["style_weight"][b]
        return (w * F.cross_entropy(logits[k], ys[k][b], reduction="none")
                + (1 - w) * F.cross_entropy(logits[k], ys["style_other"][b], reduction="none")).mean()
    return F.cross_entropy(logits[k], ys[k][b])


def train_judge(cfg: JudgeConfig | None = None, out: str | Path | None = None, progress: bool = True,
                overwrite: bool = False) -> tuple[Judge, dict]:
    """Train the judge on rendered world images; report held-out accuracy per label with intervals."""
    from ..world.vocab import PRESETS, build_vocabulary

    cfg = cfg or JudgeConfig()
    if out is not None:
        check_output(out, "judge", overwrite=overwrite)
    t0 = time.time()
    vocab = build_vocabulary(PRESETS[cfg.preset])
    match = fit_match_threshold(vocab, cfg.seed + 20_000)
    x, ys = render_labelled(cfg.n_train, cfg.seed, vocab, blends=cfg.blends)
    xt, yt = render_labelled(cfg.n_test, cfg.seed + 10_000, vocab)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        judge = Judge(vocab, width=cfg.width, match_threshold=match["match_threshold"])
    opt = torch.optim.Adam(judge.parameters(), lr=cfg.lr)
    steps_per_epoch = (len(x) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(cfg.seed)
    heads = list(judge.labels)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="judge", disable=not progress, file=sys.stderr)
    for _ in range(cfg.epochs):
        judge.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), cfg.batch_size):
            b = perm[s:s + cfg.batch_size]
            logits = judge(augment(x[b], g, cfg.fade))
            loss = sum(head_loss(logits, ys, k, b) for k in heads)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    report = {"clean": accuracy(judge, xt, yt),
              "augmented": accuracy(judge, augment(xt, torch.Generator().manual_seed(1)), yt),
              "blends": blend_check(judge, seed=cfg.seed + 30_000), "fades": fade_check(judge, seed=cfg.seed + 32_000),
              "match": match, "n_test": cfg.n_test,
              "seconds": round(time.time() - t0, 1), "config": asdict(cfg)}
    judge.eval()
    if out is not None:
        save_judge(judge, out, report, overwrite)
    return judge, report


def save_judge(judge: Judge, out: str | Path, report: dict | None = None, overwrite: bool = False) -> Path:
    """Write a judge folder (model.safetensors + config.json) atomically."""
    with atomic_folder(out, "judge", overwrite=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps({
            "world_version": WORLD_VERSION, "sizes": asdict(judge.vocab.sizes), "labels": judge.labels, **judge.config,
            "report": report or {}}, indent=2))
    return Path(out)


def load_judge(path: str | Path | None = None) -> Judge:
    """Load the shipped judge (default) or one saved by `train_judge`."""
    from ..world.vocab import build_vocabulary

    path = Path(path) if path is not None else DEFAULT_JUDGE
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DatarightsError(f"judge folder {path} is missing config.json or model.safetensors")
    cfg = read_json_file(path / "config.json", "judge config")
    if not isinstance(cfg, dict):
        raise DatarightsError(f"judge folder {path} is corrupt or not a judge (config.json is not an object)")
    check_world_version(cfg.get("world_version", 1), f"judge folder {path} reads world version",
                        "train one with `datarights train-judge`")
    try:
        sizes = cfg["sizes"]
        vocab = build_vocabulary(Sizes(**{**sizes, "doses": tuple(sizes["doses"])}))
        with torch.device("cpu"):  # the judge lives on the CPU whatever the default device
            judge = Judge(vocab, width=cfg["width"], feat_dim=cfg["feat_dim"], match_threshold=cfg["match_threshold"])
        if judge.labels != cfg["labels"]:
            raise ValueError("its labels are not its vocabulary's")
        judge.load_state_dict(load_file(path / "model.safetensors"))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise DatarightsError(f"judge folder {path} is corrupt or not a judge ({type(e).__name__})") from None
    judge.report = cfg.get("report", {})
    return judge.eval().requires_grad_(False)
