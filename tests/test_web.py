"""The owners' web page and JSON API: access (every owner-scoped route refuses another owner's ids),
CSRF, uploads, and the whole loop through HTTP."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from datarights.ledger import Ledger

from .test_ledger import ARTIST, SMALL_AUDIT, SMALL_ERASE, _metas, _owner_with_character

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402


def _build_site(db, tiny_world, tiny_trained):
    """A ledger with two owners signed up, one opt-out processed (so a certificate exists), one paid
    generation; returns (tokens, ids)."""
    from datetime import datetime

    from datarights.audit import AuditConfig

    led = Ledger(db, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    studio = _owner_with_character(tiny_world)
    other = next(m["owner"] for m in _metas(tiny_world) if m["owner"] != studio)
    tokens = {"studio": led.issue_token(studio), "other": led.issue_token(other), "admin": led.issue_token("admin", admin=True),
              "artist": led.issue_token(ARTIST)}
    req = led.optout(studio, concept="Blubbo")
    led.process(attacks=["paraphrase"], audit_config=AuditConfig(**SMALL_AUDIT), attack_budget=2, erase_options=SMALL_ERASE)
    m = _metas(tiny_world)[3]
    led.attribute_log(tiny_world / m["file_name"], m["text"], "1.00", method="pixel", at=datetime(2026, 11, 5))
    ids = {"work": led.works(studio)[0]["id"], "optout": req["id"], "certificate": led.optout_status(req["id"])["certificate_id"],
           "studio": studio, "other": other}
    led.store.engine.dispose()
    return tokens, ids


@pytest.fixture(scope="module")
def site_templates(tmp_path_factory):
    """The site of each backend, built once per module (its erase-audit-certify run is the costly part)
    and copied for every test: an SQLite ledger is a folder (the file, its key, its models, paths stored
    relative to it); a PostgreSQL one a template database (its models stay in the template's home, only
    read by the copies, which write into homes of their own)."""
    made: dict = {}
    yield made, tmp_path_factory
    for backend, (location, *_rest) in made.items():
        if backend == "postgresql":
            _pg_admin(f'DROP DATABASE IF EXISTS "{_pg_name(location)}" WITH (FORCE)')


def _pg_admin(sql: str) -> None:
    import os

    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(os.environ["DATARIGHTS_TEST_POSTGRES"]).set(drivername="postgresql")
    with psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(sql)


def _pg_name(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).database


@pytest.fixture()
def site(ledger_location, site_templates, tiny_world, tiny_trained, monkeypatch):
    """A fresh copy of the module's site for this test's backend; returns (app, tokens, ids, world)."""
    import os
    import shutil
    import uuid
    from pathlib import Path

    from datarights.audit import AuditConfig
    from datarights.web.app import create_app

    made, factory = site_templates
    db = ledger_location
    backend = "sqlite" if isinstance(db, Path) else "postgresql"
    if backend not in made and backend == "sqlite":
        location = factory.mktemp("site-sqlite") / db.name
        made[backend] = (location, *_build_site(location, tiny_world, tiny_trained), None)
    elif backend not in made:
        location = db.rsplit("/", 1)[0] + f"/dr_site_{uuid.uuid4().hex[:12]}"
        _pg_admin(f'CREATE DATABASE "{_pg_name(location)}"')
        home = factory.mktemp("site-home")
        with monkeypatch.context() as m:
            m.setenv("DATARIGHTS_LEDGER_HOME", str(home))
            made[backend] = (location, *_build_site(location, tiny_world, tiny_trained), home)
    location, tokens, ids, home = made[backend]
    if backend == "sqlite":
        for f in Path(location).parent.iterdir():
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, db.parent / f.name)
    else:
        name = _pg_name(db)
        _pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_name(location)}"')
        shutil.copytree(home, os.environ["DATARIGHTS_LEDGER_HOME"])  # its key signs; models it names stay in `home`
    app = create_app(db, process_options=dict(attacks=[], audit_config=AuditConfig(**SMALL_AUDIT), erase_options=SMALL_ERASE))
    return app, dict(tokens), {**ids, "location": db}, tiny_world


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _png(arr=None) -> bytes:
    arr = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8) if arr is None else arr
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _signed_in(app, token) -> tuple[TestClient, str]:
    c = TestClient(app)
    r = c.post("/signin", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303
    page = c.get("/optouts").text
    return c, re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


OWNER_ROUTES = [("GET", "/api/works/{work}"), ("GET", "/api/works/{work}/image"), ("GET", "/api/optouts/{optout}"),
                ("GET", "/api/certificates/{certificate}"), ("GET", "/optouts/{optout}"),
                ("GET", "/certificates/{certificate}"), ("GET", "/certificates/{certificate}.json")]


def test_every_owner_scoped_route_refuses_another_owners_ids(site):
    app, tokens, ids, _ = site
    c = TestClient(app)
    for method, route in OWNER_ROUTES:
        url = route.format(**ids)
        assert c.request(method, url, headers=_bearer(tokens["studio"])).status_code == 200, url
        assert c.request(method, url, headers=_bearer(tokens["other"])).status_code == 404, url   # not theirs
        assert c.request(method, url).status_code == 401, url                                       # nobody
        assert c.request(method, url, headers=_bearer("forged")).status_code == 401, url
    # the other owner's lists hold none of the studio's rows; statements are the caller's own
    assert c.get("/api/optouts", headers=_bearer(tokens["other"])).json()["optouts"] == []
    assert c.get("/api/certificates", headers=_bearer(tokens["other"])).json()["certificates"] == []
    assert ids["work"] not in [w["id"] for w in c.get("/api/works", headers=_bearer(tokens["other"])).json()["works"]]
    # an opt-out naming another owner's work is refused, and nothing is written
    before = c.get("/api/optouts", headers=_bearer(tokens["other"])).json()
    r = c.post("/api/optouts", headers=_bearer(tokens["other"]), json={"works": [ids["work"]]})
    assert r.status_code == 404 and c.get("/api/optouts", headers=_bearer(tokens["other"])).json() == before
    # admin routes: 403 for owners, 200 for the admin
    for url in ("/api/admin/optouts", "/api/admin/jobs", "/admin"):
        assert c.get(url, headers=_bearer(tokens["studio"])).status_code == 403, url
        assert c.get(url, headers=_bearer(tokens["admin"])).status_code == 200, url
    assert c.post("/api/admin/process", headers=_bearer(tokens["studio"])).status_code == 403
    assert c.post("/api/admin/attribute", headers=_bearer(tokens["other"]), files={"file": ("x.png", _png())},
                  data={"prompt": "a fish", "revenue": "0.04"}).status_code == 403


def test_reissuing_a_token_signs_out_the_sessions_of_the_old_one(site):
    app, tokens, ids, _ = site
    c, _ = _signed_in(app, tokens["studio"])
    other, _ = _signed_in(app, tokens["other"])
    assert c.get("/api/optouts").status_code == 200
    new = Ledger(ids["location"]).issue_token(ids["studio"])
    assert c.get("/api/optouts").status_code == 401                      # the old session is gone
    assert c.get("/optouts", follow_redirects=False).status_code == 401
    assert other.get("/api/optouts").status_code == 200                  # other owners' sessions stay
    assert c.get("/api/optouts", headers=_bearer(tokens["studio"])).status_code == 401   # so is the old token
    c2, _ = _signed_in(app, new)
    assert c2.get("/api/optouts").status_code == 200
    forged = c2.cookies.get("datarights_session")
    value, _, mac = forged.rpartition(".")
    oid, role, bound, name = value.split("|", 3)
    c3 = TestClient(app, cookies={"datarights_session": f"{oid}|admin|{bound}|{name}.{mac}"})
    assert c3.get("/api/optouts").status_code == 401                    # the signature covers the role


def test_forms_need_the_csrf_token_and_uploads_are_checked(site):
    app, tokens, ids, world = site
    c, csrf = _signed_in(app, tokens["artist"])
    assert c.post("/optouts", data={"concept": "Ada Vell"}, follow_redirects=False).status_code == 403   # no token
    assert c.post("/optouts", data={"concept": "Ada Vell", "csrf": "0" * 64}, follow_redirects=False).status_code == 403
    r = c.post("/optouts", data={"concept": "Ada Vell", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/optouts/")
    bad = c.post("/optouts", data={"concept": "Mickey", "csrf": csrf})
    assert bad.status_code == 400 and "does not know the concept" in bad.text and "Traceback" not in bad.text
    # uploads: not an image, too large, empty, and a real one
    assert c.post("/check", data={"csrf": csrf}, files={"file": ("a.png", b"hello")}).status_code == 400
    assert c.post("/check", data={"csrf": csrf}, files={"file": ("a.png", b"")}).status_code == 400
    big = b"\x89PNG" + b"0" * (9 * 1024 * 1024)
    assert c.post("/api/lookup", headers=_bearer(tokens["studio"]), files={"file": ("a.png", big)}).status_code == 413
    m = _metas(world)[0]
    r = c.post("/check", data={"csrf": csrf}, files={"file": ("w.png", (world / m["file_name"]).read_bytes())})
    assert r.status_code == 200 and "exact" in r.text and m["owner"] in r.text
    js = c.post("/api/lookup", headers=_bearer(tokens["other"]), files={"file": ("w.png", (world / m["file_name"]).read_bytes())})
    assert js.json()["matches"][0]["match"] == "exact"
    # a JSON body that is not an object; a body that is not declared as JSON is not parsed as JSON
    json_type = {**_bearer(tokens["studio"]), "content-type": "application/json"}
    assert c.post("/api/optouts", headers=json_type, content=b"[1]").status_code == 400
    assert c.post("/api/optouts", headers={**_bearer(tokens["studio"]), "content-type": "text/plain"},
                  content=b'{"concept": "Ada Vell"}').status_code == 415


def test_pages_render_for_owner_and_admin(site):
    app, tokens, ids, world = site
    c, csrf = _signed_in(app, tokens["studio"])
    for url in ("/works", "/check", "/optouts", f"/optouts/{ids['optout']}", f"/certificates/{ids['certificate']}",
                "/statements", "/statements?period=2026-11"):
        r = c.get(url)
        assert r.status_code == 200 and "Traceback" not in r.text, url
    assert 'id="signature">valid' in c.get(f"/certificates/{ids['certificate']}").text
    assert "before:" in c.get(f"/certificates/{ids['certificate']}").text                # before/after grids
    assert c.get("/statements?period=2026-13").status_code == 400
    a, admin_csrf = _signed_in(app, tokens["admin"])
    assert "Pending opt-outs" in a.get("/admin").text
    m = _metas(world)[2]
    form = {"csrf": admin_csrf, "prompt": m["text"], "revenue": "0.10", "method": "pixel", "key": "form-1"}
    image = {"file": ("g.png", (world / m["file_name"]).read_bytes())}
    queued = a.post("/admin/attribute", data=form, files=image, follow_redirects=False)
    assert queued.status_code == 303 and queued.headers["location"].startswith("/admin/jobs/")   # POST-redirect-GET
    job = _wait_for_job(app, tokens["admin"], int(queued.headers["location"].rsplit("/", 1)[1]))
    page = a.get(queued.headers["location"]).text
    assert job["status"] == "done" and "10 cents (USD) split among" in page
    # the same form sent again (a reload of the POST, a double click): the first payment, nothing new
    again = a.post("/admin/attribute", data=form, files=image, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == queued.headers["location"]     # the same job
    assert "Recorded before" not in a.get(queued.headers["location"]).text                # reloading the result
    from sqlalchemy import func, select

    from datarights.ledger.schema import AttributionEvent
    with app.state.ledger.store.read() as s:
        sha = app.state.ledger.event(job["result"]["event_id"])["image_sha256"]
        assert s.scalar(select(func.count()).select_from(AttributionEvent)
                        .where(AttributionEvent.image_sha256 == sha)) == 1        # one event for this generation
    docs = c.get("/openapi.json").json()
    assert "/api/optouts" in docs["paths"] and "/api/admin/process" in docs["paths"]


def _wait_for_job(app, admin_token: str, job_id: int, timeout: float = 180) -> dict:
    c = TestClient(app)
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = c.get(f"/api/admin/jobs/{job_id}", headers=_bearer(admin_token)).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_the_admin_processes_in_the_background_and_the_owner_follows(site):
    app, tokens, ids, _ = site
    c = TestClient(app)
    r = c.post("/api/optouts", headers=_bearer(tokens["artist"]), json={"concept": "Ada Vell"})
    assert r.status_code == 201
    rid = r.json()["id"]
    assert c.post("/api/admin/process", headers=_bearer(tokens["admin"])).json()["started"]
    deadline = time.time() + 120
    while time.time() < deadline:
        status = c.get(f"/api/optouts/{rid}", headers=_bearer(tokens["artist"])).json()
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert status["status"] == "done", status
    cert = c.get(f"/api/certificates/{status['certificate_id']}", headers=_bearer(tokens["artist"])).json()
    from datarights.ledger import verify_certificate
    keys = c.get("/.well-known/datarights-keys.json").json()["keys"]            # published, no sign-in
    assert verify_certificate(json.loads(json.dumps(cert)), trusted=[k["public_key"] for k in keys])["valid"]
    assert not verify_certificate(json.loads(json.dumps(cert)))["valid"]        # no pinned key: no pass
    st = c.get("/api/statements/2026-11", headers=_bearer(tokens["admin"])).json()
    assert st["total_cents"] == 0 and st["items"] == []             # the admin owns no works: earns nothing


def test_kill_9_of_the_worker_during_process_leaves_the_job_failed_and_resumable(tmp_path, tiny_world, tiny_trained):
    """The worker that `datarights serve` started is killed with SIGKILL while its job runs: the server
    keeps answering, the job is marked failed and its request pending again when the ledger is next
    opened, no edited folder is half-written, and the next run certifies it."""
    import os
    import signal
    import sqlite3

    import httpx

    from .conftest import serve

    db = tmp_path / "l.db"
    led = Ledger(db, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    studio = _owner_with_character(tiny_world)
    owner, admin = led.issue_token(studio), led.issue_token("admin", admin=True)
    led.store.engine.dispose()
    srv, url = serve(db, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    try:
        rid = httpx.post(url + "/api/optouts", headers=_bearer(owner), json={"concept": "Blubbo"}, timeout=30).json()["id"]
        assert httpx.post(url + "/api/admin/process", headers=_bearer(admin), timeout=30).status_code == 202
        while time.time() < deadline:
            with sqlite3.connect(db) as c:
                row = c.execute("SELECT id, status, pid FROM jobs").fetchone()
            if row and row[1] == "running":
                break
            time.sleep(0.05)
        assert row and row[1] == "running" and row[2] != srv.pid          # the job runs in the worker process
        os.kill(row[2], signal.SIGKILL)
        while time.time() < deadline and httpx.get(url + "/api/admin/jobs", headers=_bearer(admin), timeout=30).json()["running"]:
            time.sleep(0.1)                          # the server notices its worker is gone
        assert httpx.get(url + "/api/me", headers=_bearer(owner), timeout=30).status_code == 200   # the site stays up
    finally:
        srv.terminate()
        srv.wait()
    again = Ledger(db)                               # opening recovers the dead job
    jobs = again.jobs()
    assert again.optout_status(rid)["status"] == "pending"
    if again.root.exists():                          # whole edited folders only (a killed write's temp folder is swept)
        assert all((p / "model_index.json").is_file() for p in again.root.iterdir()
                   if p.is_dir() and p.name != "generations")
    from datarights.audit import AuditConfig
    done = again.process(attacks=[], audit_config=AuditConfig(**SMALL_AUDIT), erase_options=SMALL_ERASE)
    assert done[0]["status"] == "done" and again.optout_status(rid)["certificate_id"] is not None
    killed = next(j for j in jobs if j["id"] == row[0])
    assert killed["status"] == "failed" and "interrupted" in killed["error"]
