"""The worker process: the long work the web server queues runs here, never in a request.

`datarights serve` starts one worker (`datarights ledger work`) when there is work: pending
opt-outs (erase, audit, attacks, certificates) and queued paid generations (attribution). The
worker records its pid on each job it runs, updates the job's stage and progress as it goes, and
exits when nothing is left. A page asked meanwhile is answered by the server's own process, which
the work does not slow beyond sharing the CPU; a worker killed mid-job leaves a `running` job that
the next `process` (or the next open of the ledger) marks failed, its requests pending again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import DatarightsError


def options_json(options: dict) -> str:
    """`Ledger.process` keyword options as JSON for the worker's command line."""
    out = dict(options)
    if out.get("audit_config") is not None and not isinstance(out["audit_config"], dict):
        out["audit_config"] = asdict(out["audit_config"])
    return json.dumps(out)


def options_from_json(text: str) -> dict:
    from ..audit import AuditConfig
    from ..limits import loads_json

    opts = loads_json(text or "{}", "--options")
    if not isinstance(opts, dict):
        raise DatarightsError("the worker's options must be a JSON object")
    known = {"method", "attacks", "batch", "audit_config", "attack_budget", "erase_options", "limit", "judge"}
    bad = sorted(set(opts) - known)
    if bad:
        raise DatarightsError(f"unknown worker option {bad[0]!r}; known: {', '.join(sorted(known))}")
    if isinstance(opts.get("audit_config"), dict):
        opts["audit_config"] = AuditConfig(**opts["audit_config"])
    return opts


def work(ledger, options: dict | None = None, log=lambda s: None) -> dict:
    """Run queued work until none is left: every pending opt-out, then every queued paid generation,
    again while new work arrives. Returns what it ran: {"erase_jobs": [...], "attribute_jobs": [...]}."""
    done = {"erase_jobs": [], "attribute_jobs": []}
    while True:
        jobs = ledger.process(**(options or {}), log=log)
        done["erase_jobs"] += [j["id"] for j in jobs]
        ran = []
        while (job_id := ledger.run_queued(log)) is not None:
            ran.append(job_id)
        done["attribute_jobs"] += ran
        if not jobs and not ran:
            return done


def start(location: str, options: dict | None = None, log_file: Path | None = None) -> subprocess.Popen:
    """Start `datarights ledger work` on a ledger in its own process (stdout/stderr to `log_file`)."""
    cmd = [sys.executable, "-c", "from datarights.cli import main; main()", "ledger", "work", "--ledger", str(location),
           "--options", options_json(options or {})]
    out = open(log_file, "ab") if log_file is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    finally:
        if log_file is not None:
            out.close()
