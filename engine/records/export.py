"""Export: every record a list call would answer, written as CSV or XLSX while it is read.

    exporter = Exporter(kt.records, kt.clock)
    export = exporter.prepare("client", [("city", "Kazan"), ("sort", "name"),
                                         ("format", "csv"), ("values", "locale")], "ru")
    with open("clients.csv", "wb") as out:
        export.write(out)

The list's own parser reads the filters, `q` and `sort` (engine/records/query.py), so an
export answers exactly the records `GET /api/{e}` would, in its order, without paging; the
statement comes from `Access.scoped` and the rows are rendered by `Records.render`, so a
role gets the same records and the same fields as in its list, never a hidden column.
`prepare` checks everything (400 for a bad parameter) before a byte is written; `write`
then reads the rows in chunks of `CHUNK_ROWS` through one cursor (a server-side cursor on
PostgreSQL) and writes each chunk as it comes, so memory stays flat however many rows
match. Both run as the acting user (`kt.acting`).

Cells, decided once per column from the field's type:
- `values=iso` (default): the API's forms — `1234.50`, `2026-12-31`,
  `2026-12-31T09:00:00Z`, `true`, choice values; `values=locale`: as the language writes
  them (engine/records/export_locale.py) — `1234,50`, `31.12.2026`, times in the setup's
  time zone, да/нет, choice and stage labels.
- a link: the linked record's id, and with `titles=true` a column after it with the linked
  record's title (engine/records/titles.py: empty when the caller may not read that
  record); a many-to-many link: its ids joined by `;` (`3;4`); a link to several
  entities: `entity:id` (`sale:7`).
- CSV: text values starting with `=`, `+`, `-`, `@`, a tab or a carriage return get a `'`
  in front (`escape_formulas=true`, the default), so a spreadsheet shows them instead of
  running them; numbers, dates and ids are never touched. `escape_formulas=false` keeps
  the text as stored (for programs, or a round trip through import).
- XLSX (openpyxl, write-only): numbers, dates and booleans are typed cells; text is always
  a text cell (never a formula), so it needs no escaping. Money and integers with more
  than 15 significant digits (Excel's precision) are written as text, so no digit is lost;
  dates before 1900 (which Excel cannot hold) as ISO text; text longer than Excel's
  32,767 characters is cut there, characters XML cannot carry become U+FFFD, and a
  reader takes `\r\n` in a text as `\n` (XML's line ends); CSV keeps all three as they
  are. The header row is bold and frozen; past Excel's rows per sheet, a new sheet.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.errors import ErrorDetail, MalformedRequest
from engine.records.export_cells import Cells, Column, ExcelText, excel_text, kind_of
from engine.records.export_locale import locale_format, system_label
from engine.records.query import ListQuery, order_by
from engine.records.titles import Titles
from engine.setup.filters import LIST_PARAMS
from engine.setup.spec import EntitySpec, label_text
from engine.types.moments import Clock

if TYPE_CHECKING:
    from engine.records.service import Records

FORMATS = ("csv", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
HEADERS = ("labels", "names")
VALUES = ("iso", "locale")
#: the delimiter as a query parameter writes it → the character
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "|": "|"}
BOOLEANS = ("true", "false")
#: an export's own controls; a field of the same name is filtered as `name[eq]=…`
EXPORT_PARAMS = ("format", "headers", "language", "values", "bom", "delimiter", "escape_formulas",
                 "titles")
CSV_ONLY = ("bom", "delimiter", "escape_formulas")
#: the list's controls an export refuses: it writes every matching record, unpaged
PAGING = tuple(p for p in LIST_PARAMS if p not in ("q", "sort"))
#: rows read and written per chunk: a server-side cursor's fetch, a flush of the output
CHUNK_ROWS = 1000
FLUSH_BYTES = 64 * 1024
#: records per sheet: Excel's 1,048,576 rows, less the header
EXCEL_SHEET_ROWS = 1_048_575


class Output(Protocol):
    def write(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True)
class ExportOptions:
    """How an export is written: its format, headers, values and CSV dialect."""

    format: str = "csv"
    headers: str = "labels"
    language: str | None = None
    values: str = "iso"
    bom: bool = False
    delimiter: str = ","
    escape_formulas: bool = True
    #: a column with the linked record's title after each link to an entity with a title
    titles: bool = False


@dataclass(frozen=True)
class Export:
    """A checked export, ready to write: the parsed list query, the columns, the options."""

    entity: str
    options: ExportOptions
    columns: tuple[Column, ...]
    query: ListQuery
    records: Records = field(repr=False)
    #: `client-2026-12-05.csv`: ASCII, for every client
    filename: str
    #: the same with the entity's plural label in the export's language (`Клиенты-…`)
    title_filename: str
    sheet_title: str
    #: (link, target entity, column key) of each link whose titles are written
    title_links: tuple[tuple[str, str, str], ...] = ()

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.options.format]

    def write(self, out: Output) -> int:
        """Write the export to `out` (a binary file, stdout's buffer, an HTTP body), chunk
        by chunk as the rows are read; the number of records written."""
        if self.options.format == "xlsx":
            return _write_xlsx(self, out)
        return _write_csv(self, out)

    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        """The matching records as the list renders them, `CHUNK_ROWS` at a time, read
        through one cursor in one read transaction: one snapshot on both databases (on
        PostgreSQL a REPEATABLE READ transaction, so each chunk's many-to-many ids are
        those of the moment the export started, as its rows are)."""
        records = self.records
        table = records.storage[self.entity]
        statement = records.access.scoped(
            sa.select(*records.shapes[self.entity].columns)
            .where(*self.query.conditions)
            .order_by(*order_by(self.query.sort, records.db.dialect)), self.entity, "read")
        titles = Titles(records) if self.title_links else None
        with records.db.read() as conn:
            if records.db.dialect == "postgresql":  # the transaction's first statement
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            result = conn.execute(statement.execution_options(yield_per=CHUNK_ROWS))
            for rows in result.partitions():
                rendered = records.render(conn, table, [row._mapping for row in rows])
                if titles is not None:
                    _add_titles(conn, titles, self.title_links, rendered)
                yield rendered


class Exporter:
    """Prepares exports of one engine's records (for the API and the command line)."""

    def __init__(self, records: Records, clock: Clock):
        self.records = records
        self.clock = clock
        self.setup = records.storage.setup

    def prepare(self, entity: str, params: Sequence[tuple[str, str]],
                language: str | None = None) -> Export:
        """Check the export's options and the list's filters, search and sort in
        `params` (400 `invalid_query` naming every bad one); `language` is the default of
        the `language` parameter (the caller's Accept-Language, else the setup's first)."""
        problems: list[ErrorDetail] = []
        options, rest = self._options(params, language, problems)
        try:
            query = self.records.parser.parse(entity, rest)
        except MalformedRequest as error:
            raise MalformedRequest("the export parameters are not valid",
                                   [*problems, *error.details], code="invalid_query") from None
        if problems:
            raise MalformedRequest("the export parameters are not valid", problems,
                                   code="invalid_query")
        spec = self.setup.entities[entity]
        today = self.clock().astimezone(ZoneInfo(self.setup.timezone)).date().isoformat()
        extension = options.format
        plural = label_text(spec.plural, options.language) or entity
        columns = tuple(self._columns(spec, options))
        keys = {column.key for column in columns}
        title_links = tuple((link.name, link.target, title_key(link.name))
                            for link in spec.links.values() if title_key(link.name) in keys)
        return Export(entity, options, columns, query, self.records,
                      f"{entity}-{today}.{extension}", f"{plural}-{today}.{extension}",
                      _sheet_title(plural, entity), title_links)

    # -- options -----------------------------------------------------------------------------
    def _options(self, params: Sequence[tuple[str, str]], language: str | None,
                 problems: list[ErrorDetail]) -> tuple[ExportOptions, list[tuple[str, str]]]:
        seen: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in params:
            if key in PAGING:
                problems.append(ErrorDetail(key, "is not a parameter of an export: it writes "
                                                 "every matching record, unpaged"))
            elif key in EXPORT_PARAMS:
                if key in seen:
                    problems.append(ErrorDetail(key, "is given twice"))
                seen[key] = value
            else:
                rest.append((key, value))

        def one_of(key: str, allowed: Sequence[str], default: str) -> str:
            value = seen.get(key, default)
            if value not in allowed:
                problems.append(ErrorDetail(key, f"must be one of: {', '.join(allowed)}"))
                return default
            return value

        fmt = one_of("format", FORMATS, "csv")
        if fmt != "csv":
            problems += [ErrorDetail(key, "applies to format=csv only")
                         for key in CSV_ONLY if key in seen]
        languages = self.setup.languages
        chosen = language if language in languages else (languages[0] if languages else None)
        if "language" in seen:
            wanted = {lang.lower(): lang for lang in languages}.get(seen["language"].lower())
            if wanted is None:
                problems.append(ErrorDetail("language", "must be one of the setup's languages: "
                                            + ", ".join(languages)))
            chosen = wanted or chosen
        options = ExportOptions(
            format=fmt, headers=one_of("headers", HEADERS, "labels"), language=chosen,
            values=one_of("values", VALUES, "iso"), bom=one_of("bom", BOOLEANS, "false") == "true",
            delimiter=DELIMITERS[one_of("delimiter", tuple(DELIMITERS), ",")],
            escape_formulas=one_of("escape_formulas", BOOLEANS, "true") == "true",
            titles=one_of("titles", BOOLEANS, "false") == "true")
        return options, rest

    # -- columns -----------------------------------------------------------------------------
    def _columns(self, spec: EntitySpec, options: ExportOptions) -> Iterator[Column]:
        """The record's keys in the list's order, less what the acting user may not see."""
        shape = self.records.shapes[spec.name]
        rights = self.records.access.rights(spec.name)
        hidden = rights.hidden if rights is not None else frozenset()
        keys = [key for key, _, _ in shape.steps] + [name for name, _ in shape.single] + \
            [name for name, _, _ in shape.poly] + list(shape.many)
        locale = locale_format(options.language) if options.values == "locale" else None
        cells = Cells(options.language, locale, options.format == "csv" and options.escape_formulas,
                      ZoneInfo(self.setup.timezone))
        titled = self._titled(spec) if options.titles else frozenset()
        for key in keys:
            if key in hidden:
                continue
            yield self._column(spec, key, options, cells)
            if key in titled:
                yield self._title_column(spec, key, options, cells)

    def _titled(self, spec: EntitySpec) -> frozenset[str]:
        """The links to records of an entity that has a title (a many-to-many link's titles
        in one cell, separated by `;` as its ids are; not a link that carries data)."""
        return frozenset(link.name for link in spec.links.values()
                         if not link.polymorphic and not link.through
                         and self.setup.entities[link.target].title)

    @staticmethod
    def _title_column(spec: EntitySpec, key: str, options: ExportOptions,
                      cells: Cells) -> Column:
        word = system_label("title", options.language)
        name = key if options.headers == "names" else \
            label_text(spec.links[key].label, options.language) or key
        return cells.column(title_key(key), f"{name} ({word})", "text", None)

    def _column(self, spec: EntitySpec, key: str, options: ExportOptions,
                cells: Cells) -> Column:
        language = options.language
        names = options.headers == "names"
        declared = spec.fields.get(key)
        if declared is not None:
            header = key if names else label_text(declared.label, language) or key
            return cells.column(key, header, kind_of(declared.type), declared)
        link = spec.links.get(key)
        if link is not None:
            header = key if names else label_text(link.label, language) or key
            kind = "ref" if link.polymorphic else "ids" if link.many else "integer"
            return cells.column(key, header, kind, None)
        header = key if names else system_label(key, language)
        if key == "stage":
            return cells.column(key, header, "choice", None, _stage_labels(spec, language))
        kind = "datetime" if key in ("created_at", "updated_at") else "integer"
        return cells.column(key, header, kind, None)


def title_key(link: str) -> str:
    """The key of a link's title column in an exported record (never a field's name: a
    name has no dot)."""
    return f"{link}.title"


def _add_titles(conn: sa.Connection, titles: Titles,
                title_links: Sequence[tuple[str, str, str]], records: list[dict[str, Any]]) -> None:
    for link, target, key in title_links:
        ids: set[int] = set()
        for record in records:
            value = record.get(link)
            if isinstance(value, list):
                ids.update(value)
            elif value is not None:
                ids.add(value)
        found = titles.of(conn, target, ids)
        for record in records:
            value = record.get(link)
            record[key] = ";".join(found[i] for i in value if i in found) \
                if isinstance(value, list) else found.get(value)  # type: ignore[arg-type]


def _stage_labels(spec: EntitySpec, language: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    if spec.pipeline is not None:
        for pipeline in spec.pipeline.pipelines.values():
            for stage in pipeline.stages:
                labels.setdefault(stage.name, label_text(stage.label, language) or stage.name)
    return labels


def _sheet_title(plural: str, entity: str) -> str:
    """An Excel sheet's name: at most 31 characters, none of []:*?/\\."""
    title = re.sub(r"[\[\]:*?/\\]", " ", plural).strip()[:31].strip()
    return title or entity


# -- writers ---------------------------------------------------------------------------------
def _write_csv(export: Export, out: Output) -> int:
    options = export.options
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=options.delimiter, lineterminator="\r\n")
    if options.bom:
        out.write(codecs.BOM_UTF8)
    writer.writerow([column.header for column in export.columns])
    converters = [(column.key, column.text) for column in export.columns]
    count = 0
    for records in export.chunks():
        writer.writerows([[text(record[key]) for key, text in converters] for record in records])
        count += len(records)
        if buffer.tell() >= FLUSH_BYTES:
            _flush(buffer, out)
    _flush(buffer, out)
    return count


def _flush(buffer: io.StringIO, out: Output) -> None:
    data = buffer.getvalue()
    if data:
        out.write(data.encode("utf-8"))
    buffer.seek(0)
    buffer.truncate()


def _write_xlsx(export: Export, out: Output) -> int:
    """openpyxl's write-only workbook keeps each appended row in a temporary file, not in
    memory; `save` zips them into `out` (which needs no seek). Past Excel's rows per sheet
    the records go on in a new sheet (`Deals (2)`), under the same header."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    bold = Font(bold=True)
    sheet: Any = None

    def new_sheet(number: int) -> Any:
        suffix = f" ({number})" if number > 1 else ""
        made = book.create_sheet(export.sheet_title[:31 - len(suffix)] + suffix)
        made.freeze_panes = "A2"
        headers = []
        for column in export.columns:
            cell = WriteOnlyCell(made, excel_text(column.header))
            cell.data_type = "s"
            cell.font = bold
            headers.append(cell)
        made.append(headers)
        return made

    def typed(value: Any, number_format: str | None) -> Any:
        if isinstance(value, ExcelText):
            if not value.startswith("="):
                return str(value)
            cell = WriteOnlyCell(sheet, str(value))  # openpyxl takes "=…" for a formula
            cell.data_type = "s"
            return cell
        if number_format is not None and isinstance(value, Decimal):
            cell = WriteOnlyCell(sheet, value)
            cell.number_format = number_format
            return cell
        return value

    converters = [(column.key, column.cell, column.number_format) for column in export.columns]
    count = 0
    sheet = new_sheet(1)
    for records in export.chunks():
        for record in records:
            if count and count % EXCEL_SHEET_ROWS == 0:
                sheet = new_sheet(count // EXCEL_SHEET_ROWS + 1)
            sheet.append([typed(cell(record[key]), number_format)
                          for key, cell, number_format in converters])
            count += 1
    book.save(out)
    return count
