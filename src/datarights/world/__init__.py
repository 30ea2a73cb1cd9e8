"""The embedded ground-truth world: vocabulary, procedural generator, imagefolder I/O."""

from .generate import (ImageFolder, WorldConfig, make_world, make_world_folder, read_imagefolder,
                       prompts_naming_none, sample_eval_prompts, sample_item, vocabulary_of,
                       vocabulary_of_folder, world_config_of, write_imagefolder)
from .vocab import LABELS, PRESETS, WORLD_VERSION, Vocabulary, build_vocabulary, info

__all__ = ["ImageFolder", "LABELS", "PRESETS", "Vocabulary", "WORLD_VERSION", "WorldConfig", "build_vocabulary", "info",
           "make_world", "make_world_folder", "prompts_naming_none", "read_imagefolder", "sample_eval_prompts", "sample_item",
           "vocabulary_of", "vocabulary_of_folder", "world_config_of", "write_imagefolder"]
