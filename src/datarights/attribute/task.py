"""The diffusion task every attribution method shares (design it first, as kronfluence/dattri do).

One place defines: the seeded timestep/noise draws of a sample, the per-sample diffusion loss
averaged over those draws, the D-TRAK output function ||eps_theta||^2, and exact per-sample
gradients of such per-sample scalars with respect to a group of linear layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import T2IModel


@dataclass
class Draws:
    """Timesteps [N, K] and noise [N, K, C, H, W] of K draws per sample, fixed by (seed, sample index)."""

    t: torch.Tensor
    noise: torch.Tensor


def draws(n: int, k: int, shape: tuple, num_train_timesteps: int, seed: int, offset: int = 0,
          timesteps: torch.Tensor | None = None) -> Draws:
    """K (t, eps) draws for each of n samples; sample i's draws depend only on (seed, offset + i).

    `timesteps` fixes the K timesteps (e.g. evenly spaced, as AbU and D-TRAK use) instead of drawing them.
    """
    ts, ns = [], []
    for i in range(n):
        g = torch.Generator().manual_seed(seed * 1_000_003 + offset + i)
        ts.append(timesteps.clone() if timesteps is not None else torch.randint(0, num_train_timesteps, (k,), generator=g))
        ns.append(torch.randn((k, *shape), generator=g))
    return Draws(torch.stack(ts), torch.stack(ns))


def spaced_timesteps(k: int, num_train_timesteps: int) -> torch.Tensor:
    """k timesteps evenly spaced over the schedule (centres of k equal bins)."""
    return ((torch.arange(k) + 0.5) * num_train_timesteps / k).long()


def per_sample_loss(model: T2IModel, x0: torch.Tensor, cond: torch.Tensor, d: Draws, output: str = "loss") -> torch.Tensor:
    """Per-sample scalar averaged over its K draws: the diffusion loss ('loss') or ||eps_theta||^2 ('norm', D-TRAK).

    x0 [N, C, H, W] (model space), cond [N, L, D]; returns [N].
    """
    n, k = d.t.shape
    x = x0[:, None].expand(n, k, *x0.shape[1:]).reshape(n * k, *x0.shape[1:])       # [N*K, C, H, W]
    noise = d.noise.reshape(n * k, *x0.shape[1:])
    t = d.t.reshape(n * k)
    c = cond[:, None].expand(n, k, *cond.shape[1:]).reshape(n * k, *cond.shape[1:])   # [N*K, L, D]
    eps = model.predict_noise(model.add_noise(x, noise, t), t, c)
    val = (eps - noise) ** 2 if output == "loss" else eps**2
    return val.flatten(1).mean(1).view(n, k).mean(1)


class LinearGrads:
    """Exact per-sample gradients w.r.t. the weights of chosen nn.Linear layers, from one backward pass.

    For y = a W^T (a: [B, T, in], the T tokens of sample b), dL_b/dW = sum_t delta_{b,t}^T a_{b,t};
    forward hooks keep a, backward hooks receive delta. Requires that sample b's scalar depends
    only on rows of batch index b (true for a UNet with per-sample GroupNorm).
    """

    def __init__(self, modules: dict[str, torch.nn.Linear], group_size: int = 1):
        self.modules = modules
        self.group_size = group_size  # rows of the batch that belong to one sample (the K draws)
        self.inputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, m in modules.items():
            self.handles.append(m.register_forward_hook(self._fwd(name)))

    def _fwd(self, name):
        def hook(mod, inp, out):
            self.inputs[name] = inp[0].detach()
            if out.requires_grad:
                out.register_hook(self._bwd(name))
        return hook

    def _bwd(self, name):
        def hook(grad_out):
            a, delta = self.inputs[name], grad_out.detach()
            if a.ndim == 2:
                a, delta = a[:, None], delta[:, None]
            g = torch.einsum("bto,bti->boi", delta, a)                                  # [rows, out, in]
            g = g.view(-1, self.group_size, *g.shape[1:]).sum(1)                        # [N, out, in]
            self.grads[name] = g
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
    mods = {n: m for n, m in model.unet.named_modules() if n in names and isinstance(m, torch.nn.Linear)}
    return mods


def per_sample_grads(model: T2IModel, modules: dict[str, torch.nn.Linear], x0: torch.Tensor, cond: torch.Tensor,
                     d: Draws, output: str = "loss", per_draw: bool = False) -> torch.Tensor:
    """Gradients of each sample's scalar (averaged over its K draws) w.r.t. the modules' weights: [N, P].

    per_draw: one gradient per draw instead ([N * K, P], row i * K + j = sample i's draw j, each the
    gradient of that draw's own scalar).
    """
    k = d.t.shape[1]
    for m in modules.values():
        m.weight.requires_grad_(True)
    rec = LinearGrads(modules, group_size=1 if per_draw else k)
    try:
        with torch.enable_grad():
            vals = per_sample_loss(model, x0, cond, d, output)
            (vals.sum() * (k if per_draw else 1)).backward()
        return rec.flat()
    finally:
        rec.close()
        for m in modules.values():
            m.weight.requires_grad_(False)
            m.weight.grad = None

