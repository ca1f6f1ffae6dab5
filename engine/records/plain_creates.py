"""Many new records of a plain entity in one INSERT: bulk's fast path for creates.

A bulk batch (or an import's) of creates costs one INSERT round trip and one `create`'s
worth of bookkeeping per row. For an entity where a create does nothing after its INSERT
but write its history and check its rules — no formulas, no roll-ups reading it, no
unique sets, ranges or duplicate rules, no pipeline, no fields of user ids, no links to several entities,
no link whose target the caller sees only in part, and a role that may create anywhere —
the batch's rows are prepared exactly as `Records.create` prepares one (the same checks of
writable and computed fields, the same validation, defaults, owner and search text), then
written with one executemany INSERT … RETURNING, their history with one executemany, and
their rules checked once over them all.

Anything else is not taken here (`None`: the caller writes the rows one by one): a row
setting its owner or a many-to-many link, a value SQL computes. And when the batch fails
in the database (a unique value taken, a missing link, a broken rule), the caller undoes
it and writes its rows one by one, which says which row failed and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from typing import Any

import sqlalchemy as sa

from engine.errors import RequestError
from engine.records.defaults import fill_dynamic_defaults
from engine.records.quick_schema import QuickValidator
from engine.records.service import Record, Records, _Shape
from engine.setup.names import link_column
from engine.setup.spec import FieldSpec
from engine.storage.fast_insert import insert_rows, reserve_ids
from engine.storage.journal import UNJOURNALLED
from engine.storage.tables import SEARCH_COLUMN, EntityTable, search_text
from engine.types.fields import ValueProblem


class NotTaken(Exception):
    """The batch is not for this path (or failed in it): write its rows one by one."""


@dataclass(frozen=True)
class _Plan:
    """What a create of one entity does to a body, looked up once."""

    table: EntityTable
    validator: QuickValidator
    fields: dict[str, FieldSpec]
    #: single links (not polymorphic, carrying no data): name → their id column
    single: dict[str, str]
    #: static defaults, in the fields' order
    defaults: list[tuple[str, Any]]
    dynamic: bool
    owned: bool
    rollups: bool


class PlainCreates:
    """The fast path of one engine's bulk creates."""

    def __init__(self, records: Records):
        self.records = records
        self._plans: dict[str, _Plan] = {}

    def takes(self, entity: str) -> bool:
        """Whether a create of `entity`, by the acting user, is only its INSERT, history and
        rules (see the module docstring)."""
        records = self.records
        table = records.storage[entity]
        spec = table.spec
        if spec.pipeline is not None or spec.unique or spec.no_overlap or spec.duplicates:
            return False
        if entity in records.formulas.entities or records.rollups.watches.get(entity):
            return False
        if any(f.type.refers_to_users for f in spec.fields.values()):
            return False
        for link in spec.links.values():
            if link.polymorphic or (not link.many and records.access.conditions(link.target,
                                                                                "read")):
                return False
        rights = records.access.rights(entity)
        return rights is None or (rights.allows("create") and rights.condition("create") is None)

    def values(self, entity: str, body: Any, owner: int | None,
               now: dt.datetime) -> dict[str, Any]:
        """A new record's column values, as `Records.create` makes them before its INSERT
        (RequestError for a row that is not valid; NotTaken for one this path leaves)."""
        records = self.records
        plan = self._plan(entity)
        rights = records.access.rights(entity)
        records._check_writable(entity, body, rights)  # the create's own checks, in its order
        records.formulas.refuse_computed(entity, body)
        return self.completed(entity, self._parse(plan, body), owner, now)

    def completed(self, entity: str, values: dict[str, Any], owner: int | None,
                  now: dt.datetime) -> dict[str, Any]:
        """A body's parsed column values made a new row's, as `Records.create` does after
        its parse: defaults, owner, search text, timestamps (NotTaken for a value SQL
        computes). For a caller that parsed a body's values itself, as `values` does."""
        records = self.records
        plan = self._plan(entity)
        for name, default in plan.defaults:
            if name not in values:
                values[name] = default
        if plan.dynamic:
            user = records.access.acting.user
            fill_dynamic_defaults(plan.table.spec, values, records.clock,
                                  records.storage.setup.timezone, None if user is None else user.id)
        if plan.owned:
            values["owner"] = owner
        if plan.table.search_column is not None:
            values[SEARCH_COLUMN] = search_text(plan.table.spec, values)
        if plan.rollups:
            values.update(records.rollups.empty(entity))
        values["created_at"] = values["updated_at"] = now
        values["version"] = 1
        for value in values.values():
            if isinstance(value, sa.ClauseElement):
                raise NotTaken
        return values

    def _parse(self, plan: _Plan, body: Any) -> dict[str, Any]:
        """The body's column values, as `Records._parse` makes them. A body the schema's
        quick check finds surely valid (engine/records/quick_schema.py) is parsed here
        field by field; any other body, or one a field refuses, goes through `_parse`
        itself, which finds and words every problem as a create does."""
        records = self.records
        if isinstance(body, dict) and plan.validator.sure(body):
            values: dict[str, Any] = {}
            try:
                for key, value in body.items():
                    field = plan.fields.get(key)
                    if field is not None:
                        values[key] = None if value is None else field.type.parse(field, value)
                    elif key in plan.single:
                        values[plan.single[key]] = value
                    else:
                        raise NotTaken  # an owner or a many-to-many link: row by row
                return values
            except ValueProblem:
                pass
        values, many = records._parse(plan.table, body, plan.validator)
        if many or "owner" in values:
            raise NotTaken
        return values

    def _plan(self, entity: str) -> _Plan:
        plan = self._plans.get(entity)
        if plan is None:
            records = self.records
            table = records.storage[entity]
            spec = table.spec
            plan = self._plans[entity] = _Plan(
                table, records.schemas[entity].create_validator, dict(spec.fields),
                {link.name: link_column(link.name) for link in spec.links.values()
                 if not link.many and not link.polymorphic and not link.through},
                [(f.name, f.default) for f in spec.fields.values() if f.default is not None],
                any(f.dynamic_default is not None for f in spec.fields.values()),
                spec.owner, bool(records.rollups.empty(entity)))
        return plan

    def write(self, conn: sa.Connection, entity: str, rows: Sequence[dict[str, Any]], *,
              actor: int | None) -> list[Record]:
        """INSERT the prepared rows, write their history, check their rules: the records
        as a create answers them. NotTaken when the database refuses any of them.

        The rows go in with ids reserved for them first, through the driver (COPY on
        PostgreSQL, engine/storage/fast_insert.py), so nothing has to come back."""
        records = self.records
        table = records.storage[entity]
        keys = sorted(set().union(*rows))
        rights = records.access.rights(entity)
        hidden = rights.hidden if rights is not None else ()
        try:
            # a check over all the batch's rows (their column values, before any is written)
            # belongs here: a RequestError sends the batch row by row, where each row's
            # create says which one failed and why
            ids = reserve_ids(conn, table.table, len(rows))
            made = _Render(records.shapes[entity]).many(rows, ids)  # a column not in a row is null
            journal = records.journal
            for row, record, new_id in zip(rows, made, ids, strict=True):
                # the create's history: diff({}, record) without its empty values
                journalled = {k: v for k, v in record.items()
                              if k not in UNJOURNALLED and v is not None and v != []}
                for name in hidden:
                    record.pop(name, None)
                journal.change(conn, entity, new_id, "create", journalled, by=actor,
                               at=row["created_at"])
            insert_rows(conn, table.table, ["id", *keys],
                        [[new_id, *map(row.get, keys)]
                         for row, new_id in zip(rows, ids, strict=True)])
            records.rules.check(conn, entity, ids)
        except (sa.exc.IntegrityError, RequestError):
            raise NotTaken from None
        return made


class _Render:
    """`_Shape.render` (engine/records/service.py) over a batch's rows: a value that is the
    very object the previous row had in that column (the batch's one `now` in created_at
    and updated_at) is rendered once. Only immutable values are remembered."""

    def __init__(self, shape: _Shape):
        self.shape = shape
        self.last: dict[str, tuple[Any, Any]] = {}
        if shape.poly:  # a polymorphic link is never on this path (`takes`)
            raise NotTaken

    def many(self, rows: Sequence[dict[str, Any]], ids: Sequence[int]) -> list[Record]:
        """The records of new rows (`rows` with their `ids`), rendered column by column."""
        shape = self.shape
        keys = [key for key, _, _ in shape.steps]
        columns = []
        for key, column, render in shape.steps:
            values = ids if column == "id" else list(map(dict.get, rows, repeat(column)))
            columns.append(values if render is None else self._rendered(key, render, values))
        records: list[Record] = [dict(zip(keys, values, strict=True))
                                 for values in zip(*columns, strict=True)]
        if shape.single or shape.many:
            for row, record in zip(rows, records, strict=True):
                for name, column in shape.single:
                    record[name] = row.get(column)
                for name in shape.many:
                    record[name] = []
        return records

    def _rendered(self, key: str, render: Callable[[Any], Any],
                  values: Sequence[Any]) -> list[Any]:
        before = self.last.get(key)
        last, done = (before if before is not None else (_NOTHING, None))
        out: list[Any] = []
        for value in values:
            if value is None:
                out.append(None)
                continue
            if value is not last:
                done = render(value)
                last = value if isinstance(value, _IMMUTABLE) else _NOTHING
            out.append(done)
        self.last[key] = (last, done)
        return out


_NOTHING = object()
_IMMUTABLE = (str, int, float, Decimal, dt.date, dt.time)
