"""Roll-ups kept by increments: a child's create, patch or move applied to its parent's
stored counts, sums, minimums and maximums by ONE statement, without adding the children
up again.

    UPDATE "order" SET total = total + :d_total, lines_count = lines_count + :d_lines_count,
                       largest = CASE WHEN largest IS NULL OR largest < :v_largest
                                      THEN :v_largest ELSE largest END
     WHERE id = :record AND total BETWEEN :lo_total AND :hi_total
    RETURNING total, lines_count, largest

That is the write path's common case, `engine/storage/rollups.py` computes the same values
from the children (a lock, then an aggregate: two statements and a read of every child).
An increment is exact where the aggregate is: a count moves by whole records, a sum by the
child's old and new values (computed exactly in Python, applied by SQL to what is stored:
the roll-up's column stores exactly what the child's does, or this is not used), a maximum
only grows by a new value. What an increment cannot know is left to the aggregate: a
minimum or maximum whose extreme is removed (the statement's guard `largest IS DISTINCT
FROM :r_largest` fails, no row comes back), a sum leaving the field's range (its guard
fails: the aggregate says which value does not fit), an average (stored rounded), a way
over a many-to-many link. Then the caller computes the parent from its children.

`where`: a roll-up's condition reads the child's own fields, and the child is this
transaction's own row, so the statement tests it there (`EXISTS (SELECT 1 FROM line WHERE
id = :child AND status = 'shipped')`) — exact for the child as written. A patch that
changes a field of a condition is left to the aggregate (the condition held before, or
not, and the row no longer says which).

Concurrent writers (PostgreSQL, READ COMMITTED): the UPDATE locks the parent's row; a
concurrent writer's UPDATE waits for it and then evaluates `total + :d_total` and the
guards again on the row as committed (PostgreSQL re-checks an updated row), so no
increment is lost; a writer recomputing from the children locks the row first
(`engine/storage/rollups.py`), so it sees every increment committed before it.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as attribute
from typing import Any

import sqlalchemy as sa

from engine.setup.rollups import REVERSE
from engine.setup.spec import EntitySpec, FieldSpec
from engine.storage.database import UNSCOPED
from engine.storage.filters import compile_condition
from engine.storage.formulas import EXACT
from engine.storage.rollups import WHY, same_storage, unscoped
from engine.storage.tables import Storage
from engine.types.columns import ExactDecimal
from engine.types.fields import INT64_MAX, INT64_MIN

#: increments of one parent: parameters of the statement, the fields they change, and
#: the statement's shape (the minimums and maximums given a new value, given a removed one)
Shape = tuple[frozenset[str], frozenset[str]]
Increment = tuple[dict[str, Any], frozenset[str], Shape]
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Field:
    """One roll-up kept by increments: `function` of the child's `column` (None: count
    the records), only of children meeting `member` (None: every child)."""

    name: str
    function: str
    column: str | None
    member: Any
    #: the child's columns the condition reads: a patch changing one is not incremental
    reads: frozenset[str]
    #: the inclusive range of the stored value (sums)
    low: Any = None
    high: Any = None

    #: the statement's parameter names, made once: d_<name> (a count's or sum's
    #: increment), lo_/hi_ (the range guard), v_ (a new value), r_ (a removed one)
    d: str = attribute(init=False, default="")
    lo: str = attribute(init=False, default="")
    hi: str = attribute(init=False, default="")
    v: str = attribute(init=False, default="")
    r: str = attribute(init=False, default="")

    def __post_init__(self) -> None:
        for kind in ("d", "lo", "hi", "v", "r"):
            object.__setattr__(self, kind, f"{kind}_{self.name}")


class Increments:
    """The roll-ups of `parent` along one way back from `child` (the link `link`), kept by
    increments: built only when every roll-up along that way can be (`build`)."""

    def __init__(self, storage: Storage, parent: EntitySpec, fields: list[FieldSpec],
                 dialect: str):
        self.table = table = storage[parent.name].table
        first = fields[0].rollup
        assert first is not None
        child = storage[first.child]
        self.fields: list[_Field] = []
        for field in fields:
            rollup = field.rollup
            assert rollup is not None
            member = None
            if rollup.record_where:
                member = sa.exists().where(
                    child.table.c.id == sa.bindparam("child", type_=sa.BigInteger),
                    *(compile_condition(storage, c, dialect) for c in rollup.record_where))
            low, high = _range(table.c[field.name].type) if rollup.function == "sum" \
                else (None, None)
            self.fields.append(_Field(
                field.name, rollup.function, rollup.field, member,
                frozenset(child.attributes[c.name].column.name for c in rollup.record_where),
                low, high))
        self.reads = frozenset().union(*(f.reads for f in self.fields))
        self.names = tuple(f.name for f in self.fields)
        #: (min/max fields with a new value, with a removed value, RETURNING) → statement
        self._statements: dict[tuple[frozenset[str], frozenset[str], bool], Any] = {}

    @classmethod
    def build(cls, storage: Storage, parent: EntitySpec, child: str, link: str,
              dialect: str) -> Increments | None:
        """The increments of `parent`'s roll-ups along `child.link`, or None when one of
        them needs its children added up (an average, a many-to-many way, a field stored
        differently from the child's)."""
        fields = [f for f in parent.fields.values() if f.rollup is not None
                  and f.rollup.kind == REVERSE and f.rollup.child == child
                  and f.rollup.link.name == link]
        child_table = storage[child].table
        parent_table = storage[parent.name].table
        for field in fields:
            rollup = field.rollup
            assert rollup is not None
            if rollup.function not in ("count", "sum", "min", "max") or rollup.pair:
                return None
            if rollup.field is not None and rollup.function != "count" and not same_storage(
                    child_table.c[rollup.field].type, parent_table.c[field.name].type):
                return None
        return cls(storage, parent, fields, dialect) if fields else None

    # -- what a write adds and removes ------------------------------------------------------
    def added(self, after: Mapping[str, Any]) -> Increment | None:
        """A child now adding up into the parent (created, or moved in)."""
        return self._increment(None, after)

    def removed(self, before: Mapping[str, Any]) -> Increment | None:
        """A child no longer adding up into the parent (moved out)."""
        return self._increment(before, None)

    def changed(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> Increment | None:
        """A child of the same parent changed; None when a condition's field changed."""
        return None if self.moved(before, after) else self._increment(before, after)

    def moved(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
        """Did a field a condition reads change (then the row no longer says whether the
        child met the condition before)?"""
        return any(before.get(c) != after.get(c) for c in self.reads)

    def _increment(self, before: Mapping[str, Any] | None,
                   after: Mapping[str, Any] | None) -> Increment | None:
        params: dict[str, Any] = {}
        touched: list[str] = []
        added: list[str] = []
        gone: list[str] = []
        with decimal.localcontext(EXACT):
            for field in self.fields:
                old, new = _value(field, before), _value(field, after)
                if field.function == "count":
                    params[field.d] = delta = (new is not None) - (old is not None)
                elif field.function == "sum":
                    params[field.d] = delta = (new or 0) - (old or 0)
                    if abs(delta) > field.high:
                        return None  # cannot fit whatever is stored: the aggregate says so
                    params[field.lo] = max(field.low, field.low - delta)
                    params[field.hi] = min(field.high, field.high - delta)
                else:
                    delta = 0 if old == new else 1
                    if delta and new is not None:
                        params[field.v] = new
                        added.append(field.name)
                    if delta and old is not None and not _still_extreme(field.function, old, new):
                        params[field.r] = old
                        gone.append(field.name)
                if delta:
                    touched.append(field.name)
        return params, frozenset(touched), (frozenset(added) if added else NONE,
                                            frozenset(gone) if gone else NONE)

    # -- applying them ----------------------------------------------------------------------
    def apply(self, conn: sa.Connection, record_id: int, child_id: int,
              increment: Increment, *, answer: bool) -> dict[str, Any] | None:
        """Apply an increment to the parent `record_id`: its roll-ups touched, as stored
        now (with `answer`; else none: nothing reads them) — or None when the increment
        could not say (the caller adds the children up)."""
        params, touched, (added, gone) = increment
        if not touched:
            return {}
        statement = self._statements.get((added, gone, answer))
        if statement is None:
            statement = self._statements[(added, gone, answer)] = self._statement(
                added, gone, answer, conn.dialect)
        params["record"], params["child"] = record_id, child_id
        if not answer:
            return {} if _run(conn, statement, params).rowcount == 1 else None
        result = conn.execute(statement, params)
        row = result.first()
        if row is None:
            return None
        return {n: v for n, v in zip(self.names, row, strict=True) if n in touched}

    def _statement(self, added: frozenset[str], gone: frozenset[str], answer: bool,
                   dialect: sa.Dialect) -> Any:
        """The UPDATE of this shape: for an answer, as SQLAlchemy runs it (its RETURNING
        row comes back typed); else compiled once for the driver (`_Sent`), when it can be."""
        statement = self._update(added, gone, answer)
        return statement if answer else _Sent.compile(statement, dialect)

    def _update(self, added: frozenset[str], gone: frozenset[str], answer: bool) -> Any:
        table = self.table
        values: dict[str, Any] = {}
        guards: list[Any] = [table.c.id == sa.bindparam("record", type_=sa.BigInteger)]
        for field in self.fields:
            column = table.c[field.name]
            if field.function in ("sum", "count"):
                delta: Any = sa.bindparam(field.d, type_=column.type)
                if field.member is not None:
                    delta = sa.case((field.member, delta), else_=sa.literal(0, column.type))
                values[field.name] = column + delta
                if field.function == "sum":
                    guards.append(column.between(
                        sa.bindparam(field.lo, type_=column.type),
                        sa.bindparam(field.hi, type_=column.type)))
                continue
            if field.name in added:
                new = sa.bindparam(field.v, type_=column.type)
                beats = sa.or_(column.is_(None), column < new if field.function == "max"
                               else column > new)
                if field.member is not None:
                    beats = sa.and_(field.member, beats)
                values[field.name] = sa.case((beats, new), else_=column)
            if field.name in gone:  # an extreme removed: the aggregate finds the next one
                extreme = column.is_distinct_from(sa.bindparam(field.r, type_=column.type))
                guards.append(extreme if field.member is None
                              else sa.or_(sa.not_(field.member), extreme))
        statement = sa.update(table).where(*guards).values(values)
        return unscoped(statement.returning(*(table.c[n] for n in self.names)) if answer
                        else statement)


class _Sent:
    """A statement compiled once to the driver's SQL, run by `exec_driver_sql` with its
    parameters bound as SQLAlchemy would bind them (each through its type's bind
    processing: money as SQLite's integer cents): a write's one extra statement without
    SQLAlchemy's compilation lookup and parameter handling on every call, which cost about
    as much CPU as the driver's own work (engine/storage/fast_insert.py does the same for
    bulk rows). Still a statement of the connection's transaction, with its errors
    wrapped as SQLAlchemy's."""

    def __init__(self, sql: str, names: tuple[str, ...] | None, defaults: dict[str, Any],
                 steps: dict[str, Callable[[Any], Any]]):
        self.sql = sql
        #: the parameters' order for a positional driver (SQLite's `?`), else None
        self.names = names
        #: values compiled into the statement as parameters (literals, conditions' values)
        self.defaults = defaults
        self.steps = steps

    @classmethod
    def compile(cls, statement: Any, dialect: sa.Dialect) -> _Sent | Any:
        """The statement for the driver, or itself when it has a parameter of a list
        (expanded by SQLAlchemy on every call)."""
        compiled = statement.compile(dialect=dialect)
        binds = compiled.binds
        if any(b.expanding for b in binds.values()) or compiled.escaped_bind_names:
            return statement
        steps = {}
        for name, bind in binds.items():
            step = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if step is not None:
                steps[name] = step
        defaults = {name: bind.value for name, bind in binds.items()
                    if bind.value is not None or not bind.required}
        names = tuple(compiled.positiontup) if compiled.positional else None
        return cls(compiled.string, names, defaults, steps)

    def send(self, conn: sa.Connection, params: Mapping[str, Any]) -> Any:
        values = {**self.defaults, **params}
        for name, step in self.steps.items():
            value = values[name]
            if value is not None:
                values[name] = step(value)
        bound: Any = values if self.names is None else tuple(values[n] for n in self.names)
        return conn.exec_driver_sql(self.sql, bound, execution_options={UNSCOPED: WHY})


def _run(conn: sa.Connection, statement: Any, params: dict[str, Any]) -> Any:
    if isinstance(statement, _Sent):
        return statement.send(conn, params)
    return conn.execute(statement, params)


def _value(field: _Field, values: Mapping[str, Any] | None) -> Any:
    """What a child adds to `field` (None: nothing; a counted record: True)."""
    if values is None:
        return None
    if field.column is None:
        return True
    return values.get(field.column)


def _still_extreme(function: str, old: Any, new: Any) -> bool:
    """Does the new value keep the parent's extreme where the old one left it (the old one
    was not the extreme, or the new one is at least as extreme)?"""
    if new is None:
        return False
    try:
        return bool(new >= old) if function == "max" else bool(new <= old)
    except TypeError:  # values that do not compare: the aggregate decides
        return False


def _range(column: Any) -> tuple[Any, Any]:
    """The values a sum's column holds (the guards' bounds): decimals up to their digits
    before the point, integers 64 bits."""
    if isinstance(column, ExactDecimal):
        quantum = decimal.Decimal(1).scaleb(-column.places)
        limit = decimal.Decimal(10) ** (column.digits - column.places)
        return -limit + quantum, limit - quantum
    return INT64_MIN, INT64_MAX
