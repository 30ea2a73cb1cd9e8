"""Holding an edit on a model line to the line's original model (the service's one-by-one path).

A model line is a base model and the edits made on it one opt-out at a time: each edit starts from
the line's *current* model. Without anything holding it there, the damage of every edit compounds
(benchmarks/erase.py --many --sequential on the large world: other prompts kept 0.84 after two CA
edits, 0.24 after eight, against 0.70 for one edit of the same eight). A `Line` tells an erase
method where the chain started and what it erased before, and `HoldTerms` adds two terms to its
loss, both distillation on noised images of the prompts concerned:

- other prompts (world-grammar prompts that name none of the line's concepts, drawn from a seed
  range of their own; the audit draws its other prompts from the same grammar with its own seed, so
  single prompts can coincide) keep the *original* model's noise predictions, so that the drift of
  earlier edits is pulled back rather than built on;
- the concepts erased earlier keep the *current* model's predictions (their erased state), so that
  holding everything else to the original does not bring them back.

Without a `Line` (a single edit) the original is the model itself and there is nothing earlier: the
term is a plain preservation term on other prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import T2IModel
from ..world import prompts_naming_none, vocabulary_of

HOLD_SEED = 200_011
"""Offset of the hold term's prompts, images and draws: never the audit's or an attack's."""


@dataclass
class Line:
    """Where a chain of edits started and what it erased: the line's original model, and the (target,
    anchor) pairs of the edits made on it before this one."""

    original: T2IModel
    erased: list[tuple[str, str]] = field(default_factory=list)


def other_prompts(n: int, seed: int, exclude: list[str], vocab) -> list[str]:
    """World-grammar prompts that name none of `exclude` (by label or by words), from 3n drawn."""
    return [o["text"] for o in prompts_naming_none(n, seed, exclude, vocab, draw=3)]


class HoldTerms:
    """The two hold terms of one edit (see the module docstring). Images are generated once: other
    prompts by the original model, earlier concepts' prompts by the current one (showing their anchors)."""

    def __init__(self, model: T2IModel, work: T2IModel, line: Line | None, targets: list[str], n_prompts: int,
                 n_images: int, seed: int, sample_steps: int, with_grad: bool):
        from .base import concept_prompts, encode_cached, generate_model_space

        self.model, self.original = model, (line.original if line is not None else model)
        erased = list(line.erased) if line is not None else []
        vocab = vocabulary_of(model)
        seed = seed + HOLD_SEED
        exclude = [*targets, *(c for c, _ in erased)]
        self.prompts = other_prompts(n_prompts, seed, exclude, vocab)
        if not self.prompts:
            raise DatarightsError("the hold term found no prompt that names none of the line's concepts; "
                                  "erase without --hold")
        self.x_other, _ = generate_model_space(self.original, self.prompts, n_images, seed, sample_steps)
        with torch.no_grad():
            self.c_other = self.original.encode_prompt(self.prompts)
        self.enc_other = encode_cached(work, self.prompts, with_grad)
        self.erased_prompts: list[str] = []
        for i, (c, a) in enumerate(erased):
            self.erased_prompts += concept_prompts(c, a, 4, seed + i, split="train", vocab=vocab).target
        if self.erased_prompts:
            self.x_erased, _ = generate_model_space(model, self.erased_prompts, max(n_images, len(self.erased_prompts)),
                                                    seed + 1, sample_steps)
            with torch.no_grad():
                self.c_erased = model.encode_prompt(self.erased_prompts)
            self.enc_erased = encode_cached(work, self.erased_prompts, with_grad)

    @property
    def passes(self) -> int:
        """UNet passes with gradients per image that the terms add."""
        return 1 + bool(self.erased_prompts)

    def loss(self, work: T2IModel, micro: int, g: torch.Generator) -> torch.Tensor:
        out = self._term(work, self.original, self.x_other, self.c_other, self.enc_other, micro, g)
        if self.erased_prompts:
            out = out + self._term(work, self.model, self.x_erased, self.c_erased, self.enc_erased, micro, g)
        return out

    @staticmethod
    def _term(work, teacher, x0, c_teacher, enc_work, micro, g) -> torch.Tensor:
        b = runtime.randint(len(x0), (micro,), g, work.device)
        idx = b % len(c_teacher)                      # image i was generated from prompt i mod n
        t, noise = runtime.timesteps_and_noise(work, x0[b].shape, g)
        x_t = work.add_noise(x0[b], noise, t)
        with torch.no_grad():
            goal = teacher.predict_noise(x_t, t, c_teacher[idx.to(c_teacher.device)])
        return torch.nn.functional.mse_loss(work.predict_noise(x_t, t, enc_work(idx)), goal)


def line_of(model: T2IModel, device=None, precision=None) -> Line | None:
    """The line an edited model extends: its first non-edited base (loaded on `device`) and the
    (target, anchor) pairs of every edit between, oldest first; None for a model that is no edit."""
    import json

    from ..models import load_model
    from ..models.edit import EDIT_CLASS, base_chain

    edit = model.meta.get("edit")
    if not edit:
        return None
    pairs = list(zip(edit["targets"], edit["anchors"]))
    root = None
    for folder in base_chain(edit["base"]):
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        if isinstance(index, dict) and index.get("_class_name") == EDIT_CLASS:
            pairs = list(zip(index.get("targets", []), index.get("anchors", []))) + pairs
        else:
            root = folder
    return Line(load_model(root, device, precision), pairs)
