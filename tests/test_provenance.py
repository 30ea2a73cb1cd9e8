"""Generic queries, provenance frequencies, the owner-level evaluation and leave-one-owner-out bookkeeping."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from datarights.errors import DatarightsError
from datarights.evaluate.leaveout import (LeaveOutConfig, has_trace, owner_order, owner_prompts, owner_subjects,
                                          summarize_counterfactual, summarize_leaveout)
from datarights.evaluate.owners import OwnerEvalConfig, owner_eval, pick_queries, summarize
from datarights.evaluate.provenance import generic_prompts, subject_counts, training_frequencies
from datarights.world import WorldConfig, make_world, read_imagefolder
from datarights.world.vocab import DEFAULT, PREFIXES


def test_generic_prompts_name_no_source_and_split_their_templates():
    names = [*DEFAULT.styles, *DEFAULT.characters, *DEFAULT.memorized, *DEFAULT.photographers, "style", "photo by"]
    tune, report = generic_prompts(300, 0, split="tune"), generic_prompts(300, 1, split="report")
    for p in tune + report:
        assert not any(n.lower() in p["text"].lower() for n in names), p
        assert p["subject"] in DEFAULT.subjects
    assert {p["subject"] for p in tune} == set(DEFAULT.subjects)
    starts = lambda ps: {next(x for x in sorted(PREFIXES, key=len, reverse=True) if p["text"].startswith(x))  # noqa: E731
                         for p in ps if p["subject"] != "composition"}
    assert starts(tune).isdisjoint(starts(report))


def test_training_frequencies_count_only_generic_captions():
    _, metas = make_world(WorldConfig(preset="small", seed=0))
    freq = training_frequencies(metas)
    for s, f in freq.items():
        assert sum(f.values()) == pytest.approx(1.0)
    control = {n for n, p in WorldConfig(preset="small").vocabulary().photographers.items() if p["control"]}
    assert control and not any(o in f for f in freq.values() for o in control)   # always credited: never generic
    counts = subject_counts(metas)
    assert sum(sum(c.values()) for c in counts.values()) == len(metas)


def test_pick_queries_spread_over_owners():
    rows = [{"source_owner": o} for o in ["a"] * 10 + ["b"] * 3 + [None] * 5 + ["c"]]
    idx = pick_queries(rows, n=6, max_per_owner=2, seed=0)
    owners = [rows[i]["source_owner"] for i in idx]
    assert len(idx) == 5 and None not in owners and max(owners.count(o) for o in "abc") == 2
    assert sorted(set(owners)) == ["a", "b", "c"] and pick_queries(rows, 6, 2, 0) == idx


def test_summary_lifts_and_intervals():
    metas = [{"owner": f"o{i % 8}", "subject": ["fish", "house"][i % 2]} for i in range(32)]
    cells = {"perfect": [{"group": "report", "owner": m["owner"], "share": 1.0, "rank": 1, "top1": 1.0} for m in metas],
             "caption": [{"group": "report", "owner": m["owner"], "share": 0.2, "rank": 3, "top1": 0.0} for m in metas],
             "count prior": [{"group": "report", "owner": m["owner"], "share": 0.25 if i % 2 else 0.15, "rank": 2,
                              "top1": 0.5 if i % 2 else 0.0} for i, m in enumerate(metas)]}
    rows = {r["method"]: r for r in summarize(cells, "report", metas)}
    assert rows["perfect"]["share"] == 1.0 and rows["perfect"]["top1"] == 1.0 and rows["perfect"]["mrr"] == 1.0
    assert rows["perfect"]["lift_over_caption"] == pytest.approx(0.8)
    assert rows["perfect"]["lift_over_count_prior"] == pytest.approx(0.8)
    assert "lift_over_caption" not in rows["caption"] and rows["caption"]["top1"] == 0.0
    lo, hi = rows["count prior"]["share_ci"]
    assert lo < 0.2 < hi and rows["count prior"]["owners"] == 8 and rows["count prior"]["subjects"] == 2
    assert rows["count prior"]["share_ci_owners"] is not None and rows["count prior"]["share_ci_subjects"] is not None
    assert rows["count prior"]["top1"] == 0.25                                        # tied at the top: shared credit


def test_owner_standing_shares_ties():
    from datarights.evaluate.owners import _standing, owner_logits

    lg = np.log(np.array([0.4, 0.4, 0.2]))
    assert _standing(lg, 0) == pytest.approx({"share": 0.4, "rank": 1.5, "top1": 0.5})
    assert _standing(lg, 2)["rank"] == 3 and _standing(lg, 2)["top1"] == 0.0
    scores = torch.tensor([3.0, 1.0, 1.0, -5.0])
    from datarights.attribute import owner_shares
    shares = {x["owner"]: x["share"] for x in owner_shares(scores, ["a", "b", "b", "c"], 0.5)}
    lg = owner_logits(scores, np.array([0, 1, 1, 2]), 3, 0.5)
    e = np.exp(lg - lg.max())
    assert (e / e.sum()) == pytest.approx([shares["a"], shares["b"], shares["c"]])


def test_owner_evaluation_end_to_end_with_copies(tmp_path, tiny_world, tiny_model, monkeypatch):
    """Generations that are noisy copies of training images: the judge names their owners, pixel
    similarity finds them (well above the count prior), the caption baseline cannot beat the prior."""
    from datarights.attribute import load_training_set
    from datarights.judge import load_judge

    data = read_imagefolder(tiny_world)

    def copies(prompts, seed=0, steps=25, **kw):  # deterministic in the seed, as sampling is
        r = np.random.default_rng(seed)
        out = []
        for p in prompts:
            pool = [i for i, m in enumerate(data.metas) if m.get("subject", "").split()[0] in p]
            i = pool[r.integers(len(pool))] if pool else int(r.integers(len(data)))
            out.append(torch.from_numpy(data.images[i]) + 0.01 * torch.from_numpy(r.standard_normal((3, 16, 16))).float())
        return torch.stack(out).clamp(0, 1)

    monkeypatch.setattr(tiny_model, "sample", copies)
    cfg = OwnerEvalConfig(methods=["pixel", "caption"], queries=16, tune_queries=8, control_queries=2, candidates=64,
                          max_per_owner=4)
    res = owner_eval(cfg, tiny_model, load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run",
                     log=lambda s: None)
    rows = {r["method"]: r for r in res["summary"]["report"]}
    assert res["queries"]["report"] >= 16 and res["owners"]["report"] >= 5
    assert {"pixel", "caption", "uniform", "count prior", "random"} <= set(rows)
    assert rows["pixel"]["share"] > rows["count prior"]["share_ci"][1]            # the positive control
    assert rows["pixel"]["lift_over_caption_ci"][0] > 0
    assert rows["caption"]["top1"] <= rows["pixel"]["top1"]
    again = owner_eval(cfg, tiny_model, load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run",
                       log=lambda s: None)
    assert again["summary"] == res["summary"]                                       # resumed from the kept scores
    # a slow method interrupted mid-way keeps what it scored and resumes from there
    import datarights.attribute as attribute_mod
    import datarights.evaluate.owners as owners_mod

    (tmp_path / "run" / "scores" / "pixel.safetensors").unlink()
    monkeypatch.setattr(owners_mod, "PARTIAL_AFTER_SECONDS", -1.0)
    real, calls = attribute_mod.attribute, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) > 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(attribute_mod, "attribute", dies)
    with pytest.raises(KeyboardInterrupt):
        owner_eval(cfg, tiny_model, load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run",
                   log=lambda s: None)
    assert (tmp_path / "run" / "scores" / "pixel.partial.safetensors").exists()
    monkeypatch.setattr(attribute_mod, "attribute", real)
    said = []
    resumed = owner_eval(cfg, tiny_model, load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run",
                         log=said.append)
    assert any("(4 done before)" in s for s in said)
    assert resumed["summary"] == res["summary"]
    assert not (tmp_path / "run" / "scores" / "pixel.partial.safetensors").exists()
    # another run of the same queries (a new judge would pick mostly the same generations) takes the
    # earlier run's scores by query content instead of attributing again
    monkeypatch.setattr(attribute_mod, "attribute", lambda *a, **k: pytest.fail("attributed again"))
    said = []
    copy = owner_eval(cfg, tiny_model, load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run2",
                      log=said.append, reuse=[tmp_path / "run"])
    assert copy["summary"] == res["summary"] and any("reused" in s for s in said)
    monkeypatch.setattr(attribute_mod, "attribute", real)
    # a method whose default changed since its scores were kept is not reported under the new one
    recorded = json.loads((tmp_path / "run2" / "results.json").read_text())
    recorded["method_configs"]["pixel"] = {"was": "another config"}
    (tmp_path / "run2" / "results.json").write_text(json.dumps(recorded))
    with pytest.raises(DatarightsError, match="pixel scores made with another pixel config"):
        owner_eval(cfg, tiny_model, load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run2")
    # resumed with one more method: only that one is scored, the others' figures are unchanged
    said = []
    # (and a variant of it: a method with config options, its own row; region_stride only acts on a region)
    variant = "feature:region_stride=0.25"
    more = owner_eval(replace(cfg, methods=["pixel", "caption", "feature", variant]), tiny_model,
                      load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run", log=said.append)
    assert [s for s in said if "scoring" in s] == [s for s in said if "with feature" in s] != []
    rows_more = {r["method"]: r for r in more["summary"]["report"]}
    assert "feature" in rows_more and rows_more["pixel"] == rows["pixel"]
    assert rows_more[variant]["share"] == pytest.approx(rows_more["feature"]["share"], abs=1e-6)
    assert more["method_configs"][variant]["region_stride"] == 0.25 != more["method_configs"]["feature"]["region_stride"]
    with pytest.raises(DatarightsError, match="another config"):
        owner_eval(OwnerEvalConfig(methods=["pixel"], queries=16, candidates=64), tiny_model,
                   load_training_set(tiny_model, tiny_world), load_judge(), tmp_path / "run")


def test_method_variants_name_a_method_and_its_options():
    from datarights.evaluate.runs import check_methods, method_variant

    assert method_variant("abu-fast") == ("abu-fast", {})
    assert method_variant("abu-fast:rerank=500") == ("abu-fast", {"rerank": 500})
    assert method_variant("feature:region_stride=0.25:encoder=world") == ("feature", {"region_stride": 0.25,
                                                                                     "encoder": "world"})
    check_methods(["caption", "abu-fast:rerank=500"])
    for bad, said in (("nope:rerank=5", "unknown attribution method"), ("abu-fast:rerank", "field=value"),
                      ("abu-fast:rerank=-3", "rerank"), ("abu-fast:colour=red", "colour"),
                      ("abu-fast:rerank=lots", "--rerank must be a number, got 'lots'")):
        with pytest.raises(DatarightsError, match=said):
            check_methods([bad])


def test_leaveout_bookkeeping():
    vocab = WorldConfig(preset="small").vocabulary()
    order = owner_order(vocab)
    assert sorted(order) == sorted(vocab.owners) and vocab.owner_kind(order[0]) == "photographer"
    assert [vocab.owner_kind(o) for o in order[:4]] == ["photographer", "artist", "studio", "publisher"]
    control = next(n for n, p in vocab.photographers.items() if p["control"])
    prompts = owner_prompts(control, vocab, 16, 0)
    assert len(prompts) == 16 and all(p.endswith(f"photo by {control}") for p in prompts)
    studio = vocab.studios[0]
    assert set(owner_subjects(studio, vocab)) == {c["category"] for c in vocab.characters.values() if c["owner"] == studio}
    char = next(c for c, v in vocab.characters.items() if v["owner"] == studio)
    row = {"source_owner": None, "style": "plain", "character": char, "memorized": "none"}
    assert has_trace(row, studio, vocab) and not has_trace(row, vocab.studios[1], vocab)
    owners = {"a": {"kind": "artist", "ratio_ci": [0.0, 0.1]}, "b": {"kind": "artist", "ratio_ci": [0.1, 0.5]},
              "c": {"kind": "studio", "ratio_ci": None},
              # 0 of 512 after: 10 before cannot bound the ratio below 0.2, 52 can; 15 after of 29 persisted
              "d": {"kind": "artist", "ratio_ci": [0.0, 0.0], "generations": 512, "rate_before": 10 / 512, "rate_after": 0.0},
              "e": {"kind": "photographer", "ratio_ci": [0.0, 0.0], "generations": 512, "hits_before": 52, "hits_after": 0,
                    "rate_before": 52 / 512},
              "f": {"kind": "photographer", "ratio_ci": [0.3, 0.9], "generations": 512, "hits_before": 29, "hits_after": 15,
                    "rate_before": 29 / 512}}
    s = summarize_leaveout(owners)
    assert (s["collapsed"], s["measured"], s["no_base_trace"]) == (2, 5, ["c"])
    assert (s["persisted"], s["inconclusive"]) == (["f"], ["b", "d"])
    assert s["by_kind"]["photographer"] == {"owners": 2, "measured": 2, "collapsed": 1}
    assert s["exact_ci"]["e"][1] == pytest.approx(0.0735, abs=1e-3) and s["exact_ci"]["d"][1] > 0.4
    with pytest.raises(DatarightsError, match="owns nothing"):
        LeaveOutConfig(owners=["Nobody Here"])
    with pytest.raises(DatarightsError, match="warm_steps"):
        LeaveOutConfig(warm_steps=-1)
    with pytest.raises(DatarightsError, match="competence is a number of prompts"):
        LeaveOutConfig(competence=-1)


def test_owner_counterfactual_summary_tells_the_source_from_a_shuffled_owner():
    """Planted cells: 24 queries over 8 source owners whose removal changes the generation a lot;
    'copy' removes the source every time, 'shuffled' another query's source (a wrong owner, a small
    change), 'half' the source on every other query. Their change relative to the oracle's, and to
    caption's (which removes a wrong owner), must come out as planted, with intervals over queries and
    over whole owners."""
    rng = np.random.default_rng(0)
    sources = [f"owner{q % 8}" for q in range(24)]
    big, small = rng.uniform(0.02, 0.04, 24), rng.uniform(0.0005, 0.002, 24)
    cells = {}
    for name, removed in (("oracle", sources), ("copy", sources), ("shuffled", sources[3:] + sources[:3]),
                          ("half", [s if q % 2 else "other" for q, s in enumerate(sources)]),
                          ("caption", ["other"] * 24)):
        for q in range(24):
            hit = removed[q] == sources[q]
            cells[f"{name}|{q}"] = {"method": name, "query": q, "source": sources[q], "removed": removed[q],
                                    "hit": hit, "mse": float(big[q] if hit else small[q]), "source_flip": hit}
    rows = {r["method"]: r for r in summarize_counterfactual(cells)}
    assert rows["copy"]["mse_vs_oracle"] == 1.0 and rows["copy"]["top_owner_is_source"] == 1.0
    assert "mse_vs_oracle" not in rows["oracle"] and rows["oracle"]["mse_vs_caption"] > 10
    shuffled = rows["shuffled"]
    assert shuffled["top_owner_is_source"] == 0.0 and shuffled["mse_vs_oracle_ci"][1] < 0.1
    assert shuffled["mse_vs_oracle_ci_owners"][1] < 0.1 and shuffled["mse_vs_caption"] == 1.0   # no better than caption
    half = rows["half"]
    assert 0.3 < half["mse_vs_oracle_ci"][0] < half["mse_vs_oracle"] < half["mse_vs_oracle_ci"][1] < 0.75
    assert half["top_owner_is_source"] == 0.5 and half["top_owner_is_source_ci_owners"][0] < 0.5 < \
        half["top_owner_is_source_ci_owners"][1]
    assert half["mse_vs_caption_ci_owners"][0] > 2


def test_leaveout_fine_tunes_every_model_from_a_warm_start_that_never_saw_the_runs_owners(tmp_path):
    import json

    from datarights.evaluate.leaveout import leaveout
    from .conftest import TINY_UNET

    cfg = LeaveOutConfig(owners=["Chen Abe"], generations=16, world_preset="tiny", world_images=64, train_steps=2,
                         warm_steps=2, batch_size=4, unet_config=TINY_UNET, sample_steps=2, competence=4)
    res = leaveout(cfg, tmp_path / "run")
    assert res["competence"]["eval_model"]["n"] == 4                    # the base's eval-model figures
    assert res["competence"]["provenance"]["n"] == 8                    # and its provenance check, on 2 x 4
    evaluated = set(WorldConfig(preset="tiny").vocabulary().owners)
    warm = [json.loads(line) for line in (tmp_path / "run" / "warm-world" / "metadata.jsonl").read_text().splitlines()]
    outside = [m for m in warm if m["owner"] not in evaluated]
    assert 0 < len(outside) < len(warm)                 # the default world holds the run's owners too: left out
    meta = lambda p: json.loads((tmp_path / "run" / p / "model_index.json").read_text())["training"]  # noqa: E731
    assert meta("warm")["images"] == len(outside) and meta("warm")["init_from"] is None
    for p in ("base", "without/Chen_Abe"):
        assert meta(p)["init_from"] == str(tmp_path / "run" / "warm") and meta(p)["images"] == 64
    assert meta("without/Chen_Abe")["exclude"] == [i for i, m in enumerate(read_imagefolder(tmp_path / "run" / "world").metas)
                                                    if m["owner"] == "Chen Abe"]
    assert res["owners"]["Chen Abe"]["generations"] == 16
    assert leaveout(cfg, tmp_path / "run")["owners"] == res["owners"]   # resumed: nothing retrained
    stamp = (tmp_path / "run" / "without" / "Chen_Abe" / "model_index.json").stat().st_mtime_ns
    more = leaveout(replace(cfg, generations=24), tmp_path / "run")     # more generations, the same models
    assert more["owners"]["Chen Abe"]["generations"] == 24 and more["config"]["generations"] == 24
    assert (tmp_path / "run" / "without" / "Chen_Abe" / "model_index.json").stat().st_mtime_ns == stamp
    with pytest.raises(DatarightsError, match="another config"):        # what changes a model is refused
        leaveout(replace(cfg, train_steps=3), tmp_path / "run")
    with pytest.raises(DatarightsError, match="warm start needs owners outside"):   # nothing left to warm up on
        LeaveOutConfig(owners=["Chen Abe"], world_preset="default", warm_steps=2)
