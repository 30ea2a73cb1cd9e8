"""Every erase method on each concept kind of the world, audited against the base model.

    python benchmarks/erase.py [--methods ca,esd,uce,fmn,ga] [--out benchmarks/results/erase-v2.json]

Cells already in the results file are skipped, so an interrupted run resumes. `retrain` is
included only when named (it is a full training run per concept: ~50 min each on 2 cores) and
needs --data (the base model's training imagefolder). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import time

from cells import load_cells, pending, save_cells
from datarights.audit import AuditConfig, audit
from datarights.erase import erase
from datarights.judge import load_judge
from datarights.models import load_model
from datarights.quality import public

CONCEPTS = [  # (kind, target, anchor, set): CA's and ESD's defaults were tuned on the 'tuning' concepts
    ("object instance", "grumpy face", "face", "tuning"),
    ("style", "Ada Vell", "plain", "tuning"),
    ("object instance", "swordfish", "fish", "held out"),
    ("style", "Cleo Marr", "plain", "held out"),
    ("character", "Blubbo", "fish", "held out"),
    ("memorized image", "Rosa Villa postcard", "house", "held out"),
    ("composition", "face and tree", "face", "held out"),
]
AUDIT_SEED = 2
"""The defaults were tuned on audits with seed 1; every figure here is measured with seed 2 (other
noise, other prompt draws) on the held-out prompt half."""
# (row name, method, options): the paper's own choice for memorized images is full-weight CA.
VARIANTS = {
    "ca": ("ca", {}),
    "ca-noise": ("ca", {"loss": "noise"}),
    "ca-full": ("ca", {"params": "full", "lr": 1e-4}),
    "esd": ("esd", {}),
    "uce": ("uce", {}),
    "fmn": ("fmn", {}),
    "ga": ("ga", {}),
    "retrain": ("retrain", {}),
}
KEYS = ("verdict", "target_erased", "target_erased_seen", "degenerate_share", "anchor_fidelity", "nearby_preserved",
        "others_preserved", "kid", "seconds")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="ca,ca-noise,ca-full,esd,uce,fmn,ga")
    ap.add_argument("--concepts", default=",".join(c[1] for c in CONCEPTS))
    ap.add_argument("--data", default="", help="training imagefolder (retrain, and ga on training images)")
    ap.add_argument("--out", default="benchmarks/results/erase-v2.json")
    args = ap.parse_args()
    results = load_cells(args.out)
    base = load_model()
    judge = load_judge()
    base_images: dict = {}  # the base side of every audit of a concept is the same: generated once
    sets = {c[1]: c[3] for c in CONCEPTS}
    for row, kind, target, anchor, key in pending(results, args.methods.split(","), [c[:3] for c in CONCEPTS],
                                                  set(args.concepts.split(","))):
        method, opts = VARIANTS[row]
        if method == "retrain":
            opts = {"data": args.data}
        t0 = time.time()
        edit = erase(base, [target], [anchor], method, **opts)
        edited = edit.apply(base)
        r = public(audit(edited, base, target, anchor, AuditConfig(seed=AUDIT_SEED), judge=judge, cache=base_images))
        r["seconds"] = round(edit.seconds, 1)
        r["wall_s"] = round(time.time() - t0, 1)
        results["cells"][key] = {**r, "method": row, "kind": kind, "target": target, "anchor": anchor,
                                 "set": sets[target]}
        print(json.dumps({k: results["cells"][key].get(k) for k in ("method", "target", *KEYS)}), flush=True)
        save_cells(args.out, results)
    print(markdown(results))


def _ci(c: dict, key: str) -> str:
    from datarights.stats import fmt
    return fmt(c.get(key), c.get(f"{key}_ci") or [0, 0])


def markdown(results: dict) -> str:
    lines = ["| method | concept (kind; set) | verdict | target_erased | seen half | degenerate | anchor_fidelity | "
             "nearby_preserved | others_preserved | kid (±std) | seconds |", "|" + "---|" * 11]
    for key, c in results["cells"].items():
        lines.append(f"| {key.split('|')[0]} | {c['target']} ({c['kind']}; {c.get('set', '')}) | {c['verdict']} | "
                     f"{_ci(c, 'target_erased')} | {_ci(c, 'target_erased_seen')} | {_ci(c, 'degenerate_share')} | "
                     f"{_ci(c, 'anchor_fidelity')} | {_ci(c, 'nearby_preserved')} | {_ci(c, 'others_preserved')} | "
                     f"{c['kid']:.4f} ± {c['kid_std']:.4f} | {c['seconds']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
