"""What every erase method shares: the frozen `Edit` result, the registry, and prompt sets."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import DatarightsError
from ..files import atomic_folder
from ..models import DEFAULT_MODEL, T2IModel
from ..registry import Method, registrar
from ..world import vocab as V

EDIT_CLASS = "DatarightsEditedModel"


# ----------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Edit:
    """A small, serialisable edit: the changed tensors plus the identity of the base model.

    It does not mutate any model: `apply` returns a copy of the base with the tensors replaced.
    """

    tensors: dict
    """Parameter name ('unet.<...>' / 'text_encoder.<...>') -> new value."""
    base: str
    """Base model folder ('default' for the shipped world model)."""
    base_hash: str
    """Content hash of the base's weights; loading refuses a different base."""
    method: str
    targets: tuple
    anchors: tuple
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed_params(self) -> int:
        return int(sum(t.numel() for t in self.tensors.values()))

    def apply(self, base: T2IModel) -> T2IModel:
        """A copy of `base` with this edit's tensors in place (the text encoder is copied only if edited)."""
        import copy

        if model_hash(base) != self.base_hash:
            raise DatarightsError(f"this edit was made on another base model (hash {self.base_hash}, got {model_hash(base)})")
        edited = copy.copy(base)
        edited.__dict__.pop("_hash", None)
        edited.unet = copy.deepcopy(base.unet)
        if any(n.startswith("text_encoder.") for n in self.tensors):
            edited.text_encoder = copy.deepcopy(base.text_encoder)
        params = edited.named_parameters()
        with torch.no_grad():
            for name, value in self.tensors.items():
                if name not in params:
                    raise DatarightsError(f"edit names parameter {name} that the base model does not have")
                params[name].copy_(value)
        edited.meta = {**base.meta, "edit": self.summary()}
        return edited.eval()

    def summary(self) -> dict:
        return {"method": self.method, "targets": list(self.targets), "anchors": list(self.anchors),
                "base": self.base, "base_hash": self.base_hash, "config": self.config,
                "seconds": round(self.seconds, 2), "changed_params": self.changed_params}

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write a loadable model folder: model_index.json (points at the base) + edit.safetensors.

        The folder must not be, contain or lie inside the base (or the base's own base, for an edit
        of an edit); an existing datarights edited model is replaced only with `overwrite`.
        """
        with atomic_folder(out, "edited-model", base_chain(self.base), overwrite) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}, tmp / "edit.safetensors")
            (tmp / "model_index.json").write_text(json.dumps({"_class_name": EDIT_CLASS, **self.summary()}, indent=2))
        return Path(out)


def base_chain(base: str) -> list[Path]:
    """The base folder of an edit and, if that is itself an edited model, its bases in turn."""
    chain: list[Path] = []
    ref = base
    while ref not in (None, "", "default"):
        p = Path(ref)
        if p.resolve() in [c.resolve() for c in chain]:
            break
        chain.append(p)
        try:
            index = json.loads((p / "model_index.json").read_text(encoding="utf-8"))
            ref = index.get("base") if index.get("_class_name") == EDIT_CLASS else None
        except (OSError, ValueError, AttributeError):
            break
    return chain or [DEFAULT_MODEL]


def model_hash(model: T2IModel) -> str:
    """Content hash of a model's weights (cached on the object)."""
    cached = getattr(model, "_hash", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    model._hash = h.hexdigest()[:16]
    return model._hash


def base_ref(model: T2IModel) -> str:
    src = Path(model.source).resolve() if model.source else None
    if src is None or src == DEFAULT_MODEL.resolve():
        return "default"
    return str(src)


def load_edited(path: Path, index: dict, seen: tuple = ()) -> T2IModel:
    """Load an edited-model folder: its base, then the edit on top."""
    from ..models import load_model

    base_path = index.get("base")
    if not isinstance(base_path, str) or not base_path:
        raise DatarightsError(f"{path}/model_index.json names no base model")
    base_dir = DEFAULT_MODEL if base_path == "default" else Path(base_path)
    if base_dir.resolve() in (*seen, path.resolve()):
        raise DatarightsError(f"edited model {path} names itself (or an edit that leads back to it) as its base")
    if not base_dir.exists():
        raise DatarightsError(f"the base model of {path} is missing: {base_dir}")
    if not (path / "edit.safetensors").is_file():
        raise DatarightsError(f"edited model {path} has no edit.safetensors")
    try:
        tensors = load_file(path / "edit.safetensors")
    except (SafetensorError, OSError) as e:
        raise DatarightsError(f"{path}/edit.safetensors is corrupt or truncated ({str(e)[:80]})") from None
    base = load_model(base_dir, _seen=(*seen, path.resolve()))
    edit = Edit(tensors=tensors, base=base_path, base_hash=str(index.get("base_hash", "")),
                method=str(index.get("method", "?")), targets=tuple(index.get("targets", ())),
                anchors=tuple(index.get("anchors", ())), config=index.get("config", {}), seconds=index.get("seconds", 0))
    model = edit.apply(base)
    model.source = str(path)
    return model


# ----------------------------------------------------------------------------- registry
METHODS: dict[str, Method] = {}
register = registrar(METHODS, "erase method")  # @register("ca", CAConfig); a duplicate name is an error


# ----------------------------------------------------------------------------- prompts
GENERIC_TEMPLATES = ["{}", "a photo of {}", "a picture of {}", "an image of {}", "a drawing of {}",
                     "a painting of {}", "a close-up of {}", "a nice picture of {}"]


@dataclass
class PromptSet:
    """Paired target/anchor prompts (same template, concept words swapped) and the concept kind."""

    target: list[str]
    anchor: list[str]
    kind: str = "unknown"


def concept_prompts(target: str, anchor: str, n: int = 48, seed: int = 0) -> PromptSet:
    """Target prompts built from templates over the concept's words, and the same with the anchor.

    For a world concept, captions come from the world grammar (many captions that contain the
    concept words, as the paper uses); otherwise generic templates are used.
    """
    if not target.strip() or not anchor.strip():
        raise DatarightsError("target and anchor must not be empty")
    if target.strip().lower() == anchor.strip().lower():
        raise DatarightsError(f"target and anchor are the same ({target!r}); choose a more general anchor")
    return _pairs(target, anchor, n, seed)


def prompts_showing(concept: str, n: int = 16, seed: int = 0) -> list[str]:
    """Prompts whose images should show the concept (the target side of `concept_prompts`)."""
    return _pairs(concept, concept, n, seed).target


def _pairs(target: str, anchor: str, n: int, seed: int) -> PromptSet:
    rng = random.Random(seed)
    found = V.find_concept(target)
    kind = found[0] if found else "unknown"
    colors = list(V.COLORS)
    pairs: list[tuple[str, str]] = []
    if kind in ("objects", "categories"):
        for _ in range(n):
            c, p = rng.choice(colors), rng.choice(V.PREFIXES)
            s = rng.choice([None, None, *V.STYLES])
            pairs.append((V.object_prompt(target, c, s, p), V.object_prompt(anchor, c, s, p)))
    elif kind == "styles":
        for _ in range(n):
            o, c, p = rng.choice(V.OBJECTS), rng.choice(colors), rng.choice(V.PREFIXES)
            pairs.append((V.object_prompt(o, c, target, p), V.object_prompt(o, c, anchor, p)))
    elif kind == "characters":
        for i in range(n):
            t = V.CHARACTER_TEMPLATES[i % len(V.CHARACTER_TEMPLATES)]
            pairs.append((t.format(name=target), t.format(name=f"a {anchor}")))
    elif kind == "memorized":
        prompt = V.MEMORIZED[found[1]["name"]]["prompt"]
        pairs = [(prompt, f"a {anchor}")] + [(t.format(target), t.format(f"a {anchor}"))
                                             for t in GENERIC_TEMPLATES[1:]]
    elif kind == "compositions":
        a, b = V.COMPOSITIONS[found[1]["name"]]
        for i in range(n):
            t = V.COMPOSITION_TEMPLATES[i % len(V.COMPOSITION_TEMPLATES)]
            pairs.append((t.format(a=a, b=b), t.split(" and ")[0].format(a=anchor)))
    else:
        pairs = [(t.format(target), t.format(anchor)) for t in GENERIC_TEMPLATES]
    uniq = list(dict.fromkeys(pairs))
    return PromptSet([p[0] for p in uniq], [p[1] for p in uniq], kind)


def progress_bar(total: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, dynamic_ncols=True)


@torch.no_grad()
def generate_model_space(model: T2IModel, prompts: list[str], n: int, seed: int, steps: int = 20,
                         guidance: float | None = None) -> tuple[torch.Tensor, list[str]]:
    """n images (x_0 in model space) from the prompts (cycled), generated once by the frozen model."""
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    x0 = model.sample(chosen, seed=seed, steps=steps, guidance=guidance, return_model_space=True)
    return x0, chosen


def config_dict(cfg) -> dict:
    return asdict(cfg)


def trainable_copy(model: T2IModel, group: str) -> tuple[T2IModel, dict[str, torch.nn.Parameter]]:
    """A private copy of the model whose parameter group `group` requires grad (the base is untouched)."""
    import copy

    work = copy.copy(model)
    work.__dict__.pop("_hash", None)
    work.unet = copy.deepcopy(model.unet)
    if group == "embedding":
        work.text_encoder = copy.deepcopy(model.text_encoder)
    work.eval()
    params = work.param_groups(group)
    for p in params.values():
        p.requires_grad_(True)
    return work, params


def optimise(params: dict[str, torch.nn.Parameter], loss_fn: Callable[[int, torch.Generator], torch.Tensor],
             steps: int, lr: float, seed: int, desc: str, progress: bool = True, maximize: bool = False) -> None:
    """Adam over `params` for `steps` steps; loss_fn(step, generator) gives each step's loss."""
    opt = torch.optim.Adam(list(params.values()), lr=lr, maximize=maximize)
    bar = progress_bar(steps, desc, progress)
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        loss = loss_fn(step, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()


def changed_tensors(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in params.items()}


def encode_cached(model: T2IModel, prompts: list[str], with_grad: bool) -> Callable[[list[int]], torch.Tensor]:
    """Text states for prompt indices: precomputed once when the text encoder is frozen."""
    if with_grad:
        return lambda idx: model.encode_prompt([prompts[i] for i in idx])
    with torch.no_grad():
        states = model.encode_prompt(prompts)
    return lambda idx: states[idx]
