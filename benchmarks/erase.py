"""Every erase method on each concept kind of the world, audited against the base model.

    python benchmarks/erase.py [--methods ca,esd,uce,fmn,ga] [--out benchmarks/results/erase.json]

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

CONCEPTS = [
    ("object instance", "grumpy face", "face"),
    ("style", "Ada Vell", "plain"),
    ("character", "Blubbo", "fish"),
    ("memorized image", "Rosa Villa postcard", "house"),
    ("composition", "face and tree", "face"),
]
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
KEYS = ("target_erased", "anchor_fidelity", "nearby_preserved", "others_preserved", "kid", "seconds")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="ca,ca-noise,ca-full,esd,uce,fmn,ga")
    ap.add_argument("--concepts", default=",".join(c[1] for c in CONCEPTS))
    ap.add_argument("--data", default="", help="training imagefolder (retrain, and ga on training images)")
    ap.add_argument("--out", default="benchmarks/results/erase.json")
    args = ap.parse_args()
    results = load_cells(args.out)
    base = load_model()
    judge = load_judge()
    for row, kind, target, anchor, key in pending(results, args.methods.split(","), CONCEPTS,
                                                  set(args.concepts.split(","))):
        method, opts = VARIANTS[row]
        if method == "retrain":
            opts = {"data": args.data}
        t0 = time.time()
        edit = erase(base, [target], [anchor], method, **opts)
        edited = edit.apply(base)
        r = public(audit(edited, base, target, anchor, AuditConfig(), judge=judge))
        r["seconds"] = round(edit.seconds, 1)
        r["wall_s"] = round(time.time() - t0, 1)
        results["cells"][key] = {**r, "method": row, "kind": kind, "target": target, "anchor": anchor}
        print(json.dumps({k: results["cells"][key].get(k) for k in ("method", "target", *KEYS)}), flush=True)
        save_cells(args.out, results)
    print(markdown(results))


def _f(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def markdown(results: dict) -> str:
    lines = ["| method | concept (kind) | target_erased | anchor_fidelity | nearby_preserved | others_preserved | kid (±std) | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for key, c in results["cells"].items():
        lines.append(f"| {key.split('|')[0]} | {c['target']} ({c['kind']}) | {_f(c['target_erased'])} | {_f(c['anchor_fidelity'])} | "
                     f"{_f(c['nearby_preserved'])} | {_f(c['others_preserved'])} | {_f(c['kid'], '.4f')} ± {_f(c['kid_std'], '.4f')} | "
                     f"{_f(c['seconds'], '.1f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
