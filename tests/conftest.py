"""Fixtures: every database test runs on a real SQLite file and on a real PostgreSQL server.

- `db_url`: a fresh, empty database, parametrised as [sqlite] and [postgresql] (on
  PostgreSQL one database per test process, emptied before each test: `tests/pg.py`; a
  test that reaches it only through `make_kt` finds the schema of its setup already there
  when the previous test left it unchanged, with every table emptied);
- `make_kt(setup_dir)`: a migrated `Kartoteka` engine over that database;
- `open_kt(setup_dir, url)`: a `Kartoteka` as the tests build them, not migrated;
- `client`: a TestClient (real HTTP through the ASGI app) over the default setup;
- `write_setup(files)`: writes a setup folder of YAML texts and returns its path.

How the tests build engines, and why it is quick: a setup folder is parsed and checked once
per session (`tests/setups.py`), and SQLite databases run with `synchronous=NORMAL` (WAL
still on: nothing is lost when a process dies, only on a power cut, which no test makes).
The product's default stays FULL, proved by tests/test_durability.py; a test about
durability asks for it with `make_kt(..., sqlite_synchronous="FULL")`.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import argon2.profiles
import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import DatabaseSettings, Kartoteka, Settings
from engine.access import passwords
from engine.types.moments import Clock
from tests import asgi_client, pg, statement_cache
from tests.pg import HOW_TO, ScratchDatabase, describe_server, postgres_server
from tests.setups import SetupCache

asgi_client.install()  # TestClient's requests in one call into its thread (tests/asgi_client.py)
statement_cache.install()  # every engine's statements compiled once (tests/statement_cache.py)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
EXAMPLES = ROOT / "examples"
#: SQLite's synchronous level in the tests' databases (the product's default is FULL)
TEST_SYNCHRONOUS = "NORMAL"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Collect garbage less often: a test builds and drops engines, apps and schemas by the
    thousand, and with Python's default thresholds the collector re-walked every object
    the session had made (imports, loaded setups, their tables) many times a test, ~15% of
    the suite's CPU. What is loaded before the first test is frozen out of collection; the
    rest is still collected, every 50,000 allocations instead of 700."""
    passwords.use_parameters(argon2.profiles.CHEAPEST)  # not ~0.3 s a hash, by design slow
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Leave the garbage of the run to the process's exit: pytest's unraisable-exception
    plugin collects once more when the session ends, and over a test process's heap after
    thousands of tests (~4 million objects) that one collection took 4–9 s, the last
    seconds of every run. The price: an exception raised in a finaliser of that last
    garbage goes unreported (those of the tests' own garbage, collected as they run, are)."""
    gc.freeze()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one throwaway PostgreSQL server for every worker, started here in
    the controller before the workers (they inherit its URL through the environment), as
    CI's is: a server per worker cost each its own initdb, start and memory. A server that
    cannot be started here is left to the workers, whose PostgreSQL tests then say why."""
    if hasattr(config, "workerinput") or os.environ.get(pg.ENV):
        return
    if getattr(config.option, "dist", "no") == "no" or (config.option.numprocesses or 0) < 2:
        return  # one process: its server is started when a test first needs it
    server = postgres_server()
    try:
        url = server.__enter__()
    except (OSError, subprocess.CalledProcessError):
        return
    if url is None:
        return
    config.add_cleanup(lambda: server.__exit__(None, None, None))
    os.environ[pg.ENV] = url + "postgres"
    pg.SHARED_THROWAWAY = url


def pytest_report_header(config: pytest.Config) -> str:
    return describe_server()


#: the modules whose tests take longest (real server processes, fuzzing, end-to-end runs),
#: longest first: under pytest-xdist they start first, so the last minute of a run is not
#: one worker finishing a long module alone while the other waits
LONG_FIRST = (
    "test_reliability.py",
    "test_openapi_fuzz.py",
    "test_bench_smoke.py",
    "test_bench_access_smoke.py",
    "test_serve_stack.py",
    "test_durability.py",
    "test_concurrency.py",
    "test_constraints.py",
    "test_migrations_bench.py",
    "test_migrations.py",
    "test_formulas.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long modules first; a stable sort after pytest's own ordering, so each module keeps
    its order (and its module-scoped fixtures are set up once)."""
    rank = {name: n for n, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))


@pytest.fixture(scope="session")
def postgres() -> Iterator[str | None]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def scratch_database(postgres: str | None) -> Iterator[ScratchDatabase | None]:
    if postgres is None:
        yield None
        return
    database = ScratchDatabase(postgres)
    yield database
    database.drop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kartoteka.db'}"
    database: ScratchDatabase | None = request.getfixturevalue("scratch_database")
    if database is None:
        pytest.skip(HOW_TO)
    if _only_make_kt_connects(request):
        database.pending = True  # make_kt resets it: reused when it holds the same setup
        return database.url
    return database.empty()


def _only_make_kt_connects(request: pytest.FixtureRequest) -> bool:
    """Does the test reach the database only through `make_kt` (no fixture of its own, nor
    the test itself, takes `db_url`)? Then make_kt decides how to start it afresh."""
    info = request.node._fixtureinfo  # type: ignore[attr-defined]
    if "db_url" in info.argnames:
        return False
    return all("db_url" not in definition.argnames or definition.func is _make_kt_fixture
               for definitions in info.name2fixturedefs.values() for definition in definitions)


@pytest.fixture(scope="session")
def setups(tmp_path_factory: pytest.TempPathFactory) -> SetupCache:
    return SetupCache(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="session")
def open_kt(setups: SetupCache) -> Callable[..., Kartoteka]:
    """`Kartoteka.open` as the tests use it: a setup loaded once per session, and SQLite at
    TEST_SYNCHRONOUS unless `sqlite_synchronous` says otherwise; `clock` freezes the
    engine's today and now."""

    def open_(setup_dir: Path | str, url: str, *, sqlite_synchronous: str = TEST_SYNCHRONOUS,
              clock: Clock | None = None, **settings: object) -> Kartoteka:
        database = DatabaseSettings(url=url, sqlite_synchronous=sqlite_synchronous)
        setup = setups.load(setup_dir)
        return Kartoteka(setup, Settings(database, **settings),  # type: ignore[arg-type]
                         registry=setups.registry, storage=setups.storage(setup), clock=clock)

    return open_


def _make_kt_fixture(db_url: str, open_kt: Callable[..., Kartoteka],
                     request: pytest.FixtureRequest) -> Iterator[Callable[..., Kartoteka]]:
    engines: list[Kartoteka] = []
    scratch: ScratchDatabase | None = request.getfixturevalue("scratch_database") \
        if db_url.startswith("postgresql") else None

    url = db_url  # on PostgreSQL, the database kept for the first engine's setup

    def make(setup_dir: Path | str = DEFAULT_SETUP, **settings: object) -> Kartoteka:
        nonlocal url
        kt = None
        if scratch is not None and scratch.pending:
            setup = setups_of(request).base(setups_of(request).load(setup_dir))
            url, reused = scratch.reuse(setup)
            kt = open_kt(setup_dir, url, **settings)
            if not reused:
                kt.migrate()
                scratch.migrated(setup, url)
        elif url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
            copy_template(setups_of(request), open_kt, setup_dir, Path(url[len("sqlite:///"):]))
            kt = open_kt(setup_dir, url, **settings)
        else:
            kt = open_kt(setup_dir, url, **settings)
            kt.migrate()
        engines.append(kt)
        return kt

    yield make
    for kt in engines:
        kt.close()


make_kt = pytest.fixture(_make_kt_fixture, name="make_kt")


def copy_template(setups: SetupCache, open_kt: Callable[..., Kartoteka], setup_dir: Path | str,
                  path: Path) -> None:
    """A fresh SQLite file at `path`: a copy of the setup's migrated template (tests/setups.py)."""
    def build(template_path: Path) -> None:
        template = open_kt(setup_dir, f"sqlite:///{template_path}")
        template.migrate()
        template.close()
    shutil.copyfile(setups.sqlite_template(setups.load(setup_dir), build), path)


@pytest.fixture
def sqlite_kt(setups: SetupCache, open_kt: Callable[..., Kartoteka],
              tmp_path: Path) -> Iterator[Callable[..., Kartoteka]]:
    """`make_kt` on SQLite only, for tests of what does not depend on the database (the HTTP
    guard, the app's pages' shape): a migrated engine on a fresh file, closed after the test."""
    engines: list[Kartoteka] = []

    def make(setup_dir: Path | str = DEFAULT_SETUP, **settings: object) -> Kartoteka:
        path = tmp_path / f"kartoteka-{len(engines)}.db"
        copy_template(setups, open_kt, setup_dir, path)
        engines.append(open_kt(setup_dir, f"sqlite:///{path}", **settings))
        return engines[-1]

    yield make
    for kt in engines:
        kt.close()


def setups_of(request: pytest.FixtureRequest) -> SetupCache:
    cache: SetupCache = request.getfixturevalue("setups")
    return cache


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka]) -> Kartoteka:
    """The default setup, migrated, on a fresh database."""
    return make_kt()


@pytest.fixture
def client(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def http(client: TestClient) -> TestClient:
    """`client`, by the name the bulk, import and export tests call it."""
    return client


@pytest.fixture
def write_setup(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    def write(files: dict[str, str], name: str = "setup") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for filename, text in files.items():
            (folder / filename).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return folder

    return write
