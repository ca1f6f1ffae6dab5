"""The migration step that computes an entity's roll-up fields over every row, in batches,
inside the migration's transaction (engine/storage/migrations/computed.py says when): the
formulas' step, with roll-ups computing."""

from __future__ import annotations

from dataclasses import dataclass

from engine.storage.formulas import EntityFormulas
from engine.storage.migrations.formulas import RecomputeFormulas
from engine.storage.migrations.steps import Context
from engine.storage.rollups import EntityRollups


@dataclass(kw_only=True)
class RecomputeRollups(RecomputeFormulas):
    """Compute an entity's roll-ups again over all its rows (batches of 5,000)."""

    def computer(self, ctx: Context) -> EntityFormulas | EntityRollups:
        return EntityRollups(ctx.storage, ctx.storage.setup.entity(self.table), ctx.dialect)
