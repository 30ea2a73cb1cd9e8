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
from .judge import Judge, load_judge
from .models import T2IModel
from .quality import judge_accuracy
from .world import sample_eval_prompts
from .world import vocab as V

CHECK_KEY = {"objects": "object", "categories": "object", "styles": "style", "characters": "character",
             "memorized": "memorized", "compositions": "composition"}


def label_check(concept: str) -> tuple[str, str]:
    """(judge label, value) that says an image shows the concept; categories mean their generic object."""
    if concept.strip().lower() == V.PLAIN_STYLE:
        return "style", V.PLAIN_STYLE
    found = V.find_concept(concept)
    if found is None:
        raise DatarightsError(f"{concept!r} is not in the world's vocabulary, so the world judge cannot score it "
                              "(see `datarights world info`)")
    return CHECK_KEY[found[0]], found[1]["name"]


def shows(rows: list[dict], concept: str) -> np.ndarray:
    key, value = label_check(concept)
    return np.array([r[key] == value for r in rows])


def kid(f1: torch.Tensor, f2: torch.Tensor, n_subsets: int = 20, subset_size: int = 50, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3), mean and std over subsets.

    Features are L2-normalised and scaled by sqrt(d) first, so x.y/d is a cosine whatever the
    encoder's scale (the judge's raw features are far from Inception's).
    """
    d = f1.shape[1]
    f1 = torch.nn.functional.normalize(f1.double(), dim=1) * d**0.5
    f2 = torch.nn.functional.normalize(f2.double(), dim=1) * d**0.5
    m = min(subset_size, len(f1), len(f2))
    g = torch.Generator(device="cpu").manual_seed(seed)
    f1, f2 = f1.cpu(), f2.cpu()
    vals = []
    for _ in range(n_subsets):
        x = f1[torch.randperm(len(f1), generator=g, device="cpu")[:m]]
        y = f2[torch.randperm(len(f2), generator=g, device="cpu")[:m]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
               - 2 * kxy.mean())
        vals.append(float(mmd))
    return float(np.mean(vals)), float(np.std(vals))


@dataclass
class AuditConfig:
    """How many images the audit generates for each prompt family."""

    n_target: int = 48
    """Images from target prompts."""
    n_nearby: int = 24
    """Images per nearby concept."""
    n_others: int = 96
    """Images from random other world prompts (also used for KID)."""
    n_anchor: int = 8
    """Images from anchor prompts (for the report)."""
    steps: int = 25
    """DDIM steps."""
    guidance: float | None = None
    """Classifier-free guidance scale (None: the model's default)."""
    seed: int = 1
    """Seed of prompts and noise (the same for edited and base)."""
    nearby: list = field(default_factory=list)
    """Nearby concepts; empty: those `world info` lists for the target."""


def _gen(model: T2IModel, prompts: list[str], cfg: AuditConfig, seed_offset: int, desc: str, progress: bool) -> torch.Tensor:
    bar = runtime.progress_bar(progress, len(prompts), desc)
    out = model.sample(prompts, seed=cfg.seed * 7919 + seed_offset, steps=cfg.steps, guidance=cfg.guidance,
                       callback=bar.update)
    bar.close()
    return out


def audit(edited: T2IModel, base: T2IModel, targets: list[str] | str, anchors: list[str] | str,
          cfg: AuditConfig | None = None, judge: Judge | None = None, log=None, progress: bool = True) -> dict:
    """Audit an edited model against its base for each target (figures averaged over targets).

    Returns target_erased, anchor_fidelity, nearby_preserved, others_preserved, kid (+ kid_std),
    the base's own rates for context, and the edit's seconds and changed_params where known.
    Private keys (`_grids`) carry the images for the HTML report.
    """
    cfg = cfg or AuditConfig()
    if judge is None and (edited.kind != "world" or base.kind != "world"):
        raise DatarightsError("the audit scores with the world judge, which reads world-model images only")
    judge = judge or load_judge()
    log = log or (lambda s: print(s, file=sys.stderr))
    targets = [targets] if isinstance(targets, str) else list(targets)
    anchors = [anchors] if isinstance(anchors, str) else list(anchors)
    if len(anchors) == 1:
        anchors = anchors * len(targets)
    t0 = time.time()
    per_target, grids = [], []
    for ti, (target, anchor) in enumerate(zip(targets, anchors)):
        label_check(target)
        found = V.find_concept(target)
        nearby = list(cfg.nearby) or list(found[1].get("nearby", []))
        for c in nearby:
            label_check(c)
        tp = concept_prompts(target, anchor, cfg.n_target, cfg.seed)
        t_prompts = [tp.target[i % len(tp.target)] for i in range(cfg.n_target)]
        a_prompts = [tp.anchor[i % len(tp.anchor)] for i in range(cfg.n_anchor)]
        n_prompts = [p for c in nearby for p in (prompts_showing(c, cfg.n_nearby, cfg.seed) * cfg.n_nearby)[:cfg.n_nearby]]
        n_concepts = [c for c in nearby for _ in range(cfg.n_nearby)]
        others = [o for o in sample_eval_prompts(cfg.n_others * 2, cfg.seed + ti)
                  if not any(o.get(k) == target for k in ("object", "style", "character", "memorized", "composition"))
                  and target.lower() not in o["text"].lower()][:cfg.n_others]
        o_prompts = [o["text"] for o in others]
        all_prompts = t_prompts + a_prompts + n_prompts + o_prompts
        log(f"audit: generating {len(all_prompts)} images from the edited and the base model ({target!r})")
        imgs = {name: _gen(m, all_prompts, cfg, ti, f"audit[{name}]", progress)
                for name, m in (("edited", edited), ("base", base))}
        reads = {k: judge.read(v) for k, v in imgs.items()}
        sl_t = slice(0, len(t_prompts))
        sl_a = slice(sl_t.stop, sl_t.stop + len(a_prompts))
        sl_n = slice(sl_a.stop, sl_a.stop + len(n_prompts))
        sl_o = slice(sl_n.stop, len(all_prompts))
        r_e, r_b = reads["edited"], reads["base"]
        target_present_e = shows(r_e[sl_t], target)
        target_present_b = shows(r_b[sl_t], target)
        anchor_e = shows(r_e[sl_t], anchor) if _known(anchor) else None

        def nearby_acc(rows):
            return float(np.mean([shows([r], c)[0] for r, c in zip(rows, n_concepts)])) if n_concepts else float("nan")

        def others_acc(rows):
            acc = judge_accuracy(others, rows)
            ok = [all(a[k] == r[k] for k in ("object", "color", "character", "memorized", "composition"))
                  and (a["kind"] != "styled" or a["style"] == r["style"]) for a, r in zip(others, rows)]
            return float(np.mean(ok)), acc

        nb_e, nb_b = nearby_acc(r_e[sl_n]), nearby_acc(r_b[sl_n])
        (ot_e, _), (ot_b, _) = others_acc(r_e[sl_o]), others_acc(r_b[sl_o])
        with torch.no_grad():
            fe, fb = judge.features(imgs["edited"][sl_o]), judge.features(imgs["base"][sl_o])
        k_mean, k_std = kid(fe, fb, seed=cfg.seed)
        per_target.append({
            "target": target, "anchor": anchor, "nearby": nearby,
            "target_erased": round(1 - float(target_present_e.mean()), 4),
            "anchor_fidelity": round(float(anchor_e.mean()), 4) if anchor_e is not None else None,
            "nearby_preserved": round(nb_e / nb_b, 4) if nb_b > 0 else None,
            "others_preserved": round(ot_e / ot_b, 4) if ot_b > 0 else None,
            "kid": round(k_mean, 5), "kid_std": round(k_std, 5),
            "base_target_present": round(float(target_present_b.mean()), 4),
            "nearby_acc_edited": round(nb_e, 4), "nearby_acc_base": round(nb_b, 4),
            "others_acc_edited": round(ot_e, 4), "others_acc_base": round(ot_b, 4),
            "n_target": len(t_prompts), "n_nearby": len(n_prompts), "n_others": len(o_prompts),
        })
        for title, sl, prompts in (("target prompts", sl_t, t_prompts), ("anchor prompts", sl_a, a_prompts),
                                   ("nearby prompts", sl_n, n_prompts), ("other prompts", sl_o, o_prompts)):
            k = min(16, sl.stop - sl.start)
            grids.append({"title": f"{target}: {title}", "prompts": prompts[:k],
                          "edited": imgs["edited"][sl][:k], "base": imgs["base"][sl][:k],
                          "read_edited": r_e[sl][:k], "read_base": r_b[sl][:k]})
    result = _combine(per_target)
    meta = edited.meta.get("edit", {})
    result.update(seconds=meta.get("seconds"), changed_params=meta.get("changed_params"),
                  method=meta.get("method"), audit_seconds=round(time.time() - t0, 1), seed=cfg.seed)
    if len(per_target) > 1:
        result["targets"] = per_target
    result["_grids"] = grids
    return result


def _known(concept: str) -> bool:
    try:
        label_check(concept)
        return True
    except DatarightsError:
        return False


def _combine(rows: list[dict]) -> dict:
    out = {}
    for k, v in rows[0].items():
        if isinstance(v, (int, float)) and all(isinstance(r[k], (int, float)) for r in rows):
            out[k] = round(float(np.mean([r[k] for r in rows])), 5)
        elif len(rows) == 1:
            out[k] = v
    return out


def audit_sections(result: dict) -> list[dict]:
    """Report sections: the figures, then before/after grids for target, anchor, nearby and other prompts."""
    from .judge import describe as label
    from .report import grid

    sections = [{"title": "Audit figures", "metrics": {k: v for k, v in result.items()
                                                       if not k.startswith("_") and not isinstance(v, (list, dict))}}]
    for g in result.get("_grids", []):
        sections.append({"title": g["title"], "grids": [
            grid("base model", g["base"], [f"{p} → {label(r)}" for p, r in zip(g["prompts"], g["read_base"])]),
            grid("edited model", g["edited"], [f"{p} → {label(r)}" for p, r in zip(g["prompts"], g["read_edited"])]),
        ]})
    return sections
