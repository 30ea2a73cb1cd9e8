"""Text-to-image models behind one interface (`T2IModel`), and `load_model` for any folder we know:
the world model, a Stable Diffusion pipeline folder, or an edited model (`Edit` on top of a base)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils import logging as _diffusers_logging

from ..errors import DatarightsError
from ..files import read_json_file
from .edit import EDIT_CLASS, Edit, base_chain, base_ref, load_edited, model_hash, weights_digest
from .sd import SD_CLASSES, save_sd_model
from .t2i import PARAM_GROUPS, T2IModel
from .world import WORLD_CLASS, build_world_model, load_text_encoder, save_world_model

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "world-model"
_diffusers_logging.set_verbosity_error()  # no advice about optional packages on every load


def load_model(path: str | Path | None = None, device=None, dtype=None, _seen: tuple = ()) -> T2IModel:
    """Load a model folder: the world model, a Stable Diffusion pipeline folder, or an edited model.

    `None` loads the shipped world model. `device`: 'auto' (default: CUDA when available), 'cpu',
    'cuda', 'cuda:N'; `dtype`: the compute precision 'fp32' (default), 'bf16' or 'fp16' (autocast;
    the weights stay fp32). Every problem with the folder or the options is a one-line DatarightsError.
    """
    from .. import runtime

    dev = runtime.resolve_device(device)
    precision = runtime.resolve_precision(dtype, dev)
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.exists():
        raise DatarightsError(f"model folder {path} does not exist")
    if not path.is_dir():
        raise DatarightsError(f"{path} is not a model folder")
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise DatarightsError(f"{path} is not a model folder (no model_index.json)")
    index = read_json_file(index_path, "model index")
    if not isinstance(index, dict):
        raise DatarightsError(f"{index_path} is not a JSON object")
    cls = index.get("_class_name")
    if cls == WORLD_CLASS:
        from .world import load_world_model
        with torch.device("cpu"):  # weights are read into CPU memory, then moved to `device`
            model = load_world_model(path, index)
    elif cls in SD_CLASSES:
        from .sd import load_sd_model
        with torch.device("cpu"):
            model = load_sd_model(path, index)
    elif cls == EDIT_CLASS:
        model = load_edited(path, index, _seen, device=dev, dtype=precision)
    else:
        raise DatarightsError(f"{path}: unsupported model class {cls!r} (expected {WORLD_CLASS} or StableDiffusionPipeline)")
    return model.to(dev, precision).eval()


def export_model(model: T2IModel, out: str | Path, overwrite: bool = False, inputs: tuple = ()) -> Path:
    """Write `model` (typically an edited one) as a standalone folder with every edit applied: a
    StableDiffusionPipeline folder that diffusers loads as is, or a world-model folder."""
    record = {"exported_from": model.source, **{k: model.meta[k] for k in ("world", "edit") if k in model.meta}}
    if model.kind == "world":
        return save_world_model(model, out, extra=record, overwrite=overwrite, inputs=inputs, kind="export")
    return save_sd_model(model, out, record, overwrite=overwrite, inputs=inputs, kind="export")


__all__ = ["DEFAULT_MODEL", "EDIT_CLASS", "Edit", "PARAM_GROUPS", "T2IModel", "base_chain", "base_ref",
           "build_world_model", "export_model", "load_edited", "load_model", "load_text_encoder", "model_hash",
           "save_sd_model", "save_world_model", "weights_digest"]
