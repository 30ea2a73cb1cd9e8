"""Paraphrase attack: the target's words swapped for their neighbours in the text encoder.

Neighbours are semantic, not lexical: every whole-word token of the tokenizer's vocabulary is
embedded as a one-word sentence by the text encoder (mean-pooled output states, the way
all-MiniLM-L6-v2 is trained to be used; computed once per encoder and kept in memory), the
nearest words to each target word are taken, leaving out its inflections (same first four
letters), and the resulting phrases are ranked by the sentence similarity of the whole phrase to
the target. The attacker is black-box: each of the nearest `probes` paraphrases is tried once on
the attacked model (in a target prompt), and the budget is spent, with fresh noise, on the
paraphrases whose probe showed the target (or the nearest ones if none did). The judge decides
whether each generated image shows the target; ASR counts the budget's images only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..errors import DatarightsError
from ..models import T2IModel
from .base import AttackResult, judge_attempts, register, timed, word_mask


@dataclass
class ParaphraseConfig:
    """Settings of the paraphrase attack."""

    neighbours: int = 8
    """Nearest words considered per word of the target."""
    probes: int = 16
    """Paraphrases tried once each before the budget is spent."""
    budget: int = 16
    """Generated images (attempts), spread over the chosen paraphrases."""
    seed: int = 0
    """Seed of generation."""

    def __post_init__(self):
        if self.neighbours < 1 or self.budget < 1 or self.probes < 1:
            raise DatarightsError("neighbours, probes and budget must be at least 1")


def _stem(w: str) -> str:
    return w.lower()[:4]


def _sentence_embeddings(model: T2IModel, texts: list[str], batch_size: int = 1024) -> torch.Tensor:
    """Mean-pooled, L2-normalised text-encoder output states: [n, D]."""
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            tok = model.tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=16,
                                  return_tensors="np")
            ids, mask = (torch.from_numpy(a).to(model.device) for a in (tok.input_ids, tok.attention_mask))
            h = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask[..., None].to(h.dtype)
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


_VOCAB: dict[str, tuple[list[str], torch.Tensor]] = {}
_HASHED: dict = {}


def _encoder_hash(model: T2IModel) -> str:
    """Content hash of the text encoder's weights and the tokenizer's vocabulary; rehashed only when
    another encoder comes or a weight was changed in place (torch counts in-place writes per tensor),
    since every target word asks for the table."""
    import hashlib
    import json
    import weakref

    enc = model.text_encoder
    versions = tuple(p._version for p in enc.parameters())
    ref = _HASHED.get("encoder")
    if ref is None or ref() is not enc or _HASHED["versions"] != versions or _HASHED["tokenizer"] is not model.tokenizer:
        h = hashlib.sha256()
        for p in enc.parameters():
            h.update(p.detach().cpu().numpy().tobytes())
        h.update(json.dumps(sorted(model.tokenizer.get_vocab().items())).encode())
        _HASHED.update(encoder=weakref.ref(enc), versions=versions, tokenizer=model.tokenizer, hash=h.hexdigest())
    return _HASHED["hash"]


def word_table(model: T2IModel) -> tuple[list[str], torch.Tensor]:
    """The tokenizer's whole words (alphabetic, >= 3 letters) and their sentence embeddings: computed
    once per text encoder (its weights and vocabulary) and device, kept in memory and in the cache, so
    that a new process does not embed the whole vocabulary again."""
    from ..attribute.cache import artifact_key, memo

    key = artifact_key(encoder=_encoder_hash(model), device=str(model.device), min_letters=3)
    if key not in _VOCAB:
        def build():
            ids = word_mask(model).nonzero()[:, 0].tolist()
            words = sorted({w.replace("</w>", "") for w in model.tokenizer.convert_ids_to_tokens(ids)} - {""})
            words = [w for w in words if len(w) >= 3]
            return {"table": _sentence_embeddings(model, words).cpu()}, {"words": words}

        tensors, meta = memo("paraphrase-words", key, build)
        _VOCAB.clear()
        _VOCAB[key] = (meta["words"], tensors["table"].to(model.device))
    return _VOCAB[key]


def neighbours(model: T2IModel, word: str, k: int) -> list[str]:
    """The k vocabulary words nearest to `word` in sentence-embedding space, without its inflections."""
    words, table = word_table(model)
    sims = table @ _sentence_embeddings(model, [word])[0]
    out = []
    for i in torch.argsort(sims, descending=True).tolist():
        if _stem(words[i]) != _stem(word):
            out.append(words[i])
            if len(out) == k:
                break
    return out


def paraphrases(model: T2IModel, target: str, k: int) -> list[str]:
    """Phrases with some of the target's words swapped for neighbours, nearest to the target first."""
    words = target.split()
    options = [[w] + neighbours(model, w, k) for w in words]
    combos = [" ".join(c) for c in itertools.product(*options) if " ".join(c).lower() != target.lower()]
    sims = _sentence_embeddings(model, combos) @ _sentence_embeddings(model, [target])[0]
    ranked = [combos[i] for i in torch.argsort(sims, descending=True).tolist()]
    return ranked[: max(k * len(words), k)]


@register("paraphrase", ParaphraseConfig)
@timed
def paraphrase(model: T2IModel, target: str, cfg: ParaphraseConfig, judge=None) -> AttackResult:
    from ..erase.base import concept_prompts
    from ..world import vocabulary_of

    subs = paraphrases(model, target, cfg.neighbours)[:cfg.probes]
    templates = concept_prompts(target, "something else entirely", max(cfg.budget, len(subs)), cfg.seed,
                                split="eval", vocab=vocabulary_of(model)).target

    def prompts_for(phrases, n):
        return [templates[i % len(templates)].replace(target, phrases[i % len(phrases)]) for i in range(n)]

    probe = judge_attempts(model.sample(prompts_for(subs, len(subs)), seed=cfg.seed + 2), target, judge)
    chosen = [p for p, ok in zip(subs, probe) if ok] or subs[:max(1, len(subs) // 4)]
    prompts = prompts_for(chosen, cfg.budget)
    out = model.sample(prompts, seed=cfg.seed + 1)
    ok = judge_attempts(out, target, judge)
    return AttackResult("paraphrase", target, sum(ok) / len(ok), len(ok), 0.0, prompts, out, ok)
