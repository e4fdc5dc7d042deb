"""Database access: engine creation, one transaction per unit of work, schema upgrades.

SQLite is the embedded default. It runs in WAL mode with synchronous=FULL so that a
kill -9 of the engine never loses a committed change. MySQL/MariaDB goes through PyMySQL
with pre-ping, so a database that went away and came back is picked up again without a
restart of the engine.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import create_engine, event, exc, inspect
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseUnavailable

if TYPE_CHECKING:
    from sqlite3 import Connection as SqliteConnection

    from alembic.config import Config
    from sqlalchemy import Connection, Engine
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

MIGRATIONS = pathlib.Path(__file__).with_name("migrations")


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable database URL>"


def _sqlite_pragmas(dbapi_conn: SqliteConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, immediate: bool = True, **kwargs: Any) -> Engine:
    """An SQLAlchemy engine for `url` with the settings each backend needs.

    For SQLite, `immediate` makes every transaction take the write lock at BEGIN, so two
    writers queue on the busy timeout instead of failing on a lock upgrade; read-only work
    uses an engine without it, so reads never wait for writers (WAL).
    """
    # JSON columns (host details, job parameters and results) through orjson: a page of hosts
    # decodes one per row.
    kwargs.setdefault("json_serializer", _json_text)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Enough pooled connections for every API and job thread: connections opened past the
        # pool are closed after use, and reopening one (with its PRAGMAs) costs each request.
        kwargs.setdefault("pool_size", 20)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_conn: SqliteConnection, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 3600)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("isolation_level", "READ COMMITTED")
    if url.startswith("mysql"):
        kwargs.setdefault("connect_args", {"connect_timeout": 5, "charset": "utf8mb4"})
    return create_engine(url, **kwargs)


class Database:
    """The engine's database: a session factory and the schema's upgrade path."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.engine.dialect.name == "sqlite":
            self.read_engine = make_engine(url, immediate=False, **engine_kwargs)
        else:
            self.read_engine = self.engine
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        # Committed write transactions so far; the API's answer cache keys on it.
        self.write_generation = 0
        self._generation_lock = threading.Lock()
        self._write_lock = threading.RLock() if self.is_sqlite else None
        # Every commit of a write session counts, each step of a job included.
        event.listen(self._sessions, "after_commit", self._committed)

    def _committed(self, _session: Session) -> None:
        with self._generation_lock:
            self.write_generation += 1

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def transaction(self, readonly: bool = False) -> Iterator[Session]:
        """One unit of work: commits when the block ends cleanly, rolls back otherwise."""
        if readonly or self._write_lock is None:
            with self._unit(readonly) as session:
                yield session
            return
        # SQLite admits one writer at a time and makes the others poll with growing sleeps
        # (up to 100 ms each); queueing writers here hands the lock on as soon as it is free.
        with self._write_lock, self._unit(readonly) as session:
            yield session

    @contextlib.contextmanager
    def _unit(self, readonly: bool) -> Iterator[Session]:
        session = (self._read_sessions if readonly else self._sessions)()
        committing = False
        try:
            yield session
            committing = True
            session.commit()
        except exc.OperationalError as e:
            session.rollback()
            if _is_connection_error(e):
                raise DatabaseUnavailable(_unavailable_text(e, committing)) from e
            raise
        except exc.InterfaceError as e:
            session.rollback()
            raise DatabaseUnavailable(_unavailable_text(e, committing)) from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def session(self) -> Session:
        return self._sessions()

    # --- schema -------------------------------------------------------------

    def alembic_config(self) -> Config:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.engine
        return cfg

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest revision (idempotent)."""
        from alembic import command

        command.upgrade(self.alembic_config(), "head")

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def has_schema(self) -> bool:
        return inspect(self.engine).has_table("alembic_version")

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


_CONNECTION_ERRORS = (2002, 2003, 2006, 2013, 2055, 1927, 1053)


# MySQL/MariaDB: a deadlock victim (Galera's certification failures answer the same code).
DEADLOCK = 1213


def is_deadlock(e: exc.DBAPIError) -> bool:
    """Whether `e` is MySQL's "deadlock found": the whole transaction was rolled back and may run again."""
    args = getattr(getattr(e, "orig", None), "args", ())
    return bool(args) and args[0] == DEADLOCK


def _is_connection_error(e: exc.DBAPIError) -> bool:
    orig = getattr(e, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _CONNECTION_ERRORS:
        return True
    return bool(getattr(e, "connection_invalidated", False))


def _unavailable_text(e: exc.DBAPIError, committing: bool) -> str:
    if committing:
        # The COMMIT was sent and no answer came back: the server may have applied it.
        return (f"The database became unavailable while the change was being committed ({_short(e)}); "
                "it may or may not have been applied: check before retrying the request")
    return f"The database is unavailable ({_short(e)}); nothing was changed, retry the request once it is back"


def _short(e: BaseException) -> str:
    orig = getattr(e, "orig", e)
    return str(orig).splitlines()[0][:200]
