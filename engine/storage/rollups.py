"""Roll-up columns computed and stored for a batch of records: the part of roll-ups that
needs only the tables, shared by the write path (engine/records/rollups.py) and the
migration that computes a new or changed roll-up over every row.

For a batch of parent ids, one aggregate SELECT per way and condition reads every roll-up
along it (`SELECT order_id, SUM(amount), COUNT(*) ... WHERE order_id IN (...) GROUP BY
order_id`), sums exactly (engine/storage/sums.py; an average is that exact sum divided by
the count, in Python), and the parents whose values changed are written back with one
executemany UPDATE. (A child's single write usually moves its parent's values by an
increment instead: engine/storage/rollup_deltas.py; this is what it falls back to.)

Concurrent writers (PostgreSQL, READ COMMITTED): the parents are locked first, in id
order, by their own statement (`SELECT ... FOR NO KEY UPDATE`); the aggregate runs after it as a
new statement, so it sees every child change committed before the lock was granted. Two
transactions adding lines to one order therefore serialise on the order's row, and the
second one's sum includes the first one's line.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ValidationFailed
from engine.setup.filters import PAIR
from engine.setup.names import link_column, poly_entity_column
from engine.setup.rollups import MANY, REVERSE, RollupSpec
from engine.setup.spec import EntitySpec, FieldSpec
from engine.storage.database import UNSCOPED
from engine.storage.filters import compile_condition, pair_clauses
from engine.storage.formulas import BATCH, EXACT, finisher, unstorable, write_columns
from engine.storage.sums import joined, sum_of
from engine.storage.tables import Storage
from engine.types.columns import ExactDecimal
from engine.types.fields import INT64_MAX, INT64_MIN

WHY = "roll-ups: every record summed over, whoever may see it"
#: {id: {field: new value}}: what a batch changed
Changes = dict[int, dict[str, Any]]


def unscoped(statement: Any) -> Any:
    return statement.execution_options(**{UNSCOPED: WHY})


class _Way:
    """The roll-ups of one entity that share a way and a condition: one aggregate SELECT."""

    def __init__(self, storage: Storage, spec: EntitySpec, fields: list[FieldSpec],
                 dialect: str):
        first = fields[0].rollup
        assert first is not None
        self.entity = spec.name
        self.fields = fields
        self.dialect = dialect
        child = storage[first.child].table
        joins: sa.Table | None = None
        if first.kind == REVERSE:
            key = child.c[link_column(first.link.name)]
            source: Any = child
            conditions: list[ColumnElement[bool]] = []
            if first.link.polymorphic:
                conditions.append(child.c[poly_entity_column(first.link.name)] == spec.name)
        else:
            declared = spec.name if first.kind == MANY else first.child
            joins = storage[declared].join_tables[first.link.name]
            key, other = (joins.c.source_id, joins.c.target_id) if first.kind == MANY \
                else (joins.c.target_id, joins.c.source_id)
            source = joins.join(child, child.c.id == other)
            conditions = []
        conditions += [compile_condition(storage, c, dialect) for c in first.record_where]
        pairs = [c for c in first.where if c.kind == PAIR]
        if pairs:  # conditions on the pairs' values: over the join table joined above
            conditions += pair_clauses(storage, storage[spec.name], first.way, pairs, dialect)
        self.joins = joins
        self.key = key
        self.conditions = conditions
        self.source = source
        self.child = child
        #: per field: (where its values start in a row, how many columns, how to finish)
        self.reading: list[tuple[int, int, Callable[[Sequence[Any]], Any]]] = []
        columns: list[Any] = [key]
        for field in fields:
            rollup = field.rollup
            assert rollup is not None
            start = len(columns)
            columns += self._aggregates(rollup)
            self.reading.append((start, len(columns) - start, self._finish(rollup, field)))
        self.select = sa.select(*columns).select_from(source).group_by(key)
        #: one parent, the common case of a write: built once, so that neither the
        #: statement nor its cache key is made again on every write
        self.select_one = unscoped(self.select.where(key == sa.bindparam("parent"),
                                                     *conditions))

    def _column(self, rollup: RollupSpec) -> Any:
        """The column a roll-up reads: a field of the records, or of their pairs."""
        assert rollup.field is not None
        if rollup.pair:
            assert self.joins is not None
            return self.joins.c[rollup.field]
        return self.child.c[rollup.field]

    def _aggregates(self, rollup: RollupSpec) -> list[Any]:
        if rollup.function == "count":
            return [sa.func.count(self.child.c.id if rollup.field is None
                                  else self._column(rollup))]
        column = self._column(rollup)
        if rollup.function == "sum":
            return sum_of(self.dialect, column)
        if rollup.function == "avg":
            return [*sum_of(self.dialect, column), sa.func.count(column)]
        return [getattr(sa.func, rollup.function)(column)]

    def _finish(self, rollup: RollupSpec, field: FieldSpec) -> Callable[[Sequence[Any]], Any]:
        stored = finisher(field)
        empty = rollup.empty
        function = rollup.function
        column = None if rollup.field is None else self._column(rollup)
        dialect = self.dialect
        whole = field.type.name == "integer"

        def finish(values: Sequence[Any]) -> Any:
            if function == "count":
                return int(values[0] or 0)
            if function in ("min", "max"):
                return stored(values[0])
            total = joined(dialect, column, values[:-1] if function == "avg" else values)
            if total is None:
                return empty
            if function == "avg":
                with decimal.localcontext(EXACT):
                    return stored(decimal.Decimal(total) / values[-1])
            return stored(int(total) if whole else total)
        return finish

    def in_sql(self, table: sa.Table, record: Any) -> tuple[Any, list[Any]] | None:
        """These roll-ups as one SQL row for the parent `record` — (subquery, range
        guards) — when SQL computes them exactly as stored: counts, and sums, minimums and
        maximums of a column stored as the field stores its values (integers, or exact
        decimals of the same places). None when a value needs Python's rounding (an
        average, another scale)."""
        columns: list[Any] = []
        for field in self.fields:
            rollup = field.rollup
            assert rollup is not None
            label = f"v_{field.name}"
            if rollup.function == "count":
                columns.append(self._aggregates(rollup)[0].label(label))
                continue
            column = self._column(rollup)
            target = table.c[field.name].type
            if rollup.function == "avg" or not same_storage(column.type, target):
                return None
            if rollup.function == "sum":
                total = sa.type_coerce(sa.func.coalesce(sa.func.sum(column), 0), target)
                columns.append(total.label(label))
            else:
                columns.append(getattr(sa.func, rollup.function)(column).label(label))
        row = sa.select(*columns).select_from(self.source).where(
            self.key == record, *self.conditions).subquery(f"rollup_{self.fields[0].name}")
        return row, [_within(row.c[f"v_{f.name}"], table.c[f.name].type) for f in self.fields
                     if f.rollup is not None and f.rollup.function == "sum"]

    def compute(self, conn: sa.Connection, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """The roll-ups of these parents that have any record along the way; the others
        have the empty values."""
        found: dict[int, tuple[Any, ...]] = {}
        rows = conn.execute(self.select_one, {"parent": ids[0]}) if len(ids) == 1 else \
            conn.execute(unscoped(self.select.where(self.key.in_(ids), *self.conditions)))
        for row in rows:
            values = []
            for (start, width, finish), field in zip(self.reading, self.fields, strict=True):
                try:
                    values.append(finish(row[start:start + width]))
                except (ValueError, ArithmeticError) as problem:
                    raise _unstorable(self.entity, row[0], field.name, problem) from None
            found[row[0]] = tuple(values)
        return found

    @property
    def empty(self) -> tuple[Any, ...]:
        return tuple(f.rollup.empty for f in self.fields)  # type: ignore[union-attr]


class EntityRollups:
    """One entity's roll-up fields, and how to compute them for a batch of its records."""

    def __init__(self, storage: Storage, spec: EntitySpec, dialect: str):
        self.entity = spec.name
        self.table = storage[spec.name].table
        groups: dict[tuple[str, str, tuple[Any, ...]], list[FieldSpec]] = defaultdict(list)
        for field in spec.fields.values():
            if field.rollup is not None:
                groups[(field.rollup.way, field.rollup.kind, field.rollup.where)].append(field)
        self.ways = [_Way(storage, spec, fields, dialect) for fields in groups.values()]
        self.fields = [f for way in self.ways for f in way.fields]
        self.names = tuple(f.name for f in self.fields)
        self.empty = {f.name: f.rollup.empty for f in self.fields}  # type: ignore[union-attr]
        self._stored = sa.select(self.table.c.id, *(self.table.c[n] for n in self.names))
        self.dialect = dialect
        table, record = self.table, sa.bindparam("record", type_=sa.BigInteger)
        #: one record locked (FOR NO KEY UPDATE: see `recompute`), built once
        self._lock_one = unscoped(sa.select(table.c.id).where(table.c.id == record)
                                  .with_for_update(key_share=True))
        #: one record's roll-ups computed and stored by one statement, when SQL computes
        #: them exactly: `UPDATE … FROM (aggregates) WHERE any differs AND all fit
        #: RETURNING` — no row back: unchanged, or out of range (the Python path says which)
        self._in_sql = self._build_in_sql(table, record)
        #: one record's roll-ups stored when any differs from what is stored (rowcount 1)
        self._update_one = unscoped(
            sa.update(table).where(table.c.id == record, sa.or_(*(
                table.c[n].is_distinct_from(sa.bindparam(f"new_{n}")) for n in self.names)))
            .values({n: sa.bindparam(f"new_{n}") for n in self.names}))

    def recompute(self, conn: sa.Connection, ids: Iterable[int], *, lock: bool = True) -> Changes:
        """Compute these records' roll-ups again; store and return what changed. With
        `lock`, the records are locked first (FOR NO KEY UPDATE, in id order) in a
        statement of their own."""
        changes: Changes = {}
        wanted = sorted(set(ids))
        if len(wanted) == 1:  # a write's one parent: statements built once, no read back
            return self._one(conn, wanted[0], lock)
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start:start + BATCH]
            statement = self._stored.where(self.table.c.id.in_(chunk)).order_by(self.table.c.id)
            if lock:
                # FOR NO KEY UPDATE: a child's insert holds FOR KEY SHARE on its parent (the
                # foreign key), which conflicts with FOR UPDATE: two writers adding lines to
                # one order would each wait for the other
                statement = statement.with_for_update(key_share=True)
            stored = {row[0]: tuple(row[1:]) for row in conn.execute(unscoped(statement))}
            if stored:
                changes.update(self._store(conn, stored))
        return changes

    def _build_in_sql(self, table: sa.Table, record: Any) -> Any:
        rows, guards = [], []
        for way in self.ways:
            found = way.in_sql(table, record)
            if found is None:
                return None
            rows.append(found[0])
            guards += found[1]
        value = {f.name: next(r.c[f"v_{f.name}"] for r in rows if f"v_{f.name}" in r.c)
                 for f in self.fields}
        return unscoped(
            sa.update(table).where(
                table.c.id == record, *guards,
                sa.or_(*(table.c[n].is_distinct_from(value[n]) for n in self.names)))
            .values(value).returning(*(table.c[n] for n in self.names)))

    def _one(self, conn: sa.Connection, record_id: int, lock: bool) -> Changes:
        """One record: locked first on PostgreSQL (SQLite has one writer at a time), its
        roll-ups computed and stored when any changed; then all of them are reported."""
        if lock and self.dialect != "sqlite" and \
                conn.execute(self._lock_one, {"record": record_id}).first() is None:
            return {}
        if self._in_sql is not None:
            try:
                row = conn.execute(self._in_sql, {"record": record_id}).first()
            except sa.exc.OperationalError as error:  # SQLite's SUM past 64 bits
                if "overflow" not in str(error.orig):
                    raise
                row = None
            if row is not None:
                return {record_id: dict(zip(self.names, row, strict=True))}
            before = conn.execute(unscoped(
                self._stored.where(self.table.c.id == record_id))).first()
            return self._store(conn, {record_id: tuple(before[1:])}) if before else {}
        values: list[Any] = []
        for way in self.ways:
            values.extend(way.compute(conn, [record_id]).get(record_id, way.empty))
        new = dict(zip(self.names, values, strict=True))
        written = conn.execute(self._update_one, {
            "record": record_id, **{f"new_{n}": v for n, v in new.items()}}).rowcount
        return {record_id: new} if written else {}

    def recompute_all(self, conn: sa.Connection,
                      report: Callable[[int], None] | None = None) -> int:
        """Every record computed from scratch, in batches by id (a migration step)."""
        done, last = 0, 0
        while True:
            rows = conn.execute(unscoped(
                self._stored.where(self.table.c.id > last).order_by(self.table.c.id)
                .limit(BATCH))).all()
            if not rows:
                return done
            self._store(conn, {row[0]: tuple(row[1:]) for row in rows})
            done += len(rows)
            last = rows[-1][0]
            if report is not None:
                report(done)

    def _store(self, conn: sa.Connection, stored: dict[int, tuple[Any, ...]]) -> Changes:
        ids = list(stored)
        computed: dict[int, list[Any]] = {i: [] for i in ids}
        for way in self.ways:
            found = way.compute(conn, ids)
            empty = way.empty
            for record_id in ids:
                computed[record_id].extend(found.get(record_id, empty))
        changes: Changes = {}
        updates: list[tuple[Any, ...]] = []
        for record_id, old in stored.items():
            new = tuple(computed[record_id])
            if new != old:
                changes[record_id] = {n: v for n, v, o in zip(self.names, new, old, strict=True)
                                      if v != o}
                updates.append((*new, record_id))
        write_columns(conn, self.table, self.names, updates, WHY)
        return changes


def _unstorable(entity: str, record_id: int, name: str, problem: Exception) -> ValidationFailed:
    return unstorable(f"the roll-up {entity}.{name} of {entity} {record_id} would hold a value "
                      "the field cannot", name, problem, "rollup_out_of_range", "is out of range")


def same_storage(column: Any, field: Any) -> bool:
    """Are a child's column and a roll-up's column stored alike, so that SQL's value of one
    is the other's as stored: both integers, or exact decimals of the same places (and a
    child value always fits the roll-up's digits: a minimum or maximum is not guarded)?"""
    if isinstance(column, ExactDecimal) or isinstance(field, ExactDecimal):
        return isinstance(column, ExactDecimal) and isinstance(field, ExactDecimal) \
            and column.places == field.places and column.digits <= field.digits
    return type(column) is type(field)


def _within(value: Any, field: Any) -> Any:
    """SQL: `value` fits the field (money and decimals: their digits before the point;
    integers: 64 bits). A sum that does not is left to the Python path, which says so."""
    if isinstance(field, ExactDecimal):
        limit = decimal.Decimal(10) ** (field.digits - field.places)
        return sa.and_(value > -limit, value < limit)
    if isinstance(field, sa.Integer):
        return value.between(INT64_MIN, INT64_MAX)
    return sa.true()
