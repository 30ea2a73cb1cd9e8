"""Per-training-set artifacts (Fisher, projected gradients, features, base losses) on disk.

An artifact is a folder <root>/<method>/<key>/ with `tensors.safetensors` and `config.json`;
the key is a content hash of the model's weights, the data's pixels and captions, and every
config field that changes the result. A different model, dataset or config gives a different
key, so stale artifacts are never used; an existing one is reused, so runs resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def cache_root(path: str | Path | None = None) -> Path:
    """--cache DIR, else $DATARIGHTS_CACHE, else ~/.cache/datarights."""
    if path is not None:
        return Path(path)
    env = os.environ.get("DATARIGHTS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "datarights"


def artifact_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_artifact(root: Path, method: str, key: str) -> dict[str, torch.Tensor] | None:
    d = root / method / key
    try:
        meta = json.loads((d / "config.json").read_text())
        if meta.get("key") != key:
            return None
        return load_file(d / "tensors.safetensors")
    except (OSError, json.JSONDecodeError, ValueError, RuntimeError):
        return None  # absent or damaged: rebuild


def save_artifact(root: Path, method: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    d = root / method / key
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=d.parent))
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "tensors.safetensors")
        (tmp / "config.json").write_text(json.dumps({"key": key, **meta}, indent=2, default=str))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d
