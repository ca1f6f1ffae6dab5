"""SQLite group commit (engine/storage/database.py `_GroupCommit`): writers that queue for
the write lock share one transaction, each in its own savepoint, and none returns before
the commit holding it is done. Checked with real threads on a real SQLite file: many
writes take fewer commits, a failing write undoes only itself, a failed commit fails every
write of its batch (none acknowledged, none stored), and a system write in the middle of
the traffic is applied on its own."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Kartoteka
from engine.errors import RequestError
from engine.storage.database import GROUP_LIMIT

SETUP = Path(__file__).resolve().parent.parent / "schemas"
WRITERS = 12


@pytest.fixture
def kt(tmp_path: Path, open_kt: Callable[..., Kartoteka]) -> Iterator[Kartoteka]:
    engine = open_kt(SETUP, f"sqlite:///{tmp_path / 'group.db'}")
    engine.migrate()
    yield engine
    engine.close()


def _commits(kt: Kartoteka) -> list[int]:
    count = [0]
    sa.event.listen(kt.db.engine, "commit", lambda _conn: count.__setitem__(0, count[0] + 1))
    return count


def _count(kt: Kartoteka, sql: str) -> Any:
    with kt.db.read(system="test") as conn:
        return conn.execute(sa.text(sql)).scalar()


def _slow_writes(kt: Kartoteka) -> None:
    """Hold each statement a moment, so that writers really queue behind each other."""
    def pause(*_: Any) -> None:
        threading.Event().wait(0.002)
    sa.event.listen(kt.db.engine, "before_cursor_execute", pause)


def test_queued_writes_share_commits_and_each_failure_stays_its_own(kt: Kartoteka) -> None:
    client = kt.records.create("client", {"name": "Тест 测试"})["id"]
    commits = _commits(kt)
    _slow_writes(kt)

    def write(i: int) -> str:
        try:
            if i % 3 == 0:  # refused in the database: the number is taken
                kt.records.create("sale", {"number": "same", "client": client})
            else:
                kt.records.create("sale", {"number": f"№{i}", "client": client, "amount": "1.5"})
            return "ok"
        except RequestError as error:
            return error.code

    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = Counter(pool.map(write, range(120)))
    assert outcomes == {"ok": 80 + 1, "unique_violation": 39}, outcomes
    assert _count(kt, "SELECT count(*) FROM sale") == 81
    # every stored sale has its journal and stage history rows; nothing else was kept
    assert _count(kt, "SELECT count(*) FROM kt_change WHERE entity = 'sale'") == 81
    assert _count(kt, "SELECT count(*) FROM kt_stage_history") == 81
    assert commits[0] < 120 / 2, commits[0]  # batches formed
    assert commits[0] >= 120 / GROUP_LIMIT


def test_a_failed_commit_fails_every_write_of_its_batch(kt: Kartoteka) -> None:
    client = kt.records.create("client", {"name": "Client"})["id"]
    _slow_writes(kt)
    failing = threading.Event()

    def refuse(_conn: Any) -> None:
        if failing.is_set():
            raise OSError("disk full (simulated)")
    sa.event.listen(kt.db.engine, "commit", refuse)
    failing.set()

    def write(i: int) -> str:
        try:
            kt.records.create("sale", {"number": f"F{i}", "client": client})
            return "acknowledged"
        except OSError:
            return "failed"

    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = Counter(pool.map(write, range(40)))
    failing.clear()
    assert outcomes == {"failed": 40}
    assert _count(kt, "SELECT count(*) FROM sale") == 0
    # and the next writes go through
    assert kt.records.create("sale", {"number": "after", "client": client})["number"] == "after"


def test_a_system_write_among_grouped_writes(kt: Kartoteka) -> None:
    client = kt.records.create("client", {"name": "Client"})["id"]
    _slow_writes(kt)
    done = []

    def system_write() -> None:
        with kt.db.write(system="test: a backfill") as conn:
            conn.execute(sa.text("UPDATE client SET city = 'Казань'"))
        done.append(True)

    def write(i: int) -> None:
        if i == 10:
            system_write()
        else:
            kt.records.create("sale", {"number": f"N{i}", "client": client})

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, range(30)))
    assert done == [True]
    assert _count(kt, "SELECT count(*) FROM sale") == 29
    assert _count(kt, "SELECT city FROM client") == "Казань"


def test_a_write_whose_transaction_cannot_begin_fails_alone(kt: Kartoteka) -> None:
    client = kt.records.create("client", {"name": "Client"})["id"]
    refused = []

    def refuse_once(_conn: Any) -> None:
        if not refused:
            refused.append(True)
            raise OSError("database is locked (simulated)")
    sa.event.listen(kt.db.engine, "begin", refuse_once)
    with pytest.raises(OSError):
        kt.records.create("sale", {"number": "first", "client": client})
    assert kt.records.create("sale", {"number": "second", "client": client})["number"] == "second"
    assert _count(kt, "SELECT group_concat(number) FROM sale") == "second"
