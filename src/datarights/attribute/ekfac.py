"""Influence functions with K-FAC and EK-FAC curvature (`kfac`, `ekfac`).

Koh & Liang (2017) score training image i's influence on a query by
    s_i = g_q^T (G + lambda I)^-1 g_i,
g the gradient of the diffusion loss (averaged over fixed draws of t and eps) and G the curvature
of the training loss; positive = training on i lowered the query's loss (a proponent). Mlodozeniec
et al. (ICLR 2025, "Influence functions for scalable data attribution in diffusion models",
`BrunoKM/diffusion-influence` on curvlinops) approximate G by the generalised Gauss-Newton of the
diffusion loss in Kronecker-factored form, K-FAC-expand over the layer's tokens, with one Monte
Carlo sample of the output gradient; Grosse et al. (2023) add the eigenvalue correction (EK-FAC).
Here, for each tracked linear layer y = a W^T (the cross-attention K/V by default, a read over the
T text tokens):

  1. Factors (once per training set): A = E[sum_t a_t a_t^T] / T and S = E[sum_t d_t d_t^T], where
     d = dL~/dy is the output gradient of the sampled loss L~ = sum(eps_theta * z) sqrt(2 / D), z ~
     N(0, I) (E[d d^T] is then the GGN of the mean squared error over the D outputs), at `fisher_draws`
     (t uniform, eps, z) per training image. So A (x) S approximates G = E[vec(D) vec(D)^T], D = sum_t
     d_t a_t^T the layer's per-draw pseudo-gradient.
  2. Eigenbases: A = Q_A diag(l_A) Q_A^T, S = Q_S diag(l_S) Q_S^T. K-FAC's eigenvalues are
     Lambda = l_S l_A^T; EK-FAC replaces them by the second moments of the pseudo-gradients in that
     basis, Lambda = E[(Q_S^T D Q_A)^2] (a second pass over the same draws): the diagonal, in the
     Kronecker eigenbasis, of G itself, which is the Frobenius-closest such approximation.
  3. Inverse-curvature-vector product of a query gradient (per layer, [out, in]):
     (G + lambda I)^-1 g = Q_S [(Q_S^T g Q_A) / (Lambda + lambda)] Q_A^T, lambda = `damping` x the
     mean of Lambda ("exact" damping, as the authors' default `use_exact_damping`; relative, so
     that one value serves models of any scale).
  4. Training gradients g_i are TRAK's featurization (the loss at `timesteps` evenly spaced
     timesteps, row i's noise seeded by i) through the same projection P: phi_i = P g_i. A query costs
     one gradient: s = Phi P (G + lambda I)^-1 g_q, an inner product the projection keeps in expectation.

Differences from the authors': factors and corrections are computed directly (one forward/backward
per batch with hooks, `runtime.LinearGrads`) rather than through curvlinops or kronfluence, which
take a model and a loss but not this project's seeded draws or its per-sample-gradient engine; the
damping is relative to the mean eigenvalue (kronfluence's heuristic, 0.1) rather than absolute;
timesteps of the train and query gradients are evenly spaced (D-TRAK's and this project's TRAK
choice) rather than sampled. `damping` is a query-time setting: one cached artifact serves all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..registry import ModelDefaults, check_fields
from ..runtime import LinearGrads, draws, linear_modules, per_sample_grads
from .base import register
from .store import RowSpec, register_rows, require_projection, set_batches
from .trak import PROJECTIONS, Projector, _batch, _train_draws


@dataclass
class EKFACConfig(ModelDefaults):
    """Settings of the Kronecker-factored influence functions (None: the model's default)."""

    params: str = "xattn-kv"
    """Linear-layer parameter group whose curvature and gradients are used."""
    damping: float = 0.1
    """lambda relative to the mean (corrected) eigenvalue of each layer; changes the query's scores only."""
    fisher_draws: int = 2
    """(t, eps, z) draws per training image for the factors and their eigenvalue correction."""
    proj_dim: int | None = None
    """Projection dimension k of the cached training gradients (world 512; SD 4096)."""
    projection: str = "sjlt"
    """'sjlt', 'dense' or 'none' (the gradients themselves: exact scores, memory N x P)."""
    timesteps: int = 10
    """Evenly spaced timesteps of each training and query gradient (TRAK's featurization)."""
    batch_size: int | None = None
    """Training images per batch (changes speed only)."""
    seed: int = 0
    """Seed of the projection and of every draw."""

    correct: ClassVar[bool] = True
    """EK-FAC's eigenvalue correction (False: K-FAC's eigenvalue products)."""
    DEFAULTS: ClassVar[dict] = {"world": dict(proj_dim=512, batch_size=48), "sd": dict(proj_dim=4096)}
    QUERY_ONLY: ClassVar[tuple] = ("damping",)

    def __post_init__(self):
        check_fields(self, at_least_one=("fisher_draws", "proj_dim", "timesteps", "batch_size"), positive=("damping",))
        if self.projection not in PROJECTIONS + ("none",):
            raise DatarightsError(f"projection must be one of {', '.join(PROJECTIONS + ('none',))}, "
                                  f"got {self.projection!r}")


@dataclass
class KFACConfig(EKFACConfig):
    """K-FAC: the same factors, the eigenvalues their products (no correction pass)."""

    correct: ClassVar[bool] = False


class _Factors:
    """Forward/backward hooks that add sum_t a a^T and sum_t d d^T of each layer into A and S."""

    def __init__(self, modules: dict[str, torch.nn.Linear]):
        self.A = {n: None for n in modules}
        self.S = {n: None for n in modules}
        self.tokens = {}
        self.handles = [m.register_forward_hook(self._fwd(n)) for n, m in modules.items()]

    def _fwd(self, name):
        def hook(mod, inp, out):
            a = inp[0].detach().double().flatten(0, -2)                                 # [rows * T, in]
            self.A[name] = a.T @ a + (0 if self.A[name] is None else self.A[name])
            self.tokens[name] = inp[0].shape[-2] if inp[0].ndim > 2 else 1
            if out.requires_grad:
                out.register_hook(self._bwd(name))
        return hook

    def _bwd(self, name):
        def hook(grad):
            d = grad.detach().double().flatten(0, -2)                                   # [rows * T, out]
            self.S[name] = d.T @ d + (0 if self.S[name] is None else self.S[name])
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _sampled_loss(model, x0, cond, d, g: torch.Generator) -> torch.Tensor:
    """sum over draws of sqrt(2 / D) eps_theta . z, z ~ N(0, I) drawn with the draw: its output gradient d has
    E[d d^T] = (2 / D) J^T J summed, the GGN of the draw's mean squared error (one Monte Carlo sample)."""
    n, k = d.t.shape
    x = x0[:, None].expand(n, k, *x0.shape[1:]).reshape(n * k, *x0.shape[1:])
    noise = d.noise.reshape(n * k, *x0.shape[1:])
    c = cond[:, None].expand(n, k, *cond.shape[1:]).reshape(n * k, *cond.shape[1:])
    out = model.predict_noise(model.add_noise(x, noise, d.t.reshape(n * k)), d.t.reshape(n * k), c)
    z = runtime.randn(out.shape, g, out.device)
    return (out * z).sum() * math.sqrt(2.0 / out[0].numel())


def factor_batch(model, cfg: EKFACConfig) -> int:
    """Training images per batch of the factor passes (fisher_draws rows each)."""
    return max(1, _batch(model, cfg) * cfg.timesteps // max(cfg.fisher_draws, 1) // 2)


def fit_factors(model, train, cfg: EKFACConfig, progress=True, seeds: list[int] | None = None
                ) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer: Q_A, Q_S and the eigenvalues Lambda [out, in] (corrected for EK-FAC); see the module docstring.

    Row i's draws come from stream seeds[i] (default: its row number); `train` may be a store's
    streamed FolderRows (`store.set_batches`)."""
    mods = linear_modules(model, cfg.params)
    if not mods:
        raise DatarightsError(f"influence functions need a group of linear layers; {cfg.params!r} has none")

    def batches():
        for t, idx, part in set_batches(model, train, factor_batch(model, cfg), seeds):
            x0 = t.x0[idx]
            d = draws(len(idx), cfg.fisher_draws, tuple(x0.shape[1:]), model.num_train_timesteps, cfg.seed + 31,
                      model.device, indices=part)
            yield x0, t.cond(idx), d, runtime.generator(cfg.seed + 37, part[0])     # z: the same in both passes

    rows = len(train) * cfg.fisher_draws
    bar = runtime.progress_bar(progress, len(train) * (2 if cfg.correct else 1), "ekfac factors" if cfg.correct
                               else "kfac factors")

    def sampled_passes(hooks, after=lambda: None):
        """One forward/backward of the sampled loss per batch, the weights tracked, `hooks` recording."""
        try:
            with torch.enable_grad():
                for m in mods.values():
                    m.weight.requires_grad_(True)
                for x0, cond, d, g in batches():
                    _sampled_loss(model, x0, cond, d, g).backward()
                    after()
                    bar.update(len(x0))
        finally:
            hooks.close()
            for m in mods.values():
                m.weight.requires_grad_(False)
                m.weight.grad = None

    fac = _Factors(mods)
    sampled_passes(fac)
    out = {}
    for n in mods:
        A = fac.A[n] / (rows * fac.tokens[n])                                            # E[sum_t a a^T] / T
        S = fac.S[n] / rows
        lA, QA = torch.linalg.eigh(A)
        lS, QS = torch.linalg.eigh(S)
        out[n] = {"QA": QA.float(), "QS": QS.float(), "lam": (lS.clamp_min(0)[:, None] * lA.clamp_min(0)[None]).float()}
    if cfg.correct:                                     # Lambda = E[(Q_S^T D Q_A)^2] over the same draws
        corr = {n: torch.zeros_like(out[n]["lam"], dtype=torch.float64) for n in mods}
        rec = LinearGrads(mods, group_size=1)                                           # one D per draw

        def accumulate():
            for n in mods:
                rot = out[n]["QS"].T.double() @ rec.grads[n].double() @ out[n]["QA"].double()   # [R, out, in]
                corr[n] += (rot ** 2).sum(0)

        sampled_passes(rec, accumulate)
        for n in mods:
            out[n]["lam"] = (corr[n] / rows).float()
    bar.close()
    return out


def precondition(g: torch.Tensor, factors: dict, damping: float) -> torch.Tensor:
    """(G + lambda I)^-1 g for one layer's gradient g [out, in], lambda = damping x mean(Lambda)."""
    QA, QS, lam = factors["QA"].to(g), factors["QS"].to(g), factors["lam"].to(g)
    return QS @ ((QS.T @ g @ QA) / (lam + damping * lam.mean())) @ QA.T


def _projection(model, cfg: EKFACConfig):
    return (lambda g: g) if cfg.projection == "none" else Projector(model, cfg).project


def _rows(model, train, cfg: EKFACConfig, idx, seeds) -> torch.Tensor:
    """phi_i = P g_i of some training rows, row i's draws from stream seeds[i] (the store's rows too)."""
    x0 = train.x0[idx]
    g = per_sample_grads(model, linear_modules(model, cfg.params), x0, train.cond(idx),
                         _train_draws(model, x0, cfg, indices=seeds), "loss")
    return _projection(model, cfg)(g)


def prepare(model, train, cfg: EKFACConfig, progress=True) -> dict:
    factors = fit_factors(model, train, cfg, progress)
    mods = linear_modules(model, cfg.params)
    phis = []
    bar = runtime.progress_bar(progress, len(train), "influence gradients")
    for t, idx, seeds in set_batches(model, train, _batch(model, cfg)):
        phis.append(_rows(model, t, cfg, idx, seeds).cpu())
        bar.update(len(idx))
    bar.close()
    state = {"phi": torch.cat(phis)}                                                     # [N, k]
    for i, n in enumerate(mods):
        state.update({f"{part}.{i}": factors[n][part].cpu() for part in ("QA", "QS", "lam")})
    return state


def preconditioned_query(model, query, state: dict, cfg: EKFACConfig) -> torch.Tensor:
    """P (G + lambda I)^-1 g_q [k] for the query's loss gradient at its own draws (TRAK's query draws; the
    loss of the query's region, if it has one)."""
    mods = linear_modules(model, cfg.params)
    x0 = model.to_model_space(query.image[None].float())
    cond = model.encode_prompt([query.prompt])
    g = per_sample_grads(model, mods, x0, cond, _train_draws(model, x0, cfg, 10**9), "loss", weight=query.weight(model))[0]
    parts, start = [], 0
    for i, (n, m) in enumerate(mods.items()):
        size = m.weight.numel()
        layer = {part: state[f"{part}.{i}"] for part in ("QA", "QS", "lam")}
        parts.append(precondition(g[start:start + size].view_as(m.weight).double(), layer, cfg.damping).flatten())
        start += size
    return _projection(model, cfg)(torch.cat(parts).float()[None])[0]


def score(model, train, state, query, cfg: EKFACConfig) -> torch.Tensor:
    return state["phi"] @ preconditioned_query(model, query, state, cfg).cpu()


def _row_fit(model, train, seeds: list[int], cfg: EKFACConfig, progress: bool) -> dict:
    """The store's factors over every row of its training set, as arrays (draws seeded by content keys)."""
    factors = fit_factors(model, train, cfg, progress, seeds)
    return {f"{part}.{i}": factors[n][part].cpu().numpy() for i, n in enumerate(factors) for part in ("QA", "QS", "lam")}


def _row_query(model, train, query, cfg: EKFACConfig, fitted: dict) -> torch.Tensor:
    return preconditioned_query(model, query, {k: torch.from_numpy(v) for k, v in fitted.items()}, cfg)


register("ekfac", EKFACConfig, prepare, score, local=True)
register("kfac", KFACConfig, prepare, score, local=True)
for _name in ("ekfac", "kfac"):
    register_rows(_name, RowSpec(_rows, _row_query, batch=_batch, fit=_row_fit, check=require_projection))
