"""STEREO (Srivatsan et al., CVPR 2025): search thoroughly enough, then robustly erase once.

1. **Search Thoroughly Enough (STE).** `rounds` rounds of erase-then-attack on one model that keeps
   its edits: erase the current concept with ESD's objective (a partial rollout of the model being
   trained under the concept, then eps(x_t, c) -> eps_ref(x_t, c) - (g - 1)[eps_ref(x_t, c) -
   eps_ref(x_t, empty)], the reference being the model at the round's start; g = 2 is erasing
   towards the unconditional prediction), then invert the concept on the erased model (textual
   inversion: one new token embedding v_r fitted to images of the concept under captions with v_r
   in place of the concept's words). The next round erases v_r. Each v_r is an adversarial prompt
   that brought the concept back from a model that had already forgotten every earlier one.
2. **Robustly Erase Once (REO).** From the *base* model, erase the target and the first
   `n_adversarial` tokens together with the anchor-compositional objective: for a sampled erase
   concept e (stratified over them) and anchor prompt a,
       eps(x_t, c_e) -> eps(empty) + (s - 1)(eps(a) - eps(empty)) - (s + 1) mean_n (eps(n) - eps(empty)),
   every eps on the right from the frozen base, n over all erase concepts (the authors' APG form,
   which with eta 1 and no momentum or threshold is this sum). The anchor keeps the edit pointing
   at something (a face, a plain painting) rather than at noise.

The images for the inversions are the base model's own generations of the concept from the erase's
prompt half, with seeds (ADVERSARY_SEED onward) that no audit or evaluation attack uses, so what the
search saw is disjoint from what measures it. Defaults (STEREOConfig.DEFAULTS). Stable Diffusion:
the authors' train.py (koushiksrivats/robust-concept-erasing): 4 rounds, 200 iterations per erase,
STE lr 5e-6, REO lr 2e-5, negative guidance 2, compositional scale 2, concept inversion 3000 steps at
lr 5e-3, 4 adversarial tokens, batch 1, rollouts of 50 DDIM steps at guidance 3. The world model: ESD's
world settings (cross-attention, lr 1e-4, batch 8, rollouts of 20 steps) and the TI attack's
inversion (80 steps, lr 0.05), 100 steps per STE round, 150 REO steps, and s = 5: chosen on the
tuning concept *grumpy face* (audit seed 1; `python benchmarks/erase.py --tune-stereo`), where the
authors' s = 2 pushes away from the anchor itself (its terms weigh +1 and -3 at s = 2) and either
leaves the target (150 steps: 0.80 erased) or, trained harder, breaks its neighbours (nearby
0.22-0.57, other prompts 0.35-0.64); s = 5 weighs them +4 and -6, closer to CA's swap of the anchor
for the target: 0.98 erased, nearby 1.02, other prompts 0.90, anchor fidelity 0.92. On the style
*Ada Vell* (the other tuning concept) s = 2, 3 and 5 give the same within their intervals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import Edit, T2IModel
from ..registry import ModelDefaults, check_fields
from ..world import vocabulary_of
from .base import TrainOptions, concept_prompts, finish_edit, images_per_target, partial_rollout, register
from .robust import ADVERSARY_SEED


@dataclass
class STEREOConfig(TrainOptions, ModelDefaults):
    """Settings of STEREO (None: the model's default, see DEFAULTS and the module docstring)."""

    rounds: int = 4
    """Erase-then-invert rounds of the search (the authors' n_iterations)."""
    n_adversarial: int = 4
    """Adversarial tokens from the search that the final erase also removes."""
    ste_steps: int | None = None
    """Erase steps in each search round (world 100; SD 200)."""
    ste_lr: float | None = None
    """Learning rate of the search's erases (world 1e-4; SD 5e-6)."""
    reo_steps: int | None = None
    """Steps of the final erase (world 150; SD 200)."""
    reo_lr: float | None = None
    """Learning rate of the final erase (world 1e-4; SD 2e-5)."""
    negative_guidance: float = 2.0
    """g of the search's ESD target (2: the unconditional prediction)."""
    compositional_scale: float | None = None
    """s of the final erase's compositional target (world 5; SD 2, the authors')."""
    inversion_steps: int | None = None
    """Textual-inversion steps of each search round (world 80; SD 3000)."""
    inversion_lr: float | None = None
    """Textual-inversion learning rate (world 0.05; SD 5e-3)."""
    n_images: int | None = None
    """Base-model images of the target for the inversions (world 16; SD 8)."""
    batch_size: int | None = None
    """Rollouts (and inversion images) per step (world 8; SD 1)."""
    rollout_steps: int | None = None
    """DDIM steps of a full rollout; each step stops at a random one (world 20; SD 50)."""
    guidance: float | None = None
    """Guidance of the rollouts (world: the model's; SD 3.0)."""
    n_prompts: int = 48
    """Target prompts built from templates (the erase's half)."""
    retain_weight: float = 0.0
    """Weight of a retain term in the final erase (not in the paper; 0: the authors' objective): the
    predictions under the prompts of the anchor's other concepts (every erasable concept of the
    model's world with the target's anchor, the targets excluded: the other faces for a face, the
    other styles for a style; the erase's prompt half) held to the frozen base's, on the same noisy
    images. Held-out measurement: the character's and memorized scene's neighbours fell to 0.17 and
    0.20 without it (BENCHMARKS)."""
    retain_set: str = "anchor"
    """Which concepts the retain term holds: 'anchor' (the anchor's other concepts, above) or 'world'
    (every erasable concept of the model's world but the targets, whatever its anchor: the other
    prompts too, not only the neighbours)."""
    seed: int = 0
    """Seed."""

    DEFAULTS: ClassVar[dict] = {
        "world": dict(params="xattn", ste_steps=100, ste_lr=1e-4, reo_steps=150, reo_lr=1e-4, inversion_steps=80,
                      inversion_lr=0.05, n_images=16, batch_size=8, rollout_steps=20, compositional_scale=5.0),
        "sd": dict(params="xattn", ste_steps=200, ste_lr=5e-6, reo_steps=200, reo_lr=2e-5, inversion_steps=3000,
                   inversion_lr=5e-3, n_images=8, batch_size=1, rollout_steps=50, guidance=3.0, compositional_scale=2.0),
    }

    def __post_init__(self):
        self.check_params(("xattn", "xattn-kv", "unet-noxattn", "full"), "stereo")
        if self.rounds < 1 or self.n_adversarial < 1 or (self.inversion_steps is not None and self.inversion_steps < 1):
            raise DatarightsError("stereo needs an inversion budget: --rounds, --n-adversarial and "
                                  "--inversion-steps must be at least 1")
        if self.n_adversarial > self.rounds:
            raise DatarightsError(f"--n-adversarial {self.n_adversarial} is more than the {self.rounds} tokens "
                                  "the search finds (one per round)")
        check_fields(self, at_least_one=("ste_steps", "reo_steps", "n_images", "batch_size", "rollout_steps",
                                         "n_prompts"),
                     positive=("ste_lr", "reo_lr", "inversion_lr", "negative_guidance", "compositional_scale"))
        if not 0 <= self.retain_weight <= 1e3:
            raise DatarightsError(f"--retain-weight must be between 0 and 1000, got {self.retain_weight}")
        if self.retain_set not in ("anchor", "world"):
            raise DatarightsError(f"--retain-set must be 'anchor' or 'world', got {self.retain_set!r}")


def _frozen(model: T2IModel) -> T2IModel:
    """A frozen snapshot of the model's current weights (the reference of a search round)."""
    ref = runtime.unet_copy(model)
    ref.unet.requires_grad_(False)
    return ref


def _rollout(model: T2IModel, cond: torch.Tensor, cfg: STEREOConfig, g: torch.Generator):
    return partial_rollout(model, cond, cfg.rollout_steps, cfg.guidance, g)


SEARCH_FIELDS = ("rounds", "ste_steps", "ste_lr", "negative_guidance", "inversion_steps", "inversion_lr", "n_images",
                 "batch_size", "rollout_steps", "guidance", "n_prompts", "seed", "params", "lora_rank")
"""The settings the search depends on: two configs equal on these find the same tokens, so a tuning run
can search once and try several final erases (`search`, then `erase_once`)."""


@register("stereo", STEREOConfig)
def stereo(model: T2IModel, targets: list[str], anchors: list[str], cfg: STEREOConfig, progress=True) -> Edit:
    t0 = time.time()
    cfg = cfg.for_model(model)
    adversarial = search(model, targets, anchors, cfg, progress)
    return erase_once(model, targets, anchors, adversarial, cfg, progress, t0)


def _states(model: T2IModel, targets: list[str], anchors: list[str], cfg: STEREOConfig):
    sets = [concept_prompts(t, a, cfg.n_prompts, cfg.seed, vocab=vocabulary_of(model)) for t, a in zip(targets, anchors)]
    with torch.no_grad():
        return (sets, model.encode_prompt([""]), [model.encode_prompt(s.target) for s in sets],
                [model.encode_prompt(s.anchor) for s in sets])


def search(model: T2IModel, targets: list[str], anchors: list[str], cfg: STEREOConfig,
           progress=True) -> list[list[torch.Tensor]]:
    """Stage 1 (STE): per target, the text states of the erase prompts with each round's adversarial
    token in place of the concept's words, in the order the rounds found them."""
    from ..attack.base import fit_embeddings, states_with_placeholder
    from ..attack.ti import _with_placeholder

    cfg = cfg.for_model(model)
    dev = model.device
    sets, empty, target_states, _ = _states(model, targets, anchors, cfg)
    # the inversions' images: the base model's own, from seeds no audit or evaluation attack uses
    x0, chosen, _ = images_per_target(model, [s.target for s in sets], cfg.n_images, cfg.seed + ADVERSARY_SEED)
    images = model.from_model_space(x0)
    mse = torch.nn.functional.mse_loss

    # 1. Search Thoroughly Enough: one model that keeps its erasures, attacked after each
    work, params = runtime.trainable_copy(model, cfg.params, cfg.lora_rank)
    adversarial: list[list[torch.Tensor]] = [[] for _ in targets]      # per target: the states of each v_r
    for r in range(cfg.rounds):
        ref = _frozen(work)
        conds = [target_states[i] if r == 0 else adversarial[i][-1] for i in range(len(targets))]
        micro, accumulate = runtime.micro_batches(model, cfg.batch_size)

        def ste_loss(step: int, g: torch.Generator, conds=conds, ref=ref) -> torch.Tensor:
            i = step % len(conds)
            c = conds[i][runtime.randint(len(conds[i]), (micro,), g, dev)]
            x, t = _rollout(work, c, cfg, g)
            with torch.no_grad():
                ec, eu = ref.predict_noise(torch.cat([x, x]), t, torch.cat([c, empty.expand_as(c)])).chunk(2)
                goal = ec - (cfg.negative_guidance - 1) * (ec - eu)
            return mse(work.predict_noise(x, t, c), goal)

        runtime.optimise(work, params, ste_loss, cfg.ste_steps, cfg.ste_lr, runtime.seed_of(cfg.seed, r),
                         f"erase[stereo] search {r + 1}/{cfg.rounds}", progress, accumulate=accumulate)
        attacked = _frozen(work)
        for i, (target, anchor) in enumerate(zip(targets, anchors)):
            rows = [j for j in range(len(chosen)) if j // cfg.n_images == i]
            captions = [_with_placeholder(chosen[j], target) for j in rows]
            start = model.tokenizer(anchor, add_special_tokens=False).input_ids[0]
            v = torch.nn.Parameter(model.token_embedding().weight[start].detach().clone())
            g = runtime.generator(cfg.seed + ADVERSARY_SEED, r, i)
            v = fit_embeddings(attacked, images[rows], v,
                               lambda step, b, captions=captions, v=v, m=attacked: states_with_placeholder(
                                   m, [captions[k] for k in b.tolist()], v),
                               cfg.inversion_steps, cfg.inversion_lr, min(cfg.batch_size, len(rows)), g)
            prompts = [_with_placeholder(p, target) for p in sets[i].target]
            with torch.no_grad():
                adversarial[i].append(states_with_placeholder(model, prompts, v))
    return adversarial


def retained_concepts(model: T2IModel, targets: list[str], anchor: str | None) -> list[str]:
    """The retain term's concepts in the model's world, the targets excluded: every erasable concept
    whose anchor is `anchor`, or every erasable concept for None (retain_set 'world')."""
    vocab = vocabulary_of(model)
    drop = {t.strip().lower() for t in targets}
    return [e["name"] for e in vocab.erasable()
            if (anchor is None or e["anchor"].lower() == anchor.strip().lower()) and e["name"].lower() not in drop]


def _retain_states(model: T2IModel, targets: list[str], anchors: list[str], cfg: STEREOConfig) -> list:
    """Per target, the text states of its retained concepts' prompts (the erase's half), or None."""
    from .base import prompts_showing

    vocab, states = vocabulary_of(model), {}
    for key in dict.fromkeys(a if cfg.retain_set == "anchor" else None for a in anchors):
        names = retained_concepts(model, targets, key)      # one set per anchor, or one for the whole world
        prompts = [p for n in names for p in prompts_showing(n, 4, cfg.seed, split="train", vocab=vocab)]
        with torch.no_grad():
            states[key] = model.encode_prompt(prompts) if prompts else None
    return [states[a if cfg.retain_set == "anchor" else None] for a in anchors]


def erase_once(model: T2IModel, targets: list[str], anchors: list[str], adversarial: list[list[torch.Tensor]],
               cfg: STEREOConfig, progress=True, t0: float | None = None) -> Edit:
    """Stage 2 (REO), from the base model: the targets and their first `n_adversarial` tokens of the
    search, erased together towards the anchor with the compositional target."""
    t0 = time.time() if t0 is None else t0
    cfg = cfg.for_model(model)
    dev = model.device
    if len(adversarial) != len(targets) or any(len(a) < cfg.n_adversarial for a in adversarial):
        raise DatarightsError(f"the search found fewer than --n-adversarial {cfg.n_adversarial} tokens per target")
    _, empty, target_states, anchor_states = _states(model, targets, anchors, cfg)
    mse = torch.nn.functional.mse_loss
    erase_sets = [[target_states[i], *adversarial[i][:cfg.n_adversarial]] for i in range(len(targets))]
    work, params = runtime.trainable_copy(model, cfg.params, cfg.lora_rank)
    micro, accumulate = runtime.micro_batches(model, cfg.batch_size)
    s = cfg.compositional_scale
    n_concepts = len(erase_sets[0])
    retain = _retain_states(model, targets, anchors, cfg) if cfg.retain_weight > 0 else [None] * len(targets)

    def reo_loss(step: int, g: torch.Generator) -> torch.Tensor:
        i = step % len(targets)
        e = (step // len(targets)) % n_concepts                          # stratified over the erase concepts
        rows = runtime.randint(len(target_states[i]), (micro,), g, dev)
        c = erase_sets[i][e][rows]
        x, t = _rollout(work, c, cfg, g)
        with torch.no_grad():
            negs = [states[rows] for states in erase_sets[i]]
            a = anchor_states[i][rows]
            batch = torch.cat([empty.expand_as(c), a, *negs])
            preds = model.predict_noise(torch.cat([x] * (2 + len(negs))), t, batch).chunk(2 + len(negs))
            eu, ea = preds[0], preds[1]
            neg = torch.stack([p - eu for p in preds[2:]]).mean(0)
            goal = eu + (s - 1) * (ea - eu) - (s + 1) * neg
        loss = mse(work.predict_noise(x, t, c), goal)
        if retain[i] is not None:       # the anchor's other concepts keep the base's predictions
            r = retain[i][runtime.randint(len(retain[i]), (micro,), g, dev)]
            with torch.no_grad():
                keep = model.predict_noise(x, t, r)
            loss = loss + cfg.retain_weight * mse(work.predict_noise(x, t, r), keep)
        return loss

    runtime.optimise(work, params, reo_loss, cfg.reo_steps, cfg.reo_lr, runtime.seed_of(cfg.seed, cfg.rounds),
                     "erase[stereo] erase once", progress, accumulate=accumulate)
    return finish_edit(model, params, "stereo", targets, anchors, cfg, t0,
                       extra={"adversarial_tokens": cfg.n_adversarial, "search_rounds": cfg.rounds,
                              "retained": [len(r) if r is not None else 0 for r in retain],
                              "inversion_images": "base model's generations, seeds from ADVERSARY_SEED"})


__all__ = ["SEARCH_FIELDS", "STEREOConfig", "erase_once", "search", "stereo"]
