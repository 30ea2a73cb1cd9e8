import numpy as np
import pytest

import datarights.train as train_mod
from datarights.errors import DatarightsError
from datarights.evaluate import CounterfactualConfig, CustomConfig, counterfactual, custom_eval
from datarights.evaluate.custom import recall_at

from .conftest import TINY_UNET


def test_counterfactual_runs_and_resumes(tmp_path, monkeypatch):
    cfg = CounterfactualConfig(methods=["pixel"], k=[5], queries=1, world_images=30, train_steps=2, batch_size=4,
                               sample_steps=2, unet_config=TINY_UNET)
    res = counterfactual(cfg, tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    methods = {r["method"] for r in res["summary"]}
    assert methods == {"pixel", "random"}
    for c in res["cells"].values():
        assert c["mse"] >= 0 and 0 <= c["feature_distance"] <= 2
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("retrained a finished cell"))
    again = counterfactual(cfg, tmp_path / "run", cache=tmp_path / "cache", log=lambda s: None)
    assert again["cells"] == res["cells"]
    with pytest.raises(DatarightsError, match="another config"):
        counterfactual(CounterfactualConfig(methods=["feature"], k=[5], queries=1, world_images=30, train_steps=2,
                                            batch_size=4, unet_config=TINY_UNET), tmp_path / "run", log=lambda s: None)


def test_k_larger_than_the_data_is_refused():
    with pytest.raises(DatarightsError, match="every K"):
        CounterfactualConfig(k=[5000], world_images=1000)


def test_custom_benchmark_tiny(tiny_world, tmp_path):
    from datarights.train import TrainConfig, train
    train(TrainConfig(steps=2, batch_size=4, warmup=1, unet_config=TINY_UNET), tiny_world, tmp_path / "base", progress=False)
    cfg = CustomConfig(methods=["feature", "feature-tuned", "pixel"], concepts=1, tune_concepts=1, exemplars=2,
                       generations=1, pool=20, steps=2)
    res = custom_eval(cfg, tiny_world, tmp_path / "base", log=lambda s: None)
    assert [r["method"] for r in res["table"]] == ["feature", "feature-tuned", "pixel"]
    for r in res["table"]:
        assert 0 <= r["recall@1"] <= 1 and 0 <= r["recall@10"] <= 1 and 0 < r["mAP"] <= 1


def test_recall_at():
    assert recall_at(np.array([1, 5, 30]), 1) == 1.0
    assert recall_at(np.array([2, 5, 30]), 1) == 0.0
    assert recall_at(np.array([2, 5, 30]), 10) == pytest.approx(2 / 3)
