"""A PostgreSQL server for the tests: the one named by KARTOTEKA_TEST_POSTGRES_URL, or a
throwaway one started from Debian's binaries (/usr/lib/postgresql/*/bin) for the session
(under pytest-xdist by the controller, for every worker: tests/conftest.py).

Each test gets an empty database: `ScratchDatabase` is created once per test process and
emptied before every test (other connections ended, every schema dropped, an empty
`public` made again), which leaves nothing a test could tell from a new database at about
a twentieth of the cost of CREATE DATABASE and DROP DATABASE for every test; a test that
only builds engines gets one of a few databases kept migrated per setup, tables emptied.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

ENV = "KARTOTEKA_TEST_POSTGRES_URL"
#: the URL of the throwaway server this run's controller started for its pytest-xdist
#: workers and put in ENV (tests/conftest.py), else None
SHARED_THROWAWAY: str | None = None
HOW_TO = (f"PostgreSQL tests skipped: install Debian's postgresql package "
          f"(apt-get install postgresql) or set {ENV}=postgresql+psycopg://user@127.0.0.1:5432/db")


def _binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """Yield a server URL (no database part) or None when no server can be had."""
    if os.environ.get(ENV):
        yield os.environ[ENV].rsplit("/", 1)[0] + "/"
        return
    bindir = _binaries()
    if bindir is None:
        yield None
        return
    as_root = os.geteuid() == 0
    workdir = tempfile.mkdtemp(prefix="kartoteka-pg-")
    data = os.path.join(workdir, "data")
    prefix: list[str] = []
    if as_root:
        shutil.chown(workdir, "postgres", "postgres")
        os.chmod(workdir, 0o700)
        prefix = ["runuser", "-u", "postgres", "--"]
    user = "postgres" if as_root else os.environ.get("USER", "postgres")
    port = _free_port()
    subprocess.run([*prefix, f"{bindir}/initdb", "-D", data, "-U", user, "--auth=trust",
                    "--encoding=UTF8", "--locale=C.UTF-8"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = (f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    subprocess.run([*prefix, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-w", "-l",
                    os.path.join(workdir, "log"), "start"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/"
    finally:
        subprocess.run([*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


def describe_server() -> str:
    """One line for the test report: which server, its version, and where it came from."""
    if SHARED_THROWAWAY is not None:
        bindir = _binaries()
        return (f"postgresql: a throwaway server at {SHARED_THROWAWAY} ({bindir}), "
                "started for this run's workers")
    if os.environ.get(ENV):
        url = sa.make_url(os.environ[ENV])
        shown = sa.URL.create(url.drivername, url.username, None, url.host, url.port,
                              url.database).render_as_string(hide_password=False)
        engine = sa.create_engine(os.environ[ENV], connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                version = f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar()}"
        except sa.exc.DBAPIError as error:
            version = f"unreachable: {str(error.orig).strip().splitlines()[0]}"
        finally:
            engine.dispose()
        return f"postgresql: {shown} ({version}), from {ENV}"
    bindir = _binaries()
    if bindir is None:
        return f"postgresql: none; {HOW_TO}"
    version = subprocess.run([f"{bindir}/postgres", "--version"], capture_output=True,
                             text=True).stdout.strip()
    return (f"postgresql: a throwaway server on 127.0.0.1 ({version}, {bindir}), "
            "started by the suite when a test first needs it")


#: what a database's schema is, in one value: its schemas, the columns (type, not null,
#: default), indexes and constraints of `public`, its functions and triggers (the board's
#: counters), and the setups recorded as migrated — read from pg_catalog, not through
#: information_schema's views (~3.5 ms against ~7 of every PostgreSQL test's start)
_FINGERPRINT = """
SELECT md5(concat_ws('|',
  (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace
    WHERE left(nspname, 3) <> 'pg_' AND nspname <> 'information_schema'),
  (SELECT string_agg(concat_ws(':', c.relname, c.relkind, a.attname,
                               format_type(a.atttypid, a.atttypmod), a.attnotnull,
                               pg_get_expr(d.adbin, d.adrelid)), ',' ORDER BY c.relname, a.attname)
     FROM pg_class c
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')),
  (SELECT string_agg(pg_get_indexdef(i.indexrelid), ',' ORDER BY 1) FROM pg_index i
     JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace),
  (SELECT string_agg(conname || pg_get_constraintdef(oid), ',' ORDER BY conname)
     FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
  (SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc
    WHERE pronamespace = 'public'::regnamespace),
  (SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger
    WHERE NOT tgisinternal)))
"""
#: the table that records migrations: kept by a reset, so a setup still reads as migrated
HISTORY = "kt_setup_history"

#: a kept database made as it was right after its migration, in one round trip; raises
#: (nothing done) when its schema is not the one migrated (`{expected}`: its fingerprint
#: then) or it was migrated again. Every other connection to it is ended first. DELETE, not
#: TRUNCATE: a test leaves a few rows, and TRUNCATE makes new files for every table and
#: index (85 ms for the default setup, vs 1); foreign keys off meanwhile (the order of the
#: tables does not matter), and every sequence back at 1, as in a new database — but the
#: migration history's, which goes on after its row (a test migrating again would collide)
_RESET = f"""
DO $kt$
DECLARE
  name text;
BEGIN
  PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid();
  IF ({_FINGERPRINT.strip()}) IS DISTINCT FROM '{{expected}}'
     OR (SELECT count(*) FROM {HISTORY}) <> 1 THEN
    RAISE EXCEPTION 'not as migrated';
  END IF;
  PERFORM set_config('session_replication_role', 'replica', true);
  FOR name IN SELECT quote_ident(tablename) FROM pg_tables
              WHERE schemaname = 'public' AND tablename <> '{HISTORY}' LOOP
    EXECUTE 'DELETE FROM ' || name;
  END LOOP;
  PERFORM setval(c.oid, 1, false) FROM pg_class c
    WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace
      AND c.oid IS DISTINCT FROM pg_get_serial_sequence('{HISTORY}', 'id')::regclass;
END
$kt$
"""


class ScratchDatabase:
    """Databases on `server` for one test process.

    `url` is emptied for each test that connects to it itself, by `empty()`. A test that
    only builds engines (`make_kt`) gets, through `reuse(setup)`, a database that holds a
    fresh migration of its setup with every table emptied, the schema kept: a migration of
    the default setup is ~40 DDL statements, most of a PostgreSQL test's set-up (85 ms
    against 5 ms to check the schema is unchanged and empty the tables). Up to KEEP setups
    are kept so, each in a database of its own, so tests that take turns between a few
    setups (the default one and a module's own) do not migrate at every turn."""

    #: setups kept migrated at once, each in its own database (the least recently used goes)
    KEEP = 12

    def __init__(self, server: str):
        self.server = server
        self.url, drop = fresh_database(server)
        self._drops = [drop]
        self._admins: dict[str, sa.Engine] = {}
        with self._admin(self.url).connect() as conn:
            self._modern = int(conn.exec_driver_sql("SHOW server_version_num").scalar()) >= 150000
        #: database URL → the setup it holds as migrated by `migrated()`, and the schema's
        #: fingerprint then (absent: unknown)
        self._holds: dict[str, tuple[object, str]] = {}
        #: the databases kept for setups, least recently used first: URL → its setup
        self._kept: OrderedDict[str, object] = OrderedDict()
        #: emptied lazily: `reuse` or `empty` runs before the test's first engine
        self.pending = False

    def _admin(self, url: str) -> sa.Engine:
        if url not in self._admins:
            self._admins[url] = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        return self._admins[url]

    def reuse(self, setup: object) -> tuple[str, bool]:
        """Before a test's first engine of `setup`: the URL of the database kept for it, and
        whether it holds exactly a fresh migration of it (same schema as right after that
        migration; its tables are emptied: no need to migrate). False: it is empty, to be
        migrated (then say so with `migrated`)."""
        self.pending = False
        url = next((url for url, kept in self._kept.items() if kept is setup), None)
        if url is None:
            if len(self._kept) < self.KEEP:
                url, drop = fresh_database(self.server)
                self._drops.append(drop)
            else:  # the least recently used setup's database
                url, _ = self._kept.popitem(last=False)
            self._kept[url] = setup
            self._empty(url)
            return url, False
        self._kept.move_to_end(url)
        holds = self._holds.get(url)
        if holds is not None and holds[0] is setup:
            try:
                with self._admin(url).connect() as conn:
                    conn.exec_driver_sql(_RESET.replace("{expected}", holds[1]))
                return url, True
            except sa.exc.DBAPIError:  # changed since (or migrated again): made afresh
                pass
        self._empty(url)
        return url, False

    def migrated(self, setup: object, url: str) -> None:
        """The database at `url` now holds a fresh migration of `setup` (and nothing else)."""
        with self._admin(url).connect() as conn:
            self._holds[url] = (setup, conn.exec_driver_sql(_FINGERPRINT).scalar())

    def empty(self) -> str:
        """The database of tests that connect to it themselves, emptied; its URL."""
        self.pending = False
        self._empty(self.url)
        return self.url

    def _empty(self, url: str) -> None:
        """End every other connection to the database, drop everything in it."""
        self._holds.pop(url, None)
        with self._admin(url).connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            schemas = conn.exec_driver_sql(
                "SELECT nspname FROM pg_namespace "
                "WHERE left(nspname, 3) <> 'pg_' AND nspname <> 'information_schema'").scalars()
            for schema in list(schemas):
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            # `public` as template0 has it: PostgreSQL 15 gave it to the database owner and
            # took CREATE away from everyone else
            if self._modern:
                conn.exec_driver_sql("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                conn.exec_driver_sql("GRANT USAGE ON SCHEMA public TO PUBLIC")
            else:
                conn.exec_driver_sql("CREATE SCHEMA public")
                conn.exec_driver_sql("GRANT ALL ON SCHEMA public TO PUBLIC")

    def drop(self) -> None:
        for engine in self._admins.values():
            engine.dispose()
        for drop in self._drops:
            drop()


def fresh_database(server: str) -> tuple[str, callable]:  # type: ignore[valid-type]
    """Create an empty database on `server`; return its URL and a function that drops it."""
    name = "kt_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server + "postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
    admin.dispose()

    def drop() -> None:
        engine = sa.create_engine(server + "postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for _ in range(20):
                try:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except sa.exc.OperationalError:
                    time.sleep(0.1)
        engine.dispose()

    return server + name, drop
