"""The connection to the database: SQLite or PostgreSQL, made to behave alike.

SQLite: WAL journal, foreign keys on, `synchronous=FULL` by default (an acknowledged write
survives a power cut), a busy timeout, case-sensitive LIKE (as PostgreSQL's), and write
transactions that start with BEGIN IMMEDIATE behind one lock per process: SQLite has one
writer at a time, and contending connections would otherwise spin on "database is locked".
Writes that queue for that lock share one commit (group commit, `_GroupCommit`): each
runs in its own SAVEPOINT of one transaction, and none returns before the commit that
holds it is on disk — so one fsync serves many writes, and durability is unchanged.
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

from engine.errors import DatabaseError, SettingsError

DEFAULT_URL = "sqlite:///kartoteka.db"


SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")
URL_HINT = "use sqlite:///file.db or postgresql+psycopg://user@host/name"


@dataclass(frozen=True)
class DatabaseSettings:
    """How to reach the database; each value is checked when the settings are built."""

    url: str = DEFAULT_URL
    sqlite_synchronous: str = "FULL"  # FULL | NORMAL (faster, may lose the last writes on power loss)
    busy_timeout_ms: int = 10_000
    pool_size: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise SettingsError(f"the database URL must be text: {URL_HINT}")
        if not isinstance(self.sqlite_synchronous, str) or \
                self.sqlite_synchronous.upper() not in SYNCHRONOUS:
            raise SettingsError(f"sqlite_synchronous is {self.sqlite_synchronous!r}: it must be "
                                "FULL (the default), NORMAL or EXTRA")
        for name, least in (("busy_timeout_ms", 0), ("pool_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SettingsError(f"{name} is {value!r}: it must be a whole number, at "
                                    f"least {least}")


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Joining:
    """Whether a write joined without a savepoint ended in an exception (`Database.joining`)."""

    broken = False


class Database:
    """An SQLAlchemy engine plus the rules for read and write transactions."""

    def __init__(self, settings: DatabaseSettings):
        self.settings = settings
        try:
            url = sa.make_url(normalise_url(settings.url))
        except (sa.exc.ArgumentError, ValueError) as error:
            # SQLAlchemy raises ValueError for a port that is not a number
            reason = "" if isinstance(error, sa.exc.ArgumentError) else " (its port is not a number)"
            raise SettingsError(f"{settings.url!r} is not a database URL{reason}: "
                                f"{URL_HINT}") from None
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite":
            if not url.database or url.database == ":memory:":
                raise SettingsError("an in-memory SQLite database would vanish with the process: "
                                    "give a file, sqlite:///kartoteka.db")
            folder = Path(url.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                reason = ("a file is in the way" if isinstance(
                    error, (FileExistsError, NotADirectoryError)) else error.strerror or str(error))
                raise DatabaseError(f"cannot make the folder {str(folder)!r} for the SQLite "
                                    f"database: {reason}") from None
            self.engine = self._create_engine(url, pool_size=settings.pool_size, max_overflow=20)
            self._configure_sqlite()
            self._write_lock: threading.Lock | None = threading.Lock()
            self._group: _GroupCommit | None = _GroupCommit(self.engine, self._write_lock)
        elif self.dialect == "postgresql":
            # the session in UTC: timestamps near year 1 or 9999 must not be shifted out of
            # range into the server's local zone when they are read back
            self.engine = self._create_engine(url, pool_size=settings.pool_size, max_overflow=20,
                                              pool_pre_ping=True,
                                              connect_args={"options": "-c timezone=UTC"})
            self._write_lock = None
            self._group = None
        else:
            raise SettingsError(f"unsupported database {url.get_backend_name()!r}: {URL_HINT}")
        #: this thread's open write connection: a write inside it is a SAVEPOINT of it
        self._held = threading.local()

    @staticmethod
    def _create_engine(url: sa.URL, **options: Any) -> sa.Engine:
        try:
            return sa.create_engine(url, **options)
        except (sa.exc.NoSuchModuleError, ImportError):
            raise SettingsError(f"no driver {url.get_driver_name()!r} for "
                                f"{url.get_backend_name()} is installed: {URL_HINT} "
                                "(psycopg 3 and Python's sqlite3 come with Kartoteka)") from None

    def _configure_sqlite(self) -> None:
        synchronous = self.settings.sqlite_synchronous.upper()
        busy = self.settings.busy_timeout_ms

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
        user's scope (a migration, a backfill); see `engine.access.scopes.guard`.
        Inside another write of this thread (a bulk call's, engine/records/bulk.py) it is a
        SAVEPOINT of that one: its error undoes only its own statements, and it is
        committed with the outer write."""
        held: sa.Connection | None = getattr(self._held, "connection", None)
        if held is not None and system is None:
            joining: Joining | None = getattr(self._held, "joining", None)
            if joining is not None:  # see `joining`
                try:
                    yield held
                except BaseException:
                    joining.broken = True
                    raise
                return
            if getattr(self._held, "covered", False):  # see `savepoint`
                self._held.covered = False
                try:
                    yield held
                finally:
                    self._held.covered = True
                return
            with held.begin_nested():
                yield held
            return
        with self._open_write(system) as connection:
            if system is not None:  # its statements reach every record: never lent on
                yield connection
                return
            self._held.connection = connection
            try:
                yield connection
            finally:
                self._held.connection = None

    @contextmanager
    def joining(self) -> Iterator[Joining]:
        """Inside this thread's open write: every write opened inside joins it without a
        savepoint of its own, and an exception leaving any of them marks the returned
        state `broken` — its statements are not undone, so the caller must then undo the
        whole block (a savepoint of its own around it) and redo the work with savepoints.
        Bulk's happy path: a batch of good rows without a savepoint per row."""
        if getattr(self._held, "connection", None) is None:
            raise RuntimeError("Database.joining is only for use inside a write")
        state = Joining()
        self._held.joining = state
        try:
            yield state
        finally:
            self._held.joining = None

    def held(self) -> sa.Connection:
        """This thread's open write connection (inside a write only)."""
        connection: sa.Connection | None = getattr(self._held, "connection", None)
        if connection is None:
            raise RuntimeError("no write is open in this thread")
        return connection

    @contextmanager
    def savepoint(self) -> Iterator[sa.Connection]:
        """A SAVEPOINT of this thread's open write that also covers the one write opened
        directly inside it: that write joins it instead of opening a second savepoint (a
        bulk row's savepoint and the create inside it — half the statements of a row).
        Writes nested deeper have their own savepoints, as always."""
        held: sa.Connection | None = getattr(self._held, "connection", None)
        if held is None:
            raise RuntimeError("Database.savepoint is only for use inside a write")
        with held.begin_nested():
            self._held.covered = True
            try:
                yield held
            finally:
                self._held.covered = False

    @contextmanager
    def _open_write(self, system: str | None) -> Iterator[sa.Connection]:
        if self._group is not None and system is None:
            with self._group.write() as connection:
                yield connection
            return
        with self._group.exclusive() if self._group is not None else nullcontext():
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


#: the most writes that share one commit (a bound on how long the first of them waits)
GROUP_LIMIT = 64


class _Batch:
    """Writes sharing one transaction: done when it is committed (or failed: `error`)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class _GroupCommit:
    """SQLite write transactions that share a commit while writers queue for the lock.

    A writer takes the lock and, when no transaction is open, begins one (BEGIN
    IMMEDIATE); a writer joining an open one runs in a SAVEPOINT, so its failure undoes
    only its own statements. When it is done and another writer is waiting for the lock,
    it hands the open transaction on; the last of a run (or the GROUP_LIMIT-th) commits.
    Every writer waits for the commit of its batch before it returns, and raises if that
    commit failed: a write is acknowledged only once it is on disk, as before. A lone
    writer commits at once, exactly as without grouping.
    """

    def __init__(self, engine: sa.Engine, lock: threading.Lock):
        self.engine = engine
        self.lock = lock
        self._counting = threading.Lock()
        self.waiting = 0  # writers blocked on `lock`
        self.connection: sa.Connection | None = None
        self.transaction: sa.RootTransaction | None = None
        self.batch: _Batch | None = None
        self.size = 0

    def _acquire(self) -> None:
        with self._counting:
            self.waiting += 1
        self.lock.acquire()
        with self._counting:
            self.waiting -= 1

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        self._acquire()
        batch: _Batch | None = None
        try:
            if self.connection is None:
                self._begin()
            connection, batch = self.connection, self.batch
            assert connection is not None
            savepoint = connection.begin_nested() if self.size else None
            self.size += 1
            try:
                yield connection
            except BaseException as error:
                batch = None  # not acknowledged: nothing to wait for
                if savepoint is None or not self._undo(savepoint):
                    # the batch's first write (nothing else in it yet), or a failure that
                    # ended the whole transaction: every write in the batch is lost
                    self._end(commit=False, error=error)
                raise
            if savepoint is not None:
                savepoint.commit()
        finally:
            if self.connection is not None and (self.waiting == 0 or self.size >= GROUP_LIMIT):
                self._end(commit=True)
            self.lock.release()
        assert batch is not None
        batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _begin(self) -> None:
        """Open a batch: a connection and its write transaction (BEGIN IMMEDIATE)."""
        connection = self.engine.connect()
        try:
            connection.execution_options(kt_write=True)
            transaction = connection.begin()
        except BaseException:
            connection.invalidate()  # half begun: not used again
            connection.close()
            raise
        self.connection, self.transaction = connection, transaction
        self.batch, self.size = _Batch(), 0

    @staticmethod
    def _undo(savepoint: sa.NestedTransaction) -> bool:
        """Roll back one write's savepoint; False when the transaction itself is gone."""
        try:
            savepoint.rollback()
        except sa.exc.SQLAlchemyError:
            return False
        driver = savepoint.connection.connection.driver_connection
        return bool(getattr(driver, "in_transaction", True))

    def _end(self, *, commit: bool, error: BaseException | None = None) -> None:
        """Commit (or roll back) the open batch and wake its writers."""
        connection, transaction, batch = self.connection, self.transaction, self.batch
        self.connection = self.transaction = self.batch = None
        self.size = 0
        assert connection is not None and transaction is not None and batch is not None
        try:
            if commit:
                transaction.commit()
            else:
                transaction.rollback()
                batch.error = error
        except BaseException as failure:  # the commit failed: no write of it is on disk
            batch.error = failure
            connection.invalidate()  # whatever state it is in, it is not used again
        finally:
            try:
                connection.close()
            finally:
                batch.done.set()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The lock for a write of its own (a system write: its connection says why):
        a batch handed on to it is committed first."""
        self._acquire()
        try:
            if self.connection is not None:
                self._end(commit=True)  # its writers hear of a failure themselves
            yield
        finally:
            self.lock.release()


#: the execution option of a statement or connection that reaches every record on purpose,
#: saying why (the access layer's guard lets it through; see engine/access/scopes.py)
UNSCOPED = "kt_unscoped"


def _system(why: str | None) -> dict[str, str]:
    return {} if why is None else {UNSCOPED: why}
