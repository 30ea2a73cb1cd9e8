"""Attacks on erasure: erase methods (and the base model) x attacks -> attack success rate.

    python benchmarks/attack.py [--methods base,ca,esd,uce,fmn,ca-robust,esd-robust] [--attacks udatk,ti,paraphrase]

For an object instance and a style: erase with each method (defaults; `-robust` = `--robust`),
audit the edit against the base (nearby_preserved, kid), then run every attack on the edited
model; ASR = share of the attack's generated images that the judge labels with the target.
Cells already in benchmarks/results/attack.json are skipped, so an interrupted run resumes.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import time

from cells import load_cells, pending, save_cells
from datarights.attack import attack
from datarights.audit import AuditConfig, audit
from datarights.erase import erase
from datarights.judge import load_judge
from datarights.models import load_model
from datarights.quality import public

CONCEPTS = [("object instance", "grumpy face", "face"), ("style", "Ada Vell", "plain")]
VARIANTS = {
    "base": None,
    "ca": ("ca", {}),
    "esd": ("esd", {}),
    "uce": ("uce", {}),
    "fmn": ("fmn", {}),
    "ca-robust": ("ca", {"robust": True}),
    "esd-robust": ("esd", {"robust": True}),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(VARIANTS))
    ap.add_argument("--attacks", default="udatk,ti,paraphrase")
    ap.add_argument("--concepts", default=",".join(c[1] for c in CONCEPTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/attack.json")
    args = ap.parse_args()
    results = load_cells(args.out)
    base = load_model()
    judge = load_judge()
    for row, kind, target, anchor, key in pending(results, args.methods.split(","), CONCEPTS,
                                                  set(args.concepts.split(","))):
        cell = {"method": row, "kind": kind, "target": target, "anchor": anchor}
        if VARIANTS[row] is None:
            model = base
        else:
            method, opts = VARIANTS[row]
            edit = erase(base, [target], [anchor], method, progress=False, **opts)
            model = edit.apply(base)
            t0 = time.time()
            r = public(audit(model, base, target, anchor, AuditConfig(), judge=judge, progress=False,
                             log=lambda s: None))
            cell.update({k: r[k] for k in ("target_erased", "nearby_preserved", "others_preserved", "kid", "kid_std")},
                        erase_s=round(edit.seconds, 1), audit_s=round(time.time() - t0, 1))
        for a in args.attacks.split(","):
            res = attack(model, target, a, judge=judge, seed=args.seed)
            cell[f"asr_{a}"] = res.asr
            cell[f"{a}_s"] = round(res.seconds, 1)
            cell[f"{a}_prompt"] = res.prompts[0] if res.prompts else None
        results["cells"][key] = cell
        print(json.dumps(cell), flush=True)
        save_cells(args.out, results)
    print(markdown(results, args.attacks.split(",")))


def _f(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def markdown(results: dict, attacks: list[str]) -> str:
    head = "| method | concept | " + " | ".join(f"ASR {a}" for a in attacks) + " | target_erased | nearby_preserved | kid | erase s |"
    lines = [head, "|" + "---|" * (len(attacks) + 6)]
    for c in results["cells"].values():
        lines.append(f"| {c['method']} | {c['target']} ({c['kind']}) | "
                     + " | ".join(_f(c.get(f"asr_{a}")) for a in attacks)
                     + f" | {_f(c.get('target_erased'))} | {_f(c.get('nearby_preserved'))} | {_f(c.get('kid'), '.4f')} | "
                     f"{_f(c.get('erase_s'), '.1f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
