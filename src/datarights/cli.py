"""The `datarights` command line: a thin layer over the Python API.

Every command is a few lines of argument handling around one API call. `--json` prints exactly one
JSON object on stdout; progress and logs go to stderr. Bad input exits with code 2 and one line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import DatarightsError
from .limits import MAX_COUNT, MAX_SEED
from .ledger.cli import ledger_app
from .stats import finite, fmt

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Erase concepts from text-to-image models, attribute generated images to owners, and verify both.")
eval_app = typer.Typer(no_args_is_help=True, help="Score attribution methods against ground truth.")
world_app = typer.Typer(no_args_is_help=True, help="The embedded ground-truth world: make it, list its vocabulary.")
app.add_typer(world_app, name="world")
app.add_typer(eval_app, name="evaluate")
app.add_typer(ledger_app, name="ledger")

MODEL_HELP = "Model folder (world model or Stable Diffusion pipeline); default: the shipped world model."


def _emit(obj: dict, as_json: bool, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(finite(obj), allow_nan=False) + "\n")
    else:
        typer.echo(text if text is not None else json.dumps(finite(obj), indent=2, allow_nan=False))


def _check_n(n: int, name: str = "--n") -> None:
    if n < 1:
        raise DatarightsError(f"{name} must be at least 1, got {n}")


def _check_guidance(guidance: float | None) -> None:
    if guidance is not None and not math.isfinite(guidance):
        raise DatarightsError(f"--guidance must be a finite number, got {guidance}")


def _is_world_judge(folder: Path) -> bool:
    """A folder written by `train-judge` (its config.json names the world's sizes), not a CLIP folder."""
    import json
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "sizes" in cfg and "world_version" in cfg


def _world_judge(folder: Optional[Path], why: str):
    """The world judge of --judge (None: the shipped one); a folder that is not one is a one-line error."""
    if folder is None:
        return None
    from .judge import load_judge
    if not _is_world_judge(folder):
        raise DatarightsError(f"judge folder {folder} is not a world judge ({why}; make one with `datarights train-judge`)")
    return load_judge(folder)


def _check_report(report: Optional[Path], overwrite: bool, *inputs) -> None:
    """A --report folder is checked before any work, so a long run never ends in a refused write."""
    if report is not None:
        from .files import check_output
        check_output(report, "report", inputs, overwrite, flag="--report")


OVERWRITE_HELP = "Replace the output if it exists and datarights wrote it (never anything else)."
DEVICE_OPT = typer.Option("auto", "--device", help="Where the model runs: auto (CUDA when available), cpu, cuda, cuda:N.")
PRECISION_OPT = typer.Option("fp32", "--precision", help="Arithmetic of every model pass: fp32, bf16 or fp16 (GPU only); weights stay fp32.")


def _check_device(device: str, precision: str) -> None:
    """--device and --precision are checked before anything loads (a missing GPU is a one-line error)."""
    from .runtime import resolve_device, resolve_precision
    resolve_precision(precision, resolve_device(device))


PRESET_HELP = "World preset: tiny (tests), small (retraining evaluations), default (the shipped model), large (>= 100 erasable concepts)."


def _world_config(preset: str, n: Optional[int], seed: int, photographers: Optional[int] = None,
                  artists: Optional[int] = None, characters: Optional[int] = None, memorized: Optional[int] = None):
    from .world import WorldConfig

    return WorldConfig(n_images=n, seed=seed, preset=preset, photographers=photographers, artists=artists,
                       characters=characters, memorized=memorized)


@world_app.command("make")
def world_make(out: Path = typer.Argument(..., help="Folder to write (must not exist)."),
               n: Optional[int] = typer.Option(None, "--n", max=MAX_COUNT, help="Number of images (default: the preset's; 5,000 for default)."),
               seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Generator seed."),
               preset: str = typer.Option("default", "--preset", help=PRESET_HELP),
               photographers: Optional[int] = typer.Option(None, "--photographers", max=MAX_COUNT, help="Number of photographers (default: the preset's)."),
               artists: Optional[int] = typer.Option(None, "--artists", max=MAX_COUNT, help="Number of artists (default: the preset's)."),
               characters: Optional[int] = typer.Option(None, "--characters", max=MAX_COUNT, help="Number of characters (default: the preset's)."),
               memorized: Optional[int] = typer.Option(None, "--memorized", max=MAX_COUNT, help="Number of memorized scenes (default: the preset's)."),
               overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Write the procedural world as a Hugging Face imagefolder (PNG + metadata.jsonl + world_config.json)."""
    from .world import make_world_folder

    cfg = _world_config(preset, n, seed, photographers, artists, characters, memorized)
    path = make_world_folder(out, cfg, overwrite=overwrite)
    typer.echo(f"wrote {cfg.n_images} images to {path}", err=True)


@world_app.command("info")
def world_info(as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
               preset: str = typer.Option("default", "--preset", help=PRESET_HELP),
               n: Optional[int] = typer.Option(None, "--n", max=MAX_COUNT, help="World size used for the owners' image counts (default: the preset's)."),
               seed: int = typer.Option(0, min=0, max=MAX_SEED, help="World seed.")):
    """The world's vocabulary: concepts with anchors and nearby concepts, owners, photographers' signatures."""
    from .world.generate import owner_counts

    cfg = _world_config(preset, n, seed)
    vocab = cfg.vocabulary().info(owner_counts(cfg))
    if as_json:
        _emit(vocab, True)
        return
    typer.echo(f"world version {vocab['world_version']}, preset {preset}: {cfg.n_images} images, "
               f"{len(cfg.vocabulary().erasable())} erasable concepts, {len(vocab['owners'])} owners")
    for kind in ("objects", "styles", "characters", "memorized", "compositions"):
        typer.echo(f"{kind}:")
        for e in vocab[kind]:
            owner = f"  owner={e['owner']}" if "owner" in e else ""
            dose = f"  copies={e['dose']}" if "dose" in e else ""
            typer.echo(f"  {e['name']!r:24} anchor={e['anchor']!r:10} nearby={e['nearby']}{owner}{dose}")
    counts = {o["name"]: o["images"] for o in vocab["owners"]}
    typer.echo("photographers (signature: grade / mark / ground / side; preferred subjects):")
    for p in vocab["photographers"]:
        sig = " / ".join(p["signature"][k] for k in ("grade", "mark", "ground", "side"))
        credit = "  credited in captions" if p["control"] else ""
        typer.echo(f"  {p['name']!r:16} {counts[p['name']]:5} images  {sig:32} {', '.join(p['subjects'])}{credit}")
    typer.echo(f"owners: {len(vocab['owners'])} (largest: "
               + ", ".join(f"{o['name']} {o['images']}" for o in sorted(vocab['owners'], key=lambda o: -o['images'])[:5]) + ")")


@app.command("train")
def train_cmd(data: Path = typer.Option(..., "--data", help="Imagefolder with metadata.jsonl."),
              out: Path = typer.Option(..., "--out", help="Model folder to write."),
              steps: int = typer.Option(None, max=MAX_COUNT, help="Optimisation steps."),
              batch_size: int = typer.Option(None, "--batch-size", max=MAX_COUNT, help="Images per step."),
              lr: float = typer.Option(None, help="Peak learning rate."),
              seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of weights, batches, noise."),
              checkpoint_every: int = typer.Option(None, "--checkpoint-every", max=MAX_COUNT, help="Checkpoint interval (steps)."),
              init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this model folder."),
              resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume from <out>.ckpt if present."),
              overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
              device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Train a world model (progress bar, periodic checkpoints, resume after interruption).

    Images of another size than the model's (16x16 for the world model) are resized to it.
    """
    _check_device(device, precision)
    from .train import TrainConfig, train

    overrides = {k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr,
                                       checkpoint_every=checkpoint_every).items() if v is not None}
    cfg = TrainConfig(seed=seed, **overrides)
    model = train(cfg, data, out, init_from=init_from, resume=resume, overwrite=overwrite, device=device,
                  precision=precision)
    from .runtime import is_main_process
    if is_main_process():  # under `accelerate launch`, only the first process writes
        typer.echo(f"wrote {out} ({model.meta['training']['seconds']} s)", err=True)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


@app.command("train-judge")
def train_judge_cmd(out: Path = typer.Option(..., "--out", help="Judge folder to write."),
                    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of rendering, initialisation and augmentation."),
                    preset: str = typer.Option("default", "--preset", help="World preset whose vocabulary the judge reads."),
                    blends: float = typer.Option(0.0, help="Share of training images on a blend of two artists' "
                                                 "backgrounds (labelled with the two artists, never a third)."),
                    fade: float = typer.Option(0.0, help="Augmentation: half the training images washed out by up "
                                               "to this much contrast."),
                    as_json: bool = typer.Option(False, "--json", help="Print the accuracy report as one JSON object."),
                    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Train the world judge on freshly rendered world images and report held-out accuracy per label."""
    from .judge import JudgeConfig, train_judge

    _, report = train_judge(JudgeConfig(seed=seed, preset=preset, blends=blends, fade=fade), out=out, overwrite=overwrite)
    _emit(report, as_json)


@app.command("train-encoder")
def train_encoder_cmd(out: Path = typer.Option(..., "--out", help="Encoder folder to write."),
                      seed: int = typer.Option(1001, min=0, max=MAX_SEED, help="Seed of rendering, initialisation and views (not the judge's)."),
                      as_json: bool = typer.Option(False, "--json", help="Print the training report as one JSON object."),
                      overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Train the world's self-supervised image encoder (the `feature` baseline's; no labels, not the judge)."""
    from .attribute.encoder import EncoderConfig, train_encoder

    _, report = train_encoder(EncoderConfig(seed=seed), out=out, overwrite=overwrite)
    _emit(report, as_json)


@app.command("generate")
def generate_cmd(prompt: str = typer.Argument(..., help="Text prompt."),
                 model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
                 n: int = typer.Option(16, "--n", max=MAX_COUNT, help="Number of images."),
                 seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of the initial noise: same seed, same pixels."),
                 steps: int = typer.Option(25, max=MAX_COUNT, help="DDIM steps."),
                 guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (default: the model's; 1.0 for the world model)."),
                 out: Path = typer.Option(Path("grid.png"), "--out", help="PNG grid to write."),
                 scale: int = typer.Option(4, max=64, help="Upscale factor of the saved grid (nearest neighbour)."),
                 overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
                 device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Generate a grid of N images for one prompt."""
    _check_device(device, precision)
    from .files import check_output_png, save_png
    from .models import load_model
    from .quality import to_pil_grid

    if not prompt.strip():
        raise DatarightsError("prompt is empty")
    _check_n(n)
    _check_n(steps, "--steps")
    _check_guidance(guidance)
    if scale < 1:
        raise DatarightsError(f"--scale must be at least 1, got {scale}")
    check_output_png(out, [model], overwrite)
    m = load_model(model, device, precision)
    m.check_steps(steps)
    bar = _progress(n, "generate")
    images = m.sample([prompt] * n, seed=seed, steps=steps, guidance=guidance, callback=bar.update)
    bar.close()
    check_output_png(out, [model], overwrite)
    save_png(to_pil_grid(images, ncol=int(n**0.5 + 0.999), scale=scale), out)
    typer.echo(f"wrote {out}", err=True)


@app.command("eval-model")
def eval_model_cmd(model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
                   n: int = typer.Option(200, "--n", max=MAX_COUNT, help="Number of prompts sampled from the world grammar."),
                   seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of prompts and noise."),
                   steps: int = typer.Option(25, max=MAX_COUNT, help="DDIM steps."),
                   guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (default: the model's; 1.0 for the world model)."),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                   report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report to this folder."),
                   provenance: bool = typer.Option(False, "--provenance", help="Also generate from generic prompts and report how the model reproduces its owners' traces (signatures, styles, characters, scenes) against their training frequencies."),
                   data: Optional[Path] = typer.Option(None, "--data", help="--provenance: the model's training world (default: the default world)."),
                   judge: Optional[Path] = typer.Option(None, "--judge", help="A world judge from `train-judge` (a `large` world's model needs one); default: the shipped judge."),
                   overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
                   device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Generate from world-grammar prompts and let the judge score whether each image shows its prompt."""
    _check_device(device, precision)
    from .models import load_model
    from .quality import eval_model, public

    _check_n(n)
    _check_n(steps, "--steps")
    _check_guidance(guidance)
    _check_report(report, overwrite, model)
    m = load_model(model, device, precision)
    if m.kind != "world":
        raise DatarightsError("eval-model scores with the world judge, which reads world-model images only")
    m.check_steps(steps)
    world_judge = _world_judge(judge, "the model is judged by one")
    bar = _progress(n, "eval-model")
    result = eval_model(m, world_judge, n=n, seed=seed, steps=steps, guidance=guidance, progress=bar.update)
    bar.close()
    if provenance:
        from .evaluate.provenance import reproduction
        from .judge import load_judge
        bar = _progress(2 * n, "provenance")
        rep = reproduction(m, world_judge or load_judge(), _training_data(data, m), n=2 * n, seed=seed, steps=steps,
                           progress=bar.update)
        bar.close()
        result["provenance"] = public(rep)
    if report is not None:
        from .report import grid, write_report
        asked, read = result["_asked"], result["_read"]
        cells = [("ok" if all(a[k] == r[k] for k in ("object", "color", "character", "memorized", "composition"))
                  and (a["kind"] != "styled" or a["style"] == r["style"]) else "bad") for a, r in zip(asked, read)]
        from .judge import describe
        labels = [f"{a['text']} → {describe(r)}" for a, r in zip(asked, read)]
        write_report(report, "datarights eval-model", [{"title": "Accuracies", "metrics": public(result)},
                     {"title": "Generations (green: the judge agrees with the prompt)",
                      "grids": [grid(f"{len(labels)} prompts", result["_images"], labels, cells)]}],
                     public(result), subtitle=f"model: {m.source}", overwrite=overwrite, inputs=(model,))
    _emit(public(result), as_json)


@app.command("erase")
def erase_cmd(target: list[str] = typer.Option(..., "--target", help="Concept to erase (repeat for several)."),
              anchor: list[str] = typer.Option(..., "--anchor", help="What it should become (one, or one per target)."),
              out: Path = typer.Option(..., "--out", help="Edited model folder to write (changed tensors + base reference)."),
              method: str = typer.Option("ca", help="ca | esd | uce | fmn | ga | retrain | mace (many concepts at once) | stereo (resists textual inversion)."),
              model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
              params: Optional[str] = typer.Option(None, help="Parameter group: xattn-kv, xattn, attn, embedding, unet-noxattn, full; or LoRA adapters: lora-xattn-kv, lora-xattn (default: the method's)."),
              lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="Rank of the LoRA adapters (lora-* groups; default 4)."),
              batch_size: Optional[int] = typer.Option(None, "--batch-size", max=MAX_COUNT, help="Images per optimisation step (default: the method's for this model; split to fit the device's memory)."),
              steps: Optional[int] = typer.Option(None, max=MAX_COUNT, help="Optimisation steps."),
              lr: Optional[float] = typer.Option(None, help="Learning rate."),
              loss: Optional[str] = typer.Option(None, help="ca only: 'model' (default) or 'noise'."),
              data: Optional[str] = typer.Option(None, "--data", help="Training imagefolder (retrain; optional for ga)."),
              seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Seed."),
              robust: bool = typer.Option(False, "--robust", help="ca/esd: AdvUnlearn-style min-max against soft-prompt attacks."),
              hold: Optional[float] = typer.Option(None, "--hold", help="ca only: weight of holding the edit to the original model. On an edited model, other prompts keep the first unedited base's predictions and the concepts erased before the current model's (a chain of opt-outs); on any other model, a preservation term."),
              as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
              overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
              device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Erase concepts from a model and write an edited model folder."""
    _check_device(device, precision)
    from .erase import check_targets, erase, make_config
    from .models import base_chain, base_ref
    from .files import check_output
    from .models import load_model
    from .world import vocabulary_of

    target, anchor = check_targets(target, anchor)
    if robust and method not in ("ca", "esd"):
        raise DatarightsError("--robust is available for ca and esd")
    if hold is not None and method != "ca":
        raise DatarightsError("--hold is available for ca")
    if lora_rank is not None and method != "mace" and not (params or "").startswith("lora-"):
        raise DatarightsError("--lora-rank applies to LoRA parameter groups: pass --params lora-xattn-kv (or lora-xattn)")
    cfg = make_config(method, params=params, steps=steps, lr=lr, loss=loss, data=data, seed=seed,
                      robust=robust or None, lora_rank=lora_rank, batch_size=batch_size, hold=hold)
    check_output(out, "edited-model", [*base_chain(str(model) if model else "default"), data], overwrite)
    m = load_model(model, device, precision)
    check_output(out, "edited-model", [*base_chain(base_ref(m)), data], overwrite)
    if m.kind == "world":
        for t in target:
            if vocabulary_of(m).find_concept(t) is None:
                typer.echo(f"warning: {t!r} is not in the world's vocabulary; the world judge cannot score its erasure", err=True)
    line = None
    if hold:   # an edit of an edit: held to the chain's first unedited base
        from .erase.hold import line_of
        line = line_of(m, device, precision)
    edit = erase(m, target, anchor, method, config=cfg, line=line)
    edit.save(out, overwrite=overwrite)
    _emit({**edit.summary(), "out": str(out)}, as_json, text=f"wrote {out} ({edit.changed_params} changed parameters, {edit.seconds:.1f} s)")


@app.command("export")
def export_cmd(model: Path = typer.Argument(..., help="Edited (or any) model folder to export."),
               out: Path = typer.Option(..., "--out", help="Folder to write: a complete StableDiffusionPipeline (or world-model) folder."),
               overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Write a standalone model folder with the edit applied, which diffusers' from_pretrained loads as is."""
    from .files import check_output
    from .models import base_chain, export_model, load_model

    inputs = [model, *base_chain(str(model))]
    check_output(out, "export", inputs, overwrite)
    m = load_model(model, "cpu")
    export_model(m, out, overwrite=overwrite, inputs=tuple(inputs))
    typer.echo(f"wrote {out}", err=True)


@app.command("attack")
def attack_cmd(model: Path = typer.Option(..., "--model", help="(Edited) model folder to attack."),
               target: str = typer.Option(..., "--target", help="The erased concept to bring back."),
               method: str = typer.Option("udatk", help="udatk | ti | paraphrase | p4d (Prompting4Debugging: needs the model before the erasure)."),
               variant: Optional[str] = typer.Option(None, "--variant", help="p4d: n (fresh tokens), k (a token after every 3) or union (default)."),
               base: Optional[Path] = typer.Option(None, "--base", help="p4d: the model before the erasure; default: the edited model's base."),
               budget: int = typer.Option(16, max=MAX_COUNT, help="Generated images (attempts); p4d: held-out prompts tried."),
               seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
               judge: Optional[Path] = typer.Option(None, "--judge", help="A world judge from `train-judge` (a `large` world's model needs one); default: the shipped world judge."),
               as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
               device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Try to bring an erased concept back; the attack success rate is judged by the world judge."""
    _check_device(device, precision)
    from .attack import METHODS, NEEDS_BASE, attack, make_config
    from .models import DEFAULT_MODEL, load_model

    _check_n(budget, "--budget")
    if method not in METHODS:
        raise DatarightsError(f"unknown attack {method!r}; choose from {', '.join(sorted(METHODS))}")
    if variant is not None and method != "p4d":
        raise DatarightsError(f"--variant chooses p4d's variant; it does not apply to {method}")
    if base is not None and method not in NEEDS_BASE:
        raise DatarightsError(f"--base is the unerased model that p4d matches; {method} does not use it")
    cfg = make_config(method, budget=budget, seed=seed, **({"variant": variant} if variant else {}))
    edited = load_model(model, device, precision)
    before = None
    if method in NEEDS_BASE:
        ref = base if base is not None else edited.meta.get("edit", {}).get("base")
        if ref is None:
            raise DatarightsError(f"{model} is not an edited model: give the model before the erasure with --base")
        before = load_model(DEFAULT_MODEL if ref == "default" else Path(ref), device, precision)
    world_judge = _world_judge(judge, "attacks are judged by one")
    result = attack(edited, target, method, cfg, base=before, judge=world_judge)
    _emit(result.to_json(), as_json)


@app.command("audit")
def audit_cmd(model: Path = typer.Option(..., "--model", help="Edited model folder."),
              target: list[str] = typer.Option(..., "--target", help="Erased concept (repeat for several)."),
              anchor: list[str] = typer.Option(..., "--anchor", help="Its anchor (one, or one per target)."),
              base: Optional[Path] = typer.Option(None, "--base", help="Base model; default: the edited model's base."),
              nearby: list[str] = typer.Option([], "--nearby", help="Nearby concepts that must survive (default: from world info)."),
              n_target: int = typer.Option(384, "--n-target", max=MAX_COUNT, help="Images from held-out target prompts (384: a 95% interval of at most +-0.05)."),
              n_seen: int = typer.Option(96, "--n-seen", max=MAX_COUNT, help="Images from the target prompts the erase trained on (reported apart; 0 skips)."),
              judge: Optional[Path] = typer.Option(None, "--judge", help="A local CLIP folder to judge with (any model), or a world judge from `train-judge` (a `large` world's model needs one); default: the shipped world judge."),
              seed: int = typer.Option(1, min=0, max=MAX_SEED, help="Seed of prompts and noise."),
              attacks: Optional[str] = typer.Option(None, "--attacks", help="Also attack the edited and base models: comma-separated udatk,ti,paraphrase,p4d (p4d matches the base model)."),
              as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
              report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report to this folder."),
              overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
              device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Measure whether a concept is gone from an edited model and what else changed."""
    _check_device(device, precision)
    from .audit import AuditConfig, audit, audit_sections, check_verdict_reachable
    from .models import DEFAULT_MODEL, load_model
    from .quality import public

    cfg = AuditConfig(n_target=n_target, n_seen=n_seen, seed=seed, nearby=list(nearby))
    check_verdict_reachable(cfg)
    _check_report(report, overwrite, model, base)
    scorer, world_judge = None, None
    if judge is not None and _is_world_judge(judge):
        from .judge import load_judge
        from .judge.scorer import WorldScorer
        world_judge = load_judge(judge)
        scorer = WorldScorer(world_judge)
    elif judge is not None:
        from .judge.scorer import ClipScorer
        if attacks:
            raise DatarightsError("--attacks are judged by a world judge; they cannot be combined with a CLIP --judge yet")
        scorer = ClipScorer(judge)
    edited = load_model(model, device, precision)
    if base is None:
        ref = edited.meta.get("edit", {}).get("base")
        base = DEFAULT_MODEL if ref in (None, "default") else Path(ref)
    b = load_model(base, device, precision)
    methods = [m for m in (attacks or "").split(",") if m]
    if methods:
        from .attack import METHODS as ATTACKS
        bad = [m for m in methods if m not in ATTACKS]
        if bad:
            raise DatarightsError(f"unknown attack {bad[0]!r}; choose from {', '.join(sorted(ATTACKS))}")
    result = audit(edited, b, target, anchor, cfg, judge=scorer)
    sections = audit_sections(result)
    if methods:
        from .attack import attack
        from .report import grid
        result["attacks"] = {}
        for t in target:
            for m in methods:
                on_edit = attack(edited, t, m, seed=seed, base=b, judge=world_judge)
                on_base = attack(b, t, m, seed=seed, base=b, judge=world_judge)
                je, jb = on_edit.to_json(), on_base.to_json()
                result["attacks"][f"{m}|{t}"] = {
                    **{k: je[k] for k in ("asr", "asr_ci", "asr_plain", "asr_plain_ci", "gain", "attempts")},
                    "asr_base": jb["asr"], "asr_base_ci": jb["asr_ci"],
                    "seconds": round(on_edit.seconds + on_base.seconds, 1)}
                sections.append({"title": f"Attack {m} on '{t}': ASR {on_edit.asr:.2f} (base {on_base.asr:.2f})",
                                 "grids": [grid("recovered images (edited model)", on_edit.images,
                                                [f"{p[:40]} → {'back' if ok else 'gone'}" for p, ok in zip(on_edit.prompts, on_edit.success)],
                                                ["bad" if ok else "ok" for ok in on_edit.success])]})
    if report is not None:
        from .report import write_report
        write_report(report, "datarights audit", sections, public(result), subtitle=f"edited: {model}; base: {base}",
                     overwrite=overwrite, inputs=(model, base))
    _emit(public(result), as_json)


def _training_data(data: Optional[Path], model) -> Path:
    """--data, or for a world model trained on the default world, that world (made once in the cache)."""
    if data is not None:
        return data
    if model.kind != "world" or not model.meta.get("training"):
        raise DatarightsError("pass --data: the training imagefolder of this model")
    from .attribute import default_world
    return default_world(log=lambda s: typer.echo(s, err=True))


STORE_HELP = ("Keep the method's per-image rows in this store folder, synced with the training set first: only "
              "works it lacks are computed, works that left it are deleted (trak, dtrak, ekfac, kfac, abu-fast, feature, pixel).")


def _check_store(store: Path, method: str, dtype: str, *inputs, dtype_flag: str = "--store-dtype") -> None:
    from .attribute.store import DTYPES, spec_for
    from .files import check_disjoint

    spec_for(method)
    if dtype not in DTYPES:
        raise DatarightsError(f"{dtype_flag} must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_disjoint(store, inputs, "--store")


@app.command("store")
def store_cmd(store: Path = typer.Argument(..., help="The store folder (made if absent)."),
              method: str = typer.Option("dtrak", help="trak | dtrak | ekfac | kfac | abu-fast | feature | pixel: the method whose rows it keeps."),
              model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
              data: Optional[Path] = typer.Option(None, "--data", help="Training imagefolder; default: the default world (for the shipped model)."),
              dtype: str = typer.Option("float32", "--dtype", help="float32 or float16 rows."),
              workers: Optional[int] = typer.Option(None, "--workers", max=MAX_COUNT, help="Compute the rows as Ray tasks on this many workers (a local Ray unless --ray-address; needs the ray extra)."),
              ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--workers: a running Ray cluster's address instead of a local Ray."),
              gpus: bool = typer.Option(False, "--gpus", help="--workers: one GPU per task (the cluster must have GPUs)."),
              refit: bool = typer.Option(False, "--refit", help="ekfac, kfac, abu-fast: refit the curvature (K-FAC factors, Fisher) over the whole training set now (a sync refits it by itself once more than 5% of the works changed since the fit)."),
              index: Optional[bool] = typer.Option(None, "--index/--no-index", help="Keep (or drop) an approximate nearest-neighbour index of the rows (feature, pixel; needs the ann extra): from a million works on, `attribute --store` scores only its top candidates. Default: keep what the store has."),
              as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
              device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Sync an attribution store with a training set: compute the rows of new works, delete those that left."""
    _check_device(device, precision)
    from .attribute import make_config, resolved
    from .attribute.store import FolderRows, sync
    from .models import load_model

    _check_store(store, method, dtype, model, data, dtype_flag="--dtype")
    if (ray_address or gpus) and workers is None:
        raise DatarightsError("--ray-address and --gpus say where --workers run; give --workers N too")
    if workers is not None:
        _check_n(workers, "--workers")
        from .attribute.workers import ray_module
        ray_module()                                   # says how to install Ray before any work
    m = load_model(model, device, precision)
    train = FolderRows.open(_training_data(data, m), m.resolution)    # streamed: read batch by batch
    cfg = resolved(make_config(method), m)
    featurize, shutdown = None, (lambda: None)
    if workers is not None:
        from .attribute.workers import ray_featurize
        featurize, shutdown = ray_featurize(m, method, cfg, workers, ray_address, gpus)
    try:
        st, rep = sync(m, train, method, cfg, store, dtype, featurize=featurize, index=index, refit=refit)
    finally:
        shutdown()
    out = {"store": str(store), "method": method, "works": len(st), "training_rows": len(train), "dtype": dtype,
           "added": rep.added, "deleted": rep.deleted, "recounted": rep.recounted, "kept": rep.kept,
           "damaged_shards": len(rep.dropped_shards), "gram_rebuilt": rep.gram_rebuilt, "index": rep.index or None,
           "curvature": rep.fit or None,
           "seconds": round(rep.seconds, 2)}
    _emit(out, as_json, text=rep.line())


@app.command("attribute")
def attribute_cmd(image: Path = typer.Argument(..., help="Generated image (PNG) to attribute."),
                  prompt: str = typer.Option(..., "--prompt", help="The prompt that generated it."),
                  method: str = typer.Option("abu", help="abu | abu-fast (abu to first order, ~1 s a query) | trak | dtrak | jtrak | ekfac | kfac (influence functions) | feature | pixel | caption (the text-only baseline)."),
                  model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
                  data: Optional[Path] = typer.Option(None, "--data", help="Training imagefolder; default: the default world (for the shipped model)."),
                  top: int = typer.Option(10, "--top", max=MAX_COUNT, help="How many training images to list."),
                  rerank: Optional[int] = typer.Option(None, "--rerank", help="abu-fast: re-score its top M training images exactly, as abu does (two-stage)."),
                  region: Optional[str] = typer.Option(None, "--region", help="Attribute only this region of the image: x0,y0,x1,y1 in its pixels (x1, y1 exclusive); for the methods that can localise (trak, dtrak, ekfac, kfac, abu, abu-fast, pixel, feature)."),
                  mask: Optional[Path] = typer.Option(None, "--mask", help="Attribute only the region a black-and-white image of the same size marks in white."),
                  temperature: Optional[float] = typer.Option(None, "--temperature", help="Owner-share softmax temperature on standardised scores (default: the method's calibrated value)."),
                  cache: Optional[Path] = typer.Option(None, "--cache", help="Artifact cache folder (default ~/.cache/datarights)."),
                  store: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP),
                  store_dtype: str = typer.Option("float32", "--store-dtype", help="--store: float32 or float16 rows."),
                  as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                  report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report to this folder."),
                  overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
                  device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Rank the training images (and their owners) by influence on a generated image."""
    _check_device(device, precision)
    from .attribute import METHODS, Query, attribute, load_query, load_training_set, make_config
    from .models import load_model

    if not prompt.strip():
        raise DatarightsError("prompt is empty")
    if method not in METHODS:
        raise DatarightsError(f"unknown attribution method {method!r}; choose from {', '.join(sorted(METHODS))}")
    _check_n(top, "--top")
    if rerank is not None:
        if method != "abu-fast":
            raise DatarightsError(f"--rerank re-scores abu-fast's top images; it does not apply to {method}")
        _check_n(rerank, "--rerank")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise DatarightsError(f"--temperature must be positive, got {temperature}")
    _check_report(report, overwrite, image, model, data, cache)
    if store is not None:
        _check_store(store, method, store_dtype, image, model, data, cache, report)
    if region is not None or mask is not None:
        from .attribute import check_local
        check_local(method, store)
    m = load_model(model, device, precision)
    from .attribute import load_region
    weights = load_region(image, m.resolution, region, mask)      # checked before the image's resize warning
    query = Query(load_query(image, m.resolution), prompt, weights)
    if store is not None:              # the store reads each work's file once (for its key), no more
        from .attribute.store import FolderRows
        train = FolderRows.open(_training_data(data, m), m.resolution)
    else:
        train = load_training_set(m, _training_data(data, m))
        trained_on = m.meta.get("training", {}).get("data_hash")
        if trained_on and trained_on != train.hash:
            typer.echo("warning: this dataset is not the one the model was trained on (content hash differs)", err=True)
    for n, flag in ((top, "--top"), (rerank or 0, "--rerank")):
        if n > len(train):
            raise DatarightsError(f"{flag} {n} is larger than the training set ({len(train)} images)")
    result = attribute(m, train, query, method, make_config(method, rerank=rerank), cache=cache,  # None: the default
                       temperature=temperature, store=store, store_dtype=store_dtype)
    if store is not None:
        typer.echo(result.extra["store"], err=True)
    out = result.to_json(top)
    if region is not None:
        out["region"] = [int(v) for v in region.split(",")]
    elif mask is not None:
        out["region"] = "mask"
    if report is not None:
        from .report import dim_outside, grid, write_report
        items = result.top(top)
        idx = [it["index"] for it in items]
        imgs = train.images_of(idx) if store is not None else train.images[idx]
        shown = query.image[None] if query.region is None else dim_outside(query.image, query.region)[None]
        write_report(report, f"datarights attribute ({method})", [
            {"title": "Query", "text": prompt, "grids": [grid("generated image" + (", the region attributed lit, the "
                                                              "rest dimmed" if query.region is not None else ""),
                                                              shown, [prompt])]},
            {"title": f"Top {top} training images", "grids": [grid("most influential first", imgs,
                [f"{it['owner']} ({it['score']:.3g})" for it in items])]},
            {"title": "Owner shares", "bars": [{"label": o["owner"], "value": o["share"]} for o in out["owners"][:15]]},
        ], out, overwrite=overwrite, inputs=(image, model, data, cache))
    _emit(out, as_json, text="\n".join(f"{o['share']:.3f}  {o['owner']}" for o in out["owners"][:10]))


@eval_app.command("counterfactual")
def eval_counterfactual_cmd(methods: str = typer.Option("abu,caption,dtrak,feature,pixel,trak,jtrak", help="Comma-separated methods."),
                            k: list[int] = typer.Option([50], "--k", help="Top-K to remove (repeat for several)."),
                            queries: int = typer.Option(20, max=MAX_COUNT, help="Generated queries (every kind of world prompt in turn)."),
                            random_draws: int = typer.Option(6, "--random-draws", max=MAX_COUNT, help="Random removals of K images (the reference; each one retrained model, scored on every query)."),
                            world_images: int = typer.Option(1000, "--world-images", max=MAX_COUNT, help="Size of the smaller world."),
                            world_preset: str = typer.Option("small", "--world-preset", help="Preset of the smaller world (see `datarights world info --preset small`)."),
                            train_steps: int = typer.Option(1500, "--train-steps", max=MAX_COUNT, help="Steps of every (re)training."),
                            coupled: bool = typer.Option(True, "--coupled/--uncoupled", help="Mask the removed images out of the base run's own batch and noise stream (default), or retrain on the reduced set with fresh batches."),
                            competence: int = typer.Option(200, "--competence", max=MAX_COUNT, help="Prompts of the base model's eval-model check, recorded with the results (0: none)."),
                            run: Path = typer.Option(Path("runs/counterfactual"), "--run", help="Run folder (resumable)."),
                            seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
                            as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                            device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Leave-K-out: remove each method's top-K, retrain, regenerate, measure the change (vs random-K)."""
    _check_device(device, precision)
    from .evaluate import CounterfactualConfig, counterfactual

    cfg = CounterfactualConfig(methods=[m for m in methods.split(",") if m], k=list(k), queries=queries,
                               world_images=world_images, world_preset=world_preset, train_steps=train_steps, seed=seed,
                               coupled=coupled, random_draws=random_draws, competence=competence)
    res = counterfactual(cfg, run, device=device, precision=precision)
    _emit({"summary": res["summary"], "run": str(run)}, as_json)


@eval_app.command("lds")
def eval_lds_cmd(methods: str = typer.Option("abu,caption,dtrak,trak,jtrak,feature,pixel", help="Comma-separated methods."),
                 subsets: int = typer.Option(32, max=MAX_COUNT, help="Subset models trained from scratch."),
                 alpha: float = typer.Option(0.5, help="Fraction of the training set in each subset."),
                 queries: int = typer.Option(16, max=MAX_COUNT, help="Generated queries."),
                 world_images: int = typer.Option(600, "--world-images", max=MAX_COUNT, help="Size of the smaller world."),
                 world_preset: str = typer.Option("small", "--world-preset", help="Preset of the smaller world (see `datarights world info --preset small`)."),
                 train_steps: int = typer.Option(800, "--train-steps", max=MAX_COUNT, help="Steps of every training."),
                 coupled: bool = typer.Option(True, "--coupled/--uncoupled", help="Subset models share one masked batch and noise stream (default), or each trains on its subset with its own batches."),
                 unit: str = typer.Option("image", "--unit", help="What a subset draws: 'image' (random images) or 'owner' (whole owners in or out; generic queries whose source owner the judge reads; an oracle scorer as the positive control)."),
                 competence: int = typer.Option(200, "--competence", max=MAX_COUNT, help="Prompts of the base model's eval-model check, recorded with the results (0: none)."),
                 run: Path = typer.Option(Path("runs/lds"), "--run", help="Run folder (resumable)."),
                 seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                 device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Linear datamodeling score: train on random subsets, correlate summed scores with the query's loss."""
    _check_device(device, precision)
    from .evaluate import LDSConfig, lds

    cfg = LDSConfig(methods=[m for m in methods.split(",") if m], subsets=subsets, alpha=alpha, queries=queries,
                    world_images=world_images, world_preset=world_preset, train_steps=train_steps, seed=seed,
                    coupled=coupled, unit=unit, competence=competence)
    res = lds(cfg, run, device=device, precision=precision)
    _emit({"summary": [{k: v for k, v in r.items() if k != "per_query"} for r in res["summary"]], "run": str(run)},
          as_json, text="\n".join(f"{r['method']:>15}  LDS {fmt(r['lds'], r['lds_ci'], 3)}"
                                   + (f"  minus random {fmt(r['lds_minus_random'], r['lds_minus_random_ci'], 3)}"
                                      if "lds_minus_random" in r else "") for r in res["summary"]))


@eval_app.command("owners")
def eval_owners_cmd(methods: str = typer.Option("caption,pixel,feature,trak,dtrak,jtrak,kfac,ekfac,abu-fast,abu", help="Comma-separated methods; a variant with its options as abu-fast:rerank=500."),
                    queries: int = typer.Option(64, max=MAX_COUNT, help="Report queries (generic prompts whose source owner the judge reads)."),
                    tune_queries: int = typer.Option(32, "--tune-queries", max=MAX_COUNT, help="Queries the owner-share temperatures are fitted on (other templates and seeds)."),
                    control_queries: int = typer.Option(16, "--control-queries", max=MAX_COUNT, help="Queries that credit their photographer (reported apart)."),
                    candidates: int = typer.Option(768, max=MAX_COUNT, help="Generations per split the queries are chosen from."),
                    data: Optional[Path] = typer.Option(None, "--data", help="Training imagefolder (default: the default world)."),
                    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
                    run: Path = typer.Option(Path("runs/owners"), "--run", help="Run folder (resumable)."),
                    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
                    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                    device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Owner-level attribution: share and rank of the true source owner, lifts over caption-only and the count prior."""
    _check_device(device, precision)
    from .attribute import load_training_set
    from .evaluate.owners import OwnerEvalConfig, owner_eval
    from .files import check_disjoint, open_run_folder
    from .judge import load_judge
    from .models import load_model

    cfg = OwnerEvalConfig(methods=[m for m in methods.split(",") if m], queries=queries, tune_queries=tune_queries,
                          control_queries=control_queries, candidates=candidates, seed=seed)
    check_disjoint(run, [data, model])
    open_run_folder(run)
    m = load_model(model, device, precision)
    if m.kind != "world":
        raise DatarightsError("the owner evaluation reads provenance with the world judge: world models only")
    res = owner_eval(cfg, m, load_training_set(m, _training_data(data, m)), load_judge(), run)
    rows = res["summary"]["report"]
    _emit({"summary": res["summary"], "temperatures": res["temperatures"], "run": str(run)}, as_json,
          text="\n".join(f"{r['method']:>12}  share of the source owner {fmt(r['share'], r['share_ci'], 3)}"
                         + (f"  lift over caption {fmt(r['lift_over_caption'], r['lift_over_caption_ci_owners'], 3)}"
                            " (by owner)" if "lift_over_caption" in r else "") for r in rows))


@eval_app.command("local")
def eval_local_cmd(methods: str = typer.Option("pixel,feature,trak,dtrak,ekfac,abu-fast", help="Comma-separated methods that can attribute a region."),
                   queries: int = typer.Option(16, max=MAX_COUNT, help="Report queries: generated compositions the judge reads whole."),
                   tune_queries: int = typer.Option(8, "--tune-queries", max=MAX_COUNT, help="Queries of other seeds, reported apart."),
                   top: int = typer.Option(10, "--top", max=MAX_COUNT, help="Top training images read per part (of those showing one of the two parts)."),
                   model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
                   data: Optional[Path] = typer.Option(None, "--data", help="Training imagefolder (default: the default world)."),
                   run: Path = typer.Option(Path("runs/local"), "--run", help="Run folder (resumable)."),
                   report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report (each part lit beside its top images) to this folder."),
                   seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                   device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Local attribution on compositions: does the ranking for each part's region find that part (vs the whole image, random)?"""
    _check_device(device, precision)
    from .attribute import load_training_set
    from .evaluate import LocalEvalConfig, local_eval
    from .files import check_disjoint, open_run_folder
    from .judge import load_judge
    from .models import load_model

    cfg = LocalEvalConfig(methods=[m for m in methods.split(",") if m], queries=queries, tune_queries=tune_queries,
                          top_k=top, seed=seed)
    check_disjoint(run, [data, model])
    open_run_folder(run)
    m = load_model(model, device, precision)
    if m.kind != "world":
        raise DatarightsError("the local evaluation reads compositions with the world judge: world models only")
    res = local_eval(cfg, m, load_training_set(m, _training_data(data, m)), load_judge(), run, report=report)
    rows = res["summary"]["report"]
    _emit({"summary": res["summary"], "run": str(run)}, as_json,
          text="\n".join(f"{r['method']:>10}  part share with the region {fmt(r['part'], r['part_ci'], 3)}, "
                         f"without {fmt(r['whole'], r['whole_ci'], 3)}, random {r['random']:.3f}" for r in rows))


@eval_app.command("leaveout")
def eval_leaveout_cmd(owners: list[str] = typer.Option([], "--owner", help="Owner to leave out (repeat; default: every owner of the world)."),
                      generations: int = typer.Option(512, max=MAX_COUNT, help="Generations per owner (generic prompts of its subjects; a run resumed with another number redoes them on the models it trained)."),
                      train_steps: int = typer.Option(1000, "--train-steps", max=MAX_COUNT, help="Steps of every (re)training (fine-tuning steps after a warm start)."),
                      warm_steps: int = typer.Option(4000, "--warm-steps", max=MAX_COUNT, help="Steps of the shared warm start trained on owners outside the smaller world (0: every model from scratch)."),
                      world_preset: str = typer.Option("small", "--world-preset", help="Preset of the smaller world."),
                      methods: str = typer.Option("", help="Also score these attribution methods by their top owner's removal (comma-separated)."),
                      run: Path = typer.Option(Path("runs/leaveout"), "--run", help="Run folder (resumable)."),
                      seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
                      as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                      device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Leave-one-owner-out retraining: each owner's trace must collapse once its images are gone."""
    _check_device(device, precision)
    from .evaluate.leaveout import LeaveOutConfig, OwnerCounterfactualConfig, leaveout, owner_counterfactual

    cfg = LeaveOutConfig(owners=list(owners), generations=generations, train_steps=train_steps, warm_steps=warm_steps,
                         world_preset=world_preset, seed=seed)
    cf = OwnerCounterfactualConfig(methods=[m for m in methods.split(",") if m], seed=seed) if methods else None
    res = leaveout(cfg, run, device=device, precision=precision)
    if cf is not None:
        res = owner_counterfactual(cf, cfg, run, device=device, precision=precision)
    out = {"summary": res["summary"], "run": str(run), **({"counterfactual": res["counterfactual_summary"]} if cf else {})}
    _emit(out, as_json, text="\n".join(
        f"{o:>22} ({c['kind']}): trace {fmt(c['rate_before'], c['rate_before_ci'])} -> "
        f"{fmt(c['rate_after'], c['rate_after_ci'])}, ratio {fmt(c['ratio'], c['ratio_ci'])}"
        for o, c in res["owners"].items()) + f"\ncollapsed: {res['summary']['collapsed']} of {res['summary']['measured']}")


@eval_app.command("custom")
def eval_custom_cmd(methods: str = typer.Option("feature,feature-tuned,pixel,dtrak,trak,jtrak,abu", help="Comma-separated methods."),
                    data: Optional[Path] = typer.Option(None, "--data", help="Training imagefolder (default: the default world)."),
                    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
                    kinds: str = typer.Option("object,style", help="Customization kinds: object ('a sks fish') and/or style ('a red tree in sks style')."),
                    concepts: int = typer.Option(4, max=MAX_COUNT, help="Held-out customizations per kind."),
                    pool: int = typer.Option(500, max=MAX_COUNT, help="Training images in the ranked pool."),
                    out: Optional[Path] = typer.Option(None, "--out", help="Folder for results.json (and cells.json, to resume)."),
                    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed."),
                    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                    device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """Customized-model ground truth: rank a new owner's exemplars (Recall@1/10, mAP)."""
    _check_device(device, precision)
    from .evaluate import CustomConfig, custom_eval
    from .files import check_disjoint, open_run_folder
    from .models import load_model

    if out is not None:  # before the default world is made or any model loads
        check_disjoint(out, [data, model])
        open_run_folder(out, "--out")
    cfg = CustomConfig(methods=[m for m in methods.split(",") if m], kinds=[k for k in kinds.split(",") if k],
                       concepts=concepts, pool=pool, seed=seed)
    res = custom_eval(cfg, _training_data(data, load_model(model, device, precision)), model, out, device=device,
                      precision=precision)
    _emit(res, as_json)


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("datarights-demo"), "--out", help="Folder for index.html and results.json."),
             model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
             seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of every generation."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
             overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
             device: str = DEVICE_OPT, precision: str = PRECISION_OPT):
    """The end-to-end workflow on the embedded world, written as an HTML report."""
    _check_device(device, precision)
    from .demo import run_demo

    results = run_demo(out, model, seed=seed, overwrite=overwrite, device=device, precision=precision)
    serve = results.get("service", {}).get("serve")
    _emit(results, as_json, text=f"report: {results['report']}" + (f"\nowners' page: {serve}" if serve else ""))


@app.command("serve")
def serve_cmd(ledger: Optional[str] = typer.Option(None, "--ledger", help="Ledger file or URL (default: $DATARIGHTS_LEDGER or ./datarights-ledger.db)."),
              host: str = typer.Option("127.0.0.1", help="Address to listen on."),
              port: int = typer.Option(8000, min=1, max=65535, help="Port.")):
    """The owners' web page and JSON API (/docs) on a ledger."""
    from .web.app import create_app, listen

    location = ledger or os.environ.get("DATARIGHTS_LEDGER") or "datarights-ledger.db"
    sock = listen(host, port)            # a busy port or an unknown host is one line, before anything else
    app_ = create_app(location)          # opened (and checked) before the server starts
    import uvicorn

    from .ledger.db import shown
    typer.echo(f"datarights: serving {shown(location)} on http://{host}:{port}/ (API docs: /docs)", err=True)
    uvicorn.Server(uvicorn.Config(app_, log_level="warning")).run(sockets=[sock])


def main() -> None:
    """Entry point. Usage errors (an unknown option, a value that is not a number, a missing argument)
    and DatarightsError: one line on stderr and exit code 2; a command or group given no arguments
    shows its help."""
    try:
        from typer._click import exceptions as cx  # the click typer brings (its own since typer 0.2x)
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click import exceptions as cx

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        code = app(prog_name="datarights", standalone_mode=False)
    except cx.NoArgsIsHelpError as e:  # `datarights world`: the group's help, as click shows it
        e.show()
        sys.exit(e.exit_code)
    except cx.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "datarights"
        typer.echo(f"error: {_one_line(e.format_message())} (see `{where} --help`)", err=True)
        sys.exit(2)
    except cx.ClickException as e:  # click's own file and parameter errors outside usage
        typer.echo(f"error: {_one_line(e.format_message())}", err=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C or a declined prompt
        typer.echo("aborted", err=True)
        sys.exit(1)
    except DatarightsError as e:
        typer.echo(f"error: {e}" + (f" ({e.hint})" if getattr(e, "hint", None) else ""), err=True)
        sys.exit(2)
    except OSError as e:  # the file system failed where no check could foresee it (disk full, lost mount)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        typer.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(2)
    if isinstance(code, int) and not isinstance(code, bool) and code:  # typer.Exit(code) inside a command
        sys.exit(code)


def _one_line(message: str) -> str:
    return " ".join(message.split()).rstrip(".")


if __name__ == "__main__":
    main()
