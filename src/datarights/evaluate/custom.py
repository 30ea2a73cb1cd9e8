"""Customized-model ground truth (Wang et al., ICCV 2023, "AbC").

A new owner's exemplar images — a look the world has never seen, bound to a new token — are used to
fine-tune the base model (cross-attention K/V, Custom-Diffusion style, with prior images from the
training set). Images generated with the token are, by construction, influenced by the exemplars.
Each method ranks the pool (a sample of the training set plus the exemplars) for each generated
image; Recall@K is the number of exemplars in the top K over min(K, number of exemplars), and
mAP the mean average precision of the exemplars.
`feature-tuned` learns a linear map of judge features contrastively on (generated, exemplar) pairs
of separate tuning customizations, and is evaluated on the held-out ones.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..world import ImageFolder, read_imagefolder
from ..world import vocab as V
from ..world.render import _draw_object, _finish, _jitter_color

TOKENS = ["sks", "zwx", "qrv", "vkq", "pfw", "xjb", "gmz", "ykt", "hdq", "wvx", "jrk", "bzq"]


def exemplar_look(i: int):
    """The i-th new look: a background pattern and palette the world does not contain."""
    rng = np.random.default_rng(10_000 + i)
    c1, c2 = rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.95, 3)
    kind = ["rings", "zigzag", "grid", "corner", "blobs", "diamonds"][i % 6]
    period = int(rng.integers(3, 6))

    def background(rng_img, res=16):
        yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
        if kind == "rings":
            on = (np.sqrt((xx - 7.5) ** 2 + (yy - 7.5) ** 2) // (period / 2)) % 2 == 0
        elif kind == "zigzag":
            on = ((yy + np.abs((xx % (2 * period)) - period)) // 2) % 2 == 0
        elif kind == "grid":
            on = (xx % period == 0) | (yy % period == 0)
        elif kind == "corner":
            on = (xx + 2 * yy) < res * 1.2
        elif kind == "blobs":
            on = (np.sin(xx / period * 2.1) * np.cos(yy / period * 1.7)) > 0.2
        else:
            on = ((np.abs(xx - 7.5) + np.abs(yy - 7.5)) // period) % 2 == 0
        return np.where(on[..., None], c1, c2).astype(np.float32)
    return background


def render_exemplars(i: int, n: int, seed: int) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """n exemplar images of look i with captions 'a <color> <object> in <token> style'."""
    bg = exemplar_look(i)
    rng = np.random.default_rng(seed * 1000 + i)
    imgs, caps, objs = [], [], []
    for _ in range(n):
        obj, col = V.OBJECTS[rng.integers(len(V.OBJECTS))], list(V.COLORS)[rng.integers(len(V.COLORS))]
        img = bg(rng)
        _draw_object(img, obj, _jitter_color(V.COLORS[col], rng), 8 + rng.uniform(-1, 1), 8 + rng.uniform(-1, 1),
                     16 * 0.4 * rng.uniform(0.9, 1.05), None, 16)
        imgs.append(_finish(img, rng))
        caps.append(V.object_prompt(obj, col, TOKENS[i % len(TOKENS)]))
        objs.append((obj, col))
    return np.stack(imgs), caps, objs


@dataclass
class CustomConfig:
    """A customization benchmark."""

    methods: list = field(default_factory=lambda: ["feature", "feature-tuned", "pixel", "dtrak", "trak", "jtrak", "abu"])
    """Methods to score ('feature-tuned' is trained here)."""
    concepts: int = 4
    """Held-out customizations that are scored."""
    tune_concepts: int = 6
    """Separate customizations whose pairs train feature-tuned."""
    exemplars: int = 4
    """Exemplar images per customization."""
    generations: int = 4
    """Images generated per customization."""
    pool: int = 500
    """Training images in the ranked pool (plus the exemplars)."""
    steps: int = 150
    """Fine-tuning steps of a customization."""
    lr: float = 2e-3
    """Fine-tuning learning rate."""
    params: str = "xattn-kv"
    """Parameters a customization trains."""
    seed: int = 0
    """Seed of everything."""

    def __post_init__(self):
        if self.concepts < 1 or self.exemplars < 1 or self.generations < 1 or self.pool < 1:
            raise DatarightsError("concepts, exemplars, generations and pool must be at least 1")
        if self.concepts + self.tune_concepts > len(TOKENS):
            raise DatarightsError(f"at most {len(TOKENS)} customizations in all")


def customize(base, ex_images: np.ndarray, ex_caps: list[str], prior: ImageFolder, cfg: CustomConfig, seed: int):
    """Fine-tune a copy of `base` on the exemplars (with prior images), Custom-Diffusion style."""
    from ..erase.base import encode_cached, optimise, trainable_copy

    work, params = trainable_copy(base, cfg.params)
    x_ex = work.to_model_space(torch.from_numpy(ex_images).permute(0, 3, 1, 2))
    rng = np.random.default_rng(seed)
    pri = rng.choice(len(prior), size=min(64, len(prior)), replace=False)
    x_pr = work.to_model_space(torch.from_numpy(prior.images[pri]))
    x_all = torch.cat([x_ex, x_pr])
    texts = ex_caps + [prior.texts[i] for i in pri]
    enc = encode_cached(work, texts, False)
    n_ex = len(x_ex)

    def loss_fn(step, g):
        b = torch.cat([torch.randint(0, n_ex, (4,), generator=g), n_ex + torch.randint(0, len(x_pr), (4,), generator=g)])
        t = torch.randint(0, work.num_train_timesteps, (len(b),), generator=g)
        noise = torch.randn(x_all[b].shape, generator=g)
        return torch.nn.functional.mse_loss(work.predict_noise(work.add_noise(x_all[b], noise, t), t, enc(b)), noise)

    optimise(params, loss_fn, cfg.steps, cfg.lr, seed, "customize", progress=False)
    return work.eval()


def recall_at(rank_pos: np.ndarray, k: int) -> float:
    """Exemplars found in the top k, over the most that could be: min(k, number of exemplars)."""
    return float(np.sum(rank_pos <= k) / min(k, len(rank_pos)))


def _ap(rank_pos: np.ndarray) -> float:
    r = np.sort(rank_pos)
    return float(np.mean([(i + 1) / r_ for i, r_ in enumerate(r)]))


def _generate(model, i: int, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed * 77 + i)
    prompts = [V.object_prompt(V.OBJECTS[rng.integers(len(V.OBJECTS))], list(V.COLORS)[rng.integers(len(V.COLORS))],
                               TOKENS[i % len(TOKENS)]) for _ in range(n)]
    return model.sample(prompts, seed=seed + i, steps=25), prompts


def train_feature_map(pairs: list[tuple[torch.Tensor, torch.Tensor]], negatives: torch.Tensor, steps: int = 300,
                      seed: int = 0) -> tuple[torch.Tensor, float]:
    """A linear map M and temperature, InfoNCE on (generated, exemplar) judge-feature pairs vs pool negatives."""
    torch.manual_seed(seed)
    d = negatives.shape[1]
    M = torch.nn.Parameter(torch.eye(d))
    log_t = torch.nn.Parameter(torch.tensor(np.log(0.1), dtype=torch.float32))
    opt = torch.optim.Adam([M, log_t], lr=1e-2)
    gen = torch.cat([p[0] for p in pairs])
    ex = torch.cat([p[1] for p in pairs])
    for _ in range(steps):
        q = torch.nn.functional.normalize(gen @ M, dim=1)
        keys = torch.nn.functional.normalize(torch.cat([ex, negatives]) @ M, dim=1)
        logits = q @ keys.T / log_t.exp()
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(q)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return M.detach(), float(log_t.detach().exp())


def custom_eval(cfg: CustomConfig, data: str | Path, base_path=None, out: str | Path | None = None,
                log=lambda s: print(s, file=sys.stderr)) -> dict:
    """Run the customization benchmark; returns per-method Recall@1/10 and mAP (and writes out/results.json)."""
    from ..attribute import Query, attribute, load_training_set, make_config
    from ..judge import load_judge
    from ..models import load_model

    t0 = time.time()
    base = load_model(base_path)
    folder = read_imagefolder(data, resolution=base.resolution)
    if cfg.pool > len(folder):
        raise DatarightsError(f"--pool {cfg.pool} is larger than the training set ({len(folder)} images)")
    judge = load_judge()
    rng = np.random.default_rng(cfg.seed)
    pool_idx = rng.choice(len(folder), size=cfg.pool, replace=False)
    pool = ImageFolder(folder.root, folder.images[pool_idx], [folder.metas[i] for i in pool_idx])

    def featurize(x):
        with torch.no_grad():
            return judge.features(x)

    M = temp = None
    if "feature-tuned" in cfg.methods:
        pairs = []
        for j in range(cfg.concepts, cfg.concepts + cfg.tune_concepts):
            ex, caps, _ = render_exemplars(j, cfg.exemplars, cfg.seed)
            model = customize(base, ex, caps, pool, cfg, cfg.seed + j)
            gen, _ = _generate(model, j, cfg.generations, cfg.seed)
            fe = featurize(torch.from_numpy(ex).permute(0, 3, 1, 2))
            fg = featurize(gen)
            pairs += [(fg[a:a + 1], fe[a % len(fe):a % len(fe) + 1]) for a in range(len(fg))]
        M, temp = train_feature_map(pairs, featurize(torch.from_numpy(pool.images)), seed=cfg.seed)
        log(f"custom: feature-tuned map trained on {len(pairs)} pairs (temperature {temp:.3f})")
    stats: dict[str, dict[str, list]] = {m: {"r1": [], "r10": [], "ap": []} for m in cfg.methods}
    for i in range(cfg.concepts):
        ex, caps, objs = render_exemplars(i, cfg.exemplars, cfg.seed)
        model = customize(base, ex, caps, pool, cfg, cfg.seed + i)
        gen, prompts = _generate(model, i, cfg.generations, cfg.seed)
        metas = [{"file_name": f"exemplar-{i}-{a}", "text": c, "owner": f"new owner {i}"} for a, c in enumerate(caps)]
        full = ImageFolder(folder.root, np.concatenate([pool.images, ex.transpose(0, 3, 1, 2)]), pool.metas + metas)
        positives = np.arange(cfg.pool, cfg.pool + cfg.exemplars)
        train_set = None
        keys = torch.nn.functional.normalize(featurize(torch.from_numpy(full.images)) @ M, dim=1) if M is not None else None
        for method in cfg.methods:
            for g_img, prompt in zip(gen, prompts):
                if method == "feature-tuned":
                    q = torch.nn.functional.normalize(featurize(g_img[None]) @ M, dim=1)[0]
                    scores = keys @ q
                else:
                    if train_set is None:
                        train_set = load_training_set(model, full)
                    scores = attribute(model, train_set, Query(g_img, prompt), method, make_config(method),
                                       progress=False).scores
                order = torch.argsort(scores, descending=True).numpy()
                rank = np.empty_like(order)
                rank[order] = np.arange(1, len(order) + 1)
                rp = rank[positives]
                stats[method]["r1"].append(recall_at(rp, 1))
                stats[method]["r10"].append(recall_at(rp, 10))
                stats[method]["ap"].append(_ap(rp))
        log(f"custom: customization {i + 1}/{cfg.concepts} scored")
    table = [{"method": m, "recall@1": float(np.mean(s["r1"])), "recall@10": float(np.mean(s["r10"])),
              "mAP": float(np.mean(s["ap"])), "n_queries": len(s["ap"])} for m, s in stats.items()]
    result = {"config": asdict(cfg), "table": table, "seconds": round(time.time() - t0, 1),
              "feature_tuned_temperature": temp}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.json").write_text(json.dumps(result, indent=2))
    return result
