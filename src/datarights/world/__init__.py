"""The embedded ground-truth world: vocabulary, procedural generator, imagefolder I/O."""

from .generate import (ImageFolder, WorldConfig, make_world, make_world_folder, read_imagefolder,
                       sample_eval_prompts, sample_item, write_imagefolder)
from .vocab import LABELS, info

__all__ = ["ImageFolder", "LABELS", "WorldConfig", "info", "make_world", "make_world_folder", "read_imagefolder",
           "sample_eval_prompts", "sample_item", "write_imagefolder"]
