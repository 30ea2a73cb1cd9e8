import pytest
import torch

import datarights.train as train_mod
from datarights.errors import DatarightsError
from datarights.models import load_model
from datarights.train import TrainConfig, train

from .conftest import TINY_UNET


def _cfg(**kw):
    return TrainConfig(steps=4, batch_size=8, checkpoint_every=2, warmup=2, unet_config=TINY_UNET, **kw)


def test_train_writes_loadable_model(tiny_world, tmp_path):
    model = train(_cfg(), tiny_world, tmp_path / "m", progress=False)
    loaded = load_model(tmp_path / "m")
    assert loaded.meta["training"]["steps"] == 4
    assert not (tmp_path / "m.ckpt").exists()
    for (n, p), (_, q) in zip(model.unet.named_parameters(), loaded.unet.named_parameters()):
        assert torch.equal(p, q), n


def test_interrupted_training_resumes_exactly(tiny_world, tmp_path, monkeypatch):
    ref = train(_cfg(), tiny_world, tmp_path / "ref", progress=False)

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_world_model", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tiny_world, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()  # no half-written model folder
    assert (tmp_path / "m.ckpt" / "state.json").is_file() and not list((tmp_path / "m.ckpt").glob("*.pt"))
    monkeypatch.undo()
    resumed = train(_cfg(), tiny_world, tmp_path / "m", progress=False)
    for (n, p), (_, q) in zip(ref.unet.named_parameters(), resumed.unet.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_stale_checkpoint_is_refused(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "save_world_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tiny_world, tmp_path / "m", progress=False)
    monkeypatch.undo()
    with pytest.raises(DatarightsError, match="another config"):
        train(_cfg(lr=1e-3), tiny_world, tmp_path / "m", progress=False)


def test_training_reduces_loss(tiny_world, tmp_path):
    from datarights.models import build_world_model
    from datarights.runtime import diffusion_loss
    from datarights.train import precompute_text_states
    from datarights.world import read_imagefolder

    data = read_imagefolder(tiny_world)
    cfg = TrainConfig(steps=60, batch_size=16, warmup=5, lr=2e-3, ema_decay=0, checkpoint_every=1000,
                      unet_config=TINY_UNET)
    before = build_world_model(TINY_UNET, seed=0)
    x = torch.from_numpy(data.images) * 2 - 1
    states, idx = precompute_text_states(before, data.texts)

    def loss(m):
        with torch.no_grad():
            return diffusion_loss(m, x, states[idx], torch.Generator().manual_seed(0)).item()

    l0 = loss(before)
    after = train(cfg, data, tmp_path / "trained", progress=False)
    assert loss(after) < 0.8 * l0


def test_bad_config():
    with pytest.raises(DatarightsError):
        TrainConfig(steps=0)
    with pytest.raises(DatarightsError):
        TrainConfig(batch_size=0)


def test_coupled_leave_out_only_removes_the_left_out_images(tiny_world, tmp_path):
    """Leaving out an image that no step draws changes nothing; leaving out a drawn one changes the model."""
    cfg = dict(steps=3, batch_size=4, warmup=1, unet_config=TINY_UNET, ema_decay=0.0)
    drawn = set()
    for step in range(3):  # the trainer's own batch stream
        g = torch.Generator().manual_seed(0 * 1_000_003 + step)
        drawn |= set(torch.randint(0, 64, (4,), generator=g).tolist())
    never, once = min(set(range(64)) - drawn), min(drawn)

    def weights(exclude):
        out = tmp_path / f"m{exclude}"
        train(TrainConfig(**cfg, exclude=exclude), tiny_world, out, progress=False)
        return torch.cat([p.flatten() for p in load_model(out).unet.parameters()])

    base = weights([])
    assert torch.equal(weights([never]), base)
    assert not torch.allclose(weights([once]), base)
