"""The world's image encoder for feature similarity: self-supervised, trained apart from the judge.

The `feature` baseline must not see the world through the judge, the network that reads the ground
truth it is graded against. This encoder plays the part DINO or SimCLR features play for
photographs: a small CNN trained by contrastive instance discrimination (SimCLR's NT-Xent loss;
Chen et al., ICML 2020) on world renders it alone draws (its own seed), with no labels at all.
Two views of one render (a random shift of up to 2 pixels, noise and blur of random strength) must
be each other's nearest neighbour among the batch; what it learns is whatever tells renders apart,
signatures and styles included, with no head for any of them.
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

DEFAULT_ENCODER = Path(__file__).resolve().parent.parent / "assets" / "encoder"
ENCODER_KINDS = {"object": 0.35, "composition": 0.1, "styled": 0.35, "character": 0.1, "memorized": 0.1}


class Encoder(nn.Module):
    """Residual CNN for 16x16 images -> `dim`-d features; a 2-layer projection head for training only."""

    def __init__(self, width: int = 32, dim: int = 128):
        super().__init__()
        self.config = {"width": width, "dim": dim}
        w = width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.blocks = nn.ModuleList([block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2)])  # 16 -> 8 -> 4
        self.out = nn.Linear(4 * w * 16, dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, 16, 16] in [0, 1] -> features [B, dim]."""
        x = images.to(next(self.parameters()).device, torch.float32)
        if x.shape[-2:] != (16, 16):
            x = F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
        h = self.stem(x * 2 - 1)
        for i, b in enumerate(self.blocks):
            h = b(h) + (h if i == 0 else 0)
        return self.out(h.flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random view of each image: a shift of up to 2 pixels (edges replicated), then blur and noise
    of random strength (generated images are softer and noisier than renders)."""
    b = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(0, 5, (b,), generator=g), torch.randint(0, 5, (b,), generator=g)
    rows = torch.arange(16)[None, :] + dy[:, None]                                     # [B, 16]
    cols = torch.arange(16)[None, :] + dx[:, None]
    x = pad[torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :]]                          # [B, 3, 16, 16]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(b, 1, 1, 1, generator=g) * 0.6
    x = (1 - a) * x + a * blur
    return (x + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 0.06).clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's positive is the other view of its image, every other view a negative."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)                                          # [2B, d]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(sim, target)


@dataclass
class EncoderConfig:
    """How the encoder is trained (no labels: contrastive views of renders)."""

    n_train: int = 30000
    """Rendered images (drawn with `seed`, never with the judge's)."""
    epochs: int = 10
    """Passes over the images."""
    batch_size: int = 256
    """Images per step (2 views each)."""
    lr: float = 2e-3
    """Peak AdamW learning rate, one-cycle schedule."""
    temperature: float = 0.2
    """NT-Xent temperature."""
    width: int = 32
    """Channels of the first block."""
    seed: int = 1001
    """Seed of rendering, initialisation and views (the judge uses 0 and 10,000)."""

    def __post_init__(self):
        for name in ("n_train", "epochs", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise DatarightsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise DatarightsError(f"temperature must be positive, got {self.temperature}")
        if self.n_train < self.batch_size:
            raise DatarightsError(f"n_train ({self.n_train}) must be at least batch_size ({self.batch_size})")


def render_unlabelled(n: int, seed: int) -> torch.Tensor:
    """n world renders [n, 3, 16, 16] (photographs signed by their own photographers), labels discarded."""
    from ..world.generate import sample_item

    rng = np.random.default_rng(seed)
    names = list(ENCODER_KINDS)
    w = np.array(list(ENCODER_KINDS.values()))
    imgs = [sample_item(names[d], rng)[0] for d in rng.choice(len(names), size=n, p=w / w.sum())]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def train_encoder(cfg: EncoderConfig | None = None, out: str | Path | None = None, progress: bool = True,
                  overwrite: bool = False) -> tuple[Encoder, dict]:
    """Train the encoder contrastively; report the final loss and the top-1 accuracy of finding each
    held-out render's other view among 1,000 (how well views of one image are told from the rest)."""
    cfg = cfg or EncoderConfig()
    if out is not None:
        check_output(out, "encoder", overwrite=overwrite)
    t0 = time.time()
    x = render_unlabelled(cfg.n_train, cfg.seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        enc = Encoder(cfg.width)
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = len(x) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="encoder", disable=not progress, file=sys.stderr)
    loss = torch.zeros(())
    for _ in range(cfg.epochs):
        enc.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(steps_per_epoch):
            b = x[perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]]
            loss = nt_xent(enc(views(b, g)), enc(views(b, g)), cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    enc.eval()
    held = render_unlabelled(1000, cfg.seed + 1)
    gh = torch.Generator().manual_seed(cfg.seed + 2)
    with torch.no_grad():
        a, b = F.normalize(enc.features(views(held, gh)), dim=1), F.normalize(enc.features(views(held, gh)), dim=1)
    top1 = float(((a @ b.T).argmax(1) == torch.arange(len(held))).float().mean())
    report = {"final_loss": round(float(loss.detach()), 4), "view_top1_of_1000": round(top1, 4),
              "seconds": round(time.time() - t0, 1), "config": asdict(cfg)}
    if out is not None:
        save_encoder(enc, out, report, overwrite)
    return enc, report


def save_encoder(enc: Encoder, out: str | Path, report: dict | None = None, overwrite: bool = False) -> Path:
    """Write an encoder folder (model.safetensors without the training head, config.json) atomically."""
    with atomic_folder(out, "encoder", overwrite=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in enc.state_dict().items() if not k.startswith("head.")},
                  tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps({**enc.config, "report": report or {}}, indent=2))
    return Path(out)


def load_encoder(path: str | Path | None = None) -> Encoder:
    """Load the shipped encoder (default) or one saved by `train_encoder`."""
    path = Path(path) if path is not None else DEFAULT_ENCODER
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DatarightsError(f"encoder folder {path} is missing config.json or model.safetensors")
    cfg = read_json_file(path / "config.json", "encoder config")
    try:
        with torch.device("cpu"):
            enc = Encoder(width=cfg["width"], dim=cfg["dim"])
        tensors = load_file(path / "model.safetensors")
        missing = {k for k in enc.state_dict() if not k.startswith("head.")} - set(tensors)
        enc.load_state_dict(tensors, strict=False)
        if missing:
            raise ValueError(f"missing {sorted(missing)[0]}")
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise DatarightsError(f"encoder folder {path} is corrupt or not an encoder ({type(e).__name__})") from None
    enc.report = cfg.get("report", {})
    return enc.eval().requires_grad_(False)
