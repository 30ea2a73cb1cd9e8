"""Everything that reads a user's files or writes into their folders, in one place.

Rules (each enforced here, so no writer can forget one):
- An output is checked before any work: it must not be, contain, or lie inside one of the inputs,
  its parent must be writable, and an existing non-empty folder is replaced only if datarights
  wrote it (a `.datarights` marker records the kind) *and* the caller passed `overwrite`.
- Outputs are written under a temporary name beside the target and renamed into place, so an
  interruption (even `kill -9`) never leaves a half-written model, dataset, report or ledger.
- Images are checked from their header (size limit) before they are decoded; dataset paths must
  stay inside the dataset folder.
- Nothing is unpickled: tensors live in safetensors, state in JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import DatarightsError

MARKER = ".datarights"
"""File inside every folder datarights writes: {"kind": ..., "written_by": ...}."""

MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width x height) datarights decodes, checked from the header first: 40 megapixels
(e.g. 8000 x 5000). Larger files are refused with a one-line error instead of filling memory."""

PNG_SOFTWARE = "datarights"
"""The PNG text chunk 'Software' of images datarights writes, so that --overwrite can recognise them."""

LEGACY_CLASSES = {"DatarightsWorldModel": "world-model", "DatarightsEditedModel": "edited-model"}


def _version() -> str:
    from . import __version__
    return __version__


# ----------------------------------------------------------------------------- ownership of folders
def written_by_us(path: Path) -> str | None:
    """The kind of datarights folder at `path` (from its marker), or None if datarights did not write it."""
    try:
        kind = json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind")
        if isinstance(kind, str):
            return kind
    except (OSError, ValueError, AttributeError):
        pass
    try:  # model folders written before the marker existed
        cls = json.loads((path / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
        return LEGACY_CLASSES.get(cls)
    except (OSError, ValueError, AttributeError):
        return None


def _resolved(p: str | Path) -> Path:
    return Path(p).expanduser().resolve()


def check_disjoint(out: str | Path, inputs: Iterable[str | Path | None], flag: str = "--out") -> None:
    """Refuse an output that is, contains, or lies inside one of the inputs."""
    o = _resolved(out)
    for i in inputs:
        if i is None or str(i) in ("", "default"):
            continue
        r = _resolved(i)
        if o == r:
            raise DatarightsError(f"{flag} {out} is the input {i}; choose another location")
        if r in o.parents:
            raise DatarightsError(f"{flag} {out} lies inside the input {i}; choose a location outside it")
        if o in r.parents:
            raise DatarightsError(f"{flag} {out} contains the input {i}; choose a location outside it")


def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists():
        p = p.parent
    return p


def _probe_writable(folder: Path, what: Path) -> None:
    """Create and remove a temporary file in `folder` (the nearest existing ancestor of the output)."""
    if not folder.is_dir():
        raise DatarightsError(f"cannot write {what}: {folder} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".datarights-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise DatarightsError(f"cannot write {what}: {folder} is not writable ({e.strerror or e})") from None


def check_output(out: str | Path, kind: str, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 flag: str = "--out") -> Path:
    """Validate a folder output before any work is done (see the module docstring); returns it as a Path."""
    out = Path(out)
    check_disjoint(out, inputs, flag)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DatarightsError(f"{flag} {out} exists and is not a folder; refusing to replace it")
    if out.is_dir() and any(out.iterdir()):
        ours = written_by_us(out)
        if ours is None:
            raise DatarightsError(f"{out} exists and was not written by datarights; refusing to overwrite it "
                                  "(choose a new folder)")
        if ours != kind:
            raise DatarightsError(f"{out} holds a datarights folder of kind {ours!r}, not {kind!r}; "
                                  "refusing to overwrite it")
        if not overwrite:
            raise DatarightsError(f"{out} already exists (a datarights {kind} folder); pass --overwrite to replace it")
    _probe_writable(_existing_ancestor(out.parent), out)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_sibling(out: Path, tag: str) -> Path:
    """A unique temporary folder beside `out`, with the permissions a plain mkdir would give."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{tag}-{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (Unix time; Linux /proc), or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        ticks = float(stat.rpartition(")")[2].split()[19])  # field 22, after the (command name)
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether a process with this id exists and runs (one we may not signal counts as alive; a zombie
    does not). With `since`
    (Unix time the process is known to have been running at), a process with this id that started
    later is another one that reuses the id, and counts as dead (where the start time is readable)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:   # a zombie (killed, not yet reaped by its parent, e.g. the web's worker) is dead
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    if since is not None:
        started = process_start_time(pid)
        if started is not None and started > since + 5:  # slack: /proc's boot time is whole seconds
            return False
    return True


def sweep_stale(out: Path) -> None:
    """Remove temporary siblings of `out` left by processes that no longer run (e.g. killed with -9)."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f".{out.name}.*-*-*"):
        parts = p.name[len(out.name) + 2:].split("-")
        if len(parts) >= 3 and parts[0] in ("tmp", "old") and parts[1].isdigit() and not pid_alive(int(parts[1])):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _write_marker(folder: Path, kind: str) -> None:
    (folder / MARKER).write_text(json.dumps({"kind": kind, "written_by": f"datarights {_version()}"}) + "\n")


@contextlib.contextmanager
def atomic_folder(out: str | Path, kind: str, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                  flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it gets the marker and replaces `out` in one rename.

    The checks of `check_output` run before the caller's work and again just before the rename (a
    folder that appeared meanwhile is never clobbered). On any error, `out` is left as it was.
    """
    inputs = list(inputs)
    out = check_output(out, kind, inputs, overwrite, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    tmp = temp_sibling(out, "tmp")
    try:
        yield tmp
        _write_marker(tmp, kind)
        check_output(out, kind, inputs, overwrite, flag)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: Path, out: Path) -> None:
    """Put folder `new` at `out`; an existing `out` is moved aside first and removed only afterwards."""
    if not out.exists():
        os.replace(new, out)
        return
    old = temp_sibling(out, "old")
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def open_run_folder(run: str | Path, flag: str = "--run", kind: str = "run") -> Path:
    """A folder that a long job fills and resumes from (a run, a checkpoint): created with a marker,
    or an existing one that datarights wrote for the same purpose; anything else is refused."""
    run = Path(run)
    if run.is_dir() and any(run.iterdir()):
        if kind == "checkpoint" and (run / "state.pt").exists():
            raise DatarightsError(f"checkpoint {run} is in an old pickle format, which is never loaded; "
                                  f"remove {run} to start over")
        ours = written_by_us(run)
        legacy = kind == "run" and ours is None and any((run / f).is_file() for f in ("results.json", "cells.json"))
        if ours != kind and not legacy:
            raise DatarightsError(f"{flag} {run} exists and is not a datarights {kind} folder; choose another "
                                  "location or move it away")
        return run
    if run.exists() and not run.is_dir():
        raise DatarightsError(f"{flag} {run} exists and is not a folder")
    _probe_writable(_existing_ancestor(run.parent), run)
    run.mkdir(parents=True, exist_ok=True)
    _write_marker(run, kind)
    return run


# ----------------------------------------------------------------------------- single files
def atomic_file(path: str | Path, write: Callable[[str], None], suffix: str = "", mode: int | None = None,
                replace: bool = True) -> Path:
    """Create `path` by `write(temporary_path)` beside it, then one rename; on any error nothing is left.

    `mode`: the file's permissions (default: what the umask gives), set before it appears under its
    name. `replace=False`: never replace an existing `path` (a hard link instead of a rename), so of two
    processes creating the same file the first one's stays; the second gets FileExistsError.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file under a temporary name, then rename it into place."""
    return atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> Path:
    from .stats import finite
    return write_text_atomic(path, json.dumps(finite(obj), indent=2, default=str, allow_nan=False))


def _is_our_png(path: Path) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == PNG_SOFTWARE
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def _is_our_certificate(path: Path) -> bool:
    from .limits import MAX_CERTIFICATE_BYTES, loads_json
    try:
        if path.stat().st_size > MAX_CERTIFICATE_BYTES:
            return False
        doc = loads_json(path.read_bytes(), "certificate")
        return isinstance(doc, dict) and isinstance(doc.get("document"), dict) \
            and doc["document"].get("type") == "datarights erase certificate"
    except (OSError, DatarightsError):
        return False


FILE_KINDS = {"png": (".png", _is_our_png), "certificate": (".json", _is_our_certificate)}
"""Single files datarights writes: their suffix, and how an existing one is recognised as datarights'
(a PNG's 'Software' text chunk; a certificate's document type)."""


def check_output_file(out: str | Path, kind: str, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                      flag: str = "--out") -> Path:
    """Validate a single-file output before any work (the same rule as folders, for files):

    - the right suffix for its kind; not one of the command's inputs, nor inside one;
    - never a symbolic link, a device, a FIFO or anything but a plain file;
    - an existing file is replaced only with `overwrite` *and* only if datarights wrote a file of
      this kind there (so `--out` can never name a ledger, a key, a model or a user's image);
    - its folder is writable (made if missing). The write itself is atomic (`atomic_file`).
    """
    suffix, ours = FILE_KINDS[kind]
    out = Path(out)
    if out.suffix.lower() != suffix:
        raise DatarightsError(f"{flag} must be a {suffix} file, got {out}")
    if out.is_symlink():
        raise DatarightsError(f"{flag} {out} is a symbolic link; refusing to replace it (give the file itself)")
    check_disjoint(out, inputs, flag)
    if out.exists():
        if not out.is_file():
            raise DatarightsError(f"{flag} {out} exists and is not a plain file; refusing to replace it")
        if not ours(out):
            raise DatarightsError(f"{out} exists and was not written by datarights; refusing to overwrite it")
        if not overwrite:
            raise DatarightsError(f"{out} already exists; pass --overwrite to replace it")
    _probe_writable(_existing_ancestor(out.parent), out)
    return out


def check_output_png(out: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                     flag: str = "--out") -> Path:
    """`check_output_file` for a PNG image."""
    return check_output_file(out, "png", inputs, overwrite, flag)


def write_output_file(out: str | Path, kind: str, data: bytes, inputs: Iterable[str | Path | None] = (),
                      overwrite: bool = False, flag: str = "--out") -> Path:
    """Write one output file by the rule of `check_output_file`, checked again just before the rename."""
    inputs = list(inputs)
    out = check_output_file(out, kind, inputs, overwrite, flag)

    def write(tmp):
        Path(tmp).write_bytes(data)
        check_output_file(out, kind, inputs, overwrite, flag)   # nothing appeared there meanwhile
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_file(out, write, suffix=FILE_KINDS[kind][0])


def save_png(image, out: str | Path) -> Path:
    """Save a PIL image as PNG atomically, tagged as written by datarights."""
    from PIL.PngImagePlugin import PngInfo

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    return atomic_file(out, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), suffix=".png")


# ----------------------------------------------------------------------------- reading
def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (a work's identity in the ledger and the store)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json_file(path: Path, what: str):
    """Parse a JSON file; unreadable, non-UTF-8 or invalid JSON is a one-line error naming the file."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DatarightsError(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise DatarightsError(f"{what} {path} is not valid JSON ({e.msg})") from None
    except OSError as e:
        raise DatarightsError(f"cannot read {what} {path} ({e.strerror or e})") from None


def open_rgb(path: str | Path, what: str = "image", label: str | None = None):
    """Open an image as RGB (PIL), checking its size from the header before decoding it.

    Every problem (missing, not an image, truncated, larger than MAX_IMAGE_PIXELS) is a one-line
    DatarightsError that names the image as `label` (default: "<what> <path>"; a server passes
    "the uploaded image", so that no message shows where it keeps its files). Returns (rgb image,
    original mode).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    name = label or f"{what} {path}"
    limit = f"over the limit of {MAX_IMAGE_PIXELS // 1_000_000} megapixels; resize it first"
    try:
        with warnings.catch_warnings():  # the size check below replaces PIL's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DatarightsError(f"{name} is {w}x{h} pixels, {limit}")
                mode = im.mode
                im.load()
                return im.convert("RGB"), mode
    except FileNotFoundError:
        raise DatarightsError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise DatarightsError(f"{name} is a folder, not an image") from None
    except Image.DecompressionBombError:  # PIL refuses the very largest while reading the header
        raise DatarightsError(f"{name} is {limit}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise DatarightsError(f"{name} is not a readable image (not a PNG, JPEG or other image file, or damaged)") from None


def inside_folder(root: Path, name, where: str) -> Path:
    """`root / name` for a dataset-relative path; absolute paths and paths leaving `root` are refused.

    The message is the same whatever lies outside the folder, so it reveals nothing about it.
    """
    if not isinstance(name, str) or not name.strip():
        raise DatarightsError(f"{where}: file_name must be a non-empty string")
    p = Path(name)
    bad = DatarightsError(f"{where}: file_name {name!r} must be a relative path inside the dataset folder")
    if p.is_absolute() or ".." in p.parts or name.startswith("~"):
        raise bad
    full = root / p
    if not _resolved(full).is_relative_to(_resolved(root)):  # a symbolic link that leads out of the folder
        raise bad
    return full
