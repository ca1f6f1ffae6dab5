"""The database side of `duplicates:` (engine/setup/duplicates.py): keys kept with each
record, so a duplicate check is a few index lookups, never a scan.

- Each rule has a shadow column `kt_dk_<rule>_<digest>` on the entity's table, filled by
  the server on every write with the rule's normalised value (after its `within` part).
  An exact rule's column is indexed: its check is one index lookup.
- A similar rule's blocking keys (its words, their first letters, its sorted words;
  character pairs of Chinese) are rows of `kt_duplicate_key(entity, rule, key,
  record_id)`, written in the record's transaction; its primary key answers "the records
  with this key" and a second index "the keys of this record" (an update replaces them).
- Added to a table that has records, a rule's column is filled at once, and its keys
  written, by the migration (`info["backfill"]`); a changed rule is a new column (the
  digest), so its keys are made anew; an old rule's keys are never read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.setup.duplicates import DuplicateRule, rule_keys, rule_value
from engine.setup.names import db_object_name
from engine.setup.spec import EntitySpec, SetupSpec
from engine.types.columns import id_column_type

if TYPE_CHECKING:
    from engine.storage.tables import EntityTable, Storage

KEY_TABLE = "kt_duplicate_key"
#: the prefix of a rule's shadow column (DuplicateRule.column)
SHADOW_PREFIX = "kt_dk_"


def rules_of(entity: EntitySpec) -> tuple[DuplicateRule, ...]:
    return entity.duplicates.rules if entity.duplicates is not None else ()


def needs_key_table(setup: SetupSpec) -> bool:
    return any(rule.similar for entity in setup.entities.values() for rule in rules_of(entity))


def key_table(metadata: sa.MetaData) -> sa.Table:
    """The similar rules' blocking keys (made only for a setup that has such a rule)."""
    table = sa.Table(
        KEY_TABLE, metadata,
        sa.Column("entity", sa.String(64), primary_key=True),
        sa.Column("rule", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("record_id", id_column_type(), primary_key=True, autoincrement=False),
    )
    sa.Index(db_object_name("ix", KEY_TABLE, "entity", "record_id"),
             table.c.entity, table.c.record_id)
    return table


def add_duplicate_columns(table: sa.Table, entity: EntitySpec) -> None:
    """Each rule's shadow column (an exact rule's indexed)."""
    for rule in rules_of(entity):
        column = sa.Column(rule.column, sa.Text(), nullable=True, info={
            "backfill": partial(backfill_rule, rule=rule.name),
            "filled": "get the normalised values duplicate control compares"})
        table.append_column(column)
        if not rule.similar:
            name = db_object_name("ix", table.name, rule.column)
            sa.Index(name, column).ddl_if(dialect="sqlite")
            sa.Index(name, column.asc().nulls_first()).ddl_if(dialect="postgresql")


def shadow_values(entity: EntitySpec, values: Mapping[str, Any],
                  changed: Iterable[str] | None = None) -> dict[str, str | None]:
    """The shadow columns' values for a record's `values` (by column); with `changed`, only
    those of rules reading a changed column."""
    touched = None if changed is None else set(changed)
    result: dict[str, str | None] = {}
    for rule in rules_of(entity):
        if touched is not None and not touched & {rule.field, *rule.within_columns}:
            continue
        result[rule.column] = rule_value(rule, entity.fields[rule.field], values)
    return result


def write_keys(conn: sa.Connection, storage: Storage, entity: EntitySpec, record_id: int,
               shadows: Mapping[str, str | None], *, created: bool) -> None:
    """The blocking keys of one record's similar rules whose shadow value is in `shadows`
    (replacing its old ones unless just `created`)."""
    table = storage.duplicate_keys
    if table is None:
        return
    rows: list[dict[str, Any]] = []
    for rule in rules_of(entity):
        if not rule.similar or rule.column not in shadows:
            continue
        if not created:
            conn.execute(sa.delete(table).where(
                table.c.entity == entity.name, table.c.record_id == record_id,
                table.c.rule == rule.column[:64]))
        stored = shadows[rule.column]
        if stored is not None:
            rows += [{"entity": entity.name, "rule": rule.column[:64], "key": key,
                      "record_id": record_id} for key in rule_keys(stored)]
    if rows:
        conn.execute(sa.insert(table), rows)


def forget_keys(conn: sa.Connection, storage: Storage, entity: str, ids: list[int]) -> None:
    """Deleted records leave no keys behind."""
    table = storage.duplicate_keys
    if table is not None and ids:
        conn.execute(sa.delete(table).where(table.c.entity == entity,
                                            table.c.record_id.in_(ids)))


def backfill_rule(conn: sa.Connection, storage: Storage, table: EntityTable, *,
                  rule: str) -> None:
    """Fill a rule's shadow column just added to a table with records, and write its keys."""
    spec = table.spec
    found = next(r for r in rules_of(spec) if r.name == rule)
    t = table.table
    members = [found.field, *found.within_columns]
    rows = conn.execute(sa.select(t.c.id, *(t.c[m] for m in members))
                        .where(t.c[found.field].is_not(None))).all()
    updates = []
    for row in rows:
        value = rule_value(found, spec.fields[found.field], dict(zip(members, row[1:],
                                                                     strict=True)))
        if value is not None:
            updates.append({"kt_id": row[0], "kt_value": value})
    if updates:
        conn.execute(sa.update(t).where(t.c.id == sa.bindparam("kt_id"))
                     .values({found.column: sa.bindparam("kt_value")}), updates)
    keys = storage.duplicate_keys
    if found.similar and keys is not None:
        conn.execute(sa.delete(keys).where(keys.c.entity == spec.name,
                                           keys.c.rule == found.column[:64]))
        rows_out = [{"entity": spec.name, "rule": found.column[:64], "key": key,
                     "record_id": update["kt_id"]}
                    for update in updates for key in rule_keys(update["kt_value"])]
        for start in range(0, len(rows_out), 5000):
            conn.execute(sa.insert(keys), rows_out[start:start + 5000])
