"""Per-training-set artifacts (Fisher, projected gradients, features, base losses) on disk.

An artifact is a folder <root>/<method>/<key>/ with `tensors.safetensors` and `config.json`;
the key is a content hash of the model's weights, the data's pixels and captions, and every
config field that changes the result. A different model, dataset or config gives a different
key, so stale artifacts are never used; an existing one is reused, so runs resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import replace_folder, temp_sibling


def cache_root(path: str | Path | None = None) -> Path:
    """--cache DIR, else $DATARIGHTS_CACHE, else ~/.cache/datarights."""
    if path is not None:
        return Path(path)
    env = os.environ.get("DATARIGHTS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "datarights"


def artifact_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_artifact(root: Path, method: str, key: str) -> dict[str, torch.Tensor] | None:
    """The artifact's tensors, or None when it is absent, damaged, truncated or made for another key."""
    d = root / method / key
    try:
        meta = json.loads((d / "config.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        return load_file(d / "tensors.safetensors")
    except (OSError, ValueError, RuntimeError, SafetensorError):
        return None  # absent or damaged: rebuild


@contextlib.contextmanager
def build_lock(root: Path, name: str) -> Iterator[None]:
    """An inter-process lock (released by the OS if its holder dies, even by kill -9), so that two
    processes building the same cache entry take turns: the second then finds the first's result."""
    from filelock import FileLock

    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{name}.lock")):
        yield


def save_artifact(root: Path, method: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the artifact under a unique temporary name and rename it into place.

    A valid entry that appeared meanwhile (another process finished first) is kept and ours dropped;
    a damaged one is replaced.
    """
    d = root / method / key
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(d, "tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "tensors.safetensors")
        (tmp / "config.json").write_text(json.dumps({"key": key, **meta}, indent=2, default=str))
        if d.exists() and load_artifact(root, method, key) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return d
        replace_folder(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d


def source_hash(*modules) -> str:
    """A hash of the modules' source files: part of the key of an entry whose content those modules compute."""
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()[:16]


def memo(method: str, key: str, build) -> tuple[dict[str, torch.Tensor], dict]:
    """`build()` -> (tensors, meta), computed once per key and kept in the cache (<root>/<method>/<key>/)
    for every later process; two processes take turns building it. A cache that cannot be written only
    costs the time of building again."""
    root = cache_root()

    def load():
        tensors = load_artifact(root, method, key)
        if tensors is None:
            return None
        return tensors, json.loads((root / method / key / "config.json").read_text(encoding="utf-8"))

    try:
        got = load()
        if got is not None:
            return got
        with build_lock(root, f"{method}-{key}"):
            got = load()
            if got is not None:
                return got
            tensors, meta = build()
            save_artifact(root, method, key, tensors, meta)
            return tensors, {"key": key, **meta}
    except OSError:  # no writable cache here: build in memory
        tensors, meta = build()
        return tensors, {"key": key, **meta}
