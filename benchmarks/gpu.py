"""The GPU check: every command's engine on a Stable Diffusion 1.5-shaped model, with the limits beside it.

    python benchmarks/gpu.py                   # on a CUDA machine: SD-1.5 shapes (UNet 860M, CLIP-L text, VAE), 512x512
    python benchmarks/gpu.py --tiny            # anywhere (CPU in CI): tiny shapes, the same parts, seconds each

Builds the pipeline folder from diffusers/transformers configs with random weights (nothing is
downloaded), then runs each part in its own process under a time limit and prints one JSON line
per part: generate; erase (uce, ca, esd); audit; attack (udatk); attribute (trak, dtrak, abu)
prepare and query; dattri's TRAKAttributor (when dattri is installed) and diffusers' raw UNet
forward and forward+backward rates in the same run (the limits the bars are measured against).
A part that fails or runs out of time is reported as such; the run goes on. The whole check is
sized for one 10-minute device run (`--limit` seconds per part).

Bars (issue 11), checked in the summary line: TRAK featurization (K/V, k = 512, one timestep, bf16)
>= 5x dattri's rate and >= 60% of the forward+backward limit; ca (100 steps, batch 16) under 60 s;
sampling (25 steps, bf16) >= 60% of the forward limit / 50.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- the model folder
def build_folder(out: Path, tiny: bool) -> Path:
    """A StableDiffusionPipeline folder with random weights: SD-1.5 shapes, or tiny ones."""
    from datarights.testing import build_tiny_sd, tiny_clip_tokenizer

    if tiny:
        return build_tiny_sd(out)
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out.mkdir(parents=True, exist_ok=True)
    tok = tiny_clip_tokenizer(out)
    tok.model_max_length = 77
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                       num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD-1.x's UNet
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=enc, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(out / "pipe")
    return out / "pipe"


def build_world(out: Path, n: int) -> Path:
    from datarights.world import WorldConfig, make_world_folder
    return make_world_folder(out, WorldConfig(preset="tiny", n_images=n, seed=0))


# ----------------------------------------------------------------------------- parts (child processes)
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def part_unet(a) -> dict:
    """diffusers' UNet alone: forward and forward+backward images/s in bf16 and fp32 (batch 16)."""
    from datarights.models import load_model

    m = load_model(a.folder, a.device)
    unet, dev = m.unet, m.device
    b = a.batch
    x = torch.randn(b, *m.latent_shape, device=dev)
    c = torch.randn(b, m.max_length, unet.config.cross_attention_dim, device=dev)
    t = torch.randint(0, 1000, (b,), device=dev)
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        for mode in ("forward", "forward_backward"):
            unet.requires_grad_(mode == "forward_backward")
            reps = a.reps

            def step():
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                    with torch.set_grad_enabled(mode == "forward_backward"):
                        y = unet(x, t, encoder_hidden_states=c).sample
                        if mode == "forward_backward":
                            y.float().pow(2).mean().backward()
            step()
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            _sync(dev)
            out[f"{mode}_{name}_img_per_s"] = round(b * reps / (time.perf_counter() - t0), 2)
    unet.requires_grad_(False)
    return out


def part_generate(a) -> dict:
    from datarights.models import load_model

    m = load_model(a.folder, a.device, "bf16")
    prompts = ["a red grumpy face in Ada Vell style"] * a.batch_gen
    m.sample(prompts[:1], steps=2)
    _sync(m.device)
    t0 = time.perf_counter()
    m.sample(prompts, steps=25, seed=0)
    _sync(m.device)
    dt = time.perf_counter() - t0
    return {"images": len(prompts), "steps": 25, "guidance": m.default_guidance, "seconds": round(dt, 2),
            "img_per_s": round(len(prompts) / dt, 3), "precision": "bf16"}


def part_erase(a) -> dict:
    from datarights.erase import erase
    from datarights.models import load_model

    m = load_model(a.folder, a.device, "bf16")
    opts = {"uce": {}, "ca": dict(steps=100, batch_size=16, n_anchor_images=16, sample_steps=25),
            "esd": dict(steps=20, rollout_steps=25)}[a.method]
    if a.tiny:
        opts = {k: (min(v, 4) if k in ("steps", "n_anchor_images", "sample_steps", "rollout_steps") else v)
                for k, v in opts.items()}
    t0 = time.perf_counter()
    edit = erase(m, ["grumpy face"], ["face"], a.method, progress=False, **opts)
    _sync(m.device)
    return {"method": a.method, "seconds": round(time.perf_counter() - t0, 2), "changed_params": edit.changed_params,
            "config": {k: v for k, v in edit.config.items() if not isinstance(v, (list, dict))}}


def part_audit(a) -> dict:
    """The audit's cost (generation by edited and base models, then the judge): the world judge reads
    these random-weight images, so its figures are not a verdict here, only the cost is."""
    from datarights.audit import AuditConfig, audit
    from datarights.erase import erase
    from datarights.judge import load_judge
    from datarights.models import load_model

    m = load_model(a.folder, a.device, "bf16")
    edited = erase(m, ["grumpy face"], ["face"], "uce", progress=False).apply(m)
    cfg = AuditConfig(n_target=16, n_seen=16, n_nearby=16, n_others=16, n_anchor=16, steps=25)
    t0 = time.perf_counter()
    res = audit(edited, m, "grumpy face", "face", cfg, judge=load_judge(), progress=False, log=lambda s: None)
    dt = time.perf_counter() - t0
    n = 2 * (cfg.n_target + cfg.n_seen + 2 * cfg.n_nearby + cfg.n_others) + cfg.n_anchor
    return {"seconds": round(dt, 2), "images": n, "img_per_s": round(n / dt, 3), "target_erased": res["target_erased"]}


def part_attack(a) -> dict:
    from datarights.attack import attack
    from datarights.models import load_model

    m = load_model(a.folder, a.device, "bf16")
    opts = dict(steps=2 if a.tiny else 20, budget=4, probes=2, restarts=1, n_images=4)
    t0 = time.perf_counter()
    r = attack(m, "grumpy face", "udatk", **opts)
    return {"method": "udatk", "seconds": round(time.perf_counter() - t0, 2), "attempts": r.attempts, "config": opts}


def part_attribute(a) -> dict:
    """Per-training-set work (prepare) and one query for trak, dtrak or abu on n training images."""
    from datarights.attribute import METHODS, Query, load_training_set, make_config
    from datarights.models import load_model
    from datarights.runtime import rows_that_fit

    m = load_model(a.folder, a.device, "bf16")
    train = load_training_set(m, a.world)
    if a.method == "abu":
        cfg = make_config("abu", query_draws=64, eval_timesteps=2, fisher_draws=1, precision="bf16")
        rows = cfg.fisher_draws
    else:
        cfg = make_config(a.method, proj_dim=512, timesteps=1)
        rows = cfg.timesteps
    cfg = cfg.for_model(m)
    prep = METHODS[a.method].prepare
    t0 = time.perf_counter()
    state = prep(m, train, cfg, progress=False)
    _sync(m.device)
    t_prep = time.perf_counter() - t0
    q = Query(train.images[0], train.folder.texts[0])
    t0 = time.perf_counter()
    METHODS[a.method].score(m, train, state, q, cfg)
    _sync(m.device)
    t_query = time.perf_counter() - t0
    return {"method": a.method, "n_train": len(train), "prepare_s": round(t_prep, 2),
            "prepare_img_per_s": round(len(train) / t_prep, 2), "per_sample_grads_per_s": round(len(train) * rows / t_prep, 2),
            "query_s": round(t_query, 3), "rows_per_batch": rows_that_fit(m, backward=True)}


def part_dattri(a) -> dict:
    """dattri's TRAKAttributor on the same UNet: cross-attention K/V, k = 512, one timestep."""
    try:
        from dattri.algorithm.trak import TRAKAttributor
        from dattri.task import AttributionTask
    except ImportError:
        return {"skipped": "dattri is not installed (pip install dattri==0.3.0)"}
    from datarights.attribute import load_training_set
    from datarights.models import load_model
    from datarights.runtime import draws, spaced_timesteps

    m = load_model(a.folder, a.device)
    train = load_training_set(m, a.world)
    n = len(train)
    ts = spaced_timesteps(1, m.num_train_timesteps)
    d = draws(n, 1, tuple(train.x0.shape[1:]), m.num_train_timesteps, 0, m.device, timesteps=ts)
    data = torch.utils.data.TensorDataset(train.x0, train.cond(torch.arange(n, device=m.device)), d.t[:, 0], d.noise[:, 0])
    unet = m.unet
    layers = [n_.removeprefix("unet.") for n_ in m.param_groups("xattn-kv")]
    for name, p in unet.named_parameters():
        p.requires_grad_(name in layers)
    sched = m.scheduler

    def loss_func(params, batch):
        x0, c, t, noise = batch
        x_t = sched.add_noise(x0[None], noise[None], t[None])
        with torch.autocast(m.device.type, dtype=torch.bfloat16, enabled=m.device.type == "cuda"):
            eps = torch.func.functional_call(unet, params, (x_t, t[None]), {"encoder_hidden_states": c[None]}).sample
        return ((eps.float() - noise[None]) ** 2).mean()

    task = AttributionTask(loss_func=loss_func, model=unet, checkpoints=unet.state_dict())
    attributor = TRAKAttributor(task=task, correct_probability_func=lambda params, batch: torch.tensor(0.0),
                                projector_kwargs={"proj_dim": 512, "device": str(m.device)}, layer_name=layers,
                                device=str(m.device), regularization=1e-2)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)
    t0 = time.perf_counter()
    attributor.cache(loader)
    _sync(m.device)
    dt = time.perf_counter() - t0
    return {"n_train": n, "seconds": round(dt, 2), "img_per_s": round(n / dt, 2)}


PARTS = {"unet": part_unet, "generate": part_generate, "erase": part_erase, "audit": part_audit,
         "attack": part_attack, "attribute": part_attribute, "dattri": part_dattri}
PLAN = [("unet", None), ("generate", None), ("erase", "uce"), ("erase", "ca"), ("erase", "esd"), ("audit", None),
        ("attack", None), ("attribute", "trak"), ("attribute", "dtrak"), ("attribute", "abu"), ("dattri", None)]


def run_part(args) -> None:
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    res = PARTS[args.part](args)
    res.update(part=args.part, wall_s=round(time.perf_counter() - t0, 2), peak_gpu_gb=_peak_gb(dev))
    print("RESULT " + json.dumps(res), flush=True)


# ----------------------------------------------------------------------------- the parent
def summarize(rows: list[dict]) -> dict:
    """The bars, from the parts' figures (None where a figure is missing)."""
    get = {(r["part"], r.get("method")): r for r in rows if "error" not in r and "skipped" not in r}
    unet, trak, dattri = get.get(("unet", None)), get.get(("attribute", "trak")), get.get(("dattri", None))
    gen, ca = get.get(("generate", None)), get.get(("erase", "ca"))
    out = {}
    if trak and unet:
        out["trak_vs_fwd_bwd_limit"] = round(trak["prepare_img_per_s"] / unet["forward_backward_bf16_img_per_s"], 3)
    if trak and dattri:
        out["trak_vs_dattri"] = round(trak["prepare_img_per_s"] / dattri["img_per_s"], 2)
    if gen and unet:
        out["sampling_vs_forward_limit"] = round(gen["img_per_s"] / (unet["forward_bf16_img_per_s"] / 50), 3)
    if ca:
        out["ca_seconds"] = ca["seconds"]
    out["bars_met"] = {"trak>=5x_dattri": out.get("trak_vs_dattri", 0) >= 5 if "trak_vs_dattri" in out else None,
                       "trak>=0.6_limit": out.get("trak_vs_fwd_bwd_limit", 0) >= 0.6 if "trak_vs_fwd_bwd_limit" in out else None,
                       "ca<60s": out["ca_seconds"] < 60 if "ca_seconds" in out else None,
                       "sampling>=0.6_limit": out["sampling_vs_forward_limit"] >= 0.6
                       if "sampling_vs_forward_limit" in out else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (runs on a CPU in seconds per part)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--limit", type=int, default=None, help="seconds per part (default 90; 120 with --tiny)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    ap.add_argument("--parts", default="", help="comma-separated subset of: " + ", ".join(sorted(PARTS)))
    ap.add_argument("--inline", action="store_true", help="run the parts in this process (no limits; for the tests)")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--world", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--batch-gen", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        return run_part(args)
    limit = args.limit or (120 if args.tiny else 90)
    keep = {p for p in args.parts.split(",") if p}
    tmp = Path(tempfile.mkdtemp(prefix="datarights-gpu-"))
    t0 = time.perf_counter()
    folder = build_folder(tmp / "sd", args.tiny)
    world = build_world(tmp / "world", 64)
    lines = [{"part": "setup", "tiny": args.tiny, "device": args.device, "seconds": round(time.perf_counter() - t0, 1),
              "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}]
    print(json.dumps(lines[0]), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    extra = ["--batch", "2", "--batch-gen", "2", "--reps", "2"] if args.tiny else []
    for part, method in PLAN:
        if keep and part not in keep:
            continue
        if args.inline:
            row = _inline(args, part, method, folder, world)
        else:
            cmd = [sys.executable, __file__, "--part", part, "--folder", str(folder), "--world", str(world),
                   "--device", args.device, *extra, *(["--method", method] if method else []),
                   *(["--tiny"] if args.tiny else [])]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
                got = [ln[7:] for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
                row = json.loads(got[-1]) if got else {"part": part, "method": method,
                                                       "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
            except subprocess.TimeoutExpired:
                row = {"part": part, "method": method, "error": f"ran past the {limit} s limit"}
        lines.append(row)
        print(json.dumps(row), flush=True)
    summary = {"part": "summary", **summarize(lines[1:]), "seconds": round(time.perf_counter() - t0, 1)}
    lines.append(summary)
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    sys.exit(1 if any("error" in r for r in lines) else 0)


def _inline(args, part: str, method: str | None, folder: Path, world: Path) -> dict:
    """One part in this process (the tests' quick path); an error becomes the row's 'error'."""
    ns = argparse.Namespace(**{**vars(args), "part": part, "method": method, "folder": str(folder), "world": str(world),
                               "batch": 2, "batch_gen": 2, "reps": 2})
    try:
        res = PARTS[part](ns)
    except Exception as e:  # noqa: BLE001 - reported, as a child process's failure would be
        return {"part": part, "method": method, "error": f"{type(e).__name__}: {e}"[:300]}
    return {**res, "part": part}


if __name__ == "__main__":
    main()
