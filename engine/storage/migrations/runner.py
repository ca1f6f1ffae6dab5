"""Apply a plan: in one transaction, or not at all.

The plan is made again inside the migration's write transaction, so its counts are those
of the data it changes. Refused steps stop everything; steps that lose data need
`allow_data_loss`, and then a backup is written first. Any failure rolls back every step,
DDL included: PostgreSQL and SQLite both have transactional DDL. On SQLite foreign keys
are switched off for the connection while tables are rebuilt (a rebuilt table is dropped
and replaced, which must not cascade), and checked with `foreign_key_check` before commit.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from engine.errors import DatabaseError, MigrationRefused
from engine.storage.database import Database
from engine.storage.migrations import steps as s
from engine.storage.migrations.backup import write_backup
from engine.storage.migrations.model import last_applied
from engine.storage.migrations.planner import MigrationPlan, compare
from engine.storage.stage_counts import keep as keep_stage_counts
from engine.storage.stage_counts import pause as pause_stage_counts
from engine.storage.tables import Storage

FLAG = "--allow-data-loss"


class PlanRefused(MigrationRefused):
    """The plan has refused steps, or steps that lose data without `allow_data_loss`."""

    def __init__(self, reasons: list[str], *, needs_flag: bool = False):
        self.reasons = tuple(reasons)
        self.needs_flag = needs_flag
        head = (f"migrate stops: these steps lose data; run again with {FLAG} to apply them "
                "after a backup" if needs_flag else
                "migrate refuses: no flag makes these steps safe; change the setup or the data")
        DatabaseError.__init__(self, head + ":\n" + "\n".join(f"- {r}" for r in reasons)
                               + "\nNothing was changed.")


@dataclass
class Applied:
    plan: MigrationPlan
    backup: Path | None = None


def apply(storage: Storage, database: Database, *, allow_data_loss: bool = False,
          backup_dir: Path | None = None,
          on_step: Callable[[s.Step], None] | None = None,
          on_progress: Callable[[str], None] | None = None) -> Applied:
    """Bring the database in step with the setup, in one transaction; raise `PlanRefused`
    (and change nothing) when a step is refused or would lose data without the flag.
    `on_step` is called after each applied step (progress; tests make it fail midway)."""
    with _migration(database) as conn:
        plan = compare(conn, storage, last_applied(conn))
        if plan.refusals:
            raise PlanRefused(plan.refusals)
        if plan.data_loss and not allow_data_loss:
            raise PlanRefused([str(step) for step in plan.data_loss], needs_flag=True)
        if plan.up_to_date and not plan.setup_changed:
            keep_stage_counts(conn, storage, rebuild=False)  # triggers missing: installed
            return Applied(plan)
        backup = None
        if plan.data_loss:
            tables = [step.table for step in plan.data_loss]
            backup = write_backup(conn, tables, backup_dir)
        # alembic only now: a start whose database is in step never needs it (importing
        # it, with its dialects, was ~9% of `kartoteka serve`'s start)
        from alembic.migration import MigrationContext
        from alembic.operations import Operations

        context = s.Context(conn, Operations(MigrationContext.configure(connection=conn)), storage,
                            conn.dialect.name, dt.datetime.now(dt.UTC), on_progress)
        pause_stage_counts(conn)  # installed again, and recounted, after the steps
        for step in plan.steps:
            try:
                step.apply(context)
            except sa.exc.DBAPIError as error:
                reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
                raise DatabaseError(f"the step '{step}' failed: {reason}; the migration was "
                                    "rolled back and nothing was changed") from error
            if on_step is not None:
                on_step(step)
        if conn.dialect.name == "sqlite":
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise DatabaseError(f"the migration would leave {len(broken)} link(s) pointing at "
                                    f"missing records (first in table {broken[0][0]}); nothing "
                                    "was changed")
        # the board's counters: triggers as the setup wants them, counted again
        keep_stage_counts(conn, storage, rebuild=True)
        conn.execute(sa.insert(storage.setup_history).values(
            applied_at=context.now, setup_name=storage.setup.name, digest=plan.digest,
            summary=json.dumps({**plan.model, "applied": [str(step) for step in plan.steps],
                                "allow_data_loss": allow_data_loss,
                                "backup": str(backup) if backup else None},
                               ensure_ascii=False, default=str)))
    return Applied(plan, backup)


@contextmanager
def _migration(database: Database) -> Iterator[sa.Connection]:
    if database.dialect != "sqlite":
        with database.write(system="migrate") as conn:
            yield conn
        return
    with database.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys=OFF")  # before BEGIN: inside, SQLite ignores it
        try:
            conn.execution_options(kt_write=True, kt_unscoped="migrate")
            with conn.begin():
                yield conn
        finally:
            driver.execute("PRAGMA foreign_keys=ON")
