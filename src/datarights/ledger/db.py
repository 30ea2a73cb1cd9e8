"""Opening a ledger: an SQLite file by default, a PostgreSQL URL for a shared deployment.

Open before you touch: a file is recognised as a datarights ledger *read-only* first (a plain file,
the SQLite header, its tables, its Alembic revision), and only then are pragmas set, migrations run
or anything created. Each refusal is one line that says which check failed, and a refused file is
left byte-identical. A new ledger is made only by `create` on a path where nothing exists, written
under a temporary name and linked into place whole (so two processes creating it at once end with
one ledger). A ledger that this process may not write (a read-only copy) is opened read-only:
every reading command works on it, and a write is refused in one line.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from ..errors import DatarightsError

MIGRATIONS = Path(__file__).parent / "migrations"
WRITE = "datarights_write"
"""Execution option of the ledger's write transactions (SQLite: BEGIN IMMEDIATE)."""
LEDGER_TABLES = {"owners", "works", "datasets", "dataset_works", "models", "optouts", "optout_events", "jobs",
                 "certificates", "attribution_events", "payouts"}
"""Tables every revision of the schema has: a database with an alembic_version but without these is
another application's."""
DIALECTS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
POSTGRES_HINT = "install the PostgreSQL driver with pip install 'datarights[postgres]'"


def _alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def known_revisions() -> tuple[list[str], str]:
    """(every revision this datarights ships, the head)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return [r.revision for r in script.walk_revisions()], script.get_current_head()


def url_of(location: str | Path) -> tuple[str, Path | None]:
    """(SQLAlchemy URL, the SQLite file or None) for a path or a URL."""
    s = str(location)
    if "://" in s:
        return s, (Path(s.split(":///", 1)[1]) if s.startswith("sqlite:///") else None)
    return f"sqlite:///{Path(s).resolve()}", Path(s)


def shown(location: str | Path) -> str:
    """A ledger location as it may be printed: a URL without its password."""
    s = str(location)
    if "://" not in s:
        return s
    try:
        return make_url(s).render_as_string(hide_password=True)
    except ArgumentError:
        return s.split("://", 1)[0] + "://…"


def _sqlite_uri(path: Path, mode: str) -> str:
    return "file:" + urllib.parse.quote(str(path.resolve())) + f"?mode={mode}"


def _sqlite_engine(path: Path, readonly: bool) -> Engine:
    """An engine whose every connection opens the existing file (never creates one): read-write with the
    ledger's pragmas, or read-only."""
    uri = _sqlite_uri(path, "ro" if readonly else "rw")
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
                           poolclass=QueuePool, pool_size=8, max_overflow=64, future=True)   # a server's threads each hold one

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _):
        dbapi_conn.isolation_level = None          # transactions are begun below, not by the driver
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")   # the web server and a processing job share the file
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A write transaction takes the write lock when it begins (waiting its turn), so that what it
        # reads is what it updates: two writers that read-check-write (claiming an opt-out, importing
        # one new folder) run one after the other instead of failing on a stale snapshot.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")
    return engine


def _check_sqlite_file(path: Path, location) -> None:
    """A non-empty plain file. Its header is not read here: opening the ledger file with a descriptor
    of our own and closing it would drop every POSIX lock this process holds on it, SQLite's included,
    and another process (the web's worker) could then take the database for unused, fold its
    write-ahead log in and delete it under this process's connections. SQLite itself reads the header
    (read-only) in `_open_sqlite`, and refuses a file that is not a database without changing it."""
    try:
        st = path.stat()
    except OSError as e:
        raise DatarightsError(f"cannot read ledger {location} ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DatarightsError(f"ledger {location} is not a plain file")
    if st.st_size == 0:
        raise DatarightsError(f"{location} is an empty file, not a datarights ledger (give a new path to create one)")
    if st.st_size < 100:      # an SQLite database is at least its 100-byte header
        raise DatarightsError(f"{location} is not a datarights ledger (not an SQLite database)")


def _inspect(conn) -> tuple[str | None, set[str]]:
    """(Alembic revision or None, table names) of a database, by reading only."""
    tables = set(inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in tables:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
        revision = rows[0][0] if rows else None
    return revision, tables


def _judge(location, revision: str | None, tables: set[str], create: bool) -> None:
    """Refuse a database that is not a datarights ledger at a revision this version knows."""
    revisions, head = known_revisions()
    where = shown(location)
    if "alembic_version" not in tables:
        if tables:
            raise DatarightsError(f"{where} is not a datarights ledger (it has other tables: "
                                  f"{', '.join(sorted(tables)[:3])})")
        if not create:
            raise DatarightsError(f"{where} is an empty database, not a datarights ledger")
        return
    if revision is not None and revision not in revisions:
        raise DatarightsError(f"ledger {where} has schema revision {str(revision)[:40]}, newer than this datarights "
                              f"knows (up to {head}); upgrade datarights to open it")
    if not LEDGER_TABLES <= tables:
        raise DatarightsError(f"{where} is not a datarights ledger (another application's database: it lacks the "
                              f"ledger's tables, e.g. {sorted(LEDGER_TABLES - tables)[0]})")


def _upgrade(engine: Engine) -> None:
    """Migrate to the head revision in one transaction. On SQLite, foreign keys are off meanwhile (set
    on the driver's connection, outside any transaction), as a migration that rebuilds a table needs,
    and checked whole before the commit."""
    from alembic import command

    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        with conn.begin():
            command.upgrade(_alembic_config(conn), "head")
            if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall():
                raise DatarightsError("upgrading the ledger would break its references; it was left as it was")
        if sqlite:
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _create_sqlite(path: Path) -> None:
    """A new, fully migrated ledger at `path`, which must not exist: built under a temporary name, then
    hard-linked into place (never replacing a file another process made meanwhile)."""
    from ..files import _umask

    if not path.parent.is_dir():
        raise DatarightsError(f"cannot create ledger {path}: folder {path.parent} does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise DatarightsError(f"cannot create ledger {path} ({e.strerror or e})") from None
    tmp = Path(name)
    try:
        engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(str(tmp), check_same_thread=False),
                               poolclass=NullPool, future=True)
        _upgrade(engine)
        engine.dispose()
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use that one
    finally:
        for p in (tmp, Path(str(tmp) + "-journal")):
            p.unlink(missing_ok=True)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)


def open_engine(location: str | Path, create: bool = False, readonly: bool = False) -> tuple[Engine, bool]:
    """(engine, read-only?) on an existing ledger, migrated to this version's head; with `create`, a new
    ledger where nothing exists yet. `readonly`, or a file this process may not write: read-only."""
    url, path = url_of(location)
    if path is not None:
        return _open_sqlite(path, location, create, readonly)
    return _open_url(url, location, create), False


def _open_sqlite(path: Path, location, create: bool, readonly: bool) -> tuple[Engine, bool]:
    if path.is_dir():
        raise DatarightsError(f"ledger {path} is a folder, not a ledger file")
    if not path.exists():
        if not create:
            raise DatarightsError(f"ledger {path} does not exist", hint="create one with `datarights ledger import`")
        _create_sqlite(path)
    _check_sqlite_file(path, location)
    probe = _sqlite_engine(path, readonly=True)
    try:
        with probe.connect() as conn:
            revision, tables = _inspect(conn)
    except DatabaseError as e:
        why = "not an SQLite database" if "not a database" in str(e.orig) else str(e.orig)
        raise DatarightsError(f"{location} is not a datarights ledger ({why})") from None
    finally:
        probe.dispose()
    _judge(location, revision, tables, create=False)
    readonly = readonly or not _writable(path)
    _, head = known_revisions()
    try:
        if revision != head:
            if readonly:
                raise DatarightsError(f"ledger {location} was written by an older datarights and is read-only here; "
                                      "open it once where it can be written, to upgrade it")
            writer = _sqlite_engine(path, readonly=False)
            _upgrade(writer)
            writer.dispose()
    except DatabaseError as e:
        raise DatarightsError(f"cannot open ledger {location} ({e.orig})") from None
    return _sqlite_engine(path, readonly), readonly


def _open_url(url: str, location, create: bool) -> Engine:
    where = shown(location)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatarightsError(f"ledger {where} is neither a file nor a database URL") from None
    backend = parsed.get_backend_name()
    if backend not in DIALECTS:
        raise DatarightsError(f"ledger {where}: {backend!r} databases are not supported; use an SQLite file or a "
                              "postgresql:// URL")
    if backend == "postgresql" and parsed.get_driver_name() in ("psycopg2", "default"):
        parsed = parsed.set(drivername="postgresql+psycopg")   # psycopg 3, from the [postgres] extra
    try:
        engine = create_engine(parsed, future=True, pool_pre_ping=True)
    except (ImportError, NoSuchModuleError):
        raise DatarightsError(f"cannot open ledger {where}: {POSTGRES_HINT}") from None
    except ArgumentError as e:
        raise DatarightsError(f"ledger {where} is not a usable database URL ({e})") from None
    try:
        with engine.connect() as conn:
            revision, tables = _inspect(conn)
        _judge(location, revision, tables, create)
        if revision != known_revisions()[1]:
            _upgrade(engine)
    except OperationalError as e:
        raise DatarightsError(f"cannot reach ledger {where} ({str(e.orig).strip().splitlines()[0][:200]})") from None
    except DatabaseError as e:
        raise DatarightsError(f"cannot open ledger {where} ({str(e.orig).strip().splitlines()[0][:200]})") from None
    return engine


class Store:
    """The engine and one session factory; `transaction()` is the only way the ledger writes."""

    def __init__(self, engine: Engine, readonly: bool = False, where: str = "the ledger"):
        self.engine = engine
        self.readonly = readonly
        self.where = where
        self._sessions = sessionmaker(engine, expire_on_commit=False, future=True)
        self._writes = sessionmaker(engine.execution_options(**{WRITE: True}), expire_on_commit=False, future=True)

    @contextmanager
    def transaction(self):
        """One transaction: committed whole at the end of the block, rolled back whole on any error."""
        if self.readonly:
            raise DatarightsError(f"ledger {self.where} is read-only here; nothing was changed")
        try:
            with self._writes() as s, s.begin():
                yield s
        except OperationalError as e:
            msg = str(e.orig)
            if "readonly" in msg or "read-only" in msg:
                raise DatarightsError(f"ledger {self.where} is read-only here; nothing was changed") from None
            if "locked" in msg:
                raise DatarightsError(f"ledger {self.where} is busy (another process holds it); try again") from None
            raise

    @contextmanager
    def read(self):
        with self._sessions() as s:
            yield s

    def session(self) -> Session:
        return self._sessions()
