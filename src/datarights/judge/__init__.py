"""The world judge: a small CNN that reads a world image and returns its labels with probabilities
(object, category, colour, style, character, memorized, composition) and a feature vector.

It plays the role CLIP or a concept detector plays for Stable Diffusion: every audit and quality
figure on the world is the judge's reading of generated images. It is trained on freshly rendered
world images with noise and blur augmentation, so that it reads imperfect generations too.
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
from ..world.generate import LABEL_KEYS, sample_item
from ..world.vocab import LABELS, RESOLUTION

DEFAULT_JUDGE = Path(__file__).resolve().parent.parent / "assets" / "judge"
JUDGE_KINDS = {"object": 0.35, "styled": 0.35, "character": 0.1, "memorized": 0.1, "composition": 0.1}


class Judge(nn.Module):
    """Multi-head CNN classifier for 16x16 world images; `features` are its penultimate layer."""

    def __init__(self, labels: dict[str, list[str]] | None = None, width: int = 48, feat_dim: int = 128):
        super().__init__()
        self.labels = {k: list(v) for k, v in (labels or LABELS).items()}
        self.config = {"width": width, "feat_dim": feat_dim}
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

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 16, 16] in [0, 1] -> features [B, feat_dim]."""
        images = images.to(next(self.parameters()).device, torch.float32)
        if images.shape[-2:] != (RESOLUTION, RESOLUTION):
            images = F.interpolate(images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
        return self.body(images * 2 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {k: h(f) for k, h in self.heads.items()}

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 512) -> list[dict]:
        """One dict per image: {label: name, label + '_p': probability}."""
        self.eval()
        out = []
        for s in range(0, len(images), batch):
            logits = self(images[s:s + batch].float())
            probs = {k: v.softmax(-1) for k, v in logits.items()}
            for i in range(len(next(iter(probs.values())))):
                row = {}
                for k, p in probs.items():
                    j = int(p[i].argmax())
                    row[k] = self.labels[k][j]
                    row[f"{k}_p"] = round(float(p[i, j]), 4)
                out.append(row)
        return out


def describe(row: dict) -> str:
    """A short human reading of one judged image, e.g. 'grumpy face / Ada Vell'."""
    parts = [row[k] for k in ("object", "character", "memorized", "composition") if row[k] != "none"]
    if row["style"] != "plain":
        parts.append(row["style"])
    return " / ".join(parts) or "?"


@dataclass
class JudgeConfig:
    """How the judge is trained."""

    n_train: int = 30000
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


def render_labelled(n: int, seed: int, kinds: dict[str, float] = JUDGE_KINDS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n freshly rendered world images [n, 3, 16, 16] with their label indices."""
    rng = np.random.default_rng(seed)
    names = list(kinds)
    draws = rng.choice(len(names), size=n, p=np.array(list(kinds.values())) / sum(kinds.values()))
    imgs, ys = [], {k: [] for k in LABEL_KEYS}
    for d in draws:
        img, meta = sample_item(names[d], rng)
        imgs.append(img)
        for k in LABEL_KEYS:
            ys[k].append(LABELS[k].index(meta[k]))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return x, {k: torch.tensor(v) for k, v in ys.items()}


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Noise and blur of random strength: generated images are noisier and softer than renders."""
    b = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(b, 1, 1, 1, generator=g) * 0.6
    x = (1 - a) * x + a * blur
    x = x + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 0.06
    return x.clamp(0, 1)


@torch.no_grad()
def accuracy(judge: Judge, x: torch.Tensor, ys: dict[str, torch.Tensor]) -> dict[str, float]:
    judge.eval()
    logits = {k: torch.cat([judge(x[s:s + 1024])[k] for s in range(0, len(x), 1024)]) for k in ys}
    return {k: round(float((logits[k].argmax(-1) == ys[k]).float().mean()), 4) for k in ys}


def train_judge(cfg: JudgeConfig | None = None, out: str | Path | None = None, progress: bool = True,
                overwrite: bool = False) -> tuple[Judge, dict]:
    """Train the judge on rendered world images; report held-out accuracy per label."""
    cfg = cfg or JudgeConfig()
    if out is not None:
        check_output(out, "judge", overwrite=overwrite)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    x, ys = render_labelled(cfg.n_train, cfg.seed)
    xt, yt = render_labelled(cfg.n_test, cfg.seed + 10_000)
    judge = Judge(width=cfg.width)
    opt = torch.optim.Adam(judge.parameters(), lr=cfg.lr)
    steps_per_epoch = (len(x) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="judge", disable=not progress, file=sys.stderr)
    for _ in range(cfg.epochs):
        judge.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), cfg.batch_size):
            b = perm[s:s + cfg.batch_size]
            logits = judge(augment(x[b], g))
            loss = sum(F.cross_entropy(logits[k], ys[k][b]) for k in ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    report = {"clean": accuracy(judge, xt, yt),
              "augmented": accuracy(judge, augment(xt, torch.Generator().manual_seed(1)), yt),
              "n_test": cfg.n_test, "seconds": round(time.time() - t0, 1), "config": asdict(cfg)}
    judge.eval()
    if out is not None:
        save_judge(judge, out, report, overwrite)
    return judge, report


def save_judge(judge: Judge, out: str | Path, report: dict | None = None, overwrite: bool = False) -> Path:
    """Write a judge folder (model.safetensors + config.json) atomically."""
    with atomic_folder(out, "judge", overwrite=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps({"labels": judge.labels, **judge.config, "report": report or {}},
                                                    indent=2))
    return Path(out)


def load_judge(path: str | Path | None = None) -> Judge:
    """Load the shipped judge (default) or one saved by `train_judge`."""
    path = Path(path) if path is not None else DEFAULT_JUDGE
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DatarightsError(f"judge folder {path} is missing config.json or model.safetensors")
    cfg = read_json_file(path / "config.json", "judge config")
    try:
        with torch.device("cpu"):  # the judge lives on the CPU whatever the default device
            judge = Judge(cfg["labels"], width=cfg["width"], feat_dim=cfg["feat_dim"])
        judge.load_state_dict(load_file(path / "model.safetensors"))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise DatarightsError(f"judge folder {path} is corrupt or not a judge ({type(e).__name__})") from None
    judge.report = cfg.get("report", {})
    return judge.eval().requires_grad_(False)
