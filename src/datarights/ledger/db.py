"""Opening a ledger: an SQLite file by default, any SQLAlchemy URL for a shared deployment.

A ledger is created and upgraded only through its Alembic migrations. Opening refuses a file that
is not an SQLite database, a database that is not a datarights ledger, and a ledger whose schema
is newer than this version of datarights knows — each with one line that says which.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatarightsError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_MAGIC = b"SQLite format 3\x00"


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


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")   # the web server and a processing job share the file
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()


def open_engine(location: str | Path, create: bool = False) -> Engine:
    """An engine on an existing ledger (migrated to this version's head), or a new one with `create`."""
    url, path = url_of(location)
    if path is not None:
        if path.is_dir():
            raise DatarightsError(f"ledger {path} is a folder, not a ledger file")
        if not path.exists():
            if not create:
                raise DatarightsError(f"ledger {path} does not exist (create one with `datarights ledger import`)")
            if not path.parent.is_dir():
                raise DatarightsError(f"cannot create ledger {path}: folder {path.parent} does not exist")
        elif path.stat().st_size and path.read_bytes()[:16] != SQLITE_MAGIC:
            raise DatarightsError(f"{path} is not a datarights ledger (not an SQLite database)")
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "alembic_version" not in tables:
                if tables:
                    raise DatarightsError(f"{location} is not a datarights ledger (it has other tables: "
                                          f"{', '.join(sorted(tables)[:3])})")
                if not create:
                    raise DatarightsError(f"{location} is an empty database, not a datarights ledger")
                current = None
            else:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
                current = rows[0][0] if rows else None
        revisions, head = known_revisions()
        if current is not None and current not in revisions:
            raise DatarightsError(f"ledger {location} has schema revision {current}, newer than this datarights "
                                  f"knows (up to {head}); upgrade datarights to open it")
        if current != head:
            from alembic import command

            with engine.begin() as conn:
                command.upgrade(_alembic_config(conn), "head")
    except DatabaseError as e:
        raise DatarightsError(f"{location} is not a datarights ledger ({e.orig})") from None
    except OperationalError as e:
        raise DatarightsError(f"cannot open ledger {location} ({e.orig})") from None
    return engine


class Store:
    """The engine and one session factory; `transaction()` is the only way the ledger writes."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False, future=True)

    @contextmanager
    def transaction(self):
        """One transaction: committed whole at the end of the block, rolled back whole on any error."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def read(self):
        with self._sessions() as s:
            yield s

    def session(self) -> Session:
        return self._sessions()
