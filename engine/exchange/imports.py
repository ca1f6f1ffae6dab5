"""Import a CSV or XLSX file into an entity: the file's rows become bulk writes.

    result = kt.imports.run("client", table, ImportOptions(mode="all"), actor=user_id)

The file (engine/exchange/files.py) is read as a stream; its columns are mapped to
fields before any row is read (engine/exchange/columns.py), and every problem with
them stops the import there. Each row's cells are read as people write them
(engine/exchange/cells.py) into the JSON body a bulk row takes, and the rows go to
`Bulk` (engine/records/bulk.py) in batches of `BATCH_ROWS` — so an imported row meets
exactly what a single write meets: validation, rules, access scopes and roles, history,
formulas and roll-ups; only the reading of cells is the import's own. New records of a
plain entity, from a file of its own fields only, skip the JSON bodies: their cells go
straight to column values through the same steps (engine/exchange/fast_rows.py), and any
batch that path is not sure of comes here (`ImportResult.slow_path` says when it is not
taken at all, and why).

- mode `all` (all-or-none): the whole file is one write transaction; every row is still
  tried, so every bad row is reported, and if any failed the transaction is rolled back
  and nothing is written;
- mode `good`: each batch is its own transaction and its good rows are committed; a bad
  row is reported and left out. An import stopped midway (a killed process) leaves the
  committed batches: `rows_done` of the last progress says where to resume;
- `dry_run`: everything is read, mapped, validated and tried inside one transaction that
  is always rolled back: the same report, nothing written.

Every bad row yields `RowError`s (row number, column, value, problem) to `on_error`, as it
is found; the result keeps the first `KEPT_ERRORS` of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import sqlalchemy as sa

from engine.errors import ErrorDetail, MalformedRequest, NotFound, RequestError, RuleFailed
from engine.exchange.cells import CellReaders, Locale, blank, default_readers, split_many
from engine.exchange.columns import Column, ColumnPlan, Title, plan_columns
from engine.exchange.fast_rows import FastRows
from engine.exchange.files import Table
from engine.records.bulk import Bulk, BulkResult
from engine.records.service import Records
from engine.types.fields import ValueProblem

MODES = ("all", "good")
BATCH_ROWS = 1000
KEPT_ERRORS = 100
#: link values found by title, remembered per import (a bound on its memory)
TITLE_CACHE = 50_000


@dataclass(frozen=True)
class ImportOptions:
    mode: str = "all"
    dry_run: bool = False
    upsert_by: tuple[str, ...] | None = None
    #: header → target (`phone`, `client.inn`, `client.title`, `client.id`), or None: skip it
    mapping: Mapping[str, str | None] | None = None
    skip_unknown: bool = False
    batch_rows: int = BATCH_ROWS
    #: write rows that may duplicate records (`duplicates:` rules in warn mode)
    confirm_duplicates: bool = False


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    value: str
    problem: str
    code: str = "validation_failed"

    def as_json(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "value": self.value,
                "problem": self.problem, "code": self.code}


@dataclass
class ImportProgress:
    rows_done: int = 0
    #: the file's record rows: known up front for XLSX; for CSV once it is read to the end
    #: (its progress is by bytes, so the file is read once)
    rows_total: int | None = None
    created: int = 0
    updated: int = 0
    failed: int = 0
    #: rows whose batch is committed (mode good): where an interrupted import resumes
    rows_committed: int = 0
    #: the file's row (header: 1) after the last committed batch: where to resume
    resume_at_row: int = 2
    started: float = field(default_factory=time.monotonic)
    #: the bytes of the file read so far, and its size (CSV; None when unknown)
    bytes_done: int | None = None
    bytes_total: int | None = None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.rows_done / elapsed if elapsed > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        """How much of the file is done, 0 to 1: by rows when their total is known, else by
        bytes (rows of a CSV are about alike in size); None when neither is known."""
        if self.rows_total:
            return min(1.0, self.rows_done / self.rows_total)
        if self.bytes_total and self.bytes_done is not None:
            return min(1.0, self.bytes_done / self.bytes_total)
        return None

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before there is a pace)."""
        done = self.fraction
        elapsed = time.monotonic() - self.started
        if not done or elapsed <= 0:
            return None
        return elapsed * (1 - done) / done


@dataclass
class ImportResult:
    entity: str
    mode: str
    dry_run: bool
    progress: ImportProgress
    #: the first KEPT_ERRORS errors (every one went to on_error)
    errors: list[RowError]
    warnings: list[ErrorDetail]
    columns: dict[str, str]  # header → what it fills
    #: why the import's rows go the slow way, row by row through bulk (None: its batches
    #: take the fast path, engine/exchange/fast_rows.py), and how many batches went the
    #: slow way even so (a row or the database refused the batch)
    slow_path: str | None = None
    slow_batches: int = 0

    @property
    def written(self) -> bool:
        """Whether rows were committed (all: only when none failed; never on a dry run)."""
        if self.dry_run:
            return False
        return self.mode == "good" or not self.progress.failed

    def as_json(self) -> dict[str, Any]:
        p = self.progress
        return {"entity": self.entity, "mode": self.mode, "dry_run": self.dry_run,
                "written": self.written, "rows_done": p.rows_done, "rows_total": p.rows_total,
                "created": p.created, "updated": p.updated, "failed": p.failed,
                "columns": self.columns,
                "warnings": [{"column": w.field, "problem": w.problem} for w in self.warnings],
                "errors": [e.as_json() for e in self.errors]}


class _Undo(Exception):
    """Rolls the whole import back (all-or-none with a bad row, or a dry run)."""


class _Batch:
    """The rows of one batch: their bodies for bulk, and each one's file row and cells."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.rows: list[tuple[int, list[Any]]] = []


class Imports:
    """The import service of one engine."""

    def __init__(self, records: Records, bulk: Bulk, readers: CellReaders | None = None):
        self.records = records
        self.bulk = bulk
        self.readers = readers or default_readers()
        self.locale = Locale.of(records.storage.setup)

    def plan(self, entity: str, headers: list[str], options: ImportOptions) -> ColumnPlan:
        """The columns of a file, checked against the entity and the acting user's role."""
        spec = self.records.storage[entity].spec
        self._check_options(entity, options)
        return plan_columns(self.records.storage.setup, spec, headers, self.records.access.rights,
                            self.readers, mapping=options.mapping,
                            skip_unknown=options.skip_unknown)

    def _check_options(self, entity: str, options: ImportOptions) -> None:
        spec = self.records.storage[entity].spec
        problems: list[ErrorDetail] = []
        if options.mode not in MODES:
            problems.append(ErrorDetail("mode", "must be all (all-or-none) or good (import "
                                        "the good rows)"))
        if options.upsert_by is not None:
            Bulk._upsert_by(spec, list(options.upsert_by), problems)
        if not 1 <= options.batch_rows <= 1000:
            problems.append(ErrorDetail("batch_rows", "must be 1 to 1000"))
        rights = self.records.access.rights(entity)
        if rights is not None and not rights.allows("create") and options.upsert_by is None:
            problems.append(ErrorDetail("entity", f"your role may not create {entity} records"))
        if problems:
            raise MalformedRequest(f"the import into {entity} is not valid", problems,
                                   code="invalid_import")

    def run(self, entity: str, table: Table, options: ImportOptions, *,
            actor: int | None = None,
            on_progress: Callable[[ImportProgress], None] | None = None,
            on_error: Callable[[RowError], None] | None = None) -> ImportResult:
        plan = self.plan(entity, table.headers, options)
        progress = ImportProgress(rows_total=table.total, bytes_total=table.size)
        result = ImportResult(entity, options.mode, options.dry_run, progress, [],
                              plan.warnings, {c.header: c.target for c in plan.columns})
        run = _Run(self, entity, plan, options, actor, result, on_error)
        whole = options.dry_run or options.mode == "all"
        db = self.records.db
        confirmed = self.records.duplicates.confirmed("warn" if options.confirm_duplicates else "")
        try:
            with confirmed, db.write() if whole else nullcontext():
                for batch in _batches(table.rows, options.batch_rows):
                    run.batch(batch)  # in a transaction of its own, or a savepoint
                    if not whole:
                        progress.rows_committed = progress.rows_done
                        progress.resume_at_row = batch[-1][0] + 1
                    progress.bytes_done = table.position()
                    if on_progress is not None:
                        on_progress(progress)
                if progress.rows_total is None:
                    progress.rows_total = progress.rows_done  # the whole file is read
                if whole and (options.dry_run or progress.failed):
                    raise _Undo
        except _Undo:
            pass
        if whole and result.written:
            progress.rows_committed = progress.rows_done
        return result


def _batches(rows: Iterator[tuple[int, list[Any]]],
             size: int) -> Iterator[list[tuple[int, list[Any]]]]:
    while batch := list(islice(rows, size)):  # the rows taken in C, not one by one here
        yield batch


class _Run:
    """One import's state: its title cache, its counts and errors."""

    def __init__(self, imports: Imports, entity: str, plan: ColumnPlan, options: ImportOptions,
                 actor: int | None, result: ImportResult,
                 on_error: Callable[[RowError], None] | None):
        self.imports = imports
        self.records = imports.records
        self.entity = entity
        self.plan = plan
        self.options = options
        self.actor = actor
        self.result = result
        self.on_error = on_error
        self.titles: dict[tuple[str, str], int | str] = {}
        self.language = imports.records.storage.setup.languages[0]
        #: each column with its reader of a cell, made once: (column, read, plain) where a
        #: plain column's value is its body key's as is (a field by value)
        self.steps = [(column, *self._step(column)) for column in plan.columns]
        self.fast, result.slow_path = FastRows.of(
            self.records, imports.bulk.plain, entity, plan, imports.locale, actor,
            options.upsert_by)

    def _step(self, column: Column) -> tuple[Callable[[sa.Connection, Any], Any], bool]:
        if column.by != "value" or column.name == "id" or (
                column.link is not None and column.link.many):
            return (lambda conn, cell: self.value(conn, column, cell)), False
        assert column.field is not None and column.read is not None
        read, field, locale = column.read, column.field, self.imports.locale

        def plain(conn: sa.Connection, cell: Any) -> Any:  # `value` for a field by value
            if cell is None or (isinstance(cell, str) and not cell.strip()):  # blank
                return None
            return read(field, cell, locale)
        return plain, True

    def error(self, error: RowError) -> None:
        if len(self.result.errors) < KEPT_ERRORS:
            self.result.errors.append(error)
        if self.on_error is not None:
            self.on_error(error)

    def batch(self, rows: list[tuple[int, list[Any]]]) -> None:
        """One batch in a write of its own (the batch's transaction, or its savepoint of
        the import's): the fast path's, or else the slow path's."""
        progress = self.result.progress
        if self.fast is not None:
            made = self.fast.write(rows)
            if made is not None:
                progress.rows_done += len(rows)
                progress.created += made
                return
            self.result.slow_batches += 1
        with self.records.db.write() as conn:
            self._slow(conn, rows)

    def _slow(self, conn: sa.Connection, rows: list[tuple[int, list[Any]]]) -> None:
        """The batch row by row: each row's body, then bulk's per-row writes."""
        progress = self.result.progress
        batch = _Batch()
        for number, cells in rows:
            body, errors = self.body(conn, number, cells)
            progress.rows_done += 1
            if errors:
                progress.failed += 1
                for row_error in errors:
                    self.error(row_error)
                continue
            batch.bodies.append(body)
            batch.rows.append((number, cells))
        if not batch.bodies:
            return
        request: dict[str, Any] = {"mode": "per_row", "rows": batch.bodies}
        if self.options.upsert_by is not None:
            request["upsert_by"] = list(self.options.upsert_by)
        outcome: BulkResult = self.imports.bulk.run(self.entity, request, actor=self.actor)
        for row in outcome.rows:
            if row.ok:
                if row.created:
                    progress.created += 1
                else:
                    progress.updated += 1
                continue
            progress.failed += 1
            assert row.error is not None
            number, cells = batch.rows[row.index]
            for row_error in self.bulk_errors(number, cells, row.error):
                self.error(row_error)

    # -- one row ---------------------------------------------------------------------------
    def body(self, conn: sa.Connection, number: int,
             cells: list[Any]) -> tuple[dict[str, Any], list[RowError]]:
        body: dict[str, Any] = {}
        errors: list[RowError] = []
        extra = [cell for cell in cells[self.plan.width:] if not blank(cell)] \
            if len(cells) > self.plan.width else None
        if extra:
            errors.append(RowError(number, f"(column {self.plan.width + 1})", _shown(extra[0]),
                                   f"is beyond the {self.plan.width} columns the header row "
                                   "names: a value with no column (a stray delimiter?)"))
        width = len(cells)
        for column, read, plain in self.steps:
            cell = cells[column.index] if column.index < width else None
            try:
                value = read(conn, cell)
            except ValueProblem as problem:
                errors.append(RowError(number, column.header, _shown(cell), str(problem)))
                continue
            if plain:
                body[column.name] = value
            elif column.by == "key" and column.field is not None:
                if value is None:
                    body.setdefault(column.name, None)
                elif isinstance(body.get(column.name), dict):
                    body[column.name][column.field.name] = value
                elif column.link is not None and column.link.many:
                    body[column.name] = [{column.field.name: v} for v in value]
                else:
                    body[column.name] = {column.field.name: value}
            elif column.name == "id" and value is None:
                continue  # an empty id: a new record
            else:
                body[column.name] = value
        return body, errors

    def value(self, conn: sa.Connection, column: Column, cell: Any) -> Any:
        many = column.link is not None and column.link.many
        if blank(cell):
            return [] if many else None
        if column.by == "value":
            assert column.field is not None and column.read is not None
            return column.read(column.field, cell, self.imports.locale)
        parts = split_many(cell) if many else [cell]
        if column.by == "key":
            assert column.field is not None and column.read is not None
            return [column.read(column.field, part, self.imports.locale)
                    for part in parts] if many else \
                column.read(column.field, cell, self.imports.locale)
        if column.by == "id":
            ids = [_id(part) for part in parts]
            return ids if many else ids[0]
        assert column.title is not None
        ids = [self.by_title(conn, column.title, str(part).strip()) for part in parts]
        return ids if many else ids[0]

    def by_title(self, conn: sa.Connection, title: Title, text: str) -> int:
        key = (title.entity, text)
        found = self.titles.get(key)
        if found is None:
            found = self._look_up(conn, title, text)
            if isinstance(found, int):
                if len(self.titles) >= TITLE_CACHE:
                    self.titles.clear()
                self.titles[key] = found
        if isinstance(found, str):
            raise ValueProblem(found)
        return found

    def _look_up(self, conn: sa.Connection, title: Title, text: str) -> int | str:
        """The id of the one record titled `text` the acting user may read, or why not."""
        table = self.records.storage[title.entity].table
        parts = title.parts
        if len(parts) == 3 and not parts[0] and not parts[2]:
            condition = table.c[parts[1]] == text  # `{name}`: the column itself (indexed)
        else:
            expression: Any = sa.literal(parts[0])
            for index, part in enumerate(parts[1:], start=1):
                piece = sa.func.coalesce(table.c[part], "") if index % 2 else sa.literal(part)
                expression = expression.op("||")(piece)
            condition = expression == text
        statement = sa.select(table.c.id).where(condition).limit(2)
        ids = conn.execute(self.records.access.scoped(statement, title.entity, "read")).scalars().all()
        if not ids:
            return f"no {title.entity} titled {text!r}"
        if len(ids) > 1:
            return (f"several {title.entity} records are titled {text!r}: name one by a unique "
                    "field or by id")
        return int(ids[0])

    def bulk_errors(self, number: int, cells: list[Any], error: RequestError) -> list[RowError]:
        details = list(error.details) or [ErrorDetail("", str(error))]
        if isinstance(error, NotFound) and not error.details and "id" in self.plan.header_of:
            details = [ErrorDetail("id", f"{error}: a row with an id updates that record; to "
                                   "create the records of a file from another database, skip "
                                   f"the column (mapping {{{self.plan.header_of['id']}: null}})")]
        if isinstance(error, RuleFailed):
            message = error.as_json(self.language)["error"]
            details = [ErrorDetail(d.get("field", ""), d.get("problem", message["message"]))
                       for d in message.get("details") or [{"problem": message["message"]}]]
        errors = []
        by_header = {c.header: c for c in self.plan.columns}
        for detail in details:
            name = detail.field
            header = self.plan.header_of.get(name) or self.plan.header_of.get(name.split(".")[0]) \
                or self.plan.header_of.get(name.split("[")[0], "")
            column = by_header.get(header)
            value = "" if column is None or column.index >= len(cells) else _shown(cells[column.index])
            problem = detail.problem if header or not name else f"{name}: {detail.problem}"
            errors.append(RowError(number, header, value, problem, error.code))
        return errors


def _id(cell: Any) -> int:
    text = str(int(cell)) if isinstance(cell, float) and cell.is_integer() else str(cell).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) < 2**63:
        raise ValueProblem("must be an id (a whole number from 1)")
    return int(text)


def _shown(cell: Any) -> str:
    return "" if cell is None else str(cell)
