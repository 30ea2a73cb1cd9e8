"""The runtime floor: devices and precision, memory-aware batching, accelerate's loop, per-model
defaults, diffusers-native exports (full pipeline and LoRA), and the GPU check's CPU run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datarights import runtime
from datarights.errors import DatarightsError
from datarights.models import load_model

from .test_cli import run
from .test_safety import one_line


# ----------------------------------------------------------------------------- devices and precision
def test_device_and_precision_strings():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert runtime.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(DatarightsError, match="no CUDA GPU"):
            runtime.resolve_device("cuda:0")
    for bad in ("tpu", "gpu", "cuda:x", "cuda0"):
        with pytest.raises(DatarightsError, match="unknown device"):
            runtime.resolve_device(bad)
    assert runtime.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(DatarightsError, match="needs a GPU"):
        runtime.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(DatarightsError, match="unknown precision"):
        runtime.resolve_precision("fp64", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_device_and_lora_bad_input(monkeypatch, capsys, tmp_path, tiny_trained):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    cases = [
        (["generate", "a face", "--device", "cuda"], "no CUDA GPU"),
        (["generate", "a face", "--device", "tpu"], "unknown device"),
        (["audit", "--model", tiny_trained, "--target", "grumpy face", "--anchor", "face", "--precision", "fp16"],
         "needs a GPU"),
        (["erase", "--model", tiny_trained, "--target", "grumpy face", "--anchor", "face", "--out", tmp_path / "e",
          "--params", "lora-xattn-kv", "--lora-rank", "0"], "--lora-rank must be between 1 and 1024"),
        (["erase", "--model", tiny_trained, "--target", "grumpy face", "--anchor", "face", "--out", tmp_path / "e",
          "--lora-rank", "2"], "LoRA parameter groups"),
        (["erase", "--model", tiny_trained, "--target", "grumpy face", "--anchor", "face", "--out", tmp_path / "e",
          "--method", "uce", "--batch-size", "4"], "has no option --batch-size"),
        (["export", tiny_trained, "--out", tmp_path / "full"], "not written by datarights"),
        (["export", tiny_trained, "--out", tiny_trained], "is the input"),
    ]
    for args, message in cases:
        code, _, err = run(monkeypatch, capsys, *args)
        one_line(code, err, message)
    assert (tmp_path / "full" / "x.txt").read_text() == "mine" and not (tmp_path / "e").exists()


def test_meta_default_device_catches_a_tensor_made_without_the_models_device():
    """The mechanism the contract tables rely on: under the meta default device, a tensor made without
    a device cannot meet the model's (CPU) tensors."""
    x = torch.ones(3, device="cpu")
    with torch.device("meta"):
        with pytest.raises((RuntimeError, NotImplementedError)):
            (torch.zeros(3) + x).sum().item()
        assert (torch.zeros(3, device=x.device) + x).sum().item() == 3


# ----------------------------------------------------------------------------- batching and the loop
def test_memory_aware_batching_splits_into_accumulated_micro_batches(monkeypatch, tiny_model):
    runtime._ACTIVATIONS.clear()
    per_row = runtime.activation_bytes_per_row(tiny_model)
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda device: int(per_row * 3 * 3 * 2))  # 3 rows with backward
    assert runtime.rows_that_fit(tiny_model, backward=True) == 3
    assert runtime.micro_batches(tiny_model, 8) == (2, 4)       # largest divisor of 8 that fits, 4 accumulated
    assert runtime.micro_batches(tiny_model, 9) == (3, 3)
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda device: 1)
    assert runtime.micro_batches(tiny_model, 8) == (1, 8)


def test_gradient_accumulation_matches_one_big_batch(tiny_model):
    """accelerate's accumulation: two micro-batches of a fixed batch give the step one full batch gives."""
    data = torch.randn(8, 5)
    results = []
    for accumulate in (1, 2):
        w = torch.nn.Parameter(torch.ones(5))
        half = 8 // accumulate

        def loss_fn(k, g, w=w, half=half, accumulate=accumulate):
            rows = data[(k % accumulate) * half:(k % accumulate + 1) * half]
            return ((rows @ w) ** 2).mean()

        runtime.optimise(tiny_model, {"w": w}, loss_fn, steps=3, lr=0.1, seed=0, desc="t", progress=False,
                         accumulate=accumulate)
        results.append(w.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_one_process_can_switch_precision_between_runs(tiny_model):
    """accelerate keeps one shared state per process; running bf16 after fp32 (and back) must work."""
    from datarights.erase import erase

    opts = dict(steps=2, n_anchor_images=2, batch_size=2, sample_steps=2)
    a = erase(tiny_model, ["grumpy face"], ["face"], "ca", progress=False, **opts)
    tiny_model.to("cpu", "bf16")
    try:
        b = erase(tiny_model, ["grumpy face"], ["face"], "ca", progress=False, **opts)
    finally:
        tiny_model.to("cpu", "fp32")
    c = erase(tiny_model, ["grumpy face"], ["face"], "ca", progress=False, **opts)
    assert all(torch.equal(a.tensors[n], c.tensors[n]) for n in a.tensors)      # fp32 again: the same edit
    assert any(not torch.equal(a.tensors[n], b.tensors[n]) for n in a.tensors)  # bf16 arithmetic differs


def test_ca_with_micro_batches_runs_and_records_its_settings(monkeypatch, tiny_model):
    from datarights.erase import erase

    runtime._ACTIVATIONS.clear()
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda device: 1)  # forces micro-batches of one image
    edit = erase(tiny_model, ["grumpy face"], ["face"], "ca", progress=False, steps=2, n_anchor_images=4,
                 batch_size=2, sample_steps=2)
    assert edit.config["batch_size"] == 2 and edit.config["lr"] == 3e-4    # the world defaults, resolved


def test_per_model_defaults(tiny_model, tiny_sd_folder):
    from datarights.attribute.abu import AbUConfig
    from datarights.erase.ca import CAConfig
    from datarights.erase.esd import ESDConfig

    sd = load_model(tiny_sd_folder, "cpu")
    assert CAConfig().for_model(tiny_model).lr == 3e-4 and CAConfig().for_model(sd).lr == 1.6e-5
    assert CAConfig(lr=1e-3).for_model(sd).lr == 1e-3                     # an explicit value wins
    assert ESDConfig().for_model(sd).steps == 1000 and ESDConfig().for_model(tiny_model).steps == 150
    assert AbUConfig().for_model(sd).query_draws == 50_000 and AbUConfig().for_model(tiny_model).query_draws == 256


def test_share_temperature_is_uncalibrated_off_the_world(tiny_sd_trained, tiny_world, tmp_path):
    from datarights.attribute import Query, attribute, calibrate, load_training_set

    model = load_model(tiny_sd_trained, "cpu")
    train = load_training_set(model, tiny_world)
    q = Query(train.images[3], train.folder.texts[3])
    out = attribute(model, train, q, "pixel", cache=tmp_path, progress=False).to_json()
    assert out["temperature_calibrated"] is False
    fixed = attribute(model, train, q, "pixel", cache=tmp_path, progress=False, temperature=0.5).to_json()
    assert fixed["temperature_calibrated"] is True and fixed["temperature"] == 0.5
    cal = calibrate(model, train, "pixel", tiny_world, cache=tmp_path)  # training images as known-owner queries
    assert cal["queries"] == len(train) and 0.005 <= cal["temperature"] <= 5 and np.isfinite(cal["cross_entropy"])


def test_training_under_accelerate_launch_with_two_processes(tmp_path, tiny_world):
    """`accelerate launch` runs the same command in several processes (here 2 on the CPU, gloo): they
    train one model together and only the first writes it."""
    import os
    import sys

    # the launcher of the interpreter running the tests (an `accelerate` on PATH may be another Python's)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "datarights.cli", "train",
                           "--data", str(tiny_world), "--out", str(tmp_path / "m"), "--steps", "4",
                           "--batch-size", "4", "--checkpoint-every", "2"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("wrote ") == 1
    assert load_model(tmp_path / "m", "cpu").meta["training"]["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# ----------------------------------------------------------------------------- diffusers-native outputs
def _pipeline_pixels(pipe) -> np.ndarray:
    return pipe("a red grumpy face", num_inference_steps=3, guidance_scale=7.5, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def _pipeline_of(model, scheduler_folder):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    return StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=DDIMScheduler.from_pretrained(scheduler_folder),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_exported_pipeline_loads_in_diffusers_and_reproduces_the_edit(monkeypatch, capsys, tmp_path, tiny_sd_folder):
    from diffusers import StableDiffusionPipeline

    from datarights.erase import erase

    base = load_model(tiny_sd_folder, "cpu")
    erase(base, ["grumpy face"], ["face"], "uce", progress=False).save(tmp_path / "edit")
    code, _, err = run(monkeypatch, capsys, "export", tmp_path / "edit", "--out", tmp_path / "exported")
    assert code == 0, err
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "exported", safety_checker=None)
    edited = load_model(tmp_path / "edit", "cpu")
    ours = _pipeline_pixels(_pipeline_of(edited, tiny_sd_folder / "scheduler"))
    assert np.allclose(_pipeline_pixels(pipe), ours, atol=1e-5)
    assert not np.allclose(_pipeline_pixels(StableDiffusionPipeline.from_pretrained(tiny_sd_folder)), ours, atol=1e-5)
    # datarights loads it as a plain pipeline folder too, with the edit on record
    again = load_model(tmp_path / "exported", "cpu")
    assert again.meta["edit"]["method"] == "uce"
    code, _, err = run(monkeypatch, capsys, "export", tmp_path / "edit", "--out", tmp_path / "exported")
    one_line(code, err, "pass --overwrite")


def test_lora_edit_applies_through_load_lora_weights(tmp_path, tiny_sd_folder):
    from diffusers import StableDiffusionPipeline

    from datarights.erase import erase

    base = load_model(tiny_sd_folder, "cpu")
    opts = dict(steps=3, n_anchor_images=4, batch_size=2, sample_steps=2, lr=1e-2)
    edit = erase(base, ["grumpy face"], ["face"], "ca", progress=False, params="lora-xattn-kv", lora_rank=2, **opts)
    assert edit.config["lora"] == {"rank": 2, "alpha": 2} and all(".lora_" in n for n in edit.tensors)
    full = erase(base, ["grumpy face"], ["face"], "ca", progress=False, **opts)
    assert edit.changed_params < full.changed_params                 # adapters, not the K/V matrices
    edit.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder, safety_checker=None)
    plain = _pipeline_pixels(pipe)
    pipe.load_lora_weights(tmp_path / "lora")
    ours = _pipeline_pixels(_pipeline_of(load_model(tmp_path / "lora", "cpu"), tiny_sd_folder / "scheduler"))
    assert np.allclose(_pipeline_pixels(pipe), ours, atol=1e-5)
    assert not np.allclose(plain, ours, atol=1e-5)


def test_trained_sd_folder_loads_in_diffusers(tiny_sd_trained):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_trained, safety_checker=None)
    assert _pipeline_pixels(pipe).shape == (1, 16, 16, 3)
    assert load_model(tiny_sd_trained, "cpu").meta["training"]["init_from"]


# ----------------------------------------------------------------------------- the GPU check
@pytest.mark.slow  # .ci/run runs the same tiny check (every part in its own process) right after the suite
def test_gpu_check_runs_on_cpu_with_tiny_shapes(tmp_path):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"
    done = subprocess.run([sys.executable, str(script), "--tiny", "--inline", "--device", "cpu",
                           "--out", str(tmp_path / "gpu.jsonl")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    parts = [(r["part"], r.get("method")) for r in rows]
    for want in [("unet", None), ("generate", None), ("erase", "uce"), ("erase", "ca"), ("erase", "esd"),
                 ("audit", None), ("attack", "udatk"), ("attribute", "trak"), ("attribute", "dtrak"),
                 ("attribute", "abu"), ("summary", None)]:
        assert want in parts, want
    assert not [r for r in rows if "error" in r]
