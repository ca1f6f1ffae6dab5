"""A parsed filter (`engine.setup.filters.Condition`) as SQL over the generated tables.

Values arrive parsed and typed, and become bound parameters through the field type's own
`filter`; names were looked up by the grammar, so no text from a request reaches SQL.
`scope(entity)` — the caller's read conditions for an entity a filter goes through —
narrows every subquery to the records the caller may see (None: the system's view, as for
role conditions, which are never scoped twice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.setup.filters import ATTRIBUTE, MANY, POLYMORPHIC, REVERSE, THROUGH, Condition
from engine.setup.names import link_column, poly_entity_column
from engine.storage.tables import EntityTable, Storage
from engine.types.moments import Deferred

Scope = Callable[[str], list[ColumnElement[bool]]]
#: a filter on the records at the other end of a link, as a condition on this end's
Subquery = Callable[[ColumnElement[bool]], ColumnElement[bool]]


def compile_condition(storage: Storage, condition: Condition, dialect: str,
                      scope: Scope | None = None) -> ColumnElement[bool]:
    """`condition` as a WHERE clause over its entity's table."""
    table = storage[condition.entity]
    op, value = condition.op, condition.value
    if condition.kind == ATTRIBUTE:
        attribute = table.attributes[condition.name]
        spec = attribute.field
        value = _bound(value, attribute.column)
        return spec.type.filter(spec, attribute.column, op, value, dialect)
    if condition.kind == MANY:
        joins = table.join_tables[condition.name]
        inner = sa.select(joins.c.source_id)
        if not isinstance(value, bool):
            inner = inner.where(joins.c.target_id.in_(value))
        exists = table.table.c.id.in_(inner)
        return sa.not_(exists) if value is True else exists
    if condition.kind == POLYMORPHIC:
        entity_column = table.table.c[poly_entity_column(condition.name)]
        id_column = table.table.c[link_column(condition.name)]
        if isinstance(value, bool):
            return entity_column.is_(None) if value else entity_column.is_not(None)
        return sa.or_(*(sa.and_(entity_column == name, id_column == record)
                        for name, record in value))
    if condition.kind == REVERSE:
        target, subquery_of = through(storage, table, condition.name, scope)
        if isinstance(value, bool):
            linked = subquery_of(sa.true())
            return sa.not_(linked) if value else linked
        return subquery_of(target.table.c.id.in_(value))
    if condition.kind == THROUGH:
        assert condition.inner is not None
        _, subquery_of = through(storage, table, condition.name, scope)
        return subquery_of(compile_condition(storage, condition.inner, dialect, scope))
    raise AssertionError(f"unknown condition kind {condition.kind!r}")


def _bound(value: Any, column: Any) -> Any:
    """A relative date (`Deferred`) as a parameter whose value is taken each time the
    statement runs — so a role condition compiled once still means today — else `value`."""
    if isinstance(value, Deferred):
        return sa.bindparam(None, callable_=value, type_=column.type)
    if isinstance(value, list) and any(isinstance(v, Deferred) for v in value):
        return [_bound(v, column) for v in value]
    return value


def through(storage: Storage, table: EntityTable, name: str,
            scope: Scope | None) -> tuple[EntityTable, Subquery]:
    """The entity at the other end of link (or way back) `name`, and how to filter this
    end by a condition on its records (only those `scope` lets in)."""
    target, subquery_of = _through_all(storage, table, name)
    conditions = scope(target.name) if scope is not None else []
    if not conditions:
        return target, subquery_of
    return target, lambda cond: subquery_of(sa.and_(cond, *conditions))


def _through_all(storage: Storage, table: EntityTable, name: str) -> tuple[EntityTable, Subquery]:
    link = table.spec.links.get(name)
    if link is not None:
        target = storage[link.target]
        if link.many:
            joins = table.join_tables[name]
            return target, lambda cond: table.table.c.id.in_(
                sa.select(joins.c.source_id).join(
                    target.table, target.table.c.id == joins.c.target_id).where(cond))
        column = table.table.c[link_column(name)]
        return target, lambda cond: column.in_(sa.select(target.table.c.id).where(cond))
    reverse = storage.setup.reverse_links[table.name][name]
    source = storage[reverse.entity]
    declared = reverse.link
    if declared.many:
        joins = source.join_tables[declared.name]
        return source, lambda cond: table.table.c.id.in_(
            sa.select(joins.c.target_id).join(
                source.table, source.table.c.id == joins.c.source_id).where(cond))
    id_column: Any = source.table.c[link_column(declared.name)]
    if declared.polymorphic:
        entity_column = source.table.c[poly_entity_column(declared.name)]
        return source, lambda cond: table.table.c.id.in_(
            sa.select(id_column).where(entity_column == table.name, cond))
    # NULLs kept out of the subquery: NOT IN over a list with NULL matches nothing
    return source, lambda cond: table.table.c.id.in_(
        sa.select(id_column).where(id_column.is_not(None), cond))
