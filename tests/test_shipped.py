"""The weights this project ships: the world judge and the world model (checked on fresh data)."""

import json

import pytest

from datarights.judge import accuracy, load_judge, render_labelled
from datarights.models import DEFAULT_MODEL, load_model


def test_shipped_judge_reads_fresh_world_images():
    judge = load_judge()
    x, ys = render_labelled(1000, seed=4242)  # a seed neither training nor the report used
    acc = accuracy(judge, x, ys)
    assert min(v["accuracy"] for v in acc.values()) >= 0.98, acc
    assert judge.report["augmented"]["mark"]["ci"][0] >= 0.95  # the shipped report: every head's lower bound


def test_shipped_model_is_small_and_documented():
    weights = DEFAULT_MODEL / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    model = load_model()
    rec = model.meta["training"]
    assert rec["seed"] == 0 and rec["steps"] > 0 and rec["seconds"] > 0 and rec["data_hash"]


def test_shipped_model_draws_what_it_is_asked():
    model, judge = load_model(), load_judge()
    asks = [("a red grumpy face", "object", "grumpy face"), ("a blue pine tree", "object", "pine tree"),
            ("a green castle in Farid Osei style", "style", "Farid Osei"), ("a picture of Blubbo", "character", "Blubbo")]
    prompts = [p for p, _, _ in asks for _ in range(4)]
    rows = judge.read(model.sample(prompts, seed=0, steps=15))
    hits = sum(r[k] == v for r, (_, k, v) in zip(rows, [a for a in asks for _ in range(4)]))
    assert hits >= 12, rows                                   # eval-model: style 0.87, character 0.80 on 200 prompts


def test_shipped_attribution_artifacts_are_found(tmp_path, monkeypatch):
    """The package's abu and dtrak artifacts match the shipped model on the default world: no recomputation."""
    from datarights.attribute import default_world, load_training_set, make_config, prepare
    monkeypatch.setenv("DATARIGHTS_CACHE", str(tmp_path))
    model = load_model()
    train = load_training_set(model, default_world())
    for method in ("abu", "dtrak"):
        state, seconds, cached = prepare(model, train, method, make_config(method), progress=False)
        assert cached and seconds == 0.0 and state


def test_paid_generations_of_the_shipped_model_use_its_shipped_state(tmp_path, monkeypatch):
    """The ledger keeps stores for the methods with rows, but the shipped model on its own world pays from
    the shipped dtrak state: no store, no rows computed, the in-memory path's shares."""
    from datarights.attribute import Query, attribute, default_world, load_query, load_training_set
    from datarights.attribute import store as S
    from datarights.ledger import Ledger
    monkeypatch.setenv("DATARIGHTS_CACHE", str(tmp_path / "cache"))
    world = default_world()
    led = Ledger(tmp_path / "l.db", create=True)
    led.import_dataset(world)                                  # no model: the shipped one
    monkeypatch.setattr(S, "sync", lambda *a, **k: pytest.fail("a store was synced"))
    meta = json.loads((world / "metadata.jsonl").read_text().splitlines()[0])
    ev = led.attribute_log(world / meta["file_name"], "a photo of a fish", "0.10", "dtrak")
    assert not (led.root / "stores").exists()
    model = load_model()
    x = load_query(world / meta["file_name"], model.resolution)
    want = {o["owner"]: o["share"] for o in attribute(model, load_training_set(model, world),
                                                      Query(x, "a photo of a fish"), "dtrak", progress=False)
            .owner_shares()}
    assert all(abs(o["share"] - want[o["owner"]]) < 1e-5 for o in ev["shares"])
