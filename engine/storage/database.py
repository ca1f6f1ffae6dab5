"""The connection to the database: SQLite or PostgreSQL, made to behave alike.

SQLite: WAL journal, foreign keys on, `synchronous=FULL` by default (an acknowledged write
survives a power cut), a busy timeout, case-sensitive LIKE (as PostgreSQL's), and write
transactions that start with BEGIN IMMEDIATE behind one lock per process: SQLite has one
writer at a time, and contending connections would otherwise spin on "database is locked".
PostgreSQL: psycopg 3, a connection pool, writes in READ COMMITTED with row locks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from engine.errors import DatabaseError

DEFAULT_URL = "sqlite:///kartoteka.db"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = DEFAULT_URL
    sqlite_synchronous: str = "FULL"  # FULL | NORMAL (faster, may lose the last writes on power loss)
    busy_timeout_ms: int = 10_000
    pool_size: int = 10


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Database:
    """An SQLAlchemy engine plus the rules for read and write transactions."""

    def __init__(self, settings: DatabaseSettings):
        self.settings = settings
        try:
            url = sa.make_url(normalise_url(settings.url))
        except sa.exc.ArgumentError:
            raise DatabaseError(f"{settings.url!r} is not a database URL: use "
                                "sqlite:///file.db or postgresql+psycopg://user@host/name") from None
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite":
            if not url.database or url.database == ":memory:":
                raise DatabaseError("an in-memory SQLite database would vanish with the process: "
                                    "give a file, sqlite:///kartoteka.db")
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, pool_size=settings.pool_size, max_overflow=20)
            self._configure_sqlite()
            self._write_lock: threading.Lock | None = threading.Lock()
        elif self.dialect == "postgresql":
            self.engine = sa.create_engine(url, pool_size=settings.pool_size, max_overflow=20,
                                           pool_pre_ping=True)
            self._write_lock = None
        else:
            raise DatabaseError(f"unsupported database {url.get_backend_name()!r}: "
                                "use sqlite:///file.db or postgresql+psycopg://user@host/name")

    def _configure_sqlite(self) -> None:
        synchronous = self.settings.sqlite_synchronous.upper()
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be FULL, NORMAL or EXTRA")
        busy = int(self.settings.busy_timeout_ms)

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy}")
            cursor.execute("PRAGMA case_sensitive_like=ON")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            immediate = connection.get_execution_options().get("kt_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextmanager
    def write(self, *, system: str | None = None) -> Iterator[sa.Connection]:
        """A write transaction: committed when the block ends, rolled back on any error.
        `system` says why its statements may reach every record without the acting
        user's scope (a migration, a backfill); see `engine.access.scopes.guard`."""
        with self._write_lock or nullcontext():
            with self.engine.connect() as connection:
                connection.execution_options(kt_write=True, **_system(system))
                with connection.begin():
                    yield connection

    @contextmanager
    def read(self, *, system: str | None = None) -> Iterator[sa.Connection]:
        """A read transaction: one consistent snapshot on SQLite (`system` as for write)."""
        with self.engine.connect() as connection:
            if system is not None:
                connection.execution_options(**_system(system))
            with connection.begin():
                yield connection

    def dispose(self) -> None:
        self.engine.dispose()


#: the execution option of a statement or connection that reaches every record on purpose,
#: saying why (the access layer's guard lets it through; see engine/access/scopes.py)
UNSCOPED = "kt_unscoped"


def _system(why: str | None) -> dict[str, str]:
    return {} if why is None else {UNSCOPED: why}
