"""Many new records of a plain entity in one INSERT: bulk's fast path for creates.

A bulk batch (or an import's) of creates costs one INSERT round trip and one `create`'s
worth of bookkeeping per row. For an entity where a create does nothing after its INSERT
but write its history and check its rules — no formulas, no roll-ups reading it, no
unique sets, ranges or duplicate rules, no pipeline, no fields of user ids, no links to several entities,
no link whose target the caller sees only in part, and a role that may create anywhere —
the batch's rows are prepared exactly as `Records.create` prepares one (the same checks of
writable and computed fields, the same validation, defaults, owner and search text), then
written with one executemany INSERT … RETURNING, their history with one executemany, and
their rules checked once over them all. The batch's steps after the parse (completing,
rendering for the history, binding) run column by column, each distinct value once: an
import hands its batch over as columns (`completed_columns`, `write_columns`), bulk as
rows, turned into columns first.

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
from functools import partial
from itertools import repeat
from operator import itemgetter
from types import NoneType
from typing import Any

import sqlalchemy as sa

from engine.errors import RequestError
from engine.records.defaults import fill_dynamic_defaults
from engine.records.quick_schema import QuickValidator
from engine.records.service import Record, Records, _Shape
from engine.setup.names import link_column
from engine.setup.spec import FieldSpec
from engine.storage.fast_insert import insert_columns, json_objects, reserve_ids
from engine.storage.journal import UNJOURNALLED
from engine.storage.tables import SEARCH_COLUMN, EntityTable, search_texts_of
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
        return self.completed_many(entity, [values], owner, now)[0]

    def completed_many(self, entity: str, rows: list[dict[str, Any]], owner: int | None,
                       now: dt.datetime) -> list[dict[str, Any]]:
        """`completed` of each of a batch's rows: `completed_columns` of rows that have the
        same keys (a row with keys of its own alone), as new dicts."""
        if rows and all(values.keys() == rows[0].keys() for values in rows):
            groups = [rows]
        else:
            groups = [[values] for values in rows]
        done: list[dict[str, Any]] = []
        for group in groups:
            columns = self.completed_columns(
                entity, {key: list(map(itemgetter(key), group)) for key in group[0]},
                len(group), owner, now)
            done += [dict(zip(columns, values, strict=True))
                     for values in zip(*columns.values(), strict=True)]
        return done

    def completed_columns(self, entity: str, columns: dict[str, list[Any]], count: int,
                          owner: int | None, now: dt.datetime) -> dict[str, list[Any]]:
        """`completed` of `count` rows given column by column (each of their keys in every
        row: a column per key, its values in the rows' order), as columns: the same steps
        in the same order for each row, each step over them all — a value the same for
        every row (a default, the owner, the moment) is one object in its column, as it
        was in each completed dict. The columns given are not changed."""
        records = self.records
        plan = self._plan(entity)
        columns = dict(columns)
        for name, default in plan.defaults:
            if name not in columns:
                columns[name] = [default] * count
        if plan.dynamic:  # a default made per row (fill_dynamic_defaults takes a dict)
            user = records.access.acting.user
            rows = [dict(zip(columns, values, strict=True))
                    for values in zip(*columns.values(), strict=True)] \
                if columns else [{} for _ in range(count)]
            for values in rows:
                fill_dynamic_defaults(plan.table.spec, values, records.clock,
                                      records.storage.setup.timezone,
                                      None if user is None else user.id)
            # the same keys are left out of every row, so the same are filled in each
            columns = {key: list(map(itemgetter(key), rows)) for key in rows[0]} \
                if rows else columns
        if plan.owned:
            columns["owner"] = [owner] * count
        if plan.table.search_column is not None:
            columns[SEARCH_COLUMN] = search_texts_of(plan.table.spec, columns, count)
        if plan.rollups:
            for key, value in records.rollups.empty(entity).items():
                columns[key] = [value] * count
        for key, value in (("created_at", now), ("updated_at", now), ("version", 1)):
            columns[key] = [value] * count
        kinds: set[type] = set()
        for column in columns.values():
            kinds.update(map(type, column))
        if any(issubclass(kind, sa.ClauseElement) for kind in kinds):
            raise NotTaken
        return columns

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
              actor: int | None, answer: bool = True) -> list[Record]:
        """INSERT the prepared rows, write their history, check their rules: the records
        as a create answers them (none unless `answer`: an import answers counts). NotTaken
        when the database refuses any of them.

        The rows go in with ids reserved for them first, through the driver (COPY on
        PostgreSQL, engine/storage/fast_insert.py), so nothing has to come back."""
        # a column not in a row is null
        keys = sorted(set().union(*rows))
        return self.write_columns(conn, entity, {
            key: list(map(dict.get, rows, repeat(key))) for key in keys}, len(rows),
            actor=actor, answer=answer)

    def write_columns(self, conn: sa.Connection, entity: str, columns: dict[str, list[Any]],
                      count: int, *, actor: int | None, answer: bool = True) -> list[Record]:
        """`write` of `count` prepared rows given column by column (`completed_columns`)."""
        records = self.records
        table = records.storage[entity]
        keys = sorted(columns)
        rights = records.access.rights(entity)
        hidden = rights.hidden if rights is not None else ()
        try:
            # a check over all the batch's rows (their column values, before any is written)
            # belongs here: a RequestError sends the batch row by row, where each row's
            # create says which one failed and why
            ids = reserve_ids(conn, table.table, count)
            names, rendered = _Render(records.shapes[entity]).columns(columns, ids)
            made: list[Record] = [dict(zip(names, values, strict=True))
                                  for values in zip(*rendered, strict=True)] if answer else []
            # the create's history: diff({}, record) without its empty values — as its
            # JSON text, made column by column, when nothing reads it as a dict
            kept = [(name, column) for name, column in zip(names, rendered, strict=True)
                    if name not in UNJOURNALLED]
            kept_names, kept_columns = [name for name, _ in kept], [column for _, column in kept]
            journal = records.journal
            texts = json_objects(kept_names, kept_columns) \
                if journal.takes_texts(conn, entity, "create") else None
            for name in hidden:
                for record in made:
                    record.pop(name, None)
            moments = columns["created_at"]
            if texts is not None:
                journal.changes_each_text(entity, "create", ids, texts, moments, by=actor)
            else:
                journal.changes_each(conn, entity, "create", zip(
                    ids, _journalled(kept_names, kept_columns), moments, strict=True), by=actor)
            insert_columns(conn, table.table, ["id", *keys], [ids, *map(columns.__getitem__, keys)])
            records.rules.check(conn, entity, ids)
        except (sa.exc.IntegrityError, RequestError):
            raise NotTaken from None
        return made


def _journalled(names: list[str], columns: list[Sequence[Any]]) -> list[dict[str, Any]]:
    """Each row's {name: value} without its empty values (None, [])."""
    return [dict(zip(names, values, strict=True)) if None not in values and [] not in values
            else {name: value for name, value in zip(names, values, strict=True)
                  if value is not None and value != []}
            for values in zip(*columns, strict=True)]


class _Render:
    """`_Shape.render` (engine/records/service.py) over a batch's rows, column by column:
    a value that is the very object an earlier row of the batch had in that column (the
    batch's one `now` in created_at and updated_at, a date or an amount the rows repeat)
    is rendered once. Only immutable values are remembered."""

    def __init__(self, shape: _Shape):
        self.shape = shape
        if shape.poly:  # a polymorphic link is never on this path (`takes`)
            raise NotTaken

    def columns(self, batch: dict[str, list[Any]],
                ids: Sequence[int]) -> tuple[list[str], list[Sequence[Any]]]:
        """The records of new rows (`batch`: their values column by column, with their
        `ids`) column by column: their keys (in a record's order) and each key's values (a
        column the batch does not have is null)."""
        shape = self.shape
        fields = shape.table.spec.fields
        nulls = [None] * len(ids)
        keys = [key for key, _, _ in shape.steps]
        columns: list[Sequence[Any]] = []
        for _, column, render in shape.steps:
            values = ids if column == "id" else batch.get(column, nulls)
            if render is not None:
                field = fields.get(column)  # a field's type renders a column at once
                values = _rendered_many(partial(_each_rendered, render) if field is None
                                        else partial(field.type.render_many, field), values)
            columns.append(values)
        for name, column in shape.single:
            keys.append(name)
            columns.append(batch.get(column, nulls))
        for name in shape.many:
            keys.append(name)
            columns.append([[] for _ in ids])
        return keys, columns


def _each_rendered(render: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    """`render` of each value that is not None."""
    return [None if value is None else render(value) for value in values]


def _rendered_many(render_many: Callable[[Sequence[Any]], list[Any]],
                   values: Sequence[Any]) -> list[Any]:
    """`render_many` of the values, each distinct object of an immutable type once when
    at most half of them are distinct (by identity: `values` holds every object, so no two
    of them share an id meanwhile; a batch's moment is one object in every row)."""
    ids = list(map(id, values))
    distinct = dict(zip(ids, values, strict=True))
    if len(distinct) * 2 > len(ids) or not all(
            kind is NoneType or issubclass(kind, _IMMUTABLE)
            for kind in set(map(type, distinct.values()))):
        return render_many(values)
    done = dict(zip(distinct, render_many(list(distinct.values())), strict=True))
    return list(map(done.__getitem__, ids))


_IMMUTABLE = (str, int, float, Decimal, dt.date, dt.time)
