"""Robust erasure, AdvUnlearn-style (Zhang et al., NeurIPS 2024): a min-max inside the erase loop.

Every `every` steps the inner loop attacks the model being edited (a few steps of the udatk hard
prompt search against its own denoising loss on rendered images of the target); the outer loop then also
erases under the adversarial prompt it found, and a retain term keeps the edited model's
predictions on other world prompts equal to the base's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import runtime
from ..errors import DatarightsError
from ..models import T2IModel
from ..world import sample_eval_prompts, vocabulary_of


ROBUST_DEFAULTS = {"world": dict(robust_every=25, robust_attack_steps=15),
                   "sd": dict(robust_every=1, robust_attack_steps=30)}
"""AdvUnlearn's official settings for Stable Diffusion (OPTML-Group/AdvUnlearn: adv_prompt_update_step 1,
attack_step 30, retain loss weight 1); the world model: an attack every 25 steps of 15 steps each."""


@dataclass
class RobustOptions:
    """The min-max options shared by the erase methods that support `--robust` (ca, esd)."""

    robust: bool = False
    """AdvUnlearn-style min-max: also erase under soft prompts found by attacking the model being edited."""
    robust_every: int | None = None
    """Steps between two inner attacks (robust only; world 25, SD 1)."""
    robust_attack_steps: int | None = None
    """Steps of each inner attack (robust only; world 15, SD 30)."""
    retain: float = 1.0
    """Weight of keeping other prompts' predictions equal to the base's (robust only)."""

    def check_robust(self):
        for name in ("robust_every", "robust_attack_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise DatarightsError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if self.retain < 0:
            raise DatarightsError(f"--retain must be non-negative, got {self.retain}")


ADVERSARY_SEED = 100_003
"""Offset of the inner attack's seeds: its rendered images and draws never coincide with an evaluation attack's."""


class Adversary:
    """Finds adversarial prompt states for the targets against the current model, and retain states."""

    def __init__(self, base: T2IModel, targets: list[str], every: int, attack_steps: int, seed: int):
        from ..attack.base import target_images

        from .base import prompts_showing

        self.targets = targets
        self.every, self.attack_steps, self.seed = every, attack_steps, seed + ADVERSARY_SEED
        # images, seeds and prompts disjoint from the evaluation attacks': another seed range for the
        # rendered images and the optimisation, the 'train' half of the prompts
        vocab = vocabulary_of(base)
        self.images = [target_images(t, 8, self.seed + i, vocab) for i, t in enumerate(targets)]
        self.prompts = [prompts_showing(t, 1, seed, split="train", vocab=vocab)[0] for t in targets]
        others = [o["text"] for o in sample_eval_prompts(64, seed + 5, vocab=vocab)
                  if not any(t.lower() in o["text"].lower() for t in targets)]
        with torch.no_grad():
            self.retain_states = base.encode_prompt(others)
        self.adv: torch.Tensor | None = None

    def states(self, work: T2IModel, step: int) -> torch.Tensor:
        """Adversarial text states [n_targets, L, D], refreshed every `every` steps."""
        from ..attack.base import projected, states_with_soft_tokens
        from ..attack.udatk import UDAtkConfig, optimise_soft_prompt

        if self.adv is None or step % self.every == 0:
            cfg = UDAtkConfig(steps=self.attack_steps, seed=self.seed + step)
            rows = []
            for (images, _), prompt in zip(self.images, self.prompts):
                soft = optimise_soft_prompt(work, prompt, images, cfg)
                with torch.no_grad():
                    rows.append(states_with_soft_tokens(work, prompt, projected(work, soft)))
            self.adv = torch.stack(rows)
        return self.adv

    def retain_loss(self, work: T2IModel, base: T2IModel, x_t: torch.Tensor, t: torch.Tensor,
                    g: torch.Generator) -> torch.Tensor:
        c = self.retain_states[runtime.randint(len(self.retain_states), (len(x_t),), g, x_t.device)]
        with torch.no_grad():
            goal = base.predict_noise(x_t, t, c)
        return torch.nn.functional.mse_loss(work.predict_noise(x_t, t, c), goal)
