"""One training loop for every model this project trains: the base world model, retrain-without
(exact unlearning), and fine-tunes that start from an existing model.

Plain PyTorch: epsilon-prediction MSE on noised images, classifier-free-guidance dropout of the
caption, AdamW with warm-up, an EMA of the weights (what gets saved), periodic checkpoints, and
exact resume (the batch of step k is drawn from a generator seeded by (seed, k)).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from . import runtime
from .errors import DatarightsError
from .files import atomic_file, check_disjoint, check_output, open_run_folder, write_json
from .models import T2IModel, build_world_model, load_model, save_sd_model, save_world_model
from .world import WORLD_VERSION, ImageFolder, read_imagefolder, world_config_of


@dataclass
class TrainConfig:
    """How to train (or fine-tune) a world model on an imagefolder."""

    steps: int = 5000
    """Optimisation steps."""
    batch_size: int = 128
    """Images per step."""
    lr: float = 8e-4
    """Peak AdamW learning rate (after linear warm-up), cosine-decayed to 10% at the end."""
    warmup: int = 200
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights; the EMA is what is saved (0 disables)."""
    cond_drop: float = 0.1
    """Probability of replacing a caption by the empty prompt (classifier-free guidance)."""
    seed: int = 0
    """Seeds the initial weights and every batch, noise and timestep."""
    checkpoint_every: int = 500
    """Write a resumable checkpoint every this many steps."""
    params: str = "full"
    """Parameter group to train (see T2IModel.param_groups); 'full' for training from scratch."""
    unet_config: dict = field(default_factory=dict)
    """Overrides of the world UNet config (tests use tiny models)."""
    exclude: list | None = None
    """Coupled leave-out: indices of images to leave out while every step still draws its batch,
    timesteps and noise over the *whole* dataset; the left-out rows are masked from the loss, so
    the remaining images are seen in exactly the order, with exactly the noise, of the run that
    kept them (an empty list trains on everything by the same masked path). None: plain training."""

    def __post_init__(self):
        if self.steps < 1:
            raise DatarightsError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise DatarightsError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise DatarightsError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.cond_drop < 1:
            raise DatarightsError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        if not 0 <= self.ema_decay < 1:
            raise DatarightsError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def data_hash(data: ImageFolder) -> str:
    """Content hash of an imagefolder (pixels and captions), used to key checkpoints and caches."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.images, dtype=np.float32).tobytes())
    h.update(json.dumps(data.texts).encode())
    return h.hexdigest()[:16]


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, frac))))


CKPT_STATE = "state.json"


def save_checkpoint(ckpt_dir: Path, fingerprint: str, step: int, elapsed: float, unet, ema, opt) -> None:
    """Tensors (weights, EMA, optimiser moments) in safetensors, the rest in JSON; never a pickle.

    The tensors go to a file named by the step; then state.json, which names that file and its
    hash, is replaced atomically (the commit point); older tensor files are removed last. A kill at
    any moment leaves the previous checkpoint or the new one, whole.
    """
    open_run_folder(ckpt_dir, "checkpoint folder", kind="checkpoint")
    tensors = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_state = opt.state_dict()
    for i, st in opt_state["state"].items():
        tensors.update({f"opt.{i}.{k}": torch.as_tensor(v) for k, v in st.items()})
    name = f"state-{step:08d}.safetensors"
    atomic_file(ckpt_dir / name, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp))
    digest = hashlib.sha256((ckpt_dir / name).read_bytes()).hexdigest()
    write_json(ckpt_dir / CKPT_STATE, {"fingerprint": fingerprint, "step": step, "elapsed": elapsed, "tensors": name,
                                       "tensors_sha256": digest, "param_groups": opt_state["param_groups"]})
    for old in ckpt_dir.glob("*state-*.safetensors*"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(ckpt_dir: Path, fingerprint: str, unet, ema, trainable: list) -> tuple[int, float, dict]:
    """Restore weights and EMA from a checkpoint written by save_checkpoint; returns (step, elapsed
    seconds, the optimiser state to resume with).

    A foreign, corrupt or mismatched checkpoint is a one-line error that says which folder to remove.
    """
    from safetensors import SafetensorError

    remove = f"remove {ckpt_dir} to start over"
    try:
        state = json.loads((ckpt_dir / CKPT_STATE).read_bytes().decode("utf-8"))
        if not isinstance(state, dict) or Path(str(state.get("tensors"))).name != state.get("tensors"):
            raise ValueError("state.json does not name a tensors file in the folder")
        raw = (ckpt_dir / state["tensors"]).read_bytes()
        if state.get("tensors_sha256") != hashlib.sha256(raw).hexdigest():
            raise ValueError("the tensors do not belong to this state")
        if state.get("fingerprint") != fingerprint:
            raise DatarightsError(f"checkpoint {ckpt_dir} was made with another config or dataset; {remove}")
        from safetensors.torch import load
        tensors = load(raw)
        unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        moments: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                moments.setdefault(int(i), {})[name] = v.to(trainable[int(i)].device)
        if len(state["param_groups"]) != 1 or len(state["param_groups"][0]["params"]) != len(trainable):
            raise ValueError("the optimiser state does not match the trained parameters")
        return int(state["step"]), float(state["elapsed"]), {"state": moments, "param_groups": state["param_groups"]}
    except DatarightsError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        raise DatarightsError(f"checkpoint {ckpt_dir} is corrupt or not a datarights checkpoint "
                              f"({type(e).__name__}); {remove}") from None


def precompute_text_states(model: T2IModel, texts: list[str], batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode each distinct caption once: returns (states [U, L, D], index [N]) with states[-1] = ''."""
    uniq = sorted(set(texts))
    pos = {t: i for i, t in enumerate(uniq)}
    with torch.no_grad():
        states = torch.cat([model.encode_prompt(uniq[i:i + batch]) for i in range(0, len(uniq), batch)]
                           + [model.encode_prompt([""])])
    return states, torch.tensor([pos[t] for t in texts], device="cpu")


def train(cfg: TrainConfig, data: str | Path | ImageFolder, out: str | Path, init_from: str | Path | None = None,
          resume: bool = True, progress=True, overwrite: bool = False, device=None, precision=None) -> T2IModel:
    """Train a world model on `data` (or fine-tune `init_from`, a world model or a Stable Diffusion
    folder) and write it to `out` (atomically, at the end).

    Steps:
      1. Build the model (seeded) or load `init_from`; read the data at the model's resolution and
         encode it into model space (pixels, or VAE latents) and each distinct caption once.
      2. Resume from `<out>.ckpt/` if present.
      3. For each step k: draw a batch, caption dropout, timesteps and noise from stream (seed, k),
         minimise the epsilon MSE (runtime.diffusion_loss) with AdamW, warm-up and cosine decay,
         gradient clipping at 1 (runtime.optimise, i.e. accelerate), and an EMA of the weights.
      4. Checkpoint every `checkpoint_every` steps; at the end save the EMA weights to `out`.
    """
    inputs = (data.root if isinstance(data, ImageFolder) else data, init_from)
    out = Path(out)
    check_disjoint(out, inputs)
    ckpt_dir = out.with_name(out.name + ".ckpt")
    check_disjoint(ckpt_dir, inputs, "checkpoint folder")
    torch.manual_seed(cfg.seed)
    model = load_model(init_from) if init_from is not None else build_world_model(cfg.unet_config, seed=cfg.seed)
    kind = "world-model" if model.kind == "world" else "sd-model"
    check_output(out, kind, inputs, overwrite)
    model.to(device, precision)
    res = model.resolution  # every image is read at the model's resolution (resized if it differs)
    folder = data if isinstance(data, ImageFolder) else read_imagefolder(data, resolution=res)
    if folder.images.shape[-1] != res:
        folder = read_imagefolder(folder.root, resolution=res)
    world = world_config_of(folder.root)  # a generated world records its version (another version: refused now)
    chunk = 256 if model.vae is None else 16
    with torch.no_grad():  # [N, C, H, W] in model space: pixels in [-1, 1], or VAE latents
        x_all = torch.cat([model.to_model_space(torch.from_numpy(folder.images[i:i + chunk]))
                           for i in range(0, len(folder), chunk)])
    left_out = None
    if cfg.exclude is not None:
        if any(not 0 <= i < len(folder) for i in cfg.exclude):
            raise DatarightsError(f"exclude indices must be in [0, {len(folder) - 1}]")
        left_out = torch.zeros(len(folder), dtype=torch.bool, device=model.device)
        left_out[list(cfg.exclude)] = True
    states, idx = precompute_text_states(model, folder.texts)
    idx = idx.to(model.device)
    empty = len(states) - 1

    model.unet.train()
    model.unet.requires_grad_(False)
    params = model.param_groups(cfg.params)
    for p in params.values():
        p.requires_grad_(True)
    ema = copy.deepcopy(model.unet).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
    ema_params = [p for n, p in ema.named_parameters() if n in {k[5:] for k in params}] if ema is not None else []
    trainable = list(params.values())

    fingerprint = hashlib.sha256(json.dumps(
        {"cfg": asdict(cfg), "data": data_hash(folder), "init": str(init_from)}, sort_keys=True).encode()).hexdigest()[:16]
    start, elapsed, opt_state = 0, 0.0, None
    if ckpt_dir.exists():
        open_run_folder(ckpt_dir, "checkpoint folder", kind="checkpoint")  # refuses a folder datarights did not write
        if resume and (ckpt_dir / CKPT_STATE).exists():
            start, elapsed, opt_state = load_checkpoint(ckpt_dir, fingerprint, model.unet, ema, trainable)
            print(f"resuming from step {start} ({ckpt_dir})", file=sys.stderr)
    micro, accumulate = runtime.micro_batches(model, cfg.batch_size)
    t0 = time.time() - elapsed

    def loss_fn(k: int, g: torch.Generator) -> torch.Tensor | None:
        b = runtime.randint(len(x_all), (micro,), g, model.device)
        drop = runtime.rand((micro,), g, model.device) < cfg.cond_drop
        cond = states[torch.where(drop, torch.full_like(b, empty), idx[b])]
        if left_out is None:
            return runtime.diffusion_loss(model, x_all[b], cond, g)
        keep = ~left_out[b]  # coupled leave-out: draws for the whole batch, loss over the kept rows only
        if not keep.any():
            return None
        return runtime.diffusion_loss(model, x_all[b], cond, g, reduction="none")[keep].mean()

    def after_step(step: int, opt) -> None:
        if ema is not None:  # (a step whose whole batch is left out is skipped, EMA included)
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, trainable, 1 - decay)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps and runtime.is_main_process():
            save_checkpoint(ckpt_dir, fingerprint, step + 1, time.time() - t0, model.unet, ema, opt)

    runtime.optimise(model, params, loss_fn, cfg.steps, cfg.lr, cfg.seed, "train", progress, accumulate=accumulate,
                     clip=1.0, optimizer="adamw", weight_decay=cfg.weight_decay, lr_at=lambda step: _lr_at(step, cfg),
                     after_step=after_step, start=start, opt_state=opt_state)
    seconds = time.time() - t0
    if ema is not None:
        model.unet.load_state_dict(ema.state_dict())
    model.eval()
    model.meta = {**{k: v for k, v in model.meta.items() if k == "pipeline_root"},
                  "world_version": WORLD_VERSION if world is not None else None,
                  **({"world": world.to_json()} if world is not None else {}),
                  "training": {**asdict(cfg), "data": str(folder.root), "data_hash": data_hash(folder),
                               "images": len(folder), "init_from": str(init_from) if init_from else None,
                               "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
                               "device": str(model.device), "precision": runtime.precision_name(model.precision)}}
    if runtime.is_main_process():
        if model.kind == "world":
            save_world_model(model, out, extra={k: v for k, v in model.meta.items() if k != "pipeline_root"},
                             overwrite=overwrite, inputs=inputs)
        else:
            save_sd_model(model, out, {"training": model.meta["training"]}, overwrite=overwrite, inputs=inputs)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    model.source = str(out)
    return model
