"""`T2IModel`: the one interface every erase, attribute and audit method talks to.

It wraps diffusers/transformers components as they are (UNet2DConditionModel, a DDPM noise
schedule, a text encoder, optionally AutoencoderKL) and adds only the glue the methods need:
prompt -> text states, eps(x_t, t, c), forward noising, DDIM sampling with classifier-free
guidance, image <-> model space, and named parameter groups.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from .. import runtime
from ..errors import DatarightsError

PARAM_GROUPS = ("xattn-kv", "xattn", "attn", "embedding", "unet-noxattn", "full")


@dataclass(eq=False)
class T2IModel:
    """A text-to-image diffusion model made of diffusers/transformers parts."""

    unet: UNet2DConditionModel
    scheduler: DDPMScheduler
    """The training noise schedule (forward process); sampling builds a DDIM scheduler from it."""
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: AutoencoderKL | None = None
    kind: str = "world"
    """'world' (pixel-space world model) or 'sd' (a Stable Diffusion pipeline folder)."""
    max_length: int = 24
    source: str = ""
    """Where it was loaded from (a folder path), for provenance in results."""
    meta: dict = field(default_factory=dict)
    precision: torch.dtype = torch.float32
    """Arithmetic of every model pass (autocast); the weights stay fp32. See runtime.resolve_precision."""

    # ----------------------------------------------------------------- device, shapes and spaces
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str | None = None, precision: torch.dtype | str | None = None) -> "T2IModel":
        """Move every part to `device` (runtime.resolve_device) and set the compute precision; returns self."""
        device = runtime.resolve_device(device)
        self.precision = runtime.resolve_precision(precision if precision is not None else self.precision, device)
        if next(self.text_encoder.parameters()).device != device:  # it may be shared (world models): move a copy
            self.text_encoder = copy.deepcopy(self.text_encoder).to(device)
        for m in (self.unet, self.vae):
            if m is not None:
                m.to(device)
        return self

    def autocast(self):
        """The mixed-precision context of this model's passes (no-op in fp32)."""
        return runtime.autocast(self.device, self.precision)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.unet.config.sample_size
        return (self.unet.config.in_channels, s, s)

    @property
    def resolution(self) -> int:
        s = self.unet.config.sample_size
        return s * (2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1)

    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> x_0 in model space (pixels in [-1, 1], or VAE latents)."""
        x = images.to(self.device) * 2 - 1
        if self.vae is None:
            return x
        with self.autocast():
            return self.vae.encode(x).latent_dist.mean.float() * self.vae.config.scaling_factor

    def from_model_space(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 in model space -> images [B, 3, H, W] in [0, 1]."""
        if self.vae is not None:
            with self.autocast():
                x0 = self.vae.decode(x0 / self.vae.config.scaling_factor).sample.float()
        return ((x0 + 1) / 2).clamp(0, 1)

    # ----------------------------------------------------------------- text
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        toks = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                              return_tensors="np")  # numpy, then to the model's device: never a default device
        return torch.from_numpy(toks.input_ids).to(self.device)

    def encode_prompt(self, prompts: list[str] | str) -> torch.Tensor:
        """Prompts -> text-encoder token states [B, max_length, D] (the cross-attention context)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return self.encode_ids(self.tokenize(prompts))

    def encode_ids(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (or ready token embeddings, for soft prompts) -> token states."""
        if inputs_embeds is None:
            with self.autocast():
                return self.text_encoder(input_ids=input_ids).last_hidden_state.float()
        # Ready embeddings enter through a hook on the token-embedding layer, so that every text
        # encoder (BERT, CLIP: the latter takes no inputs_embeds) runs its own forward around them.
        if input_ids is None:
            input_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        hook = self.token_embedding().register_forward_hook(lambda mod, inp, out: inputs_embeds.to(out.dtype))
        try:
            with self.autocast():
                return self.text_encoder(input_ids=input_ids).last_hidden_state.float()
        finally:
            hook.remove()

    def token_embedding(self) -> torch.nn.Embedding:
        return self.text_encoder.get_input_embeddings()

    # ----------------------------------------------------------------- diffusion
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t, c)."""
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        with self.autocast():
            return self.unet(x_t, t.to(x_t.device), encoder_hidden_states=cond).sample.float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return self.scheduler.add_noise(x0, noise, t)

    @property
    def num_train_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps

    def check_steps(self, steps: int) -> None:
        """DDIM cannot take more sampling steps than the model's noise schedule has."""
        if not 1 <= steps <= self.num_train_timesteps:
            raise DatarightsError(f"sampling steps must be between 1 and {self.num_train_timesteps} "
                                  f"(this model's noise schedule), got {steps}")

    def ddim(self, steps: int) -> DDIMScheduler:
        """A DDIM sampler on the training schedule. Schedulers keep their tables on the CPU (diffusers
        moves what it needs), so it is built under an explicit CPU device."""
        self.check_steps(steps)
        with torch.device("cpu"):
            sched = DDIMScheduler.from_config(self.scheduler.config)
            sched.set_timesteps(steps)
        return sched

    def initial_noise(self, n: int, seed: int) -> torch.Tensor:
        """The initial noise of n images from one seed (drawn on the CPU: the same on every device)."""
        return runtime.randn((n, *self.latent_shape), torch.Generator(device="cpu").manual_seed(seed), self.device)

    def default_batch(self, guidance: float = 1.0) -> int:
        """Images per sampling batch: 64 for the world model (fastest on a CPU); otherwise what fits
        in the device's free memory (two UNet rows per image with guidance)."""
        if self.kind == "world":
            return 64
        return max(1, runtime.rows_that_fit(self, cap=64) // (2 if guidance != 1.0 else 1))

    @property
    def default_guidance(self) -> float:
        """The folder's recorded guidance scale; else 1.0 (no guidance) for world models, 7.5 for SD.

        The shipped world model is most faithful without guidance (see README: eval-model vs guidance).
        """
        return float(self.meta.get("guidance", 1.0 if self.kind == "world" else 7.5))

    @torch.no_grad()
    def sample(self, prompts: list[str], seed: int = 0, steps: int = 25, guidance: float | None = None,
               batch_size: int | None = None, noise: torch.Tensor | None = None,
               callback: Callable[[int], None] | None = None, return_model_space: bool = False) -> torch.Tensor:
        """DDIM sampling (eta=0) with classifier-free guidance.

        The initial noise of all images is drawn at once from `seed`, so the same seed gives the
        same pixels whatever the batch size. Returns images [B, 3, H, W] in [0, 1].
        """
        prompts = list(prompts)
        if not prompts:
            raise DatarightsError("no prompts to sample")
        if any(not p.strip() for p in prompts):
            raise DatarightsError("prompt is empty")
        if steps < 1:
            raise DatarightsError(f"--steps must be at least 1, got {steps}")
        uniq = sorted(set(prompts))
        states = dict(zip(uniq, self.encode_prompt(uniq)))
        cond = torch.stack([states[p] for p in prompts])
        return self.sample_states(cond, seed=seed, steps=steps, guidance=guidance, batch_size=batch_size,
                                  noise=noise, callback=callback, return_model_space=return_model_space)

    @torch.no_grad()
    def sample_states(self, cond: torch.Tensor, seed: int = 0, steps: int = 25, guidance: float | None = None,
                      batch_size: int | None = None, noise: torch.Tensor | None = None,
                      callback: Callable[[int], None] | None = None, return_model_space: bool = False,
                      stop_at: int | None = None) -> torch.Tensor:
        """`sample` from ready text states [B, L, D] (soft prompts, learned tokens); same seeding.

        stop_at: return the partial rollout after that many DDIM steps (x at timestep
        `ddim(steps).timesteps[stop_at]`, model space), as ESD's training rollouts need.
        """
        guidance = self.default_guidance if guidance is None else guidance
        batch_size = batch_size or self.default_batch(guidance)
        x_all = self.initial_noise(len(cond), seed) if noise is None else noise.to(self.device)
        uncond = self.encode_prompt([""])
        out = []
        for s in range(0, len(cond), batch_size):
            x = x_all[s:s + batch_size].clone()
            c = cond[s:s + batch_size]
            ctx = torch.cat([uncond.expand(len(x), -1, -1), c]) if guidance != 1.0 else c
            sched = self.ddim(steps)
            x = x * sched.init_noise_sigma
            for t in sched.timesteps[:stop_at]:
                xin = torch.cat([x, x]) if guidance != 1.0 else x
                eps = self.predict_noise(sched.scale_model_input(xin, t), t, ctx)
                if guidance != 1.0:
                    eu, ec = eps.chunk(2)
                    eps = eu + guidance * (ec - eu)
                x = sched.step(eps, t, x).prev_sample
            out.append(x if return_model_space or stop_at is not None else self.from_model_space(x))
            if callback is not None:
                callback(len(x))
        return torch.cat(out)

    # ----------------------------------------------------------------- parameters
    def param_groups(self, name: str) -> dict[str, torch.nn.Parameter]:
        """Named parameter groups that methods fine-tune, keyed 'unet.<name>' / 'text_encoder.<name>'.

        xattn-kv: cross-attention K and V projections; xattn: all cross-attention weights;
        attn: self- and cross-attention; embedding: the text encoder's token embeddings;
        unet-noxattn: every UNet weight except cross-attention (ESD-u); full: every UNet weight.
        """
        if name not in PARAM_GROUPS:
            raise DatarightsError(f"unknown parameter group {name!r}; choose from {', '.join(PARAM_GROUPS)}")
        if name == "embedding":
            emb = self.token_embedding()
            full = {f"text_encoder.{n}": p for n, p in self.text_encoder.named_parameters()}
            return {n: p for n, p in full.items() if p is emb.weight}
        sel = {
            "xattn-kv": lambda n: ".attn2.to_k." in n or ".attn2.to_v." in n,
            "xattn": lambda n: ".attn2." in n,
            "attn": lambda n: ".attn1." in n or ".attn2." in n,
            "unet-noxattn": lambda n: ".attn2." not in n,
            "full": lambda n: True,
        }[name]
        return {f"unet.{n}": p for n, p in self.unet.named_parameters() if sel(n)}

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {**{f"unet.{n}": p for n, p in self.unet.named_parameters()},
                **{f"text_encoder.{n}": p for n, p in self.text_encoder.named_parameters()}}

    def eval(self) -> "T2IModel":
        for m in (self.unet, self.text_encoder, self.vae):
            if m is not None:
                m.eval()
                m.requires_grad_(False)
        return self
