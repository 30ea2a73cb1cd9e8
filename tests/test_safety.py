"""Every mistake gets a clear answer, and nothing a user owns is ever lost.

Usage errors (one line naming the option and where its help is, exit 2), refused overwrites (the
folder byte-identical afterwards), checkpoints and caches that are never unpickled, dataset paths
that cannot leave their folder, images checked before decoding, and interruptions (kill -9)
followed by a rerun.
"""

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from datarights.errors import DatarightsError

from .test_cli import run


def snapshot(folder: Path) -> dict:
    """Every file under a folder with the hash of its bytes (for 'byte-identical afterwards')."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(code, err, message=None):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if message is not None:
        assert message in err, err


# ----------------------------------------------------------------------------- usage errors
USAGE = [
    ["nosuchcommand"],
    ["world", "nosuch"],
    ["world", "make"],                                                   # missing folder
    ["world", "make", "/tmp/x", "--n", "abc"],
    ["world", "info", "--bogus"],
    ["train", "--out", "/tmp/x"],                                        # missing --data
    ["train", "--data", "d", "--out", "o", "--steps", "1.5"],
    ["train-judge"],
    ["generate"],                                                        # missing prompt
    ["generate", "a red face", "--n", "abc"],
    ["generate", "a red face", "--guidance", "strong"],
    ["eval-model", "--n", "x"],
    ["erase", "--target", "x"],                                          # missing --anchor / --out
    ["erase", "--target", "x", "--anchor", "y", "--out", "o", "--steps", "many"],
    ["attack", "--target", "x"],                                         # missing --model
    ["attack", "--model", "m", "--target", "x", "--budget", "lots"],
    ["audit", "--model", "m"],                                           # missing --target / --anchor
    ["audit", "--model", "m", "--target", "x", "--anchor", "y", "--n-target", "1e3"],
    ["attribute"],                                                       # no arguments
    ["attribute", "q.png", "--prompt", "p", "--top", "ten"],
    ["attribute", "q.png", "--prompt", "p", "--nope"],
    ["evaluate", "counterfactual", "--queries", "four"],
    ["evaluate", "lds", "--alpha", "half"],
    ["evaluate", "custom", "--pool", "big"],
    ["evaluate", "nosuch"],
    ["demo", "--seed", "zero"],
    ["demo", "--unknown-option"],
]


@pytest.mark.parametrize("args", USAGE, ids=[" ".join(a) for a in USAGE])
def test_usage_errors_are_one_line_and_exit_2(monkeypatch, capsys, args):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "--help`)" in err and "╭" not in err, err   # where to read more, no box


def test_a_group_without_a_command_shows_its_help(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "world")
    assert code == 2 and "Usage:" in out + err and "make" in out + err


def test_dependencies_are_bounded():
    """Every dependency, extras too, has an upper bound (or an exact pin): a fresh install sees the tested releases."""
    import tomllib

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    for d in deps:
        assert any(op in d for op in ("==", "~=", "<")), d


# ----------------------------------------------------------------------------- data loss
def test_train_refuses_an_existing_folder_it_did_not_write(monkeypatch, capsys, tmp_path, tiny_world):
    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    (mine / "notes").mkdir()
    (mine / "notes" / "a.txt").write_text("keep me")
    before = snapshot(mine)
    for extra in ([], ["--overwrite"]):
        code, _, err = run(monkeypatch, capsys, "train", "--data", tiny_world, "--out", mine, "--steps", "1", *extra)
        one_line(code, err, "not written by datarights")
        assert snapshot(mine) == before


def test_train_output_must_not_touch_its_inputs(monkeypatch, capsys, tmp_path, tiny_world, tiny_trained):
    before = snapshot(tiny_world)
    for out, word in [(tiny_world, "is the input"), (tiny_world / "model", "inside the input"),
                      (tiny_world.parent, "contains the input")]:
        code, _, err = run(monkeypatch, capsys, "train", "--data", tiny_world, "--out", out, "--steps", "1")
        one_line(code, err, word)
    assert snapshot(tiny_world) == before
    code, _, err = run(monkeypatch, capsys, "train", "--data", tiny_world, "--init-from", tiny_trained,
                       "--out", tiny_trained, "--steps", "1", "--overwrite")
    one_line(code, err, "is the input")


def test_overwrite_replaces_only_a_datarights_folder_of_the_same_kind(monkeypatch, capsys, tmp_path, tiny_world):
    args = ["train", "--data", tiny_world, "--steps", "1", "--batch-size", "2"]
    import datarights.models.world as W
    from datarights.files import written_by_us

    from .conftest import TINY_UNET
    monkeypatch.setattr(W, "WORLD_UNET", {**W.WORLD_UNET, **TINY_UNET})  # a tiny model, trained in seconds
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "m")
    assert code == 0, err
    assert written_by_us(tmp_path / "m") == "world-model"
    first = snapshot(tmp_path / "m")
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "m")
    one_line(code, err, "pass --overwrite")
    assert snapshot(tmp_path / "m") == first
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "m", "--overwrite", "--seed", "1")
    assert code == 0, err
    assert snapshot(tmp_path / "m") != first
    # a datarights folder of another kind is not replaced, even with --overwrite
    code, _, err = run(monkeypatch, capsys, "world", "make", tmp_path / "m", "--preset", "tiny", "--overwrite")
    one_line(code, err, "not 'dataset'")


def test_erase_onto_its_own_base_is_refused(monkeypatch, capsys, tmp_path, tiny_trained):
    base = tmp_path / "base"
    shutil.copytree(tiny_trained, base)
    before = snapshot(base)
    for out, extra in [(base, []), (base, ["--overwrite"]), (base / "edit", []), (tmp_path, [])]:
        code, _, err = run(monkeypatch, capsys, "erase", "--model", base, "--target", "grumpy face", "--anchor", "face",
                           "--method", "uce", "--out", out, *extra)
        one_line(code, err, "input")
        assert snapshot(base) == before
    # an edit of an edit may not replace the first edit's base either
    code, _, err = run(monkeypatch, capsys, "erase", "--model", base, "--target", "grumpy face", "--anchor", "face",
                       "--method", "uce", "--out", tmp_path / "e1")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "erase", "--model", tmp_path / "e1", "--target", "Ada Vell",
                       "--anchor", "plain", "--method", "uce", "--out", base, "--overwrite")
    one_line(code, err, "input")
    assert snapshot(base) == before
    from datarights.models import load_model
    load_model(tmp_path / "e1")  # still loads


def test_edit_that_names_itself_as_base_is_an_error(tmp_path):
    from datarights.models import load_model
    d = tmp_path / "loop"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps({"_class_name": "DatarightsEditedModel", "base": str(d)}))
    (d / "edit.safetensors").write_bytes(b"")
    with pytest.raises(DatarightsError, match="names itself"):
        load_model(d)


def test_generate_refuses_to_replace_a_file_it_did_not_write(monkeypatch, capsys, tmp_path, tiny_trained):
    photo = tmp_path / "photo.png"
    from PIL import Image
    Image.new("RGB", (4, 4), (1, 2, 3)).save(photo)
    before = photo.read_bytes()
    for extra in ([], ["--overwrite"]):
        code, _, err = run(monkeypatch, capsys, "generate", "a red face", "--model", tiny_trained, "--n", "1",
                           "--steps", "1", "--out", photo, *extra)
        one_line(code, err, "not written by datarights")
    assert photo.read_bytes() == before
    grid = tmp_path / "grid.png"
    args = ["generate", "a red face", "--model", tiny_trained, "--n", "1", "--steps", "1", "--out", grid]
    assert run(monkeypatch, capsys, *args)[0] == 0
    one_line(*run(monkeypatch, capsys, *args)[::2], "pass --overwrite")
    assert run(monkeypatch, capsys, *args, "--overwrite")[0] == 0


# ----------------------------------------------------------------------------- never unpickle
class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def test_crafted_checkpoint_does_not_run(monkeypatch, capsys, tmp_path, tiny_world):
    evidence = tmp_path / "evidence.txt"
    ckpt = tmp_path / "m.ckpt"
    ckpt.mkdir()
    torch.save({"x": Payload(evidence)}, ckpt / "state.pt")
    assert not evidence.exists()
    code, _, err = run(monkeypatch, capsys, "train", "--data", tiny_world, "--out", tmp_path / "m", "--steps", "1")
    one_line(code, err, f"remove {ckpt}")
    assert not evidence.exists() and not (tmp_path / "m").exists()
    # the same payload inside a folder that carries the datarights marker is not loaded either
    (ckpt / ".datarights").write_text('{"kind": "checkpoint"}')
    code, _, err = run(monkeypatch, capsys, "train", "--data", tiny_world, "--out", tmp_path / "m", "--steps", "1")
    one_line(code, err, "pickle")
    assert not evidence.exists()


@pytest.mark.parametrize("damage", ["garbage-state", "truncated-tensors", "foreign-tensors"])
def test_corrupt_checkpoint_is_a_one_line_error(monkeypatch, capsys, tmp_path, tiny_world, damage):
    import datarights.train as train_mod
    from datarights.train import TrainConfig, train

    from .conftest import TINY_UNET
    cfg = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, warmup=1, unet_config=TINY_UNET)
    monkeypatch.setattr(train_mod, "save_world_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_world, tmp_path / "m", progress=False)
    monkeypatch.undo()
    ckpt = tmp_path / "m.ckpt"
    state = json.loads((ckpt / "state.json").read_text())
    tensors = ckpt / state["tensors"]
    if damage == "garbage-state":
        (ckpt / "state.json").write_bytes(b"\x00\xffnot json")
    elif damage == "truncated-tensors":
        tensors.write_bytes(tensors.read_bytes()[:100])
    else:
        from safetensors.torch import save_file
        save_file({"unet.x": torch.zeros(3)}, tensors)
    with pytest.raises(DatarightsError, match=f"remove {ckpt}"):
        train(cfg, tiny_world, tmp_path / "m", progress=False)


def test_corrupt_cache_entry_is_rebuilt(tmp_path, tiny_trained, tiny_world):
    from datarights.attribute import load_training_set, make_config, prepare
    from datarights.models import load_model

    model = load_model(tiny_trained)
    train_set = load_training_set(model, tiny_world)
    state, _, cached = prepare(model, train_set, "pixel", make_config("pixel"), cache=tmp_path, progress=False)
    assert not cached
    entry = next((tmp_path / "pixel").iterdir())
    tensors = entry / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:50])                       # truncated
    again, _, cached = prepare(model, train_set, "pixel", make_config("pixel"), cache=tmp_path, progress=False)
    assert not cached and torch.equal(again["vectors"], state["vectors"])
    assert prepare(model, train_set, "pixel", make_config("pixel"), cache=tmp_path, progress=False)[2]


def test_cache_keeps_the_first_finished_entry(tmp_path):
    from datarights.attribute.cache import load_artifact, save_artifact

    save_artifact(tmp_path, "m", "k", {"a": torch.ones(2)}, {})
    save_artifact(tmp_path, "m", "k", {"a": torch.zeros(2)}, {})        # a second builder finishing later
    assert torch.equal(load_artifact(tmp_path, "m", "k")["a"], torch.ones(2))
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["k"]        # no temporary folder left


def _make_default_world(cache, log):
    os.environ["DATARIGHTS_CACHE"] = str(cache)
    from datarights.attribute import default_world
    default_world()
    with open(log, "a") as f:
        f.write("done\n")


def test_two_processes_build_the_default_world_once(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_make_default_world, args=(tmp_path / "cache", tmp_path / "log")) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "log").read_text() == "done\ndone\n"
    from datarights.world import WORLD_VERSION
    folder = tmp_path / "cache" / f"world-default-v{WORLD_VERSION}"
    assert len((folder / "metadata.jsonl").read_text().splitlines()) == 5000
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".world-default.")]


# ----------------------------------------------------------------------------- datasets
def _dataset(tmp_path, rows, name="data") -> Path:
    from PIL import Image
    d = tmp_path / name
    (d / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(d / "images" / "a.png")
    with open(d / "metadata.jsonl", "wb") as f:
        for r in rows:
            f.write(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode())
    return d


def test_dataset_paths_stay_inside_the_folder(tmp_path):
    from datarights.world import read_imagefolder

    secret = tmp_path / "secret.png"
    from PIL import Image
    Image.new("RGB", (16, 16)).save(secret)
    messages = []
    for name in ["../secret.png", "../../nothing-here.png", str(secret), "/etc/passwd", "/no/such/file.png",
                 "images/../../secret.png"]:
        d = _dataset(tmp_path, [{"file_name": name, "text": "a face"}], name=f"d{len(messages)}")
        with pytest.raises(DatarightsError) as e:
            read_imagefolder(d)
        messages.append(str(e.value).replace(repr(name), "NAME").replace(str(d), "DIR"))
    assert len(set(messages)) == 1, messages   # the same words whether the outside file exists or not
    assert "relative path inside the dataset folder" in messages[0]
    # a symbolic link that leads out of the folder is refused too
    d = _dataset(tmp_path, [{"file_name": "images/link.png", "text": "a face"}], name="dlink")
    (d / "images" / "link.png").symlink_to(secret)
    with pytest.raises(DatarightsError, match="relative path inside"):
        read_imagefolder(d)


@pytest.mark.parametrize("row, message", [
    (b'{"file_name": "images/a.png", "text": "caf\xe9"}\n', "not UTF-8"),
    ({"file_name": 3, "text": "a face"}, "file_name must be a non-empty string"),
    ({"file_name": "images/a.png", "text": 7}, "'text' must be a string"),
    ({"file_name": "images/a.png", "text": None}, "'text' must be a string"),
    ([1, 2], "needs 'file_name' and 'text'"),
])
def test_bad_metadata_rows_are_one_line_errors(monkeypatch, capsys, tmp_path, row, message):
    d = _dataset(tmp_path, [row])
    code, _, err = run(monkeypatch, capsys, "train", "--data", d, "--out", tmp_path / "m", "--steps", "1")
    one_line(code, err, message)
    assert not (tmp_path / "m").exists()


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h pixels (with a tiny, invalid body): refusing it must not need decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [20000, 11000])
def test_huge_images_are_refused_from_the_header(monkeypatch, capsys, tmp_path, tiny_trained, tiny_world, size):
    d = _dataset(tmp_path, [{"file_name": "images/a.png", "text": "a face"}])
    _png_header_only(d / "images" / "a.png", size, size)
    t0 = time.time()
    code, _, err = run(monkeypatch, capsys, "train", "--data", d, "--out", tmp_path / "m", "--steps", "1")
    one_line(code, err, "megapixels")
    code, _, err = run(monkeypatch, capsys, "attribute", d / "images" / "a.png", "--prompt", "a face", "--model",
                       tiny_trained, "--data", tiny_world, "--method", "pixel", "--cache", tmp_path / "c")
    one_line(code, err, "megapixels")
    assert time.time() - t0 < 30


def test_train_resizes_mixed_sizes_to_the_model(tmp_path, tiny_world):
    from PIL import Image

    from datarights.train import TrainConfig, train
    from datarights.world import read_imagefolder

    from .conftest import TINY_UNET
    d = _dataset(tmp_path, [{"file_name": "images/a.png", "text": "a red face"},
                            {"file_name": "images/b.png", "text": "a blue face"}])
    Image.new("RGB", (40, 24), (10, 10, 200)).save(d / "images" / "b.png")
    with pytest.raises(DatarightsError, match="different sizes .* resolution"):
        read_imagefolder(d)
    model = train(TrainConfig(steps=1, batch_size=2, warmup=1, unet_config=TINY_UNET), d, tmp_path / "m",
                  progress=False)
    assert model.meta["training"]["images"] == 2


# ----------------------------------------------------------------------------- other bad input
def test_bad_model_folders_are_one_line_errors(monkeypatch, capsys, tmp_path, tiny_trained):
    cases = {"list": b"[1, 2]", "notutf8": b'{"_class_name": "Datarights\xffWorldModel"}'}
    for name, content in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "model_index.json").write_bytes(content)
        code, _, err = run(monkeypatch, capsys, "generate", "a face", "--model", d, "--out", tmp_path / "g.png")
        one_line(code, err, "model_index.json")
    # a truncated edit
    code, _, err = run(monkeypatch, capsys, "erase", "--model", tiny_trained, "--target", "grumpy face", "--anchor",
                       "face", "--method", "uce", "--out", tmp_path / "e")
    assert code == 0, err
    edit = tmp_path / "e" / "edit.safetensors"
    edit.write_bytes(edit.read_bytes()[:40])
    code, _, err = run(monkeypatch, capsys, "generate", "a face", "--model", tmp_path / "e", "--out", tmp_path / "g.png")
    one_line(code, err, "corrupt or truncated")


def test_numbers_are_checked_before_any_model_loads(monkeypatch, capsys, tmp_path):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("datarights.models.load_model", no_load)
    for args, message in [(["generate", "a face", "--guidance", "nan"], "--guidance must be a finite number"),
                          (["generate", "a face", "--guidance", "inf"], "--guidance must be a finite number"),
                          (["generate", "a face", "--steps", "0"], "--steps must be at least 1"),
                          (["eval-model", "--steps", "0"], "--steps must be at least 1"),
                          (["eval-model", "--guidance", "nan"], "finite"),
                          (["erase", "--target", "grumpy face", "--anchor", "face", "--out", tmp_path / "e",
                            "--lr", "nan"], "--lr must be a finite number"),
                          (["attribute", tmp_path / "q.png", "--prompt", "a face", "--temperature", "nan"],
                           "--temperature"),
                          (["generate", "a face", "--out", "/proc/x.png"], "cannot write"),
                          (["train-judge", "--out", tmp_path / "j", "--blends", "1"], "blends is a share"),
                          (["train-judge", "--out", tmp_path / "j", "--fade", "-0.5"], "fade is how far")]:
        code, _, err = run(monkeypatch, capsys, *args)
        one_line(code, err, message)
    assert not (tmp_path / "j").exists()


def test_one_bad_input_per_remaining_command(monkeypatch, capsys, tmp_path, tiny_trained):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("mine")
    for args, message in [
        (["attack", "--model", tiny_trained, "--target", "unicorn"], "not in the world's vocabulary"),
        (["audit", "--model", tiny_trained, "--target", "grumpy face", "--anchor", "face", "--report",
          tmp_path / "junk"], "not written by datarights"),
        (["attribute", tmp_path / "none.png", "--prompt", "a face", "--model", tiny_trained], "does not exist"),
        (["evaluate", "counterfactual", "--run", tmp_path / "junk"], "not a datarights run folder"),
        (["evaluate", "custom", "--out", tmp_path / "junk", "--concepts", "1"], "not a datarights run folder"),
        (["demo", "--out", tmp_path / "junk"], "not written by datarights"),
        (["demo", "--out", tiny_trained.parent, "--model", tiny_trained], "contains the input"),
    ]:
        code, _, err = run(monkeypatch, capsys, *args)
        one_line(code, err, message)
    assert (tmp_path / "junk" / "x.txt").read_text() == "mine"


def test_report_folder_is_checked_before_the_work(monkeypatch, capsys, tmp_path, tiny_trained):
    def no_load(*a, **k):
        raise AssertionError("work started before the report folder was checked")

    monkeypatch.setattr("datarights.models.load_model", no_load)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "index.html").write_text("someone else's page")
    code, _, err = run(monkeypatch, capsys, "eval-model", "--model", tiny_trained, "--report", tmp_path / "r")
    one_line(code, err, "not written by datarights")


# ----------------------------------------------------------------------------- kill -9, then rerun
def _cli(args, err_path: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "datarights.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=open(err_path, "w"), env={**os.environ, **(env or {})})


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "the process ended before it could be interrupted"
        assert time.time() - t0 < timeout, "timed out waiting for the process"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_during_world_make_then_rerun(tmp_path):
    out = tmp_path / "world"
    proc = _cli(["world", "make", out, "--n", "4000"], tmp_path / "err")
    _kill_when(proc, lambda: any(p.name.startswith(".world.tmp-") for p in tmp_path.iterdir()))
    assert not out.exists()
    done = subprocess.run([sys.executable, "-m", "datarights.cli", "world", "make", out, "--preset", "tiny"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err", "world"]   # the dead run's temp folder is gone


def test_kill_9_during_erase_then_rerun(tmp_path, tiny_trained):
    out = tmp_path / "edit"
    args = ["erase", "--model", tiny_trained, "--target", "grumpy face", "--anchor", "face", "--method", "ca",
            "--out", out]
    proc = _cli([*args, "--steps", "100000"], tmp_path / "err")
    _kill_when(proc, lambda: "erase[ca]" in (tmp_path / "err").read_text())
    assert not out.exists()
    done = subprocess.run([sys.executable, "-m", "datarights.cli", *map(str, args), "--steps", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from datarights.models import load_model
    assert load_model(out).meta["edit"]["method"] == "ca"


def test_kill_9_during_attribution_prepare_then_rerun(tmp_path, tiny_trained):
    from PIL import Image

    from datarights.world import WorldConfig, make_world_folder
    data = make_world_folder(tmp_path / "world", WorldConfig(preset="tiny", n_images=400, seed=1))
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "q.png")
    cache = tmp_path / "cache"
    args = ["attribute", tmp_path / "q.png", "--prompt", "a red face", "--model", tiny_trained, "--data", data,
            "--method", "abu", "--cache", cache, "--json"]
    proc = _cli(args, tmp_path / "err")
    _kill_when(proc, lambda: "abu fisher" in (tmp_path / "err").read_text())
    assert not (cache / "abu").exists() or not [p for p in (cache / "abu").iterdir() if not p.name.startswith(".")]
    done = subprocess.run([sys.executable, "-m", "datarights.cli", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["method"] == "abu"
    assert len([p for p in (cache / "abu").iterdir() if not p.name.startswith(".")]) == 1
