"""The migration step that computes an entity's roll-up fields over every row, in batches,
inside the migration's transaction (engine/storage/migrations/computed.py says when)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.storage.migrations.steps import Context, Step, count
from engine.storage.rollups import EntityRollups


@dataclass(kw_only=True)
class RecomputeRollups(Step):
    """Compute an entity's roll-ups again over all its rows (batches of 5,000)."""

    fields: tuple[str, ...]
    rows: int
    why: str
    phase: ClassVar[int] = 5

    def describe(self) -> str:
        names = ", ".join(f"{self.table}.{name}" for name in self.fields)
        return f"recompute {count(self.rows, 'row')} of {names} ({self.why})"

    def apply(self, ctx: Context) -> None:
        rollups = EntityRollups(ctx.storage, ctx.storage.setup.entity(self.table), ctx.dialect)
        progress = ctx.progress
        rollups.recompute_all(ctx.conn, None if progress is None else (
            lambda done: progress(f"  {self.table}: {done:,} of {self.rows:,} rows computed")))
