"""The ownership service under load, and killed mid-job (loopback only; every loop is bounded).

    python benchmarks/service.py [--requests 200] [--concurrency 200]

1. A ledger of the default world (70 owners, 5,000 works; made once in runs/service/).
2. `datarights serve` on 127.0.0.1 in its own process; `--requests` POST /api/lookup requests, all
   in flight at once (`--concurrency`), each uploading a world image (exact), a brightened and
   resized copy (near copy) or noise (no match); latency of each from send to the whole answer.
   Meanwhile another thread asks `GET /api/me` every 50 ms: an owner's page must stay fast while
   the lookups run (their work is on worker threads, not on the event loop).
3. An opt-out is processed through the API and the server's worker process is killed with SIGKILL
   while the job runs; the server must keep answering; the ledger is reopened (the job must be
   marked failed, its request pending, no row or folder half-written) and a restarted server
   processes it to a certificate that verifies against the published key.

Writes benchmarks/results/service.json. Run it alone on the machine.

    python benchmarks/service.py --paid 64 [--methods dtrak,abu-fast]

5. Paid generations: the shipped model generates `--paid` generic prompts (seed 5); each is recorded
   through `Ledger.attribute_log` (the call behind `ledger attribute-log` and the web's worker) with
   each payment method in turn: per-generation latency from the image file to the committed payout
   rows (p50, p99), paid generations per second, and the one-time cost of the first one (the method's
   per-training-set work, when it is not shipped). Writes benchmarks/results/service-paid.json.
   With `--store`, a copy of the shipped model is registered as a model folder of its own, so that its
   rows go through a store beside the ledger (as for every model whose state does not ship with the
   package); writes benchmarks/results/service-paid-store.json.

    python benchmarks/service.py --accumulate [--style "Cleo Marr"]

4. Erasures that accumulate: three owners opt out of their concepts (a character, a style, a
   memorized image) and `process` runs with its defaults (CA, the audit's 384 held-out images,
   udatk, ti and paraphrase); each job erases from the line's current model and re-audits every
   earlier concept against its edit. Records every certificate's verdict about the final current
   model. Writes benchmarks/results/service-accumulate-<style>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RUN = Path("runs/service")
OUT = Path("benchmarks/results/service.json")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "from datarights.cli import main; main()", "serve", "--ledger",
                             str(db), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def _uploads(world: Path, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    from PIL import Image

    metas = [json.loads(line) for line in (world / "metadata.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = ["exact", "near copy", "none"][i % 3]
        m = metas[int(rng.integers(len(metas)))]
        raw = (world / m["file_name"]).read_bytes()
        if kind == "near copy":
            img = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(np.int16)
            im = Image.fromarray(np.clip(img + 4, 0, 255).astype(np.uint8)).resize((48, 48), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            raw = buf.getvalue()
        elif kind == "none":
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
            raw = buf.getvalue()
        out.append((kind, raw))
    return out


async def _load(url: str, token: str, uploads: list, concurrency: int) -> list[dict]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        async def one(kind, raw):
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.post("/api/lookup", files={"file": ("q.png", raw, "image/png")})
                    ok = r.status_code == 200
                    best = r.json()["matches"][0]["match"] if ok and r.json()["matches"] else None
                except httpx.HTTPError as e:
                    ok, best = False, type(e).__name__
                return {"kind": kind, "ok": ok, "best": best, "seconds": time.perf_counter() - t0}
        return await asyncio.gather(*(one(k, r) for k, r in uploads))


def _sample_me(url: str, token: str, stop, out: list) -> None:
    """GET /api/me every 50 ms until `stop`; the latency of each, in seconds."""
    import httpx

    with httpx.Client(timeout=60) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            c.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--accumulate", action="store_true", help="Only phase 4: three opt-outs one after another.")
    ap.add_argument("--style", default="Cleo Marr", help="The artist whose style is the second opt-out (phase 4).")
    ap.add_argument("--paid", type=int, default=0, help="Only phase 5: this many paid generations per method.")
    ap.add_argument("--methods", default="dtrak,abu-fast", help="Phase 5: payment methods, comma-separated.")
    ap.add_argument("--store", action="store_true",
                    help="Phase 5: register a copy of the shipped model, so that rows go through a store.")
    args = ap.parse_args()
    if args.accumulate:
        return accumulate(args.style)
    if args.paid:
        return paid(args.paid, args.methods.split(","), args.store)
    import httpx

    from datarights.attribute import default_world
    from datarights.ledger import Ledger, verify_certificate

    RUN.mkdir(parents=True, exist_ok=True)
    db = RUN / "ledger.db"
    world = default_world()
    t0 = time.time()
    led = Ledger(db, create=True)
    reg = led.import_dataset(world)
    import_s = time.time() - t0
    owner = led.issue_token("Dana Ortiz")
    artist = led.issue_token("Ada Vell")
    admin = led.issue_token("model owner", admin=True)
    led.store.engine.dispose()
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} threads", "works": reg["images"],
           "import_seconds": round(import_s, 1)}

    port = _port()
    url = f"http://127.0.0.1:{port}"
    srv = _serve(db, port)
    try:
        httpx.post(f"{url}/api/lookup", headers={"Authorization": f"Bearer {owner}"},   # builds the index once
                   files={"file": ("w.png", (world / "images/00000.png").read_bytes())}, timeout=300)
        uploads = _uploads(world, args.requests)
        stop, me = threading.Event(), []
        sampler = threading.Thread(target=_sample_me, args=(url, owner, stop, me))
        t0 = time.perf_counter()
        sampler.start()
        rows = asyncio.run(_load(url, owner, uploads, args.concurrency))
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    finally:
        srv.terminate()
        srv.wait()
    lat = np.array([r["seconds"] for r in rows])
    right = {k: float(np.mean([r["best"] == k or (k == "none" and r["best"] in (None, "similar"))
                               for r in rows if r["kind"] == k])) for k in ("exact", "near copy", "none")}
    res["load"] = {"requests": len(rows), "concurrency": args.concurrency, "errors": int(sum(not r["ok"] for r in rows)),
                   "wall_seconds": round(wall, 2), "throughput_rps": round(len(rows) / wall, 1),
                   "p50_s": round(float(np.percentile(lat, 50)), 3), "p95_s": round(float(np.percentile(lat, 95)), 3),
                   "p99_s": round(float(np.percentile(lat, 99)), 3), "max_s": round(float(lat.max()), 3),
                   "best_match_as_expected": right,
                   "me_while_loading": {"requests": len(me), "p50_s": round(float(np.percentile(me, 50)), 3),
                                        "p99_s": round(float(np.percentile(me, 99)), 3),
                                        "max_s": round(float(np.max(me)), 3)}}
    print(json.dumps(res["load"]), flush=True)

    # ---- kill -9 of the worker while it processes an opt-out (Ada Vell opts out of her own style)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    srv = _serve(db, port)
    rid = httpx.post(f"{url}/api/optouts", headers={"Authorization": f"Bearer {artist}"},
                     json={"concept": "Ada Vell"}, timeout=60).json()["id"]
    httpx.post(f"{url}/api/admin/process", headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    while True:
        with sqlite3.connect(db) as c:
            row = c.execute("SELECT id, stage, pid FROM jobs ORDER BY id DESC").fetchone()
        if row and row[1] == "audit":
            break
        time.sleep(0.1)
    time.sleep(2.0)                                             # in the middle of the audit
    os.kill(row[2], signal.SIGKILL)                             # the worker process that runs the job
    alive = httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {artist}"}, timeout=60).status_code == 200
    srv.terminate()
    srv.wait()
    led = Ledger(db)                                            # opening recovers the dead job
    job = led.job(row[0])
    status = led.optout_status(rid)
    folders = sorted(p.name for p in led.root.iterdir()) if led.root.exists() else []
    led.store.engine.dispose()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    srv = _serve(db, port)
    try:
        httpx.post(f"{url}/api/admin/process", headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        t0 = time.time()
        while time.time() - t0 < 900:
            st = httpx.get(f"{url}/api/optouts/{rid}", headers={"Authorization": f"Bearer {artist}"}, timeout=60).json()
            if st["status"] in ("done", "failed"):
                break
            time.sleep(1)
        cert = httpx.get(f"{url}/api/certificates/{st['certificate_id']}", headers={"Authorization": f"Bearer {artist}"},
                         timeout=60).json() if st.get("certificate_id") else None
        keys = [k["public_key"] for k in httpx.get(f"{url}/.well-known/datarights-keys.json", timeout=60).json()["keys"]]
    finally:
        srv.terminate()
        srv.wait()
    res["kill"] = {"killed": "the worker process", "server_answered_after": alive,
                   "killed_job": job["id"], "job_status_after": job["status"], "job_error": job["error"],
                   "request_status_after": status["status"], "folders_after_kill": folders,
                   "rerun_status": st["status"], "rerun_seconds": round(time.time() - t0, 1),
                   "certificate_verifies": bool(cert and verify_certificate(cert, trusted=keys)["valid"])}
    print(json.dumps(res["kill"]), flush=True)
    from datarights.files import write_json
    write_json(OUT, res)


ERASED_KEYS = ("target_erased", "target_erased_ci", "target_erased_seen", "target_erased_seen_ci")
"""The verdict needs both: held-out prompts and the erase's own (seen) prompts."""


def _erased(t: dict) -> dict:
    return {"target": t["target"], "verdict": t["verdict"], **{k: t.get(k) for k in ERASED_KEYS}}


def accumulate(style: str):
    from datarights.attribute import default_world
    from datarights.files import write_json
    from datarights.ledger import Ledger

    slug = style.lower().replace(" ", "-")
    run = Path(f"runs/service-accumulate-{slug}")
    if run.exists():
        raise SystemExit(f"remove {run} first: this phase starts from a fresh ledger")
    run.mkdir(parents=True)
    led = Ledger(run / "ledger.db", create=True)
    led.import_dataset(default_world())
    reqs = [led.optout(owner, concept=concept) for owner, concept in
            (("Finwave Studios", "Blubbo"), (style, style), ("Harbor Postcard Co", "Rosa Villa postcard"))]
    t0 = time.time()
    jobs = led.process(log=lambda s: print(s, file=sys.stderr, flush=True))
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} threads", "seconds": round(time.time() - t0, 1),
           "jobs": [{"id": j["id"], "seconds": j["audit"]["seconds"], "erased_from": j["model_id"],
                     "edited_model": j["edited_model_id"],
                     "targets": [_erased(t) for t in j["audit"]["targets"]],
                     "reaudits": [_erased(t) for t in j["audit"]["reaudits"]]}
                    for j in jobs]}
    current = next(m for m in led.models() if m["current"])
    res["current_model"] = current["id"]
    res["final"] = []
    for r in reqs:
        st = led.optout_status(r["id"])
        last = st["certificates"][-1]
        doc = led.certificate(last["id"])["document"]
        res["final"].append({"concept": r["concept"], "certificate": last["id"], "kind": last["kind"],
                             "about_model": last["model_id"], "current": last["current"], "verdict": last["verdict"],
                             **{k: doc["audit"].get(k) for k in ERASED_KEYS},
                             "attacks": {k: {"asr": v["asr"], "asr_ci": v["asr_ci"], "asr_plain": v["asr_plain"]}
                                         for k, v in doc["attacks"].items()}})
    print(json.dumps(res, indent=1))
    write_json(Path(f"benchmarks/results/service-accumulate-{slug}.json"), res)


def paid(n: int, methods: list[str], via_store: bool = False) -> None:
    """Phase 5: `n` paid generations recorded with each method (see the module docstring)."""
    import tempfile

    import torch

    from datarights.attribute import default_world
    from datarights.files import save_png, write_json
    from datarights.ledger import Ledger
    from datarights.models import load_model

    RUN.mkdir(parents=True, exist_ok=True)
    model = load_model()
    prompts = [f"a photo of a {o}" for o in ("fish", "tree", "house", "face")] * (n // 4 + 1)
    images = torch.cat([model.sample(prompts[i:i + 16], seed=5 + i) for i in range(0, n, 16)])[:n]
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} threads", "generations": n, "methods": {}}
    with tempfile.TemporaryDirectory(dir=RUN) as tmp:
        from PIL import Image
        files = [save_png(Image.fromarray((img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()),
                          Path(tmp) / f"g{i:03d}.png") for i, img in enumerate(images)]
        copy = None
        if via_store:           # a model folder of its own: the shipped state does not apply, rows go to a store
            from datarights.models import export_model
            copy = export_model(model, Path(tmp) / "shipped-copy")
        for method in methods:
            db = Path(tmp) / f"{method}.db"
            led = Ledger(db, create=True)
            led.import_dataset(default_world(), model=copy)
            t0 = time.perf_counter()
            led.attribute_log(files[0], prompts[0], "1.00", method=method, client_key="warm-up")
            first = time.perf_counter() - t0
            lat = []
            t0 = time.perf_counter()
            for i, f in enumerate(files):
                t = time.perf_counter()
                ev = led.attribute_log(f, prompts[i], "1.00", method=method, client_key=f"gen-{i}")
                lat.append(time.perf_counter() - t)
                assert not ev["replayed"] and sum(p["cents"] for p in ev["payouts"]) == 100
            wall = time.perf_counter() - t0
            again = led.attribute_log(files[1], prompts[1], "1.00", method=method, client_key="gen-1")
            res["methods"][method] = {"first_seconds": round(first, 2), "p50_s": float(np.median(lat)),
                                      "p99_s": float(np.quantile(lat, 0.99)), "max_s": max(lat),
                                      "per_second": n / wall, "retry_replayed": again["replayed"]}
            print(json.dumps({method: res["methods"][method]}), flush=True)
            led.store.engine.dispose()
    res["through_store"] = via_store
    write_json(Path("benchmarks/results/service-paid-store.json" if via_store else "benchmarks/results/service-paid.json"), res)


if __name__ == "__main__":
    main()
