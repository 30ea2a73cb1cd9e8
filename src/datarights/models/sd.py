"""Loading any local diffusers Stable Diffusion pipeline folder into a `T2IModel`."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from ..errors import DatarightsError
from .t2i import T2IModel

SD_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")


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
    return T2IModel(unet=unet, scheduler=sched, text_encoder=enc, tokenizer=tok, vae=vae, kind="sd",
                    max_length=tok.model_max_length, source=str(path), meta=index)
