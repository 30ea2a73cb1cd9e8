"""TRAK for diffusion, D-TRAK and Journey-TRAK: projected per-sample gradients and a kernel.

Once per training set (cached):
  1. Per-sample gradients g_i = grad_theta f(z_i) of the chosen linear layers, exact and batched
     (one backward pass per batch, via forward/backward hooks; see task.LinearGrads).
  2. Random projection phi_i = P^T g_i: by default a sparse Johnson-Lindenstrauss sketch (each
     gradient coordinate added, with a random sign, to one of the k outputs: O(p) per sample, and
     inner products unbiased with about the accuracy of a Gaussian projection at the same k);
     `projection="dense"` uses one seeded Gaussian [p, k] / sqrt(k) as the TRAK paper does (O(pk)).
  3. The kernel: A = Phi (Phi^T Phi + lam I)^-1, so that score(q, i) = A_i . phi_q.
Per query: phi_q = P^T grad f(query), score = A phi_q.

f: `trak` the diffusion loss averaged over the draws; `dtrak` the squared output norm
||eps_theta(x_t, t, c)||^2 (Zheng et al., ICLR 2024). `jtrak` (Journey-TRAK, Georgiev et al. 2023)
attributes each step of the sampling journey separately: one kernel per timestep t_j, training
features from the loss at t_j alone; the query's journey is recovered by deterministic DDIM
inversion of the image under its prompt, and at step t_j the query feature is the gradient of the
loss of the model's x0-prediction x^0(t_j), re-noised to t_j; the ranking sums the per-step scores
(the top image of every step is reported as `journey`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..registry import ModelDefaults, check_fields
from ..runtime import Draws, draws, linear_modules, per_sample_grads, spaced_timesteps
from .base import register
from .store import RowSpec, register_rows

PROJECTIONS = ("sjlt", "dense")


@dataclass
class TRAKConfig(ModelDefaults):
    """Settings of the TRAK family (None: the model's default, see DEFAULTS).

    Stable Diffusion defaults follow Journey-TRAK's released configuration (k = 4096) and D-TRAK's
    10 timesteps; the world model's k = 512 keeps its kernel small on a CPU.
    """

    params: str = "xattn-kv"
    """Linear-layer parameter group whose gradients are projected."""
    proj_dim: int | None = None
    """Projection dimension k (world 512; SD 4096)."""
    projection: str = "sjlt"
    """'sjlt' (sparse sign sketch, O(p) per sample) or 'dense' (one Gaussian matrix, O(pk))."""
    timesteps: int = 10
    """Evenly spaced timesteps per sample (trak/dtrak average f over them; jtrak keeps one kernel each)."""
    lam: float = 1e-2
    """Ridge term, relative to the mean diagonal of Phi^T Phi."""
    batch_size: int | None = None
    """Training images per batch, x timesteps rows per forward/backward (world 48: ~500 rows is fastest
    on a CPU); None on SD: what fits in the device's free memory. Changes speed only, never a score."""
    seed: int = 0
    """Seed of the projection and of the noise draws."""

    DEFAULTS: ClassVar[dict] = {"world": dict(proj_dim=512, batch_size=48), "sd": dict(proj_dim=4096)}

    def __post_init__(self):
        check_fields(self, at_least_one=("proj_dim", "timesteps", "batch_size"), non_negative=("lam",))
        if self.projection not in PROJECTIONS:
            raise DatarightsError(f"projection must be one of {', '.join(PROJECTIONS)}, got {self.projection!r}")


@functools.lru_cache(maxsize=1)  # rebuilding it per query costs seconds; it depends only on these
def projection(n_params: int, k: int, seed: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Dense Gaussian projection [p, k] / sqrt(k) (drawn on the CPU, stored on `device`)."""
    g = torch.Generator(device="cpu").manual_seed(seed + 12345)
    return (torch.randn(n_params, k, generator=g, device="cpu") / k**0.5).to(device)


@functools.lru_cache(maxsize=1)
def sketch(n_params: int, k: int, seed: int, device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse JL sketch: coordinate j goes to output bucket[j] with sign[j] (CountSketch)."""
    g = torch.Generator(device="cpu").manual_seed(seed + 54321)
    bucket = torch.randint(0, k, (n_params,), generator=g, device="cpu")
    sign = torch.randint(0, 2, (n_params,), generator=g, device="cpu").float() * 2 - 1
    return bucket.to(device), sign.to(device)


class Projector:
    """phi = P^T grad f for a batch, with the configured projection."""

    def __init__(self, model, cfg: TRAKConfig):
        self.mods = linear_modules(model, cfg.params)
        if not self.mods:
            raise DatarightsError(f"the TRAK family needs a group of linear layers; {cfg.params!r} has none")
        p = sum(m.weight.numel() for m in self.mods.values())
        self.k, self.dense = cfg.proj_dim, cfg.projection == "dense"
        make = projection if self.dense else sketch
        self.P = make(p, cfg.proj_dim, cfg.seed, model.device)

    def __call__(self, model, x0, cond, d: Draws, output: str, per_draw: bool = False, weight=None) -> torch.Tensor:
        return self.project(per_sample_grads(model, self.mods, x0, cond, d, output, per_draw=per_draw, weight=weight))

    def project(self, g: torch.Tensor) -> torch.Tensor:
        """[B, p] -> [B, k] (a sketch overwrites g)."""
        if self.dense:
            return g @ self.P
        bucket, sign = self.P
        return g.new_zeros(len(g), self.k).index_add_(1, bucket, g.mul_(sign))


def _kernel(phi: torch.Tensor, lam: float) -> torch.Tensor:
    """A = Phi (Phi^T Phi + lam * mean diag * I)^-1: [N, k]."""
    phi = phi.double()
    gram = phi.T @ phi
    gram += lam * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64, device=gram.device)
    return torch.linalg.solve(gram, phi.T).T.float()


def _train_draws(model, x0, cfg, offset=0, indices=None):
    """Row i's draws from stream (seed, offset + i), or (seed, indices[i]) (the store's content seeds)."""
    ts = spaced_timesteps(cfg.timesteps, model.num_train_timesteps)
    return draws(len(x0), cfg.timesteps, tuple(x0.shape[1:]), model.num_train_timesteps, cfg.seed, model.device,
                 offset=offset, timesteps=ts, indices=indices)


def _batch(model, cfg: TRAKConfig) -> int:
    """Training images per featurization batch: the configured one, else what fits (timesteps rows each)."""
    return cfg.batch_size or max(1, runtime.rows_that_fit(model, backward=True) // cfg.timesteps)


def make_prepare(output: str, journey: bool = False):
    def prepare(model, train, cfg: TRAKConfig, progress=True) -> dict:
        proj = Projector(model, cfg)
        phis = []
        name = "jtrak" if journey else {"loss": "trak", "norm": "dtrak"}[output]
        bar = runtime.progress_bar(progress, len(train), f"{name} features")
        bs = _batch(model, cfg)
        for s in range(0, len(train), bs):
            idx = torch.arange(s, min(s + bs, len(train)), device=model.device)
            x0 = train.x0[idx]
            phi = proj(model, x0, train.cond(idx), _train_draws(model, x0, cfg, s), output, per_draw=journey)
            phis.append(phi.view(len(idx), cfg.timesteps, -1) if journey else phi)
            bar.update(len(idx))
        bar.close()
        phi = torch.cat(phis)                                                           # [N, k] or [N, T, k]
        if journey:
            return {"A": torch.stack([_kernel(phi[:, j], cfg.lam) for j in range(cfg.timesteps)]).cpu()}  # [T, N, k]
        return {"A": _kernel(phi, cfg.lam).cpu()}                                       # [N, k]
    return prepare


def query_feature(model, query, cfg: TRAKConfig, output: str) -> torch.Tensor:
    """phi_q = P^T grad f(query) [k], at the query's own draws (f of the query's region, if it has one)."""
    x0 = model.to_model_space(query.image[None].float())
    cond = model.encode_prompt([query.prompt])
    return Projector(model, cfg)(model, x0, cond, _train_draws(model, x0, cfg, 10**9), output,
                                 weight=query.weight(model))[0]


def make_score(output: str):
    def score(model, train, state, query, cfg: TRAKConfig) -> torch.Tensor:
        return state["A"] @ query_feature(model, query, cfg, output).cpu()
    return score


def store_rows(output: str) -> RowSpec:
    """The store's rows of trak/dtrak: phi_i at draws seeded by the work's content key (not its row number)."""
    def featurize(model, train, cfg: TRAKConfig, idx, seeds):
        x0 = train.x0[idx]
        return Projector(model, cfg)(model, x0, train.cond(idx), _train_draws(model, x0, cfg, indices=seeds), output)

    return RowSpec(featurize, lambda model, train, query, cfg: query_feature(model, query, cfg, output),
                   kernel=True, lam=lambda cfg: cfg.lam, batch=_batch)


@torch.no_grad()
def journey(model, x0: torch.Tensor, cond: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The model's x0-predictions x^0(t) along the DDIM journey that ends in x0 (recovered by inversion).

    Deterministic DDIM inversion under `cond` walks x0 up through the (ascending) timesteps; at each
    step the model's noise estimate gives x^0(t) = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).
    Returns [T, C, H, W] for x0 [1, C, H, W].
    """
    abar = model.scheduler.alphas_cumprod.to(x0.device)
    x, a_prev, out = x0, abar.new_ones(()), []
    eps = model.predict_noise(x0, timesteps[:1], cond)           # the first step's direction, from the image itself
    for t in timesteps:
        a = abar[t]
        x0_pred = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        x = a.sqrt() * x0_pred + (1 - a).sqrt() * eps             # DDIM (eta = 0) step, run upwards
        eps = model.predict_noise(x, t[None], cond)
        out.append(((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1))
        a_prev = a
    return torch.cat(out)


def jtrak_score(model, train, state, query, cfg: TRAKConfig) -> torch.Tensor:
    x0 = model.to_model_space(query.image[None].float())
    cond = model.encode_prompt([query.prompt])
    ts = spaced_timesteps(cfg.timesteps, model.num_train_timesteps)
    x0_hats = journey(model, x0, cond, ts)                                              # [T, C, H, W]
    g = runtime.generator(cfg.seed, 10**9)
    d = Draws(ts[:, None].to(model.device), runtime.randn((len(ts), 1, *x0.shape[1:]), g, model.device))
    phi_q = Projector(model, cfg)(model, x0_hats, cond.expand(len(ts), -1, -1), d, "loss")        # [T, k]
    per_step = torch.einsum("tnk,tk->tn", state["A"], phi_q.cpu())                     # [T, N]
    top = per_step.argmax(1).tolist()
    journey_top = [{"t": int(t), "file": train.files[i], "owner": train.owners[i]} for t, i in zip(ts.tolist(), top)]
    return per_step.sum(0), {"journey": journey_top}


register("trak", TRAKConfig, make_prepare("loss"), make_score("loss"), local=True)
register("dtrak", TRAKConfig, make_prepare("norm"), make_score("norm"), local=True)
register("jtrak", TRAKConfig, make_prepare("loss", journey=True), jtrak_score)
register_rows("trak", store_rows("loss"))
register_rows("dtrak", store_rows("norm"))
