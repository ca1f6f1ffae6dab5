"""An acknowledged write survives a power cut: SQLite runs with `synchronous=FULL` unless
told otherwise. The rest of the suite asks for NORMAL to save an fsync per commit
(tests/conftest.py); these tests pin the product's default and show that the level is a
setting, honoured on every connection of the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine import DatabaseSettings, Kartoteka
from tests.conftest import DEFAULT_SETUP

LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _levels(kt: Kartoteka) -> tuple[str, str]:
    """The synchronous level and journal mode of a read and of a write connection."""
    with kt.db.read() as read, kt.db.write() as write:
        levels = {LEVELS[conn.exec_driver_sql("PRAGMA synchronous").scalar_one()]
                  for conn in (read, write)}
        modes = {conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() for conn in (read, write)}
    assert len(levels) == 1 and len(modes) == 1
    return levels.pop(), modes.pop()


def test_sqlite_is_durable_by_default(tmp_path: Path) -> None:
    assert DatabaseSettings().sqlite_synchronous == "FULL"
    kt = Kartoteka.open(DEFAULT_SETUP, f"sqlite:///{tmp_path / 'crm.db'}")
    try:
        kt.migrate()
        assert _levels(kt) == ("FULL", "wal")
    finally:
        kt.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_level_is_a_setting(make_kt: Callable[..., Kartoteka]) -> None:
    assert _levels(make_kt()) == ("NORMAL", "wal")  # the suite's level
    assert _levels(make_kt(sqlite_synchronous="FULL")) == ("FULL", "wal")
