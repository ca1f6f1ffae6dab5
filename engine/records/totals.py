"""How many records link to one record, and the sums of their money, per way back.

A card shows a client's sales both ways with their sums. Summing the first page of them
would be wrong past one page, and loading them all would be slow past a few thousand: each
way back is one aggregate statement (COUNT and the SUMs, exact on both databases:
engine/storage/sums.py), in the acting user's read scope exactly as the list of them is,
and without the fields hidden from that user — a sum would tell what the field hides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.errors import NotFound
from engine.records.service import Records, checked_id
from engine.storage.sums import joined, splits, sum_of


@dataclass(frozen=True)
class Totals:
    """One way back's count and sums (rendered as the API writes the field, by name)."""

    count: int
    sums: dict[str, Any] = field(default_factory=dict)


def linked_totals(records: Records, entity: str, record_id: int,
                  names: Sequence[str]) -> dict[str, Totals]:
    """The totals of the records at the other end of each link in `names` (declared on
    `entity` or a way back), over all of them the acting user may read."""
    table = records.storage[entity]
    record_id = checked_id(record_id, entity)
    out: dict[str, Totals] = {}
    with records.db.read() as conn:
        row = conn.execute(records.access.scoped(
            sa.select(table.table).where(table.table.c.id == record_id), entity, "read")).first()
        if row is None:
            raise NotFound(f"no {entity} with id {record_id}")
        for name in names:
            target, condition = records._linked_condition(table, row._mapping, name)
            out[name] = Totals(0) if target is None else _totals(records, conn, target,
                                                                 condition)
    return out


def _totals(records: Records, conn: sa.Connection, entity: str, condition: Any) -> Totals:
    other = records.storage[entity]
    rights = records.access.rights(entity)
    hidden = rights.hidden if rights is not None else frozenset()
    summed = [f for f in other.spec.fields.values() if f.type.summable and f.name not in hidden]
    dialect = conn.dialect.name
    columns = [other.table.c[f.name] for f in summed]
    statement = sa.select(sa.func.count(), *[e for c in columns for e in sum_of(dialect, c)]
                          ).select_from(other.table).where(condition)
    count, *values = conn.execute(records.access.scoped(statement, entity, "read")).one()
    sums, position = {}, 0
    for spec, column in zip(summed, columns, strict=True):
        width = 2 if splits(dialect, column) else 1
        total = joined(dialect, column, values[position:position + width])
        sums[spec.name] = spec.type.render_sum(spec, total)
        position += width
    return Totals(int(count), sums)


__all__ = ["Totals", "linked_totals"]
