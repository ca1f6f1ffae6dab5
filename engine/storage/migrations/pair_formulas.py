"""The migration step that computes the formulas of a link's pairs over every pair, in
batches, inside the migration's transaction (engine/storage/migrations/computed.py says
when: a formula of the pairs that is new or changed; the roll-ups adding it up follow)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.storage.formulas import EntityFormulas
from engine.storage.migrations.formulas import RecomputeFormulas
from engine.storage.migrations.steps import Context, count
from engine.storage.pair_formulas import LinkPairFormulas
from engine.storage.rollups import EntityRollups


@dataclass(kw_only=True)
class RecomputePairs(RecomputeFormulas):
    """Compute the formulas of the pairs of `table`.`link` again over all its pairs."""

    link: str

    def describe(self) -> str:
        names = ", ".join(f"{self.table}.{name}" for name in self.fields)
        return f"recompute {count(self.rows, 'pair')} of {names} ({self.why})"

    def apply(self, ctx: Context) -> None:
        progress = ctx.progress
        pairs = LinkPairFormulas(ctx.storage[self.table].join_tables[self.link],
                                 ctx.storage.setup.entity(self.table).links[self.link])
        pairs.recompute_all(ctx.conn, None if progress is None else (
            lambda done: progress(f"  {self.table}.{self.link}: {done:,} of {self.rows:,} "
                                  "pairs computed")))

    def computer(self, ctx: Context) -> EntityFormulas | EntityRollups:
        raise NotImplementedError("the pairs are computed by apply")
