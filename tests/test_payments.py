"""Payments are recorded exactly once and come from the images: idempotency keys, the payment method,
currencies, statements that name the method, the event and the image; paid generations queued as
jobs for the worker process, so that an owner's page answers while an attribution runs."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from sqlalchemy import func, select

from datarights.errors import DatarightsError
from datarights.ledger import Ledger
from datarights.ledger.schema import AttributionEvent, Payout

from .conftest import serve
from .test_ledger import _metas, _owner_with_character


@pytest.fixture()
def ledger(ledger_location, tiny_world, tiny_trained):
    led = Ledger(ledger_location, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    return led


def _count(led, table=AttributionEvent) -> int:
    with led.store.read() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_a_retried_generation_is_recorded_once(ledger, tiny_world):
    m = _metas(tiny_world)[3]
    image = tiny_world / m["file_name"]
    first = ledger.attribute_log(image, m["text"], "0.37", "pixel", client_key="gen-1", at=datetime(2026, 11, 5))
    payouts = _count(ledger, Payout)
    again = ledger.attribute_log(image, m["text"], "0.37", "pixel", client_key="gen-1")
    assert again["replayed"] and again["event_id"] == first["event_id"] and again["payouts"] == first["payouts"]
    assert _count(ledger) == 1 and _count(ledger, Payout) == payouts
    other = ledger.attribute_log(image, m["text"], "0.37", "pixel", client_key="gen-2")     # another generation
    assert not other["replayed"] and _count(ledger) == 2
    assert sum(p["cents"] for p in first["payouts"]) == 37 and all("share" in p for p in first["payouts"])
    assert len(first["shares"]) > 10                               # every owner's share, not the first ten


def test_payments_come_from_the_images_in_a_named_currency(ledger, tiny_world):
    m = _metas(tiny_world)[3]
    image = tiny_world / m["file_name"]
    with pytest.raises(DatarightsError, match="caption-only baseline reads only the prompt"):
        ledger.attribute_log(image, m["text"], "0.10", "caption")
    for bad in ("usd1", "€", "", "DOLLARS"):
        with pytest.raises(DatarightsError, match="three-letter code"):
            ledger.attribute_log(image, m["text"], "0.10", "pixel", currency=bad)
    ev = ledger.attribute_log(image, m["text"], "0.10", "pixel", currency="eur", at=datetime(2026, 11, 5))
    top = ev["payouts"][0]["owner"]
    st = ledger.statement(top, "2026-11")
    item = st["items"][0]
    assert ev["currency"] == "EUR" and st["totals"] == {"EUR": ev["payouts"][0]["cents"]}
    assert item["method"] == "pixel" and item["event_id"] == ev["event_id"] and item["image_sha256"] == ev["image_sha256"]
    assert st["payment_method"] == "dtrak" and st["methods"] == ["pixel"]
    assert _count(ledger) == 1


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_queued_payment_sent_twice_is_one_job_and_one_event(ledger, tiny_world):
    from fastapi.testclient import TestClient

    from datarights.web.app import create_app

    admin = ledger.issue_token("model owner", admin=True)
    c = TestClient(create_app(ledger.location))
    m = _metas(tiny_world)[5]
    send = dict(files={"file": ("g.png", (tiny_world / m["file_name"]).read_bytes())},
                data={"prompt": m["text"], "revenue": "0.20", "method": "pixel"},
                headers={**_bearer(admin), "Idempotency-Key": "client-42"})
    r1 = c.post("/api/admin/attribute", **send)
    r2 = c.post("/api/admin/attribute", **send)                    # a retry of the same request
    assert r1.status_code == 202 and r1.json()["status"] in ("queued", "running") and r2.json()["id"] == r1.json()["id"]
    deadline = time.time() + 180
    while time.time() < deadline:
        job = c.get(f"/api/admin/jobs/{r1.json()['id']}", headers=_bearer(admin)).json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert job["status"] == "done", job
    r3 = c.post("/api/admin/attribute", **send)                    # after it ran: the event, nothing new
    assert r3.json()["id"] == job["id"] and r3.json()["result"]["event_id"] == job["result"]["event_id"]
    assert _count(ledger) == 1
    ev = c.get(f"/api/admin/payments/{job['result']['event_id']}", headers=_bearer(admin)).json()
    assert ev["revenue_cents"] == 20 and sum(p["cents"] for p in ev["payouts"]) == 20
    bad = c.post("/api/admin/attribute", **{**send, "data": {**send["data"], "revenue": "1e3"}})
    assert bad.status_code == 400 and "revenue" in bad.json()["error"]                  # refused before queueing
    assert len([j for j in c.get("/api/admin/jobs", headers=_bearer(admin)).json()["jobs"] if j["kind"] == "attribute"]) == 1


def test_an_owners_page_answers_while_an_abu_attribution_runs(tmp_path, tiny_world, tiny_trained):
    """(On SQLite only: what is measured is the server's process, whatever the database.)"""
    import httpx

    ledger = Ledger(tmp_path / "l.db", create=True)
    ledger.import_dataset(tiny_world, tiny_trained)

    studio = _owner_with_character(tiny_world)
    owner, admin = ledger.issue_token(studio), ledger.issue_token("model owner", admin=True)
    ledger.store.engine.dispose()
    m = next(x for x in _metas(tiny_world) if x["owner"] == studio)
    srv, url = serve(ledger.location)
    latencies, statuses = [], set()
    try:
        with httpx.Client(timeout=60) as c:
            job = c.post(url + "/api/admin/attribute", headers=_bearer(admin),
                         files={"file": ("g.png", (tiny_world / m["file_name"]).read_bytes())},
                         data={"prompt": m["text"], "revenue": "0.04", "method": "abu"}).json()
            deadline = time.time() + 300
            while time.time() < deadline:
                status = c.get(f"{url}/api/admin/jobs/{job['id']}", headers=_bearer(admin)).json()["status"]
                statuses.add(status)
                if status in ("done", "failed"):
                    break
                if status == "running":
                    t0 = time.perf_counter()
                    assert c.get(url + "/api/me", headers=_bearer(owner)).status_code == 200
                    latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)
    finally:
        srv.terminate()
        srv.wait()
    assert status == "done", status
    assert len(latencies) >= 5, f"only {len(latencies)} requests while the attribution ran"
    print(f"GET /api/me during an abu attribution: worst {max(latencies):.3f} s of {len(latencies)}")
    assert max(latencies) < 0.5, latencies
