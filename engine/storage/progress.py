"""How far each record of a pipeline entity has come, kept on its own row.

`kt_reached` is a bitmask of every stage the record has ever entered: bit *i* is the stage
named *i*-th in the ordered union of the entity's pipelines' stage names
(`PipelinesSpec.all_stage_names`). It is written in the same statement as the change that
makes it grow — the INSERT of a create, the UPDATE of a move or of a pipeline switch — so
it costs no extra round trip, and it only grows (a move back keeps the stages passed).

The funnel's `reached` is then one pass over the entity table (or over a covering index)
with the list's filters, instead of a GROUP BY over the whole stage history. The stage
history stays the source of truth: `backfill_reached` rebuilds the column from it with one
UPDATE, for a database where the column is new (`column.info["backfill"]`, run by
`kartoteka migrate`) or where the entity's stage names changed order.

The column is a system column (`kt_` prefix): never rendered, never accepted in a body,
never a filter or sort attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import Diagnostic, SetupError
from engine.setup.spec import MAX_STAGES, PipelinesSpec

if TYPE_CHECKING:
    from engine.storage.tables import EntityTable, Storage

REACHED_COLUMN = "kt_reached"


def stage_bits(pipelines: PipelinesSpec) -> dict[str, int]:
    """Each stage name's bit in `kt_reached`. The loader has refused more than `MAX_STAGES`
    names, with the file and line; a spec built by hand gets the same refusal here."""
    names = pipelines.all_stage_names
    if len(names) > MAX_STAGES:
        raise SetupError([Diagnostic(
            "pipeline.too_many_stages",
            f"an entity's pipelines may have at most {MAX_STAGES} distinct stage names "
            f"(found {len(names)}): the funnel keeps them as the bits of one 64-bit integer",
            hint="use fewer stages, or share stage names between pipelines")])
    return {name: 1 << index for index, name in enumerate(names)}


def reached_column() -> sa.Column[Any]:
    # nullable: a column added to a table that has rows is NULL until the backfill runs
    column: sa.Column[Any] = sa.Column(REACHED_COLUMN, sa.BigInteger(), nullable=True)
    column.info["backfill"] = backfill_reached
    return column


def mask(bits: Mapping[str, int], stages: Iterable[str]) -> int:
    return sum(bits[name] for name in set(stages) if name in bits)


def on_create(table: EntityTable, stage: str) -> dict[str, Any]:
    """INSERT values for a record created in `stage`."""
    assert table.stage_bits is not None
    return {REACHED_COLUMN: table.stage_bits[stage]}


def on_enter(table: EntityTable, stage: str) -> dict[str, Any]:
    """UPDATE values for a record entering `stage`: the bit is OR-ed in by the database, so
    it cannot lose a bit written by a concurrent move."""
    assert table.stage_bits is not None
    column = table.table.c[REACHED_COLUMN]
    return {REACHED_COLUMN: sa.func.coalesce(column, 0).op("|")(table.stage_bits[stage])}


def reached_expression(table: EntityTable, storage: Storage) -> ColumnElement[Any]:
    """`kt_reached` as the stage history says it should be, for the row of `table`."""
    assert table.stage_bits is not None
    h = storage.stage_history.c
    # bitwise OR as a sum of distinct powers of two: SQLite has no bit_or aggregate
    total: ColumnElement[Any] = sa.literal(0, sa.BigInteger())
    for name, bit in table.stage_bits.items():
        total = total + sa.func.max(sa.case((h.to_stage == name, bit), else_=0))
    return (sa.select(sa.func.coalesce(total, 0))
            .where(h.entity == table.name, h.record_id == table.table.c.id)
            .scalar_subquery())


def backfill_reached(conn: sa.Connection, storage: Storage, table: EntityTable) -> None:
    """Recompute `kt_reached` of every record of `table` from the stage history, in one
    UPDATE. A record with no history gets 0."""
    conn.execute(sa.update(table.table).values(
        {REACHED_COLUMN: sa.func.coalesce(reached_expression(table, storage), 0)}))
