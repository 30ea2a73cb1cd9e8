"""Tiny models built from configs in code (nothing downloaded), for the tests and the GPU check."""

from __future__ import annotations

import torch

def tiny_clip_tokenizer(root, extra_words=("cat", "dog", "photo", "of", "painting", "picture")):
    """A CLIP BPE tokenizer whose vocabulary holds every letter and, as single tokens, every word of the
    world's prompts (built with the merges that join each word letter by letter); nothing downloaded."""
    import json
    import re

    from transformers import CLIPTokenizer

    from datarights.world import sample_eval_prompts
    from datarights.world import vocab as V

    texts = [m["text"] for m in sample_eval_prompts(400, 0)] + list(V.STYLES) + list(V.CHARACTERS) + V.OBJECTS
    texts += [V.MEMORIZED[n]["prompt"] for n in V.MEMORIZED] + [*V.CHARACTER_TEMPLATES, *V.COMPOSITION_TEMPLATES]
    words = sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower())} | set(extra_words))
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["!", *letters, *(c + "</w>" for c in letters)]
    merges = []
    for w in words:
        pieces = [*w[:-1], w[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merges.append(f"{left} {right}")
            left = left + right
            tokens.append(left)
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=24)


def build_tiny_sd(folder):
    """A tiny StableDiffusionPipeline folder (UNet, CLIP text encoder, tokenizer made here, VAE)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, max_position_embeddings=24,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=enc, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


def build_tiny_clip(folder):
    """A tiny CLIP folder (CLIPModel, tokenizer, preprocessor config) to stand in for a real CLIP judge."""
    import json

    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=24, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=32, patch_size=8),
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(folder / "clip")
    tok.save_pretrained(folder / "clip")
    (folder / "clip" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32},
         "image_mean": [0.4815, 0.4578, 0.4082], "image_std": [0.2686, 0.2613, 0.2758]}))
    return folder / "clip"
