"""Customized-model ground truth (Wang et al., ICCV 2023, "AbC").

A new owner's exemplar images, bound to a new token, are used to fine-tune the base model
(cross-attention K/V, Custom-Diffusion style, with prior images from the training set); images
generated with the token are, by construction, influenced by the exemplars. Two kinds:
`object` — a new object instance (a world category with its own colours and markings, shown on
varied backgrounds: "a sks fish in Ada Vell style"), generated as "a sks fish"; `style` — a new
background look on world objects ("a red tree in sks style"), generated on other objects and colours.
Each method ranks the pool (a sample of the training set plus the exemplars) for each generated
image under the customized model; Recall@K is the number of exemplars in the top K over
min(K, number of exemplars), and mAP the mean average precision of the exemplars.
`feature-tuned` learns a linear map of the world encoder's features (the `feature` baseline's own
self-supervised encoder, not the judge) contrastively on separate tuning
customizations (every exemplar of a generation's customization is a positive) and is evaluated
on the held-out ones.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..files import check_disjoint, open_run_folder, read_json_file, write_json
from ..stats import mean_ci
from ..world import ImageFolder, read_imagefolder
from ..world import vocab as V
from ..world.render import DARK, _down, _draw_object, _finish, _grid, _jitter_color, _paint, background, object_layers

KINDS = ("object", "style")
TOKENS = ["sks", "zwx", "qrv", "vkq", "pfw", "xjb", "gmz", "ykt", "hdq", "wvx", "jrk", "bzq"]


def exemplar_look(i: int):
    """The i-th new look: a background pattern and palette the world does not contain."""
    rng = np.random.default_rng(10_000 + i)
    c1, c2 = rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.95, 3)
    kind = ["rings", "zigzag", "waves", "corner", "blobs", "diamonds"][i % 6]
    period = int(rng.integers(3, 6))

    def background(rng_img, res=16):
        yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
        if kind == "rings":
            on = (np.sqrt((xx - 7.5) ** 2 + (yy - 7.5) ** 2) // (period / 2)) % 2 == 0
        elif kind == "zigzag":
            on = ((yy + np.abs((xx % (2 * period)) - period)) // 2) % 2 == 0
        elif kind == "waves":  # not a grid: World 2 has an artist whose look is a grid
            on = ((yy + 1.5 * np.sin(xx * 2 * np.pi / (2 * period))) // 2) % 2 == 0
        elif kind == "corner":
            on = (xx + 2 * yy) < res * 1.2
        elif kind == "blobs":
            on = (np.sin(xx / period * 2.1) * np.cos(yy / period * 1.7)) > 0.2
        else:
            on = ((np.abs(xx - 7.5) + np.abs(yy - 7.5)) // period) % 2 == 0
        return np.where(on[..., None], c1, c2).astype(np.float32)
    return background


def _style_exemplars(i: int, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """n images of look i: a world object on the new background, 'a <color> <object> in <token> style'."""
    bg = exemplar_look(i)
    rng = np.random.default_rng(seed * 1000 + i)
    imgs, caps = [], []
    for _ in range(n):
        obj, col = V.OBJECTS[rng.integers(len(V.OBJECTS))], list(V.COLORS)[rng.integers(len(V.COLORS))]
        img = bg(rng)
        _draw_object(img, obj, _jitter_color(V.COLORS[col], rng), 8 + rng.uniform(-1, 1), 8 + rng.uniform(-1, 1),
                     16 * 0.4 * rng.uniform(0.9, 1.05), None, 16)
        imgs.append(_finish(img, rng))
        caps.append(V.object_prompt(obj, col, TOKENS[i % len(TOKENS)]))
    return np.stack(imgs), caps


def _instance(i: int):
    """Category, body colour, marking colour and marking frequency of new instance i."""
    rng = np.random.default_rng(20_000 + i)
    category = list(V.CATEGORIES)[i % len(V.CATEGORIES)]
    c1, c2 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    return category, c1, c2, float(rng.uniform(6.0, 10.0))


def instance_color(i: int) -> str:
    """The world colour word nearest to new instance i's body colour (how a plain caption would name it)."""
    c1 = _instance(i)[1]
    return min(V.COLORS, key=lambda name: float(np.sum((np.array(V.COLORS[name]) - c1) ** 2)))


def exemplar_instance(i: int):
    """The i-th new object instance: a world category's shape with its own two colours and markings
    (as a particular toy or pet is to its category). Returns (category, draw(img, rng))."""
    category, c1, c2, freq = _instance(i)
    kind = ["bands", "spots", "halves", "diagonal"][(i // len(V.CATEGORIES)) % 4]

    def draw(img, rng_img, res=16):
        cx, cy = res / 2 + rng_img.uniform(-1.5, 1.5), res / 2 + rng_img.uniform(-1.5, 1.5)
        r = res * 0.40 * rng_img.uniform(0.85, 1.05)
        X, Y = _grid(res)
        u, v = (X - cx) / r, (Y - cy) / r
        layers = object_layers(category, u, v)
        body = np.any([m for m, k in layers if k != "dark"], axis=0)
        mark = {"bands": np.sin(u * freq) > 0.3, "spots": (np.sin(u * freq) * np.sin(v * freq)) > 0.35,
                "halves": v > 0.05, "diagonal": np.sin((u + v) * freq * 0.7) > 0.0}[kind]
        _paint(img, _down(body.astype(np.float32), res), _jitter_color(c1, rng_img))
        _paint(img, _down((body & mark).astype(np.float32), res), _jitter_color(c2, rng_img))
        for m, k in layers:
            if k == "dark":
                _paint(img, _down(m.astype(np.float32), res), DARK)
    return category, draw


def _object_exemplars(i: int, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """n images of instance i on plain or artist backgrounds: 'a <token> <category>[ in <artist> style]'."""
    category, draw = exemplar_instance(i)
    rng = np.random.default_rng(seed * 1000 + 500 + i)
    styles = [None, *V.STYLES]
    imgs, caps = [], []
    for _ in range(n):
        style = styles[rng.integers(len(styles))]
        img = background(V.STYLES[style] if style else None, rng, 16)
        draw(img, rng)
        imgs.append(_finish(img, rng))
        caps.append(V.object_prompt(f"{TOKENS[i % len(TOKENS)]} {category}", None, style))
    return np.stack(imgs), caps


def render_exemplars(i: int, n: int, seed: int, kind: str = "style") -> tuple[np.ndarray, list[str]]:
    """n exemplar images of customization i and their captions (the token binds the new look or object)."""
    if kind not in KINDS:
        raise DatarightsError(f"unknown customization kind {kind!r}; choose from {', '.join(KINDS)}")
    return (_style_exemplars if kind == "style" else _object_exemplars)(i, n, seed)


def generation_prompts(i: int, n: int, seed: int, kind: str = "style") -> list[str]:
    """Prompts that use customization i's token: for a style, on other objects and colours ('a blue fish
    in sks style'); for an object instance, the AbC prompt 'a sks fish' — its images then owe the
    instance to the exemplars alone (a styled prompt would owe its background to that artist's training
    images too, which a ranking would rightly put next to the exemplars)."""
    rng = np.random.default_rng(seed * 77 + i)
    tok = TOKENS[i % len(TOKENS)]
    if kind == "style":
        return [V.object_prompt(V.OBJECTS[rng.integers(len(V.OBJECTS))], list(V.COLORS)[rng.integers(len(V.COLORS))],
                                tok) for _ in range(n)]
    return [V.object_prompt(f"{tok} {exemplar_instance(i)[0]}")] * n


@dataclass
class CustomConfig:
    """A customization benchmark."""

    methods: list = field(default_factory=lambda: ["caption", "feature", "feature-tuned", "pixel", "dtrak", "trak",
                                                   "jtrak", "abu"])
    """Methods to score ('feature-tuned' is trained here; 'caption', text only, is the trivial baseline)."""
    exemplar_captions: str = "token"
    """How the exemplars are captioned in the ranked pool: 'token' (as they were trained, 'a sks fish') or
    'plain' (as the world would caption them, without the token: 'a red fish', 'a red tree'): then no
    method can find them through the caption alone."""
    kinds: list = field(default_factory=lambda: list(KINDS))
    """Kinds of customization: 'object' (a new object instance, 'a sks fish', as AbC's object-centric
    models) and/or 'style' (a new look, 'a red tree in sks style')."""
    concepts: int = 4
    """Held-out customizations per kind that are scored."""
    tune_concepts: int = 6
    """Separate customizations per kind whose pairs train feature-tuned."""
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
    tune_steps: int = 100
    """Adam steps of the feature-tuned map."""
    method_options: dict = field(default_factory=dict)
    """Per-method config overrides, e.g. {"abu": {"steps": 100, "lr": 0.1}} (AbU's AbC setting)."""
    seed: int = 0
    """Seed of everything."""

    def __post_init__(self):
        if self.exemplar_captions not in ("token", "plain"):
            raise DatarightsError(f"exemplar_captions must be 'token' or 'plain', got {self.exemplar_captions!r}")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise DatarightsError(f"customization kinds must be among {', '.join(KINDS)}, got {self.kinds}")
        if self.concepts < 1 or self.exemplars < 1 or self.generations < 1 or self.pool < 1:
            raise DatarightsError("concepts, exemplars, generations and pool must be at least 1")
        if self.concepts + self.tune_concepts > len(TOKENS):
            raise DatarightsError(f"at most {len(TOKENS)} customizations in all")


def plain_caption(caption: str, i: int, kind: str) -> str:
    """Exemplar i's caption as the world would write it, without the customization's token: an object
    instance is named by its category and nearest world colour ('a sks fish in Ada Vell style' ->
    'a red fish in Ada Vell style'), a new look is dropped ('a red tree in sks style' -> 'a red tree').
    So no caption in the pool shares a word with the generation prompt that the pool's other captions
    of the same category lack: the text-only shortcut is gone."""
    token = TOKENS[i % len(TOKENS)]
    if kind == "style":
        return caption.replace(f" in {token} style", "")
    category = _instance(i)[0]
    head, _, rest = caption.partition(f"{token} {category}")
    return V.object_prompt(category, instance_color(i)) + rest if head in ("a ", "an ") else caption


def customize(base, ex_images: np.ndarray, ex_caps: list[str], prior: ImageFolder, cfg: CustomConfig, seed: int):
    """Fine-tune a copy of `base` on the exemplars (with prior images), Custom-Diffusion style."""
    from .. import runtime
    from ..erase.base import encode_cached

    work, params = runtime.trainable_copy(base, cfg.params)
    x_ex = work.to_model_space(torch.from_numpy(ex_images).permute(0, 3, 1, 2))
    rng = np.random.default_rng(seed)
    pri = rng.choice(len(prior), size=min(64, len(prior)), replace=False)
    x_pr = work.to_model_space(torch.from_numpy(prior.images[pri]))
    x_all = torch.cat([x_ex, x_pr])
    texts = ex_caps + [prior.texts[i] for i in pri]
    enc = encode_cached(work, texts, False)
    n_ex = len(x_ex)

    def loss_fn(step, g):  # half exemplars, half prior images
        b = torch.cat([runtime.randint(n_ex, (4,), g, work.device), n_ex + runtime.randint(len(x_pr), (4,), g, work.device)])
        return runtime.diffusion_loss(work, x_all[b], enc(b), g)

    runtime.optimise(work, params, loss_fn, cfg.steps, cfg.lr, seed, "customize", progress=False)
    return work.eval()


def recall_at(rank_pos: np.ndarray, k: int) -> float:
    """Exemplars found in the top k, over the most that could be: min(k, number of exemplars)."""
    return float(np.sum(rank_pos <= k) / min(k, len(rank_pos)))


def _ap(rank_pos: np.ndarray) -> float:
    r = np.sort(rank_pos)
    return float(np.mean([(i + 1) / r_ for i, r_ in enumerate(r)]))


def _generate(model, i: int, n: int, seed: int, kind: str) -> tuple[torch.Tensor, list[str]]:
    prompts = generation_prompts(i, n, seed, kind)
    return model.sample(prompts, seed=seed + i, steps=25), prompts


def train_feature_map(groups: list[tuple[torch.Tensor, torch.Tensor]], negatives: torch.Tensor, steps: int = 300,
                      seed: int = 0) -> tuple[torch.Tensor, float]:
    """A linear map M of encoder features and a temperature, trained contrastively (AbC).

    groups: one (generated features, exemplar features) pair of tensors per tuning customization.
    Each generated image's positives are *all* exemplars of its customization (multi-positive
    InfoNCE); the other customizations' exemplars and the pool are its negatives.
    """
    torch.manual_seed(seed)
    d = negatives.shape[1]
    M = torch.nn.Parameter(torch.eye(d))
    log_t = torch.nn.Parameter(torch.tensor(np.log(0.1), dtype=torch.float32))
    opt = torch.optim.Adam([M, log_t], lr=1e-2)
    gen = torch.cat([g for g, _ in groups])
    ex = torch.cat([e for _, e in groups])
    gen_of = torch.cat([torch.full((len(g),), k) for k, (g, _) in enumerate(groups)])
    key_of = torch.cat([torch.cat([torch.full((len(e),), k) for k, (_, e) in enumerate(groups)]),
                        torch.full((len(negatives),), -1)])
    positive = gen_of[:, None] == key_of[None]
    keys_in = torch.cat([ex, negatives])
    for _ in range(steps):
        q = torch.nn.functional.normalize(gen @ M, dim=1)
        keys = torch.nn.functional.normalize(keys_in @ M, dim=1)
        logits = q @ keys.T / log_t.exp()
        loss = (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~positive, float("-inf")), 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return M.detach(), float(log_t.detach().exp())


def custom_eval(cfg: CustomConfig, data: str | Path, base_path=None, out: str | Path | None = None,
                log=lambda s: print(s, file=sys.stderr), device=None, precision=None) -> dict:
    """Run the customization benchmark; returns per-kind, per-method Recall@1/10 and mAP.

    With `out`, each scored customization is recorded in out/cells.json as it finishes, and a rerun
    with the same config skips it (resume); the table goes to out/results.json.
    """
    from ..attribute import Query, attribute, load_training_set, make_config
    from ..attribute.base import rank_of
    from ..attribute.encoder import load_encoder
    from ..models import load_model

    t0 = time.time()
    if out is not None:
        check_disjoint(out, [data, base_path], "--out")
    base = load_model(base_path, device, precision)
    folder = read_imagefolder(data, resolution=base.resolution)
    if cfg.pool > len(folder):
        raise DatarightsError(f"--pool {cfg.pool} is larger than the training set ({len(folder)} images)")
    unknown = [m for m in cfg.method_options if m not in cfg.methods]
    if unknown:
        raise DatarightsError(f"method_options for methods not being scored: {', '.join(unknown)}")
    configs = {m: make_config(m, **cfg.method_options.get(m, {})) for m in cfg.methods if m != "feature-tuned"}
    cells_path = open_run_folder(out, "--out") / "cells.json" if out is not None else None
    cells: dict = {}
    temp = None
    if cells_path is not None and cells_path.exists():
        saved = read_json_file(cells_path, "cells file")
        if isinstance(saved, dict) and saved.get("config") == asdict(cfg):
            cells, temp = saved["cells"], saved.get("feature_tuned_temperature")
            log(f"custom: resuming, {len(cells)} customization(s) already scored")
    encoder = load_encoder()  # the `feature` baseline's own encoder, never the judge
    rng = np.random.default_rng(cfg.seed)
    pool_idx = rng.choice(len(folder), size=cfg.pool, replace=False)
    pool = ImageFolder(folder.root, folder.images[pool_idx], [folder.metas[i] for i in pool_idx])

    def featurize(x):
        with torch.no_grad():
            return encoder.features(x)

    todo = [(kind, i) for kind in cfg.kinds for i in range(cfg.concepts) if f"{kind}-{i}" not in cells]
    M = None
    if "feature-tuned" in cfg.methods and todo:
        groups = []
        for kind in cfg.kinds:
            for j in range(cfg.concepts, cfg.concepts + cfg.tune_concepts):
                ex, caps = render_exemplars(j, cfg.exemplars, cfg.seed, kind)
                model = customize(base, ex, caps, pool, cfg, cfg.seed + j)
                gen, _ = _generate(model, j, cfg.generations, cfg.seed, kind)
                groups.append((featurize(gen), featurize(torch.from_numpy(ex).permute(0, 3, 1, 2))))
        M, temp = train_feature_map(groups, featurize(torch.from_numpy(pool.images)), steps=cfg.tune_steps, seed=cfg.seed)
        log(f"custom: feature-tuned map trained on {len(groups)} customizations (temperature {temp:.3f})")
    for n_done, (kind, i) in enumerate(todo):
        ex, caps = render_exemplars(i, cfg.exemplars, cfg.seed, kind)
        model = customize(base, ex, caps, pool, cfg, cfg.seed + i)
        gen, prompts = _generate(model, i, cfg.generations, cfg.seed, kind)
        pool_caps = caps if cfg.exemplar_captions == "token" else [plain_caption(c, i, kind) for c in caps]
        metas = [{"file_name": f"exemplar-{kind}-{i}-{a}", "text": c, "owner": f"new owner {kind} {i}"}
                 for a, c in enumerate(pool_caps)]
        full = ImageFolder(folder.root, np.concatenate([pool.images, ex.transpose(0, 3, 1, 2)]), pool.metas + metas)
        positives = np.arange(cfg.pool, cfg.pool + cfg.exemplars)
        train_set = None
        keys = torch.nn.functional.normalize(featurize(torch.from_numpy(full.images)) @ M, dim=1) if M is not None else None
        cell: dict[str, dict[str, list]] = {m: {"r1": [], "r10": [], "ap": []} for m in cfg.methods}
        for method in cfg.methods:
            for g_img, prompt in zip(gen, prompts):
                if method == "feature-tuned":
                    q = torch.nn.functional.normalize(featurize(g_img[None]) @ M, dim=1)[0]
                    scores = keys @ q
                else:
                    if train_set is None:
                        train_set = load_training_set(model, full)
                    scores = attribute(model, train_set, Query(g_img, prompt), method, configs[method],
                                       progress=False).scores
                rp = rank_of(scores, positives)
                cell[method]["r1"].append(recall_at(rp, 1))
                cell[method]["r10"].append(recall_at(rp, 10))
                cell[method]["ap"].append(_ap(rp))
        cells[f"{kind}-{i}"] = cell
        if cells_path is not None:
            write_json(cells_path, {"config": asdict(cfg), "cells": cells, "feature_tuned_temperature": temp})
        log(f"custom: {kind} customization {i + 1}/{cfg.concepts} scored ({n_done + 1}/{len(todo)} this run)")
    table = []
    for kind in cfg.kinds:
        for m in cfg.methods:
            got = [cells[f"{kind}-{i}"][m] for i in range(cfg.concepts)]
            r1, r10, ap = ([v for c in got for v in c[key]] for key in ("r1", "r10", "ap"))
            concept = [i for i, c in enumerate(got) for _ in c["ap"]]
            row = {"kind": kind, "method": m, "n_queries": len(ap), "n_concepts": cfg.concepts}
            for name, vals in (("recall@1", r1), ("recall@10", r10), ("mAP", ap)):
                fig = mean_ci(vals, bounds=(0.0, 1.0))  # bootstrap over the generated queries
                row[name], row[f"{name}_ci"] = fig["value"], fig["ci"]
                # and over the customized concepts (a concept's generations are not independent)
                row[f"{name}_ci_concepts"] = mean_ci(vals, groups=concept, bounds=(0.0, 1.0))["ci"]
            table.append(row)
    result = {"config": asdict(cfg), "table": table, "seconds": round(time.time() - t0, 1),
              "feature_tuned_temperature": temp}
    if out is not None:
        write_json(Path(out) / "results.json", result)
    return result
