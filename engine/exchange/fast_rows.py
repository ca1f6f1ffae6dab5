"""An import's batch of new records written straight from its cells: the import's fast path.

A row of the slow path becomes a JSON body (engine/exchange/imports.py), which bulk checks
against the entity's JSON Schema and parses field by field before its one INSERT
(engine/records/plain_creates.py). Here each column gets, once per import, one converter
from its cells to its column's values (`ColumnConverter`), made of the very same steps: the
column's cell reader, the quick "surely valid" check of the field's own property schema
(engine/records/quick_schema.py: only a value jsonschema passes passes it) and the field
type's `parse`. A batch is converted column by column — each step one pass over a
column's cells, most of it in C (a remembered cell's value looked up, a text column
stripped, its schema checked by the set of its values' types, their longest text...)
rather than a chain of calls per cell: per cell, Python's calls cost more than the work.
The batch stays in columns (no dict per row): they are completed as a create completes
each row (defaults, owner, search text: `PlainCreates.completed_columns`), and go to
`PlainCreates.write_columns` — the same INSERT, history, automation events and rule check
as bulk's creates.

So nothing is accepted here that the slow path refuses. Anything this path is not sure of
sends the whole batch back to the slow path, which says why each bad row is bad exactly as
the API does (a 422's words):

- a cell its reader refuses, a value the quick check is not sure of, a value the field's
  `parse` refuses, a value beyond the header's columns;
- a batch the database refuses (a unique value taken) or a rule refuses.

The path is taken per import when `why_not` finds nothing: an entity whose creates are
plain (`PlainCreates.takes`: no formulas, roll-ups, unique sets, duplicate rules,
pipeline...), new records only (no `upsert_by`, no id column), every column a field of the
entity filled by value (no link column), every required field among the columns, and a
schema whose only top-level words are the ones every entity's create schema has.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from itertools import repeat
from operator import is_, itemgetter
from typing import Any

from engine.errors import RequestError
from engine.exchange.cells import Locale
from engine.exchange.columns import ESCAPED, Column, ColumnPlan
from engine.records.plain_creates import NotTaken, PlainCreates
from engine.records.quick_schema import ANNOTATIONS, compile_column_check
from engine.records.service import Records
from engine.setup.spec import FieldSpec
from engine.types.fields import ValueProblem

#: the top-level words of a create schema this path understands (they hold for every row
#: of an import alike: see `why_not`)
_TOP = frozenset({"type", "properties", "additionalProperties", "required"})


class NotSure(Exception):
    """A row this path is not sure of: its batch goes the slow way."""


class FastRows:
    """The fast path of one import into one entity (see the module docstring)."""

    def __init__(self, records: Records, plain: PlainCreates, entity: str, plan: ColumnPlan,
                 locale: Locale, actor: int | None):
        self.records = records
        self.plain = plain
        self.entity = entity
        self.actor = actor
        self.width = plan.width
        schema = records.schemas[entity].create_validator.schema
        properties = schema.get("properties") or {}
        #: the converter of each column, in the file's column order
        self.columns = [ColumnConverter(column, properties[column.name], locale)
                        for column in plan.columns]

    @classmethod
    def of(cls, records: Records, plain: PlainCreates, entity: str, plan: ColumnPlan,
           locale: Locale, actor: int | None,
           upsert_by: Sequence[str] | None) -> tuple[FastRows | None, str | None]:
        """The fast path of this import, or None and why it is not taken."""
        why = why_not(records, plain, entity, plan, upsert_by)
        if why is not None:
            return None, why
        return cls(records, plain, entity, plan, locale, actor), None

    def write(self, rows: Sequence[tuple[int, list[Any]]]) -> int | None:
        """Create the batch's records in a write of their own (a transaction, or a
        savepoint of the import's): how many, or None (nothing of them left written) when
        a row or the database says the batch must go the slow way."""
        if not rows:
            return 0
        try:
            values = self._values(list(map(itemgetter(1), rows)))  # each row's cells
        except (NotSure, ValueProblem):
            return None
        plain, entity, now = self.plain, self.entity, dt.datetime.now(dt.UTC)
        db = self.records.db
        try:
            # the batch's own write: a refused batch leaves nothing behind
            with db.write() as inner, self.records.journal.deferred(inner):
                prepared = plain.completed_columns(entity, values, len(rows), self.actor, now)
                plain.write_columns(inner, entity, prepared, len(rows), actor=self.actor,
                                    answer=False)
        except (NotTaken, RequestError):
            return None
        return len(rows)

    def _values(self, rows: list[list[Any]]) -> dict[str, list[Any]]:
        """The batch's values column by column (field → its values in the rows' order),
        converted column by column; never a dict per row."""
        width = self.width
        if set(map(len, rows)) != {width}:
            rows = [self._fitted(cells) for cells in rows]
        by_column = list(zip(*rows, strict=True))
        return {column.name: column(by_column[column.index]) for column in self.columns}

    def _fitted(self, cells: list[Any]) -> list[Any]:
        """A row of the header's width (NotSure for a value beyond its columns: the slow
        path says so)."""
        width = self.width
        if len(cells) > width:
            if any(cell is not None and (not isinstance(cell, str) or cell.strip())
                   for cell in cells[width:]):
                raise NotSure
            return cells[:width]
        return [*cells, *[None] * (width - len(cells))]


def why_not(records: Records, plain: PlainCreates, entity: str, plan: ColumnPlan,
            upsert_by: Sequence[str] | None) -> str | None:
    """Why an import with these columns cannot take the fast path (None: it can)."""
    spec = records.storage[entity].spec
    if upsert_by is not None:
        return "it updates records by a natural key (upsert_by)"
    if not plain.takes(entity):
        return (f"a create of {entity} does more than its INSERT (formulas, roll-ups, unique "
                "sets, duplicate rules, a pipeline, user fields, a role's conditions...)")
    for column in plan.columns:
        if column.by != "value" or column.field is None or column.read is None \
                or column.name not in spec.fields:
            return f"the column {column.header} is not a field of {entity} filled by value"
    schema = records.schemas[entity].create_validator.schema
    words = {key for key in schema if key not in ANNOTATIONS}
    names = {column.name for column in plan.columns}
    if not words <= _TOP or schema.get("type") != "object" or not names <= set(
            schema.get("properties") or {}):
        return f"the create schema of {entity} says more than this path checks"
    missing = set(schema.get("required") or ()) - names
    if missing:
        return f"the file has no column for {', '.join(sorted(missing))}"
    body = dict.fromkeys(names)
    try:  # the create's checks of which keys a body names: the same for every row
        records._check_writable(entity, body, records.access.rights(entity))
        records.formulas.refuse_computed(entity, body)
    except RequestError as error:
        return str(error)
    return None


class ColumnConverter:
    """One column's cells of a batch → its values, through the reader, the schema's quick
    check and the type's parse (NotSure or ValueProblem when the slow path must judge
    them), as one pass per step over the column rather than a call chain per cell.

    A file's values repeat (a city, a kind, a date): the value of a text cell is
    remembered, up to about `REMEMBERED` of them per column, when it is immutable —
    readers and parses are functions of the cell alone (and the import's locale) — and the
    cells of a batch are looked up all at once (not at all for the next `UNREMEMBERED`
    batches after one whose every cell was new while the column remembers all it may: a
    code or an e-mail is rarely met twice). The others are converted together, step by
    step: read (cells all text without an export's escape by the column reader registered
    with the field's reader, `Column.read_column`, when it is sure of them — text stripped,
    amounts and whole numbers by a few passes over the column, engine/exchange/cells.py;
    any other cell by its reader), checked by the schema's column check
    (`quick_schema.compile_column_check`: True only when the value check passes each
    value), parsed (the type's `parse_many`: `parse` of each value, a string's texts by one
    check of their join, amounts by a few passes...). Which cell fails makes no
    difference: the batch goes the slow way."""

    def __init__(self, column: Column, schema: Any, locale: Locale):
        field: FieldSpec | None = column.field
        read = column.read
        assert field is not None and read is not None
        self.name, self.index = column.name, column.index
        self.field, self.read, self.locale = field, read, locale
        self.check = compile_column_check(schema)
        self.parse_many = field.type.parse_many
        self.read_column = column.read_column
        #: text cells → their values, as `_fresh` found them
        self.known: dict[Any, Any] = {}
        #: batches left whose cells are not looked up in `known`
        self.unlooked = 0

    def __call__(self, cells: Sequence[Any]) -> list[Any]:
        if self.unlooked:
            self.unlooked -= 1
            return self._fresh(list(cells))
        known = self.known
        try:  # only text is remembered: a cell of any other type is not found
            values = list(map(known.get, cells, repeat(_UNKNOWN)))
        except TypeError:  # a cell that cannot be a key
            values = [_UNKNOWN] * len(cells)
        # by identity: list.count's == would ask each Decimal to compare itself with it
        unknown = list(map(is_, values, repeat(_UNKNOWN))).count(True)
        if not unknown:
            return values
        if unknown == len(values):
            if len(known) >= REMEMBERED:
                self.unlooked = UNREMEMBERED
            return self._fresh(list(cells))
        missing = [i for i, value in enumerate(values) if value is _UNKNOWN]
        fresh = self._fresh([cells[i] for i in missing])
        for i, value in zip(missing, fresh, strict=True):
            values[i] = value
        return values

    def _fresh(self, cells: list[Any]) -> list[Any]:
        """The values of cells not remembered: read, checked, parsed, each step over them
        all (a step that fails fails the batch, whichever cell it is)."""
        field, locale = self.field, self.locale
        values = None
        if self.read_column is not None and set(map(type, cells)) == {str} \
                and not _escaped(cells):
            values = self.read_column(field, cells, locale)
        if values is None:
            read = self.read
            values = [None if cell is None or (isinstance(cell, str) and not cell.strip())
                      else read(field, cell, locale) for cell in cells]
        try:
            sure = self.check(values)
        except Exception:  # a value Python cannot compare: jsonschema judges it
            raise NotSure from None
        if not sure:
            raise NotSure
        values = self.parse_many(field, values)
        known = self.known
        if len(known) < REMEMBERED:
            known.update((cell, value) for cell, value in zip(cells, values, strict=True)
                         if type(cell) is str and type(value) in _IMMUTABLE)
        return values


def _escaped(cells: list[str]) -> bool:
    """Whether a text cell may start with an export's escape (`ESCAPED`, each of which
    starts with '): by one search of the cells joined after a NUL each, where a cell
    starting with ' leaves NUL and '; a cell holding them itself only makes this unsure."""
    return "\x00'" in "\x00" + "\x00".join(cells)


# what `_escaped` relies on, checked once at import rather than at each batch's column
assert all(escape.startswith("'") for escape in ESCAPED)


#: how many cells' values each column remembers
REMEMBERED = 4096
#: batches not looked up after one that found nothing (see ColumnConverter)
UNREMEMBERED = 9
_UNKNOWN = object()
_IMMUTABLE = frozenset({str, int, float, bool, Decimal, dt.date, dt.datetime, type(None)})
