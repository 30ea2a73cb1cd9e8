"""Paraphrase attack: the target's words swapped for their neighbours in the text encoder.

For each word of the target, the nearest vocabulary tokens by cosine similarity of the text
encoder's input embeddings (the world model's encoder is a real pretrained one, so neighbours are
meaningful: synonyms, spellings, related words); prompts are the target's prompts with the words
replaced. The judge decides whether each generated image shows the target.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .base import AttackResult, judge_attempts, register, timed


@dataclass
class ParaphraseConfig:
    """Settings of the paraphrase attack."""

    neighbours: int = 8
    """Nearest tokens considered per word."""
    budget: int = 16
    """Generated images (attempts), spread over the paraphrases."""
    seed: int = 0
    """Seed of generation."""

    def __post_init__(self):
        if self.neighbours < 1 or self.budget < 1:
            raise DatarightsError("neighbours and budget must be at least 1")


def neighbours(model: T2IModel, word: str, k: int) -> list[str]:
    """The k whole-word tokens nearest to `word` (excluding itself and special/subword tokens)."""
    tok = model.tokenizer
    ids = tok(word, add_special_tokens=False).input_ids
    table = torch.nn.functional.normalize(model.token_embedding().weight.detach(), dim=-1)
    q = torch.nn.functional.normalize(table[ids].mean(0), dim=-1)
    order = torch.argsort(table @ q, descending=True).tolist()
    out = []
    for i in order:
        w = tok.convert_ids_to_tokens(i)
        if w.startswith("##") or w.startswith("[") or not w.isalpha() or w.lower() == word.lower():
            continue
        out.append(w.replace("</w>", ""))
        if len(out) == k:
            break
    return out


def paraphrases(model: T2IModel, target: str, k: int) -> list[str]:
    words = target.split()
    options = [[w] + neighbours(model, w, k) for w in words]
    combos = [" ".join(c) for c in itertools.product(*options) if " ".join(c).lower() != target.lower()]
    return combos[: max(k * len(words), k)]


@register("paraphrase", ParaphraseConfig)
@timed
def paraphrase(model: T2IModel, target: str, cfg: ParaphraseConfig, judge=None) -> AttackResult:
    from ..erase.base import concept_prompts

    subs = paraphrases(model, target, cfg.neighbours)
    base_prompts = concept_prompts(target, "something else entirely", cfg.budget, cfg.seed).target
    prompts = [base_prompts[i % len(base_prompts)].replace(target, subs[i % len(subs)]) for i in range(cfg.budget)]
    out = model.sample(prompts, seed=cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("paraphrase", target, sum(ok) / len(ok), len(ok), 0.0, prompts, out, ok)
