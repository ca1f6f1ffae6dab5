"""Formula fields in a migration: a formula that is new, or whose expression changed, is
computed over every row of its entity, in batches, inside the migration's transaction —
and so are the formulas that read it, after it. Removing a formula field is an ordinary
column removal; a field that stops being a formula keeps its last values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.setup.spec import SetupSpec
from engine.storage.formulas import EntityFormulas, entity_at
from engine.storage.migrations.steps import Context, Step, count


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
        spec = ctx.storage.setup.entity(self.table)
        formulas = EntityFormulas(ctx.storage.setup, ctx.storage, spec)
        progress = ctx.progress
        formulas.recompute_all(ctx.conn, None if progress is None else (
            lambda done: progress(f"  {self.table}: {done:,} of {self.rows:,} rows computed")))


def formula_steps(setup: SetupSpec, previous: Mapping[str, Any],
                  live_name: Mapping[str, str], rows: Any) -> list[Step]:
    """One step per entity whose formulas must be computed again, readers after what they
    read. `previous` is the recorded model's entities, `live_name` an entity's table now,
    `rows(table)` counts a live table's rows."""
    new: dict[tuple[str, str], str] = {}  # (entity, field) → why
    for entity in setup.entities.values():
        before = (previous.get(live_name.get(entity.name, entity.name)) or {}).get("fields") or {}
        for field in entity.fields.values():
            if field.formula is None:
                continue
            old = before.get(field.renamed_from or field.name)
            if old is None or "formula" not in old:
                new[(entity.name, field.name)] = "new formula"
            elif old["formula"] != field.formula.source:
                new[(entity.name, field.name)] = "formula changed"
    reads = {
        (entity.name, field.name): {_end(setup, entity.name, path) for path in field.formula.paths}
        for entity in setup.entities.values() for field in entity.fields.values()
        if field.formula is not None}
    dirty = dict(new)
    grew = True
    while grew:  # the readers of a recomputed formula are recomputed after it
        grew = False
        for node, ends in reads.items():
            if node not in dirty and ends & dirty.keys():
                dirty[node] = "reads a recomputed formula"
                grew = True
    ordered: list[str] = []

    def visit(entity: str) -> None:
        if entity in ordered:
            return
        for (owner, _), ends in reads.items():
            if owner == entity:
                for other, _field in ends:
                    if other != entity and any(e == other for e, _ in dirty):
                        visit(other)
        ordered.append(entity)

    for owner, _ in sorted(dirty):
        visit(owner)
    steps: list[Step] = []
    for name in ordered:
        table = live_name.get(name)
        if table is None:
            continue  # a new table: its rows are created with their formulas
        names = tuple(field for (e, field) in dirty if e == name)
        if not names:
            continue
        whys = sorted({dirty[(name, field)] for field in names})
        steps.append(RecomputeFormulas(table=name, fields=names, rows=rows(table),
                                       why="; ".join(whys)))
    return steps


def _end(setup: SetupSpec, entity: str, path: tuple[str, ...]) -> tuple[str, str]:
    return entity_at(setup, setup.entity(entity), path[:-1]).name, path[-1]
