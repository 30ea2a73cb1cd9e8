"""Attribute (compensation): which training images, and so which owners, made a generated image.

One module per method, each a config dataclass plus a `prepare` (per-training-set work, cached on
disk by a content hash of model, data and config) and a `score` (per query): `abu`, `trak`,
`dtrak`, `jtrak`, `ekfac`/`kfac` (influence functions), `feature`, `pixel`, and the text-only
baseline `caption`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from ..registry import build_config
from ..world import ImageFolder
from . import abu, abu_fast, caption, ekfac, feature, pixel, trak  # noqa: F401  (registers the methods)
from .base import (LOCAL, METHODS, Attribution, Query, TrainingSet, fit_temperature, load_training_set, owner_shares,
                   share_temperature)
from .cache import artifact_key, build_lock, cache_root, load_artifact, save_artifact


NOT_LOCAL = {"caption": "it reads only the prompt's words, never the image",
             "jtrak": "it attributes the whole image's sampling journey, step by step"}
"""Why a method cannot attribute a region of an image."""
NOT_STORED_LOCAL = {"pixel": "compared with the same pixels", "feature": "matched against windows"}
"""What a region is compared with, for the methods whose region form reads more than a store keeps."""


def check_local(method: str, store=None) -> None:
    """A one-line error unless `method` can attribute a region (of a query, with or without a store)."""
    if method not in LOCAL:
        why = NOT_LOCAL.get(method, "it has no region form")
        raise DatarightsError(f"{method} cannot attribute a region: {why}; use one of {', '.join(sorted(LOCAL))}")
    if store is not None and method in NOT_STORED_LOCAL:
        raise DatarightsError(f"a {method} region is {NOT_STORED_LOCAL[method]} of every training image, which the "
                              "store does not keep: attribute the region without a store")


def make_config(method: str, **options):
    """The method's config dataclass from keyword options (None values keep the defaults)."""
    return build_config(METHODS, method, "attribution method", options)


def result_config(cfg) -> dict:
    """The config fields that can change a result (the batch size only changes speed and memory)."""
    return {k: v for k, v in asdict(cfg).items() if k != "batch_size"}


SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "attribution"
"""Read-only artifacts shipped for the shipped model on the default world (same layout and keys as the cache)."""


def default_world(log=None) -> Path:
    """The default world imagefolder (the shipped model's training set), made once in the cache (~4 s)."""
    from ..world import make_world_folder

    from ..world import WORLD_VERSION

    root = cache_root()
    name = f"world-default-v{WORLD_VERSION}"  # a world of another version is never taken for this one
    folder = root / name
    with build_lock(root, name):  # a second process waits, then finds it made
        if not (folder / "metadata.jsonl").exists():
            if log is not None:
                log(f"making the default world in {folder} (once)")
            make_world_folder(folder, overwrite=True)
    return folder


def resolved(cfg, model: T2IModel):
    """The config with the model's defaults filled in (what runs, what the cache key and results record)."""
    return cfg.for_model(model) if hasattr(cfg, "for_model") else cfg


def state_config(cfg) -> dict:
    """The config fields that change the per-training-set state (its cache key): the result config
    less the fields a method marks QUERY_ONLY (they change how a query is scored, never the state)."""
    per_query = getattr(cfg, "QUERY_ONLY", ())
    return {k: v for k, v in result_config(cfg).items() if k not in per_query}


def state_key(model: T2IModel, train: TrainingSet, method: str, cfg) -> str:
    """The cache key of the method's per-training-set state for this model, training set and (resolved) config."""
    from ..models import model_hash

    return artifact_key(method=method, model=model_hash(model), data=train.hash, config=state_config(cfg))


def prepare(model: T2IModel, train: TrainingSet, method: str, cfg, cache: str | Path | None = None,
            progress=True) -> tuple[dict, float, bool]:
    """The method's per-training-set state: loaded from the cache if its key matches, else built and saved.

    Returns (state, seconds spent building it (0 when cached), whether it came from the cache).
    """
    cfg = resolved(cfg, model)
    key = state_key(model, train, method, cfg)
    root = cache_root(cache)
    state = load_artifact(SHIPPED, method, key)
    if state is not None:
        return state, 0.0, True
    with build_lock(root, f"{method}-{key}"):  # another process building this entry finishes first
        state = load_artifact(root, method, key)
        if state is not None:
            return state, 0.0, True
        t0 = time.time()
        state = METHODS[method].prepare(model, train, cfg, progress=progress)
        seconds = time.time() - t0
        save_artifact(root, method, key, state, {"method": method, "model": model.source,
                                                 "data": str(train.folder.root), "data_hash": train.hash,
                                                 "config": asdict(cfg), "seconds": seconds})
    return state, seconds, False


def attribute(model: T2IModel, train: TrainingSet, query: Query, method: str = "abu", cfg=None,
              cache: str | Path | None = None, progress=True, temperature: float | None = None,
              store: str | Path | None = None, store_dtype: str = "float32", candidates: int | None = None,
              index_min_rows: int | None = None) -> Attribution:
    """Score every training image's influence on the query; higher = more influential.

    Owner shares use `temperature`; by default the method's value calibrated on the world model
    (base.TEMPERATURE), or, for any other model, an uncalibrated default that the result says is
    uncalibrated (pass a temperature, e.g. from `calibrate`, to fix it).

    `store`: keep the per-training-set state as per-work rows in this folder (`attribute.store`),
    synced with `train` first (only new works are computed, works that left are deleted), instead
    of one cached artifact; for the methods with rows (trak, dtrak, ekfac, kfac, abu-fast, feature,
    pixel). With a store, `train` may be a `store.FolderRows` (the training folder read batch by
    batch, never whole).
    A store that keeps an index (`store.sync(..., index=True)`) and holds at least `index_min_rows`
    works (default `store.INDEX_MIN_ROWS`) scores only the index's top `candidates` (default
    `store.INDEX_CANDIDATES`) exactly: the result lists those, its owner shares are theirs
    (standardised with the exact mean and spread of every score), and `approximate` says how much
    share mass the rest can hold at most.
    """
    cfg = resolved(cfg if cfg is not None else make_config(method), model)
    if query.region is not None:
        check_local(method, store)
    if store is None and not isinstance(train, TrainingSet):
        raise DatarightsError("a training folder read row by row needs a store (store=...)")
    subset, center = None, None
    if store is not None:
        from . import store as S

        rows, rep = S.sync(model, train, method, cfg, store, store_dtype, progress)
        prep_s = rep.seconds
        t0 = time.time()
        extra = {"store": rep.line()}
        if rows.has_index and len(rows) >= (S.INDEX_MIN_ROWS if index_min_rows is None else index_min_rows):
            got = S.approximate_scores(model, train, rows, query, method, cfg, candidates or S.INDEX_CANDIDATES)
            scores, subset, center = got["scores"], got["rows"], got["center"]
            extra["approximate"] = {"candidates": got["candidates"], "rows_scored": len(subset),
                                    "rows": len(train)}
        else:
            scores = S.store_scores(model, train, rows, query, method, cfg)
    else:
        state, prep_s, _ = prepare(model, train, method, cfg, cache, progress)
        t0 = time.time()
        scores = METHODS[method].score(model, train, state, query, cfg)
        scores, extra = scores if isinstance(scores, tuple) else (scores, {})
    if temperature is None:
        temperature, calibrated = share_temperature(method, model)
    else:
        calibrated = True
    files, owners = train.files, train.owners
    if subset is not None:
        from .store import tail_share_bound

        files, owners = [files[i] for i in subset], [owners[i] for i in subset]
        extra["approximate"]["tail_share_bound"] = tail_share_bound(scores, center, temperature,
                                                                    len(train) - len(subset))
    return Attribution(method, scores.detach().float().cpu(), files, owners, time.time() - t0, prep_s,
                       temperature, extra, calibrated=calibrated, config=asdict(cfg), rows=subset, center=center)


def calibrate(model: T2IModel, train: TrainingSet, method: str, calibration: str | Path | ImageFolder, cfg=None,
              cache: str | Path | None = None, progress=False) -> dict:
    """Fit the owner-share temperature of `method` on known-owner images (temperature scaling).

    `calibration` is an imagefolder of generated images whose rows give the prompt (`text`) and the
    owner the image is known to draw on (`owner`). Returns {"temperature", "cross_entropy", "queries"}.
    """
    from ..world import read_imagefolder

    folder = calibration if isinstance(calibration, ImageFolder) else read_imagefolder(calibration, model.resolution)
    rows = [(i, m) for i, m in enumerate(folder.metas) if isinstance(m.get("owner"), str)]
    unknown = sorted({m["owner"] for _, m in rows} - set(train.owners))
    if not rows:
        raise DatarightsError(f"calibration set {folder.root} has no rows with an 'owner'")
    if unknown:
        raise DatarightsError(f"calibration owner {unknown[0]!r} owns no training image")
    images = torch.from_numpy(folder.images)
    scores = [attribute(model, train, Query(images[i], m["text"]), method, cfg, cache, progress, temperature=1.0).scores
              for i, m in rows]
    t, ce = fit_temperature(scores, train.owners, [{m["owner"]: 1.0} for _, m in rows])
    return {"method": method, "temperature": t, "cross_entropy": ce, "queries": len(rows)}


def load_region(image: str | Path, resolution: int, box: str | None = None, mask: str | Path | None = None,
                label: str | None = None) -> torch.Tensor | None:
    """A region of the query image as weights [resolution, resolution] in [0, 1] (None: neither given).

    `box` "x0,y0,x1,y1" in the image's own pixels (x1, y1 exclusive), or `mask` a black-and-white image
    of the image's size (white = the region). The region is resized as the image is (area average)."""
    import numpy as np
    from PIL import Image

    from ..files import open_rgb

    if box is None and mask is None:
        return None
    if box is not None and mask is not None:
        raise DatarightsError("give a region as a box or as a mask, not both")
    rgb, _ = open_rgb(image, "query image", label)
    w, h = rgb.size
    if box is not None:
        try:
            x0, y0, x1, y1 = (int(v) for v in str(box).split(","))
        except ValueError:
            raise DatarightsError(f"a region is four whole pixel numbers x0,y0,x1,y1, got {str(box)[:40]!r}") from None
        if x1 <= x0 or y1 <= y0:
            raise DatarightsError(f"the region {x0},{y0},{x1},{y1} has no area (x1 must exceed x0 and y1 exceed y0)")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise DatarightsError(f"the region {x0},{y0},{x1},{y1} lies outside the {w}x{h} image")
        m = np.zeros((h, w), dtype=np.float32)
        m[y0:y1, x0:x1] = 1.0
    else:
        im, _ = open_rgb(mask, "region mask")
        if im.size != (w, h):
            raise DatarightsError(f"the region mask is {im.size[0]}x{im.size[1]} but the image is {w}x{h}: "
                                  "they must be the same size")
        a = np.asarray(im, dtype=np.uint8)
        if not (np.all(a == a[..., :1]) and np.isin(a, (0, 255)).all()):
            raise DatarightsError("the region mask must be black and white only (0 outside the region, 255 inside)")
        m = (a[..., 0] == 255).astype(np.float32)
        if not m.any():
            raise DatarightsError("the region mask is all black: it marks no region")
    if (h, w) != (resolution, resolution):
        m = np.asarray(Image.fromarray(m, mode="F").resize((resolution, resolution), Image.BOX), dtype=np.float32)
    return torch.from_numpy(np.clip(m, 0.0, 1.0))


def load_query(path: str | Path, resolution: int) -> torch.Tensor:
    """Read a query image; RGBA/greyscale are converted to RGB and other sizes resized (with a warning)."""
    import sys

    import numpy as np
    from PIL import Image

    from ..files import open_rgb

    p = Path(path)
    rgb, mode = open_rgb(p, "query image")
    if mode != "RGB":
        print(f"warning: {p} is {mode}; converting to RGB", file=sys.stderr)
    if rgb.size != (resolution, resolution):
        print(f"warning: {p} is {rgb.size[0]}x{rgb.size[1]}; resizing to the model's {resolution}x{resolution}", file=sys.stderr)
        rgb = rgb.resize((resolution, resolution), Image.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


__all__ = ["LOCAL", "METHODS", "Attribution", "Query", "check_local", "load_region", "TrainingSet", "attribute", "calibrate", "default_world", "fit_temperature",
           "load_query", "load_training_set", "make_config", "owner_shares", "prepare"]
