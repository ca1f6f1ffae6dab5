"""Fixtures: every database test runs on a real SQLite file and on a real PostgreSQL server.

- `db_url`: a fresh, empty database, parametrised as [sqlite] and [postgresql];
- `make_kt(setup_dir)`: a migrated `Kartoteka` engine over that database;
- `client`: a TestClient (real HTTP through the ASGI app) over the default setup;
- `write_setup(files)`: writes a setup folder of YAML texts and returns its path.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.pg import HOW_TO, fresh_database, postgres_server

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def postgres() -> Iterator[str | None]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kartoteka.db'}"
        return
    server = request.getfixturevalue("postgres")
    if server is None:
        pytest.skip(HOW_TO)
    url, drop = fresh_database(server)
    yield url
    drop()


@pytest.fixture
def make_kt(db_url: str) -> Iterator[Callable[..., Kartoteka]]:
    engines: list[Kartoteka] = []

    def make(setup_dir: Path | str = DEFAULT_SETUP, **settings: object) -> Kartoteka:
        kt = Kartoteka.open(setup_dir, db_url, **settings)
        kt.migrate()
        engines.append(kt)
        return kt

    yield make
    for kt in engines:
        kt.close()


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
def write_setup(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    def write(files: dict[str, str], name: str = "setup") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for filename, text in files.items():
            (folder / filename).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return folder

    return write
