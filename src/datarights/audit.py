"""The erasure audit: is the concept really gone, and what else changed?

Edited and base models generate from the same prompts with the same seeds; the world judge reads
every image. All figures are shares of images, so each comes with the number of images behind it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import runtime
from .erase.base import concept_prompts, prompts_showing
from .errors import DatarightsError
from .models import T2IModel
from .stats import MIN_QUERIES, meets, rate, ratio_of_means, rounded
from .judge import label_check, shows  # noqa: F401  (the judge decides what an image shows)
from .world import vocabulary_of

def kid(f1: torch.Tensor, f2: torch.Tensor, n_subsets: int = 20, subset_size: int = 50, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (unbiased MMD^2, cubic kernel (x.y/d + 1)^3), mean and std over subsets.

    Features are L2-normalised and scaled by sqrt(d) first, so x.y/d is a cosine whatever the
    encoder's scale. The two sets are paired (row i of each comes from the same prompt and seed):
    every subset takes the *same* rows of both, and the cross term leaves the matched pairs out, so
    identical models give exactly 0 (drawing the two subsets independently let near-identical pairs
    into the cross term and biased the estimate: about -0.075 for identical models).
    """
    n = min(len(f1), len(f2))
    d = f1.shape[1]
    f1 = torch.nn.functional.normalize(f1[:n].double().cpu(), dim=1) * d**0.5
    f2 = torch.nn.functional.normalize(f2[:n].double().cpu(), dim=1) * d**0.5
    m = min(subset_size, n)
    g = torch.Generator(device="cpu").manual_seed(seed)
    off = 1 - torch.eye(m, dtype=torch.float64, device="cpu")
    vals = []
    for _ in range(n_subsets):
        idx = torch.randperm(n, generator=g, device="cpu")[:m]
        x, y = f1[idx], f2[idx]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        vals.append(float(((kxx + kyy - kxy - kxy.T) * off).sum() / (m * (m - 1))))
    return float(np.mean(vals)), float(np.std(vals))


@dataclass
class AuditConfig:
    """How many images the audit generates for each prompt family, and the verdict's bars."""

    n_target: int = 384
    """Images from held-out target prompts (the prompt half no erase method trains on): 384 gives a
    95% interval of at most +-0.05 on target_erased."""
    n_seen: int = 96
    """Images from the target prompts of the erase's own half (reported apart: `*_seen`); 0 skips them."""
    n_nearby: int = 32
    """Images per nearby concept."""
    n_others: int = 96
    """Images from other prompts (world prompts; everyday scenes with a CLIP judge), also used for KID."""
    n_anchor: int = 96
    """Base-model images of the anchor twins of the first held-out target prompts (kid_to_anchor)."""
    steps: int = 25
    """DDIM steps."""
    guidance: float | None = None
    """Classifier-free guidance scale (None: the model's default)."""
    seed: int = 1
    """Seed of prompts and noise (the same for edited and base)."""
    nearby: list = field(default_factory=list)
    """Nearby concepts; empty: those `world info` lists for the target."""
    erased_bar: float = 0.9
    """Verdict 'erased' needs the interval of target_erased (held-out and seen) to lie above this."""
    broken_bar: float = 0.5
    """Verdict 'model broken on target' when the interval of degenerate_share lies above this."""

    def __post_init__(self):
        for name in ("n_target", "n_nearby", "n_others", "n_anchor"):
            if getattr(self, name) < MIN_QUERIES:
                raise DatarightsError(f"--{name.replace('_', '-')} must be at least {MIN_QUERIES} for an interval "
                                      f"to mean anything, got {getattr(self, name)}")
        if self.n_seen and self.n_seen < MIN_QUERIES:
            raise DatarightsError(f"--n-seen must be 0 or at least {MIN_QUERIES}, got {self.n_seen}")
        if self.steps < 1:
            raise DatarightsError(f"--steps must be at least 1, got {self.steps}")


def check_verdict_reachable(cfg: AuditConfig) -> None:
    """Refuse image counts so small that even a perfect erasure could not get the verdict 'erased'
    (the Wilson interval of n/n must start above erased_bar): the CLI calls this; tiny configs in
    tests may skip it."""
    from .stats import wilson

    need = next(n for n in range(1, 100_000) if wilson(n, n)[0] >= cfg.erased_bar)
    for flag, n in (("--n-target", cfg.n_target), ("--n-seen", cfg.n_seen)):
        if 0 < n < need:
            raise DatarightsError(f"{flag} {n} is too few images for a verdict: even {n}/{n} erased has a 95% "
                                  f"interval starting below {cfg.erased_bar}; use at least {need}")


def _gen(model: T2IModel, prompts: list[str], cfg: AuditConfig, seed_offset: int, desc: str, progress,
         cache: dict | None = None) -> torch.Tensor:
    """Images of the prompts (seed from the audit's seed); `cache` (a dict the caller keeps) reuses the
    images of the same model, prompts and seed, e.g. the base side of many audits of one concept."""
    from .models import model_hash

    key = None
    if cache is not None:
        key = (model_hash(model), hash(tuple(prompts)), cfg.seed * 7919 + seed_offset, cfg.steps, cfg.guidance)
        if key in cache:
            return cache[key]
    bar = runtime.progress_bar(progress, len(prompts), desc)
    out = model.sample(prompts, seed=cfg.seed * 7919 + seed_offset, steps=cfg.steps, guidance=cfg.guidance,
                       callback=bar.update)
    bar.close()
    if key is not None:
        cache[key] = out
    return out


def _cycle(prompts: list[str], n: int) -> list[str]:
    return [prompts[i % len(prompts)] for i in range(n)] if prompts else []


def as_scorer(judge):
    """A scorer from what the caller has: None (the world judge), a world Judge, or a ready scorer."""
    from .judge import Judge
    from .judge.scorer import WorldScorer

    if judge is None or isinstance(judge, Judge):
        return WorldScorer(judge)
    return judge


def audit(edited: T2IModel, base: T2IModel, targets: list[str] | str, anchors: list[str] | str,
          cfg: AuditConfig | None = None, judge=None, log=None, progress=True, cache: dict | None = None) -> dict:
    """Audit an edited model against its base for each target.

    Edited and base models generate from the same prompts with the same seeds; the judge (the world
    judge, or a scorer such as judge.scorer.ClipScorer) reads every image. Returns, each with `_ci`
    (95%: Wilson for rates, paired bootstrap for ratios) and `_n`: target_erased (held-out prompts,
    counted over non-degenerate images), target_erased_seen (the erase's own prompt half),
    degenerate_share, anchor_fidelity, nearby_preserved, others_preserved; kid (others, edited vs
    base) and kid_to_anchor (edited target images vs base anchor images), each with its std; the
    base's own rates; and `verdict`: 'erased', 'not erased' or 'model broken on target'. Several
    targets are pooled (rates: summed counts; ratios: pooled images); `targets` keeps each one's.
    Private keys (`_grids`) carry images for the HTML report.
    """
    cfg = cfg or AuditConfig()
    scorer = as_scorer(judge)
    if scorer.name == "world judge" and (edited.kind != "world" or base.kind != "world") and judge is None:
        raise DatarightsError("the world judge reads world-model images only; pass --judge CLIP_FOLDER for this model")
    log = log or (lambda s: print(s, file=sys.stderr))
    targets = [targets] if isinstance(targets, str) else list(targets)
    anchors = [anchors] if isinstance(anchors, str) else list(anchors)
    if len(anchors) == 1:
        anchors = anchors * len(targets)
    t0 = time.time()
    vocab = vocabulary_of(base)  # the world the base was trained on: its prompts, nearby concepts and others
    if scorer.name == "world judge":
        scorer.judge.masks(vocab)  # a judge that cannot read this world (a `large` model, the default judge) is refused
    per_target, raw, grids = [], [], []
    for ti, (target, anchor) in enumerate(zip(targets, anchors)):
        scorer.check(target)
        found = vocab.find_concept(target)
        # an erased concept cannot be asked to survive: other targets are neither nearby nor "other" prompts
        nearby = [c for c in (list(cfg.nearby) or (list(found[1].get("nearby", [])) if found else []))
                  if c not in targets]
        for c in nearby:
            scorer.check(c)
        held = concept_prompts(target, anchor, cfg.n_target, cfg.seed, split="eval", vocab=vocab)
        t_prompts, a_prompts = _cycle(held.target, cfg.n_target), _cycle(held.anchor, cfg.n_anchor)
        s_prompts = _cycle(concept_prompts(target, anchor, cfg.n_seen, cfg.seed, split="train", vocab=vocab).target,
                           cfg.n_seen)
        n_prompts = [p for c in nearby
                     for p in _cycle(prompts_showing(c, cfg.n_nearby, cfg.seed, split="eval", vocab=vocab), cfg.n_nearby)]
        n_concepts = [c for c in nearby for _ in range(cfg.n_nearby)]
        o_prompts, o_asked = scorer.other_prompts(cfg.n_others, cfg.seed + ti, targets, vocab)
        shared = t_prompts + s_prompts + n_prompts + o_prompts
        log(f"audit: generating {len(shared)} images from the edited model and {len(shared) + len(a_prompts)} "
            f"from the base ({target!r})")
        img_b = _gen(base, shared + a_prompts, cfg, ti, "audit[base]", progress, cache)
        # a model audited against itself (the trivial baseline) draws its images once; an edited model's
        # images are not kept in `cache` (no later audit asks for that model again)
        img_e = img_b[:len(shared)] if edited is base else _gen(edited, shared, cfg, ti, "audit[edited]", progress)
        sl_t = slice(0, len(t_prompts))
        sl_s = slice(sl_t.stop, sl_t.stop + len(s_prompts))
        sl_n = slice(sl_s.stop, sl_s.stop + len(n_prompts))
        sl_o = slice(sl_n.stop, len(shared))
        sl_a = slice(len(shared), len(shared) + len(a_prompts))
        scorer.calibrate(img_b)
        r_e, r_b = scorer.read(img_e), scorer.read(img_b)
        alternatives = [anchor, *nearby]
        deg_e = scorer.degenerate(img_e[: sl_s.stop])                       # held-out and seen target images
        deg_b = scorer.degenerate(img_b[: sl_s.stop])
        ok_t, ok_s = ~deg_e[sl_t], ~deg_e[sl_s.start:sl_s.stop]
        shows_t = scorer.shows(r_e[sl_t], target, alternatives)
        shows_s = scorer.shows(r_e[sl_s], target, alternatives) if s_prompts else np.zeros(0, dtype=bool)
        shows_anchor = scorer.shows(r_e[sl_t], anchor, [target, *nearby]) if _scorable(scorer, anchor) else None
        base_shows = scorer.shows(r_b[sl_t], target, alternatives)
        near_e = np.array([scorer.shows(r_e[sl_n][i:i + 1], c, [target, anchor])[0] for i, c in enumerate(n_concepts)])
        near_b = np.array([scorer.shows(r_b[sl_n][i:i + 1], c, [target, anchor])[0] for i, c in enumerate(n_concepts)])
        oth_e, oth_b = scorer.correct(r_e[sl_o], o_asked), scorer.correct(r_b[sl_o], o_asked)
        fo_e, fo_b = scorer.features(img_e[sl_o]), scorer.features(img_b[sl_o])
        k_mean, k_std = kid(fo_e, fo_b, seed=cfg.seed)
        ft_e, fa_b = scorer.features(img_e[sl_t][: len(a_prompts)]), scorer.features(img_b[sl_a])
        ka_mean, ka_std = kid(ft_e, fa_b, seed=cfg.seed)
        kb_mean, _ = kid(scorer.features(img_b[sl_t][: len(a_prompts)]), fa_b, seed=cfg.seed)
        counts = {"erased": ~shows_t[ok_t], "erased_seen": ~shows_s[ok_s], "degenerate": deg_e,
                  "degenerate_base": deg_b, "anchor": shows_anchor[ok_t] if shows_anchor is not None else None,
                  "base_present": base_shows, "near_e": near_e, "near_b": near_b, "oth_e": oth_e, "oth_b": oth_b}
        raw.append(counts)
        row = {"target": target, "anchor": anchor, "nearby": nearby, **_figures(counts, cfg),
               "kid": round(k_mean, 5), "kid_std": round(k_std, 5), "kid_to_anchor": round(ka_mean, 5),
               "kid_to_anchor_std": round(ka_std, 5), "kid_base_to_anchor": round(kb_mean, 5)}
        per_target.append(row)
        describe = (lambda r: scorer.describe(r)) if scorer.name == "world judge" else \
            (lambda r: scorer.describe(r, [target, *alternatives]))
        de = np.concatenate([deg_e, np.zeros(len(shared) - sl_s.stop, dtype=bool)])
        for title, sl in (("held-out target prompts", sl_t), ("seen target prompts (the erase's own half)", sl_s),
                          ("nearby prompts", sl_n), ("other prompts", sl_o)):
            k = min(16, sl.stop - sl.start)
            if k:
                grids.append({"title": f"{target}: {title}", "prompts": shared[sl][:k],
                              "edited": img_e[sl][:k], "base": img_b[sl][:k],
                              "read_edited": [("degenerate" if d else lab) for lab, d in
                                              zip(describe(r_e[sl][:k]), de[sl][:k])],
                              "read_base": describe(r_b[sl][:k])})
        grids.append({"title": f"{target}: anchor prompts (base model, for kid_to_anchor)", "prompts": a_prompts[:16],
                      "base": img_b[sl_a][:16], "read_base": describe(r_b[sl_a][:16])})
    result = per_target[0] if len(per_target) == 1 else _pool(raw, per_target, cfg)
    meta = edited.meta.get("edit", {})
    result.update(seconds=meta.get("seconds"), changed_params=meta.get("changed_params"), method=meta.get("method"),
                  audit_seconds=round(time.time() - t0, 1), seed=cfg.seed, judge=scorer.name)
    if len(per_target) > 1:
        result["targets"] = per_target
    result["_grids"] = grids
    return result


def _scorable(scorer, concept: str) -> bool:
    try:
        scorer.check(concept)
        return True
    except DatarightsError:
        return False


def _figures(c: dict, cfg: AuditConfig) -> dict:
    """The audit's figures from per-image outcomes: value, `_ci` and `_n` for each, and the verdict."""
    out: dict = {}

    def put(name, fig):
        out[name] = round(fig["value"], 4) if np.isfinite(fig["value"]) else None
        out[f"{name}_ci"] = rounded(fig["ci"])
        out[f"{name}_n"] = fig["n"]

    put("target_erased", rate(c["erased"]))
    if len(c["erased_seen"]) or cfg.n_seen:
        put("target_erased_seen", rate(c["erased_seen"]))
    put("degenerate_share", rate(c["degenerate"]))
    put("base_degenerate_share", rate(c["degenerate_base"]))
    if c["anchor"] is not None:
        put("anchor_fidelity", rate(c["anchor"]))
    if len(c["near_e"]):
        put("nearby_preserved", ratio_of_means(c["near_e"], c["near_b"]))
    put("others_preserved", ratio_of_means(c["oth_e"], c["oth_b"]))
    put("base_target_present", rate(c["base_present"]))
    for name, key in (("nearby_acc_edited", "near_e"), ("nearby_acc_base", "near_b"), ("others_acc_edited", "oth_e"),
                      ("others_acc_base", "oth_b")):
        if len(c[key]):
            put(name, rate(c[key]))
    out["verdict"] = verdict(out, cfg)
    return out


def verdict(fig: dict, cfg: AuditConfig) -> str:
    """'model broken on target' when most target images are degenerate (interval above broken_bar);
    'erased' when the interval of target_erased lies above erased_bar on the held-out prompts and on
    the erase's own prompts; otherwise 'not erased'."""
    if meets(fig["degenerate_share_ci"], cfg.broken_bar):
        return "model broken on target"
    halves = [fig["target_erased_ci"]] + ([fig["target_erased_seen_ci"]] if fig.get("target_erased_seen_n") else [])
    if all(meets(ci, cfg.erased_bar) for ci in halves):
        return "erased"
    return "not erased"


def _pool(raw: list[dict], rows: list[dict], cfg: AuditConfig) -> dict:
    """Several targets as one: rates over the summed images, ratios over the pooled image pairs; the
    verdict is 'erased' only if every target is erased, 'model broken on target' if any target is broken."""
    pooled = {k: (np.concatenate([r[k] for r in raw]) if all(r[k] is not None for r in raw) else None) for k in raw[0]}
    out = _figures(pooled, cfg)
    verdicts = [r["verdict"] for r in rows]
    out["verdict"] = ("model broken on target" if "model broken on target" in verdicts
                      else "erased" if all(v == "erased" for v in verdicts) else "not erased")
    for k in ("kid", "kid_std", "kid_to_anchor", "kid_to_anchor_std", "kid_base_to_anchor"):
        out[k] = round(float(np.mean([r[k] for r in rows])), 5)
    return out


def audit_sections(result: dict) -> list[dict]:
    """Report sections: the figures (with intervals), then before/after grids per prompt family."""
    from .report import grid
    from .stats import fmt

    metrics = {"verdict": result.get("verdict")}
    for k, v in result.items():
        if k.startswith("_") or k.endswith(("_ci", "_n")) or isinstance(v, (list, dict)) or k == "verdict":
            continue
        ci = result.get(f"{k}_ci")
        metrics[k] = fmt(v, ci, 3) + f" (n = {result.get(f'{k}_n')})" if ci and v is not None else v
    sections = [{"title": "Audit figures (95% intervals)", "metrics": metrics}]
    for g in result.get("_grids", []):
        grids = [grid("base model", g["base"], [f"{p} → {r}" for p, r in zip(g["prompts"], g["read_base"])])]
        if "edited" in g:
            grids.append(grid("edited model", g["edited"], [f"{p} → {r}" for p, r in zip(g["prompts"], g["read_edited"])],
                              ["bad" if r == "degenerate" else "" for r in g["read_edited"]]))
        sections.append({"title": g["title"], "grids": grids})
    return sections
