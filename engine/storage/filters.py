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

from engine.setup.filters import (
    ATTRIBUTE,
    MANY,
    PAIR,
    POLYMORPHIC,
    REVERSE,
    THROUGH,
    Condition,
)
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
    if condition.kind == PAIR:
        return _pairs(storage, table, condition.name, [condition], dialect, scope)
    raise AssertionError(f"unknown condition kind {condition.kind!r}")


def compile_all(storage: Storage, conditions: list[Condition], dialect: str,
                scope: Scope | None = None) -> list[ColumnElement[bool]]:
    """Conditions that hold together, as WHERE clauses: those about the pairs of one link
    (`lines.$link.quantity[gte]=10&lines.$link.price[lt]=5`) must hold on the SAME pair —
    and so must a condition on the linked record along that link in the same call
    (`&lines.name=Bolt`: a bolt line of quantity 10) — so they become one subquery; the
    rest compile one by one."""
    paired = {(c.entity, c.name) for c in conditions if c.kind == PAIR}
    pairs: dict[tuple[str, str], list[Condition]] = {}
    compiled: list[ColumnElement[bool]] = []
    for condition in conditions:
        if condition.kind in (PAIR, THROUGH) and (condition.entity, condition.name) in paired:
            pairs.setdefault((condition.entity, condition.name), []).append(condition)
        else:
            compiled.append(compile_condition(storage, condition, dialect, scope))
    for (entity, name), together in pairs.items():
        compiled.append(_pairs(storage, storage[entity], name, together, dialect, scope))
    return compiled


def _pairs(storage: Storage, table: EntityTable, name: str, conditions: list[Condition],
           dialect: str, scope: Scope | None) -> ColumnElement[bool]:
    """Records of `table` with one pair along `name` (a link that carries data, from
    either end) meeting every PAIR condition, its other end a record `scope` lets in and
    meeting every THROUGH condition."""
    link = table.spec.links.get(name)
    if link is not None:
        joins, other = table.join_tables[name], storage[link.target]
        mine, theirs = joins.c.source_id, joins.c.target_id
    else:
        reverse = storage.setup.reverse_links[table.name][name]
        joins, other = storage[reverse.entity].join_tables[reverse.link.name], \
            storage[reverse.entity]
        mine, theirs = joins.c.target_id, joins.c.source_id
    on_pairs = [c for c in conditions if c.kind == PAIR]
    on_records = [compile_condition(storage, c.inner, dialect, scope)  # type: ignore[arg-type]
                  for c in conditions if c.kind == THROUGH]
    pairs = sa.select(mine).where(*pair_clauses(storage, table, name, on_pairs, dialect))
    visible = scope(other.name) if scope is not None else []
    if visible or on_records:
        pairs = pairs.join(other.table, other.table.c.id == theirs).where(*visible, *on_records)
    return table.table.c.id.in_(pairs)


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


def pair_clauses(storage: Storage, table: EntityTable, name: str, conditions: list[Condition],
                 dialect: str) -> list[ColumnElement[bool]]:
    """`PAIR` conditions of `table` along link (or way back) `name` as clauses over the
    link's join table, whose rows are the pairs."""
    link = table.spec.links.get(name)
    if link is not None:
        joins = table.join_tables[name]
    else:
        reverse = storage.setup.reverse_links[table.name][name]
        link, joins = reverse.link, storage[reverse.entity].join_tables[reverse.link.name]
    clauses = []
    for condition in conditions:
        inner = condition.inner
        assert inner is not None
        field, column = link.through[inner.name], joins.c[inner.name]
        clauses.append(field.type.filter(field, column, inner.op, _bound(inner.value, column),
                                         dialect))
    return clauses
