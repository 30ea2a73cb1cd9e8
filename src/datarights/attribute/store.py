"""The training-set store: per-work rows that grow and shrink with the training set.

A method whose per-training-set state is one row per training image (`trak`, `dtrak`, `ekfac`,
`kfac`, `abu-fast`: projected gradients; `feature`: image features; `pixel`: normalised pixels) can
keep that state in a store folder instead of one cached artifact. The influence functions and
`abu-fast` also need a curvature of the whole set (K-FAC factors, AbU's diagonal Fisher), applied on
the query's side: the store keeps it beside the rows and refits it only once the works that came,
left or changed since the fit exceed `REFIT_SHARE` of them. Rows are keyed by the **work's content** (sha256 of the
image file's bytes, which is the ledger's `Work.sha256`, and of its caption), so:

- syncing the store with a training set computes only the rows it lacks, and drops the rows of
  works that left it (an opt-out): a new dataset version costs its new works, never a rebuild;
- a row never depends on where its work sits in the set: its noise draws are seeded by its key
  (the in-memory path seeds them by row number, so the two paths differ by their draws only);
- a work that appears several times (a memorized image's copies with one caption) is one row with a
  count, weighted by it wherever the in-memory path would see the copies.

For the TRAK family the kernel is kept as the k x k Gram matrix G = Phi^T W Phi (W the counts),
updated by rank-B updates when B rows come or go (never an N x k rebuild), and a query scores
s = Phi (G + lam mean(diag G) I)^-1 phi_q: the same estimator as the in-memory A phi_q.

For `feature` and `pixel` rows the store can also keep an **approximate nearest-neighbour index**
(usearch HNSW, `pip install 'datarights[ann]'`; chosen by `benchmarks/attribute.py ann`): asked for
once (`sync(..., index=True)`, `datarights store --index`), it is then moved with every update
(new rows added, deleted works removed in place, never rebuilt for an opt-out). From
`INDEX_MIN_ROWS` rows on, a query scores only the index's top candidates exactly
(`approximate_scores`): owner shares are the softmax of their standardised scores, standardised
with the *exact* mean and spread of all scores (from the kept sums Σ w r and the Gram matrix), and
the share mass the candidates leave out is bounded (every other row scores at most the last
candidate's score, up to the index's recall), so the approximation says how far it can be off.

Layout: `store.json` (the manifest: what the rows were made with, each file's sha256) and
`rows/<id>.{rows,keys,counts}.npy` shards, plus `rows/<id>.gram.npy`, `rows/<id>.sum.npy` (Σ w r
and Σ w), with an index `rows/<id>.index.usearch`, and with a whole-set fit `rows/<id>.fit.npz`.
Files are written once under new names and the manifest is replaced in one rename, so a crash leaves the store as it was;
files no manifest names are swept. Every file is checked against its checksum when the store is
opened: a truncated or corrupt shard is dropped (its works are recomputed by the next sync, and
scoring refuses a store with missing rows), a damaged Gram matrix or sum is recomputed from the
rows, and a damaged index is never searched (exact scoring) and is rebuilt by the next sync.
A query reads the rows shard by shard, each through a memory map that is closed when the shard is
done (the operating system's page cache keeps them warm between queries), so the process holds one
shard's rows, never the store's: through the store's long-lived maps, every row a query touched
would stay resident in the process (8 KB a work at k = 2048) for as long as the store is open.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import mmap
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DatarightsError
from ..files import file_sha256, write_json
from .cache import build_lock

STORE_VERSION = 1
MANIFEST = "store.json"
DTYPES = ("float32", "float16")
INDEX_MIN_ROWS = 1_000_000
"""From this many rows on, a store with an index scores a query's candidates only. Below it every row
is scored exactly: 2.8 ms a query at 100,000 128-d rows on 2 cores (BENCHMARKS.md, `ann`)."""
INDEX_CANDIDATES = 1000
"""Candidates an approximate query scores exactly (at least `--top`)."""
INDEX_SEARCH_BEAM = 256
"""HNSW search beam (usearch `expansion_search`): recall@10 >= 0.95 at 10^6 rows (BENCHMARKS.md, `ann --million`)."""

REFIT_SHARE = 0.05
"""A store's whole-set fit (`RowSpec.fit`: the influence functions' curvature factors, abu-fast's
Fisher) is refitted by a sync once the works added, deleted or recounted since the fit exceed this share of the works it was
fitted on; until then the kept fit serves, so that appending or opting out a few works costs their rows
only. The curvature is an average over the training set, which a few percent of works move little;
`benchmarks/attribute.py scale --churn-only` records the scores with a kept fit against a rebuild's
after an append (`append_spearman`, `append_max_rel_diff`). A sync with `refit=True` refits at once."""

_CHECKED: dict[str, tuple[tuple[int, int, int], str]] = {}
"""sha256 of the store files this process has hashed, by path, with the (size, mtime_ns, inode) they
had then. Store files are written once under new names, so a service that opens its store for every
query hashes each file once: a file that still has the same size, mtime and inode is not hashed
again. Only files whose mtime was at least `_SETTLED_NS` old when hashed are remembered, so a file
rewritten afterwards always shows a newer mtime, even where the clock ticks coarsely (as git's
"racy clean" index entries)."""
_SETTLED_NS = 2_000_000_000
_KERNELS: dict[tuple[str, float], np.ndarray] = {}
"""(G + lam mean(diag G) I)^-1 of the Gram matrices this process has scored with, by (Gram file id,
lam): ids are fresh for every Gram matrix written, so an entry never outlives its matrix."""


def _sha(path: Path) -> str:
    """file_sha256(path), remembered for a settled file (see `_CHECKED`)."""
    import time

    st = path.stat()
    sig = (st.st_size, st.st_mtime_ns, st.st_ino)
    got = _CHECKED.get(str(path))
    if got is not None and got[0] == sig:
        return got[1]
    sha = file_sha256(path)
    if time.time_ns() - st.st_mtime_ns >= _SETTLED_NS:
        if len(_CHECKED) >= 65536:
            _CHECKED.clear()
        _CHECKED[str(path)] = (sig, sha)
    return sha


def usearch_index():
    """usearch's Index class, or a one-line error saying how to install it."""
    try:
        from usearch.index import Index
    except ImportError:
        raise DatarightsError("the approximate index needs usearch: pip install 'datarights[ann]'") from None
    return Index


@dataclass
class RowSpec:
    """How a method makes and uses its rows."""

    featurize: Callable
    """(model, train, cfg, idx [B] tensor of row numbers, seeds [B] ints) -> rows [B, k]."""
    query: Callable
    """(model, train, query, cfg) -> the query's vector [k]."""
    kernel: bool = False
    """Scores go through (G + lam I)^-1 (the TRAK family); else scores = rows . query vector."""
    lam: Callable = lambda cfg: 0.0
    """The ridge term, relative to the mean diagonal of G."""
    model_free: bool = False
    """Rows depend on the images and the config only (pixels, an encoder's features), not on the
    model's weights: every model of one resolution shares the store (an edited model needs no new rows)."""
    batch: Callable | None = None
    """(model, cfg) -> training images per featurization batch; None: 512 (world), what fits (SD)."""
    fit: Callable | None = None
    """(model, train, seeds, cfg, progress) -> {name: array}: state fitted over the whole training set
    that the query side needs (`ekfac`'s curvature factors, `abu-fast`'s Fisher), row i's draws seeded
    by seeds[i] (read with `set_batches`). With it, `query` takes the fitted state as a fifth argument.
    Kept in the store and refitted only when the works added, deleted or recounted since the fit exceed
    `REFIT_SHARE` of the works it was fitted on (see there)."""
    check: Callable | None = None
    """(cfg) -> None: raises a DatarightsError for a config whose scores a store cannot give."""


ROWS: dict[str, RowSpec] = {}


def require_projection(cfg) -> None:
    """A `RowSpec.check` for the methods whose rows are projected gradients: a store sums their outer
    products, so it refuses the unprojected config."""
    if cfg.projection == "none":
        raise DatarightsError("a store keeps projected rows (it sums their outer products): choose a projection")


def register_rows(name: str, spec: RowSpec) -> None:
    if name in ROWS:
        raise ValueError(f"rows of {name!r} registered twice")
    ROWS[name] = spec


def spec_for(method: str) -> RowSpec:
    if method not in ROWS:
        raise DatarightsError(f"method {method!r} keeps no per-image rows, so it cannot use a store "
                              f"(methods with a store: {', '.join(sorted(ROWS))})")
    return ROWS[method]


def work_keys(root: str | Path, metas: list[dict]) -> list[str]:
    """Each training row's content key: sha256 of its image file's sha256 and its caption."""
    root = Path(root)
    return [hashlib.sha256(f"{file_sha256(root / m['file_name'])}\n{m['text']}".encode()).hexdigest()
            for m in metas]


def key_seed(key: str) -> int:
    """The noise stream of a row: its key's first 60 bits (runtime.draws seeds (seed, this))."""
    return int(key[:15], 16)


@dataclass
class Shard:
    id: str
    rows: np.ndarray      # [n, k] (memory-mapped)
    keys: list[str]
    counts: np.ndarray    # [n] int64

    def matvec(self, v: np.ndarray, block: int = 8192) -> np.ndarray:
        """rows . v [n] (float64), `block` rows at a time through a map of the shard's file that is closed
        when done, so that the rows read do not stay resident in this process (the page cache keeps
        them warm for the next query)."""
        n, k = self.rows.shape
        out = np.empty(n, dtype=np.float64)
        try:
            with open(self.rows.filename, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):              # removed, or emptied, since the store was opened
            raise DatarightsError(f"store shard {self.rows.filename} is gone or empty: sync the store again") from None
        try:
            try:
                rows = np.frombuffer(mm, dtype=self.rows.dtype, count=n * k, offset=self.rows.offset).reshape(n, k)
            except ValueError:
                raise DatarightsError(f"store shard {self.rows.filename} was cut short: sync the store again") from None
            for s in range(0, n, block):
                out[s:s + block] = rows[s:s + block].astype(np.float32, copy=False) @ v
            del rows
        finally:
            with contextlib.suppress(BufferError):   # a view still held by an exception's frame: unmapped when freed
                mm.close()
        return out


@dataclass
class SyncReport:
    added: int = 0
    deleted: int = 0
    recounted: int = 0
    kept: int = 0
    dropped_shards: list[str] = field(default_factory=list)
    gram_rebuilt: bool = False
    index: str = ""
    """What happened to the index: "" (none kept), "kept", "built", "rebuilt (damaged)" or "dropped"."""
    fit: str = ""
    """What happened to the whole-set fit (`RowSpec.fit`): "" (the method has none), "fitted", "refitted",
    "refitted (damaged)" or "kept (N of M works changed since)"."""
    seconds: float = 0.0

    def line(self) -> str:
        s = f"store: {self.added} rows added, {self.deleted} deleted, {self.kept} kept"
        if self.recounted:
            s += f", {self.recounted} recounted"
        if self.dropped_shards:
            s += f"; {len(self.dropped_shards)} damaged shard(s) dropped and recomputed"
        if self.gram_rebuilt:
            s += "; Gram matrix recomputed"
        if self.index and self.index != "kept":
            s += f"; index {self.index}"
        if self.fit:
            s += f"; curvature {self.fit}"
        return s


class RowStore:
    """A store folder opened for one method, model and config (see the module docstring)."""

    def __init__(self, root: str | Path, meta: dict, dtype: str = "float32", shard_rows: int = 4096):
        if dtype not in DTYPES:
            raise DatarightsError(f"store dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
        self.dtype = dtype
        self.shard_rows = shard_rows
        self._open()

    # ------------------------------------------------------------------ reading
    def _manifest(self) -> dict | None:
        p = self.root / MANIFEST
        if not p.exists():
            return None
        try:
            man = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(man, dict) or man.get("version") != STORE_VERSION:
                raise ValueError
            return man
        except (OSError, ValueError):
            raise DatarightsError(f"{p} is not a datarights store manifest (damaged, or of another version)") from None

    def _open(self, trusted: frozenset[str] = frozenset()) -> None:
        """Read the manifest and check every file against its checksum; damaged shards are left out.

        `trusted`: ids of files this process has just checked or written (after an update), whose
        checksums are not computed again."""
        self.shards: list[Shard] = []
        self.entries: dict[str, dict] = {}
        self.dropped: list[str] = []
        self.gram: np.ndarray | None = None
        self.gram_id: str | None = None
        self.gram_entry: dict | None = None   # the manifest's entry of a Gram matrix that checked out
        self.sum: np.ndarray | None = None    # [k + 1]: sum of count x row, then the sum of counts
        self.gram_damaged = False
        self.index_entry: dict | None = None
        self.index_damaged = False
        self.fit_entry: dict | None = None
        self.fitted: dict[str, np.ndarray] | None = None
        self.fit_damaged = False
        self._index = None
        if self.root.exists() and not self.root.is_dir():
            raise DatarightsError(f"store {self.root} is a file, not a folder")
        man = self._manifest()
        if man is None:
            if self.root.exists() and any(p.name != ".locks" for p in self.root.iterdir()):
                raise DatarightsError(f"store folder {self.root} is not empty and holds no store: give a new or an empty folder")
            self.where = {}
            return
        if man["meta"] != self.meta:
            diff = sorted(k for k in set(man["meta"]) | set(self.meta) if man["meta"].get(k) != self.meta.get(k))
            raise DatarightsError(f"store {self.root} holds rows made with another {', '.join(diff)}: give another folder")
        if man["dtype"] != self.dtype:
            raise DatarightsError(f"store {self.root} keeps {man['dtype']} rows, not {self.dtype}")
        rows_dir = self.root / "rows"
        for entry in man["shards"]:
            try:
                files = {part: rows_dir / f"{entry['id']}.{part}.npy" for part in ("rows", "keys", "counts")}
                if entry["id"] not in trusted and any(_sha(files[p]) != entry["sha256"][p] for p in files):
                    raise ValueError("checksum")
                rows = np.load(files["rows"], mmap_mode="r")
                keys = [k.decode() for k in np.load(files["keys"]).tolist()]
                counts = np.load(files["counts"])
                if rows.ndim != 2 or not len(rows) == len(keys) == len(counts) or str(rows.dtype) != self.dtype:
                    raise ValueError("shape")
            except (OSError, ValueError, KeyError, EOFError):
                self.dropped.append(entry["id"])
                continue
            self.entries[entry["id"]] = entry
            self.shards.append(Shard(entry["id"], rows, keys, counts))
        if man["gram"] is not None:
            try:
                g = rows_dir / f"{man['gram']['id']}.gram.npy"
                if man["gram"]["id"] not in trusted and _sha(g) != man["gram"]["sha256"]:
                    raise ValueError("checksum")
                self.gram = np.load(g)
                sm = rows_dir / f"{man['gram']['id']}.sum.npy"   # a store made before the sums: made by the next sync
                if man["gram"]["id"] not in trusted and _sha(sm) != man["gram"]["sum_sha256"]:
                    raise ValueError("checksum")
                self.sum = np.load(sm)
                self.gram_id = man["gram"]["id"]
                self.gram_entry = man["gram"]
            except (OSError, ValueError, KeyError, TypeError):
                self.gram_damaged = True
        elif man["shards"]:
            self.gram_damaged = True
        if man.get("index") is not None:
            self.index_entry = man["index"]
            p = self.index_path()
            if man["index"]["id"] not in trusted and (not p.exists() or _sha(p) != man["index"]["sha256"]):
                self.index_damaged = True
        if man.get("fit") is not None:
            self.fit_entry = man["fit"]
            try:
                p = rows_dir / f"{man['fit']['id']}.fit.npz"
                if man["fit"]["id"] not in trusted and _sha(p) != man["fit"]["sha256"]:
                    raise ValueError("checksum")
                with np.load(p) as z:
                    self.fitted = {k: z[k] for k in z.files}
            except (OSError, ValueError, KeyError, EOFError):
                self.fit_damaged = True
        if self.dropped:
            self.gram_damaged = True   # it holds rows that can no longer be read, so cannot be subtracted
            self.index_damaged = self.index_entry is not None
        self.where = {k: (s, i) for s, sh in enumerate(self.shards) for i, k in enumerate(sh.keys)}

    def index_path(self) -> Path:
        return self.root / "rows" / f"{self.index_entry['id']}.index.usearch"

    @property
    def has_index(self) -> bool:
        """Whether a usable index is kept (asked for, and not damaged)."""
        return self.index_entry is not None and not self.index_damaged

    @property
    def k(self) -> int | None:
        return self.shards[0].rows.shape[1] if self.shards else None

    def counts(self) -> dict[str, int]:
        return {k: int(sh.counts[i]) for sh in self.shards for i, k in enumerate(sh.keys)}

    def __len__(self) -> int:
        return len(self.where)

    def row(self, key: str) -> np.ndarray:
        s, i = self.where[key]
        return np.asarray(self.shards[s].rows[i])

    @staticmethod
    def _gram_of(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sum of w r r^T [k, k], [sum of w r, sum of w] [k + 1]) of some rows."""
        r = np.asarray(rows, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        return (r * w[:, None]).T @ r, np.append(w @ r, w.sum())

    # ------------------------------------------------------------------ writing
    def _save(self, name: str, arr: np.ndarray) -> str:
        p = self.root / "rows" / name
        with open(p, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        return file_sha256(p)

    def _write_shard(self, rows: np.ndarray, keys: list[str], counts: np.ndarray) -> dict:
        sid = uuid.uuid4().hex[:16]
        sums = {part: self._save(f"{sid}.{part}.npy", arr)
                for part, arr in (("rows", np.ascontiguousarray(rows, dtype=self.dtype)),
                                  ("keys", np.array([k.encode() for k in keys], dtype="S64")),
                                  ("counts", np.asarray(counts, dtype=np.int64)))}
        return {"id": sid, "rows": len(keys), "sha256": sums}

    def _commit(self, entries: list[dict], gram: tuple | None, index: dict | None, fit: dict | None = None,
                gram_entry: dict | None = None) -> frozenset[str]:
        """Write the Gram matrix and sums (or keep the files of `gram_entry`), replace the manifest;
        returns the ids now named (all checked)."""
        if gram is not None and entries:
            gid = uuid.uuid4().hex[:16]
            gram_entry = {"id": gid, "sha256": self._save(f"{gid}.gram.npy", np.asarray(gram[0], dtype=np.float64)),
                          "sum_sha256": self._save(f"{gid}.sum.npy", np.asarray(gram[1], dtype=np.float64))}
        write_json(self.root / MANIFEST, {"version": STORE_VERSION, "meta": self.meta, "dtype": self.dtype,
                                          "rows": sum(e["rows"] for e in entries), "shards": entries,
                                          "gram": gram_entry, "index": index, "fit": fit})
        keep = ({e["id"] for e in entries} | ({gram_entry["id"]} if gram_entry else set())
                | ({index["id"]} if index else set()) | ({fit["id"]} if fit else set()))
        for p in (self.root / "rows").glob("*.*"):   # files of earlier manifests and of interrupted writes
            if p.name.split(".")[0] not in keep:
                with contextlib.suppress(OSError):
                    p.unlink()
        return frozenset(keep)

    def update(self, add: dict[str, tuple[np.ndarray, int]], delete: set[str], recount: dict[str, int],
               index: bool | None = None) -> None:
        """Apply one change: new rows (key -> (row, count)), keys to delete, keys whose count changes.

        Shards that lose rows are rewritten without them; new rows go into new shards; the Gram
        matrix and sums move by the rank updates of exactly those rows (recomputed from every row
        instead when they were damaged); the index, if kept, gets the new rows and loses the deleted
        ones (built from every row when asked for, or when it was damaged). `index`: True asks for
        one, False drops it, None keeps what the store has. Nothing the store shows changes until
        the manifest is replaced.
        """
        (self.root / "rows").mkdir(parents=True, exist_ok=True)
        incremental = not self.gram_damaged
        gram = (self.gram.copy(), self.sum.copy()) if incremental and self.gram is not None else None
        keep_index = self.index_entry is not None if index is None else index
        moved = self._index_moves(delete) if keep_index and self.has_index else None

        def bump(rows: np.ndarray, weights: np.ndarray) -> None:
            nonlocal gram
            if incremental and len(weights):
                g = self._gram_of(rows, weights)
                gram = g if gram is None else (gram[0] + g[0], gram[1] + g[1])

        entries = []
        for sh in self.shards:
            gone = [i for i, k in enumerate(sh.keys) if k in delete]
            changed = [i for i, k in enumerate(sh.keys) if k in recount]
            if not gone and not changed:
                entries.append(self.entries[sh.id])
                continue
            bump(sh.rows[gone], -sh.counts[gone])
            bump(sh.rows[changed], [recount[sh.keys[i]] - sh.counts[i] for i in changed])
            keep = [i for i in range(len(sh.keys)) if sh.keys[i] not in delete]
            if keep:
                counts = np.array([recount.get(sh.keys[i], sh.counts[i]) for i in keep])
                entries.append(self._write_shard(np.asarray(sh.rows[keep]), [sh.keys[i] for i in keep], counts))
        keys = list(add)
        for s in range(0, len(keys), self.shard_rows):
            part = keys[s:s + self.shard_rows]
            rows = np.stack([np.asarray(add[k][0], dtype=self.dtype) for k in part])
            counts = np.array([add[k][1] for k in part])
            bump(rows, counts)                         # from the rows as stored (float16 rounding included)
            entries.append(self._write_shard(rows, part, counts))
            if moved is not None:
                moved.add(np.array([key_seed(k) for k in part], dtype=np.uint64), rows.astype(np.float32))
        if not incremental:                            # from every row as written
            gram = None
            for rows, counts, _ in self._entry_rows(entries):
                g = self._gram_of(rows, counts)
                gram = g if gram is None else (gram[0] + g[0], gram[1] + g[1])
        index_entry = None
        if keep_index and entries:
            if moved is None:                          # asked for now, or damaged: from every row as written
                moved = self._new_index(self.k or len(next(iter(add.values()))[0]))
                for rows, _, keys in self._entry_rows(entries):
                    moved.add(np.array([key_seed(k) for k in keys], dtype=np.uint64), np.asarray(rows, np.float32))
            iid = uuid.uuid4().hex[:16]
            p = self.root / "rows" / f"{iid}.index.usearch"
            moved.save(str(p))
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            index_entry = {"id": iid, "sha256": file_sha256(p), "rows": len(moved), "library": "usearch HNSW"}
        self._index = None
        fit = self.fit_entry if not self.fit_damaged else None
        if fit is not None:                            # the works that changed since the fit
            gone = sum(k in self.where for k in delete)
            fit = {**fit, "changed": int(fit["changed"]) + len(add) + gone + len(recount)}
        self._open(trusted=self._commit(entries, gram, index_entry, fit))   # re-read what was written (checked)

    def set_fit(self, arrays: dict[str, np.ndarray], works: int) -> None:
        """Keep a new whole-set fit (`RowSpec.fit`) made over `works` works; nothing else changes."""
        (self.root / "rows").mkdir(parents=True, exist_ok=True)
        fid = uuid.uuid4().hex[:16]
        p = self.root / "rows" / f"{fid}.fit.npz"
        with open(p, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        entry = {"id": fid, "sha256": file_sha256(p), "works": int(works), "changed": 0}
        entries = [self.entries[sh.id] for sh in self.shards]
        self._index = None
        self._open(trusted=self._commit(entries, None, self.index_entry, entry,
                                        gram_entry=None if self.gram_damaged else self.gram_entry))

    def _entry_rows(self, entries: list[dict], block: int = 4096):
        """(rows, counts, keys) of the shards `entries` name, in blocks (memory-mapped rows)."""
        for e in entries:
            rows = np.load(self.root / "rows" / f"{e['id']}.rows.npy", mmap_mode="r")
            counts = np.load(self.root / "rows" / f"{e['id']}.counts.npy")
            keys = [k.decode() for k in np.load(self.root / "rows" / f"{e['id']}.keys.npy").tolist()]
            for s in range(0, len(counts), block):
                yield rows[s:s + block], counts[s:s + block], keys[s:s + block]

    def _new_index(self, k: int):
        if spec_for(self.meta["method"]).kernel:
            raise DatarightsError(f"an index serves feature and pixel rows; {self.meta['method']} scores go through "
                                  "its kernel, so every row is scored")
        Index = usearch_index()
        # HNSW settings of the ann benchmark: connectivity 16, construction beam 128
        return Index(ndim=k, metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                     expansion_search=INDEX_SEARCH_BEAM)

    def _index_moves(self, delete: set[str]):
        """The kept index, loaded to be changed, less the deleted works' labels."""
        idx = self._new_index(self.k)
        idx.load(str(self.index_path()))
        gone = [key_seed(k) for k in delete if k in self.where]
        if gone:
            idx.remove(np.array(gone, dtype=np.uint64))
        return idx

    def search(self, v: np.ndarray, m: int) -> list[str]:
        """The keys of (about) the m rows with the largest rows . v, from the index."""
        if not self.has_index:
            raise DatarightsError(f"store {self.root} keeps no usable index: run `datarights store --index` on it")
        if self._index is None:
            self._index = self._new_index(self.k)
            self._index.view(str(self.index_path()))   # memory-mapped, read-only
            self._index.expansion_search = max(INDEX_SEARCH_BEAM, m)
            self._label_key = {key_seed(k): k for k in self.where}
        found = self._index.search(np.asarray(v, dtype=np.float32), m)
        return [self._label_key[int(lab)] for lab in found.keys]

    # ------------------------------------------------------------------ scoring
    def solve(self, q: np.ndarray, lam: float) -> np.ndarray:
        """(G + lam mean(diag G) I)^-1 q, the inverse made once per Gram matrix and lam in this process."""
        key = (self.gram_id, float(lam))
        inv = _KERNELS.get(key) if self.gram_id is not None else None
        if inv is None:
            g = self.gram
            inv = np.linalg.inv(g + lam * np.diagonal(g).mean() * np.eye(len(g)))
            if self.gram_id is not None:
                if len(_KERNELS) >= 2:
                    _KERNELS.clear()
                _KERNELS[key] = inv
        return inv @ q

    def scores(self, v: np.ndarray, keys: list[str]) -> np.ndarray:
        """rows . v for each key, in the order given (shard by shard over the memory-mapped rows)."""
        missing = sum(k not in self.where for k in keys)
        if missing:
            raise DatarightsError(f"store {self.root} lacks {missing} of this training set's works: sync it first")
        v = np.asarray(v, dtype=np.float32)
        per_shard = [sh.matvec(v) for sh in self.shards]
        return np.array([per_shard[s][i] for s, i in (self.where[k] for k in keys)])


def store_meta(model, method: str, cfg) -> dict:
    """What a store's rows were made with; a store opened with other values is refused."""
    from ..models import model_hash
    from . import state_config

    made_by = {"resolution": model.resolution} if spec_for(method).model_free else {"model": model_hash(model)}
    return {"method": method, **made_by, "config": state_config(cfg)}


@dataclass
class FolderRows:
    """A training imagefolder seen row by row: metadata, content keys and owners without reading its
    images; `load(rows)` reads just those rows' images into a TrainingSet (the store's streamed path)."""

    root: Path
    metas: list[dict]
    resolution: int

    @classmethod
    def open(cls, root: str | Path, resolution: int) -> "FolderRows":
        from ..world.generate import metadata_rows

        rows = metadata_rows(Path(root))
        if not rows:
            raise DatarightsError(f"{Path(root) / 'metadata.jsonl'} lists no images")
        return cls(Path(root), [m for _, m, _ in rows], resolution)

    def __len__(self) -> int:
        return len(self.metas)

    @functools.cached_property
    def keys(self) -> list[str]:
        return work_keys(self.root, self.metas)

    @property
    def files(self) -> list[str]:
        return [m["file_name"] for m in self.metas]

    @property
    def owners(self) -> list[str]:
        return [m.get("owner", "unknown") for m in self.metas]

    def images_of(self, rows: list[int]) -> torch.Tensor:
        from ..world.generate import read_image

        out = [read_image(self.root / self.metas[i]["file_name"], self.resolution) for i in rows]
        return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2).copy())

    def load(self, model, rows: list[int], pixels_only: bool = False):
        """Those rows as a TrainingSet. `pixels_only`: for a model-free method (pixel, feature), which reads
        the pixels only: no model-space encoding (a VAE pass on a latent model) and no text states."""
        from ..world import ImageFolder
        from .base import TrainingSet, load_training_set

        folder = ImageFolder(self.root, self.images_of(rows).numpy(), [self.metas[i] for i in rows])
        if pixels_only:
            return TrainingSet(folder, torch.empty(0, device=model.device), torch.empty(0, device=model.device),
                               torch.empty(0, dtype=torch.long, device=model.device), "")
        return load_training_set(model, folder)


def sync(model, train, method: str, cfg, root: str | Path, dtype: str = "float32", progress=True,
         keys: list[str] | None = None, featurize: Callable | None = None,
         index: bool | None = None, refit: bool = False) -> tuple[RowStore, SyncReport]:
    """Bring the store at `root` to exactly this training set: compute the rows it lacks (in batches),
    delete those of works that left, recount duplicated works. `cfg` is the resolved config.

    `train` is a TrainingSet (in memory) or a FolderRows (streamed: each batch's images are read
    when its rows are computed, so the set is never in memory whole). New rows are committed every
    `shard_rows`, so an interrupted sync keeps what it made and the next one resumes from there.
    `featurize(train, idx, seeds)` replaces the method's own (e.g. one that farms each batch out to
    workers); it must return the same rows. `index`: True keeps an approximate index of the rows
    (feature, pixel; built now if absent), False drops it, None keeps what the store has.
    A method with a whole-set fit (`RowSpec.fit`: `ekfac`, `kfac`, `abu-fast`) fits it over every row
    of `train` when the store has none, when it is damaged, when more than `REFIT_SHARE` of its works changed
    since, or with `refit`; otherwise the kept fit serves.
    """
    import time

    from .. import runtime

    t0 = time.time()
    spec = spec_for(method)
    if spec.check is not None:
        spec.check(cfg)
    if index:
        if spec.kernel:
            raise DatarightsError(f"an index serves feature and pixel rows; {method} scores go through its kernel, "
                                  "so every row is scored")
        usearch_index()                      # says how to install it before any work
    root = Path(root)
    keys = train.keys if keys is None else keys
    want = Counter(keys)
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    streamed = isinstance(train, FolderRows)
    make = featurize or (lambda t, idx, seeds: spec.featurize(model, t, cfg, idx, seeds))
    with build_lock(root, "store"):          # one writer at a time (released by the OS if its holder dies)
        store = RowStore(root, store_meta(model, method, cfg), dtype)
        rep = SyncReport(dropped_shards=list(store.dropped), gram_rebuilt=store.gram_damaged)
        have = store.counts()
        delete = {k for k in have if k not in want}
        recount = {k: want[k] for k in have if k in want and want[k] != have[k]}
        missing = [k for k in want if k not in have]
        rep.deleted, rep.recounted, rep.kept = len(delete), len(recount), len(have) - len(delete)
        had = store.index_entry is not None
        wants = had if index is None else index
        rep.index = ("" if not wants and not had else "dropped" if not wants else "built" if not had
                     else "rebuilt (damaged)" if store.index_damaged else "kept")
        if delete or recount or store.dropped or store.gram_damaged or rep.index in ("built", "rebuilt (damaged)", "dropped"):
            store.update({}, delete, recount, index=wants)
        bs = _batch_size(model, method, cfg)
        bar = runtime.progress_bar(progress and bool(missing), len(missing), f"{method} store rows")
        add: dict = {}
        for s in range(0, len(missing), bs):
            part = missing[s:s + bs]
            rows_of = [first[k] for k in part]
            if streamed:
                t, idx = train.load(model, rows_of, spec.model_free), torch.arange(len(part), device=model.device)
            else:
                t, idx = train, torch.tensor(rows_of, device=model.device)
            rows = make(t, idx, [key_seed(k) for k in part]).detach().float().cpu().numpy()
            add.update((k, (r, want[k])) for k, r in zip(part, rows))
            if len(add) >= store.shard_rows or s + bs >= len(missing):
                store.update(add, set(), {}, index=wants)
                rep.added += len(add)
                add = {}
            bar.update(len(part))
        bar.close()
        if spec.fit is not None:
            _sync_fit(model, train, keys, spec, cfg, store, rep, refit, progress)
        rep.seconds = time.time() - t0
        return store, rep


def _sync_fit(model, train, keys: list[str], spec: RowSpec, cfg, store: RowStore, rep: SyncReport, refit: bool,
              progress: bool) -> None:
    """Refit the store's whole-set state if it is missing, damaged or stale (see `sync`), else keep it."""
    e = store.fit_entry
    usable = e is not None and not store.fit_damaged and store.fitted is not None
    if usable and not refit and e["changed"] <= REFIT_SHARE * e["works"]:
        rep.fit = f"kept ({e['changed']} of {e['works']} works changed since)"
        return
    rep.fit = "fitted" if e is None else "refitted" if usable else "refitted (damaged)"
    store.set_fit(spec.fit(model, train, [key_seed(k) for k in keys], cfg, progress), len(set(keys)))


def set_batches(model, train, b: int, seeds: list[int] | None = None):
    """Every row of a training set, b at a time: (a TrainingSet, row indices into it, the rows' draw
    seeds). `train` in memory, or a FolderRows whose batch is read when it is reached; seeds default
    to the row numbers (the in-memory path's draws), else the store's content seeds."""
    for s in range(0, len(train), b):
        rows = list(range(s, min(s + b, len(train))))
        part = rows if seeds is None else [seeds[i] for i in rows]
        if isinstance(train, FolderRows):
            yield train.load(model, rows), torch.arange(len(rows), device=model.device), part
        else:
            yield train, torch.tensor(rows, device=model.device), part


def _batch_size(model, method: str, cfg) -> int:
    from .. import runtime

    spec = spec_for(method)
    if spec.batch is not None:
        return spec.batch(model, cfg)
    return 512 if model.vae is None else max(1, runtime.rows_that_fit(model, backward=False))


def store_scores(model, train, store: RowStore, query, method: str, cfg, keys: list[str] | None = None) -> torch.Tensor:
    """The method's scores of every training row, from the store's rows ([N], the training set's order)."""
    spec = spec_for(method)
    keys = train.keys if keys is None else keys
    q = _query_vector(model, train, store, query, spec, cfg)
    if spec.kernel:
        q = store.solve(q, spec.lam(cfg))
    return torch.from_numpy(store.scores(q, keys)).float()


def _query_vector(model, train, store: RowStore, query, spec: RowSpec, cfg) -> np.ndarray:
    if spec.fit is None:
        return spec.query(model, train, query, cfg).detach().double().cpu().numpy()
    if store.fitted is None:
        raise DatarightsError(f"store {store.root} keeps no usable curvature fit: sync it first")
    return spec.query(model, train, query, cfg, store.fitted).detach().double().cpu().numpy()


def approximate_scores(model, train, store: RowStore, query, method: str, cfg, candidates: int,
                       keys: list[str] | None = None) -> dict:
    """Scores of the index's top `candidates` works only, with what owner shares need of the rest.

    Returns rows (training positions of every copy of a candidate work), their exact scores, and
    center = (mean, standard deviation) of *all* N scores, exact from the kept sums and Gram matrix:
    with W = sum of counts, mu = sum(w r) / W and q the query vector, mean = mu . q and
    var = (q^T G q / W - mean^2) W / (W - 1) (the in-memory path's unbiased spread over its N rows).
    """
    spec = spec_for(method)
    keys = train.keys if keys is None else keys
    q = _query_vector(model, train, store, query, spec, cfg)
    found = set(store.search(q, candidates))
    rows = [i for i, k in enumerate(keys) if k in found]
    scores = np.array([float(np.asarray(store.row(keys[i]), dtype=np.float64) @ q) for i in rows])
    w = store.sum[-1]
    mean = float(store.sum[:-1] @ q / w)
    var = max(float(q @ store.gram @ q / w - mean ** 2) * w / max(w - 1, 1), 0.0)
    return {"rows": rows, "scores": torch.from_numpy(scores).float(), "center": (mean, math.sqrt(var)),
            "candidates": len(found)}


def tail_share_bound(scores: torch.Tensor, center: tuple[float, float], temperature: float, others: int) -> float:
    """An upper bound on the owner-share mass of the `others` rows an approximate query did not score.

    Each of them scores at most the lowest candidate's score (were the index's top exact), so each
    weighs at most exp(z_min / T) in the softmax, against the candidates' sum of exp(z / T)."""
    if others <= 0 or not len(scores):
        return 0.0
    z = (scores.double() - center[0]) / (center[1] + 1e-12) / temperature
    log_tail = math.log(others) + float(z.min())
    log_cand = float(torch.logsumexp(z, 0))
    return 1.0 / (1.0 + math.exp(log_cand - log_tail))
