"""Attacks on erasure: erase methods (and the base model) x attacks -> attack success rate.

    python benchmarks/attack.py [--methods base,ca,esd,uce,fmn,ca-robust,esd-robust,stereo,mace] [--attacks udatk,ti,paraphrase,p4d]

For two object instances and two styles (one of each is the defaults' tuning set, the other held
out; `--concepts` adds erase.py's other held-out kinds: Blubbo, Rosa Villa postcard, face and tree): erase with each method (defaults; `-robust` = `--robust`), audit the edit against the base
(held-out prompts, seed 2), then run every attack on the edited model; ASR = share of the attack's
generated images that the judge labels with the target (Wilson interval), beside the plain
held-out prompt's rate on the same model and noise (the trivial baseline; `gain` = the difference).
`p4d` (Prompting4Debugging, union of its two variants, the world's cheap tier) counts only its ideal
prompts (base model unsafe, erased model safe on the plain prompt, same seed), as its authors do;
its `attempts` is their number and `ideal` says how many of its 16 held-out prompts they were.
Cells already in the output file (`--out`, default benchmarks/results/attack-v2.json) are skipped,
so an interrupted run resumes.
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

CONCEPTS = [("object instance", "grumpy face", "face"), ("style", "Ada Vell", "plain"),     # the defaults' tuning set
            ("object instance", "swordfish", "fish"), ("style", "Cleo Marr", "plain"),     # held out
            ("character", "Blubbo", "fish"), ("memorized image", "Rosa Villa postcard", "house"),
            ("composition", "face and tree", "face")]      # held out too: erase.py's five, for --concepts
GRID = ("grumpy face", "Ada Vell", "swordfish", "Cleo Marr")
"""The grid's default concepts (its reported cells); --concepts may name any of CONCEPTS."""
VARIANTS = {
    "base": None,
    "ca": ("ca", {}),
    "esd": ("esd", {}),
    "uce": ("uce", {}),
    "fmn": ("fmn", {}),
    "ca-robust": ("ca", {"robust": True}),
    "esd-robust": ("esd", {"robust": True}),
    "stereo": ("stereo", {}),
    "mace": ("mace", {}),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(VARIANTS))
    ap.add_argument("--attacks", default="udatk,ti,paraphrase,p4d")
    ap.add_argument("--concepts", default=",".join(GRID), help="comma-separated, among: " + ", ".join(c[1] for c in CONCEPTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/attack-v2.json")
    args = ap.parse_args()
    unknown = set(args.concepts.split(",")) - {c[1] for c in CONCEPTS}
    if unknown:
        raise SystemExit(f"--concepts: unknown {', '.join(sorted(unknown))}; choose among {', '.join(c[1] for c in CONCEPTS)}")
    results = load_cells(args.out)
    base = load_model()
    judge = load_judge()
    base_images: dict = {}
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
            r = public(audit(model, base, target, anchor, AuditConfig(seed=2), judge=judge, progress=False,
                             log=lambda s: None, cache=base_images))
            cell.update({k: r[k] for k in ("verdict", "target_erased", "target_erased_ci", "nearby_preserved",
                                           "nearby_preserved_ci", "others_preserved", "others_preserved_ci", "kid",
                                           "kid_std")},
                        erase_s=round(edit.seconds, 1), audit_s=round(time.time() - t0, 1))
        for a in args.attacks.split(","):
            res = attack(model, target, a, judge=judge, seed=args.seed, base=base).to_json()
            for k in ("asr", "asr_ci", "asr_plain", "asr_plain_ci", "gain", "attempts", "ideal", "broken_by_variant"):
                if k in res:
                    cell[f"{k}_{a}"] = res[k]
            cell[f"{a}_s"] = res["seconds"]
            cell[f"{a}_prompt"] = res["prompts"][0] if res["prompts"] else None
        results["cells"][key] = cell
        print(json.dumps(cell), flush=True)
        save_cells(args.out, results)
    print(markdown(results, args.attacks.split(",")))


def markdown(results: dict, attacks: list[str]) -> str:
    from datarights.stats import fmt

    head = ("| method | concept | " + " | ".join(f"ASR {a} (plain prompt)" for a in attacks)
            + " | verdict | target_erased | nearby_preserved | erase s |")
    lines = [head, "|" + "---|" * (len(attacks) + 6)]
    for c in results["cells"].values():
        asr = [(f"{fmt(c.get(f'asr_{a}'), c.get(f'asr_ci_{a}') or [0, 0])}"
                if c.get(f"attempts_{a}", 16) else "–")
               + (f" of {c[f'ideal_{a}']} ideal" if f"ideal_{a}" in c else "")
               + f" ({c.get(f'asr_plain_{a}', float('nan')):.2f})" for a in attacks]
        lines.append(f"| {c['method']} | {c['target']} ({c['kind']}) | " + " | ".join(asr)
                     + f" | {c.get('verdict', '–')} | {fmt(c.get('target_erased'), c.get('target_erased_ci') or [0, 0])} | "
                     f"{fmt(c.get('nearby_preserved'), c.get('nearby_preserved_ci') or [0, 0])} | {c.get('erase_s', '–')} |")
    return "\n".join(lines) + "\n\n" + pooled(results, attacks)


def pooled(results: dict, attacks: list[str]) -> str:
    """Per method and attack, the attempts of every concept pooled: ASR and the plain held-out prompt's
    rate on the same model and noise (Wilson intervals), so that a claim rests on 16 x concepts attempts."""
    from datarights.stats import fmt, wilson

    rows: dict[str, list[dict]] = {}
    for c in results["cells"].values():
        rows.setdefault(c["method"], []).append(c)
    head = "| method (concepts) | " + " | ".join(f"{a}: ASR / plain prompt" for a in attacks) + " |"
    lines = [head, "|" + "---|" * (len(attacks) + 1)]
    for method, cells in rows.items():
        out = []
        for a in attacks:
            cells_a = [c for c in cells if f"asr_{a}" in c]
            n = sum(c.get(f"attempts_{a}", 16) for c in cells_a)  # 16: the default budget (older cells)
            k = sum(round(c[f"asr_{a}"] * c.get(f"attempts_{a}", 16)) for c in cells_a)
            plain = [(round(c[f"asr_plain_{a}"] * 16), 16) for c in cells_a]   # the plain prompt: 16 images a cell
            kp, np_ = sum(x for x, _ in plain), sum(y for _, y in plain)
            out.append((f"{fmt(k / n, wilson(k, n))}" if n else "– (no ideal prompt)")
                       + (f" / {fmt(kp / np_, wilson(kp, np_))}" if np_ else ""))
        lines.append(f"| {method} ({len(cells)}) | " + " | ".join(out) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
