import pytest
import torch

from datarights.errors import DatarightsError
from datarights.models import PARAM_GROUPS, load_model, save_world_model


def test_world_model_sample_is_seeded_and_batch_invariant(tiny_model):
    prompts = ["a red face", "a blue fish in Ada Vell style", "a picture of Blubbo"]
    a = tiny_model.sample(prompts, seed=5, steps=3)
    b = tiny_model.sample(prompts, seed=5, steps=3, batch_size=1)
    c = tiny_model.sample(prompts, seed=6, steps=3)
    assert a.shape == (3, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c)


def test_world_model_roundtrip(tiny_model, tmp_path):
    save_world_model(tiny_model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.kind == "world" and loaded.resolution == 16
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 500])
    c = tiny_model.encode_prompt(["a red face", "a tree"])
    with torch.no_grad():
        assert torch.allclose(tiny_model.predict_noise(x, t, c), loaded.predict_noise(x, t, c), atol=1e-6)


def test_model_interface_pieces(tiny_model):
    states = tiny_model.encode_prompt(["a red face", ""])
    assert states.shape == (2, tiny_model.max_length, 384)
    x0 = tiny_model.to_model_space(torch.rand(2, 3, 16, 16))
    assert x0.min() >= -1 and x0.max() <= 1
    noise = torch.randn_like(x0)
    t = torch.tensor([999, 0])
    xt = tiny_model.add_noise(x0, noise, t)
    assert (xt[0] - noise[0]).abs().mean() < 0.1  # t=T is almost pure noise
    assert (xt[1] - x0[1]).abs().mean() < 0.1     # t=0 is almost clean


def test_param_groups(tiny_model):
    groups = {g: tiny_model.param_groups(g) for g in PARAM_GROUPS}
    for g, params in groups.items():
        assert params, g
    assert set(groups["xattn-kv"]) < set(groups["xattn"]) < set(groups["attn"]) < set(groups["full"])
    assert all(".attn2.to_k." in n or ".attn2.to_v." in n for n in groups["xattn-kv"])
    assert not set(groups["unet-noxattn"]) & set(groups["xattn"])
    assert list(groups["embedding"]) == ["text_encoder.embeddings.word_embeddings.weight"]
    with pytest.raises(DatarightsError, match="unknown parameter group"):
        tiny_model.param_groups("everything")


def test_sd_pipeline_folder(tiny_sd_folder):
    model = load_model(tiny_sd_folder)
    assert model.kind == "sd" and model.vae is not None
    imgs = model.sample(["a photo of a grumpy cat", "a red dog"], seed=0, steps=2)
    assert imgs.shape == (2, 3, model.resolution, model.resolution)
    again = model.sample(["a photo of a grumpy cat", "a red dog"], seed=0, steps=2)
    assert torch.equal(imgs, again)
    x0 = model.to_model_space(imgs)
    assert x0.shape == (2, 4, 8, 8)
    assert model.param_groups("xattn-kv") and model.param_groups("embedding")
    (name,) = model.param_groups("embedding")
    assert name.startswith("text_encoder.") and name.endswith("token_embedding.weight")


def test_load_model_errors(tmp_path):
    with pytest.raises(DatarightsError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatarightsError, match="no model_index.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(DatarightsError, match="unsupported model class"):
        load_model(tmp_path / "odd")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text('{"_class_name": "DatarightsWorldModel"}')
    with pytest.raises(DatarightsError, match="no unet/"):
        load_model(tmp_path / "half")


def test_partial_rollouts_stop_where_asked(tiny_model):
    cond = tiny_model.encode_prompt(["a red face", "a tree"])
    noise = tiny_model.initial_noise(2, seed=5)
    assert torch.equal(tiny_model.sample_states(cond, steps=4, noise=noise, stop_at=0), noise)
    full = tiny_model.sample_states(cond, steps=4, noise=noise, return_model_space=True)
    assert torch.allclose(tiny_model.sample_states(cond, steps=4, noise=noise, stop_at=4), full)
    two = tiny_model.sample_states(cond, steps=4, noise=noise, stop_at=2)
    assert not torch.allclose(two, noise) and not torch.allclose(two, full)
