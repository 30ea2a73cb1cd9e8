"""The weights this project ships: the world judge and the world model (checked on fresh data)."""

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
