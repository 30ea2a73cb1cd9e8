"""Does a world model reproduce provenance? Generic prompts, their source owners, and how often each
owner's trace appears in generations against how often it appears in training.

A *generic* prompt names no source: a subject ("a fish", "a red fish", "a photo of a house", "a
tree and a house"), never a style, a character, a scene or a photographer. World 2 is built so
that generations of such prompts still carry their source's trace (a signature, a style, a
character, a memorized scene) and the judge reads it: `provenance` names the source owner of each
generation by construction. A model that learned the world reproduces the traces at about their
training frequencies among the images with generic captions of that subject; `reproduction`
measures that (share of generations with a readable source, share of photographs with an exact
signature, the correlation of generation and training frequencies per subject and owner, and the
memorized scenes' copy rate by dose).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..stats import bootstrap, rate, rounded
from ..world import ImageFolder, read_imagefolder, world_config_of
from ..world import vocab as V
from ..world.vocab import CATEGORIES, COLORS, COMPOSITION_TEMPLATES, PREFIXES, SUBJECT_WEIGHTS, Vocabulary

SPLITS = ("tune", "report", "all")
"""Generic prompts come in two halves of prefixes and templates: methods are tuned on one ('tune')
and reported on the other ('report')."""


def _half(items: list, split: str) -> list:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return list(items) if split == "all" else list(items)[0 if split == "tune" else 1::2]


def generic_prompts(n: int, seed: int, vocab: Vocabulary | None = None, split: str = "all",
                    colorless: float = 0.3) -> list[dict]:
    """n generic prompts with their subject: subjects by the world's weights, an object of the subject
    (its generic noun or an instance), a colour unless `colorless`, a prefix (or composition
    template) from the split's half. Each: {"text", "subject", "object", "color"}."""
    vocab = vocab or V.DEFAULT
    rng = np.random.default_rng(seed)
    subjects = vocab.subjects
    w = np.array([SUBJECT_WEIGHTS[s] for s in subjects])
    prefixes, templates = _half(PREFIXES, split), _half(COMPOSITION_TEMPLATES, split)
    out = []
    for _ in range(n):
        subject = subjects[int(rng.choice(len(subjects), p=w / w.sum()))]
        if subject == "composition":
            name = list(vocab.compositions)[int(rng.integers(len(vocab.compositions)))]
            a, b = vocab.compositions[name]
            out.append({"text": templates[int(rng.integers(len(templates)))].format(a=a, b=b), "subject": subject,
                        "object": name, "color": None})
            continue
        obj = CATEGORIES[subject][int(rng.integers(len(CATEGORIES[subject])))]
        color = None if rng.random() < colorless else list(COLORS)[int(rng.integers(len(COLORS)))]
        prefix = prefixes[int(rng.integers(len(prefixes)))]
        out.append({"text": V.object_prompt(obj, color, None, prefix), "subject": subject, "object": obj, "color": color})
    return out


def vocabulary_of(folder: ImageFolder | str | Path) -> Vocabulary:
    """The vocabulary of a world folder (its world_config.json); the default one for other datasets."""
    cfg = world_config_of(folder.root if isinstance(folder, ImageFolder) else folder)
    return cfg.vocabulary() if cfg is not None else V.DEFAULT


def training_frequencies(metas: list[dict]) -> dict[str, dict[str, float]]:
    """subject -> owner -> share of that subject's training images *with generic captions* (no style,
    character, scene or photographer named) that the owner holds: what a generic prompt of the
    subject should draw on."""
    counts: dict[str, dict[str, int]] = {}
    for m in metas:
        if m.get("captioned") or "subject" not in m:
            continue
        counts.setdefault(m["subject"], {}).setdefault(m["owner"], 0)
        counts[m["subject"]][m["owner"]] += 1
    return {s: {o: k / sum(c.values()) for o, k in c.items()} for s, c in counts.items()}


def subject_counts(metas: list[dict]) -> dict[str, dict[str, int]]:
    """subject -> owner -> number of training images (every caption): the count prior of an owner given
    what a prompt asks for."""
    out: dict[str, dict[str, int]] = {}
    for m in metas:
        if "subject" in m:
            out.setdefault(m["subject"], {}).setdefault(m["owner"], 0)
            out[m["subject"]][m["owner"]] += 1
    return out


def read_sources(judge, images: torch.Tensor, vocab: Vocabulary | None = None) -> list[dict]:
    """The judge's reading of each image with its provenance ({"owner", "kind", "trace"} merged in)."""
    from ..judge import provenance

    rows = judge.read(images, vocab=vocab)
    return [{**r, **{f"source_{k}": v for k, v in provenance(r, vocab).items()}} for r in rows]


def _frequency_correlation(subjects: list[str], owners: list[str | None], train: dict[str, dict[str, float]],
                           idx: np.ndarray) -> float:
    """Pearson correlation over (subject, owner) cells of generation frequency and training frequency."""
    gen: dict[str, dict[str, int]] = {}
    for i in idx:
        gen.setdefault(subjects[i], {}).setdefault(owners[i], 0)
        gen[subjects[i]][owners[i]] += 1
    xs, ys = [], []
    for s, t in train.items():
        g = gen.get(s, {})
        total = sum(g.values())
        if not total:
            continue
        for o in set(t) | {o for o in g if o is not None}:
            xs.append(t.get(o, 0.0))
            ys.append(g.get(o, 0) / total)
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return float("nan")
    return float(np.corrcoef(xs, ys)[0, 1])


@torch.no_grad()
def reproduction(model, judge, data: ImageFolder | str | Path, n: int = 512, seed: int = 0, steps: int = 25,
                 n_memorized: int = 16, progress=None) -> dict:
    """Generate n images from generic prompts (and `n_memorized` from each memorized scene's own
    prompt) and report how the model reproduces provenance (see the module docstring)."""
    t0 = time.time()
    folder = data if isinstance(data, ImageFolder) else read_imagefolder(data, resolution=model.resolution)
    vocab = vocabulary_of(folder)
    prompts = generic_prompts(n, seed, vocab)
    images = model.sample([p["text"] for p in prompts], seed=seed, steps=steps, callback=progress)
    rows = read_sources(judge, images, vocab)
    owners = [r["source_owner"] for r in rows]
    kinds = [r["source_kind"] or ("mixed" if r["source_trace"].startswith("mixed") else "unsigned") for r in rows]
    photographs = [i for i, r in enumerate(rows) if r["source_kind"] in ("photographer", None)]
    train = training_frequencies(folder.metas)
    subjects = [p["subject"] for p in prompts]
    corr = _frequency_correlation(subjects, owners, train, np.arange(n))
    corr_ci = bootstrap(lambda idx: _frequency_correlation(subjects, owners, train, idx), n, reps=500, seed=seed)
    control = {name for name, p in vocab.photographers.items() if p["control"]}
    out = {
        "n": n, "seed": seed, "steps": steps,
        "source_known": _rate([o is not None for o in owners]),
        "by_kind": {k: _rate([x == k for x in kinds]) for k in
                    ("photographer", "artist", "studio", "publisher", "mixed", "unsigned")},
        "signature_read": _rate([rows[i]["source_kind"] == "photographer" for i in photographs]),
        "frequency_correlation": round(corr, 4) if np.isfinite(corr) else None,
        "frequency_correlation_ci": rounded(corr_ci),
        "owners_seen": len({o for o in owners if o is not None}),
        "control_group_share": _rate([o in control for o in owners]),
        "style_leak": _rate([k == "artist" for k in kinds]),
        "style_leak_training": round(float(np.mean([m["kind"] == "styled" for m in folder.metas
                                                    if not m.get("captioned") and m["kind"] != "memorized"])), 4),
    }
    if n_memorized and vocab.memorized:
        names = list(vocab.memorized)
        mem_prompts = [vocab.memorized[m]["prompt"] for m in names for _ in range(n_memorized)]
        mem_rows = judge.read(model.sample(mem_prompts, seed=seed + 1, steps=steps), vocab=vocab)
        out["memorized_by_dose"] = [
            {"scene": m, "dose": vocab.memorized[m]["dose"],
             **_rate([r["memorized"] == m for r in mem_rows[i * n_memorized:(i + 1) * n_memorized]])}
            for i, m in enumerate(names)]
    out["seconds"] = round(time.time() - t0, 1)
    out["_rows"], out["_prompts"], out["_images"] = rows, prompts, images
    return out


def _rate(flags) -> dict:
    r = rate(flags)
    return {"value": round(r["value"], 4) if r["n"] else None, "ci": rounded(r["ci"]), "n": r["n"]}


__all__ = ["SPLITS", "generic_prompts", "read_sources", "reproduction", "subject_counts", "training_frequencies",
           "vocabulary_of"]
