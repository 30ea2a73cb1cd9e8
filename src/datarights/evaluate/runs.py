"""What the retraining evaluations share (counterfactual, LDS, leave-one-owner-out): the run folder,
its smaller world and base model, the query prompts, subsets of a training set, and the query loss.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import DatarightsError
from ..files import open_run_folder, read_json_file, write_json
from ..world import ImageFolder, WorldConfig, make_world_folder, read_imagefolder, sample_eval_prompts


def parse_option(part: str, spec: str) -> tuple[str, object]:
    """'field=value' -> (field, value), the value an int or a float where it reads as one; `spec` (what
    the user wrote) names the problem when the part is not field=value."""
    key, eq, value = part.partition("=")
    if not eq or not key.strip():
        raise DatarightsError(f"method variant {str(spec)[:60]!r}: write its options as field=value")
    value = value.strip()
    for cast in (int, float):
        try:
            return key.strip(), cast(value)
        except ValueError:
            pass
    return key.strip(), value


def method_variant(spec: str) -> tuple[str, dict]:
    """'abu-fast' -> ('abu-fast', {}); a variant 'abu-fast:rerank=500' (more fields joined by ':', so that a
    comma-separated method list can hold it) -> the method and its config options, numbers read as
    numbers: one evaluation can hold a method and its variants."""
    name, _, opts = str(spec).partition(":")
    return name, dict(parse_option(part, spec) for part in opts.split(":") if part)


def check_methods(methods: list) -> None:
    """Refuse an empty or unknown method list (variants 'name:field=value' included) before anything is trained."""
    from ..attribute import METHODS, make_config

    if not methods:
        raise DatarightsError("give at least one method")
    bad = [m for m in methods if method_variant(m)[0] not in METHODS]
    if bad:
        raise DatarightsError(f"unknown attribution method {str(bad[0])[:40]!r}; choose from {', '.join(sorted(METHODS))}")
    for m in methods:
        name, opts = method_variant(m)
        if opts:
            make_config(name, **opts)  # an unknown field or a bad value is refused here, in the user's words


def subset_folder(folder: ImageFolder, drop: list[int]) -> ImageFolder:
    keep = np.ones(len(folder), dtype=bool)
    keep[drop] = False
    return ImageFolder(folder.root, folder.images[keep], [m for m, k in zip(folder.metas, keep) if k])


def open_run(run: Path, cfg, empty: dict, reusable: tuple[str, ...] = (), made_with: dict | None = None
             ) -> tuple[dict, Path]:
    """The run folder's results.json (or a new one holding `empty`); refuses a folder of another config
    or one that datarights did not write. Config fields named in `reusable` may differ from the folder's
    (its models stay valid; the caller redoes the cells that depend on them): the folder takes the new values.
    `made_with` (e.g. the model's and training set's hashes) is recorded in a new folder and must match
    in an existing one; every refusal happens before anything is written."""
    open_run_folder(run)
    res_path = run / "results.json"
    config = json.loads(json.dumps(asdict(cfg)))
    made_with = made_with or {}
    results = (read_json_file(res_path, "run results") if res_path.exists()
               else {"config": config, **made_with, **empty})

    def fixed(c):
        return {k: v for k, v in c.items() if k not in reusable} if isinstance(c, dict) else c

    if not isinstance(results, dict) or fixed(results.get("config")) != fixed(config):
        raise DatarightsError(f"{run} holds a run with another config; use a new folder")
    if {k: results.get(k) for k in made_with} != made_with:
        raise DatarightsError(f"{run} holds a run of another model or training set; use a new folder")
    if results["config"] != config:
        results["config"] = config
        write_json(res_path, results)
    if not res_path.exists():  # the config is on disk before anything else is made: a rerun with another is refused
        write_json(res_path, results)
    return results, res_path


def check_queries(results: dict, queries) -> None:
    """Record the content hash of given queries (images, prompts, sources) in a run's results, and refuse
    a resume with other ones (its cells are keyed by query position)."""
    import hashlib

    images, prompts, sources = queries
    h = hashlib.sha256(images.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps([list(prompts), list(sources)]).encode())
    digest = h.hexdigest()[:16]
    if results.setdefault("queries_hash", digest) != digest:
        raise DatarightsError("this run folder was made with other queries; use a new folder")


def derangement(names: list[str], seed: int) -> dict[str, str]:
    """Every name mapped to another one (a cyclic shift of a seeded permutation): the negative control
    'shuffled oracle' never credits the true source."""
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    return {a: order[(i + 1) % len(order)] for i, a in enumerate(order)}


QUERY_SEED = 99
"""Offset of the query prompts' seed from the run's seed."""


def world_base_queries(run: Path, cfg, recipe, name: str, log, device=None,
                       precision=None) -> tuple[ImageFolder, object, list[str]]:
    """The run's smaller world and base model (made once, kept in the run folder) and its query prompts."""
    folder, base = world_and_base(run, cfg, recipe, name, log, device, precision)
    return folder, base, query_prompts(cfg.queries, cfg.seed + QUERY_SEED, run_world(cfg).vocabulary())


def run_world(cfg) -> WorldConfig:
    """The smaller world of a retraining evaluation: its preset, size and seed."""
    return WorldConfig(preset=cfg.world_preset, n_images=cfg.world_images, seed=cfg.seed)


def world_and_base(run: Path, cfg, recipe, name: str, log, device=None, precision=None) -> tuple[ImageFolder, object]:
    """The run's smaller world and base model, made once and kept in the run folder (fine-tuned from
    the run's warm start when the config has one: see warm_start)."""
    from ..models import load_model
    from ..train import train

    if not (run / "world").exists():
        make_world_folder(run / "world", run_world(cfg))
    folder = read_imagefolder(run / "world")
    init = warm_start(run, cfg, log, device, precision)
    if not (run / "base").exists():
        log(f"{name}: training the base model" + (" (fine-tuned from the warm start)" if init else ""))
        train(recipe, folder, run / "base", init_from=init, progress=False, device=device, precision=precision)
    return folder, load_model(run / "base", device, precision)


def check_warm_start(cfg) -> None:
    """Refuse a warm start that cannot be made, before anything is trained."""
    if cfg.warm_steps < 0:
        raise DatarightsError(f"warm_steps must be 0 (no warm start) or more, got {cfg.warm_steps}")
    if cfg.warm_steps and set(WorldConfig(preset="default").vocabulary().owners) <= set(run_world(cfg).vocabulary().owners):
        raise DatarightsError(f"a warm start needs owners outside the run's world, and the {cfg.world_preset!r} "
                              "preset has every owner of the default world; train every model from scratch instead",
                              hint="--warm-steps 0")


def warm_start(run: Path, cfg, log=lambda s: None, device=None, precision=None) -> Path | None:
    """The run's shared warm start, or None when `cfg.warm_steps` is 0 (every model from scratch).

    A model trained from scratch for `cfg.warm_steps` steps on the images of the *default* world whose
    owners the smaller world does not have (presets share names, signatures and styles, so these are
    other photographers and artists; every studio and publisher is in the smaller world and so left out
    too): it has learned to draw the world, but has never seen an image, a signature, a style, a
    character or a scene of any owner the run evaluates. Every model of the run (the base and each
    model without an owner or a subset of owners) is fine-tuned from it on its own data, so an
    owner's influence still comes only from that owner's images, at a fraction of the cost of training
    each model from scratch."""
    from ..train import TrainConfig, train

    steps = getattr(cfg, "warm_steps", 0)
    if not steps:
        return None
    out = run / "warm"
    if not out.exists():
        if not (run / "warm-world").exists():
            make_world_folder(run / "warm-world", WorldConfig(preset="default", seed=cfg.seed))
        full = read_imagefolder(run / "warm-world")
        evaluated = set(run_world(cfg).vocabulary().owners)
        drop = [i for i, m in enumerate(full.metas) if m["owner"] in evaluated]
        log(f"warm start: training {steps} steps on {len(full) - len(drop)} images of owners outside the run's world")
        train(TrainConfig(steps=steps, batch_size=cfg.batch_size, seed=cfg.seed, checkpoint_every=250,
                          unet_config=cfg.unet_config), subset_folder(full, drop), out, progress=False,
              device=device, precision=precision)
    return out


def _query_asks(n: int, seed: int, vocab=None) -> list[dict]:
    by_kind: dict[str, list[dict]] = {}
    for a in sample_eval_prompts(n * 10, seed, vocab):
        by_kind.setdefault(a["kind"], []).append(a)
    kinds = ["object", "styled", "character", "memorized", "composition"]
    out, i = [], 0
    while len(out) < n:
        pool = by_kind[kinds[i % len(kinds)]]
        j = i // len(kinds)
        out.append(pool[j % len(pool)])
        i += 1
    return out


def query_prompts(n: int, seed: int, vocab=None) -> list[str]:
    """n world prompts taking the kinds in turn (object, styled, character, memorized, composition)."""
    return [a["text"] for a in _query_asks(n, seed, vocab)]


def query_concepts(n: int, seed: int, vocab=None) -> list[str]:
    """The concept each of query_prompts(n, seed) draws on (queries of one character, scene or
    composition repeat a concept): the units of the concept-level (cluster) bootstrap."""
    def concept(a: dict) -> str:
        if a["kind"] in ("character", "memorized", "composition"):
            return f"{a['kind']}: {a[a['kind']]}"
        return f"{a['kind']}: {a['color']} {a['object']}" + (f" / {a['style']}" if a["kind"] == "styled" else "")
    return [concept(a) for a in _query_asks(n, seed, vocab)]


CONCEPT_FIELDS = {"object": ("object", "color"), "styled": ("object", "color", "style"), "character": ("character",),
                  "memorized": ("memorized",), "composition": ("composition",)}
"""The metadata fields that define each kind of query's concept."""


def concept_matches(n: int, seed: int, metas: list[dict], vocab=None) -> list[np.ndarray]:
    """For each of query_prompts(n, seed): every training image's share of the query's concept fields
    its metadata matches (CONCEPT_FIELDS: 1 = the query's concept, e.g. 0.5 = its object in another
    colour). The image-level positive control of the retraining evaluations: it reads the ground
    truth, not a caption or a network."""
    out = []
    for a in _query_asks(n, seed, vocab):
        fields = CONCEPT_FIELDS[a["kind"]]
        out.append(np.array([sum(m.get(f) == a[f] for f in fields) / len(fields) for m in metas], dtype=np.float64))
    return out


def check_competence(cfg) -> None:
    """Refuse a competence check of a negative number of prompts, before anything is trained."""
    if cfg.competence < 0:
        raise DatarightsError(f"competence is a number of prompts (0: no check), got {cfg.competence}")


def record_competence(results: dict, res_path: Path, base, cfg, name: str, log, judge=None,
                      provenance: Path | None = None) -> None:
    """The run's base model's `eval-model` figures (n = cfg.competence prompts of the run's world),
    recorded once in results["competence"]: how well the model the evaluation retrains can draw.
    With `provenance` (the run's world folder), also the provenance reproduction figures on
    2 x cfg.competence generic prompts (does the base reproduce its owners' traces)."""
    from ..judge import load_judge
    from ..quality import eval_model, public
    if not getattr(cfg, "competence", 0) or "competence" in results:
        return
    judge = judge or load_judge()
    log(f"{name}: the base model's competence (eval-model on {cfg.competence} prompts"
        + (", provenance)" if provenance is not None else ")"))
    rec = {}
    if provenance is not None:
        from .provenance import reproduction
        rep = reproduction(base, judge, provenance, n=2 * cfg.competence, seed=cfg.seed + 3, steps=cfg.sample_steps)
        rec["provenance"] = {k: v for k, v in rep.items() if not k.startswith("_")}
    rec = {"eval_model": public(eval_model(base, judge, n=cfg.competence, seed=cfg.seed, steps=cfg.sample_steps,
                                           vocab=run_world(cfg).vocabulary())), **rec}
    results["competence"] = rec
    write_json(res_path, results)


@torch.no_grad()
def query_loss(model, image: torch.Tensor, prompt: str, n_draws: int, seed: int) -> float:
    """The diffusion loss of one image under its prompt, over fixed evenly spaced timesteps and seeded noise."""
    from ..runtime import draws, per_sample_loss, spaced_timesteps
    x0 = model.to_model_space(image[None].float())
    d = draws(1, n_draws, tuple(x0.shape[1:]), model.num_train_timesteps, seed, model.device,
              timesteps=spaced_timesteps(n_draws, model.num_train_timesteps))
    return float(per_sample_loss(model, x0, model.encode_prompt([prompt]), d)[0])


