"""The ledger: registry, lookup, opt-out -> process -> signed certificate, payouts, statements, and
every refusal (another owner's rows, bad files, newer schemas, bad certificates)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import numpy as np
import pytest
from PIL import Image

from datarights.errors import DatarightsError
from datarights.ledger import Ledger, NotYours, split_cents, to_cents, verify_certificate


ARTIST = "Ada Vell"
"""An artist with works in the tiny world (seed 3): her style is hers alone to opt out of."""
SMALL_AUDIT = dict(n_target=16, n_seen=16, n_nearby=16, n_others=16, n_anchor=16, steps=2)
SMALL_ERASE = dict(steps=2, n_anchor_images=2, batch_size=2, sample_steps=2)


@pytest.fixture()
def ledger(ledger_location, tiny_world, tiny_trained):
    """A ledger of the tiny world, on SQLite and on PostgreSQL (conftest.ledger_location)."""
    led = Ledger(ledger_location, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    return led


def _metas(world):
    return [json.loads(line) for line in (world / "metadata.jsonl").read_text().splitlines()]


def _owner_with_character(world, character: str = "Blubbo"):
    return next(m["owner"] for m in _metas(world) if m["character"] == character)


def test_import_registers_works_owners_and_versions(tmp_path, tiny_world, tiny_trained):
    led = Ledger(tmp_path / "l.db", create=True)
    r = led.import_dataset(tiny_world, tiny_trained)
    metas = _metas(tiny_world)
    distinct = len({(tiny_world / m["file_name"]).read_bytes() for m in metas})  # a memorized scene's copies are one work
    assert distinct < len(metas)
    assert r["version"] == 1 and r["images"] == len(metas) and r["new_works"] == distinct and not r["conflicts"]
    assert {o["name"] for o in led.owners()} == {m["owner"] for m in metas}
    assert sum(o["works"] for o in led.owners()) == distinct
    again = led.import_dataset(tiny_world, tiny_trained)              # same content: no new version
    assert again["version"] == 1 and not again["new_version"] and again["model_id"] == r["model_id"]
    # a changed copy: a duplicated row (same bytes twice) and a row claimed by another owner
    copy = tmp_path / "world2"
    shutil.copytree(tiny_world, copy)
    rows = metas + [dict(metas[0]), dict(metas[1], owner="Someone Else")]
    (copy / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in rows))
    v2 = led.import_dataset(copy, tiny_trained, name=tiny_world.name)
    assert v2["version"] == 2 and v2["new_works"] == 0 and v2["duplicates"] == 2 + len(metas) - distinct
    assert [c["claimed_by"] for c in v2["conflicts"]] == ["Someone Else"]
    assert led.works(metas[1]["owner"])[0]["in"]                       # the work keeps its first owner


def test_lookup_finds_exact_and_near_copies_and_nothing_for_noise(tmp_path, ledger, tiny_world):
    m = _metas(tiny_world)[5]
    exact = ledger.lookup(tiny_world / m["file_name"])
    assert exact[0]["match"] == "exact" and exact[0]["owner"] == m["owner"]
    assert exact[0]["in"][0]["models"] == [1]
    img = np.asarray(Image.open(tiny_world / m["file_name"]).convert("RGB")).astype(np.int16)
    near = tmp_path / "near.png"
    Image.fromarray(np.clip(img + 3, 0, 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC).save(near)
    found = ledger.lookup(near, features=False)
    assert found and found[0]["match"] == "near copy" and found[0]["work_id"] == exact[0]["work_id"]
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(noise)
    assert all(x["match"] == "similar" for x in ledger.lookup(noise)) and not ledger.lookup(noise, features=False)


def test_optout_checks_owner_works_and_concept(ledger, tiny_world):
    metas = _metas(tiny_world)
    studio = _owner_with_character(tiny_world)
    mine = [w["id"] for w in ledger.works(studio)]
    r = ledger.optout(studio, works=mine)
    assert r["concept"] == "Blubbo" and r["anchor"] == "fish" and r["status"] == "pending"
    other = next(m["owner"] for m in metas if m["owner"] != studio)
    theirs = ledger.works(other)[0]["id"]
    with pytest.raises(NotYours):
        ledger.optout(studio, works=[theirs])
    with pytest.raises(NotYours):
        ledger.work(studio, theirs)
    with pytest.raises(NotYours):
        ledger.optout_status(r["id"], owner=other)
    with pytest.raises(DatarightsError, match="does not know the concept"):
        ledger.optout(studio, concept="Mickey")
    with pytest.raises(DatarightsError, match="unknown owner"):
        ledger.optout("Nobody", concept="Blubbo")
    with pytest.raises(DatarightsError, match="either"):
        ledger.optout(studio)
    assert [x["id"] for x in ledger.optouts(owner=other)] == []


def test_an_optout_request_does_not_import_torch(tmp_path, tiny_world, tiny_trained):
    """Taking an opt-out reads the model's world from its folder without importing torch: the web
    server answers a first request at once, not after seconds of imports (a cold import of the model
    code took 6 s here and timed out a client in CI)."""
    import subprocess
    import sys

    led = Ledger(tmp_path / "l.db", create=True)
    led.import_dataset(tiny_world, tiny_trained)
    led.store.engine.dispose()
    owner = _owner_with_character(tiny_world)
    code = ("import sys; from datarights.ledger import Ledger; "
            f"r = Ledger({str(tmp_path / 'l.db')!r}).optout({owner!r}, concept='Blubbo'); "
            "print(r['concept'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Blubbo", "False"]


def test_optouts_resolve_against_the_world_the_model_was_trained_on(tmp_path, tiny_world, tiny_trained):
    """A model trained on the `large` world knows concepts the tiny world's model does not: the ledger
    takes an opt-out of one of them on the large model, and of its edits (which name it as their base),
    and refuses the same concept on the tiny model in one line; `process` refuses a judge that is not
    one, and the shipped judge, which cannot read that world (the next test processes it with one)."""
    from datarights.models.edit import EDIT_CLASS
    from datarights.world import vocabulary_of_folder

    large, character = _large_world_model(tmp_path, tiny_trained)
    edit = tmp_path / "edit-of-large"
    edit.mkdir()
    (edit / "model_index.json").write_text(json.dumps({"_class_name": EDIT_CLASS, "base": str(large)}))
    assert vocabulary_of_folder(edit).find_concept(character)[0] == "characters"
    assert vocabulary_of_folder(tmp_path / "missing").find_concept(character) is None   # unreadable: the default world

    owner = _metas(tiny_world)[0]["owner"]
    small = Ledger(tmp_path / "small.db", create=True)
    small.import_dataset(tiny_world, tiny_trained)
    with pytest.raises(DatarightsError, match="does not know the concept"):
        small.optout(owner, concept=character)
    led = Ledger(tmp_path / "large.db", create=True)
    led.import_dataset(tiny_world, large)
    r = led.optout(owner, concept=character.lower())
    assert r["concept"] == character and r["anchor"] == "face" and r["status"] == "review"
    led.issue_token("model owner", admin=True)
    assert led.review(r["id"], "model owner", approve=True)["status"] == "pending"

    # processing it needs a judge that reads the large world: the shipped one is refused in one line
    with pytest.raises(DatarightsError, match="is not a judge|missing config.json"):
        led.process(judge=tmp_path / "missing", **_small_uce())
    with pytest.raises(DatarightsError, match="folder of a world judge"):
        led.process(judge=5, **_small_uce())                                  # e.g. from the worker's JSON options
    assert led.optout_status(r["id"])["status"] == "pending"                 # a bad judge claims nothing
    with pytest.raises(DatarightsError, match="cannot read that world"):
        led.process(**_small_uce())
    again = led.optout(owner, concept=character)                             # the failed request can be filed again
    assert led.review(again["id"], "model owner", approve=True)["status"] == "pending"


def _small_uce() -> dict:
    from datarights.audit import AuditConfig

    return dict(audit_config=AuditConfig(**SMALL_AUDIT), attacks=["paraphrase"], attack_budget=2, method="uce")


def _large_world_model(tmp_path, tiny_trained):
    """A copy of the tiny model that records the `large` world, and a character only that world has."""
    from datarights.world import PRESETS, WorldConfig, build_vocabulary, vocabulary_of_folder
    from datarights.world.vocab import find_concept

    large = tmp_path / "large-model"
    shutil.copytree(tiny_trained, large)
    index = json.loads((large / "model_index.json").read_text())
    (large / "model_index.json").write_text(json.dumps({**index, "world": WorldConfig(preset="large").to_json()}))
    tiny_vocab = vocabulary_of_folder(tiny_trained)
    character = next(c for c in build_vocabulary(PRESETS["large"]).characters
                     if tiny_vocab.find_concept(c) is None and find_concept(c) is None)     # the large world's own
    return large, character


def test_a_large_world_optout_is_processed_with_a_judge_of_that_world(tmp_path, tiny_world, tiny_trained):
    """The opt-out of a concept only the large world has is audited with a judge of that world (the
    shipped judge cannot read it: the test above) and the certificate names the judge's weights."""
    from datarights.judge import JudgeConfig, train_judge

    large, character = _large_world_model(tmp_path, tiny_trained)
    owner = _metas(tiny_world)[0]["owner"]
    led = Ledger(tmp_path / "large.db", create=True)
    led.import_dataset(tiny_world, large)
    led.issue_token("model owner", admin=True)
    again = led.optout(owner, concept=character)
    led.review(again["id"], "model owner", approve=True)
    train_judge(JudgeConfig(preset="large", n_train=256, n_test=64, epochs=1, width=8), out=tmp_path / "judge",
                progress=False)
    jobs = led.process(judge=tmp_path / "judge", **_small_uce())
    assert [j["status"] for j in jobs] == ["done"] and jobs[0]["settings"]["judge_sha256"]
    doc = led.certificate(led.optout_status(again["id"])["certificate_id"])["document"]
    assert doc["optout"]["concept"] == character and doc["judge_sha256"] == jobs[0]["settings"]["judge_sha256"]


def test_process_issues_a_certificate_that_verifies_and_breaks_on_one_byte(ledger, tiny_world, tmp_path):
    from datarights.audit import AuditConfig

    studio = _owner_with_character(tiny_world)
    req = ledger.optout(studio, concept="Blubbo")
    jobs = ledger.process(attacks=["paraphrase"], audit_config=AuditConfig(**SMALL_AUDIT), attack_budget=2,
                          erase_options=SMALL_ERASE)
    assert [j["status"] for j in jobs] == ["done"] and ledger.process() == []      # nothing pending any more
    status = ledger.optout_status(req["id"], owner=studio)
    assert status["status"] == "done" and [h["status"] for h in status["history"]] == ["pending", "processing", "done"]
    cert = ledger.certificate(status["certificate_id"], owner=studio)
    doc = cert["document"]
    assert doc["optout"]["concept"] == "Blubbo" and doc["audit"]["verdict"] and "target_erased_ci" in doc["audit"]
    assert doc["attacks"]["paraphrase"]["attempts"] == 2 and doc["dataset"]["version"] == 1
    edited = jobs[0]["edited_path"]
    ok = verify_certificate(cert, model=edited, public_key=ledger.public_key())
    assert ok["valid"], ok
    # one byte of the document
    bad = json.loads(json.dumps(cert))
    bad["document"]["audit"]["target_erased_n"] = (bad["document"]["audit"]["target_erased_n"] or 0) + 1
    assert not verify_certificate(bad, public_key=ledger.public_key())["valid"]
    # one byte of the edited weights (inside a tensor's data, so the file still loads)
    copy = tmp_path / "edited-copy"
    shutil.copytree(edited, copy)
    f = copy / "edit.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x01
    f.write_bytes(bytes(raw))
    res = verify_certificate(cert, model=copy, public_key=ledger.public_key())
    assert not res["valid"] and [c["check"] for c in res["checks"] if not c["ok"]] == ["edited weights"]
    # another signer
    assert not verify_certificate(cert, public_key="00" * 32)["valid"]
    with pytest.raises(NotYours):
        ledger.certificate(status["certificate_id"], owner=next(o["name"] for o in ledger.owners() if o["name"] != studio))


def test_a_killed_job_is_marked_failed_and_its_optouts_are_pending_again(ledger, tiny_world):
    from datarights.ledger.schema import Job, OptOut

    req = ledger.optout(_owner_with_character(tiny_world), concept="Blubbo")
    with ledger.store.transaction() as s:
        s.add(Job(model_id=1, optouts=[req["id"]], method="ca", pid=2 ** 22 + 12345, status="running"))
        s.get(OptOut, req["id"]).status = "processing"
    assert ledger.recover() == [1]
    assert ledger.job(1)["status"] == "failed" and "interrupted" in ledger.job(1)["error"]
    assert ledger.optout_status(req["id"])["status"] == "pending"


def test_a_job_whose_pid_was_reused_by_a_later_process_is_recovered(ledger, tiny_world):
    """The job's pid now belongs to a process that started after the job did (a pid reused after a
    reboot or a wrap-around): the job is dead all the same. A job of a live process that started
    before it stays running."""
    import subprocess
    import sys
    from datetime import timedelta

    from datarights.files import pid_alive, process_start_time
    from datarights.ledger.schema import Job, OptOut, now

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if process_start_time(proc.pid) is None:
            pytest.skip("no /proc start times on this system")
        assert pid_alive(proc.pid) and pid_alive(proc.pid, since=time.time())
        assert not pid_alive(proc.pid, since=time.time() - 3600)
        req = ledger.optout(_owner_with_character(tiny_world), concept="Blubbo")
        with ledger.store.transaction() as s:
            s.add(Job(model_id=1, optouts=[], method="ca", pid=proc.pid, status="running", started_at=now()))
            s.add(Job(model_id=1, optouts=[req["id"]], method="ca", pid=proc.pid, status="running",
                      started_at=now() - timedelta(hours=1)))
            s.get(OptOut, req["id"]).status = "processing"
        assert ledger.recover() == [2]
        assert ledger.job(1)["status"] == "running" and ledger.job(2)["status"] == "failed"
        assert ledger.optout_status(req["id"])["status"] == "pending"
    finally:
        proc.kill()
        proc.wait()


def test_split_cents_sums_exactly_for_10000_random_splits():
    rng = np.random.default_rng(0)
    for _ in range(10_000):
        n = int(rng.integers(1, 40))
        shares = rng.dirichlet(np.full(n, rng.uniform(0.05, 2.0)))
        total = int(rng.integers(0, 100_000))
        split = split_cents(total, {f"o{i}": float(s) for i, s in enumerate(shares)})
        assert sum(split.values()) == total
        exact = {f"o{i}": total * s / shares[shares > 0].sum() for i, s in enumerate(shares) if s > 0}
        assert all(v >= 0 and abs(v - exact[o]) < 1 for o, v in split.items())
    assert split_cents(1, {"b": 0.5, "a": 0.5}) == {"a": 1, "b": 0}       # ties go by name: reproducible
    assert to_cents("0.04") == 4 and to_cents("12") == 1200
    for bad in ("0.001", "-1", "nan", "abc", "inf"):
        with pytest.raises(DatarightsError):
            to_cents(bad)


def test_attribute_log_and_statement(ledger, tiny_world, tmp_path):
    from datetime import datetime

    m = _metas(tiny_world)[3]
    ev = ledger.attribute_log(tiny_world / m["file_name"], m["text"], "0.37", method="pixel",
                              at=datetime(2026, 11, 5, 12, 0))
    assert ev["revenue_cents"] == 37 and sum(p["cents"] for p in ev["payouts"]) == 37
    top = ev["payouts"][0]["owner"]
    st = ledger.statement(top, "2026-11")
    assert st["generations"] == 1 and st["total_cents"] == ev["payouts"][0]["cents"]
    assert ledger.statement(top, "2026-10")["total_cents"] == 0
    assert ledger.earnings(top) == [{"period": "2026-11", "currency": "USD", "cents": st["total_cents"]}]
    with pytest.raises(DatarightsError, match="period"):
        ledger.statement(top, "2026-13")


def test_paid_generations_keep_their_rows_in_a_store_beside_the_ledger(ledger, tiny_world, tiny_trained, monkeypatch):
    """A method with per-work rows attributes from a store of the model's training set, made on the first
    paid generation and only synced after: the shares are the in-memory path's."""
    from datarights.attribute import Query, attribute, load_query, load_training_set
    from datarights.attribute import store as S
    from datarights.models import load_model

    m = _metas(tiny_world)[3]
    first = ledger.attribute_log(tiny_world / m["file_name"], m["text"], "0.37", "pixel", client_key="a")
    made = list((ledger.root / "stores").glob("*/*/store.json"))     # pixel rows are the dataset's, not the model's
    assert [p.parent.name for p in made] == ["pixel"] and made[0].parent.parent.name.startswith("dataset-")
    model = load_model(tiny_trained)
    train = load_training_set(model, tiny_world)
    x = load_query(tiny_world / m["file_name"], model.resolution)
    want = {o["owner"]: o["share"] for o in attribute(model, train, Query(x, m["text"]), "pixel", progress=False)
            .owner_shares()}
    got = {o["owner"]: o["share"] for o in first["shares"]}
    assert set(got) <= set(want) and all(abs(got[o] - want[o]) < 1e-5 for o in got)
    spec = S.ROWS["pixel"]
    monkeypatch.setattr(S, "ROWS", {**S.ROWS, "pixel": S.RowSpec(lambda *a: pytest.fail("rows recomputed"),
                                                                 spec.query, model_free=True)})
    again = ledger.attribute_log(tiny_world / m["file_name"], m["text"], "0.37", "pixel", client_key="b")
    assert again["shares"] == first["shares"] and not again["replayed"]


def test_migrations_create_exactly_the_models_schema(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from datarights.ledger.schema import Base

    led = Ledger(tmp_path / "l.db", create=True)
    with led.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_files_that_are_not_ledgers_are_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all, just some bytes")
    with pytest.raises(DatarightsError, match="not a datarights ledger"):
        Ledger(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(DatarightsError, match="not a datarights ledger"):
        Ledger(other)
    newer = tmp_path / "newer.db"
    Ledger(newer, create=True)
    with sqlite3.connect(newer) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatarightsError, match="newer than this datarights"):
        Ledger(newer)
    with pytest.raises(DatarightsError, match="does not exist"):
        Ledger(tmp_path / "missing.db")
    before = junk.read_bytes()
    with pytest.raises(DatarightsError):
        Ledger(junk, create=True)
    assert junk.read_bytes() == before                                    # nothing written


def test_tokens_are_stored_hashed(ledger, tiny_world):
    studio = _owner_with_character(tiny_world)
    token = ledger.issue_token(studio)
    assert ledger.owner_by_token(token)["name"] == studio
    with ledger.store.read() as s:
        from datarights.ledger.schema import Owner
        stored = [o.token_hash for o in s.query(Owner) if o.token_hash]
    assert token not in stored and len(stored) == 1
    with pytest.raises(DatarightsError, match="unknown token"):
        ledger.owner_by_token(token + "x")
    admin = ledger.issue_token("model owner", admin=True)
    assert ledger.owner_by_token(admin)["role"] == "admin"
    with pytest.raises(DatarightsError):
        ledger.issue_token(studio, admin=True)


def test_ledger_cli_answers_bad_input_in_one_line(tmp_path, tiny_world, tiny_trained, capsys):
    from datarights.cli import main

    def run(*args):
        import sys
        old = sys.argv
        sys.argv = ["datarights", *args]
        try:
            main()
            return 0
        except SystemExit as e:
            return e.code
        finally:
            sys.argv = old

    db = str(tmp_path / "l.db")
    assert run("ledger", "import", str(tiny_world), "--model", str(tiny_trained), "--ledger", db, "--json") in (0, None)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == len(_metas(tiny_world))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"xx" * 20)
    cases = [
        ("ledger", "owners", "--ledger", str(junk)),
        ("ledger", "optout", "--owner", "Nobody", "--concept", "Blubbo", "--ledger", db),
        ("ledger", "optout", "--owner", _owner_with_character(tiny_world), "--concept", "Mickey", "--ledger", db),
        ("ledger", "optout", "--owner", _owner_with_character(tiny_world), "--works", "a,b", "--ledger", db),
        ("ledger", "statement", "--owner", _owner_with_character(tiny_world), "--period", "11-2026", "--ledger", db),
        ("ledger", "attribute-log", str(tmp_path / "missing.png"), "--prompt", "x", "--revenue", "0.04", "--ledger", db),
        ("ledger", "attribute-log", str(tiny_world / _metas(tiny_world)[0]["file_name"]), "--prompt", "x",
         "--revenue", "0.001", "--ledger", db),
        ("ledger", "verify-certificate", str(junk)),
        ("ledger", "certificate", "7", "--ledger", db),
        ("ledger", "lookup", str(junk), "--ledger", db),
        ("ledger", "token", "--ledger", db),
        ("ledger", "optout", "--ledger", db),                                 # a missing option: usage error
    ]
    for args in cases:
        assert run(*args) == 2, args
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and err.count("\n") == 0, (args, err)          # usage errors too


def test_kill_9_during_process_leaves_a_failed_job_and_a_rerun_finishes(tmp_path, tiny_world, tiny_trained):
    """`kill -9` in the middle of `ledger process`: no half-written row or folder; the job is marked
    failed when the ledger is next opened, its opt-out is pending again, and a rerun certifies it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "l.db"
    led = Ledger(db, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    req = led.optout(_owner_with_character(tiny_world), concept="Blubbo")
    cmd = [sys.executable, "-c", "from datarights.cli import main; main()", "ledger", "process", "--attacks", "",
           "--n-target", "35", "--ledger", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        with sqlite3.connect(db) as c:
            row = c.execute("SELECT status, stage FROM jobs").fetchone()
        if row and row[0] == "running":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "process finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = Ledger(db)                                                    # opening recovers the dead job
    job = again.jobs()[0]
    assert job["status"] == "failed" and "interrupted" in job["error"]
    assert again.optout_status(req["id"])["status"] == "pending"
    folders = [p for p in again.root.iterdir() if p.is_dir()] if again.root.exists() else []
    assert all((p / "model_index.json").is_file() for p in folders), folders   # whole edited folders, no temp
    from datarights.audit import AuditConfig
    done = again.process(attacks=[], audit_config=AuditConfig(**SMALL_AUDIT), erase_options=SMALL_ERASE)
    assert done[0]["status"] == "done" and again.optout_status(req["id"])["certificate_id"] is not None


def test_batch_processing_erases_every_pending_request_in_one_edit(ledger, tiny_world, tmp_path, capsys, monkeypatch):
    from datarights.audit import AuditConfig
    from datarights.cli import main
    from datarights.erase.ca import CAConfig

    studio = _owner_with_character(tiny_world)
    a = ledger.optout(studio, concept="Blubbo")
    b = ledger.optout(ARTIST, concept="Ada Vell")
    opts = {k: v for k, v in SMALL_ERASE.items() if k != "steps"}         # the batch scales the default steps
    monkeypatch.setitem(CAConfig.DEFAULTS["world"], "steps", 3)              # (CA's world default, 100, made small)
    jobs = ledger.process(batch=True, attacks=[], audit_config=AuditConfig(**SMALL_AUDIT), erase_options=opts)
    assert len(jobs) == 1 and jobs[0]["settings"]["targets"] == ["Blubbo", "Ada Vell"]
    assert jobs[0]["settings"]["erase"]["steps"] == 2 * 3                   # the world default, once per concept
    assert [t["target"] for t in jobs[0]["audit"]["targets"]] == ["Blubbo", "Ada Vell"]
    certs = [ledger.optout_status(r["id"])["certificate_id"] for r in (a, b)]
    assert None not in certs and len(set(certs)) == 2
    docs = [ledger.certificate(c)["document"] for c in certs]
    assert [d["optout"]["concept"] for d in docs] == ["Blubbo", "Ada Vell"]
    assert docs[0]["edited_model"]["weights_sha256"] == docs[1]["edited_model"]["weights_sha256"]
    # the CLI refuses a certificate changed after signing (exit 2, one line) and accepts the original
    good = tmp_path / "c.json"
    good.write_text(json.dumps(ledger.certificate(certs[0])))
    bad = tmp_path / "bad.json"
    doc = json.loads(good.read_text())
    doc["document"]["optout"]["concept"] = "Bluebo"
    bad.write_text(json.dumps(doc))
    import sys
    for path, code in ((good, None), (bad, 2)):
        sys.argv = ["datarights", "ledger", "verify-certificate", str(path), "--model", jobs[0]["edited_path"],
                    "--public-key", ledger.public_key()]
        try:
            main()
            got = None
        except SystemExit as e:
            got = e.code
        assert got in ((0, None) if code is None else (code,)), path
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: certificate") and "signature" in err[-1]
