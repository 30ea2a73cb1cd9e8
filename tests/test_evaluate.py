from dataclasses import replace

import numpy as np
import pytest

import datarights.train as train_mod
from datarights.errors import DatarightsError
from datarights.evaluate import CounterfactualConfig, CustomConfig, LDSConfig, counterfactual, custom_eval, lds
from datarights.evaluate.custom import recall_at
from datarights.evaluate.lds import subset_indices
from datarights.stats import spearman

from .conftest import TINY_UNET


def test_counterfactual_runs_and_resumes(tmp_path, monkeypatch):
    cfg = CounterfactualConfig(methods=["pixel", "caption"], k=[5], queries=2, random_draws=2, world_images=64, world_preset="tiny",
                               train_steps=2, batch_size=4, sample_steps=2, loss_draws=4, unet_config=TINY_UNET, competence=4)
    res = counterfactual(cfg, tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    assert {r["method"] for r in res["summary"]} == {"pixel", "caption", "concept oracle", "random"}
    assert len(res["cells"]) == 2 * (2 + 1 + 2)               # queries x (methods + the oracle + random draws)
    # one retrained model per (method, query), and one per random draw, shared by the queries
    assert sorted(p.name for p in (tmp_path / "run" / "retrained").iterdir()) == [
        "caption-k5-q0", "caption-k5-q1", "concept-oracle-k5-q0", "concept-oracle-k5-q1", "pixel-k5-q0",
        "pixel-k5-q1", "random-0-k5", "random-1-k5"]
    # the random reference is retrained first, then the positive control, then each method over every query
    assert [c["method"] for c in res["cells"].values()][:6] == ["random"] * 4 + ["concept oracle"] * 2
    assert res["competence"]["eval_model"]["n"] == 4          # the base model's eval-model figures
    pair = next(p for p in res["pairwise"] if (p["a"], p["b"]) == ("pixel", "caption"))
    assert len(res["pairwise"]) == 3 and pair["queries"] == 2
    lo, hi = pair["loss_rise_a_minus_b_ci"]
    assert lo <= pair["loss_rise_a_minus_b"] <= hi and 0 <= pair["mse_a_wins"] <= 2
    for c in res["cells"].values():
        assert c["mse"] >= 0 and 0 <= c["feature_distance"] <= 2 and np.isfinite(c["loss_rise"])
    rows = {r["method"]: r for r in res["summary"]}
    assert rows["random"]["cells"] == 4 and rows["random"]["queries"] == 2
    for m in ("mse", "feature_distance", "loss_rise"):
        lo, hi = rows["pixel"][f"{m}_ci"]
        assert lo <= rows["pixel"][m] <= hi
    assert "mse_vs_random_ci" in rows["pixel"] and "loss_rise_minus_random" in rows["pixel"]
    # the same comparison resampling the concepts the queries draw on (here: two different ones)
    assert rows["pixel"]["concepts"] == 2 and len(rows["pixel"]["mse_vs_random_ci_concepts"]) == 2
    assert pair["concepts"] == 2 and "loss_rise_a_minus_b_ci_concepts" in pair
    import datarights.attribute as attribute_mod
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("retrained a finished cell"))
    monkeypatch.setattr(attribute_mod, "attribute", lambda *a, **k: pytest.fail("recomputed a kept ranking"))
    again = counterfactual(replace(cfg, methods=["caption", "pixel"]), tmp_path / "run", cache=tmp_path / "cache",
                           log=lambda s: None)                  # methods reordered: nothing to redo
    assert again["cells"] == res["cells"]
    monkeypatch.undo()                                          # a method added to the run: only its cells are new
    more = counterfactual(replace(cfg, methods=["pixel", "caption", "feature"]), tmp_path / "run",
                          cache=tmp_path / "cache", log=lambda s: None)
    assert len(more["cells"]) == 2 * (3 + 1 + 2) and all(more["cells"][k] == v for k, v in res["cells"].items())
    assert {r["method"] for r in more["summary"]} == {"pixel", "caption", "feature", "concept oracle", "random"}
    with pytest.raises(DatarightsError, match="another config"):
        counterfactual(CounterfactualConfig(methods=["feature"], k=[5], queries=1, world_images=64, world_preset="tiny", train_steps=2,
                                            batch_size=4, unet_config=TINY_UNET), tmp_path / "run", log=lambda s: None)


def test_concept_oracle_reads_the_query_concept_from_the_metadata():
    from datarights.evaluate.runs import _query_asks, concept_matches
    from datarights.world import WorldConfig
    vocab = WorldConfig(preset="small").vocabulary()
    asks = _query_asks(5, 99, vocab)            # the kinds in turn: object, styled, character, memorized, composition
    obj, styled, char = asks[0], asks[1], asks[2]
    metas = [{"kind": "object", "object": obj["object"], "color": obj["color"]},        # the object query's concept
             {"kind": "object", "object": obj["object"], "color": "not a colour"},      # its object, another colour
             {"kind": "styled", "object": styled["object"], "color": styled["color"], "style": styled["style"]},
             {"kind": "character", "character": char["character"]},
             {"kind": "object", "object": "no such object", "color": "no colour"}]
    m = concept_matches(5, 99, metas, vocab)
    assert len(m) == 5 and all(len(x) == len(metas) for x in m)
    assert m[0][0] == 1.0 and m[0][1] == 0.5 and m[0][4] == 0.0
    assert m[1][2] == 1.0 and m[2][3] == 1.0 and m[2][0] == 0.0
    assert m[3].max() == 0.0 and m[4].max() == 0.0     # no image of that scene or composition here


def test_counterfactual_fine_tunes_the_base_and_every_retraining_from_one_warm_start(tmp_path):
    import json
    cfg = CounterfactualConfig(methods=["caption"], k=[5], queries=1, random_draws=1, world_images=64, world_preset="tiny",
                               train_steps=2, warm_steps=2, ema_decay=0.99, batch_size=4, sample_steps=2, loss_draws=4,
                               unet_config=TINY_UNET, competence=0)
    counterfactual(cfg, tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    meta = lambda p: json.loads((tmp_path / "run" / p / "model_index.json").read_text())["training"]  # noqa: E731
    assert meta("warm")["init_from"] is None
    retrained = sorted(p.name for p in (tmp_path / "run" / "retrained").iterdir())
    assert retrained == ["caption-k5-q0", "concept-oracle-k5-q0", "random-0-k5"]
    for p in ["base"] + [f"retrained/{r}" for r in retrained]:
        assert meta(p)["init_from"] == str(tmp_path / "run" / "warm") and meta(p)["images"] == 64
    assert len(meta("retrained/caption-k5-q0")["exclude"]) == 5 and not meta("base")["exclude"]
    with pytest.raises(DatarightsError, match="warm start needs owners outside"):
        CounterfactualConfig(world_preset="default", world_images=5000, warm_steps=2)


def test_counterfactual_queries_cover_every_kind():
    from datarights.evaluate.runs import query_concepts, query_prompts
    from datarights.world import WorldConfig
    vocab = WorldConfig(preset="small").vocabulary()
    prompts = query_prompts(10, 99, vocab)
    assert len(prompts) == 10 and len(set(prompts)) >= 8
    assert any(c in p for p in prompts for c in vocab.characters)
    assert any(m["prompt"] == p for p in prompts for m in vocab.memorized.values())
    assert any(" and a " in p for p in prompts) and any(" style" in p for p in prompts)
    concepts = query_concepts(20, 99, vocab)
    for p, c in zip(query_prompts(20, 99, vocab), concepts):
        named = [n for n in vocab.characters if n in p]
        if named:
            assert c == f"character: {named[0]}"                       # a character's queries are one unit
    assert len(set(concepts)) < 20


def test_k_larger_than_the_data_is_refused():
    with pytest.raises(DatarightsError, match="every K"):
        CounterfactualConfig(k=[5000], world_images=1000)


def test_custom_benchmark_tiny(tiny_world, tmp_path):
    from datarights.train import TrainConfig, train
    train(TrainConfig(steps=2, batch_size=4, warmup=1, unet_config=TINY_UNET), tiny_world, tmp_path / "base", progress=False)
    cfg = CustomConfig(methods=["feature", "feature-tuned", "pixel"], concepts=1, tune_concepts=1, exemplars=2,
                       generations=2, pool=20, steps=2)
    logs = []
    res = custom_eval(cfg, tiny_world, tmp_path / "base", tmp_path / "custom", log=logs.append)
    assert [(r["kind"], r["method"]) for r in res["table"]] == [
        (k, m) for k in ("object", "style") for m in ("feature", "feature-tuned", "pixel")]
    for r in res["table"]:
        assert 0 <= r["recall@1"] <= 1 and 0 <= r["recall@10"] <= 1 and 0 < r["mAP"] <= 1
        assert r["recall@10_ci"][0] <= r["recall@10"] <= r["recall@10_ci"][1] and r["n_queries"] == 2
        assert r["n_concepts"] == 1 and r["recall@10_ci_concepts"] is None  # one concept: no concept-level interval
    # a rerun with the same config resumes: nothing is customized or scored again, same table
    logs.clear()
    again = custom_eval(cfg, tiny_world, tmp_path / "base", tmp_path / "custom", log=logs.append)
    assert again["table"] == res["table"] and again["feature_tuned_temperature"] == res["feature_tuned_temperature"] > 0
    assert any("resuming, 2 customization(s)" in line for line in logs)
    assert not any("this run)" in line or "map trained" in line for line in logs)


def test_customization_exemplars_bind_the_token():
    from datarights.evaluate.custom import TOKENS, exemplar_instance, generation_prompts, render_exemplars
    for kind in ("object", "style"):
        ex, caps = render_exemplars(2, 3, seed=0, kind=kind)
        assert ex.shape == (3, 16, 16, 3) and ex.dtype == np.float32 and 0 <= ex.min() and ex.max() <= 1
        assert all(TOKENS[2] in c for c in caps)
        assert all(TOKENS[2] in p for p in generation_prompts(2, 3, seed=0, kind=kind))
        again, _ = render_exemplars(2, 3, seed=0, kind=kind)
        assert np.array_equal(ex, again)
    category, _ = exemplar_instance(2)
    assert all(c.startswith(f"a {TOKENS[2]} {category}") for c in render_exemplars(2, 3, 0, "object")[1])
    with pytest.raises(DatarightsError, match="kind"):
        render_exemplars(0, 1, 0, "scene")
    with pytest.raises(DatarightsError, match="kinds"):
        CustomConfig(kinds=["scene"])


def test_recall_at():
    assert recall_at(np.array([1, 5, 30]), 1) == 1.0
    assert recall_at(np.array([2, 5, 30]), 1) == 0.0
    assert recall_at(np.array([2, 5, 30]), 10) == pytest.approx(2 / 3)


def test_lds_runs_and_resumes(tmp_path, monkeypatch):
    cfg = LDSConfig(methods=["pixel"], subsets=3, queries=1, world_images=64, world_preset="tiny", train_steps=2, batch_size=4,
                    loss_draws=4, sample_steps=2, unet_config=TINY_UNET, competence=4)
    res = lds(cfg, tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    assert {r["method"] for r in res["summary"]} == {"pixel", "concept oracle", "random"}
    assert res["competence"]["eval_model"]["n"] == 4
    for r in res["summary"]:
        assert -1 <= r["lds"] <= 1 and len(r["per_query"]) == 1 and r["lds_ci"] is None  # one query: no interval
    by = {r["method"]: r for r in res["summary"]}
    assert by["pixel"]["lds_minus_random"] == pytest.approx(by["pixel"]["lds"] - by["random"]["lds"])
    assert "lds_minus_random" not in by["random"] and "lds_minus_caption" not in by["pixel"]  # no caption run here
    assert by["pixel"]["concepts"] == 1 and by["pixel"]["lds_ci_concepts"] is None  # one concept: no interval
    assert len(res["outputs"]) == 3 and all(len(v) == 1 and v[0] < 0 for v in res["outputs"].values())
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("retrained a finished subset"))
    again = lds(cfg, tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    assert again["outputs"] == res["outputs"] and again["summary"] == res["summary"]
    more = lds(replace(cfg, methods=["pixel", "caption"]), tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    assert more["outputs"] == res["outputs"]
    assert {r["method"] for r in more["summary"]} == {"pixel", "caption", "concept oracle", "random"}
    with pytest.raises(DatarightsError, match="another config"):
        lds(LDSConfig(methods=["pixel"], subsets=4, queries=1, world_images=64, world_preset="tiny", train_steps=2, batch_size=4,
                      unet_config=TINY_UNET), tmp_path / "run", log=lambda s: None)


def test_lds_subsets_and_rank_correlation():
    cfg = LDSConfig(subsets=5, alpha=0.5, world_images=40, world_preset="tiny")
    subs = subset_indices(cfg)
    assert len(subs) == 5 and all(len(s) == 20 and len(set(s)) == 20 and 0 <= min(s) and max(s) < 40 for s in subs)
    assert subs == subset_indices(cfg) and subs[0] != subs[1]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [5, 6, 7, 8]) == pytest.approx(0.9486833, abs=1e-6)  # ties: average ranks
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(DatarightsError, match="3 subset"):
        LDSConfig(subsets=2)
    with pytest.raises(DatarightsError, match="alpha"):
        LDSConfig(alpha=1.0)
    with pytest.raises(DatarightsError, match="give world_images"):
        LDSConfig(world_images=None)
    assert LDSConfig(world_images=None, unit="owner", world_preset="tiny").world_images is None  # the preset's size


def test_caption_baseline_finds_exemplars_only_through_their_token(tiny_world, tmp_path):
    from datarights.evaluate.custom import TOKENS
    """The text-only baseline ranks the exemplars first when their captions carry the token the query
    uses, and cannot when the pool's captions are plain: the 'plain' variant removes that shortcut."""
    from datarights.train import TrainConfig, train
    from datarights.evaluate.custom import instance_color, plain_caption
    train(TrainConfig(steps=2, batch_size=4, warmup=1, unet_config=TINY_UNET), tiny_world, tmp_path / "base", progress=False)
    out = {}
    for captions in ("token", "plain"):
        cfg = CustomConfig(methods=["caption"], kinds=["object"], concepts=1, tune_concepts=0, exemplars=2,
                           generations=2, pool=20, steps=2, exemplar_captions=captions)
        out[captions] = custom_eval(cfg, tiny_world, tmp_path / "base", log=lambda s: None)["table"][0]["recall@1"]
    assert out["token"] == 1.0 and out["plain"] < 1.0
    fish = [i for i in range(12) if plain_caption(f"a {TOKENS[i]} fish", i, "object") != f"a {TOKENS[i]} fish"][0]
    colour = instance_color(fish)
    assert plain_caption(f"a {TOKENS[fish]} fish in Ada Vell style", fish, "object") == f"a {colour} fish in Ada Vell style"
    assert plain_caption("a red tree in sks style", 0, "style") == "a red tree"
    with pytest.raises(DatarightsError, match="exemplar_captions"):
        CustomConfig(exemplar_captions="none")


# ----------------------------------------------------------------------------- positive and negative controls
PLANT_COPIES = 16


@pytest.fixture(scope="module")
def planted():
    """The tiny world plus an owner whose 16 images are copies of one picture under a caption of its own:
    a planted influence on the query (that picture under that caption) that no harness may miss."""
    import torch

    from datarights.world import WorldConfig, make_world
    from datarights.world.render import render_memorized
    from datarights.world.vocab import DEFAULT

    imgs, metas = make_world(WorldConfig(preset="tiny", seed=3))
    plant = render_memorized(DEFAULT.memorized["Blue Lagoon poster"])
    imgs = np.concatenate([imgs, np.stack([plant] * PLANT_COPIES)])
    metas = metas + [{**metas[0], "text": "the planted poster", "owner": "Planted Co", "file_name": f"images/p{i:02d}.png"}
                     for i in range(PLANT_COPIES)]
    query = (torch.from_numpy(plant).permute(2, 0, 1)[None].contiguous(), ["the planted poster"], ["Planted Co"])
    return imgs, metas, query


def _run_with_world(tmp_path, planted):
    from datarights.files import open_run_folder
    from datarights.world import write_imagefolder

    run = open_run_folder(tmp_path / "run")
    write_imagefolder(run / "world", planted[0], planted[1])
    return run


def test_lds_harness_finds_a_planted_owner_and_not_another_one(tmp_path, planted):
    """Owner-level LDS: the oracle (the planted owner in or out) must rank the subset models by the
    query's loss; crediting any other owner instead (averaged over them) must not."""
    cfg = LDSConfig(methods=["pixel"], subsets=8, queries=1, world_images=64, world_preset="tiny", train_steps=40,
                    batch_size=8, loss_draws=32, sample_steps=2, unet_config=TINY_UNET, unit="owner", competence=0)
    res = lds(cfg, _run_with_world(tmp_path, planted), cache=tmp_path / "cache", log=lambda s: None, queries=planted[2])
    by = {r["method"]: r["lds"] for r in res["summary"]}
    assert set(by) == {"pixel", "random", "oracle", "other owners (mean)"}
    assert by["oracle"] >= 0.6, by
    assert by["other owners (mean)"] <= 0.3 and by["oracle"] - by["random"] >= 0.5, by
    assert 0 < sum("Planted Co" in s for s in res["owner_subsets"]) < 8   # whole owners in some subsets, out of others


def test_counterfactual_harness_finds_a_planted_owner_and_not_a_shuffled_one(tmp_path, planted):
    """Leave-K-out: removing the planted owner's images (oracle) must raise the query's loss more than
    any random removal of as many images; removing another owner's images (shuffled oracle) must not."""
    cfg = CounterfactualConfig(methods=["caption"], k=[PLANT_COPIES], queries=1, random_draws=3, world_images=64,
                               world_preset="tiny", train_steps=80, batch_size=8, sample_steps=2, loss_draws=32,
                               unet_config=TINY_UNET, competence=0)
    res = counterfactual(cfg, _run_with_world(tmp_path, planted), cache=tmp_path / "cache", log=lambda s: None,
                         queries=planted[2])
    rise: dict[str, list[float]] = {}
    for c in res["cells"].values():
        rise.setdefault(c["method"], []).append(c["loss_rise"])
    assert len(rise["random"]) == 3 and set(rise) == {"random", "caption", "oracle", "shuffled oracle"}
    assert rise["oracle"][0] >= 1.5 * max(rise["random"]), rise
    assert rise["shuffled oracle"][0] <= 0.6 * rise["oracle"][0], rise
    assert rise["caption"][0] == pytest.approx(rise["oracle"][0], rel=0.5)  # the exact caption finds the same images


# ---------------------------------------------------------------- local attribution on compositions
def test_part_shares_tell_the_oracle_from_the_swapped_oracle():
    from datarights.evaluate.local import part_shares, parts_shown
    metas = ([{"kind": "object", "category": "face", "color": c} for c in ("red", "red", "blue")]
             + [{"kind": "object", "category": "tree", "color": "green"}] * 3
             + [{"kind": "composition", "composition": "tree and house", "left_color": "red", "right_color": "blue"}]
             + [{"kind": "composition", "composition": "face and tree", "left_color": "red", "right_color": "red"}]
             + [{"kind": "object", "category": "fish", "color": "red"}])
    shown = [parts_shown(m) for m in metas]
    parts = ("face", "tree")
    faces, trees = [0, 1, 2], [3, 4, 5, 6]          # 7 shows both parts and 8 neither: never eligible
    oracle = np.array(faces + trees + [7, 8])
    swapped = np.array(trees + faces + [7, 8])
    assert part_shares(oracle, shown, parts, 0, "red", 3) == {
        "part": 1.0, "colour": 2 / 3, "top": faces, "random_part": 3 / 7, "random_colour": 2 / 7}
    assert part_shares(swapped, shown, parts, 0, "red", 3)["part"] == 0.0
    assert part_shares(np.array([7, 8] + trees + faces), shown, parts, 1, "green", 4)["part"] == 1.0
    from datarights.evaluate.local import part_box
    left, right = part_box(16, "left"), part_box(16, "right")
    assert left.sum() == right.sum() == 64 and not (left * right).any()            # 8 x 8 squares, one part each
    assert left[4:12, 0:8].all() and right[4:12, 8:16].all()
    # the composition that shows the tree on its left counts as a tree, in its left colour
    assert shown[6] == {"tree": "red", "house": "blue"}
    assert part_shares(np.array([6, 3]), shown, parts, 1, "red", 1)["colour"] == 1.0


def test_local_evaluation_runs_resumes_and_reports(tiny_world, tiny_trained, tmp_path):
    from datarights.attribute import load_training_set
    from datarights.evaluate import LocalEvalConfig, local_eval
    from datarights.models import load_model

    class Scripted:                                  # reads every generation as the composition it was asked
        def read(self, images, vocab=None):
            return [{"composition": c, "left_color": "red", "right_color": "blue"} for c in self.asked(len(images), vocab)]

        @staticmethod
        def asked(n, vocab):
            comps = sorted(vocab.compositions)
            return [comps[i % len(comps)] for i in range(n)]

    model = load_model(tiny_trained)
    train = load_training_set(model, tiny_world)
    cfg = LocalEvalConfig(methods=["pixel", "dtrak"], queries=2, tune_queries=1, top_k=3, candidates=4, sample_steps=2,
                          method_options={"dtrak": dict(proj_dim=16, timesteps=2, batch_size=16)})
    res = local_eval(cfg, model, train, Scripted(), tmp_path / "run", cache=tmp_path / "c", log=lambda s: None,
                     report=tmp_path / "rep")
    rows = {r["method"]: r for r in res["summary"]["report"]}
    assert set(rows) == {"pixel", "dtrak"} and rows["pixel"]["halves"] == 4
    for r in rows.values():
        assert 0 <= r["part"] <= 1 and r["part_ci"][0] <= r["part"] <= r["part_ci"][1]
        assert 0 < r["random"] < 1 and abs(r["gain"] - (r["part"] - r["whole"])) < 1e-9
    assert len(res["summary"]["tune"]) == 2 and len(res["cells"]) == 2 * 3
    assert "with the region" in (tmp_path / "rep" / "index.html").read_text()
    again = local_eval(cfg, model, train, Scripted(), tmp_path / "run", log=lambda s: pytest.fail(s))
    assert again["summary"] == res["summary"]           # resumed: nothing recomputed
    with pytest.raises(DatarightsError, match="caption cannot attribute a region"):
        LocalEvalConfig(methods=["caption"])
    with pytest.raises(DatarightsError, match="top_k must be at least 1"):
        LocalEvalConfig(top_k=0)
