"""Formula fields kept true: computed and stored in the same transaction as every write
that changes what they read — the record's own fields, and fields of the records its
many-to-one links reach (`client.discount`, `client.region.rate`).

How: each formula entity gets one SELECT that reads every input of its formulas for a
batch of ids (outer joins along the link paths), the formulas are evaluated in Python
(compiled closures, `Decimal`), and the rows whose value changed are written back with one
executemany UPDATE by id. When a record changes a column some formula reads through a
link, the dependent records are found with IN-subqueries back along the path and
recomputed the same way; what they change is propagated in turn (the setup has no
cycles, so this ends).

Choices, documented in docs/setup-language.md ("Formula fields"):
- a dependent's recompute changes only its formula columns: not its `version`, nor
  `updated_at`, and it is not journalled — the record was not edited, so a client's
  If-Match stays valid and the timeline shows edits, not their echoes;
- the record being written gets its formulas in its own UPDATE's transaction, and their
  new values appear in its journal entry like any other change;
- `today`/`now` are read when the record is computed: a stored `due - today` is the
  number of days as of the record's last write (or recompute), not of the reading.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.access.scopes import Access
from engine.errors import ErrorDetail, ValidationFailed
from engine.setup.expressions import NOW, TODAY, finish
from engine.setup.names import link_column
from engine.setup.spec import EntitySpec, FieldSpec, SetupSpec
from engine.storage.tables import Storage
from engine.types.fields import INT64_MAX, INT64_MIN

BATCH = 5000
WHY = "formula fields: inputs read and results stored whatever the acting user may see"
#: evaluation precision: products of two 18-digit numbers stay exact before rounding
_EXACT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_UP)


@dataclass(frozen=True)
class _Watcher:
    """`entity`'s formulas read a column of another entity through `links` (a path prefix)."""

    entity: str
    links: tuple[str, ...]


class _EntityFormulas:
    """One entity's formulas in the order to compute them, and the statement reading their
    inputs for a batch of ids."""

    def __init__(self, setup: SetupSpec, storage: Storage, spec: EntitySpec):
        self.entity = spec.name
        self.fields = _in_order(spec)
        self.names = tuple(f.name for f in self.fields)
        self.uses_clock = any(f.formula.uses_clock for f in self.fields if f.formula)
        paths = sorted({p for f in self.fields if f.formula for p in f.formula.paths})
        table = storage[spec.name].table
        aliases: dict[tuple[str, ...], Any] = {(): table}
        joined: Any = table
        for path in paths:
            for depth in range(1, len(path)):
                prefix = path[:depth]
                if prefix in aliases:
                    continue
                parent = aliases[prefix[:-1]]
                owner = _entity_at(setup, spec, prefix[:-1])
                target = storage[owner.links[prefix[-1]].target].table.alias()
                joined = joined.outerjoin(target, target.c.id == parent.c[link_column(prefix[-1])])
                aliases[prefix] = target
        self.keys = tuple(".".join(p) for p in paths)
        inputs = [aliases[p[:-1]].c[p[-1]].label(f"in_{i}") for i, p in enumerate(paths)]
        stored = [table.c[name].label(f"out_{i}") for i, name in enumerate(self.names)]
        self.select = sa.select(table.c.id, *stored, *inputs).select_from(joined)
        self.table = table
        #: the columns of the entity itself that its formulas read (paths of one step)
        self.own_columns = frozenset(
            link_column(p[0]) if len(p) > 1 else p[0] for p in paths)
        self.update = Access.unscoped(
            sa.update(table).where(table.c.id == sa.bindparam("kt_id"))
            .values({name: sa.bindparam(f"kt_{name}") for name in self.names}), WHY)
        self.finishers = [_finisher(f) for f in self.fields]


def _in_order(spec: EntitySpec) -> list[FieldSpec]:
    """Formulas reading other formulas of the same record come after them."""
    formulas = {f.name: f for f in spec.fields.values() if f.formula is not None}
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


def _entity_at(setup: SetupSpec, spec: EntitySpec, links: Sequence[str]) -> EntitySpec:
    for name in links:
        spec = setup.entity(spec.links[name].target)
    return spec


def _finisher(spec: FieldSpec) -> Callable[[Any], Any]:
    """The evaluated value as stored, or ValueError saying why the field cannot hold it."""
    type_name = spec.type.name
    places = spec.params.get("places")
    digits = spec.params.get("digits")
    limit = spec.max_length or getattr(spec.type, "max_length", lambda _: None)(spec)

    def store(value: Any) -> Any:
        value = finish(value, type_name, places)
        if value is None:
            return None
        if digits is not None and value and value.adjusted() + 1 > digits - places:
            raise ValueError(f"is too large: at most {digits - places} digits before the point")
        if type_name == "integer" and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("is out of range for a 64-bit integer")
        if isinstance(value, str) and limit is not None and len(value) > limit:
            raise ValueError(f"is longer than {limit} characters")
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value
    return store


class Formulas:
    """Keeps every formula field of one storage equal to its expression."""

    def __init__(self, storage: Storage):
        setup = storage.setup
        self.storage = storage
        self.entities = {
            spec.name: _EntityFormulas(setup, storage, spec)
            for spec in setup.entities.values()
            if any(f.formula is not None for f in spec.fields.values())}
        #: (entity, column) → the formulas of other records reading it through links
        self.watchers: dict[tuple[str, str], list[_Watcher]] = defaultdict(list)
        for plan in self.entities.values():
            spec = setup.entity(plan.entity)
            for path in sorted({p for f in plan.fields if f.formula for p in f.formula.paths}):
                for depth in range(1, len(path)):
                    at = _entity_at(setup, spec, path[:depth])
                    column = link_column(path[depth]) if depth < len(path) - 1 else path[depth]
                    watcher = _Watcher(plan.entity, path[:depth])
                    if watcher not in self.watchers[(at.name, column)]:
                        self.watchers[(at.name, column)].append(watcher)

    # -- the API of the write path ---------------------------------------------------------
    def refuse_computed(self, entity: str, body: Any) -> None:
        """A client never sends a formula field: 422 `field_computed` naming each one."""
        plan = self.entities.get(entity)
        if plan is None or not isinstance(body, dict):
            return
        sent = [name for name in plan.names if name in body]
        if sent:
            raise ValidationFailed(
                f"{', '.join(sent)} of a {entity} {'is' if len(sent) == 1 else 'are'} computed "
                "by a formula and cannot be sent",
                [ErrorDetail(name, "is computed by a formula: leave it out") for name in sent],
                code="field_computed")

    def on_write(self, conn: sa.Connection, entity: str, record_id: int,
                 before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
        """After a record's INSERT (`before` None) or UPDATE: compute its formulas, store the
        ones that changed, recompute the records whose formulas read what changed. Returns
        the record's formula values that changed, to merge into what the caller answers."""
        changed = set(after) if before is None else {
            key for key, value in after.items() if before.get(key) != value}
        own: dict[str, Any] = {}
        plan = self.entities.get(entity)
        if plan is not None and (before is None or plan.uses_clock
                                 or changed & plan.own_columns):
            own = self._recompute(conn, plan, [record_id]).get(record_id, {})
            changed |= set(own)
        if before is not None:
            self._dependents(conn, entity, [record_id], changed)
        return own

    def changed(self, conn: sa.Connection, entity: str, ids: Iterable[int],
                fields: Iterable[str]) -> None:
        """These stored fields (columns) of these records changed outside a record write
        (a roll-up, a link emptied by a deletion): recompute whatever reads them."""
        ids, fields = list(ids), set(fields)
        if not ids or not fields:
            return
        plan = self.entities.get(entity)
        if plan is not None and fields & plan.own_columns:
            for chunk in _chunks(ids, BATCH):
                self._propagate(conn, entity, self._recompute(conn, plan, chunk))
        self._dependents(conn, entity, ids, fields)

    def recompute_all(self, conn: sa.Connection, entity: str,
                      report: Callable[[int], None] | None = None) -> int:
        """Every record of `entity` computed from scratch, in batches by id (a migration's
        step, the benchmark); `report` hears the count done after each batch."""
        plan = self.entities[entity]
        done, last = 0, 0
        while True:
            rows = conn.execute(Access.unscoped(
                plan.select.where(plan.table.c.id > last).order_by(plan.table.c.id)
                .limit(BATCH), WHY)).all()
            if not rows:
                return done
            self._store(conn, plan, rows)
            done += len(rows)
            last = rows[-1][0]
            if report is not None:
                report(done)

    # -- inside ----------------------------------------------------------------------------
    def _dependents(self, conn: sa.Connection, entity: str, ids: list[int],
                    columns: set[str]) -> None:
        seen: set[_Watcher] = set()
        for column in sorted(columns):
            for watcher in self.watchers.get((entity, column), ()):
                if watcher in seen:
                    continue
                seen.add(watcher)
                plan = self.entities[watcher.entity]
                for chunk in _chunks(ids, 500):
                    found = conn.execute(Access.unscoped(
                        self._reaching(watcher, chunk), WHY)).scalars().all()
                    for batch in _chunks(sorted(set(found)), BATCH):
                        self._propagate(conn, watcher.entity,
                                        self._recompute(conn, plan, batch))

    def _propagate(self, conn: sa.Connection, entity: str,
                   changes: Mapping[int, Mapping[str, Any]]) -> None:
        """Recomputed formulas are changed columns too: their readers follow."""
        by_field: dict[str, list[int]] = defaultdict(list)
        for record_id, values in changes.items():
            for name in values:
                by_field[name].append(record_id)
        for name, ids in by_field.items():
            self._dependents(conn, entity, ids, {name})

    def _reaching(self, watcher: _Watcher, ids: list[int]) -> sa.Select[Any]:
        """The ids of `watcher.entity` whose link path ends at one of `ids`."""
        setup = self.storage.setup
        spec = setup.entity(watcher.entity)
        tables = [self.storage[spec.name].table]
        for name in watcher.links[:-1]:
            spec = setup.entity(spec.links[name].target)
            tables.append(self.storage[spec.name].table)
        reached: Any = ids
        for table, name in reversed(list(zip(tables, watcher.links, strict=True))):
            reached = sa.select(table.c.id).where(table.c[link_column(name)].in_(reached))
        statement: sa.Select[Any] = reached
        return statement

    def _recompute(self, conn: sa.Connection, plan: _EntityFormulas,
                   ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = conn.execute(Access.unscoped(plan.select.where(plan.table.c.id.in_(ids)),
                                            WHY)).all()
        return self._store(conn, plan, rows)

    def _store(self, conn: sa.Connection, plan: _EntityFormulas,
               rows: Sequence[sa.Row[Any]]) -> dict[int, dict[str, Any]]:
        """Evaluate the formulas over `rows` (id, stored outputs, inputs) and write back the
        rows whose values changed; returns {id: {field: new value}} of the changes."""
        count = len(plan.names)
        keys = plan.keys
        evaluated = [(f.name, f.formula.evaluate, finisher)  # type: ignore[union-attr]
                     for f, finisher in zip(plan.fields, plan.finishers, strict=True)]
        env: dict[str, Any] = {}
        if plan.uses_clock:
            now = dt.datetime.now(dt.UTC)
            env = {TODAY: now.date(), NOW: now}
        changes: dict[int, dict[str, Any]] = {}
        updates = []
        with decimal.localcontext(_EXACT):
            for row in rows:
                env.update(zip(keys, row[1 + count:], strict=True))
                new = {}
                for name, evaluate, store in evaluated:
                    try:
                        value = store(evaluate(env))
                    except (ValueError, ArithmeticError, OverflowError) as problem:
                        raise _unstorable(plan.entity, row[0], name, problem) from None
                    env[name] = new[name] = value
                old = row[1:1 + count]
                if any(a != b for a, b in zip(old, new.values(), strict=True)):
                    changes[row[0]] = {n: v for (n, v), o in zip(new.items(), old, strict=True)
                                       if v != o}
                    updates.append({"kt_id": row[0],
                                    **{f"kt_{n}": v for n, v in new.items()}})
        if updates:
            conn.execute(plan.update, updates)
        return changes


def _unstorable(entity: str, record_id: int, name: str, problem: Exception) -> ValidationFailed:
    reason = str(problem) if isinstance(problem, ValueError) and str(problem) else \
        "cannot be computed (a date or number out of range)"
    return ValidationFailed(
        f"the formula of {entity}.{name} gives a value the field cannot hold "
        f"for {entity} {record_id}: it {reason}; nothing was written",
        [ErrorDetail(name, f"the computed value {reason}")], code="formula_out_of_range")


def _chunks(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]
