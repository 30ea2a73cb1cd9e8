"""Owner-level evaluation of attribution on generic queries whose source owner is known by construction.

World 2's generations of generic prompts ("a fish", "a red house", "a tree and a house") carry their
source's trace, which the judge reads (`judge.provenance`): the photographer whose signature it
bears, the artist whose style, the studio whose character, the publisher whose scene. The prompt
names none of them, so a method that only matches words can do no better than the *count prior*:
the owner's share of the training images of the subject the prompt asks for. For every method and
trivial baseline this measures, per query:

- the owner share it gives the true source owner, and the rank of that owner among all owners;
- its lift over the caption-only baseline and over the count prior (paired differences per query).

Queries are chosen from many generations (a seeded round-robin over source owners, at most
`max_per_owner` each, so that no big owner dominates); owner-share temperatures are fitted on the
*tune* queries (one half of the prompt templates, their own seeds) and everything is reported on
the *report* queries (the other half, other seeds). Every mean has a bootstrap interval over
queries and two clustered ones, resampling whole owners and whole subjects. A control group of
queries that credit their photographer in the prompt ("..., photo by NAME") is reported apart:
there the caption *should* win. Scores and queries are kept in the run folder, so a run resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import DatarightsError
from ..files import atomic_file, read_json_file, write_json
from ..stats import mean_ci, rounded, wilson
from ..world.vocab import CREDIT, Vocabulary
from .provenance import generic_prompts, read_sources, subject_counts, vocabulary_of
from .runs import check_methods, method_variant, open_run

BASELINES = ("uniform", "count prior", "random")
"""Trivial baselines beside every method: uniform scores (each owner's share is its share of the
training set), the count prior (its share of the training images of the query's subject), and
random scores (standard normal, at the caption baseline's temperature)."""


REUSABLE = ("methods",)
"""Config fields a run folder may be resumed with other values of: each method's scores are a file of
their own, so a resumed run scores only the methods it has not (and reports the ones it is given)."""

PARTIAL_AFTER_SECONDS = 5.0
"""A method slower than this per query keeps its scores every 4 queries, so an interrupted run resumes mid-method."""


@dataclass
class OwnerEvalConfig:
    """An owner-level evaluation run."""

    methods: list = field(default_factory=lambda: ["caption", "pixel", "feature", "trak", "dtrak", "jtrak", "kfac",
                                                   "ekfac", "abu-fast", "abu"])
    """Attribution methods, scored in this order (cheap first; the trivial baselines are always added)."""
    queries: int = 64
    """Report queries (generic prompts; the 'report' half of the templates)."""
    tune_queries: int = 32
    """Queries the owner-share temperatures are fitted on (the 'tune' half, other seeds)."""
    control_queries: int = 16
    """Queries whose prompt credits the photographer (the control group), reported apart."""
    candidates: int = 768
    """Generations per split that queries are chosen from."""
    max_per_owner: int = 3
    """At most this many queries per source owner."""
    seed: int = 0
    """Seed of the report candidates (tune: seed + 1000, control: seed + 2000)."""
    steps: int = 25
    """DDIM steps of every generation."""
    random_draws: int = 4
    """Draws of random scores per query (the random baseline is their mean)."""

    def __post_init__(self):
        check_methods(self.methods)
        if self.queries < 16 or self.tune_queries < 1 or self.control_queries < 0:
            raise DatarightsError("an owner evaluation needs at least 16 report queries and 1 tune query")
        if self.max_per_owner < 1 or self.candidates < self.queries or self.random_draws < 1:
            raise DatarightsError("max_per_owner and random_draws must be at least 1, candidates at least queries")


def _file_name(method: str) -> str:
    """A method (or variant, 'abu-fast:rerank=500') as a file name on every system."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", method)


def pick_queries(rows: list[dict], n: int, max_per_owner: int, seed: int) -> list[int]:
    """Indices of up to n generations with a known source owner: owners in a seeded order, taken in
    turn (round-robin), at most `max_per_owner` generations each, so the queries spread over owners."""
    rng = np.random.default_rng(seed)
    by_owner: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["source_owner"] is not None:
            by_owner.setdefault(r["source_owner"], []).append(i)
    owners = sorted(by_owner)
    owners = [owners[i] for i in rng.permutation(len(owners))]
    picked: list[int] = []
    for turn in range(max_per_owner):
        for o in owners:
            if len(picked) < n and turn < len(by_owner[o]):
                picked.append(by_owner[o][turn])
    return picked


def _queries(model, judge, vocab: Vocabulary, split: str, n: int, cfg: OwnerEvalConfig, seed: int,
             credit: bool = False) -> tuple[torch.Tensor, list[dict]]:
    """Generate candidates from generic prompts of the split (with the control group's credit when
    `credit`), read their sources, and pick the queries."""
    if credit:
        control = [name for name, p in vocab.photographers.items() if p["control"]]
        if not control:
            return torch.zeros(0, 3, model.resolution, model.resolution), []
        pool = generic_prompts(4 * cfg.candidates, seed, vocab, split)
        prompts = []
        for i in range(cfg.candidates // 2):  # each photographer in turn, on a subject it photographs
            name = control[i % len(control)]
            j = next((j for j, p in enumerate(pool) if p["subject"] in vocab.photographers[name]["subjects"]), None)
            if j is None:
                break
            p = pool.pop(j)
            prompts.append({**p, "text": p["text"] + CREDIT.format(name=name), "credited": name})
    else:
        prompts = generic_prompts(cfg.candidates, seed, vocab, split)
    images = model.sample([p["text"] for p in prompts], seed=seed, steps=cfg.steps)
    rows = read_sources(judge, images, vocab)
    if credit:  # a control query is one where the judge reads the credited photographer's own signature
        rows = [r if r["source_owner"] == p["credited"] else {**r, "source_owner": None} for r, p in zip(rows, prompts)]
    idx = pick_queries(rows, n, cfg.max_per_owner, seed)
    meta = [{"prompt": prompts[i]["text"], "subject": prompts[i]["subject"], "owner": rows[i]["source_owner"],
             "kind": rows[i]["source_kind"], "trace": rows[i]["source_trace"]} for i in idx]
    return images[idx], meta


def query_hash(image: torch.Tensor, prompt: str) -> str:
    """Content hash of a query (its pixels and prompt): what its scores depend on besides the model,
    the training set and the method's config."""
    h = hashlib.sha256(image.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(prompt.encode())
    return h.hexdigest()[:24]


def reusable_scores(runs, made_with: dict, configs: dict) -> dict[str, dict[str, torch.Tensor]]:
    """{method: {query hash: scores}} from earlier runs of the same model and training set, for the
    methods whose recorded result config equals `configs[method]`: a run with another judge (whose
    queries are partly the same generations) scores only the queries it does not share."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for old in runs:
        old = Path(old)
        res = read_json_file(old / "results.json", "run results")
        if {k: res.get(k) for k in made_with} != made_with:
            raise DatarightsError(f"{old} holds a run of another model or training set; its scores cannot be reused")
        images = load_file(old / "queries.safetensors")
        metas = read_json_file(old / "queries.json", "queries")
        keys = {f"{g}/{q}": query_hash(images[g][q], m["prompt"]) for g in metas for q, m in enumerate(metas[g])}
        for method, c in configs.items():
            path = old / "scores" / f"{_file_name(method)}.safetensors"
            if res.get("method_configs", {}).get(method) != c or not path.exists():
                continue
            for k, v in load_file(path).items():
                out.setdefault(method, {})[keys[k]] = v
    return out


def owner_eval(cfg: OwnerEvalConfig, model, train, judge, run: str | Path, cache=None,
               log=lambda s: print(s, file=sys.stderr), reuse=()) -> dict:
    """Run (or resume) the evaluation in folder `run` against `train` (a TrainingSet of the model's
    world); returns the results (also in run/results.json). `reuse`: earlier run folders of the same
    model and training set whose scores of the same queries (by content) and method configs are
    taken instead of recomputed."""
    from ..attribute import Query, attribute, fit_temperature, make_config, result_config
    from ..models import model_hash

    run = Path(run)
    made_with = {"model": model_hash(model), "data": train.hash}
    results, res_path = open_run(run, cfg, {}, reusable=REUSABLE, made_with=made_with)
    # each method's result config, checked and recorded before any query is made: scores kept from
    # another config of a method would be reported as this one's
    variants = {m: method_variant(m) for m in cfg.methods}              # name -> (method, its config options)
    method_cfgs = {m: make_config(name, **opts) for m, (name, opts) in variants.items()}
    configs = {m: json.loads(json.dumps(result_config(method_cfgs[m]), default=str)) for m in cfg.methods}
    for m, c in configs.items():
        made = results.get("method_configs", {}).get(m)
        kept = [run / "scores" / f"{_file_name(m)}{ext}" for ext in (".safetensors", ".partial.safetensors")]
        if made is not None and made != c and any(p.exists() for p in kept):
            raise DatarightsError(f"{run} holds {m} scores made with another {m} config; use a new folder")
    results["method_configs"] = {**results.get("method_configs", {}), **configs}
    write_json(res_path, results)  # the config is on disk before any query or score
    vocab = vocabulary_of(train.folder)
    t0 = time.time()
    # 1. queries (kept: the same images on resume)
    if not (run / "queries.safetensors").exists():
        log("owners: generating candidates and choosing queries (tune, report, control)")
        parts = {"tune": _queries(model, judge, vocab, "tune", cfg.tune_queries, cfg, cfg.seed + 1000),
                 "report": _queries(model, judge, vocab, "report", cfg.queries, cfg, cfg.seed)}
        if cfg.control_queries:
            parts["control"] = _queries(model, judge, vocab, "report", cfg.control_queries, cfg, cfg.seed + 2000, True)
        for g, want in (("tune", cfg.tune_queries), ("report", cfg.queries)):
            if len(parts[g][1]) < want:
                raise DatarightsError(f"only {len(parts[g][1])} of {want} {g} queries have a source owner the judge "
                                      f"reads in {cfg.candidates} generations; raise candidates or train the model longer")
        tensors = {k: v[0].contiguous() for k, v in parts.items() if len(v[0])}
        atomic_file(run / "queries.safetensors", lambda tmp: save_file(tensors, tmp))
        write_json(run / "queries.json", {k: v[1] for k, v in parts.items()})
    images = load_file(run / "queries.safetensors")
    metas = read_json_file(run / "queries.json", "queries")
    groups = [g for g in ("tune", "report", "control") if metas.get(g)]
    # 2. scores of every method on every query (one file per method, written when it is whole)
    owners = train.owners
    uniq = sorted(set(owners))
    index = np.array([uniq.index(o) for o in owners])                                 # [N] owner of each image
    old = reusable_scores(reuse, made_with, configs) if reuse else {}
    hashes = {f"{g}/{q}": query_hash(images[g][q], metas[g][q]["prompt"]) for g in groups for q in range(len(metas[g]))}
    for method in cfg.methods:
        path = run / "scores" / f"{_file_name(method)}.safetensors"
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial.safetensors")      # queries scored so far (a slow method resumes)
        got = dict(load_file(partial)) if partial.exists() else {}
        reused = {k: old[method][h] for k, h in hashes.items() if k not in got and h in old.get(method, {})}
        if reused:
            got.update(reused)
            log(f"owners: {method}: {len(reused)} queries' scores reused from an earlier run")
        todo = [(g, q) for g in groups for q in range(len(metas[g])) if f"{g}/{q}" not in got]
        log(f"owners: scoring {len(todo)} queries with {method}" + (f" ({len(got)} done before)" if got else ""))
        for k, (g, q) in enumerate(todo):
            r = attribute(model, train, Query(images[g][q], metas[g][q]["prompt"]), variants[method][0],
                          method_cfgs[method], cache=cache, progress=False, temperature=1.0)
            got[f"{g}/{q}"] = r.scores.float().contiguous()
            if r.seconds > PARTIAL_AFTER_SECONDS and (k + 1) % 4 == 0 and k + 1 < len(todo):
                atomic_file(partial, lambda tmp, got=got: save_file(got, tmp))
                log(f"owners: {method} {len(got)}/{len(got) + len(todo) - k - 1} queries")
        atomic_file(path, lambda tmp, got=got: save_file(got, tmp))
        partial.unlink(missing_ok=True)
    scores = {m: load_file(run / "scores" / f"{_file_name(m)}.safetensors") for m in cfg.methods}
    # 3. temperatures fitted on the tune queries; shares on the others
    temps = {}
    for m in cfg.methods:
        t, _ = fit_temperature([scores[m][f"tune/{q}"] for q in range(len(metas["tune"]))], owners,
                               [{x["owner"]: 1.0} for x in metas["tune"]])
        temps[m] = t
    counts = subject_counts(train.folder.metas)
    total = np.bincount(index, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(cfg.seed + 5)
    rand_t = temps.get("caption", 0.25)
    cells: dict[str, list[dict]] = {}
    for g in groups:
        for q, m in enumerate(metas[g]):
            prior = counts.get(m["subject"], {})
            prior_n = np.array([prior.get(o, 0) for o in uniq], dtype=np.float64)
            logits = {meth: owner_logits(scores[meth][f"{g}/{q}"], index, len(uniq), temps[meth]) for meth in cfg.methods}
            logits["uniform"] = np.log(total / total.sum())
            with np.errstate(divide="ignore"):
                logits["count prior"] = np.log(prior_n / prior_n.sum()) if prior_n.sum() else logits["uniform"]
            draws = [_softmax(owner_logits(torch.from_numpy(rng.standard_normal(len(owners))), index, len(uniq), rand_t))
                     for _ in range(cfg.random_draws)]
            with np.errstate(divide="ignore"):
                logits["random"] = np.log(np.mean(draws, axis=0))
            t = uniq.index(m["owner"]) if m["owner"] in uniq else None
            for meth, lg in logits.items():
                cells.setdefault(meth, []).append({"group": g, "query": q, "owner": m["owner"], "subject": m["subject"],
                                                   **_standing(lg, t), "top": uniq[int(np.argmax(lg))]})
    results.update({"temperatures": temps, "queries": {g: len(metas[g]) for g in groups},
                    "owners": {g: len({m["owner"] for m in metas[g]}) for g in groups},
                    "summary": {g: summarize(cells, g, metas[g]) for g in ("report", "control") if g in groups},
                    "seconds": round(time.time() - t0, 1)})
    results["cells"] = cells
    write_json(res_path, results)
    return results


def owner_logits(scores: torch.Tensor, index: np.ndarray, n_owners: int, temperature: float) -> np.ndarray:
    """[n_owners] log of each owner's unnormalised share: logsumexp over its images of z_i / T, z the
    standardised scores (softmax of these is `attribute.owner_shares`, without its underflow to 0)."""
    s = scores.detach().double().cpu().numpy()
    z = (s - s.mean()) / (s.std(ddof=1) + 1e-12) / temperature
    out = np.full(n_owners, -np.inf)
    np.logaddexp.at(out, index, z)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _standing(logits: np.ndarray, true: int | None) -> dict:
    """The true owner's share, its mid-rank among all owners (ties share their ranks), and its top-1
    credit (1 / the number of owners tied at the top, if it is one of them)."""
    if true is None:
        return {"share": 0.0, "rank": float(len(logits)), "top1": 0.0}
    share = float(_softmax(logits)[true])
    above = int((logits > logits[true]).sum())
    tied = int((logits == logits[true]).sum())
    return {"share": share, "rank": above + (tied + 1) / 2, "top1": 1.0 / tied if above == 0 else 0.0}


def summarize(cells: dict[str, list[dict]], group: str, metas: list[dict]) -> list[dict]:
    """Per method: mean share on the true owner (intervals over queries, owners and subjects), top-1
    owner accuracy (ties at the top share the credit; Wilson), median and mean reciprocal mid-rank,
    and the paired lifts over `caption` and over the count prior (mean difference of shares per
    query, same three intervals)."""
    owners = [m["owner"] for m in metas]
    subjects = [m["subject"] for m in metas]
    per = {meth: [c for c in cs if c["group"] == group] for meth, cs in cells.items()}
    out = []
    for meth, cs in per.items():
        share = np.array([c["share"] for c in cs])
        rank = np.array([c["rank"] for c in cs])
        top1 = float(sum(c["top1"] for c in cs))
        row = {"method": meth, "queries": len(cs), "owners": len(set(owners)), "subjects": len(set(subjects)),
               **_mean("share", share, owners, subjects, bounds=(0.0, 1.0)),
               "top1": round(top1 / len(cs), 4), "top1_ci": rounded(wilson(top1, len(cs))),
               "median_rank": float(np.median(rank)), **_mean("mrr", 1.0 / rank, owners, subjects, bounds=(0.0, 1.0))}
        for ref in ("caption", "count prior"):
            if ref in per and ref != meth:
                diff = share - np.array([c["share"] for c in per[ref]])
                row.update(_mean(f"lift_over_{ref.replace(' ', '_')}", diff, owners, subjects))
        out.append(row)
    return out


def _mean(name: str, x: np.ndarray, owners: list[str], subjects: list[str], bounds=None) -> dict:
    fig = mean_ci(x, bounds=bounds)
    return {name: round(fig["value"], 4), f"{name}_ci": rounded(fig["ci"]),
            f"{name}_ci_owners": rounded(mean_ci(x, groups=owners, bounds=bounds)["ci"]),
            f"{name}_ci_subjects": rounded(mean_ci(x, groups=subjects, bounds=bounds)["ci"])}


def markdown(rows: list[dict]) -> str:
    """A summary's rows as a markdown table, best share first (the BENCHMARKS table)."""
    from ..stats import fmt

    def lift(r, ref):
        k = f"lift_over_{ref}"
        return fmt(r[k], r[f"{k}_ci_owners"], 3) if k in r else "–"

    head = ("| method | share of the true owner | by owner | top-1 | median rank | MRR | lift over caption (by owner) | "
            "lift over count prior (by owner) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in sorted(rows, key=lambda r: -r["share"]):
        lines.append(f"| `{r['method']}` | {fmt(r['share'], r['share_ci'], 3)} | [{r['share_ci_owners'][0]:.3f}, "
                     f"{r['share_ci_owners'][1]:.3f}] | {fmt(r['top1'], r['top1_ci'], 3)} | {r['median_rank']} | "
                     f"{fmt(r['mrr'], r['mrr_ci'], 3)} | {lift(r, 'caption')} | {lift(r, 'count_prior')} |")
    return "\n".join(lines)
