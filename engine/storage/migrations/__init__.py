"""Migrations: the setup changes, the data stays.

    model.py    what the setup history records of each applied setup (its version)
    planner.py  setup + live database → the plan: steps with their counts
    steps.py    the steps; each says what it does in plain words and applies itself
                through Alembic's operations (batch mode on SQLite)
    convert.py  a value from one field type to another, or why it cannot be
    backup.py   the backup written before steps that lose data
    runner.py   apply a plan in one transaction, record the setup version

`plan` changes nothing; `apply` applies the plan or raises `PlanRefused` having changed
nothing; `verify` raises `DatabaseMismatch` when the database is behind its setup.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.errors import DatabaseMismatch
from engine.storage.database import Database
from engine.storage.migrations.model import HISTORY_TABLE, last_applied
from engine.storage.migrations.planner import MigrationPlan, compare
from engine.storage.migrations.runner import Applied, PlanRefused, apply
from engine.storage.tables import Storage
from engine.types.columns import UTCDateTime

__all__ = ["Applied", "HistoryEntry", "MigrationPlan", "PlanRefused", "apply", "history", "plan",
           "verify"]


def plan(storage: Storage, database: Database) -> MigrationPlan:
    """What `apply` would do now, with its counts; changes nothing."""
    with database.read() as conn:
        return compare(conn, storage, last_applied(conn))


def verify(storage: Storage, database: Database, *, fix: str = "kartoteka migrate SETUP --db URL") -> None:
    """Raise `DatabaseMismatch` unless the database is in step with the setup. `fix` is the
    command that brings it in step, named in the message."""
    result = plan(storage, database)
    if result.steps:
        lines = [str(step) for step in result.steps[:20]]
        more = len(result.steps) - len(lines)
        raise DatabaseMismatch(
            "the database does not match the setup; migrate would:\n"
            + "\n".join(f"- {line}" for line in lines)
            + (f"\n- ... and {more} more" if more > 0 else "")
            + f"\nsee the plan with `{fix} --plan`, then apply it with `{fix}`")


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    applied_at: dt.datetime
    setup_name: str
    digest: str
    steps: tuple[str, ...]
    allow_data_loss: bool
    backup: str | None


def history(database: Database) -> list[HistoryEntry]:
    """Every setup version applied to the database, oldest first."""
    with database.read() as conn:
        if not sa.inspect(conn).has_table(HISTORY_TABLE):
            return []
        table = sa.table(HISTORY_TABLE, *(sa.column(name) for name in
                                           ("id", "setup_name", "digest", "summary")),
                         sa.column("applied_at", UTCDateTime()))
        rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
    entries = []
    for row in rows:
        summary: dict[str, Any] = json.loads(row.summary)
        entries.append(HistoryEntry(row.id, row.applied_at, row.setup_name, row.digest,
                                    tuple(summary.get("applied") or ()),
                                    bool(summary.get("allow_data_loss")), summary.get("backup")))
    return entries
