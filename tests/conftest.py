"""Shared fixtures: tiny models built from config in code, a tiny world; nothing is downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_UNET = dict(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's ~/.cache/datarights."""
    old = os.environ.get("DATARIGHTS_CACHE")
    os.environ["DATARIGHTS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("DATARIGHTS_CACHE") if old is None else os.environ.__setitem__("DATARIGHTS_CACHE", old)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from datarights.world import WorldConfig, make_world_folder

    return make_world_folder(tmp_path_factory.mktemp("w") / "world", WorldConfig(n_images=64, seed=3))


@pytest.fixture(scope="session")
def tiny_trained(tiny_world, tmp_path_factory):
    """A tiny model folder that records its training recipe (retrain and the CLI tests need one)."""
    from datarights.train import TrainConfig, train

    out = tmp_path_factory.mktemp("m") / "tiny"
    train(TrainConfig(steps=2, batch_size=4, warmup=1, unet_config=TINY_UNET), tiny_world, out, progress=False)
    return out


@pytest.fixture()
def tiny_model():
    from datarights.models import build_world_model

    return build_world_model(TINY_UNET, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny StableDiffusionPipeline folder (UNet, CLIP text encoder, tokenizer made here, VAE)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("sd")
    vocab = ["!", "a", "photo", "of", "red", "cat", "dog", "grumpy", "in", "style"]
    vocab = {**{t: i for i, t in enumerate(vocab)}, **{t + "</w>": i + len(vocab) for i, t in enumerate(vocab)}}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (root / "vocab.json").write_text(__import__("json").dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=12)
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, max_position_embeddings=12,
                                       bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=enc, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"
