"""Text-to-image models behind one interface (`T2IModel`), and `load_model` for any folder we know."""

from __future__ import annotations

from pathlib import Path

from diffusers.utils import logging as _diffusers_logging

from ..errors import DatarightsError
from ..files import read_json_file
from .t2i import PARAM_GROUPS, T2IModel
from .world import WORLD_CLASS, build_world_model, load_text_encoder, save_world_model

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "world-model"
_diffusers_logging.set_verbosity_error()  # no advice about optional packages on every load


def load_model(path: str | Path | None = None, _seen: tuple = ()) -> T2IModel:
    """Load a model folder: the world model, a Stable Diffusion pipeline folder, or an edited model.

    `None` loads the shipped world model. Every problem with the folder is a one-line DatarightsError.
    """
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
        model = load_world_model(path, index)
    elif cls in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"):
        from .sd import load_sd_model
        model = load_sd_model(path, index)
    elif cls == "DatarightsEditedModel":
        from ..erase.base import load_edited
        model = load_edited(path, index, _seen)
    else:
        raise DatarightsError(f"{path}: unsupported model class {cls!r} (expected {WORLD_CLASS} or StableDiffusionPipeline)")
    return model.eval()


__all__ = ["DEFAULT_MODEL", "PARAM_GROUPS", "T2IModel", "build_world_model", "load_model", "load_text_encoder",
           "save_world_model"]
