"""The ownership rules and accumulating erasures: only an owner opts out of what is theirs (every kind);
a concept with no single owner, or the model owner's request on an owner's concept, is reviewed; a
few works of a whole concept need confirmation; nothing is requested twice or erased twice; and
opt-outs processed one after another leave one current model that every earlier certificate's
concept is re-audited against."""

from __future__ import annotations

import json

import pytest

from datarights.ledger import Ledger
from datarights.ledger.rules import Conflict, NeedsConfirmation, NotAllowed

from .test_cli import run
from .test_ledger import ARTIST, SMALL_AUDIT, SMALL_ERASE

STUDIO, POSTCARDS = "Finwave Studios", "Harbor Postcard Co"
OWNED = {"style": ("Ada Vell", ARTIST), "character": ("Blubbo", STUDIO), "memorized": ("Rosa Villa postcard", POSTCARDS)}


@pytest.fixture()
def ledger(ledger_location, tiny_world, tiny_trained):
    led = Ledger(ledger_location, create=True)
    led.import_dataset(tiny_world, tiny_trained)
    led.issue_token("model owner", admin=True)
    return led


def _process(led):
    from datarights.audit import AuditConfig
    return led.process(attacks=[], audit_config=AuditConfig(**SMALL_AUDIT), erase_options=SMALL_ERASE)


def test_concepts_have_their_registered_owners(ledger):
    assert {c["name"] for c in ledger.concepts(ARTIST)} == {"Ada Vell"}
    assert [c["kind"] for c in ledger.concepts(STUDIO)] == ["character"]
    assert ledger.concepts("Cleo Marr")[0]["works"] == 5             # her five works in the tiny world


@pytest.mark.parametrize("kind", sorted(OWNED))
def test_an_owner_cannot_opt_out_of_another_owners_concept(ledger, kind, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from datarights.web.app import create_app

    concept, holder = OWNED[kind]
    intruder = "Cleo Marr"
    with pytest.raises(NotAllowed, match=f"belongs to {holder}"):
        ledger.optout(intruder, concept=concept)
    code, _, err = run(monkeypatch, capsys, "ledger", "optout", "--owner", intruder, "--concept", concept,
                       "--ledger", ledger.location)
    assert code == 2 and f"only {holder} can opt out of it" in err
    c = TestClient(create_app(ledger.location))
    r = c.post("/api/optouts", headers={"Authorization": f"Bearer {ledger.issue_token(intruder)}"},
               json={"concept": concept})
    assert r.status_code == 403 and holder in r.json()["error"]
    assert ledger.optouts() == []                                            # nothing was written
    assert ledger.optout(holder, concept=concept)["status"] == "pending"     # the holder can


def test_a_concept_without_one_owner_is_reviewed_by_the_model_owner(ledger, monkeypatch, capsys):
    r = ledger.optout(ARTIST, concept="face and tree")                       # a composition many works show
    assert r["status"] == "review" and r["review_by"] == "admin" and r["owner"] == ARTIST
    with pytest.raises(NotAllowed, match="waits for the model owner"):
        ledger.review(r["id"], ARTIST, approve=True)
    assert _process(ledger) == []                                             # nothing to do while in review
    code, out, err = run(monkeypatch, capsys, "ledger", "review", str(r["id"]), "--approve", "--ledger", ledger.location)
    assert code == 0 and "pending" in out, err
    with pytest.raises(Conflict, match="not waiting for a review"):
        ledger.review(r["id"], "model owner", approve=False)
    other = ledger.optout(ARTIST, concept="castle")
    assert ledger.review(other["id"], "model owner", approve=False, note="not yours")["status"] == "rejected"
    assert "rejected by model owner: not yours" in ledger.optout_status(other["id"])["history"][-1]["note"]


def test_the_model_owners_request_on_an_owners_concept_waits_for_that_owner(ledger):
    r = ledger.optout("model owner", concept="Blubbo")                        # e.g. a takedown from a third party
    assert r["status"] == "review" and r["review_by"] == "owner" and r["owner"] == STUDIO
    assert r["id"] in [x["id"] for x in ledger.optouts(STUDIO)]               # shown to the concept's owner
    with pytest.raises(NotAllowed):
        ledger.review(r["id"], "model owner", approve=True)                   # not the model owner's to decide
    assert ledger.review(r["id"], STUDIO, approve=False)["status"] == "rejected"   # contested
    again = ledger.optout("model owner", concept="Blubbo")
    assert ledger.review(again["id"], STUDIO, approve=True)["status"] == "pending"  # confirmed
    assert ledger.optout("model owner", concept="swordfish")["status"] == "pending"  # no owner: the model owner decides


def test_a_few_works_of_a_whole_concept_need_confirmation(ledger, tiny_world):
    ada = [w["id"] for w in ledger.works(ARTIST)]
    assert len(ada) == 6                                                      # her six works in the tiny world
    with pytest.raises(NeedsConfirmation, match="which 6 registered works show: opting out erases all of 'Ada Vell'"):
        ledger.optout(ARTIST, works=ada[:1])
    assert ledger.optouts() == []
    r = ledger.optout(ARTIST, works=ada[:1], confirm=True)
    assert r["concept"] == "Ada Vell" and r["status"] == "pending"


def test_nothing_is_requested_or_erased_twice(ledger):
    r = ledger.optout(ARTIST, concept="Ada Vell")
    with pytest.raises(Conflict, match=f"already requested: opt-out {r['id']}"):
        ledger.optout(ARTIST, concept="ada vell")
    _process(ledger)
    cert = ledger.optout_status(r["id"])["certificate_id"]
    with ledger.store.transaction() as s:      # as if the audit had found it erased
        from datarights.ledger.schema import Certificate
        s.get(Certificate, cert).verdict = "erased"
    with pytest.raises(Conflict, match=f"already erased from the current model .*certificate {cert}"):
        ledger.optout(ARTIST, concept="Ada Vell")
    jobs = len(ledger.jobs())
    assert _process(ledger) == [] and len(ledger.jobs()) == jobs


def test_erasures_accumulate_and_every_earlier_one_is_re_audited(ledger):
    """Three opt-outs processed one after another: one current model, descended from each earlier edit,
    and every earlier opt-out's concept certified again against it."""
    reqs = [ledger.optout(holder, concept=concept) for concept, holder in OWNED.values()]
    ids = _process(ledger)                                                    # one job each, in filing order
    assert [j["optouts"] for j in ids] == [[r["id"]] for r in reqs]
    models = {m["id"]: m for m in ledger.models()}
    current = [m for m in models.values() if m["current"]]
    assert len(current) == 1 and current[0]["default"]
    chain, m = [], current[0]
    while m["base_id"] is not None:                                           # current -> job 3 -> 2 -> 1 -> base
        chain.append(m["id"])
        m = models[m["base_id"]]
    assert chain == [j["edited_model_id"] for j in reversed(ids)] and m["id"] == 1
    for i, r in enumerate(reqs):
        st = ledger.optout_status(r["id"])
        certified = [c["model_id"] for c in st["certificates"]]
        assert certified == [j["edited_model_id"] for j in ids[i:]], (i, st["certificates"])   # erase, then re-audits
        assert [c["kind"] for c in st["certificates"]] == ["erase"] + ["re-audit"] * (len(ids) - 1 - i)
        assert st["certificates"][-1]["current"]
        doc = ledger.certificate(st["certificates"][-1]["id"])["document"]
        assert doc["edited_model"]["id"] == current[0]["id"] and doc["optout"]["concept"] == r["concept"]
    last = ids[-1]
    assert [x["target"] for x in last["audit"]["reaudits"]] == [reqs[0]["concept"], reqs[1]["concept"]]
    # each edit on top of earlier ones was held to the line's original model, with the concepts before it
    from datarights.ledger.workflow import LINE_HOLD
    base_hash = models[m["id"]]["weights_sha256"][:16]
    for i, j in enumerate(ids):
        e = j["settings"]["erase"]
        assert e["hold"] == LINE_HOLD > 0 and e["line"]["original"] == base_hash
        assert [c for c, _ in e["line"]["erased"]] == [r["concept"] for r in reqs[:i]]


def test_a_line_busy_with_a_job_leaves_its_requests_pending(ledger):
    from datarights.ledger.schema import Job

    r = ledger.optout(ARTIST, concept="Ada Vell")
    with ledger.store.transaction() as s:       # another run's job, in a process that is alive
        import os
        s.add(Job(model_id=1, optouts=[], method="ca", pid=os.getppid(), status="running", settings={}, stage="erase"))
    assert _process(ledger) == [] and ledger.optout_status(r["id"])["status"] == "pending"


def test_the_web_form_asks_to_confirm_and_the_owner_sees_where_it_was_erased(ledger, tiny_world):
    import re

    from fastapi.testclient import TestClient

    from datarights.web.app import create_app

    c = TestClient(create_app(ledger.location))
    assert c.post("/signin", data={"token": ledger.issue_token(ARTIST)}, follow_redirects=False).status_code == 303
    page = c.get("/optouts").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    assert '<option value="Ada Vell">Ada Vell (your style, 6 works)</option>' in page      # the owner's own concepts
    work = ledger.works(ARTIST)[0]["id"]
    r = c.post("/optouts", data={"csrf": csrf, "works": str(work)})
    assert r.status_code == 200 and "erases all of &#39;Ada Vell&#39;" in r.text and ledger.optouts() == []
    r = c.post("/optouts", data={"csrf": csrf, "works": str(work), "confirm": "yes"}, follow_redirects=False)
    assert r.status_code == 303
    rid = int(r.headers["location"].rsplit("/", 1)[1])
    assert c.post("/optouts", data={"csrf": csrf, "concept": "Ada Vell"}).status_code == 409   # already requested
    _process(ledger)
    page = c.get(f"/optouts/{rid}").text
    assert "Erased from which models?" in page and ">yes<" in page                      # current: yes
    assert json.loads(c.get("/api/optouts/%d" % rid).text)["certificates"][0]["current"]


def test_another_owners_concept_is_403_even_once_it_is_erased(ledger):
    r = ledger.optout(STUDIO, concept="Blubbo")
    _process(ledger)
    with ledger.store.transaction() as s:      # as if the audit had found it erased
        from datarights.ledger.schema import Certificate
        s.get(Certificate, ledger.optout_status(r["id"])["certificate_id"]).verdict = "erased"
    with pytest.raises(NotAllowed):            # not "already erased": whose it is comes first
        ledger.optout(ARTIST, concept="Blubbo")
    with pytest.raises(Conflict, match="already erased"):
        ledger.optout(STUDIO, concept="Blubbo")
