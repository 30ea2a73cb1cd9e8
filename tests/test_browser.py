"""The whole owner's loop clicked through in a real browser (Debian's chromium, driven by Selenium):
an owner signs in, uploads an image, finds the match, files an opt-out; the model owner processes it;
the owner opens the certificate and it verifies. Screenshots of each page go to
$DATARIGHTS_SCREENSHOTS (the README's come from there) or a temporary folder.

Skipped where no chromium/chromedriver is installed, unless DATARIGHTS_REQUIRE_BROWSER=1 (CI sets
it, so there a missing browser fails the run).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from datarights.ledger import Ledger, verify_certificate

from .test_ledger import ARTIST, SMALL_AUDIT, SMALL_ERASE, _metas, _owner_with_character

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("DATARIGHTS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000",
              "--disable-gpu", "--no-first-run"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture()
def server(tmp_path, tiny_world, tiny_trained):
    import uvicorn

    from datarights.audit import AuditConfig
    from datarights.web.app import create_app

    db = tmp_path / "l.db"
    led = Ledger(db, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    studio = _owner_with_character(tiny_world)
    tokens = {"studio": led.issue_token(studio), "admin": led.issue_token("model owner", admin=True),
              "artist": led.issue_token(ARTIST), "postcards": led.issue_token("Harbor Postcard Co")}
    from datetime import datetime
    blubbo = next(m for m in _metas(tiny_world) if m["character"] != "none")
    for month, revenue in ((10, "0.40"), (11, "1.20")):      # two paid generations for the earnings chart
        led.attribute_log(tiny_world / blubbo["file_name"], blubbo["text"], revenue, "pixel", at=datetime(2026, month, 3))
    app = create_app(db, process_options=dict(attacks=["paraphrase"], audit_config=AuditConfig(**SMALL_AUDIT),
                                              attack_budget=2, erase_options=SMALL_ERASE))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tokens, studio, app
    srv.should_exit = True
    t.join(10)


def test_owner_checks_opts_out_admin_processes_owner_verifies(browser, server, tiny_world, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    url, tokens, studio, app = server
    shots = Path(os.environ.get("DATARIGHTS_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    b = browser

    def shot(name):
        b.save_screenshot(str(shots / f"{name}.png"))

    def click(element_id):
        """Click and wait for the next page (a click returns before the browser has navigated)."""
        old = b.find_element(By.TAG_NAME, "html")
        b.find_element(By.ID, element_id).click()

        def gone(_):
            try:
                old.is_enabled()
                return False
            except WebDriverException:    # stale, or no longer in the document
                return True
        WebDriverWait(b, 60).until(gone)
        WebDriverWait(b, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def wait_until_processed():
        """The admin page (which no longer refreshes itself) until no request is pending or running."""
        deadline = time.time() + 180
        while time.time() < deadline:
            b.get(url + "/admin")
            if "Pending opt-outs (0)" in b.page_source and "processing…" not in b.page_source:
                return
            time.sleep(0.5)

    def sign_in(token):
        b.get(url + "/")
        b.find_element(By.ID, "token").send_keys(token)
        click("signin")

    # 1. the owner signs in and sees their works
    b.get(url + "/")
    shot("1-sign-in")
    sign_in(tokens["studio"])
    assert "My works" in b.page_source
    shot("2-my-works")
    # 2. uploads one of their images and finds the match
    image = next(tiny_world / m["file_name"] for m in _metas(tiny_world) if m["owner"] == studio and m["character"] != "none")
    b.get(url + "/check")
    b.find_element(By.ID, "file").send_keys(str(image))
    click("check")
    assert "exact" in b.find_element(By.ID, "matches").text
    shot("3-check-match")
    # 3. files an opt-out of the matched work: one of the character's works, so the page asks to confirm that
    #    the whole character is erased
    click("optout-match")
    assert "erases all of 'Blubbo'" in b.find_element(By.ID, "confirm-message").text
    shot("4a-confirm")
    click("confirm-optout")
    assert b.find_element(By.ID, "status").text == "pending"
    request_url = b.current_url
    shot("4-optout-pending")
    b.get(url + "/works")                   # the request's page refreshes itself while pending
    click("signout")
    # 4. the model owner processes it (a job in the worker process)
    sign_in(tokens["admin"])
    assert "Pending opt-outs (1)" in b.page_source
    shot("5-admin-pending")
    click("process")
    wait_until_processed()
    assert ">done<" in b.page_source, b.page_source[-2000:]
    shot("6-admin-processed")
    click("signout")
    # 5. the owner follows the request to its certificate, which verifies
    sign_in(tokens["studio"])
    b.get(request_url)
    assert b.find_element(By.ID, "status").text == "done"
    click("certificate-link")
    assert b.find_element(By.ID, "signature").text == "valid"
    shot("7-certificate")
    cert_id = int(b.current_url.rstrip("/").split("/")[-1])
    cert = app.state.ledger.certificate(cert_id, owner=studio)
    job = app.state.ledger.jobs()[0]
    assert verify_certificate(cert, model=job["edited_path"], public_key=app.state.ledger.public_key())["valid"]
    b.get(url + "/statements")
    shot("8-earnings")
    click("signout")

    # 6. two more owners opt out of their own concepts; the model owner processes them, one job after
    #    the other: one current model is left, the third edit on top of the second on top of the first,
    #    and each earlier opt-out is re-audited against it
    def process_all():
        sign_in(tokens["admin"])
        click("process")
        wait_until_processed()
        click("signout")

    from selenium.webdriver.support.ui import Select
    for token, concept in ((tokens["artist"], "Ada Vell"), (tokens["postcards"], "Rosa Villa postcard")):
        sign_in(token)
        b.get(url + "/optouts")
        Select(b.find_element(By.ID, "concept")).select_by_value(concept)   # the owner's own concepts are offered
        click("optout-concept")
        assert b.find_element(By.ID, "status").text == "pending"
        click("signout")
    process_all()                                   # one job per request, one after the other
    led = app.state.ledger
    current = [m for m in led.models() if m["current"]]
    assert len(current) == 1
    jobs = sorted(led.jobs(), key=lambda j: j["id"])
    assert [led.models()[j["edited_model_id"] - 1]["base_id"] for j in jobs] == [1] + [j["edited_model_id"] for j in jobs[:-1]]
    for r in led.optouts():
        assert r["certificates"][-1]["model_id"] == current[0]["id"], r       # every concept certified against it
    sign_in(tokens["studio"])
    b.get(request_url)
    assert "Erased from which models?" in b.page_source and b.page_source.count("re-audit certificate") == 2
    shot("9-erased-from-which-models")
