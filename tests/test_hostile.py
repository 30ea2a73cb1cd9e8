"""Nothing a user owns is lost, and no input crashes the ledger or the server.

The cases a careless or hostile user tries: outputs that name the ledger, its key or a device;
files that are not ledgers (left byte-identical); unbounded bodies, fields, ranks, ids, periods and
amounts; two processors on one opt-out; a damaged signing key; the default model moved by an
import; cross-site API calls; malformed certificates; a busy port; and, bounded in count and time,
a fuzz over the ledger commands and every HTTP route of the OpenAPI document.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from datarights.errors import DatarightsError
from datarights.ledger import Ledger

from .conftest import serve
from .test_cli import run
from .test_ledger import ARTIST, SMALL_AUDIT, SMALL_ERASE, _metas, _owner_with_character

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line(code, err, message=None):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if message is not None:
        assert message in err, err


@pytest.fixture(scope="module")
def certified(tmp_path_factory, tiny_world, tiny_trained):
    """A ledger with one processed opt-out (certificate 1), tokens for two owners and an admin; copied
    fresh for each test that changes it (`fresh`)."""
    from datarights.audit import AuditConfig

    folder = tmp_path_factory.mktemp("certified")
    db = folder / "l.db"
    led = Ledger(db, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    studio = _owner_with_character(tiny_world)
    other = next(m["owner"] for m in _metas(tiny_world) if m["owner"] != studio)
    tokens = {"studio": led.issue_token(studio), "other": led.issue_token(other),
              "admin": led.issue_token("admin", admin=True), "artist": led.issue_token(ARTIST)}
    led.optout(studio, concept="Blubbo")
    led.process(attacks=[], audit_config=AuditConfig(**SMALL_AUDIT), erase_options=SMALL_ERASE)
    led.store.engine.dispose()
    return {"folder": folder, "db": db, "tokens": tokens, "studio": studio, "other": other, "artist": ARTIST}


@pytest.fixture()
def fresh(certified, tmp_path):
    """A private copy of the certified ledger (database, key, edited models)."""
    dst = tmp_path / "ledger"
    shutil.copytree(certified["folder"], dst)
    return {**certified, "folder": dst, "db": dst / "l.db"}


# ----------------------------------------------------------------------------- data loss
def test_certificate_out_never_replaces_the_ledger_its_key_or_a_file_it_did_not_write(monkeypatch, capsys, fresh):
    db, folder = fresh["db"], fresh["folder"]
    key = Path(str(db) + ".key")
    before = {p: digest(p) for p in (db, key)}
    mine = folder / "notes.json"
    mine.write_text('{"my": "notes"}')
    (folder / "photo.png").write_bytes(b"\x89PNG not really")
    os.mkfifo(folder / "pipe.json")
    (folder / "link.json").symlink_to(db)
    cases = [(db, "must be a .json"), (key, "must be a .json"), (folder / "photo.png", "must be a .json"),
             ("/dev/null", "must be a .json"), (mine, "not written by datarights"),
             (folder / "pipe.json", "not a plain file"), (folder / "link.json", "symbolic link"),
             (folder / "l-models" / "c.json", "lies inside the input")]
    for out, message in cases:
        code, _, err = run(monkeypatch, capsys, "ledger", "certificate", "1", "--ledger", db, "--out", out, "--overwrite")
        one_line(code, err, message)
    # a ledger or key that happens to be named .json is refused as an input, whatever --overwrite says
    shutil.copy(db, folder / "ledger.json")
    code, _, err = run(monkeypatch, capsys, "ledger", "certificate", "1", "--ledger", folder / "ledger.json",
                       "--out", folder / "ledger.json", "--overwrite")
    one_line(code, err, "is the input")
    assert {p: digest(p) for p in (db, key)} == before and mine.read_text() == '{"my": "notes"}'
    assert (folder / "link.json").is_symlink() and Path("/dev/null").is_char_device()
    # its own certificate: written, refused again without --overwrite, replaced with it
    out = folder / "c.json"
    code, _, err = run(monkeypatch, capsys, "ledger", "certificate", "1", "--ledger", db, "--out", out)
    assert code == 0, err
    assert json.loads(out.read_text())["document"]["type"] == "datarights erase certificate"
    code, _, err = run(monkeypatch, capsys, "ledger", "certificate", "1", "--ledger", db, "--out", out)
    one_line(code, err, "pass --overwrite")
    code, _, err = run(monkeypatch, capsys, "ledger", "certificate", "1", "--ledger", db, "--out", out, "--overwrite")
    assert code == 0, err
    assert digest(db) == before[db]


def _other_app_db(path: Path) -> Path:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("INSERT INTO photos (name) VALUES ('holiday')")
    return path


def test_files_that_are_not_ledgers_are_left_byte_identical(monkeypatch, capsys, tmp_path, tiny_world):
    other = _other_app_db(tmp_path / "photos.db")
    alembic_app = tmp_path / "alembic-app.db"             # another application that also uses Alembic
    with sqlite3.connect(alembic_app) as c:
        c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        c.execute("INSERT INTO alembic_version VALUES ('0001')")
        c.execute("CREATE TABLE invoices (id INTEGER)")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    for path in (other, alembic_app, empty, text):
        before = digest(path)
        for create in (False, True):
            with pytest.raises(DatarightsError, match="not a datarights ledger|empty"):
                Ledger(path, create=create)
        code, _, err = run(monkeypatch, capsys, "ledger", "import", tiny_world, "--ledger", path)
        one_line(code, err)
        code, _, err = run(monkeypatch, capsys, "ledger", "owners", "--ledger", path)
        one_line(code, err)
        assert digest(path) == before, path
        assert not Path(str(path) + "-wal").exists() and not Path(str(path) + "-shm").exists(), path
    # importing something that is not a dataset creates no ledger at all
    code, _, err = run(monkeypatch, capsys, "ledger", "import", text)
    one_line(code, err, "does not exist")
    assert not Path("datarights-ledger.db").exists() and not list(Path.cwd().iterdir())


@pytest.mark.parametrize("url, message", [
    ("mysql://user:secret@127.0.0.1/db", "not supported"),
    ("bogus://x", "not supported"),
    ("postgresql://user:secret@127.0.0.1:9/none", None),     # no driver, or no server: one line either way
    ("sqlite:////nonexistent-folder/x.db", "does not exist"),
])
def test_database_urls_are_one_line_errors_without_the_password(monkeypatch, capsys, url, message):
    code, _, err = run(monkeypatch, capsys, "ledger", "owners", "--ledger", url)
    one_line(code, err, message)
    assert "secret" not in err


def test_a_read_only_ledger_is_read_and_never_written(monkeypatch, capsys, fresh):
    db = fresh["db"]
    before = digest(db)
    led = Ledger(db, readonly=True)
    assert led.readonly and led.owners() and led.certificate(1)["document"]["optout"]["concept"] == "Blubbo"
    with pytest.raises(DatarightsError, match="read-only"):
        led.issue_token(fresh["studio"])
    with pytest.raises(DatarightsError, match="read-only"):
        led.optout(ARTIST, concept="Ada Vell")
    for args in (["owners"], ["models"], ["status"], ["statement", "--owner", fresh["studio"], "--period", "2026-11"],
                 ["certificate", "1"]):
        code, _, err = run(monkeypatch, capsys, "ledger", *args, "--ledger", db)
        assert code == 0, (args, err)
    assert digest(db) == before


def test_a_ledger_this_process_cannot_write_opens_read_only(monkeypatch, capsys, fresh):
    """A read-only copy (here: the permission check answers no, as for another user's file): every
    reading command works, a writing one is one line, and nothing is written."""
    import datarights.ledger.db as db_module

    monkeypatch.setattr(db_module, "_writable", lambda path: False)
    db = fresh["db"]
    before = digest(db)
    code, out, err = run(monkeypatch, capsys, "ledger", "owners", "--ledger", db)
    assert code == 0 and fresh["studio"] in out, err
    code, _, err = run(monkeypatch, capsys, "ledger", "token", "--owner", fresh["studio"], "--ledger", db)
    one_line(code, err, "is read-only here; nothing was changed")
    code, _, err = run(monkeypatch, capsys, "ledger", "process", "--ledger", db)
    one_line(code, err, "read-only")
    assert digest(db) == before


# ----------------------------------------------------------------------------- limits
def _client(certified, **kw):
    from datarights.web.app import create_app
    return TestClient(create_app(certified["db"], process_options=dict(attacks=[])), **kw)


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_an_unauthenticated_upload_is_refused_before_anything_is_spooled(fresh, tmp_path, monkeypatch):
    import tempfile

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    c = _client(fresh)
    chunk = b"\0" * (1 << 20)
    boundary = "xyz"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body(mb):
        yield head
        for _ in range(mb):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()
    kinds = {"content-type": f"multipart/form-data; boundary={boundary}"}
    before = _du(spool) + _du(fresh["folder"])
    # 100 MB streamed without a length, and declared with one: 401 for nobody, 413 for an owner
    r = c.post("/api/lookup", content=body(100), headers=kinds)
    assert r.status_code == 401, r.text
    r = c.post("/api/lookup", content=b"x" * 1024, headers={**kinds, "content-length": str(100 << 20)})
    assert r.status_code == 413, r.text
    r = c.post("/api/lookup", content=body(100), headers={**kinds, **_bearer(fresh["tokens"]["studio"])})
    assert r.status_code == 413 and "larger than" in r.json()["error"], r.text
    r = c.post("/check", content=body(100), headers=kinds)
    assert r.status_code == 401 and "<html" in r.text.lower()
    assert _du(spool) + _du(fresh["folder"]) - before < 1 << 20


def test_json_bodies_fields_and_depth_are_bounded_before_any_write(fresh):
    c = _client(fresh)
    h = {**_bearer(fresh["tokens"]["artist"]), "content-type": "application/json"}
    size = fresh["db"].stat().st_size
    listed = c.get("/api/optouts", headers=h).json()
    cases = [(json.dumps({"concept": "Ada Vell", "anchor": "x" * (10 << 20)}), 413),
             (json.dumps({"concept": "x" * 300}), 400),
             ("[" * 20_000 + "]" * 20_000, 400),
             ('{"concept": NaN}', 400), ('{"works": ["abc"]}', 400), ('{"works": 5}', 400), ('{"works": "1,2"}', 400),
             ('{"concept": 123}', 400), ('{"anchor": ["x"], "concept": "Ada Vell"}', 400),
             ('{"works": [true]}', 400), ('{"works": [99999999999999999999999]}', 404),
             ('{"concept": "Ada Vell", "model_id": 99999999999999999999}', 404), ("not json", 400),
             ('"just a string"', 400), ('{"concept": "Ada\\u0000Vell"}', 400)]
    for body, status in cases:
        r = c.post("/api/optouts", content=body.encode(), headers=h)
        assert r.status_code == status, (body[:60], r.status_code, r.text[:200])
        assert "Traceback" not in r.text
    assert c.get("/api/optouts", headers=h).json() == listed and fresh["db"].stat().st_size == size


def test_lora_rank_is_bounded_by_the_limit_and_the_matrices(monkeypatch, capsys, tmp_path, tiny_trained):
    common = ["erase", "--target", "grumpy face", "--anchor", "face", "--params", "lora-xattn-kv", "--steps", "1",
              "--model", tiny_trained]
    for rank, message in (("1000000", "between 1 and 1024"), (str(2**31), "between 1 and 1024"), ("0", "between 1"),
                          ("500", "at most 16")):      # the tiny UNet's cross-attention K/V are 16 wide
        code, _, err = run(monkeypatch, capsys, *common, "--lora-rank", rank, "--out", tmp_path / f"e{rank}")
        one_line(code, err, message)
        assert not (tmp_path / f"e{rank}").exists()


def test_ids_periods_amounts_and_names_out_of_range_are_one_line_errors(monkeypatch, capsys, fresh, tiny_world):
    db, studio = fresh["db"], fresh["studio"]
    image = tiny_world / _metas(tiny_world)[0]["file_name"]
    big = str(2**64 + 1)
    cases = [
        (["certificate", big], "unknown certificate"),
        (["certificate", "0"], "unknown certificate"),
        (["optout", "--owner", studio, "--works", big], "unknown work"),
        (["optout", "--owner", studio, "--concept", "Blubbo", "--model-id", big], "unknown model"),
        (["default-model", big], "unknown model"),
        (["statement", "--owner", studio, "--period", "9999-12"], "between 1970 and 2999"),
        (["statement", "--owner", studio, "--period", "0000-01"], "between 1970 and 2999"),
        (["statement", "--owner", studio, "--period", "2026-12\n"], "a month such as"),
        (["statement", "--owner", studio, "--period", "２０２６-12"], "a month such as"),
        (["lookup", image, "--limit", big], "between 1 and"),
        (["token", "--admin", "a" * 100_000], "at most 200"),
        (["token", "--admin", "bad\x01name"], "control character"),
    ]
    for revenue in ("1_000", "1e3", "1e30", "1e400", "٣", "0.001", "1000000.01"):
        cases.append((["attribute-log", image, "--prompt", "a fish", "--revenue", revenue], "revenue"))
    for args, message in cases:
        code, _, err = run(monkeypatch, capsys, "ledger", *args, "--ledger", db)
        one_line(code, err, message)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM attribution_events").fetchone()[0] == 0


def test_a_paid_generation_refuses_bad_money_before_it_attributes(fresh, tiny_world, monkeypatch):
    import datarights.attribute as attribution

    def no_attribution(*a, **k):
        raise AssertionError("attribution ran before the revenue was checked")
    monkeypatch.setattr(attribution, "attribute", no_attribution)
    led = Ledger(fresh["db"])
    image = tiny_world / _metas(tiny_world)[0]["file_name"]
    for bad in ("1e30", "1_000", "٣", "1e3"):
        with pytest.raises(DatarightsError, match="revenue"):
            led.attribute_log(image, "a fish", bad, method="pixel")


def _dataset(tmp_path: Path, tiny_world: Path, rows: list[dict], name: str = "extra") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for r in rows:
        shutil.copy(tiny_world / r["file_name"], folder / Path(r["file_name"]).name)
    (folder / "metadata.jsonl").write_text("".join(json.dumps({**r, "file_name": Path(r["file_name"]).name}) + "\n"
                                                   for r in rows))
    return folder


def test_import_refuses_long_names_control_characters_and_labels_that_are_not_text(monkeypatch, capsys, tmp_path,
                                                                                   tiny_world):
    m = _metas(tiny_world)[0]
    for i, (row, message) in enumerate([({**m, "owner": "x" * 200_001}, "at most 200"),
                                        ({**m, "owner": "Ada\x00Vell"}, "control character"),
                                        ({**m, "style": {"name": "Ada Vell"}}, "must be text"),
                                        ({**m, "text": "y" * 3000}, "at most 2,000")]):
        folder = _dataset(tmp_path, tiny_world, [row], f"bad{i}")
        code, _, err = run(monkeypatch, capsys, "ledger", "import", folder, "--ledger", tmp_path / f"l{i}.db")
        one_line(code, err, message)
        assert not (tmp_path / f"l{i}.db").exists()                       # no ledger made for a refused folder


# ----------------------------------------------------------------------------- integrity
def twice(fn, timeout: float = 300) -> list:
    """fn() in two threads at once; both results (an exception in either fails the test)."""
    results, errors = [], []

    def one():
        try:
            results.append(fn())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not errors, errors
    assert len(results) == 2, "a thread did not finish"
    return results


def test_two_processors_on_one_pending_optout_make_one_job_and_one_certificate(fresh, monkeypatch):
    from datarights.audit import AuditConfig
    from datarights.ledger import workflow

    led = Ledger(fresh["db"])
    req = led.optout(ARTIST, concept="Ada Vell")
    both_read = threading.Barrier(2, timeout=60)
    original = workflow._pending

    def pending_then_wait(ledger, limit):
        rows = original(ledger, limit)
        both_read.wait()                  # both runs have read the same pending list before either claims
        return rows
    monkeypatch.setattr(workflow, "_pending", pending_then_wait)
    results = twice(lambda: Ledger(fresh["db"]).process(attacks=[], audit_config=AuditConfig(**SMALL_AUDIT),
                                                        erase_options=SMALL_ERASE))
    assert sorted(len(r) for r in results) == [0, 1]
    with sqlite3.connect(fresh["db"]) as c:
        jobs = c.execute("SELECT id FROM jobs WHERE optouts LIKE ?", (f"%{req['id']}%",)).fetchall()
        certs = c.execute("SELECT job_id FROM certificates WHERE optout_id = ?", (req["id"],)).fetchall()
    assert len(jobs) == 1 and certs == jobs
    assert led.optout_status(req["id"])["job_id"] == jobs[0][0]


def test_a_damaged_signing_key_stops_processing_before_any_work(fresh):
    led = Ledger(fresh["db"])
    req = led.optout(ARTIST, concept="Ada Vell")
    Path(str(fresh["db"]) + ".key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    jobs_before = len(led.jobs())
    with pytest.raises(DatarightsError, match="signing key"):
        led.process(attacks=[])
    assert len(led.jobs()) == jobs_before and led.optout_status(req["id"])["status"] == "pending"


def test_an_import_never_moves_the_default_model(monkeypatch, capsys, fresh, tmp_path, tiny_world, tiny_trained):
    db = fresh["db"]
    led = Ledger(db)
    default = next(m for m in led.models() if m["default"])
    extra = _dataset(tmp_path, tiny_world, _metas(tiny_world)[:3])
    r = led.import_dataset(extra)                                     # no model: the dataset alone
    assert r["model_id"] is None and r["default_model_id"] == default["id"]
    extra2 = _dataset(tmp_path, tiny_world, _metas(tiny_world)[3:6], "extra2")
    r = led.import_dataset(extra2, tiny_trained)                      # a model for it, not the default
    assert r["model_id"] != default["id"] and r["default_model_id"] == default["id"]
    assert [m["id"] for m in led.models() if m["default"]] == [default["id"]]
    code, out, err = run(monkeypatch, capsys, "ledger", "models", "--ledger", db)
    assert code == 0 and out.splitlines()[default["id"] - 1].startswith("*"), out
    code, _, err = run(monkeypatch, capsys, "ledger", "default-model", str(r["model_id"]), "--ledger", db)
    assert code == 0, err
    assert [m["id"] for m in Ledger(db).models() if m["default"]] == [r["model_id"]]
    assert Ledger(db).optout(ARTIST, concept="Ada Vell")["model_id"] == r["model_id"]


def test_two_imports_of_one_new_folder_at_once_make_one_version(fresh, tmp_path, tiny_world):
    extra = _dataset(tmp_path, tiny_world, _metas(tiny_world)[:8])
    out = twice(lambda: Ledger(fresh["db"]).import_dataset(extra))
    assert {r["dataset_id"] for r in out} == {out[0]["dataset_id"]} and {r["version"] for r in out} == {1}


def test_the_api_is_not_a_csrf_hole(fresh):
    c = _client(fresh)
    assert c.post("/signin", data={"token": fresh["tokens"]["artist"]}, follow_redirects=False).status_code == 303
    page = c.get("/optouts").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    body = json.dumps({"concept": "Ada Vell"}).encode()
    js = {"content-type": "application/json"}
    assert c.post("/api/optouts", content=body, headers=js).status_code == 403          # cookie alone
    assert c.post("/api/optouts", content=body, headers={"content-type": "text/plain"}).status_code == 403
    assert c.post("/api/admin/process").status_code == 403
    assert c.get("/api/optouts").json()["optouts"] == []                                  # reads still work
    r = c.post("/api/optouts", content=body, headers={**js, "x-csrf-token": csrf})
    assert r.status_code == 201, r.text
    bearer = _bearer(fresh["tokens"]["artist"])
    assert c.post("/api/optouts", content=body, headers={"content-type": "text/plain", **bearer}).status_code == 415


# ----------------------------------------------------------------------------- one-line answers
def test_malformed_certificates_are_one_line_errors(monkeypatch, capsys, fresh, tmp_path):
    cert = Ledger(fresh["db"], readonly=True).certificate(1)
    variants = {"signer-string": lambda c: c["document"].__setitem__("signer", "me"),
                "key-not-hex": lambda c: c["document"]["signer"].__setitem__("public_key", "zz" * 32),
                "edited-string": lambda c: c["document"].__setitem__("edited_model", "x"),
                "signature-number": lambda c: c.__setitem__("signature", 7)}
    for name, change in variants.items():
        c = json.loads(json.dumps(cert))
        change(c)
        (tmp_path / f"{name}.json").write_text(json.dumps(c))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "nan.json").write_text('{"document": {"x": NaN}, "signature": "00"}')
    for f in sorted(tmp_path.glob("*.json")):
        code, _, err = run(monkeypatch, capsys, "ledger", "verify-certificate", f)
        one_line(code, err)


def test_evaluate_refuses_unknown_methods_before_training(monkeypatch, capsys, tmp_path):
    for cmd in ("counterfactual", "lds"):
        t0 = time.time()
        code, _, err = run(monkeypatch, capsys, "evaluate", cmd, "--methods", "evil", "--run", tmp_path / cmd)
        one_line(code, err, "unknown attribution method 'evil'")
        assert time.time() - t0 < 30 and not (tmp_path / cmd).exists()


def test_serve_on_a_busy_port_or_an_unknown_host_is_one_line(monkeypatch, capsys, fresh):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code, _, err = run(monkeypatch, capsys, "serve", "--ledger", fresh["db"], "--port", str(port))
        one_line(code, err, "already in use")
        assert "serving" not in err
    code, _, err = run(monkeypatch, capsys, "serve", "--ledger", fresh["db"], "--host", "no-such-host.invalid")
    one_line(code, err, "not an address of this machine")


def test_an_empty_device_is_refused(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "generate", "a face", "--device", "")
    one_line(code, err, "--device is empty")


def test_web_errors_name_no_server_path_and_unknown_pages_are_pages(fresh):
    c = _client(fresh)
    h = _bearer(fresh["tokens"]["studio"])
    r = c.post("/api/lookup", headers=h, files={"file": ("a.png", b"definitely not an image")})
    assert r.status_code == 400 and "the uploaded image is not a readable image" in r.json()["error"]
    assert "/tmp" not in r.text and "datarights-upload" not in r.text
    r = c.get("/no/such/page")
    assert r.status_code == 404 and "<html" in r.text.lower() and "no such page" in r.text
    assert c.get("/api/no/such", headers=h).json() == {"error": "there is no such page"}
    assert c.get("/api/admin/jobs/999", headers=_bearer(fresh["tokens"]["admin"])).status_code == 404
    assert c.get(f"/api/works/{2**70}", headers=h).status_code == 404
    assert c.get(f"/api/certificates/{2**70}", headers=h).status_code == 404
    assert c.get(f"/api/works?offset={2**70}", headers=h).status_code == 400
    assert c.get(f"/works?page_no={2**70}", headers=h).status_code == 200


# ----------------------------------------------------------------------------- the event loop stays free
LOAD = """
import sys, threading, httpx
url, token, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(path, "rb").read()
codes = []
def one():
    with httpx.Client(timeout=300) as c:
        codes.append(c.post(url + "/api/lookup", headers={"Authorization": "Bearer " + token},
                            files={"file": ("p.png", data)}).status_code)
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(",".join(map(str, codes)))
"""


def test_an_owners_page_answers_while_50_lookups_run(fresh, tmp_path):
    """50 lookups of a 4.3 MB photo in flight (sent by another process); `GET /api/me` meanwhile."""
    import httpx

    token = fresh["tokens"]["studio"]
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(photo)
    srv, url = serve(fresh["db"])
    deadline = time.time() + 60
    try:
        load = subprocess.Popen([sys.executable, "-c", LOAD, url, token, str(photo), "50"], stdout=subprocess.PIPE,
                                text=True)
        latencies = []
        with httpx.Client(timeout=30) as c:
            time.sleep(0.5)                                           # the uploads have begun
            while load.poll() is None and time.time() < deadline + 240:
                t0 = time.perf_counter()
                assert c.get(url + "/api/me", headers=_bearer(token)).status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)
        out, _ = load.communicate(timeout=300)
    finally:
        srv.terminate()
        srv.wait(timeout=30)
    assert out.strip().split(",") == ["200"] * 50, out
    assert len(latencies) >= 5, f"only {len(latencies)} requests while the lookups ran: the test measured too little"
    print(f"GET /api/me during 50 lookups: worst {max(latencies):.3f} s of {len(latencies)}")   # shown with -s
    assert max(latencies) < 0.5, latencies


# ----------------------------------------------------------------------------- fuzz
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=1100, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
WEIRD_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "0", "-1", "1e400", "NaN", "../../etc/passwd",
                                                               "%00", "\x00", "٣", str(2**64), "2026-13", "9999-12",
                                                               "Blubbo", "Ada Vell", "' OR 1=1 --"]))
WEIRD_ID = st.one_of(st.integers(-2**70, 2**70), st.integers(0, 5), WEIRD_TEXT)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                              WEIRD_TEXT), lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.sampled_from(["works", "concept", "anchor", "model_id", "x"]), inner, max_size=4),
                    max_leaves=12)


@pytest.fixture(scope="module")
def fuzz_site(certified, tmp_path_factory):
    from datarights.web.app import create_app

    folder = tmp_path_factory.mktemp("fuzz") / "ledger"
    shutil.copytree(certified["folder"], folder)
    app = create_app(folder / "l.db", process_options=dict(attacks=[]))
    routes = [(m.upper(), p) for p, ops in TestClient(app).get("/openapi.json").json()["paths"].items() for m in ops
              if not p.endswith("/process")]          # starting real erase jobs is tested elsewhere
    return app, routes, certified["tokens"], str(tmp_path_factory.getbasetemp())


def _no_leak(r, basetemp: str):
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.headers.get("content-type", "").startswith(("application/json", "text/html")):
        assert "Traceback" not in r.text and basetemp not in r.text and "site-packages" not in r.text, r.text[:300]
        if r.status_code >= 400:       # an error in plain words: no command to run, no command-line flag
            assert "`datarights" not in r.text and not re.search(r"(^|[\s'\"(])--[a-z]", r.text), r.text[:300]


def test_fuzz_every_http_route(fuzz_site):
    app, routes, tokens, basetemp = fuzz_site
    client = TestClient(app, raise_server_exceptions=False)
    count = {"n": 0}

    @FUZZ
    @given(route=st.sampled_from(routes), ident=WEIRD_ID, auth=st.sampled_from(["none", "studio", "other", "admin", "junk"]),
           body=JSON, kind=st.sampled_from(["json", "text", "multipart", "form", "none"]), query=st.dictionaries(
               st.sampled_from(["limit", "offset", "status", "page_no", "period"]), WEIRD_TEXT, max_size=2),
           blob=st.binary(max_size=64))
    def one(route, ident, auth, body, kind, query, blob):
        method, template = route
        url = re.sub(r"\{[^}]+\}", lambda _: quote(str(ident), safe=""), template)
        headers = {} if auth == "none" else _bearer(tokens.get(auth, "junk-token"))
        kw = {}
        if method != "GET":
            if kind == "json":
                kw = {"content": json.dumps(body).encode(), "headers": {**headers, "content-type": "application/json"}}
            elif kind == "text":
                kw = {"content": json.dumps(body).encode(), "headers": {**headers, "content-type": "text/plain"}}
            elif kind == "multipart":
                kw = {"files": {"file": ("x.png", blob)}, "data": {"prompt": str(body)[:50], "revenue": str(ident)[:20],
                                                                   "method": "pixel"}, "headers": headers}
            elif kind == "form":
                kw = {"data": {"concept": str(body)[:50], "works": str(ident)[:30], "csrf": "0"}, "headers": headers}
            else:
                kw = {"headers": headers}
        else:
            kw = {"headers": headers}
        r = client.request(method, url, params=query, **kw)
        count["n"] += 1
        _no_leak(r, basetemp)
    one()
    assert count["n"] >= 1000


def test_fuzz_the_ledger_commands(monkeypatch, capsys, fresh, tmp_path, tiny_world):
    db = str(fresh["db"])
    image = str(tiny_world / _metas(tiny_world)[0]["file_name"])
    cert = tmp_path / "cert.json"
    commands = st.one_of(
        st.tuples(st.just("optout"), st.just("--owner"), WEIRD_TEXT | st.just(fresh["studio"]), st.just("--works"),
                  WEIRD_TEXT),
        st.tuples(st.just("optout"), st.just("--owner"), st.just(fresh["studio"]), st.just("--concept"), WEIRD_TEXT,
                  st.just("--model-id"), st.integers(-2**70, 2**70).map(str)),
        st.tuples(st.just("statement"), st.just("--owner"), WEIRD_TEXT | st.just(fresh["studio"]), st.just("--period"),
                  WEIRD_TEXT),
        st.tuples(st.just("certificate"), WEIRD_ID.map(str)),
        st.tuples(st.just("default-model"), WEIRD_ID.map(str)),
        st.tuples(st.just("lookup"), st.sampled_from([image, str(tmp_path), "/dev/null", "missing.png"]), st.just("--limit"),
                  WEIRD_ID.map(str)),
        st.tuples(st.just("attribute-log"), st.just(image), st.just("--prompt"), WEIRD_TEXT, st.just("--revenue"),
                  WEIRD_TEXT.filter(lambda t: not re.fullmatch(r"\s*[0-9]{1,9}(\.[0-9]{1,2})?\s*", t))),
        st.tuples(st.just("token"), st.sampled_from(["--owner", "--admin"]), WEIRD_TEXT),
        st.tuples(st.just("verify-certificate"), st.just(str(cert))),
    )
    seen = {"n": 0}

    @settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(args=commands, doc=JSON)
    def one(args, doc):
        cert.write_text(json.dumps(doc))
        args = [a.replace("\x00", "") for a in args]      # a NUL cannot be passed in argv at all
        code, _, err = run(monkeypatch, capsys, "ledger", *args, "--ledger", db) if args[0] != "verify-certificate" \
            else run(monkeypatch, capsys, "ledger", *args)
        seen["n"] += 1
        assert code in (0, 2), (args, code, err)
        assert "Traceback" not in err, (args, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1, (args, err)          # usage errors too
    one()
    assert seen["n"] >= 100


def test_the_readme_lists_every_limit():
    import datarights.limits as limits

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    names = [n for n in dir(limits) if n.isupper() and (n.startswith("MAX_") or n.endswith("_YEARS"))]
    assert len(names) >= 15
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"README's Limits table lacks {missing}"


def test_a_ledger_at_the_first_revision_upgrades_and_keeps_its_default_model(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine

    from datarights.ledger.db import _alembic_config, known_revisions

    db = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        for i, base in ((1, None), (2, 1), (3, None), (4, 3)):     # two base models, each with an edit
            conn.exec_driver_sql("INSERT INTO models (id, path, kind, weights_sha256, base_id, created_at) VALUES "
                                 f"({i}, 'default', 'world', 'x', {base or 'NULL'}, '2026-11-01')")
    engine.dispose()
    led = Ledger(db)
    # the newest base model stays the default; each line is served by its base (the edits were side edits)
    assert [(m["id"], m["line"], m["current"], m["default"]) for m in led.models()] == \
        [(1, 1, True, False), (2, 1, False, False), (3, 3, True, True), (4, 3, False, False)]
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone()[0] == known_revisions()[1]


# ----------------------------------------------------------------------------- certificates a third party can check
def test_a_certificate_resigned_by_an_unpinned_key_does_not_verify(monkeypatch, capsys, fresh, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from datarights.ledger import signing

    led = Ledger(fresh["db"], readonly=True)
    real = tmp_path / "real.json"
    real.write_text(json.dumps(led.certificate(1)))
    keys = tmp_path / "keys.json"
    code, out, _ = run(monkeypatch, capsys, "ledger", "key", "--ledger", fresh["db"], "--json")
    assert code == 0
    keys.write_text(out)
    published = json.loads(out)["keys"][0]["public_key"]
    assert published == led.public_key()
    # the forgery: the attack rate set to 0 and the document re-signed by a fresh key written into it
    doc = json.loads(real.read_text())["document"]
    for a in doc.get("attacks", {}).values():
        a["asr"] = 0.0
    forger = Ed25519PrivateKey.generate()
    doc["signer"]["public_key"] = signing.public_hex(forger)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"document": doc, "signature": signing.sign(forger, doc)}))
    edited = led.job(1)["edited_path"]
    for f, pins, ok in ((real, ["--public-key", published], True), (real, ["--trusted-keys", keys], True),
                        (forged, ["--public-key", published], False), (forged, ["--trusted-keys", keys], False),
                        (forged, [], False), (real, [], False)):
        code, out, err = run(monkeypatch, capsys, "ledger", "verify-certificate", f, "--model", edited, *pins)
        if ok:
            assert code == 0 and "verifies" in err + out, (f, pins, err)
        else:
            one_line(code, err)
            assert ("not a trusted key" in err) if pins else ("no key you trust" in err), err


def test_the_verdict_accounts_for_attacks_in_plain_words():
    from datarights.ledger.certificate import standing

    erased = {"verdict": "erased", "target_erased": 0.99, "target_erased_ci": [0.97, 1.0]}
    plain = [0.0, 0.2]
    doc = {"optout": {"concept": "Blubbo"}, "audit": erased,
           "attacks": {"ti": {"asr": 0.62, "asr_ci": [0.39, 0.82], "asr_plain_ci": plain, "attempts": 16},
                       "paraphrase": {"asr": 0.06, "asr_ci": [0.01, 0.28], "asr_plain_ci": plain, "attempts": 16}}}
    s = standing(doc)
    assert s["verdict"] == "erased but recoverable by ti in 62% [39%, 82%] of attempts"
    assert "textual inversion" in s["explanation"] and [r["attack"] for r in s["recoverable"]] == ["ti"]
    doc["attacks"].pop("ti")
    assert standing(doc)["verdict"] == "erased" and "no attack tried (paraphrase)" in standing(doc)["explanation"]
    assert standing({**doc, "audit": {**erased, "verdict": "not erased", "target_erased": 0.4}})["verdict"] == "not erased"
    broken = standing({**doc, "audit": {**erased, "verdict": "model broken on target"}})
    assert broken["verdict"] == "model broken on target" and "damaged" in broken["explanation"]
