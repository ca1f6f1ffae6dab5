"""Many writes in one call: create, update by id, or upsert by a natural key.

Every row goes THROUGH `Records.create` / `Records.update`, so it meets exactly what a single
write meets: validation, computed-field refusals, rules, access scopes and roles, history,
formulas and roll-ups. The whole call is one write transaction (`Database.write` is
reentrant: a write inside another of the same thread is a SAVEPOINT of it), and each row has
its own savepoint, so a bad row leaves nothing of itself behind:

- `all_or_none`: every row is tried, so every bad row is reported; if any failed, the whole
  transaction is rolled back and nothing is written;
- `per_row`: the good rows are committed, the bad ones are not.

Rows are applied in order, each seeing the ones before it: two rows with the same natural
key in one call are a create and then an update of that record (or two updates).

Links may be given by id, as in single writes, or by a unique field (or unique set) of the
target: `"client": {"inn": "1655000001"}`, looked up within the caller's read scope (a
record they may not see is "not found", like `link_not_found` of a single write).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.errors import ErrorDetail, MalformedRequest, RequestError, StaleVersion, ValidationFailed
from engine.records.plain_creates import NotTaken, PlainCreates
from engine.records.schemas import schema_problems
from engine.records.service import Record, Records
from engine.setup.names import link_column
from engine.setup.spec import EntitySpec
from engine.storage.constraints import shadow_column
from engine.types.fields import ValueProblem

#: the most rows one bulk call takes
MAX_ROWS = 1000
MODES = ("all_or_none", "per_row")
BODY_KEYS = ("mode", "upsert_by", "rows")


@dataclass
class RowResult:
    """What became of one row: created or updated (with the record), or its error."""

    index: int
    created: bool = False
    record: Record | None = None
    error: RequestError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BulkResult:
    mode: str
    rows: list[RowResult]

    @property
    def failed(self) -> list[RowResult]:
        return [row for row in self.rows if not row.ok]

    @property
    def written(self) -> bool:
        """Whether the good rows were committed (all_or_none: only when none failed)."""
        return self.mode == "per_row" or not self.failed


class _Undo(Exception):
    """Raised inside the outer transaction to roll all of it back (all_or_none)."""


def unique_keys(spec: EntitySpec) -> list[tuple[str, ...]]:
    """The natural keys of an entity: each field with `unique`, each declared unique set."""
    keys: list[tuple[str, ...]] = [(field.name,) for field in spec.fields.values() if field.unique]
    keys += [tuple(unique.members) for unique in spec.unique]
    return keys


def _describe(keys: Sequence[tuple[str, ...]]) -> str:
    if not keys:
        return "it declares none (add `unique: true` to a field, or `unique: [[a, b]]`)"
    return ", ".join(key[0] if len(key) == 1 else "[" + ", ".join(key) + "]" for key in keys)


class Bulk:
    """The bulk service of one engine; `run` is the whole call."""

    def __init__(self, records: Records):
        self.records = records
        #: creates of a plain entity, many in one INSERT
        self.plain = PlainCreates(records)

    def run(self, entity: str, body: Any, *, actor: int | None = None) -> BulkResult:
        spec = self.records.storage[entity].spec
        mode, upsert_by, rows = self._request(spec, body)
        results: list[RowResult] | None = None
        db = self.records.db
        try:
            with db.write():
                results = self._unguarded(spec, rows, upsert_by, actor)
                if results is None:
                    results = [self._row(spec, index, row, upsert_by, actor)
                               for index, row in enumerate(rows)]
                if mode == "all_or_none" and any(not result.ok for result in results):
                    raise _Undo
        except _Undo:
            pass
        assert results is not None
        return BulkResult(mode, results)

    def _unguarded(self, spec: EntitySpec, rows: list[Any], upsert_by: tuple[str, ...] | None,
                   actor: int | None) -> list[RowResult] | None:
        """The rows without a savepoint each (two statements fewer per row), in one savepoint
        for them all; None, and nothing of them left, as soon as a row fails after it wrote
        something (then each row is redone in its own savepoint). A row refused before it
        wrote anything (its values, its links, its rights) is just its error."""
        db = self.records.db
        results: list[RowResult] = []
        try:
            with db.write() as conn, db.joining() as state, \
                    self.records.journal.deferred(conn):  # the batch's history: one statement
                plain = self._plain(conn, spec, rows, upsert_by, actor)
                if plain is not None:
                    return plain
                for index, row in enumerate(rows):
                    results.append(self._row(spec, index, row, upsert_by, actor, conn))
                    if state.broken:
                        raise _Undo
        except (_Undo, NotTaken):
            return None
        return results

    def _plain(self, conn: sa.Connection, spec: EntitySpec, rows: list[Any],
               upsert_by: tuple[str, ...] | None, actor: int | None) -> list[RowResult] | None:
        """All creates of a plain entity in one INSERT (engine/records/plain_creates.py);
        None when the batch is not for that path. NotTaken when the database refused it."""
        if upsert_by is not None or not self.plain.takes(spec.name) or not all(
                isinstance(row, dict) and "id" not in row and "version" not in row for row in rows):
            return None
        now = dt.datetime.now(dt.UTC)
        results: list[RowResult | None] = [None] * len(rows)
        prepared: list[dict[str, Any]] = []
        indexes: list[int] = []
        for index, row in enumerate(rows):
            row = dict(row)
            try:
                self._resolve_links(conn, spec, row)
                prepared.append(self.plain.values(spec.name, row, actor, now))
                indexes.append(index)
            except NotTaken:
                return None
            except RequestError as error:
                results[index] = RowResult(index, error=error)
        if prepared:
            made = self.plain.write(conn, spec.name, prepared, actor=actor)
            for index, record in zip(indexes, made, strict=True):
                results[index] = RowResult(index, created=True, record=record)
        return [result for result in results if result is not None]

    # -- the request --------------------------------------------------------------------------
    def _request(self, spec: EntitySpec,
                 body: Any) -> tuple[str, tuple[str, ...] | None, list[Any]]:
        if not isinstance(body, dict):
            raise MalformedRequest('a bulk call takes an object: {"mode": "all_or_none", '
                                   '"rows": [...]}', code="invalid_bulk")
        problems = [ErrorDetail(key, "is not a key of a bulk call; it takes "
                                + ", ".join(BODY_KEYS)) for key in body if key not in BODY_KEYS]
        mode = body.get("mode", "all_or_none")
        if mode not in MODES:
            problems.append(ErrorDetail("mode", "must be all_or_none or per_row"))
        rows = body.get("rows")
        if not isinstance(rows, list) or not rows:
            problems.append(ErrorDetail("rows", "must be a list of 1 to "
                                        f"{MAX_ROWS} objects"))
        elif len(rows) > MAX_ROWS:
            problems.append(ErrorDetail("rows", f"has {len(rows)} rows; a bulk call takes at "
                                        f"most {MAX_ROWS}: split it into several calls"))
        upsert_by = self._upsert_by(spec, body.get("upsert_by"), problems)
        if problems:
            raise MalformedRequest(f"the bulk call for {spec.name} is not valid", problems,
                                   code="invalid_bulk")
        assert isinstance(rows, list)
        return str(mode), upsert_by, rows

    @staticmethod
    def _upsert_by(spec: EntitySpec, value: Any,
                   problems: list[ErrorDetail]) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = [value] if isinstance(value, str) else value
        keys = unique_keys(spec)
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            for key in keys:
                if set(key) == set(names) and len(key) == len(names):
                    return key
        problems.append(ErrorDetail("upsert_by", f"{value!r} is not declared unique for "
                                    f"{spec.name}; what is: {_describe(keys)}"))
        return None

    # -- one row ------------------------------------------------------------------------------
    def _row(self, spec: EntitySpec, index: int, row: Any, upsert_by: tuple[str, ...] | None,
             actor: int | None, joined: sa.Connection | None = None) -> RowResult:
        records = self.records
        try:
            # the row's savepoint, which the create or update joins (`joined`: none)
            with nullcontext(joined) if joined is not None else records.db.savepoint() as conn:
                if not isinstance(row, dict):
                    raise ValidationFailed("a row must be an object of fields",
                                           [ErrorDetail("", "is not an object")])
                row = dict(row)
                record_id = self._whole(row, "id", minimum=1)
                version = self._whole(row, "version", minimum=1)
                self._resolve_links(conn, spec, row)
                if record_id is None and upsert_by is not None:
                    record_id = self._find(conn, spec.name, upsert_by, self._key(spec, row, upsert_by))
                if record_id is None:
                    if version is not None and upsert_by is not None:  # If-Match on nothing
                        raise StaleVersion(f"no {spec.name} has this row's "
                                           f"{', '.join(upsert_by)}, so there is no version "
                                           f"{version} of it; leave version out to create it")
                    if version is not None:
                        raise ValidationFailed("a new record has no version to check",
                                               [ErrorDetail("version", "is only for updates")])
                    record = records.create(spec.name, row, owner=actor, actor=actor)
                    return RowResult(index, created=True, record=record)
                record = records.update(spec.name, record_id, row, if_version=version,
                                        actor=actor)
                return RowResult(index, record=record)
        except RequestError as error:
            return RowResult(index, error=error)

    @staticmethod
    def _whole(row: dict[str, Any], key: str, minimum: int) -> int | None:
        """The row's `key`, taken out of it: absent is None, an explicit null is refused
        (the published row has no null id or version)."""
        if key not in row:
            return None
        value = row.pop(key)
        if isinstance(value, bool) or not isinstance(value, int) or not \
                minimum <= value < 2**63:
            raise ValidationFailed(f"the row's {key} is not valid",
                                   [ErrorDetail(key, f"must be a whole number from {minimum}")])
        return value

    def _key(self, spec: EntitySpec, row: Mapping[str, Any],
             key: tuple[str, ...]) -> dict[str, Any]:
        """The row's values of a natural key, as stored; every member must be given."""
        missing = [name for name in key if row.get(name) is None]
        if missing:
            raise ValidationFailed("the row lacks its natural key (upsert_by)",
                                   [ErrorDetail(name, "is needed to find the record "
                                                "(upsert_by)") for name in missing])
        return self._parsed(spec, {name: row[name] for name in key})

    def _parsed(self, spec: EntitySpec, given: Mapping[str, Any]) -> dict[str, Any]:
        """A key's values as stored, by member name (a link's as its id); checked against
        the entity's schema first, as a single write checks them."""
        values: dict[str, Any] = {}
        problems = schema_problems(self.records.schemas[spec.name].patch_validator,
                                   dict(given), spec)
        if problems:
            raise ValidationFailed(f"the {spec.name}'s key is not valid", problems)
        for name, value in given.items():
            field = spec.fields.get(name)
            if field is None:  # a single link, by id
                if isinstance(value, bool) or not isinstance(value, int):
                    problems.append(ErrorDetail(name, "must be an id"))
                values[name] = value
                continue
            try:
                values[name] = field.type.parse(field, value)
            except ValueProblem as problem:
                problems.append(ErrorDetail(name, str(problem)))
        if problems:
            raise ValidationFailed(f"the {spec.name}'s key is not valid", problems)
        return values

    def _find(self, conn: sa.Connection, entity: str, key: tuple[str, ...],
              values: Mapping[str, Any]) -> int | None:
        """The id of the record with these key values that the caller may see, if any.
        A set that ignores case or spaces is looked up by its folded (shadow) columns, as
        its UNIQUE constraint compares them."""
        table = self.records.storage[entity]
        spec = table.spec
        unique = next((u for u in spec.unique if tuple(u.members) == key), None)
        conditions = []
        for name in key:
            value = values[name]
            if name in spec.links:
                conditions.append(table.table.c[link_column(name)] == value)
            elif unique is not None and name in unique.folded:
                conditions.append(table.table.c[shadow_column(unique, name)]
                                  == unique.fold(str(value)))
            else:
                conditions.append(table.table.c[name] == value)
        statement = sa.select(table.table.c.id).where(*conditions).limit(1)
        found = conn.execute(self.records.access.scoped(statement, entity, "read")).scalars().all()
        return found[0] if found else None

    def _resolve_links(self, conn: sa.Connection, spec: EntitySpec, row: dict[str, Any]) -> None:
        """Links given by a target's natural key (`{"inn": "..."}`) become ids."""
        problems: list[ErrorDetail] = []
        for name, value in row.items():
            link = spec.links.get(name)
            if link is None or link.polymorphic or link.through:
                continue
            if link.many and isinstance(value, list):
                row[name] = [self._target(conn, link.target, name, v, problems)
                             if isinstance(v, dict) else v for v in value]
            elif not link.many and isinstance(value, dict):
                row[name] = self._target(conn, link.target, name, value, problems)
        if problems:
            raise ValidationFailed("a linked record does not exist", problems,
                                   code="link_not_found")

    def _target(self, conn: sa.Connection, target: str, name: str, given: dict[str, Any],
                problems: list[ErrorDetail]) -> int | None:
        target_spec = self.records.storage[target].spec
        keys = unique_keys(target_spec)
        key = next((k for k in keys if set(k) == set(given) and len(k) == len(given)), None)
        if key is None:
            raise ValidationFailed(f"{name} names its {target} by a key that is not unique",
                                   [ErrorDetail(name, f"give an id or a unique key of {target}: "
                                                f"{_describe(keys)}")])
        try:
            found = self._find(conn, target, key, self._parsed(target_spec, given))
        except ValidationFailed as error:
            problems.extend(ErrorDetail(f"{name}.{d.field}", d.problem) for d in error.details)
            return None
        if found is None:
            shown = ", ".join(f"{k} {v!r}" for k, v in given.items())
            problems.append(ErrorDetail(name, f"no {target} with {shown}"))
        return found
