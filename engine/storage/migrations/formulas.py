"""The migration step that computes an entity's formula fields over every row, in batches,
inside the migration's transaction. Which formulas (and roll-ups) a migration computes,
and in what order: engine/storage/migrations/computed.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.storage.formulas import EntityFormulas
from engine.storage.migrations.steps import Context, Step, count
from engine.storage.rollups import EntityRollups


@dataclass(kw_only=True)
class RecomputeFormulas(Step):
    """Compute an entity's formula fields again over all its rows (batches of 5,000)."""

    fields: tuple[str, ...]
    rows: int
    why: str
    phase: ClassVar[int] = 5

    def describe(self) -> str:
        names = ", ".join(f"{self.table}.{name}" for name in self.fields)
        return f"recompute {count(self.rows, 'row')} of {names} ({self.why})"

    def apply(self, ctx: Context) -> None:
        progress = ctx.progress
        self.computer(ctx).recompute_all(ctx.conn, None if progress is None else (
            lambda done: progress(f"  {self.table}: {done:,} of {self.rows:,} rows computed")))

    def computer(self, ctx: Context) -> EntityFormulas | EntityRollups:
        """What computes the fields over all rows in batches (roll-ups: their subclass)."""
        return EntityFormulas(ctx.storage.setup, ctx.storage, ctx.storage.setup.entity(self.table))
