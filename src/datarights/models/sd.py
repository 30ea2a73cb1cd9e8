"""Stable Diffusion pipeline folders: load one into a `T2IModel`, write one back (trained or edited)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from ..errors import DatarightsError
from ..files import atomic_folder
from .t2i import T2IModel

SD_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
PRIVATE_KEY = "_datarights"
"""Our record inside a pipeline's model_index.json (diffusers ignores keys that start with '_')."""


def load_sd_model(path: Path, index: dict) -> T2IModel:
    """Load unet/vae/text_encoder/tokenizer/scheduler from a StableDiffusionPipeline folder (no network)."""
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # no 'Loading weights' bar on every command
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (path / sub).is_dir():
            raise DatarightsError(f"Stable Diffusion folder {path} has no {sub}/ subfolder")
    try:
        unet = UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(path / "vae", local_files_only=True)
        enc = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True)
        tok = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        # Whatever sampler the folder ships, the forward process is its DDPM schedule.
        sched = DDPMScheduler.from_config(DDPMScheduler.load_config(path / "scheduler", local_files_only=True))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise DatarightsError(f"Stable Diffusion folder {path} is incomplete or corrupt ({str(e).splitlines()[0][:120]})") from None
    for m in (unet, vae, enc):
        m.eval().requires_grad_(False)
    record = index.get(PRIVATE_KEY) if isinstance(index.get(PRIVATE_KEY), dict) else {}
    meta = {**record, "pipeline_root": str(path)}
    return T2IModel(unet=unet, scheduler=sched, text_encoder=enc, tokenizer=tok, vae=vae, kind="sd",
                    max_length=tok.model_max_length, source=str(path), meta=meta)


def save_sd_model(model: T2IModel, out: str | Path, record: dict | None = None, overwrite: bool = False,
                  inputs: tuple = (), kind: str = "sd-model") -> Path:
    """Write `model` as a complete StableDiffusionPipeline folder that diffusers loads as is.

    Every part it does not hold in memory (tokenizer, scheduler, safety checker, feature extractor)
    is copied from the pipeline folder it was loaded from; unet/ and text_encoder/ are written anew
    (safetensors). `record` goes into model_index.json under '_datarights' (training recipe, edit).
    """
    root = model.meta.get("pipeline_root")
    if model.kind != "sd" or not root or not (Path(root) / "model_index.json").is_file():
        raise DatarightsError("this model was not loaded from a Stable Diffusion pipeline folder")
    root = Path(root)
    with atomic_folder(out, kind, inputs, overwrite) as tmp:
        shutil.copytree(root, tmp, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if Path(d) == root and n in ("unet", "text_encoder", ".datarights")])
        model.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        model.text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
        index[PRIVATE_KEY] = record or {}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    return Path(out)
