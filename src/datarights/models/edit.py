"""Edited models: the frozen `Edit` an erase method returns, its folder, and the base's identity.

An edited-model folder holds `model_index.json` (class DatarightsEditedModel, the base's path and
weights hash, the method and its settings) and `edit.safetensors` (the changed tensors). A LoRA
edit also carries `pytorch_lora_weights.safetensors` in diffusers' LoRA format, so that
`StableDiffusionPipeline.load_lora_weights(folder)` applies it to the base pipeline directly.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import DatarightsError
from ..files import atomic_folder
from ..model_index import DEFAULT_REF, EDIT_CLASS  # light names, re-exported here
from .t2i import T2IModel


def _default_model() -> Path:
    from . import DEFAULT_MODEL
    return DEFAULT_MODEL


@dataclass(frozen=True)
class Edit:
    """A small, serialisable edit: the changed tensors plus the identity of the base model.

    It does not mutate any model: `apply` returns a copy of the base with the tensors in place. A
    LoRA edit (config["lora"] = {"rank", "alpha"}) holds adapter matrices 'unet.<layer>.lora_A.weight'
    / '.lora_B.weight', merged as W + (alpha / rank) B A.
    """

    tensors: dict
    """Parameter name ('unet.<...>' / 'text_encoder.<...>') -> new value (or LoRA factors)."""
    base: str
    """Base model folder ('default' for the shipped world model)."""
    base_hash: str
    """Content hash of the base's weights; loading refuses a different base."""
    method: str
    targets: tuple
    anchors: tuple
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed_params(self) -> int:
        return int(sum(t.numel() for t in self.tensors.values()))

    @property
    def lora(self) -> dict | None:
        return self.config.get("lora")

    def merged_tensors(self, base: T2IModel) -> dict[str, torch.Tensor]:
        """The full new values of every parameter this edit changes (LoRA factors merged into W)."""
        if not self.lora:
            return dict(self.tensors)
        scale = float(self.lora["alpha"]) / float(self.lora["rank"])
        params = base.named_parameters()
        out = {}
        for name, a in self.tensors.items():
            if ".lora_A." not in name:
                continue
            layer = name.replace(".lora_A.weight", "")
            b = self.tensors[f"{layer}.lora_B.weight"]
            w = params.get(f"{layer}.weight")
            if w is None:
                raise DatarightsError(f"edit names layer {layer} that the base model does not have")
            out[f"{layer}.weight"] = w.detach() + scale * (b.to(w.device).float() @ a.to(w.device).float()).to(w.dtype)
        return out

    def apply(self, base: T2IModel) -> T2IModel:
        """A copy of `base` with this edit's tensors in place (the text encoder is copied only if edited)."""
        if model_hash(base) != self.base_hash:
            raise DatarightsError(f"this edit was made on another base model (hash {self.base_hash}, got {model_hash(base)})")
        new = self.merged_tensors(base)
        edited = copy.copy(base)
        edited.__dict__.pop("_digest", None)
        edited.unet = copy.deepcopy(base.unet)
        if any(n.startswith("text_encoder.") for n in new):
            edited.text_encoder = copy.deepcopy(base.text_encoder)
        params = edited.named_parameters()
        with torch.no_grad():
            for name, value in new.items():
                if name not in params or params[name].shape != value.shape:
                    raise DatarightsError(f"edit names parameter {name} that the base model does not have")
                params[name].copy_(value)
        edited.meta = {**base.meta, "edit": self.summary()}
        return edited.eval()

    def summary(self) -> dict:
        return {"method": self.method, "targets": list(self.targets), "anchors": list(self.anchors),
                "base": self.base, "base_hash": self.base_hash, "config": self.config,
                "seconds": round(self.seconds, 2), "changed_params": self.changed_params}

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write a loadable model folder: model_index.json (points at the base) + edit.safetensors.

        The folder must not be, contain or lie inside the base (or the base's own base, for an edit
        of an edit); an existing datarights edited model is replaced only with `overwrite`.
        """
        with atomic_folder(out, "edited-model", base_chain(self.base), overwrite) as tmp:
            tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
            save_file(tensors, tmp / "edit.safetensors")
            if self.lora:
                save_lora_diffusers(tensors, tmp)
            (tmp / "model_index.json").write_text(json.dumps({"_class_name": EDIT_CLASS, **self.summary()}, indent=2))
        return Path(out)


def save_lora_diffusers(tensors: dict[str, torch.Tensor], folder: Path) -> Path:
    """The LoRA factors as diffusers' `pytorch_lora_weights.safetensors` (keys 'unet.<layer>.lora_A.weight'),
    which `StableDiffusionPipeline.load_lora_weights(folder)` reads."""
    path = folder / "pytorch_lora_weights.safetensors"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items() if ".lora_" in k}, path)
    return path


def base_chain(base: str) -> list[Path]:
    """The base folder of an edit and, if that is itself an edited model, its bases in turn."""
    chain: list[Path] = []
    ref = base
    while ref not in (None, "", DEFAULT_REF):
        p = Path(ref)
        if p.resolve() in [c.resolve() for c in chain]:
            break
        chain.append(p)
        try:
            index = json.loads((p / "model_index.json").read_text(encoding="utf-8"))
            ref = index.get("base") if index.get("_class_name") == EDIT_CLASS else None
        except (OSError, ValueError, AttributeError):
            break
    return chain or [_default_model()]


def weights_digest(model: T2IModel) -> str:
    """SHA-256 of a model's weights: every parameter's name and fp32 values, in name order (cached on
    the object; independent of device, precision and the files' layout). What a certificate binds."""
    cached = getattr(model, "_digest", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    model._digest = h.hexdigest()
    return model._digest


def model_hash(model: T2IModel) -> str:
    """Short content hash of a model's weights: the first 16 hex digits of `weights_digest`."""
    return weights_digest(model)[:16]


def base_ref(model: T2IModel) -> str:
    """How an edit refers to its base: 'default' for the shipped world model, else the folder's path."""
    src = Path(model.source).resolve() if model.source else None
    if src is None or src == _default_model().resolve():
        return DEFAULT_REF
    return str(src)


def load_edited(path: Path, index: dict, seen: tuple = (), device=None, dtype=None) -> T2IModel:
    """Load an edited-model folder: its base, then the edit on top."""
    from . import load_model

    base_path = index.get("base")
    if not isinstance(base_path, str) or not base_path:
        raise DatarightsError(f"{path}/model_index.json names no base model")
    base_dir = _default_model() if base_path == DEFAULT_REF else Path(base_path)
    if base_dir.resolve() in (*seen, path.resolve()):
        raise DatarightsError(f"edited model {path} names itself (or an edit that leads back to it) as its base")
    if not base_dir.exists():
        raise DatarightsError(f"the base model of {path} is missing: {base_dir}")
    if not (path / "edit.safetensors").is_file():
        raise DatarightsError(f"edited model {path} has no edit.safetensors")
    try:
        tensors = load_file(path / "edit.safetensors")
    except (SafetensorError, OSError) as e:
        raise DatarightsError(f"{path}/edit.safetensors is corrupt or truncated ({str(e)[:80]})") from None
    base = load_model(base_dir, device=device, dtype=dtype, _seen=(*seen, path.resolve()))
    edit = Edit(tensors=tensors, base=base_path, base_hash=str(index.get("base_hash", "")),
                method=str(index.get("method", "?")), targets=tuple(index.get("targets", ())),
                anchors=tuple(index.get("anchors", ())), config=index.get("config", {}), seconds=index.get("seconds", 0))
    model = edit.apply(base)
    model.source = str(path)
    return model
