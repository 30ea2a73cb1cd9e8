"""What the audit asks of a judge, for the world judge and for a CLIP model (any Stable Diffusion model).

A scorer answers, per generated image: does it show this concept (rather than its anchor and
nearby concepts)? does it show what its prompt asked for? is it degenerate (noise, a blank, a
broken model's output) rather than an image of the world the model draws? and it gives features
for KID. Degenerate images are found by their distance to the nearest known-good images (a k-NN
distance, which unlike a distance to class centroids also catches images the judge would file
under some class): for the world judge, rendered world images, in judge features and in pixels,
each thresholded at the 99th percentile of held-out rendered images; for CLIP, the base model's
own generations in the audit, in CLIP image embeddings, thresholded at the 99th percentile of the
base images' distances to the others.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..world import vocab as V

REALNESS_QUANTILE = 0.99
K_NEIGHBOURS = 5


def _knn_distance(x: torch.Tensor, bank: torch.Tensor, k: int, cosine: bool, exclude_self: bool = False) -> torch.Tensor:
    """Mean distance of each row of x to its k nearest rows of bank (cosine distance or L2)."""
    out = []
    for s in range(0, len(x), 512):
        xs = x[s:s + 512]
        d = 1 - xs @ bank.T if cosine else torch.cdist(xs, bank)
        if exclude_self:  # x is the bank itself: leave each row's own zero distance out
            d[torch.arange(len(xs)), torch.arange(s, s + len(xs))] = float("inf")
        out.append(d.topk(min(k, bank.shape[0] - int(exclude_self)), dim=1, largest=False).values.mean(1))
    return torch.cat(out)


# ----------------------------------------------------------------------------- the world judge
@dataclass
class Realness:
    """k-NN distances to rendered world images, in judge features (cosine) and pixels (L2), with thresholds."""

    feat_bank: torch.Tensor
    pix_bank: torch.Tensor
    feat_threshold: float
    pix_threshold: float

    def scores(self, judge, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            f = torch.nn.functional.normalize(judge.features(images), dim=1)
        x = judge_pixels(images)
        return _knn_distance(f, self.feat_bank, K_NEIGHBOURS, True), _knn_distance(x, self.pix_bank, K_NEIGHBOURS, False)

    def degenerate(self, judge, images: torch.Tensor) -> np.ndarray:
        fd, pd = self.scores(judge, images)
        return ((fd > self.feat_threshold) | (pd > self.pix_threshold)).numpy()


def judge_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images as the world judge sees them (16 x 16, CPU), flattened."""
    x = images.detach().float().cpu()
    if x.shape[-2:] != (V.RESOLUTION, V.RESOLUTION):
        x = torch.nn.functional.interpolate(x, size=(V.RESOLUTION, V.RESOLUTION), mode="bilinear", antialias=True,
                                            align_corners=False)
    return x.flatten(1)


_REALNESS: dict[str, Realness] = {}


def fit_realness(judge, n_bank: int = 4000, n_heldout: int = 1000, seed: int = 2468) -> Realness:
    """Rendered images of the judge's world (its vocabulary: a large world's judge gets the large world's
    styles, owners and scenes; noised and blurred as the judge was trained) as the bank, held-out ones for
    the thresholds (99th percentile). Computed once per judge weights (a few seconds) and kept in memory
    and in the cache (keyed by the weights, the renderer's source and the settings), so that a new
    process (a worker, a command) does not render the bank again."""
    from ..attribute.cache import artifact_key, memo, source_hash
    from ..world import generate, render
    from . import augment, render_labelled

    weights = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in judge.parameters())).hexdigest()
    mine = f"{weights}-{n_bank}-{n_heldout}-{seed}"
    if mine not in _REALNESS:
        import sys

        device = str(next(judge.parameters()).device)

        def build():
            g = torch.Generator(device="cpu").manual_seed(seed)
            bank, _ = render_labelled(n_bank, seed, vocab=judge.vocab)     # the judge's own world's images
            held, _ = render_labelled(n_heldout, seed + 1, vocab=judge.vocab)
            bank, held = augment(bank, g), augment(held, g)
            with torch.no_grad():
                fb = torch.nn.functional.normalize(judge.features(bank), dim=1).cpu()
                fh = torch.nn.functional.normalize(judge.features(held), dim=1).cpu()
            pb, ph = judge_pixels(bank), judge_pixels(held)
            fd, pd = _knn_distance(fh, fb, K_NEIGHBOURS, True), _knn_distance(ph, pb, K_NEIGHBOURS, False)
            return {"feat_bank": fb, "pix_bank": pb}, {"feat_threshold": float(torch.quantile(fd, REALNESS_QUANTILE)),
                                                       "pix_threshold": float(torch.quantile(pd, REALNESS_QUANTILE))}

        key = artifact_key(judge=weights, code=source_hash(generate, render, sys.modules[__package__], sys.modules[__name__]),
                           n_bank=n_bank, n_heldout=n_heldout, seed=seed, device=device)
        t, meta = memo("realness", key, build)
        _REALNESS[mine] = Realness(t["feat_bank"].to(device), t["pix_bank"], meta["feat_threshold"],
                                   meta["pix_threshold"])
    return _REALNESS[mine]


class WorldScorer:
    """The world judge: labels of the world's concepts, read from 16 x 16 images."""

    name = "world judge"
    label_keys = ("object", "color", "character", "memorized", "composition")

    def __init__(self, judge=None):
        from . import load_judge
        self.judge = judge or load_judge()
        self.realness = fit_realness(self.judge)

    def check(self, concept: str) -> None:
        from . import label_check
        label_check(concept, self.judge.vocab)

    def read(self, images: torch.Tensor) -> list[dict]:
        return self.judge.read(images)

    def shows(self, rows: list[dict], concept: str, alternatives=()) -> np.ndarray:
        from . import shows
        return shows(rows, concept, self.judge.vocab)

    def correct(self, rows: list[dict], asked: list[dict]) -> np.ndarray:
        """Each image shows every label its prompt asked for (style only where the prompt names one)."""
        return np.array([all(a[k] == r[k] for k in self.label_keys) and (a["kind"] != "styled" or a["style"] == r["style"])
                         for a, r in zip(asked, rows)])

    def other_prompts(self, n: int, seed: int, exclude: list[str], vocab=None) -> tuple[list[str], list[dict]]:
        """World-grammar prompts of `vocab` (the audited model's world; default: the default world's)
        that name none of `exclude`, with the labels each asks for."""
        from ..world import prompts_naming_none
        rows = prompts_naming_none(n, seed, exclude, vocab)
        return [o["text"] for o in rows], rows

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.judge.features(images).cpu()

    def calibrate(self, base_images: torch.Tensor) -> None:
        """The world judge is calibrated on rendered images once (fit_realness): nothing to do per audit."""

    def degenerate(self, images: torch.Tensor) -> np.ndarray:
        return self.realness.degenerate(self.judge, images)

    def describe(self, rows: list[dict]) -> list[str]:
        from . import describe
        return [describe(r) for r in rows]


# ----------------------------------------------------------------------------- CLIP
TEMPLATES = ("{}", "a photo of {}", "an image of {}")
OTHER_PROMPTS = [
    "a photo of a dog", "a photo of a cat", "a red car on a street", "a bowl of fruit on a table", "a mountain lake",
    "a city skyline at night", "a bicycle leaning on a wall", "a plate of pasta", "a sailing boat at sea",
    "a snowy forest", "a cup of coffee", "a vase of flowers", "a wooden chair", "a lighthouse on a cliff",
    "a horse in a field", "a pair of shoes", "a bridge over a river", "a desert with dunes", "a bird on a branch",
    "a library with books", "a plate of sushi", "a green tractor", "a castle on a hill", "a beach with palm trees",
    "a portrait of an old man", "a teddy bear", "a kitchen interior", "a waterfall", "a train at a station",
    "a field of sunflowers", "a violin", "a hot air balloon",
]
"""Prompts for the 'others' check on models outside the world: everyday scenes no erasure should touch."""


class ClipScorer:
    """A local CLIP folder (transformers CLIPModel + its tokenizer and preprocessor config) as a zero-shot
    judge: an image shows a concept when the concept's text is its best match among the concept, its
    anchor and its nearby concepts (prompt ensemble over TEMPLATES)."""

    name = "CLIP"

    def __init__(self, folder: str | Path):
        from transformers import CLIPModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise DatarightsError(f"judge folder {folder} is not a CLIP model (no config.json)")
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            if cfg.get("model_type") != "clip":
                raise ValueError(f"model_type {cfg.get('model_type')!r}")
            with torch.device("cpu"):
                self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
            self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
            pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise DatarightsError(f"judge folder {folder} is not a CLIP model ({str(e).splitlines()[0][:100]})") from None
        crop = pre.get("crop_size", 224)
        self.size = crop["height"] if isinstance(crop, dict) else int(crop)
        self.mean = torch.tensor(pre.get("image_mean", [0.481, 0.458, 0.408]), device="cpu").view(1, 3, 1, 1)
        self.std = torch.tensor(pre.get("image_std", [0.269, 0.261, 0.276]), device="cpu").view(1, 3, 1, 1)
        self.bank: torch.Tensor | None = None
        self.threshold = float("inf")
        self._text: dict[str, torch.Tensor] = {}

    def check(self, concept: str) -> None:
        if not concept or not concept.strip():
            raise DatarightsError("a concept to judge with CLIP must not be empty")

    @torch.no_grad()
    def _text_embedding(self, concept: str) -> torch.Tensor:
        if concept not in self._text:
            toks = self.tokenizer([t.format(concept) for t in TEMPLATES], padding="max_length", truncation=True,
                                  max_length=self.tokenizer.model_max_length, return_tensors="np")
            ids = torch.from_numpy(toks.input_ids)
            e = torch.nn.functional.normalize(_tensor(self.model.get_text_features(input_ids=ids)), dim=1).mean(0)
            self._text[concept] = torch.nn.functional.normalize(e, dim=0)
        return self._text[concept]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image embeddings [B, d] (images resized to the model's input and normalised)."""
        out = []
        for s in range(0, len(images), 64):
            x = images[s:s + 64].detach().float().cpu()
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            x = (x.clamp(0, 1) - self.mean) / self.std
            out.append(torch.nn.functional.normalize(_tensor(self.model.get_image_features(pixel_values=x)), dim=1))
        return torch.cat(out)

    def read(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def _best(self, feats: torch.Tensor, choices: list[str]) -> np.ndarray:
        texts = torch.stack([self._text_embedding(c) for c in choices])
        return (feats @ texts.T).argmax(1).numpy()

    def shows(self, feats: torch.Tensor, concept: str, alternatives=()) -> np.ndarray:
        choices = list(dict.fromkeys([concept, *[a for a in alternatives if a.lower() != concept.lower()]]))
        if len(choices) == 1:
            choices.append("something else")
        return self._best(feats, choices) == 0

    def correct(self, feats: torch.Tensor, asked: list[str]) -> np.ndarray:
        """Each image's best match among all the other-prompts is its own prompt."""
        choices = list(dict.fromkeys(asked))
        best = self._best(feats, choices)
        return np.array([choices[b] == a for b, a in zip(best, asked)])

    def other_prompts(self, n: int, seed: int, exclude: list[str], vocab=None) -> tuple[list[str], list[str]]:
        rng = np.random.default_rng(seed)
        pool = [p for p in OTHER_PROMPTS if not any(t.lower() in p.lower() for t in exclude)]
        prompts = [pool[i] for i in rng.permutation(len(pool))]
        prompts = [prompts[i % len(prompts)] for i in range(n)]
        return prompts, prompts

    def calibrate(self, base_images: torch.Tensor) -> None:
        """The base model's own images of this audit are the known-good bank; the threshold is the 99th
        percentile of their distances to the others (each image's own distance left out)."""
        self.bank = self.features(base_images)
        d = _knn_distance(self.bank, self.bank, K_NEIGHBOURS, True, exclude_self=True)
        self.threshold = float(torch.quantile(d, REALNESS_QUANTILE))

    def degenerate(self, images: torch.Tensor) -> np.ndarray:
        if self.bank is None:
            raise RuntimeError("calibrate the CLIP scorer on base images first")
        return (_knn_distance(self.features(images), self.bank, K_NEIGHBOURS, True) > self.threshold).numpy()

    def describe(self, feats: torch.Tensor, choices: list[str]) -> list[str]:
        return [choices[b] for b in self._best(feats, choices)]


def _tensor(out) -> torch.Tensor:
    """transformers 5 returns feature outputs as ModelOutput in some models: take the embedding tensor."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("pooler_output", "image_embeds", "text_embeds", "last_hidden_state"):
        v = getattr(out, key, None)
        if v is not None:
            return v if v.ndim == 2 else v[:, 0]
    raise DatarightsError("the CLIP judge returned no embeddings")


def load_scorer(judge: str | Path | None = None):
    """The world judge (default), or a CLIP folder given with --judge."""
    return WorldScorer() if judge is None else ClipScorer(judge)
