"""`process`: pending opt-outs -> erase on top of the line's current model -> audit (with attacks)
-> re-audit of every earlier opt-out -> signed certificates -> the edit becomes the current model.

Erasures accumulate: each job erases its requests' concepts from its line's *current* model (a
base model, or the edit the previous job made), and its edit becomes the line's current model. Every
edit is held to the line's original model (`LINE_HOLD`, erase.hold): other prompts keep the
original's predictions and the earlier concepts the current model's, so that the damage of one edit
is not built on by the next. So
that an erasure that came back is seen, the job also audits its edit again (with the same attacks)
for the concept of every earlier opt-out of the line, and issues each of them a *re-audit*
certificate about the new model. One job per line runs at a time (a second run leaves that line's
requests pending), so no edit is made on top of a model that is about to stop being current.

One processor per opt-out: a job *claims* its opt-outs in the transaction that creates it, by one
`UPDATE ... SET status = 'processing' WHERE id = ... AND status = 'pending'` each (atomic on SQLite,
and on PostgreSQL the second of two concurrent updates waits for the first and then matches no
row), so two `process` runs at once (or the CLI beside the web's worker) never do one request twice;
a request another run claimed first is left to it. The signing key is loaded before anything is
claimed, so a damaged key is one line and every request stays pending.

A job row is written (status `running`, with this process's pid) before any work; its stage and
progress are updated as it goes; the edited model is written to a temporary folder and renamed
into place; the results, the certificates and the opt-outs' new status are written in one
transaction at the end. A process killed at any point leaves either no edited folder or a whole
one, and a `running` job that `Ledger.recover` marks failed (its opt-outs go back to pending).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from datetime import timezone

from sqlalchemy import select, update

from ..errors import DatarightsError
from ..files import write_json
from ..stats import finite
from . import rules, signing
from .certificate import standing
from .schema import Certificate, Dataset, Job, Model, OptOut, OptOutEvent, now

ATTACKS = ("udatk", "ti", "paraphrase")
LINE_HOLD = 10.0
"""The hold weight of every edit on a model line (methods with a `hold` term: ca): other prompts kept
to the line's original model, earlier erasures to the current one (erase.hold); on the line's first
edit a preservation term towards the original itself. Chosen on the large world's tuning concepts
(weights 1 and 10; the larger other-prompt preservation with pooled target_erased >= 0.95; BENCHMARKS.md).
An `erase_options` "hold" overrides it, 0 turns it off."""
AUDIT_KEYS = ("verdict", "target_erased", "target_erased_ci", "target_erased_n", "target_erased_seen",
              "target_erased_seen_ci", "degenerate_share", "degenerate_share_ci", "anchor_fidelity",
              "anchor_fidelity_ci", "nearby_preserved", "nearby_preserved_ci", "others_preserved",
              "others_preserved_ci", "kid", "kid_std", "kid_to_anchor", "seed", "judge")
ATTACK_KEYS = ("asr", "asr_ci", "asr_plain", "asr_plain_ci", "gain", "attempts")


class Progress:
    """A job's stage and progress in its row, written at most once a second: `part(lo, hi, stage)`
    gives a sink (fn(desc, done, total), as runtime.progress_bar takes) that maps a loop onto [lo, hi]."""

    def __init__(self, ledger, job_id: int):
        self.ledger, self.job_id, self.last, self.value = ledger, job_id, 0.0, 0.0

    def set(self, stage: str, progress: float, force: bool = False) -> None:
        self.value = max(self.value, min(progress, 1.0))       # never backwards (an audit runs two loops)
        if force or time.time() - self.last >= 1.0:
            self.last = time.time()
            with self.ledger.store.transaction() as s:
                j = s.get(Job, self.job_id)
                j.stage, j.progress = stage[:40], round(self.value, 3)

    def part(self, lo: float, hi: float, stage: str):
        self.set(stage, lo, force=True)
        return lambda desc, done, total: self.set(stage, lo + (hi - lo) * done / max(1, total))


def process(ledger, method: str = "ca", attacks: tuple[str, ...] | list[str] = ATTACKS, batch: bool = False,
            audit_config=None, attack_budget: int = 16, erase_options: dict | None = None, limit: int | None = None,
            judge=None, log=lambda s: None) -> list[dict]:
    """Run every pending opt-out (one edit each, or with `batch` one multi-concept edit per line).

    Returns the finished jobs as JSON. `audit_config` is an `AuditConfig` (default: the audit's
    defaults); `attacks` run on the edited model with `attack_budget` attempts each, for the job's
    own concepts and for those it re-audits. `judge`: the folder of a world judge (`train-judge`)
    that audits and attacks read images with, for models of another world preset (None: the shipped
    judge); it is loaded before anything is claimed, and each job records its weights' SHA-256.
    """
    from ..attack import METHODS as ATTACK_METHODS
    from ..audit import AuditConfig
    from ..erase import METHODS as ERASE_METHODS

    if method not in ERASE_METHODS or method == "retrain":
        raise DatarightsError(f"unknown or unsupported erase method {method!r} for process; choose from "
                              f"{', '.join(sorted(m for m in ERASE_METHODS if m != 'retrain'))}")
    bad = [a for a in attacks if a not in ATTACK_METHODS]
    if bad:
        raise DatarightsError(f"unknown attack {bad[0]!r}; choose from {', '.join(sorted(ATTACK_METHODS))}")
    if limit is not None and limit < 1:
        raise DatarightsError(f"the number of requests to process must be at least 1, got {limit}")
    audit_config = audit_config or AuditConfig()
    judge = _judge(judge)
    key = ledger.signing_key()     # checked (or made) before any work: a damaged key leaves every request pending
    ledger.recover()
    pending = _pending(ledger, limit)
    if batch:  # one edit per line for all its pending requests (the same concept twice: one target)
        by_line: dict[int, list[OptOut]] = {}
        for r in pending:
            by_line.setdefault(r.line_id, []).append(r)
        groups = list(by_line.values())
    else:
        groups = [[r] for r in pending]
    jobs = [_run(ledger, g, method, list(attacks), audit_config, attack_budget, erase_options or {}, key, log, judge)
            for g in groups]
    return [j for j in jobs if j is not None]


def _judge(folder):
    """(judge, SHA-256 of its weights) for a world judge folder; (None, None) for the shipped judge."""
    import hashlib
    from pathlib import Path

    if folder is None:
        return None, None
    if not isinstance(folder, (str, Path)) or not str(folder).strip():
        raise DatarightsError("the judge must be the folder of a world judge (from `datarights train-judge`)")

    from ..judge import load_judge

    j = load_judge(folder)          # a folder that is not a judge: one line
    return j, hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def _pending(ledger, limit: int | None) -> list:
    """The pending requests, oldest first, each with the line it is on (`line_id`)."""
    with ledger.store.read() as s:
        q = select(OptOut).where(OptOut.status == "pending").order_by(OptOut.id)
        rows = list(s.scalars(q if limit is None else q.limit(limit)))
        for r in rows:
            r.line_id = rules.line_of(s, s.get(Model, r.model_id))
        return rows


def _claim(s, ids: list[int], job_id: int) -> list[int]:
    """The requests among `ids` that this job takes: those still pending, each switched to
    `processing` by one conditional UPDATE (see the module docstring)."""
    mine = []
    for rid in ids:
        hit = s.execute(update(OptOut).where(OptOut.id == rid, OptOut.status == "pending")
                        .values(status="processing", job_id=job_id).execution_options(synchronize_session=False))
        if hit.rowcount == 1:
            mine.append(rid)
    return mine


def _line_busy(s, line_id: int) -> bool:
    """Whether another job is running on this line (jobs record the model they erase from)."""
    for (model_id,) in s.execute(select(Job.model_id).where(Job.status == "running", Job.kind == "erase")):
        m = s.get(Model, model_id)
        if m is not None and rules.line_of(s, m) == line_id:
            return True
    return False


def _earlier(s, line_id: int, exclude: set[str]) -> list[OptOut]:
    """The line's earlier opt-outs that were certified, one per concept (the newest), outside `exclude`."""
    out: dict[str, OptOut] = {}
    for r in s.scalars(select(OptOut).where(OptOut.status == "done").order_by(OptOut.id.desc())):
        m = s.get(Model, r.model_id)
        if m is not None and rules.line_of(s, m) == line_id and r.concept not in exclude and r.concept not in out:
            out[r.concept] = r
    return list(reversed(out.values()))


def _run(ledger, group, method, attacks, audit_config, budget, erase_options, key, log, judge=(None, None)) -> dict | None:
    """One job over the requests of `group` that are still pending; None if another run took them
    all, or is running on their line (they stay pending for the next run)."""
    from ..attack import attack
    from ..audit import audit
    from ..erase import Line, can_hold, erase, steps_per_concept
    from ..models import load_model, weights_digest
    from ..quality import public

    judge, judge_sha = judge
    line_id = group[0].line_id
    with ledger.store.transaction() as s:
        # one claim on a line at a time: the line's base model row is locked (PostgreSQL; SQLite's write
        # transaction already holds the whole database)
        s.execute(select(Model.id).where(Model.id == line_id).with_for_update())
        if _line_busy(s, line_id):
            log(f"line {line_id} is being processed by another run; its requests stay pending")
            return None
        base_m = rules.current(s, line_id)
        job = Job(model_id=base_m.id, optouts=[], method=method, pid=os.getpid(), status="running",
                  settings=dict(erase_options), stage="erase")
        s.add(job)
        s.flush()
        job_id = job.id
        ids = _claim(s, [r.id for r in group], job_id)
        if not ids:
            s.delete(job)            # every request was taken by another run: no job of ours
            return None
        group = [r for r in group if r.id in ids]
        targets, anchors = [], []
        for r in group:
            if r.concept not in targets:
                targets.append(r.concept)
                anchors.append(r.anchor)
        earlier = [{"id": r.id, "concept": r.concept, "anchor": r.anchor} for r in _earlier(s, line_id, set(targets))]
        job.optouts, job.settings = ids, {"targets": targets, "anchors": anchors, "reaudit": [e["id"] for e in earlier],
                                          **erase_options}
        for rid in ids:
            s.add(OptOutEvent(optout_id=rid, status="processing",
                              note=f"job {job_id}: erasing with {method} from model {base_m.id}"))
        root = s.get(Model, line_id)
        model_path, root_path, base_id = base_m.path, root.path, base_m.id
        dataset = s.get(Dataset, base_m.dataset_id) if base_m.dataset_id else None
        dataset_ref = {"name": dataset.name, "version": dataset.version, "images": dataset.images} if dataset else None
        base_sha, root_sha = base_m.weights_sha256, root.weights_sha256
    progress = Progress(ledger, job_id)
    try:
        log(f"job {job_id}: erasing {', '.join(targets)} with {method} from model {base_id}")
        base = ledger.load(model_path)
        if weights_digest(base) != base_sha:
            raise DatarightsError(f"model {base_id} has changed on disk since it was registered")
        original = base if root_path == model_path else ledger.load(root_path)
        t0 = time.time()
        options = dict(erase_options)
        if len(targets) > 1 and "steps" not in options and (steps := steps_per_concept(method, base, len(targets))):
            options["steps"] = steps  # one edit for k concepts: the method's steps for each
        line = None
        if can_hold(method):   # every edit of the line held to its original (the first: to itself)
            options.setdefault("hold", LINE_HOLD)
            line = Line(original, [(e["concept"], e["anchor"]) for e in earlier])
        edit = erase(base, targets, anchors, method, progress=progress.part(0.0, 0.3, "erase"), line=line, **options)
        out_dir = ledger.root / f"job-{job_id}"
        ledger.root.mkdir(parents=True, exist_ok=True)
        edit.save(out_dir)
        edited = load_model(out_dir)
        log(f"job {job_id}: auditing")
        share = 0.5 / (1 + len(earlier))            # audits and attacks: the job's targets, then each earlier concept
        raw = audit(edited, base, targets, anchors, audit_config, progress=progress.part(0.3, 0.3 + share * 0.6, "audit"),
                    judge=judge, log=lambda s: None)
        write_json(ledger.root / f"job-{job_id}-evidence.json", evidence(raw["_grids"]))
        result = public(raw)
        per_target = result.get("targets") or [result]
        attack_res = _attacks(edited, base, targets, attacks, budget, audit_config.seed, progress, 0.3 + share * 0.6,
                              0.3 + share, log, job_id, attack, judge)
        reaudits = []
        for i, e in enumerate(earlier):
            lo = 0.3 + share * (i + 1)
            log(f"job {job_id}: re-auditing {e['concept']!r} (opt-out {e['id']})")
            r = public(audit(edited, original, [e["concept"]], [e["anchor"]], audit_config, judge=judge,
                             progress=progress.part(lo, lo + share * 0.6, f"re-audit {e['concept']}"), log=lambda s: None))
            reaudits.append({**e, "audit": r, "attacks": _attacks(edited, original, [e["concept"]], attacks, budget,
                                                                    audit_config.seed, progress, lo + share * 0.6,
                                                                    lo + share, log, job_id, attack, judge)})
        progress.set("certificates", 0.98, force=True)
        edited_sha = weights_digest(edited)
        with ledger.store.transaction() as s:
            s.execute(select(Model.id).where(Model.id == line_id).with_for_update())
            if rules.current(s, line_id).id != base_id:
                raise DatarightsError(f"model {base_id} stopped being its line's current model while the job ran")
            j = s.get(Job, job_id)
            em = Model(path=ledger.stored(out_dir), kind=edited.kind, weights_sha256=edited_sha,
                       dataset_id=dataset and dataset.id, base_id=base_id, line_id=line_id)
            s.add(em)
            s.flush()
            rules.make_current(s, em)
            j.status, j.stage, j.progress, j.finished_at = "done", "done", 1.0, now()
            j.edited_path, j.edited_model_id = ledger.stored(out_dir), em.id
            j.audit = {"targets": [{k: row.get(k) for k in ("target", "anchor", *AUDIT_KEYS)} for row in per_target],
                       "reaudits": [{"optout": e["id"], "target": e["concept"], **{k: e["audit"].get(k) for k in AUDIT_KEYS}}
                                    for e in reaudits],
                       "seconds": round(time.time() - t0, 1)}
            j.attacks = attack_res
            j.settings = {**j.settings, "erase": edited.meta.get("edit", {}).get("config", {}),
                          "audit": asdict(audit_config), **({"judge_sha256": judge_sha} if judge_sha else {})}
            models = {"base_model": {"id": base_id, "path": ledger.public(model_path), "weights_sha256": base_sha},
                      "edited_model": {"id": em.id, "path": ledger.public(em.path), "weights_sha256": edited_sha},
                      "dataset": dataset_ref, "method": method, "settings": j.settings["erase"], "job": job_id,
                      **({"judge_sha256": judge_sha} if judge_sha else {})}
            for r in s.scalars(select(OptOut).where(OptOut.id.in_(ids))):
                row = next(x for x in per_target if x["target"] == r.concept)
                doc = _certificate(s, key, job_id, em.id, r, "erase", models, {k: row.get(k) for k in AUDIT_KEYS},
                                   {k.split("|")[0]: v for k, v in attack_res.items() if k.endswith(f"|{r.concept}")})
                r.status = "done"
                s.add(OptOutEvent(optout_id=r.id, status="done",
                                  note=f"job {job_id}: {doc['standing']['verdict']} (model {em.id}); certificate issued"))
            for e in reaudits:
                r = s.get(OptOut, e["id"])
                doc = _certificate(s, key, job_id, em.id, r, "re-audit",
                                   {**models, "base_model": {"id": line_id, "path": ledger.public(root_path),
                                                             "weights_sha256": root_sha}},
                                   {k: e["audit"].get(k) for k in AUDIT_KEYS},
                                   {k.split("|")[0]: v for k, v in e["attacks"].items()})
                came_back = not rules.says_erased(doc["standing"]["verdict"])
                s.add(OptOutEvent(optout_id=r.id, status="done",
                                  note=f"job {job_id}: re-audited in model {em.id}: {doc['standing']['verdict']}"
                                       + (" — the concept came back" if came_back else "")))
        log(f"job {job_id}: done")
    except BaseException as e:
        with ledger.store.transaction() as s:
            j = s.get(Job, job_id)
            j.status, j.error, j.finished_at = "failed", f"{type(e).__name__}: {e}"[:2000], now()
            for r in s.scalars(select(OptOut).where(OptOut.id.in_(ids))):
                r.status = "failed"
                s.add(OptOutEvent(optout_id=r.id, status="failed", note=f"job {job_id} failed: {e}"[:2000]))
        raise
    return ledger.job(job_id)


def _attacks(edited, before, targets, attacks, budget, seed, progress, lo, hi, log, job_id, attack, judge=None) -> dict:
    """Every attack on every target: {"<attack>|<target>": the figures a certificate keeps}. `before`:
    the model the target was erased from (what `p4d` matches)."""
    out, steps = {}, max(1, len(targets) * len(attacks))
    for i, t in enumerate(targets):
        for a in attacks:
            k = i * len(attacks) + attacks.index(a)
            progress.set(f"attack {a} on {t}", lo + (hi - lo) * k / steps, force=True)
            log(f"job {job_id}: attack {a} on {t!r}")
            res = attack(edited, t, a, budget=budget, seed=seed, base=before, judge=judge).to_json()
            out[f"{a}|{t}"] = {k: res[k] for k in ATTACK_KEYS}
    return out


def _certificate(s, key, job_id: int, model_id: int, r: OptOut, kind: str, models: dict, audit: dict,
                 attacks: dict) -> dict:
    """Sign and store one certificate about `model_id` for opt-out `r`; returns its document."""
    doc = {
        "type": "datarights erase certificate", "version": 2, "kind": kind,
        "issued_at": now().replace(tzinfo=timezone.utc).isoformat(timespec="seconds"),
        "optout": {"id": r.id, "owner": r.owner.name, "concept": r.concept, "anchor": r.anchor,
                   "works": r.works, "filed_at": r.created_at.replace(tzinfo=timezone.utc).isoformat()},
        # folders as ledger.public shows them: a certificate names no other place on the server
        **models, "audit": audit, "attacks": attacks,
        "signer": {"algorithm": "Ed25519", "public_key": signing.public_hex(key)},
    }
    doc = finite(doc)
    doc["standing"] = {k: v for k, v in standing(doc).items() if k != "recoverable"}
    s.add(Certificate(job_id=job_id, optout_id=r.id, kind=kind, model_id=model_id, verdict=doc["standing"]["verdict"],
                      document=signing.canonical(doc).decode(), signature=signing.sign(key, doc)))
    return doc


def evidence(grids: list[dict], per_grid: int = 8) -> list[dict]:
    """Before/after image grids of the audit (base and edited model, same prompts and noise) for the
    certificate page: the first images of each prompt family, with what the judge read in them."""
    from ..report import image_uri

    out = []
    for g in grids:
        if "edited" not in g:
            continue
        k = min(per_grid, len(g["prompts"]))
        out.append({"title": g["title"],
                    "base": [{"uri": image_uri(g["base"][i]), "label": g["read_base"][i]} for i in range(k)],
                    "edited": [{"uri": image_uri(g["edited"][i]), "label": g["read_edited"][i],
                                "cls": "bad" if g["read_edited"][i] == "degenerate" else ""} for i in range(k)]})
    return out
