"""`process`: pending opt-outs -> erase -> audit (with attacks) -> signed certificate.

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
from . import signing
from .certificate import standing
from .schema import Certificate, Dataset, Job, Model, OptOut, OptOutEvent, now

ATTACKS = ("udatk", "ti", "paraphrase")
AUDIT_KEYS = ("verdict", "target_erased", "target_erased_ci", "target_erased_n", "target_erased_seen",
              "target_erased_seen_ci", "degenerate_share", "degenerate_share_ci", "anchor_fidelity",
              "anchor_fidelity_ci", "nearby_preserved", "nearby_preserved_ci", "others_preserved",
              "others_preserved_ci", "kid", "kid_std", "kid_to_anchor", "seed", "judge")


def _stage(ledger, job_id: int, stage: str, progress: float) -> None:
    with ledger.store.transaction() as s:
        j = s.get(Job, job_id)
        j.stage, j.progress = stage, progress


def process(ledger, method: str = "ca", attacks: tuple[str, ...] | list[str] = ATTACKS, batch: bool = False,
            audit_config=None, attack_budget: int = 16, erase_options: dict | None = None, limit: int | None = None,
            log=lambda s: None) -> list[dict]:
    """Run every pending opt-out (one edit each, or with `batch` one multi-concept edit per model).

    Returns the finished jobs as JSON. `audit_config` is an `AuditConfig` (default: the audit's
    defaults); `attacks` run on the edited model with `attack_budget` attempts each.
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
    key = ledger.signing_key()     # checked (or made) before any work: a damaged key leaves every request pending
    ledger.recover()
    pending = _pending(ledger, limit)
    if batch:  # one edit per model for all its pending requests (the same concept twice: one target)
        by_model: dict[int, list[OptOut]] = {}
        for r in pending:
            by_model.setdefault(r.model_id, []).append(r)
        groups = list(by_model.values())
    else:
        groups = [[r] for r in pending]
    jobs = [_run(ledger, g, method, list(attacks), audit_config, attack_budget, erase_options or {}, key, log)
            for g in groups]
    return [j for j in jobs if j is not None]


def _pending(ledger, limit: int | None) -> list[OptOut]:
    with ledger.store.read() as s:
        q = select(OptOut).where(OptOut.status == "pending").order_by(OptOut.id)
        return list(s.scalars(q if limit is None else q.limit(limit)))


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


def _run(ledger, group, method, attacks, audit_config, budget, erase_options, key, log) -> dict | None:
    """One job over the requests of `group` that are still pending; None if another run took them all."""
    from ..attack import attack
    from ..audit import audit
    from ..erase import erase, steps_per_concept
    from ..models import load_model, weights_digest
    from ..quality import public

    with ledger.store.transaction() as s:
        job = Job(model_id=group[0].model_id, optouts=[], method=method, pid=os.getpid(), status="running",
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
        job.optouts, job.settings = ids, {"targets": targets, "anchors": anchors, **erase_options}
        for rid in ids:
            s.add(OptOutEvent(optout_id=rid, status="processing", note=f"job {job_id}: erasing with {method}"))
        m = s.get(Model, group[0].model_id)
        model_path, dataset = m.path, s.get(Dataset, m.dataset_id) if m.dataset_id else None
        dataset_ref = {"name": dataset.name, "version": dataset.version, "images": dataset.images} if dataset else None
        base_sha = m.weights_sha256
    try:
        log(f"job {job_id}: erasing {', '.join(targets)} with {method}")
        base = ledger.load(model_path)
        if weights_digest(base) != base_sha:
            raise DatarightsError(f"model {group[0].model_id} at {model_path} has changed since it was registered")
        t0 = time.time()
        options = dict(erase_options)
        if len(targets) > 1 and "steps" not in options and (steps := steps_per_concept(method, base, len(targets))):
            options["steps"] = steps  # one edit for k concepts: the method's steps for each
        edit = erase(base, targets, anchors, method, progress=False, **options)
        out_dir = ledger.root / f"job-{job_id}"
        ledger.root.mkdir(parents=True, exist_ok=True)
        edit.save(out_dir)
        edited = load_model(out_dir)
        _stage(ledger, job_id, "audit", 0.4)
        log(f"job {job_id}: auditing")
        raw = audit(edited, base, targets, anchors, audit_config, progress=False, log=lambda s: None)
        write_json(ledger.root / f"job-{job_id}-evidence.json", evidence(raw["_grids"]))
        result = public(raw)
        per_target = result.get("targets") or [result]
        attack_res: dict = {}
        for i, t in enumerate(targets):
            for a in attacks:
                _stage(ledger, job_id, f"attack {a} on {t}", 0.6 + 0.35 * (i * len(attacks) + attacks.index(a))
                       / max(1, len(targets) * len(attacks)))
                log(f"job {job_id}: attack {a} on {t!r}")
                res = attack(edited, t, a, budget=budget, seed=audit_config.seed).to_json()
                attack_res[f"{a}|{t}"] = {k: res[k] for k in ("asr", "asr_ci", "asr_plain", "asr_plain_ci", "gain",
                                                            "attempts")}
        edited_sha = weights_digest(edited)
        with ledger.store.transaction() as s:
            j = s.get(Job, job_id)
            em = Model(path=ledger.stored(out_dir), kind=edited.kind, weights_sha256=edited_sha,
                       dataset_id=dataset and dataset.id, base_id=group[0].model_id)
            s.add(em)
            s.flush()
            j.status, j.stage, j.progress, j.finished_at = "done", "done", 1.0, now()
            j.edited_path, j.edited_model_id = ledger.stored(out_dir), em.id
            j.audit = {"targets": [{k: row.get(k) for k in ("target", "anchor", *AUDIT_KEYS)} for row in per_target],
                       "seconds": round(time.time() - t0, 1)}
            j.attacks = attack_res
            j.settings = {**j.settings, "erase": edited.meta.get("edit", {}).get("config", {}),
                          "audit": asdict(audit_config)}
            for r in s.scalars(select(OptOut).where(OptOut.id.in_(ids))):
                row = next(x for x in per_target if x["target"] == r.concept)
                doc = {
                    "type": "datarights erase certificate", "version": 2, "issued_at":
                        now().replace(tzinfo=timezone.utc).isoformat(timespec="seconds"),
                    "optout": {"id": r.id, "owner": r.owner.name, "concept": r.concept, "anchor": r.anchor,
                               "works": r.works, "filed_at": r.created_at.replace(tzinfo=timezone.utc).isoformat()},
                    # folders as ledger.public shows them: a certificate names no other place on the server
                    "base_model": {"id": group[0].model_id, "path": ledger.public(model_path), "weights_sha256": base_sha},
                    "edited_model": {"id": em.id, "path": ledger.public(em.path), "weights_sha256": edited_sha},
                    "dataset": dataset_ref,
                    "method": method, "settings": j.settings["erase"], "job": job_id,
                    "audit": {k: row.get(k) for k in AUDIT_KEYS},
                    "attacks": {k.split("|")[0]: v for k, v in attack_res.items() if k.endswith(f"|{r.concept}")},
                    "signer": {"algorithm": "Ed25519", "public_key": signing.public_hex(key)},
                }
                doc = finite(doc)
                doc["standing"] = {k: v for k, v in standing(doc).items() if k != "recoverable"}
                s.add(Certificate(job_id=job_id, optout_id=r.id, document=signing.canonical(doc).decode(),
                                  signature=signing.sign(key, doc)))
                r.status = "done"
                s.add(OptOutEvent(optout_id=r.id, status="done",
                                  note=f"job {job_id}: {doc['standing']['verdict']}; certificate issued"))
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
