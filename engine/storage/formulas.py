"""Formula columns computed and stored for a batch of records: the part of formula fields
that needs only the tables, shared by the write path (engine/records/formulas.py) and the
migration that recomputes a new or changed formula over every row.

For each entity with formulas, one SELECT reads, for a batch of ids, the stored formula
values and every input of its formulas (outer joins along the link paths); the formulas
are evaluated in Python (closures compiled at load, exact `Decimal`s) in dependency
order, and the rows whose values changed are written back with one executemany UPDATE.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine.errors import ErrorDetail, ValidationFailed
from engine.setup.expressions import NOW, TODAY, finish
from engine.setup.names import link_column
from engine.setup.spec import EntitySpec, FieldSpec, SetupSpec
from engine.storage.database import UNSCOPED
from engine.storage.tables import Storage
from engine.types.fields import INT64_MAX, INT64_MIN

BATCH = 5000
WHY = "formula fields: inputs read and results stored whatever the acting user may see"
#: evaluation precision: products of two 18-digit numbers stay exact before rounding
EXACT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_UP)
#: {id: {field: new value}}: what a batch changed
Changes = dict[int, dict[str, Any]]


def unscoped(statement: Any) -> Any:
    return statement.execution_options(**{UNSCOPED: WHY})


class EntityFormulas:
    """One entity's formulas in the order to compute them, and the statements reading their
    inputs and writing their values."""

    def __init__(self, setup: SetupSpec, storage: Storage, spec: EntitySpec):
        self.entity = spec.name
        self.fields = in_order(spec)
        self.names = tuple(f.name for f in self.fields)
        self.uses_clock = any(f.formula.uses_clock for f in self.fields if f.formula)
        self.paths = sorted({p for f in self.fields if f.formula for p in f.formula.paths})
        table = storage[spec.name].table
        aliases: dict[tuple[str, ...], Any] = {(): table}
        joined: Any = table
        for path in self.paths:
            for depth in range(1, len(path)):
                prefix = path[:depth]
                if prefix in aliases:
                    continue
                parent = aliases[prefix[:-1]]
                owner = entity_at(setup, spec, prefix[:-1])
                target = storage[owner.links[prefix[-1]].target].table.alias()
                joined = joined.outerjoin(target, target.c.id == parent.c[link_column(prefix[-1])])
                aliases[prefix] = target
        self.keys = tuple(".".join(p) for p in self.paths)
        inputs = [aliases[p[:-1]].c[p[-1]].label(f"in_{i}") for i, p in enumerate(self.paths)]
        stored = [table.c[name].label(f"out_{i}") for i, name in enumerate(self.names)]
        self.select = sa.select(table.c.id, *stored, *inputs).select_from(joined)
        #: without the stored values: a recompute of every row writes every row
        self.select_inputs = sa.select(table.c.id, *inputs).select_from(joined)
        self.table = table
        #: the columns of the entity itself that its formulas read (a path's first step)
        self.own_columns = frozenset(
            link_column(p[0]) if len(p) > 1 else p[0] for p in self.paths)
        self.finishers = [finisher(f) for f in self.fields]

    def recompute(self, conn: sa.Connection, ids: Sequence[int]) -> Changes:
        """Compute these records' formulas again; store and return what changed."""
        rows = conn.execute(unscoped(self.select.where(self.table.c.id.in_(ids)))).all()
        return self.store(conn, rows)

    def recompute_all(self, conn: sa.Connection,
                      report: Callable[[int], None] | None = None) -> int:
        """Every record computed from scratch, in batches by id (a migration step, the
        benchmark); `report` hears the count done after each batch."""
        done, last = 0, 0
        while True:
            rows = conn.execute(unscoped(
                self.select_inputs.where(self.table.c.id > last).order_by(self.table.c.id)
                .limit(BATCH))).all()
            if not rows:
                return done
            self._write(conn, list(self._evaluate(rows, 1)))
            done += len(rows)
            last = rows[-1][0]
            if report is not None:
                report(done)

    def store(self, conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> Changes:
        """Evaluate the formulas over `rows` (id, stored values, inputs) and write back the
        rows whose values changed."""
        count = len(self.names)
        changes: Changes = {}
        updates: list[tuple[Any, ...]] = []
        for row, computed in zip(rows, self._evaluate(rows, 1 + count), strict=True):
            new, old = computed[:-1], tuple(row[1:1 + count])
            if new != old:
                changes[row[0]] = {n: v for n, v, o in zip(self.names, new, old, strict=True)
                                   if v != o}
                updates.append(computed)
        if updates:
            self._write(conn, updates)
        return changes

    def _evaluate(self, rows: Sequence[sa.Row[Any]], start: int) -> Iterator[tuple[Any, ...]]:
        """(values of the formulas..., id) for each row, its inputs from column `start` on:
        the hot loop of a recompute, kept flat on purpose."""
        keys = self.keys
        evaluated = [(f.name, f.formula.evaluate, finish)  # type: ignore[union-attr]
                     for f, finish in zip(self.fields, self.finishers, strict=True)]
        env: dict[str, Any] = {}
        if self.uses_clock:
            now = dt.datetime.now(dt.UTC)
            env = {TODAY: now.date(), NOW: now}
        with decimal.localcontext(EXACT):
            for row in rows:
                env.update(zip(keys, row[start:], strict=True))
                new = []
                for name, evaluate, finished in evaluated:
                    try:
                        value = finished(evaluate(env))
                    except (ValueError, ArithmeticError, OverflowError) as problem:
                        raise _unstorable(self.entity, row[0], name, problem) from None
                    env[name] = value
                    new.append(value)
                yield (*new, row[0])

    def _write(self, conn: sa.Connection, updates: list[tuple[Any, ...]]) -> None:
        write_columns(conn, self.table, self.names, updates, WHY)


def write_columns(conn: sa.Connection, table: sa.Table, names: Sequence[str],
                  updates: list[tuple[Any, ...]], why: str) -> None:
    """One executemany of `UPDATE ... SET f = ? WHERE id = ?` through the driver (each
    update: the values of `names`, then the id), with the columns' own bind processing:
    SQLAlchemy's per-row parameter handling cost as much as computing the values."""
    if not updates:
        return
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"UPDATE {quote(table.name)} SET "
           + ", ".join(f"{quote(name)} = {mark}" for name in names)
           + f" WHERE id = {mark}")
    # the type as this database stores it: an exact decimal is an INTEGER on SQLite, and
    # its generic NUMERIC processor would send a float (losing digits past the 15th)
    processors = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                  for name in names]
    if len(processors) == 1 and processors[0] is not None:
        process = processors[0]  # the common case, one column: one call per row
        updates = [(process(value), record_id) for value, record_id in updates]
    elif any(processors):
        updates = [(*(value if p is None else p(value)
                      for p, value in zip(processors, update[:-1], strict=True)), update[-1])
                   for update in updates]
    conn.exec_driver_sql(sql, updates, execution_options={UNSCOPED: why})


def in_order(spec: EntitySpec) -> list[FieldSpec]:
    """An entity's formula fields, those read by another formula of the record first."""
    return formulas_in_order(spec.fields)


def formulas_in_order(fields: Mapping[str, FieldSpec]) -> list[FieldSpec]:
    """The formula fields of `fields` (a record's, or a link's pair's), each after the
    formulas among them it reads."""
    formulas = {f.name: f for f in fields.values() if f.formula is not None}
    done: dict[str, FieldSpec] = {}

    def visit(name: str) -> None:
        if name in done:
            return
        formula = formulas[name].formula
        assert formula is not None
        for path in sorted(formula.paths):
            if len(path) == 1 and path[0] in formulas and path[0] != name:
                visit(path[0])
        done[name] = formulas[name]

    for name in formulas:
        visit(name)
    return list(done.values())


def entity_at(setup: SetupSpec, spec: EntitySpec, links: Sequence[str]) -> EntitySpec:
    """The entity reached from `spec` along these many-to-one links."""
    for name in links:
        spec = setup.entity(spec.links[name].target)
    return spec


def finisher(spec: FieldSpec) -> Callable[[Any], Any]:
    """The evaluated value as stored, or ValueError saying why the field cannot hold it."""
    type_name = spec.type.name
    places = spec.params.get("places")
    digits = spec.params.get("digits")
    limit = spec.max_length or getattr(spec.type, "max_length", lambda _: None)(spec)
    if digits is not None and places is not None:
        quantum = decimal.Decimal(1).scaleb(-places)
        largest = digits - places

        def exact(value: Any) -> Any:
            if value is None:
                return None
            value = (value if type(value) is decimal.Decimal else decimal.Decimal(value)
                     ).quantize(quantum, decimal.ROUND_HALF_UP)
            if value and value.adjusted() >= largest:
                raise ValueError(f"is too large: at most {largest} digits before the point")
            return value
        return exact

    def finished(value: Any) -> Any:
        value = finish(value, type_name, places)
        if value is None:
            return None
        if type_name == "integer" and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("is out of range for a 64-bit integer")
        if isinstance(value, str) and limit is not None and len(value) > limit:
            raise ValueError(f"is longer than {limit} characters")
        return value
    return finished


def _unstorable(entity: str, record_id: int, name: str, problem: Exception) -> ValidationFailed:
    return unstorable(f"the formula of {entity}.{name} gives a value the field cannot hold "
                      f"for {entity} {record_id}", name, problem, "formula_out_of_range")


def unstorable(what: str, name: str, problem: Exception, code: str,
               fallback: str = "cannot be computed (a date or number out of range)"
               ) -> ValidationFailed:
    """A computed value its field cannot hold: `what` happened, the write is refused."""
    reason = str(problem) if isinstance(problem, ValueError) and str(problem) else fallback
    return ValidationFailed(f"{what}: it {reason}; nothing was written",
                            [ErrorDetail(name, f"the computed value {reason}")], code=code)
