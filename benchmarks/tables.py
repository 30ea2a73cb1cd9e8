"""BENCHMARKS.md's tables, printed as markdown from a results file, so that every figure there can be
regenerated from the JSON it came from.

    python benchmarks/tables.py counterfactual ~/.cache/datarights/benchmark/cf-image/results.json
    python benchmarks/tables.py owners-paired benchmarks/results/attribute-owners-rerank.json \
        --with benchmarks/results/attribute-owners.json

A run folder's own results.json serves too while the run is under way: a method is printed with the
queries it has so far (BENCHMARKS reports a method only once it has all of them).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _ci(c, d=4) -> str:
    if not c or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in c):
        return "–"
    return f"[{c[0]:.{d}f}, {c[1]:.{d}f}]"


def counterfactual(results: dict) -> str:
    """Per method (against random removals), method against method, and pixel MSE by kind of query."""
    import numpy as np

    from datarights.evaluate.counterfactual import _per_query, pairwise, summarize
    from datarights.evaluate.runs import QUERY_SEED, _query_asks
    from datarights.world import WorldConfig

    rows = summarize(results)
    order = ["concept oracle", "oracle", "shuffled oracle"] + list(results.get("config", {}).get("methods", []))
    rank = {m: i for i, m in enumerate(order)}
    out = ["| method | queries (concepts) | pixel MSE | × random (by query) | by concept | judge-feature distance "
           "| × random | loss rise − random (by query) | by concept | label flips |", "|---|" + "---|" * 9]
    for s in sorted(rows, key=lambda s: rank.get(s["method"], len(rank))):
        flips = f"{s['flip_rate']:.2f} {_ci(s['flip_rate_ci'], 2)}"
        mse = f"{s['mse']:.4f} {_ci(s['mse_ci'])}"
        feat = f"{s['feature_distance']:.3f} {_ci(s['feature_distance_ci'], 3)}"
        if s["method"] == "random":
            out.append(f"| random {s['k']} ({s['cells'] // s['queries']} draws) | {s['queries']} ({s.get('concepts')}) "
                       f"| {mse} | 1 | – | {feat} | 1 | 0 | – | {flips} |")
            continue
        out.append(f"| `{s['method']}` | {s['queries']} ({s.get('concepts')}) | {mse} "
                   f"| {s['mse_vs_random']:.2f} {_ci(s['mse_vs_random_ci'], 2)} | {_ci(s.get('mse_vs_random_ci_concepts'), 2)} "
                   f"| {feat} | {s['feature_distance_vs_random']:.2f} {_ci(s['feature_distance_vs_random_ci'], 2)} "
                   f"| {s['loss_rise_minus_random']:+.4f} {_ci(s['loss_rise_minus_random_ci'])} "
                   f"| {_ci(s.get('loss_rise_minus_random_ci_concepts'))} | {flips} |")
    pairs = [p for p in pairwise(results) if "mse_a_over_b" in p]
    if pairs:
        out += ["", "| a vs b | queries (concepts) | pixel MSE a / b | by concept | a larger | loss rise a − b "
                "| by concept | a larger |", "|---|" + "---|" * 7]
        for p in pairs:
            out.append(f"| `{p['a']}` vs `{p['b']}` | {p['queries']} ({p.get('concepts')}) "
                       f"| {p['mse_a_over_b']:.2f} {_ci(p['mse_a_over_b_ci'], 2)} | {_ci(p.get('mse_a_over_b_ci_concepts'), 2)} "
                       f"| {p['mse_a_wins']}/{p['queries']} | {p['loss_rise_a_minus_b']:+.4f} {_ci(p['loss_rise_a_minus_b_ci'])} "
                       f"| {_ci(p.get('loss_rise_a_minus_b_ci_concepts'))} | {p['loss_rise_a_wins']}/{p['queries']} |")
    cfg = results["config"]
    if results.get("concepts"):  # given queries carry no world kind
        return "\n".join(out)
    vocab = WorldConfig(preset=cfg["world_preset"], n_images=cfg["world_images"], seed=cfg["seed"]).vocabulary()
    kinds = [a["kind"] for a in _query_asks(cfg["queries"], cfg["seed"] + QUERY_SEED, vocab)]
    names = sorted(set(kinds), key=kinds.index)
    out += ["", "| pixel MSE by kind | " + " | ".join(f"{k} ({kinds.count(k)})" for k in names) + " |",
            "|---|" + "---|" * len(names)]
    for (method, k), per in sorted(_per_query(results).items(), key=lambda x: rank.get(x[0][0], len(rank))):
        cells = []
        for kind in names:
            v = [np.mean([c["mse"] for c in per[q]]) for q in per if kinds[q] == kind]
            cells.append(f"{np.mean(v):.4f} ({len(v)})" if v else "–")
        out.append(f"| {method} (k = {k}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def owners_paired(results: dict) -> str:
    """Owner shares, method against method on the same report queries (paired per query, intervals
    clustered by owner): every method of the file, and with --with another owner run's methods too
    (the same queries picked again from the same seeds: each query's owner must agree)."""
    import numpy as np

    from datarights.stats import bootstrap

    cells = {m: {(c["group"], c["query"]): c for c in rows if c["group"] == "report"}
             for m, rows in results["cells"].items()}
    ref = next(iter(cells.values()))
    for m, rows in (results.get("_with") or {}).get("cells", {}).items():
        if m in cells:
            continue
        other = {(c["group"], c["query"]): c for c in rows if c["group"] == "report"}
        if set(other) != set(ref) or any(other[k]["owner"] != ref[k]["owner"] for k in ref):
            raise SystemExit(f"--with: {m}'s report queries are not this run's (other owners or queries)")
        cells[m] = other
    methods = list(cells)
    out = ["| method | minus | share difference (paired, by owner) | queries |", "|---|---|---|---|"]
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            keys = sorted(cells[a])
            d = np.array([cells[a][k]["share"] - cells[b][k]["share"] for k in keys])
            ci = bootstrap(lambda idx: float(d[idx].mean()), len(d), groups=[cells[a][k]["owner"] for k in keys])
            out.append(f"| `{a}` | `{b}` | {d.mean():+.3f} {_ci(ci, 3)} | {len(d)} |")
    return "\n".join(out)


TABLES = {"counterfactual": counterfactual, "owners-paired": owners_paired}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=sorted(TABLES))
    ap.add_argument("results", type=Path, help="a benchmark's results file, or a run folder's results.json")
    ap.add_argument("--with", dest="other", type=Path, default=None,
                    help="owners-paired: another owner run's results file whose methods join the comparison")
    args = ap.parse_args()
    results = json.loads(args.results.read_text())
    if args.other:
        results["_with"] = json.loads(args.other.read_text())
    print(TABLES[args.part](results))


if __name__ == "__main__":
    main()
