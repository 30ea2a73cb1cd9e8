"""The runtime floor every method stands on (as dattri's AttributionTask and kronfluence's Task are).

One place knows:
- **devices and precision**: `resolve_device` ('auto', 'cpu', 'cuda', 'cuda:N'), `resolve_precision`
  ('fp32', 'bf16', 'fp16'; TF32 matmuls on when fp32 runs on CUDA) and `autocast`;
- **seeded draws**: one seed-derivation function (`seed_of`); every timestep, noise and index is
  drawn from a CPU generator and moved to the model's device, so the same seed gives the same
  draws on any device and no tensor is ever made on a default device;
- **the diffusion task**: the training loss of a batch and per sample (`diffusion_loss`,
  `per_sample_loss`), fixed per-sample draws (`draws`), and exact per-sample gradients of linear
  layers (`per_sample_grads`);
- **memory-aware batching**: `rows_that_fit` sizes a batch from the model and the device's free memory;
- **fine-tuning**: the trainable copy (`trainable_copy`, LoRA adapters included) and the one
  optimisation loop (`optimise`), run by Hugging Face accelerate (mixed precision, gradient
  accumulation, several processes under `accelerate launch`);
- **progress**: a sink the caller passes (`progress_bar`); the library itself never prints.

No other module writes the diffusion loss, draws noise, or owns an optimiser loop.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch

from .errors import DatarightsError

if TYPE_CHECKING:
    from .models.t2i import T2IModel

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N."
PRECISION_HELP = "fp32, bf16 or fp16 (fp16 needs a GPU): the arithmetic of every model pass (weights stay fp32)."


# ----------------------------------------------------------------------------- devices and precision
def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch.device; anything unavailable is a one-line error.

    Under `accelerate launch`, 'auto' and 'cuda' mean this process's GPU (LOCAL_RANK).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is not None and not spec.strip():
        raise DatarightsError(f"--device is empty; use {DEVICE_HELP}")
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec not in ("auto", "cuda") and not re.fullmatch(r"cuda:\d+", spec):
        raise DatarightsError(f"unknown device {spec!r}; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        if spec == "auto":
            return torch.device("cpu")
        raise DatarightsError(f"--device {spec}: no CUDA GPU is available on this machine; use --device cpu")
    if spec in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    index = int(spec.split(":")[1])
    if index >= torch.cuda.device_count():
        raise DatarightsError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(spec)


def resolve_precision(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' -> the dtype of every model pass on `device` (autocast; weights stay fp32).

    fp16 on a CPU is refused. fp32 on CUDA turns TF32 matmuls on.
    """
    if isinstance(spec, torch.dtype):
        dtype = spec
    else:
        name = (spec or "fp32").strip().lower()
        if name not in PRECISIONS:
            raise DatarightsError(f"unknown precision {name!r}; use fp32, bf16 or fp16")
        dtype = PRECISIONS[name]
    if dtype not in PRECISIONS.values():
        raise DatarightsError(f"unsupported precision {dtype}")
    if dtype == torch.float16 and device.type == "cpu":
        raise DatarightsError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
    if device.type == "cuda" and dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dtype


def precision_name(dtype: torch.dtype) -> str:
    return next(k for k, v in PRECISIONS.items() if v == dtype)


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for model passes. For fp32 it does nothing at all (it does not switch
    off an autocast the caller opened, e.g. AbU's bf16 loss passes)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ----------------------------------------------------------------------------- seeded draws
def seed_of(seed: int, *keys: int) -> int:
    """The one seed-derivation function: the seed of stream (seed, key, ...) (e.g. the draws of step k)."""
    s = int(seed)
    for k in keys:
        s = s * 1_000_003 + int(k)
    return s % (2**63)


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator for stream (seed, keys): draws are made on the CPU and moved, so they are the same on any device."""
    return torch.Generator(device="cpu").manual_seed(seed_of(seed, *keys))


def randn(shape, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=g, device="cpu").to(device)


def randint(high: int, shape, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, tuple(shape), generator=g, device="cpu").to(device)


def rand(shape, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=g, device="cpu").to(device)


def timesteps_and_noise(model: T2IModel, shape, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's forward-process draws, in this order: timesteps [B] uniform over the schedule, then noise [B, ...]."""
    t = randint(model.num_train_timesteps, shape[:1], g, model.device)
    return t, randn(shape, g, model.device)


# ----------------------------------------------------------------------------- the diffusion task
def diffusion_loss(model: T2IModel, x0: torch.Tensor, cond: torch.Tensor, g: torch.Generator | None = None,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """The training loss E_{t, eps} ||eps - eps_theta(x_t, t, c)||^2 of a batch (x0 in model space).

    Timesteps and noise are given, or drawn from `g` (timesteps first). reduction 'mean' gives a
    scalar, 'none' one loss per sample [B].
    """
    if t is None or noise is None:
        t, noise = timesteps_and_noise(model, x0.shape, g)
    err = (model.predict_noise(model.add_noise(x0, noise, t), t, cond) - noise) ** 2
    return err.mean() if reduction == "mean" else err.flatten(1).mean(1)


@dataclass
class Draws:
    """Timesteps [N, K] and noise [N, K, C, H, W] of K draws per sample, fixed by (seed, sample index)."""

    t: torch.Tensor
    noise: torch.Tensor


def spaced_timesteps(k: int, num_train_timesteps: int) -> torch.Tensor:
    """k timesteps evenly spaced over the schedule (centres of k equal bins), on the CPU."""
    return ((torch.arange(k, device="cpu") + 0.5) * num_train_timesteps / k).long()


def draws(n: int, k: int, shape: tuple, num_train_timesteps: int, seed: int, device: torch.device, offset: int = 0,
          timesteps: torch.Tensor | None = None, indices: Sequence[int] | None = None) -> Draws:
    """K (t, eps) draws for each of n samples; sample i's draws depend only on (seed, offset + i), or
    on (seed, indices[i]) when the samples are given by index.

    `timesteps` fixes the K timesteps (e.g. evenly spaced, as AbU and D-TRAK use) instead of drawing them.
    """
    ts, ns = [], []
    for i in (range(offset, offset + n) if indices is None else indices):
        g = generator(seed, i)
        ts.append(timesteps.cpu().clone() if timesteps is not None
                  else torch.randint(0, num_train_timesteps, (k,), generator=g, device="cpu"))
        ns.append(torch.randn((k, *shape), generator=g, device="cpu"))
    return Draws(torch.stack(ts).to(device), torch.stack(ns).to(device))


def per_sample_loss(model: T2IModel, x0: torch.Tensor, cond: torch.Tensor, d: Draws, output: str = "loss",
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample scalar averaged over its K draws: the diffusion loss ('loss') or ||eps_theta||^2 ('norm', D-TRAK).

    x0 [N, C, H, W] (model space), cond [N, L, D]; returns [N]. `weight` [1 or N, 1, H, W] (>= 0): the
    scalar is the weighted mean over model-space positions instead (a region's loss; `region_weight`).
    """
    n, k = d.t.shape
    x = x0[:, None].expand(n, k, *x0.shape[1:]).reshape(n * k, *x0.shape[1:])       # [N*K, C, H, W]
    noise = d.noise.reshape(n * k, *x0.shape[1:])
    t = d.t.reshape(n * k)
    c = cond[:, None].expand(n, k, *cond.shape[1:]).reshape(n * k, *cond.shape[1:])   # [N*K, L, D]
    pred = model.predict_noise(model.add_noise(x, noise, t), t, c)
    err = (pred - noise) ** 2 if output == "loss" else pred ** 2
    if weight is None:
        val = err.flatten(1).mean(1)
    else:
        w = weight.to(err)
        w = w[:, None].expand(w.shape[0], k, *w.shape[1:]).reshape(-1, *w.shape[1:]) if len(w) == n and n > 1 else w
        val = (err * w).flatten(1).sum(1) / (w.flatten(1).sum(1) * err.shape[1])
    return val.view(n, k).mean(1)


def region_weight(model: T2IModel, region: torch.Tensor | None) -> torch.Tensor | None:
    """A region of the image (weights [H, W] in [0, 1], image pixels) as model-space weights [1, 1, h, w]:
    the same grid for a pixel model; for a latent model each latent position weighs the share of its
    VAE patch inside the region (the VAE's spatial correspondence: one latent pixel per patch)."""
    if region is None:
        return None
    h, w = model.latent_shape[1:] if model.vae is not None else (model.resolution, model.resolution)
    r = region.float().to(model.device)[None, None]
    return r if r.shape[-2:] == (h, w) else torch.nn.functional.adaptive_avg_pool2d(r, (h, w))


class LinearGrads:
    """Exact per-sample gradients w.r.t. the weights of chosen nn.Linear layers, from one backward pass.

    For y = a W^T (a: [B, T, in], the T tokens of sample b), dL_b/dW = sum_t delta_{b,t}^T a_{b,t};
    forward hooks keep a, backward hooks receive delta (both taken in fp32 under mixed precision).
    Requires that sample b's scalar depends only on rows of batch index b (true for a UNet with
    per-sample GroupNorm).
    """

    def __init__(self, modules: dict[str, torch.nn.Linear], group_size: int = 1):
        self.modules = modules
        self.group_size = group_size  # rows of the batch that belong to one sample (the K draws)
        self.inputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._fwd(name)) for name, m in modules.items()]

    def _fwd(self, name):
        def hook(mod, inp, out):
            self.inputs[name] = inp[0].detach()
            if out.requires_grad:
                out.register_hook(self._bwd(name))
        return hook

    def _bwd(self, name):
        def hook(grad_out):
            a, delta = self.inputs[name].float(), grad_out.detach().float()
            if a.ndim == 2:
                a, delta = a[:, None], delta[:, None]
            k = self.group_size  # a sample's K draws are consecutive rows: fold them into its token axis
            a = a.reshape(-1, k * a.shape[1], a.shape[2])                               # [N, K*T, in]
            delta = delta.reshape(-1, k * delta.shape[1], delta.shape[2])               # [N, K*T, out]
            self.grads[name] = torch.einsum("bto,bti->boi", delta, a)                   # [N, out, in]
        return hook

    def flat(self) -> torch.Tensor:
        """Per-sample gradients of all layers, flattened and concatenated: [N, P]."""
        return torch.cat([self.grads[n].flatten(1) for n in self.modules], 1)

    def close(self):
        for h in self.handles:
            h.remove()


def linear_modules(model: T2IModel, group: str) -> dict[str, torch.nn.Linear]:
    """The nn.Linear modules whose weights make up a parameter group (must be linear-only groups)."""
    names = {n.removeprefix("unet.").removesuffix(".weight") for n in model.param_groups(group)}
    return {n: m for n, m in model.unet.named_modules() if n in names and isinstance(m, torch.nn.Linear)}


def per_sample_grads(model: T2IModel, modules: dict[str, torch.nn.Linear], x0: torch.Tensor, cond: torch.Tensor,
                     d: Draws, output: str = "loss", per_draw: bool = False,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gradients of each sample's scalar (averaged over its K draws) w.r.t. the modules' weights: [N, P].

    per_draw: one gradient per draw instead ([N * K, P], row i * K + j = sample i's draw j, each the
    gradient of that draw's own scalar). `weight`: a region's model-space weights (per_sample_loss).
    """
    k = d.t.shape[1]
    for m in modules.values():
        m.weight.requires_grad_(True)
    rec = LinearGrads(modules, group_size=1 if per_draw else k)
    try:
        with torch.enable_grad():
            vals = per_sample_loss(model, x0, cond, d, output, weight)
            (vals.sum() * (k if per_draw else 1)).backward()
        return rec.flat()
    finally:
        rec.close()
        for m in modules.values():
            m.weight.requires_grad_(False)
            m.weight.grad = None


# ----------------------------------------------------------------------------- memory-aware batching
_ACTIVATIONS: dict[tuple, int] = {}


def activation_bytes_per_row(model: T2IModel) -> int:
    """Bytes of UNet activations one batch row produces in a forward pass (hooks on a 1-row pass; cached
    per UNet config, precision and device type)."""
    key = (repr(sorted(model.unet.config.items())), str(model.precision), model.device.type)
    if key not in _ACTIVATIONS:
        total = [0]

        def hook(mod, inp, out):
            if isinstance(out, torch.Tensor):
                total[0] += out.numel() * out.element_size()

        handles = [m.register_forward_hook(hook) for m in model.unet.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                x = torch.zeros((1, *model.latent_shape), device=model.device)
                c = torch.zeros((1, model.max_length, model.unet.config.cross_attention_dim), device=model.device)
                model.predict_noise(x, torch.zeros((1,), dtype=torch.long, device=model.device), c)
        finally:
            for h in handles:
                h.remove()
        _ACTIVATIONS[key] = max(total[0], 1)
    return _ACTIVATIONS[key]


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on the device (CUDA: the driver's count; CPU: available RAM)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info.get("MemAvailable", 8 << 30)
    except OSError:
        return 8 << 30


def rows_that_fit(model: T2IModel, backward: bool = False, cap: int = 1024, fraction: float = 0.5) -> int:
    """How many UNet rows (images x draws) one pass can take on this device: a share of the free memory
    divided by the activation bytes of one row (x3 when a backward pass keeps them), at most `cap`.

    On a CPU it is also at most 256 rows: beyond that a larger batch is slower (measured on the world
    model: 312 rows/s at 120 rows, 280 at 240, 209 at 480).
    """
    per_row = activation_bytes_per_row(model) * (3 if backward else 1)
    budget = free_memory_bytes(model.device) * fraction
    if model.device.type == "cpu":
        cap = min(cap, 256)
    return int(max(1, min(cap, budget // per_row)))


def micro_batches(model: T2IModel, batch: int, passes: int = 1) -> tuple[int, int]:
    """(micro-batch, accumulation steps) for an optimisation batch of `batch` images, each needing
    `passes` UNet passes with gradients: the largest divisor of `batch` that fits the device's free
    memory (rows_that_fit), and as many accumulated micro-batches as make up `batch`."""
    fit = max(1, rows_that_fit(model, backward=True) // max(1, passes))
    micro = max(d for d in range(1, batch + 1) if batch % d == 0 and d <= fit)
    return micro, batch // micro


# ----------------------------------------------------------------------------- progress
class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass


class _Sink:
    """Calls `fn(desc, done, total)` as work progresses (a web job's progress row, a test)."""

    def __init__(self, fn, total: int, desc: str):
        self.fn, self.total, self.desc, self.done = fn, total, desc, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        self.fn(self.desc, self.done, self.total)

    def set_postfix(self, *a, **k) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress, total: int, desc: str, initial: int = 0):
    """The progress sink for a loop: True -> a tqdm bar on stderr; False/None -> silent; a callable
    fn(desc, done, total) -> called as the loop advances."""
    if callable(progress):
        sink = _Sink(progress, total, desc)
        sink.done = initial
        return sink
    if not progress:
        return _Silent()
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------- fine-tuning
LORA_TARGETS = {"lora-xattn-kv": r".*\.attn2\.to_(k|v)$", "lora-xattn": r".*\.attn2\.to_(q|k|v|out\.0)$"}
"""LoRA parameter groups: adapters on these UNet linear layers (peft), the base weights frozen."""


def check_lora_rank(model: T2IModel, group: str, rank: int) -> None:
    """A LoRA rank the group's matrices can hold: from 1 to the smaller side of the smallest adapted
    matrix (a larger rank adds parameters, time and disk and can learn nothing more)."""
    from .limits import MAX_LORA_RANK

    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_LORA_RANK:
        raise DatarightsError(f"--lora-rank must be between 1 and {MAX_LORA_RANK}, got {rank}")
    pattern = re.compile(LORA_TARGETS[group])
    sides = [min(m.in_features, m.out_features) for name, m in model.unet.named_modules()
             if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name)]
    if not sides:
        raise DatarightsError(f"this model has no layers that the LoRA group {group} adapts")
    if rank > min(sides):
        raise DatarightsError(f"--lora-rank {rank} is larger than this model's {group} matrices allow "
                              f"(at most {min(sides)}, the smaller side of the smallest one)")


def unet_copy(model: T2IModel) -> T2IModel:
    """A copy of the model with its own UNet (the text encoder and VAE shared, the weights hash dropped)."""
    work = copy.copy(model)
    work.__dict__.pop("_digest", None)
    work.unet = copy.deepcopy(model.unet)
    return work


def trainable_copy(model: T2IModel, group: str, lora_rank: int = 4,
                   lora_seed: int = 0) -> tuple[T2IModel, dict[str, torch.nn.Parameter]]:
    """A private copy of the model whose parameter group `group` requires grad (the base is untouched).

    A `lora-*` group injects LoRA adapters of rank `lora_rank` (peft) into the copy's UNet and
    trains only those; their parameters are returned under 'unet.<module>.lora_A.weight' names,
    lora_A drawn from `lora_seed`.
    """
    work = unet_copy(model)
    if group == "embedding":
        work.text_encoder = copy.deepcopy(model.text_encoder)
    work.eval()
    if group in LORA_TARGETS:
        check_lora_rank(model, group, lora_rank)
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=LORA_TARGETS[group],
                            init_lora_weights=True)
        with torch.device(model.device):  # the adapters are made where the model lives
            inject_adapter_in_model(config, work.unet)
        params = {f"unet.{n.replace('.default', '')}": p for n, p in work.unet.named_parameters() if "lora_" in n}
        # peft draws lora_A from the global generator; redraw it from a seeded one (same bound, that of
        # kaiming_uniform(a=sqrt(5))), so that the same seed gives the same edit. lora_B starts at zero.
        g = generator(lora_seed)
        with torch.no_grad():
            for name in sorted(params):
                if ".lora_A." in name:
                    a = params[name]
                    a.copy_((torch.rand(a.shape, generator=g, device="cpu") * 2 - 1).to(a.device) / a.shape[1] ** 0.5)
    else:
        params = work.param_groups(group)
    for p in params.values():
        p.requires_grad_(True)
    return work, params


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Temporarily freeze modules (requires_grad False), restoring their flags afterwards: an inner
    optimisation (an attack inside robust erasure) then leaves no gradients on the outer parameters."""
    saved = [(p, p.requires_grad) for m in modules if m is not None for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _accelerator(device: torch.device, dtype: torch.dtype, accumulate: int):
    """An accelerate Accelerator for this model's device and precision.

    In a single process its shared state is reset when a different precision or device is asked for
    (one process may run several methods); under `accelerate launch` the launch fixes them.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    mixed = {torch.float32: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    state = AcceleratorState._shared_state
    if not distributed and state and (state.get("_mixed_precision") != mixed
                                      or getattr(PartialState(), "device", None) != device):
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed, gradient_accumulation_steps=accumulate, cpu=device.type == "cpu",
                       device_placement=False)


def optimise(work: T2IModel, params: dict[str, torch.nn.Parameter],
             loss_fn: Callable[[int, torch.Generator], torch.Tensor], steps: int, lr: float, seed: int, desc: str,
             progress=True, maximize: bool = False, accumulate: int = 1, clip: float | None = None,
             optimizer: str = "adam", weight_decay: float = 0.0, lr_at: Callable[[int], float] | None = None,
             after_step: Callable[[int, torch.optim.Optimizer], None] | None = None, start: int = 0,
             opt_state: dict | None = None) -> torch.optim.Optimizer:
    """The one optimisation loop: `steps` optimiser steps over `params` of `work`, run by accelerate.

    loss_fn(micro_step, generator) gives each micro-batch's loss; its generator is stream
    (seed, micro_step), and under `accelerate launch` also the process index, so processes draw
    different batches. `accumulate` micro-batches make one step (accelerate's gradient
    accumulation); mixed precision follows `work.precision` (accelerate's autocast and, for fp16,
    its gradient scaler). lr_at(step) sets a schedule; after_step(step, optimiser) runs after each
    step (EMA, checkpoints); `start`/`opt_state` resume. Returns the optimiser.
    """
    acc = _accelerator(work.device, work.precision, accumulate)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    opt = cls(list(params.values()), lr=lr, maximize=maximize, weight_decay=weight_decay, foreach=True)  # bitwise the loop, fewer ops
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    modules = [m for m in (work.unet, work.text_encoder) if any(p.requires_grad for p in m.parameters())]
    prepared = acc.prepare(*modules, opt)
    *wrapped, opt_p = prepared if isinstance(prepared, tuple) else (prepared,)
    swap = dict(zip([id(m) for m in modules], wrapped))
    work.unet = swap.get(id(work.unet), work.unet)
    work.text_encoder = swap.get(id(work.text_encoder), work.text_encoder)
    rank, world = acc.process_index, acc.num_processes
    bar = progress_bar(progress if acc.is_main_process else False, steps, desc, initial=start)
    loss = None
    try:
        for step in range(start, steps):
            if lr_at is not None:
                for group in opt_p.param_groups:
                    group["lr"] = lr_at(step)
            stepped = False
            for micro in range(accumulate):
                k = step * accumulate + micro
                g = generator(seed, k) if world == 1 else generator(seed, k, rank)
                with acc.accumulate(*wrapped), acc.autocast():
                    loss = loss_fn(k, g)
                    if loss is None:  # nothing to learn from this micro-batch (e.g. all its rows left out)
                        continue
                    acc.backward(loss)
                    if clip is not None and acc.sync_gradients:
                        acc.clip_grad_norm_(list(params.values()), clip)
                    opt_p.step()
                    opt_p.zero_grad(set_to_none=True)
                    stepped = True
            if stepped and after_step is not None:
                after_step(step, opt)
            bar.update(1)
            if step % 10 == 0 and loss is not None:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    finally:
        bar.close()
        for i, m in enumerate(wrapped):
            plain = acc.unwrap_model(m, keep_fp32_wrapper=False)
            if work.unet is m:
                work.unet = plain
            if work.text_encoder is m:
                work.text_encoder = plain
    return opt




def is_main_process() -> bool:
    """False in the non-zero ranks of an `accelerate launch` run: they train along but write no output."""
    return int(os.environ.get("RANK", "0")) == 0
