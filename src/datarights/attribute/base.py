"""What every attribution method shares: the training set view, the registry, and owner shares."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DatarightsError
from ..models import T2IModel
from ..registry import register_method
from ..world import ImageFolder, read_imagefolder


@dataclass
class TrainingSet:
    """The training images as a method sees them: pixels, model-space x_0, captions' text states, owners."""

    folder: ImageFolder
    x0: torch.Tensor
    """[N, C, H, W] in model space."""
    states: torch.Tensor
    """[U, L, D] text states of the distinct captions."""
    caption: torch.Tensor
    """[N] index into states."""
    hash: str

    @property
    def images(self) -> torch.Tensor:
        return torch.from_numpy(self.folder.images)

    @property
    def owners(self) -> list[str]:
        return [m.get("owner", "unknown") for m in self.folder.metas]

    @property
    def files(self) -> list[str]:
        return [m["file_name"] for m in self.folder.metas]

    def __len__(self) -> int:
        return len(self.folder)

    def cond(self, idx) -> torch.Tensor:
        return self.states[self.caption[idx]]

    @functools.cached_property
    def keys(self) -> list[str]:
        """Each row's content key (its image file's and caption's hash; `attribute.store`), read once."""
        from .store import work_keys
        return work_keys(self.folder.root, self.folder.metas)


def load_training_set(model: T2IModel, data: str | Path | ImageFolder) -> TrainingSet:
    from ..train import data_hash, precompute_text_states

    folder = data if isinstance(data, ImageFolder) else read_imagefolder(data, resolution=model.resolution)
    if folder.images.shape[-1] != model.resolution:
        folder = read_imagefolder(folder.root, resolution=model.resolution)
    chunk = 256 if model.vae is None else 16  # a VAE encoder's activations at full resolution are large
    with torch.no_grad():
        x0 = torch.cat([model.to_model_space(torch.from_numpy(folder.images[i:i + chunk]))
                        for i in range(0, len(folder), chunk)])
    states, idx = precompute_text_states(model, folder.texts)
    return TrainingSet(folder, x0, states[:-1], idx.to(model.device), data_hash(folder))


@dataclass
class Query:
    """A generated image to attribute: pixels [3, H, W] in [0, 1] and its prompt."""

    image: torch.Tensor
    prompt: str
    region: torch.Tensor | None = None
    """Local attribution: weights [H, W] in [0, 1] over the image's pixels (1 inside the region); the
    methods in LOCAL restrict the query's loss, gradient or pixels to it."""

    def __post_init__(self):
        if not self.prompt or not self.prompt.strip():
            raise DatarightsError("a prompt is required: attribution scores the image under the prompt that made it")
        if self.region is not None:
            if tuple(self.region.shape) != tuple(self.image.shape[-2:]):
                raise DatarightsError(f"the region is {tuple(self.region.shape)} but the image is "
                                      f"{tuple(self.image.shape[-2:])}: they must be the same size")
            if not float(self.region.sum()) > 0:
                raise DatarightsError("the region is empty: it must cover at least one pixel")

    def weight(self, model: T2IModel) -> torch.Tensor | None:
        """The region as model-space weights [1, 1, h, w] (None: the whole image)."""
        from ..runtime import region_weight
        return region_weight(model, self.region)


@dataclass
class Method:
    name: str
    config_cls: type
    prepare: Callable  # (model, train, cfg, cache_root, progress) -> state (per-training-set, cached)
    score: Callable    # (model, train, state, query, cfg) -> scores [N] (higher = more influential), or (scores, extra)


METHODS: dict[str, Method] = {}
LOCAL: set[str] = set()
"""Methods that attribute a region of the query (Query.region): its loss, gradient or pixels restricted to it."""


def register(name: str, config_cls: type, prepare: Callable, score: Callable, local: bool = False) -> None:
    """Register an attribution method by name; a duplicate name is a programming error. `local`: its
    score honours Query.region."""
    register_method(METHODS, name, Method(name, config_cls, prepare, score), "attribution method")
    if local:
        LOCAL.add(name)


# Share calibration: p_i = softmax(z_i / T) over the training set, z the scores standardised to zero
# mean and unit variance, owner share = the sum of its images' p_i. T is fitted per method by
# temperature scaling (maximum likelihood of the true owner) on generated images whose source owner
# the judge reads from the pixels: the 32 tune queries of `python benchmarks/attribute.py owners`
# (generic prompts, other templates and seeds than its report queries); BENCHMARKS.md has the figures.
TEMPERATURE: dict[str, float] = {"abu": 1.4420, "abu-fast": 0.9527, "trak": 0.6745, "dtrak": 1.0209, "jtrak": 0.8891,
                                  "feature": 0.1045, "pixel": 0.1119, "caption": 0.7744, "ekfac": 5.0000,
                                  "kfac": 2.1826}
"""Fitted on the World 2 shipped model's 32 tune queries of the owner evaluation (`python
benchmarks/attribute.py owners`, `temperatures` in attribute-owners.json), each method at its
default config (`abu` with its damping of 100 x mean F); the queries' source owners read by the
judge shipped on 2026-12-04. `ekfac` and `kfac` were fitted on the same tune queries on 2026-12-05
(`--out attribute-owners-ekfac.json`): ekfac's is the grid's largest, 5.0, so its shares are close to
uniform, which is what its rankings support (no owner signal on World 2; BENCHMARKS.md)."""
DEFAULT_TEMPERATURE = 0.25
"""Uncalibrated temperature: methods without a calibrated value, and every model but the world model."""


def share_temperature(method: str, model: T2IModel | None = None) -> tuple[float, bool]:
    """(temperature, calibrated): the world calibration applies to world models only."""
    if (model is None or model.kind == "world") and method in TEMPERATURE:
        return TEMPERATURE[method], True
    return DEFAULT_TEMPERATURE, False


def fit_temperature(scores: list[torch.Tensor], owners: list[str], targets: list[dict[str, float]],
                    grid: np.ndarray | None = None) -> tuple[float, float]:
    """Temperature scaling of owner shares: the T (on a log grid, 0.005..5) that minimises the mean
    cross-entropy -sum_o q_o log share_o(T) against target owner distributions q. Returns (T, cross-entropy)."""
    grid = np.exp(np.linspace(np.log(0.005), np.log(5.0), 101)) if grid is None else grid

    def ce(t: float) -> float:
        vals = []
        for sc, q in zip(scores, targets):
            share = {x["owner"]: x["share"] for x in owner_shares(sc, owners, t)}
            vals.append(-sum(w * np.log(max(share.get(o, 0.0), 1e-12)) for o, w in q.items()))
        return float(np.mean(vals))

    curve = [ce(t) for t in grid]
    i = int(np.argmin(curve))
    return float(grid[i]), curve[i]


def owner_shares(scores: torch.Tensor, owners: list[str], temperature: float = DEFAULT_TEMPERATURE,
                 center: tuple[float, float] | None = None) -> list[dict]:
    """Owner shares that sum to 1: softmax over standardised scores, summed per owner, largest first.

    `center`: (mean, standard deviation) to standardise with, when `scores` are only some of the
    training set's (an index's candidates); default: these scores' own."""
    s = scores.double()
    mean, std = (s.mean(), s.std()) if center is None else center
    z = (s - mean) / (std + 1e-12)
    p = torch.softmax(z / temperature, 0).numpy()
    acc: dict[str, float] = {}
    for o, v in zip(owners, p):
        acc[o] = acc.get(o, 0.0) + float(v)
    total = math.fsum(acc.values())
    return [{"owner": o, "share": v / total} for o, v in sorted(acc.items(), key=lambda kv: -kv[1])]


@dataclass
class Attribution:
    """Scores over the training set for one query, with the top-K and owner shares."""

    method: str
    scores: torch.Tensor
    files: list[str]
    owners: list[str]
    seconds: float
    prepare_seconds: float = 0.0
    temperature: float = DEFAULT_TEMPERATURE
    extra: dict = field(default_factory=dict)
    calibrated: bool = True
    """False when the owner-share temperature is a default, not fitted for this model."""
    config: dict = field(default_factory=dict)
    """The method's settings as run (model defaults filled in)."""
    rows: list[int] | None = None
    """Training positions of the scored rows when only some were scored (an index's candidates; `files`
    and `owners` are theirs); None: every row, in order."""
    center: tuple[float, float] | None = None
    """With `rows`: (mean, standard deviation) of all the training set's scores, for the owner shares."""

    def top(self, k: int = 10) -> list[dict]:
        order = ranking(self.scores)[:k]
        return [{"file": self.files[i], "owner": self.owners[i], "score": float(self.scores[i]),
                 "index": int(i if self.rows is None else self.rows[i])} for i in order.tolist()]

    def owner_shares(self) -> list[dict]:
        return owner_shares(self.scores, self.owners, self.temperature, self.center)

    def to_json(self, k: int = 10) -> dict:
        return {"top": self.top(k), "owners": self.owner_shares(), "method": self.method,
                "seconds": round(self.seconds, 3), "prepare_seconds": round(self.prepare_seconds, 2),
                "temperature": self.temperature, "temperature_calibrated": self.calibrated, "config": self.config,
                **self.extra}


def ranking(scores: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Training indices by descending score, ties in a seeded random order. Ties are common (the
    caption baseline gives every image with the same caption the same score); ordering them by index
    would favour whichever owner's files come first."""
    s = scores.detach().double().cpu()
    perm = torch.randperm(len(s), generator=torch.Generator(device="cpu").manual_seed(seed), device="cpu")
    return perm[torch.argsort(s[perm], descending=True, stable=True)]


def rank_of(scores: torch.Tensor, positives: np.ndarray) -> np.ndarray:
    """1-based ranks of the positive indices under descending scores (ties in ranking()'s seeded order)."""
    order = ranking(scores).numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    return rank[positives]
