"""The database side of `unique:` and `no_overlap:` (engine/setup/constraints.py).

- A unique set is a UNIQUE constraint over its members' columns. A text member of an
  insensitive set is represented by a shadow column `kt_<mode>_<field>` (mode `ci`, `sp`
  or `cisp`) that the server fills with the folded value on every write (Python's
  `str.casefold`, the same on both databases: SQLite's `lower()` knows only ASCII). Like
  every `kt_` column it is never rendered. NULLs never collide.
- A no-overlap rule is, on PostgreSQL, an exclusion constraint
  `EXCLUDE USING gist (key WITH =, tstzrange(start, end, '[)') WITH &&)` (daterange for
  dates; `btree_gist` lets the key's `=` join the GiST index). SQLite has no such
  constraint: the records layer checks inside the write transaction, which SQLite
  serialises (engine/records/constraints.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ExcludeConstraint

from engine.setup.attributes import SystemFields
from engine.setup.constraints import OverlapSpec, UniqueSpec, overlap_conditions
from engine.setup.filters import FilterGrammar
from engine.setup.names import db_object_name, link_column, poly_entity_column
from engine.setup.spec import EntitySpec
from engine.types.fields import DateType

if TYPE_CHECKING:
    from engine.storage.tables import EntityTable, Storage

#: created before the first table with an exclusion constraint (PostgreSQL ships it)
BTREE_GIST = "CREATE EXTENSION IF NOT EXISTS btree_gist"


def shadow_column(unique: UniqueSpec, field: str) -> str:
    return f"kt_{unique.mode}_{field}"


def member_columns(entity: EntitySpec, names: tuple[str, ...],
                   unique: UniqueSpec | None = None) -> list[str]:
    """The columns holding the members' values: a field's own (or its shadow, when folded),
    a link's id (a polymorphic link's entity and id)."""
    columns: list[str] = []
    for name in names:
        link = entity.links.get(name)
        if link is None:
            folded = unique is not None and name in unique.folded
            columns.append(shadow_column(unique, name) if folded and unique else name)
        elif link.polymorphic:
            columns += [poly_entity_column(name), link_column(name)]
        else:
            columns.append(link_column(name))
    return columns


def unique_name(entity: EntitySpec, unique: UniqueSpec) -> str:
    return db_object_name("uq", entity.name, *member_columns(entity, unique.members, unique))


def overlap_name(entity: EntitySpec, rule: OverlapSpec) -> str:
    """`ex_<table>_<key>_<start>_<end>`, and a digest of the `where:` when there is one (a
    changed condition is another constraint: the migration drops one and adds the other)."""
    condition = ("w" + hashlib.sha1(repr(rule.where).encode()).hexdigest()[:8],) \
        if rule.where else ()
    return db_object_name("ex", entity.name, *member_columns(entity, rule.key), rule.start,
                          rule.end, *condition)


def shadows(entity: EntitySpec) -> dict[str, tuple[UniqueSpec, str]]:
    """Every shadow column of the entity: (the set that folds it, the field it folds)."""
    return {shadow_column(unique, name): (unique, name)
            for unique in entity.unique for name in sorted(unique.folded)}


def shadow_values(entity: EntitySpec, values: Mapping[str, Any],
                  changed: Any = None) -> dict[str, Any]:
    """The shadow columns' values for a record's `values` (only those whose field is in
    `changed`, when given)."""
    result = {}
    for column, (unique, name) in shadows(entity).items():
        if changed is None or name in changed:
            value = values.get(name)
            result[column] = None if value is None else unique.fold(str(value))
    return result


def add_constraints(storage: Storage, table: sa.Table, entity: EntitySpec) -> None:
    """The shadow columns, unique sets and exclusion constraints of `entity`'s table."""
    for column in shadows(entity):
        # added to a table with records by a migration: filled at once (`backfill_shadow`)
        table.append_column(sa.Column(column, sa.Text(), nullable=True, info={
            "backfill": partial(backfill_shadow, column=column),
            "filled": "get their folded values"}))
    for unique in entity.unique:
        table.append_constraint(sa.UniqueConstraint(
            *member_columns(entity, unique.members, unique), name=unique_name(entity, unique)))
    for rule in entity.no_overlap:
        where = Where(storage, entity, rule)
        table.append_constraint(exclusion(table, entity, rule, where(table, "postgresql"))
                                .ddl_if(dialect="postgresql"))
    if entity.no_overlap:
        extension = sa.DDL(BTREE_GIST)  # type: ignore[no-untyped-call]
        sa.event.listen(table, "before_create", extension.execute_if(dialect="postgresql"))


def exclusion(table: sa.Table | sa.TableClause, entity: EntitySpec, rule: OverlapSpec,
              where: list[Any]) -> ExcludeConstraint:
    """`EXCLUDE USING gist (key WITH =, range WITH &&) WHERE (...)`, checked at commit
    (DEFERRABLE INITIALLY DEFERRED): the write path looks first and names the other
    record; the constraint is the database's own guarantee behind it."""
    start, end = table.c[rule.start], table.c[rule.end]
    ranged = sa.func.daterange if isinstance(entity.fields[rule.start].type, DateType) \
        else sa.func.tstzrange
    elements: list[tuple[Any, str]] = [(table.c[c], "=") for c in member_columns(entity, rule.key)]
    elements.append((ranged(start, end, sa.literal_column("'[)'")), "&&"))
    return ExcludeConstraint(*elements, name=overlap_name(entity, rule), using="gist",
                             where=sa.and_(start.is_not(None), end.is_not(None), *where),
                             deferrable=True, initially="DEFERRED")


class Where:
    """A no-overlap rule's `where:` as SQL over a table (or an alias of it)."""

    def __init__(self, storage: Storage, entity: EntitySpec, rule: OverlapSpec):
        self.entity = entity
        self.attributes = SystemFields(storage.registry).attributes(entity)
        self.conditions = overlap_conditions(FilterGrammar(storage.setup, storage.registry),
                                             entity.name, rule) if rule.where else []

    def __call__(self, table: Any, dialect: str) -> list[Any]:
        found = []
        for condition in self.conditions:
            spec, link = self.attributes[condition.name]
            column = table.c[link_column(condition.name) if link else condition.name]
            found.append(spec.type.filter(spec, column, condition.op, condition.value, dialect))
        return found



def backfill_shadow(conn: sa.Connection, storage: Storage, table: EntityTable, *,
                    column: str) -> None:
    """Fill a shadow column just added to a table with records, from its field."""
    unique, name = shadows(table.spec)[column]
    t = table.table
    rows = conn.execute(sa.select(t.c.id, t.c[name]).where(t.c[name].is_not(None))).all()
    updates = [{"kt_id": row[0], "kt_value": unique.fold(str(row[1]))} for row in rows]
    if updates:
        conn.execute(sa.update(t).where(t.c.id == sa.bindparam("kt_id"))
                     .values({column: sa.bindparam("kt_value")}), updates)
