"""The ownership loop as one Python API: register works, look images up, opt out, erase and
certify, log paid generations, and tell each owner what they earned.

Every method that writes does so in one transaction (`Store.transaction`): a failure leaves the
ledger as it was. Owner-scoped reads and writes take the acting owner and refuse another owner's
rows with `NotYours` (the web layer answers 404 for it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import DatarightsError, NotFound
from ..files import file_sha256, open_rgb, pid_alive, sweep_stale
from ..limits import (MAX_CAPTION, MAX_CONCEPT, MAX_ID, MAX_LABEL, MAX_NAME, MAX_PAGE, MAX_PROMPT, MAX_TOKEN,
                      MAX_WORKS_PER_OPTOUT, check_count, check_id, check_period, check_text)
from . import money, rules, signing
from .certificate import standing
from .db import Store, open_engine, shown, url_of
from .phash import phash
from .rules import Conflict, NeedsConfirmation, NotAllowed  # noqa: F401  (the errors the rules raise)
from .schema import (POLICIES, AttributionEvent, Certificate, Concept, Dataset, DatasetWork, Job, Model, OptOut,
                     OptOutEvent, Owner, Payout, Work, now)

NEAR_BITS = 10
"""A perceptual hash within this many of 64 bits is a near copy (if its colours match too)."""
NEAR_COLORS = 32.0
"""...and the mean absolute difference of the 4x4 colour thumbnails is at most this (of 255): the hash
sees grey levels only, so a red fish and a blue one of the same shape hash alike."""
SIMILAR = 0.97
"""Cosine similarity of judge features above which a work is reported as similar."""
LABEL_KEYS = ("kind", "object", "category", "color", "style", "character", "memorized", "composition")
PAYMENT_METHOD = "dtrak"
"""The default method of paid generations (named on every statement). Of the methods that ask the
model, D-TRAK gives the true owner the largest share in World 2's owner evaluation (0.62 [0.52, 0.72]
on 64 generic queries whose source the judge reads; the caption-only baseline, which reads only the
prompt's words and is refused for payments, 0.04: BENCHMARKS.md). Pixel similarity scores higher
there only because World 2's signatures are pixels. Its query costs 0.08 s on the shipped model."""


class NotYours(NotFound):
    """A row that exists but belongs to another owner (or does not exist): the same answer for both."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=timezone.utc).isoformat(timespec="seconds")


class Ledger:
    """A ledger file (or database URL) and its signing key.

    Args:
        location: an SQLite file path or a postgresql:// URL.
        create: create a new ledger if nothing exists at `location` (never over an existing file).
        key: the Ed25519 signing key file (default: `<ledger file>.key`, made on first use).
        readonly: open for reading only (also the case for a file this process may not write).
        home: for a database URL, the folder that keeps its signing key (`ledger.key`) and its edited
            models (`ledger-models/`); default $DATARIGHTS_LEDGER_HOME. (An SQLite ledger keeps
            both beside its file.)
    """

    def __init__(self, location: str | Path, create: bool = False, key: str | Path | None = None,
                 readonly: bool = False, home: str | Path | None = None):
        self.location = str(location)
        _, path = url_of(location)
        self.path = path
        engine, self.readonly = open_engine(location, create=create, readonly=readonly)
        self.store = Store(engine, self.readonly, shown(location))
        home = home or os.environ.get("DATARIGHTS_LEDGER_HOME")
        self.home = Path(home) if path is None and home else None
        self.key_path = Path(key) if key else (Path(str(path) + ".key") if path else
                                               (self.home / "ledger.key" if self.home else None))
        self.root = (path.parent / (path.stem + "-models")) if path else \
            ((self.home / "ledger-models") if self.home else Path.cwd() / "ledger-models")
        self._index = None
        self._attribution = None
        if not self.readonly:
            self.recover()

    def inputs(self) -> list[Path]:
        """The files and folders this ledger consists of, which no output may replace: the database
        (and its journal files), the signing key, the edited models' folder."""
        out = [p for p in (self.path, self.key_path, self.root) if p is not None]
        if self.path is not None:
            out += [Path(str(self.path) + sfx) for sfx in ("-wal", "-shm", "-journal")]
        return out

    # ------------------------------------------------------------------ paths
    def store_of(self, model_id: int, dataset: str, method: str) -> Path:
        """Where paid generations keep a method's per-work rows (`attribute.store`), synced with the
        training set on every paid generation so that only rows that changed are computed. Rows that
        depend on the weights (trak, dtrak, ekfac, kfac, abu-fast) are the model's; rows of the images
        alone (pixel, feature) are the dataset's, shared by every version and every model trained on it:
        a new version or an opt-out's edited model costs only the works that came or went. (The shipped model on its own
        world needs no store: its state ships with the package.)"""
        from ..attribute.store import spec_for

        if spec_for(method).model_free:
            return self.root / "stores" / f"dataset-{hashlib.sha256(dataset.encode()).hexdigest()[:16]}" / method
        return self.root / "stores" / f"model-{int(model_id)}" / method

    def stored(self, path: str | Path) -> str:
        """How the ledger records a folder: relative to the ledger file's folder when it lies inside
        it (so a ledger moves together with its edited models), else absolute."""
        p = Path(path).resolve()
        if self.path is not None and p.is_relative_to(self.path.resolve().parent):
            return str(p.relative_to(self.path.resolve().parent))
        return str(p)

    def resolved(self, stored: str | None) -> str | None:
        """The folder a recorded path names ('default': the shipped model)."""
        if stored in (None, "default") or os.path.isabs(stored) or self.path is None:
            return stored
        return str(self.path.resolve().parent / stored)

    def public(self, stored: str | None) -> str | None:
        """How a recorded folder is shown to web clients: relative to the ledger's folder (as stored)
        when it lies inside it, else only its name; never where the server keeps other files."""
        if stored in (None, "default") or not os.path.isabs(stored):
            return stored
        return "…/" + Path(stored).name

    def model_folders(self) -> list[str]:
        """Every registered model's folder (outputs must never replace one)."""
        with self.store.read() as s:
            return [self.resolved(p) for p in s.scalars(select(Model.path)) if p != "default"]

    def load(self, stored: str):
        from ..models import load_model
        return load_model(None if stored == "default" else self.resolved(stored))

    # ------------------------------------------------------------------ owners and tokens
    def owner(self, s, name: str) -> Owner:
        o = s.scalar(select(Owner).where(Owner.name == name)) if isinstance(name, str) and len(name) <= MAX_NAME \
            else None
        if o is None:
            raise DatarightsError(f"unknown owner {str(name)[:200]!r}", hint="see `datarights ledger owners`")
        return o

    def owner_by_token(self, token: str) -> dict:
        """The owner a token belongs to; an unknown token is refused (no hint which part was wrong)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN:
            raise DatarightsError("unknown token")
        with self.store.read() as s:
            o = s.scalar(select(Owner).where(Owner.token_hash == hash_token(token or "")))
            if o is None:
                raise DatarightsError("unknown token")
            return {"id": o.id, "name": o.name, "role": o.role}

    def token_hash_of(self, owner_id: int) -> str | None:
        """The stored hash of an owner's current token (None: no token, or no such owner). The web page
        binds its sessions to it, so that reissuing a token signs out every session of the old one."""
        if not 1 <= owner_id <= MAX_ID:
            return None
        with self.store.read() as s:
            o = s.get(Owner, owner_id)
            return None if o is None else o.token_hash

    def issue_token(self, name: str, admin: bool = False) -> str:
        """A new API token for an owner (or a new admin); shown once, stored only as its sha256."""
        name = check_text(name, "the admin's name" if admin else "the owner's name", MAX_NAME)
        token = secrets.token_urlsafe(24)
        with self.store.transaction() as s:
            o = s.scalar(select(Owner).where(Owner.name == name))
            if o is None:
                if not admin:
                    raise DatarightsError(f"unknown owner {name!r}", hint="see `datarights ledger owners`")
                o = Owner(name=name, role="admin")
                s.add(o)
            elif admin and o.role != "admin":
                raise DatarightsError(f"{name!r} is an owner of works; an admin needs a name of its own")
            o.token_hash = hash_token(token)
        return token

    def owners(self) -> list[dict]:
        with self.store.read() as s:
            counts = dict(s.execute(select(Work.owner_id, func.count()).group_by(Work.owner_id)).all())
            return [{"id": o.id, "name": o.name, "role": o.role, "works": counts.get(o.id, 0),
                     "has_token": o.token_hash is not None}
                    for o in s.scalars(select(Owner).order_by(Owner.name))]

    # ------------------------------------------------------------------ datasets and models
    def import_dataset(self, data: str | Path, model: str | Path | None = None, name: str | None = None,
                       log=lambda s: None, make_default: bool = False, rows: list[dict] | None = None) -> dict:
        """Register an imagefolder's works (metadata.jsonl with `file_name`, `text`, `owner`, optional
        `policy`) as a dataset version, and the model trained on it.

        Works are identified by the SHA-256 of their file: a content already registered (here or in
        another dataset) is the same work; a second row with the same content in this folder is
        recorded as a duplicate; the same content claimed by another owner is a conflict (the work
        keeps its first owner) and is listed in the result. Importing the same folder again makes no
        new version.

        `model`: the model trained on it (a folder; None: the shipped world model, but only into a
        ledger that has no model yet: a later import without a model registers the dataset alone).
        The first model of a ledger becomes its default; later ones only with `make_default`.
        `rows`: the folder as `read_dataset` read it (the CLI reads it before opening the ledger).
        """
        root = Path(data)
        rows = read_dataset(root, log) if rows is None else rows
        name = check_text(name if name is not None else root.resolve().name, "the dataset's name", MAX_NAME)
        with self.store.read() as s:
            has_model = s.scalar(select(func.count()).select_from(Model)) > 0
        registered = None
        if model is not None or not has_model:
            registered = _model_identity(model)
            if registered["path"] != "default":
                registered["path"] = self.stored(registered["path"])
        for attempt in (0, 1):
            try:
                out = self._import_rows(root, rows, name, registered, make_default)
                break
            except IntegrityError:  # another import of the same new folder committed first: see its rows
                if attempt:
                    raise DatarightsError(f"another import of {root} ran at the same time; run this one again") from None
        self._index = None
        return out

    def _import_rows(self, root: Path, rows: list[dict], name: str, registered: dict | None,
                     make_default: bool) -> dict:
        content = hashlib.sha256("".join(r["sha256"] for r in rows).encode()).hexdigest()
        conflicts, new_works, new_owners = [], 0, 0
        with self.store.transaction() as s:
            ds = s.scalar(select(Dataset).where(Dataset.name == name, Dataset.content_sha256 == content))
            created = ds is None
            if created:
                version = (s.scalar(select(func.max(Dataset.version)).where(Dataset.name == name)) or 0) + 1
                ds = Dataset(name=name, version=version, source=str(root.resolve()), content_sha256=content,
                             images=len(rows), duplicates=0)
                s.add(ds)
                s.flush()
                owners = {o.name: o for o in s.scalars(select(Owner))}
                works = {w.sha256: w for w in s.scalars(select(Work).where(Work.sha256.in_([r["sha256"] for r in rows])))}
                first: dict[str, int] = {}
                for pos, r in enumerate(rows):
                    o = owners.get(r["owner"])
                    if o is None:
                        o = owners[r["owner"]] = Owner(name=r["owner"], role="owner")
                        s.add(o)
                        s.flush()
                        new_owners += 1
                    w = works.get(r["sha256"])
                    if w is None:
                        w = works[r["sha256"]] = Work(owner_id=o.id, sha256=r["sha256"], phash=r["phash"],
                                                      colors=r.get("colors"), caption=r["text"], policy=r["policy"],
                                                      labels=r["labels"])
                        s.add(w)
                        s.flush()
                        new_works += 1
                    elif w.owner_id != o.id:
                        conflicts.append({"file_name": r["file_name"], "claimed_by": r["owner"], "work": w.id})
                    dup = first.get(r["sha256"])
                    first.setdefault(r["sha256"], pos)
                    ds.duplicates += dup is not None
                    s.add(DatasetWork(dataset_id=ds.id, position=pos, work_id=w.id, file_name=r["file_name"],
                                      duplicate_of=dup))
            if created:
                s.flush()
                rules.refresh_concepts(s)
            model_id, default_id = None, s.scalar(select(Model.id).where(Model.is_default))
            if registered is not None:
                m = s.scalar(select(Model).where(Model.weights_sha256 == registered["weights_sha256"],
                                                 Model.dataset_id == ds.id))
                if m is None:
                    m = Model(dataset_id=ds.id, is_current=True, **registered)   # a base model: its own line
                    s.add(m)
                    s.flush()
                    m.line_id = m.id
                model_id = m.id
                if make_default or default_id is None:
                    _make_default(s, s.get(Model, rules.line_of(s, m)))
                    default_id = m.id
            if default_id is not None:     # the model the default line serves now
                default_id = rules.current(s, rules.line_of(s, s.get(Model, default_id))).id
            return {"dataset": ds.name, "version": ds.version, "dataset_id": ds.id, "new_version": created,
                    "images": ds.images, "duplicates": ds.duplicates, "new_works": new_works,
                    "new_owners": new_owners, "conflicts": conflicts, "model_id": model_id,
                    "default_model_id": default_id}

    def models(self, public: bool = False) -> list[dict]:
        """Every registered model: its line (the base model it descends from), whether it is the line's
        current model, and whether its line is the default."""
        with self.store.read() as s:
            default_line = s.scalar(select(Model.id).where(Model.is_default))
            return [{"id": m.id, "path": self.public(m.path) if public else self.resolved(m.path), "kind": m.kind,
                     "weights_sha256": m.weights_sha256, "dataset_id": m.dataset_id, "base_id": m.base_id,
                     "line": rules.line_of(s, m), "current": bool(m.is_current),
                     "default": rules.line_of(s, m) == default_line and bool(m.is_current),
                     "created_at": _iso(m.created_at)}
                    for m in s.scalars(select(Model).order_by(Model.id))]

    def set_default_model(self, model_id: int) -> dict:
        """Make a registered model's line the one opt-outs and paid generations use when none is named
        (its current model serves them)."""
        with self.store.transaction() as s:
            m = self._model(s, model_id, exact=True)
            root = s.get(Model, rules.line_of(s, m))
            _make_default(s, root)
            cur = rules.current(s, root.id)
            return {"default_model_id": cur.id, "line": root.id, "path": self.resolved(cur.path)}

    def _model(self, s, model_id: int | None, exact: bool = False) -> Model:
        """The model a request names: its line's current model (opt-outs are erased on top of it), or
        with `exact` that very model (a paid generation names the model that made the image). None:
        the default line."""
        if model_id is None:
            root = s.scalar(select(Model).where(Model.is_default))
            if root is None:
                raise DatarightsError("the ledger has no model yet",
                                      hint="register one with `datarights ledger import DATA --model M`")
            return rules.current(s, rules.line_of(s, root))
        m = s.get(Model, check_id(model_id, "model"))
        if m is None:
            raise NotFound(f"unknown model {model_id}", hint="see `datarights ledger models`")
        return m if exact else rules.current(s, rules.line_of(s, m))

    # ------------------------------------------------------------------ lookup
    def _works_index(self):
        """Hashes (and, for world datasets, judge features) of every registered work, built once."""
        if self._index is None:
            import numpy as np

            with self.store.read() as s:
                rows = s.execute(select(Work.id, Work.sha256, Work.phash, Work.colors)).all()
            colors = np.zeros((len(rows), 48), dtype=np.float32)
            known = np.zeros(len(rows), dtype=bool)
            for i, r in enumerate(rows):
                c = r[3]
                if c is None and (p := self.work_file(r[0])) is not None:   # a work registered before colours were
                    try:
                        c = colors_of(open_rgb(p)[0])
                    except DatarightsError:
                        c = None
                if c is not None and len(c) == 48:
                    colors[i], known[i] = np.frombuffer(c, dtype=np.uint8), True
            self._index = {"ids": np.array([r[0] for r in rows], dtype=np.int64),
                           "sha": {r[1]: r[0] for r in rows},
                           "phash": np.array([r[2] for r in rows], dtype=np.int64).view(np.uint64),
                           "colors": colors, "colors_known": known, "features": None}
        return self._index

    def _features(self):
        """Judge features of the registered works whose dataset folder is still on disk (lazily)."""
        import numpy as np
        import torch

        idx = self._works_index()
        if idx["features"] is None:
            from ..judge import load_judge

            judge = load_judge()
            with self.store.read() as s:
                rows = s.execute(select(DatasetWork.work_id, DatasetWork.file_name, Dataset.source)
                                 .join(Dataset, Dataset.id == DatasetWork.dataset_id)).all()
            seen, ids, imgs = set(), [], []
            for wid, fname, source in rows:
                p = Path(source) / fname
                if wid in seen or not p.is_file():
                    continue
                seen.add(wid)
                rgb, _ = open_rgb(p)
                ids.append(wid)
                imgs.append(np.asarray(rgb.resize((16, 16)), dtype=np.float32) / 255.0)
            feats = torch.zeros(0, 1)
            if imgs:
                x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
                with torch.no_grad():
                    feats = torch.nn.functional.normalize(torch.cat([judge.features(x[i:i + 512])
                                                                     for i in range(0, len(x), 512)]), dim=1)
            idx["features"] = (np.array(ids, dtype=np.int64), feats, judge)
        return idx["features"]

    def lookup(self, image: str | Path, limit: int = 10, features: bool = True, label: str | None = None,
               viewer: str | None = None) -> list[dict]:
        """Registered works that are this image (same bytes), a near copy (perceptual hash within
        NEAR_BITS bits and colours within NEAR_COLORS), or, for world-sized images, look alike in
        judge features (cosine >= SIMILAR); best first, each with its owner and the datasets and
        models it is in. `label`: how errors name the image (the web says "the uploaded image",
        never a server path).

        What a lookup reveals (`viewer`: the owner asking; None: the model owner, who sees all): that
        the image matches a registered work, how, whose it is and which datasets and models hold it.
        Another owner's work itself — its id, caption, hash, file name, image — stays theirs, as
        /api/works/{id} keeps it (404)."""
        import numpy as np

        check_count(limit, "the number of matches", 1, MAX_PAGE)
        path = Path(image)
        rgb, _ = open_rgb(path, label=label)
        sha, ph = file_sha256(path), phash(rgb)
        idx = self._works_index()
        found: dict[int, dict] = {}
        if sha in idx["sha"]:
            found[idx["sha"][sha]] = {"match": "exact", "distance_bits": 0}
        if len(idx["ids"]):
            x = np.bitwise_xor(idx["phash"], np.array([ph], dtype=np.int64).view(np.uint64))
            bits = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
            q = np.frombuffer(colors_of(rgb), dtype=np.uint8).astype(np.float32)
            off = np.abs(idx["colors"] - q).mean(1)
            near = (bits <= NEAR_BITS) & (~idx["colors_known"] | (off <= NEAR_COLORS))
            for i in np.argsort(np.where(near, bits, 99), kind="stable")[:limit]:
                if near[i] and int(idx["ids"][i]) not in found:
                    found[int(idx["ids"][i])] = {"match": "near copy", "distance_bits": int(bits[i])}
        if features and len(found) < limit and max(rgb.size) <= 64:
            import torch

            ids, feats, judge = self._features()
            if len(ids):
                q = np.asarray(rgb.resize((16, 16)), dtype=np.float32) / 255.0
                with torch.no_grad():
                    f = torch.nn.functional.normalize(judge.features(torch.from_numpy(q).permute(2, 0, 1)[None]), dim=1)[0]
                sim = (feats @ f).numpy()
                for i in np.argsort(-sim)[:limit]:
                    if sim[i] >= SIMILAR and int(ids[i]) not in found:
                        found[int(ids[i])] = {"match": "similar", "similarity": round(float(sim[i]), 4)}
        order = {"exact": 0, "near copy": 1, "similar": 2}
        ranked = sorted(found.items(), key=lambda kv: (order[kv[1]["match"]], kv[1].get("distance_bits", 0),
                                                        -kv[1].get("similarity", 0)))[:limit]
        with self.store.read() as s:
            out = []
            for wid, how in ranked:
                w = s.get(Work, wid)
                if viewer is not None and w.owner.name != viewer:          # another owner's work: that it is used
                    out.append({"owner": w.owner.name, **how, "yours": False,
                                "in": [{k: d[k] for k in ("dataset", "version", "models")} for d in self._where(s, wid)]})
                else:
                    out.append({"work_id": wid, "owner": w.owner.name, "caption": w.caption, "policy": w.policy,
                                "sha256": w.sha256, **how, "yours": viewer is not None, "in": self._where(s, wid)})
        return out

    def _where(self, s, work_id: int) -> list[dict]:
        rows = s.execute(select(Dataset.id, Dataset.name, Dataset.version, DatasetWork.file_name)
                         .join(DatasetWork, DatasetWork.dataset_id == Dataset.id)
                         .where(DatasetWork.work_id == work_id)).all()
        out = []
        for did, name, version, fname in rows:
            models = [m.id for m in s.scalars(select(Model).where(Model.dataset_id == did))]
            out.append({"dataset": name, "version": version, "file_name": fname, "models": models})
        return out

    # ------------------------------------------------------------------ an owner's rows
    def works(self, owner: str, limit: int = 1000, offset: int = 0) -> list[dict]:
        check_count(limit, "limit", 1, MAX_PAGE)
        check_count(offset, "offset", 0, MAX_ID)
        with self.store.read() as s:
            o = self.owner(s, owner)
            ws = s.scalars(select(Work).where(Work.owner_id == o.id).order_by(Work.id).limit(limit).offset(offset))
            return [{"id": w.id, "caption": w.caption, "policy": w.policy, "sha256": w.sha256, "labels": w.labels,
                     "in": self._where(s, w.id)} for w in ws]

    def work(self, owner: str, work_id: int) -> dict:
        work_id = check_id(work_id, "work")
        with self.store.read() as s:
            o = self.owner(s, owner)
            w = s.get(Work, work_id)
            if w is None or w.owner_id != o.id:
                raise NotYours(f"work {work_id} is not one of {owner!r}'s works")
            return {"id": w.id, "caption": w.caption, "policy": w.policy, "sha256": w.sha256, "labels": w.labels,
                    "in": self._where(s, w.id)}

    def work_file(self, work_id: int) -> Path | None:
        """The image file of a work in the first dataset folder that still has it."""
        if not 1 <= work_id <= MAX_ID:
            return None
        with self.store.read() as s:
            for fname, source in s.execute(select(DatasetWork.file_name, Dataset.source)
                                           .join(Dataset, Dataset.id == DatasetWork.dataset_id)
                                           .where(DatasetWork.work_id == work_id)):
                p = Path(source) / fname
                if p.is_file():
                    return p
        return None

    # ------------------------------------------------------------------ opt-out
    def optout(self, owner: str, works: list[int] | None = None, concept: str | None = None,
               anchor: str | None = None, model_id: int | None = None, confirm: bool = False) -> dict:
        """File an opt-out: by concept ("Blubbo"), or by works (the concept they show is erased), from
        a line's current model (default: the default line).

        The concept must be one the model knows (world models: the world's vocabulary, see
        `world info`); works must be the owner's own. Who may ask for what is decided by
        `rules.filing`: a registered owner's concept is theirs alone (another owner: `NotAllowed`);
        a concept without one goes to the model owner for review; the model owner's request on an
        owner's concept waits for that owner. Works that make up more of a concept than they list
        need `confirm` (`NeedsConfirmation` says what would be erased). A concept the current model
        has erased, or one already requested, is a `Conflict`. Arguments may come from a JSON body as
        they are: each is checked for its type and size first.
        """
        works, concept, anchor = _optout_args(works, concept, anchor)
        if model_id is not None:
            model_id = check_id(model_id, "model")
        if not isinstance(confirm, bool):
            raise DatarightsError("confirm must be true or false")
        with self.store.transaction() as s:
            filer = self.owner(s, owner)
            m = self._model(s, model_id)
            line = rules.line_of(s, m)
            if works:
                rows = [s.get(Work, w) for w in works]
                for wid, w in zip(works, rows):
                    if w is None or w.owner_id != filer.id:
                        raise NotYours(f"work {wid} is not one of {owner!r}'s works")
                concept = concept_of_works([w.labels for w in rows])
            concept, anchor = resolve_concept(m, concept, anchor, folder=self.resolved(m.path))
            holder, status, review_by, note = rules.filing(s, filer, concept)   # another owner's: 403 before all else
            rules.check_new(s, concept, line)
            if works:
                total = rules.works_showing(s, concept)
                if total > len(works) and not confirm:
                    raise NeedsConfirmation(
                        f"the {len(works)} works you chose show {concept!r}, which {total} registered works show: "
                        f"opting out erases all of {concept!r} from the model, not only these works; confirm to go "
                        "ahead", concept=concept, works=total)
            req = OptOut(owner_id=holder.id, filed_by_id=filer.id, model_id=m.id, concept=concept, anchor=anchor,
                         works=works or [], status=status, review_by=review_by)
            s.add(req)
            s.flush()
            s.add(OptOutEvent(optout_id=req.id, status=status,
                              note=f"{note}: erase {concept!r} (anchor {anchor!r}) from model {m.id}"))
            return self._optout_json(s, req)

    def concepts(self, owner: str) -> list[dict]:
        """The concepts registered as this owner's (their style, character, memorized image), each with
        its number of works: what they can opt out of directly."""
        with self.store.read() as s:
            o = self.owner(s, owner)
            return [{"name": c.name, "kind": c.kind, "works": c.works}
                    for c in s.scalars(select(Concept).where(Concept.owner_id == o.id).order_by(Concept.name))]

    def review(self, request_id: int, actor: str, approve: bool, note: str = "") -> dict:
        """Decide a request in review: the concept's owner confirms or contests the model owner's
        request on their concept; the model owner approves or rejects an owner's request on a concept
        with no single owner. Approved: pending (the next `process` erases it); otherwise rejected."""
        request_id = check_id(request_id, "opt-out")
        note = check_text(note, "the note", MAX_PROMPT, empty=True)
        with self.store.transaction() as s:
            who = self.owner(s, actor)
            r = s.get(OptOut, request_id)
            mine = r is not None and (who.role == "admin" or who.id in (r.owner_id, r.filed_by_id))
            if not mine:
                raise NotYours(f"unknown opt-out {request_id}")
            if r.status != "review":
                raise rules.Conflict(f"opt-out {request_id} is {r.status}, not waiting for a review")
            decider = "admin" if who.role == "admin" else ("owner" if who.id == r.owner_id else None)
            if decider != r.review_by:
                by = "the model owner" if r.review_by == "admin" else r.owner.name
                raise NotAllowed(f"opt-out {request_id} waits for {by} to decide, not for {who.name}")
            if approve:
                rules.check_new(s, r.concept, rules.line_of(s, s.get(Model, r.model_id)), approving=r)
            r.status = "pending" if approve else "rejected"
            verb = ("confirmed" if approve else "contested") if decider == "owner" else ("approved" if approve else "rejected")
            s.add(OptOutEvent(optout_id=r.id, status=r.status, note=f"{verb} by {who.name}" + (f": {note}" if note else "")))
            return self._optout_json(s, r)

    def _optout_json(self, s, r: OptOut) -> dict:
        events = s.scalars(select(OptOutEvent).where(OptOutEvent.optout_id == r.id).order_by(OptOutEvent.id))
        certs = list(s.scalars(select(Certificate).where(Certificate.optout_id == r.id).order_by(Certificate.id)))
        line = rules.line_of(s, s.get(Model, r.model_id))
        current = rules.current(s, line).id
        filer = s.get(Owner, r.filed_by_id) if r.filed_by_id else r.owner
        erase = next((c for c in certs if c.kind == "erase"), None)
        latest = certs[-1] if certs else None
        return {"id": r.id, "owner": r.owner.name, "filed_by": filer.name if filer else None, "model_id": r.model_id,
                "line": line, "current_model_id": current, "concept": r.concept, "anchor": r.anchor, "works": r.works,
                "status": r.status, "review_by": r.review_by, "job_id": r.job_id,
                "certificate_id": erase.id if erase else None,
                # every model it was certified against, newest last: erased from model N (current: yes/no)
                "certificates": [{"id": c.id, "kind": c.kind, "model_id": c.model_id, "verdict": c.verdict,
                                  "current": c.model_id == current, "at": _iso(c.created_at)} for c in certs],
                "erased_now": bool(latest and latest.model_id == current and rules.says_erased(latest.verdict)),
                "came_back": bool(latest and not rules.says_erased(latest.verdict) and erase is not None
                                  and rules.says_erased(erase.verdict)),
                "created_at": _iso(r.created_at),
                "history": [{"status": e.status, "note": e.note, "at": _iso(e.at)} for e in events]}

    def optouts(self, owner: str | None = None, status: str | None = None) -> list[dict]:
        """Opt-out requests (those an owner filed or that are about their concepts; all for the model
        owner), newest first."""
        with self.store.read() as s:
            q = select(OptOut).order_by(OptOut.id.desc())
            if owner is not None:
                oid = self.owner(s, owner).id
                q = q.where((OptOut.owner_id == oid) | (OptOut.filed_by_id == oid))
            if status is not None:
                q = q.where(OptOut.status == status)
            return [self._optout_json(s, r) for r in s.scalars(q)]

    def optout_status(self, request_id: int, owner: str | None = None) -> dict:
        request_id = check_id(request_id, "opt-out")
        with self.store.read() as s:
            r = s.get(OptOut, request_id)
            filer = s.get(Owner, r.filed_by_id) if r is not None and r.filed_by_id else None
            if r is None or (owner is not None and owner not in (r.owner.name, filer and filer.name)):
                raise NotYours(f"opt-out {request_id} is not one of {owner!r}'s requests" if owner else
                               f"unknown opt-out {request_id}")
            return self._optout_json(s, r)

    # ------------------------------------------------------------------ jobs (see workflow.py)
    def recover(self) -> list[int]:
        """Jobs left `running` by a process that no longer exists (killed, crashed) are marked failed,
        their temporary folders removed, and their opt-outs go back to `pending`, so the next
        `process` does them again."""
        done = []
        with self.store.transaction() as s:
            for j in s.scalars(select(Job).where(Job.status == "running")):
                since = j.started_at.replace(tzinfo=timezone.utc).timestamp() if j.started_at else None
                if j.pid and pid_alive(j.pid, since) and j.pid != os.getpid():
                    continue
                sweep_stale(self.root / f"job-{j.id}")      # its half-written edited folder, if any
                j.status, j.error, j.finished_at = "failed", f"interrupted (process {j.pid} ended)", now()
                j.idempotency_key = None                    # a retry of a queued payment may queue it again
                for r in s.scalars(select(OptOut).where(OptOut.id.in_(j.optouts))):
                    if r.status == "processing":
                        r.status = "pending"
                        s.add(OptOutEvent(optout_id=r.id, status="pending",
                                          note=f"job {j.id} was interrupted; back in the queue"))
                done.append(j.id)
        return done

    def jobs(self, public: bool = False) -> list[dict]:
        """Every job, newest first; `public`: folders as web clients see them (`Ledger.public`)."""
        with self.store.read() as s:
            return [self.job_json(j, public) for j in s.scalars(select(Job).order_by(Job.id.desc()))]

    def job(self, job_id: int, public: bool = False) -> dict:
        job_id = check_id(job_id, "job")
        with self.store.read() as s:
            j = s.get(Job, job_id)
            if j is None:
                raise NotFound(f"unknown job {job_id}")
            return self.job_json(j, public)

    def evidence(self, job_id: int) -> list[dict]:
        """The before/after grids a job saved beside its edited model (empty if gone)."""
        from ..files import read_json_file

        p = self.root / f"job-{job_id}-evidence.json"
        return read_json_file(p, "evidence file") if p.is_file() else []

    def job_json(self, j: Job, public: bool = False) -> dict:
        return {"id": j.id, "kind": j.kind, "model_id": j.model_id, "optouts": j.optouts, "method": j.method,
                "settings": j.settings, "result": j.result,
                "status": j.status, "stage": j.stage, "progress": round(j.progress, 3),
                "edited_path": self.public(j.edited_path) if public else self.resolved(j.edited_path), "edited_model_id": j.edited_model_id, "audit": j.audit,
                "attacks": j.attacks, "error": j.error, "started_at": _iso(j.started_at),
                "finished_at": _iso(j.finished_at)}

    def process(self, **kw) -> list[dict]:
        from .workflow import process
        return process(self, **kw)

    # ------------------------------------------------------------------ certificates
    def signing_key(self):
        if self.key_path is None:
            raise DatarightsError("a database ledger keeps its signing key and edited models in a folder of its own: "
                                  "set DATARIGHTS_LEDGER_HOME to it")
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        return signing.load_or_create_key(self.key_path)

    def public_key(self) -> str:
        return signing.public_hex(self.signing_key())

    def published_keys(self) -> dict:
        """The signer keys a third party pins to check this ledger's certificates (served at
        /.well-known/datarights-keys.json and printed by `ledger key`)."""
        key = self.public_key()
        return {"type": "datarights signer keys", "keys": [
            {"algorithm": "Ed25519", "public_key": key, "fingerprint": signing.fingerprint(key)}]}

    def certificate(self, cert_id: int, owner: str | None = None) -> dict:
        """The signed certificate {"document", "signature"}; an owner may open only their own."""
        cert_id = check_id(cert_id, "certificate")
        with self.store.read() as s:
            c = s.get(Certificate, cert_id)
            if c is None or (owner is not None and s.get(OptOut, c.optout_id).owner.name != owner):
                raise NotYours(f"certificate {cert_id} is not one of {owner!r}'s certificates" if owner else
                               f"unknown certificate {cert_id}")
            return {"document": json.loads(c.document), "signature": c.signature}

    def certificates(self, owner: str | None = None) -> list[dict]:
        with self.store.read() as s:
            q = select(Certificate, OptOut).join(OptOut, OptOut.id == Certificate.optout_id).order_by(Certificate.id)
            out = []
            for c, r in s.execute(q).all():
                if owner is None or r.owner.name == owner:
                    doc = json.loads(c.document)
                    out.append({"id": c.id, "optout_id": r.id, "concept": r.concept,
                                "verdict": standing(doc)["verdict"], "issued_at": doc["issued_at"]})
            return out

    # ------------------------------------------------------------------ compensation
    def check_payment(self, prompt, revenue, method, currency="USD") -> tuple[str, int, str, str]:
        """(prompt, cents, method, currency) of a paid generation, each checked before any work."""
        from ..attribute import METHODS

        cents = money.to_cents(revenue)
        currency = money.check_currency(currency)
        prompt = check_text(prompt, "the prompt", MAX_PROMPT)
        method = method or PAYMENT_METHOD
        if method == "caption":
            raise DatarightsError("the caption-only baseline reads only the prompt's words; a share must come from "
                                  f"the images, so pay with another method (default {PAYMENT_METHOD})")
        if method not in METHODS:
            raise DatarightsError(f"unknown attribution method {str(method)[:40]!r}; choose from "
                                  f"{', '.join(sorted(m for m in METHODS if m != 'caption'))}")
        return prompt, cents, method, currency

    def attribute_log(self, image: str | Path, prompt: str, revenue: str | float, method: str | None = None,
                      model_id: int | None = None, at: datetime | None = None, label: str | None = None,
                      client_key: str | None = None, currency: str = "USD") -> dict:
        """Attribute a generated image to the registered model's training set and record a paid
        generation: per-owner shares, and the revenue split by them in integer cents (largest
        remainder: the parts sum exactly to the revenue).

        Recorded exactly once: the event's key is sha256(image hash : `client_key`), so a retry of
        the same generation (same image, same client key; without a key, the same image) returns
        the first event (`"replayed": true`) and records nothing. `method`: PAYMENT_METHOD by default;
        the caption-only baseline is refused (a share must come from the images). `model_id`: the
        model that generated the image (default: the default line's current model).
        """
        from ..attribute import Query, attribute, load_training_set, make_config
        from ..world import read_imagefolder

        prompt, cents, method, currency = self.check_payment(prompt, revenue, method, currency)
        path = Path(image)
        rgb, _ = open_rgb(path, label=label)
        image_sha = file_sha256(path)
        key = _payment_key(image_sha, client_key)
        with self.store.read() as s:
            first = s.scalar(select(AttributionEvent).where(AttributionEvent.idempotency_key == key))
            if first is not None:
                return {**self._event_json(s, first), "replayed": True}
            m = self._model(s, model_id, exact=True)
            ds = s.get(Dataset, m.dataset_id) if m.dataset_id else None
            if ds is None:
                raise DatarightsError(f"model {m.id} has no registered training set to attribute to")
            model_path, source, dataset = m.path, ds.source, ds.name
        import numpy as np
        import torch

        from ..attribute import store as S

        cache = (model_path, source)
        if self._attribution is None or self._attribution[0] != cache:   # a server attributes many generations
            self._attribution = (cache, self.load(model_path), {})
        _, model, sets = self._attribution
        def in_memory():
            if "train" not in sets:
                sets["train"] = load_training_set(model, read_imagefolder(source, resolution=model.resolution))
            return sets["train"]

        if method in S.ROWS and model_path == "default" and ("shipped", method) not in sets:
            # the shipped model's state for its own world ships with the package: no rows to compute
            from ..attribute import SHIPPED, resolved, state_key
            from ..attribute.cache import load_artifact
            key = state_key(model, in_memory(), method, resolved(make_config(method), model))
            sets["shipped", method] = load_artifact(SHIPPED, method, key) is not None
        where = {}
        if method in S.ROWS and not sets.get(("shipped", method)):
            # per-work rows kept beside the ledger's models, the training folder streamed
            if "rows" not in sets:
                sets["rows"] = S.FolderRows.open(source, model.resolution)
            train, where = sets["rows"], {"store": self.store_of(m.id, dataset, method)}
        else:
            train = in_memory()
        x = torch.from_numpy(np.asarray(rgb.resize((model.resolution, model.resolution)), dtype=np.float32) / 255.0)
        r = attribute(model, train, Query(x.permute(2, 0, 1), prompt), method, make_config(method), progress=False,
                      **where)
        shares = r.owner_shares()
        split = money.split_cents(cents, {x["owner"]: x["share"] for x in shares}) if cents else {}
        try:
            with self.store.transaction() as s:
                ev = AttributionEvent(model_id=m.id, image_sha256=image_sha, prompt=prompt, method=method,
                                      shares=[{"owner": x["owner"], "share": round(float(x["share"]), 6)} for x in shares],
                                      revenue_cents=cents, currency=currency, idempotency_key=key, created_at=at or now())
                s.add(ev)
                s.flush()
                owners = {o.name: o for o in s.scalars(select(Owner).where(Owner.name.in_(list(split))))}
                missing = [o for o in split if o not in owners]
                if missing:
                    raise DatarightsError(f"owner {missing[0]!r} of the training set is not registered in the ledger")
                share_of = {x["owner"]: float(x["share"]) for x in shares}
                for name, c in split.items():
                    if c:
                        s.add(Payout(event_id=ev.id, owner_id=owners[name].id, cents=c, share=share_of[name]))
                s.flush()
                return self._event_json(s, ev)
        except IntegrityError:     # the same generation, recorded by another request meanwhile
            with self.store.read() as s:
                first = s.scalar(select(AttributionEvent).where(AttributionEvent.idempotency_key == key))
                return {**self._event_json(s, first), "replayed": True}

    def _event_json(self, s, ev: AttributionEvent) -> dict:
        pays = s.execute(select(Owner.name, Payout.cents, Payout.share).join(Owner, Owner.id == Payout.owner_id)
                         .where(Payout.event_id == ev.id)).all()
        return {"event_id": ev.id, "model_id": ev.model_id, "method": ev.method, "image_sha256": ev.image_sha256,
                "prompt": ev.prompt, "revenue_cents": ev.revenue_cents, "currency": ev.currency,
                "payouts": sorted(({"owner": n, "cents": c, "share": round(sh, 6)} for n, c, sh in pays),
                                  key=lambda p: (-p["cents"], p["owner"])),
                "shares": ev.shares, "created_at": _iso(ev.created_at), "replayed": False}

    def event(self, event_id: int) -> dict:
        """A recorded paid generation with every owner it paid."""
        event_id = check_id(event_id, "paid generation")
        with self.store.read() as s:
            ev = s.get(AttributionEvent, event_id)
            if ev is None:
                raise NotFound(f"unknown paid generation {event_id}")
            return self._event_json(s, ev)

    # ------------------------------------------------------------------ queued work (the web's worker)
    def queue_attribution(self, image: str | Path, prompt: str, revenue: str, method: str | None = None,
                          model_id: int | None = None, client_key: str | None = None, currency: str = "USD",
                          label: str | None = None) -> dict:
        """Queue a paid generation for the worker process (the web server never attributes in a
        request): every input is checked now, the image is kept under the ledger's folder, and the
        same request again (same image and client key) returns the first job, or the event it made."""
        prompt, cents, method, currency = self.check_payment(prompt, revenue, method, currency)
        path = Path(image)
        open_rgb(path, label=label)
        image_sha = file_sha256(path)
        key = _payment_key(image_sha, client_key)
        with self.store.read() as s:
            if model_id is not None:
                self._model(s, model_id, exact=True)
            first = s.scalar(select(Job).where(Job.idempotency_key == key))
            if first is not None:
                return {**self.job_json(first, public=True), "replayed": True}
            ev = s.scalar(select(AttributionEvent).where(AttributionEvent.idempotency_key == key))
            if ev is not None:
                return {"id": None, "kind": "attribute", "status": "done", "result": self._event_json(s, ev),
                        "replayed": True}
        from ..files import atomic_file

        keep = self.root / "generations" / f"{image_sha}.png"
        keep.parent.mkdir(parents=True, exist_ok=True)
        if not keep.exists():
            atomic_file(keep, lambda tmp: Path(tmp).write_bytes(path.read_bytes()))
        try:
            with self.store.transaction() as s:
                j = Job(kind="attribute", model_id=self._model(s, model_id, exact=True).id, optouts=[], method=method,
                        status="queued", stage="queued", idempotency_key=key,
                        payload={"image": self.stored(keep), "prompt": prompt, "revenue_cents": cents,
                                 "currency": currency, "method": method, "model_id": model_id,
                                 "client_key": client_key})
                s.add(j)
                s.flush()
                return {**self.job_json(j, public=True), "replayed": False}
        except IntegrityError:
            with self.store.read() as s:
                return {**self.job_json(s.scalar(select(Job).where(Job.idempotency_key == key)), public=True),
                        "replayed": True}

    def run_queued(self, log=lambda s: None) -> int | None:
        """Claim the oldest queued attribution job and run it in this process; its id, or None."""
        with self.store.transaction() as s:
            j = s.scalar(select(Job).where(Job.status == "queued").order_by(Job.id))
            if j is None:
                return None
            hit = s.execute(update(Job).where(Job.id == j.id, Job.status == "queued")
                            .values(status="running", pid=os.getpid(), started_at=now(), stage="attribute")
                            .execution_options(synchronize_session=False))
            if hit.rowcount != 1:
                return j.id            # another worker took it
            job_id, p = j.id, dict(j.payload)
        log(f"job {job_id}: attributing a paid generation with {p['method']}")
        try:
            ev = self.attribute_log(self.resolved(p["image"]), p["prompt"], f"{p['revenue_cents'] // 100}."
                                    f"{p['revenue_cents'] % 100:02d}", p["method"], p["model_id"],
                                    client_key=p["client_key"], currency=p["currency"], label="the generated image")
            with self.store.transaction() as s:
                j = s.get(Job, job_id)
                j.status, j.stage, j.progress, j.finished_at = "done", "done", 1.0, now()
                j.result = {"event_id": ev["event_id"]}
        except BaseException as e:
            with self.store.transaction() as s:
                j = s.get(Job, job_id)
                j.status, j.error, j.finished_at = "failed", f"{type(e).__name__}: {e}"[:2000], now()
                j.idempotency_key = None            # nothing was recorded: the same request may be queued again
            if not isinstance(e, Exception):
                raise
        return job_id

    def statement(self, owner: str, period: str) -> dict:
        """What an owner earned in a month ('2026-11'), from which generations."""
        y, mo = check_period(period)
        start = datetime(y, mo, 1)
        end = datetime(y + (mo == 12), mo % 12 + 1, 1)
        with self.store.read() as s:
            o = self.owner(s, owner)
            rows = s.execute(select(Payout, AttributionEvent).join(AttributionEvent, AttributionEvent.id == Payout.event_id)
                             .where(Payout.owner_id == o.id, AttributionEvent.created_at >= start,
                                    AttributionEvent.created_at < end).order_by(AttributionEvent.created_at)).all()
            items = [{"event_id": e.id, "at": _iso(e.created_at), "prompt": e.prompt, "image_sha256": e.image_sha256,
                      "model_id": e.model_id, "method": e.method, "share": round(p.share, 6), "cents": p.cents,
                      "revenue_cents": e.revenue_cents, "currency": e.currency} for p, e in rows]
            totals: dict[str, int] = {}
            for i in items:
                totals[i["currency"]] = totals.get(i["currency"], 0) + i["cents"]
            return {"owner": o.name, "period": period, "total_cents": sum(i["cents"] for i in items),
                    "totals": totals, "generations": len(items), "items": items, "payment_method": PAYMENT_METHOD,
                    "methods": sorted({i["method"] for i in items})}

    def earnings(self, owner: str) -> list[dict]:
        """An owner's earnings per month, oldest first (for the chart)."""
        with self.store.read() as s:
            o = self.owner(s, owner)
            rows = s.execute(select(AttributionEvent.created_at, Payout.cents, AttributionEvent.currency)
                             .join(Payout, Payout.event_id == AttributionEvent.id).where(Payout.owner_id == o.id)).all()
        months: dict[tuple[str, str], int] = {}
        for t, c, cur in rows:
            months[(t.strftime("%Y-%m"), cur)] = months.get((t.strftime("%Y-%m"), cur), 0) + c
        return [{"period": k, "currency": cur, "cents": v} for (k, cur), v in sorted(months.items())]


def read_dataset(root: str | Path, log=lambda s: None) -> list[dict]:
    """Every row of an imagefolder as the ledger registers it (each image hashed), checked before the
    ledger is opened: an owner (a name of at most MAX_NAME characters), a caption and labels that
    are short text, a known policy. Any problem is one line naming the file and row."""
    from ..world.generate import metadata_rows

    root = Path(root)
    rows = []
    for where, m, path in metadata_rows(root):
        if not isinstance(m.get("owner"), str) or not m["owner"].strip():
            raise DatarightsError(f"{where}: each row needs an 'owner' (a non-empty string) to be registered")
        owner = check_text(m["owner"], f"{where}: 'owner'", MAX_NAME)
        text = check_text(m["text"], f"{where}: 'text'", MAX_CAPTION, empty=True, multiline=True)
        policy = m.get("policy", "allow")
        if policy not in POLICIES:
            raise DatarightsError(f"{where}: policy must be one of {', '.join(POLICIES)}, got {str(policy)[:40]!r}")
        labels = {k: check_text(m[k], f"{where}: '{k}'", MAX_LABEL, empty=True) for k in LABEL_KEYS if k in m}
        rgb, _ = open_rgb(path)
        rows.append({"file_name": m["file_name"], "text": text, "owner": owner, "policy": policy,
                     "sha256": file_sha256(path), "phash": phash(rgb), "colors": colors_of(rgb), "labels": labels})
    if not rows:
        raise DatarightsError(f"{root / 'metadata.jsonl'} lists no images")
    log(f"ledger: hashed {len(rows)} images")
    return rows


def _payment_key(image_sha: str, client_key: str | None) -> str:
    """The key a paid generation is recorded under: sha256(image hash : client key); without a client
    key, the image alone. The client key is checked as text of at most 200 characters."""
    if client_key is not None:
        client_key = check_text(client_key, "the idempotency key", 200)
    return hashlib.sha256(f"{image_sha}:{client_key or ''}".encode()).hexdigest()


def colors_of(rgb) -> bytes:
    """A 4x4 RGB thumbnail of an image (box-filtered), 48 bytes."""
    import numpy as np
    from PIL import Image

    return np.asarray(rgb.resize((4, 4), Image.BOX), dtype=np.uint8).tobytes()


def _make_default(s, m: Model) -> None:
    for other in s.scalars(select(Model).where(Model.is_default, Model.id != m.id)):
        other.is_default = False
    m.is_default = True


def _model_identity(path: str | Path | None) -> dict:
    """What the ledger records of a model folder: where it is, its kind and its weights' SHA-256."""
    from ..models import load_model, weights_digest

    m = load_model(path)
    return {"path": "default" if path is None else str(Path(path).resolve()), "kind": m.kind,
            "weights_sha256": weights_digest(m)}


def _optout_args(works, concept, anchor) -> tuple[list[int] | None, str | None, str | None]:
    """An opt-out's arguments checked for type and size (they may come straight from a JSON body)."""
    if works is not None:
        if not isinstance(works, list):
            raise DatarightsError("works must be a list of work ids")
        if len(works) > MAX_WORKS_PER_OPTOUT:
            raise DatarightsError(f"an opt-out may list at most {MAX_WORKS_PER_OPTOUT:,} works, got {len(works):,}")
        works = list(dict.fromkeys(check_id(w, "work") for w in works)) or None
    concept = None if concept is None else check_text(concept, "the concept", MAX_CONCEPT, empty=True) or None
    anchor = None if anchor is None else check_text(anchor, "the anchor", MAX_CONCEPT, empty=True) or None
    if bool(works) == bool(concept):
        raise DatarightsError("give either the works or the concept to opt out of (one of the two)")
    return works, concept, anchor


def concept_of_works(labels: list[dict]) -> str:
    """The one nameable concept every listed work shows: a character, a memorized image, an artist's
    style, a composition, or an object instance (in that order of preference)."""
    from ..world import vocab as V

    for key in ("character", "memorized", "style", "composition", "object"):
        vals = {lab.get(key) for lab in labels}
        if len(vals) == 1:
            v = vals.pop()
            if v and v != V.NONE and v != V.PLAIN_STYLE and not (key == "object" and v in V.CATEGORIES):
                return v
    raise DatarightsError("these works show no one concept in common that can be erased; opt out of a concept by name, "
                          "or list works of one concept")


def resolve_concept(model: Model, concept: str, anchor: str | None, folder: str | None = None) -> tuple[str, str]:
    """(concept, anchor): for a world model the concept must be in the vocabulary of the world it was
    trained on (`world.vocabulary_of_folder` of `folder`, where the model lies; None or 'default': the
    shipped model, the default world) and its anchor defaults to the vocabulary's; for other models
    both are free text (anchor required)."""
    concept = (concept or "").strip()
    if not concept:
        raise DatarightsError("the concept to opt out of must not be empty")
    if model.kind == "world":
        from ..world import vocabulary_of_folder
        from ..world.vocab import DEFAULT

        vocab = DEFAULT if folder in (None, "default") else vocabulary_of_folder(folder)
        found = vocab.find_concept(concept)
        if found is None or found[0] == "categories":
            raise DatarightsError(f"the model does not know the concept {concept!r}", hint="see `datarights world info`")
        concept = found[1]["name"]
        anchor = anchor or found[1].get("anchor")
    if not anchor or not anchor.strip() or anchor.strip().lower() == concept.lower():
        raise DatarightsError(f"say what the model should show instead of {concept!r} (an anchor), other than "
                              "the concept itself")
    return concept, anchor.strip()

