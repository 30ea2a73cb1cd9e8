"""The demo's attribution and service steps refuse a model that was not trained on the default world."""

from datarights.demo import _attribute_step


def test_attribution_step_is_skipped_for_a_model_not_trained_on_the_default_world(tiny_model):
    logs = []
    res, section, image = _attribute_step(tiny_model, None, "a photo of a fish", ("pixel",), 0, 2, logs.append)
    assert "skipped" in res and "default world" in res["skipped"] and image is None
    assert section["text"].startswith("Skipped") and logs


def test_service_step_is_skipped_for_a_model_not_trained_on_the_default_world(tiny_model, tmp_path):
    from datarights.demo import _service_step

    logs = []
    res, section = _service_step(tmp_path, tmp_path, tiny_model, None, "a photo of a fish", 0, logs.append)
    assert "skipped" in res and "default world" in res["skipped"] and not (tmp_path / "ledger.db").exists()
