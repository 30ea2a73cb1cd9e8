"""datarights: erase concepts from text-to-image diffusion models, attribute generated images to
the owners of their training data, and verify both against ground truth."""

__version__ = "0.1.0"
