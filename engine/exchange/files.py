"""The rows of a file to import, read as a stream: CSV in any delimiter and encoding, XLSX.

`open_table` looks at the file once (its first bytes for CSV: the encoding and delimiter;
the workbook's sheets for XLSX) and returns a `Table`: its header row and an iterator of
`(row number, cells)`, one row at a time, so a file of a million rows is never in memory.
A CSV file is read once: its progress is the bytes read of its size (`Table.position`,
`Table.size`), not rows of a total counted first; an XLSX sheet states its row count.
Row numbers are a spreadsheet's: the header is row 1, the first record row 2. Rows whose
cells are all empty are skipped (an Excel sheet's formatted but empty tail, blank lines).

CSV: UTF-8 with or without BOM; a file that is not UTF-8 is read as cp1251 (Russian
Windows, 1C's exports) unless an encoding is given. The delimiter, unless given, is sniffed
from the first lines among `; , TAB |`. XLSX: openpyxl in read-only mode, which streams the
sheet's XML; cells keep their types (numbers, dates, booleans).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from engine.errors import ErrorDetail, MalformedRequest

#: what the first bytes are judged on (encoding, delimiter)
SAMPLE_BYTES = 64 * 1024
DELIMITERS = ";,\t|"
FALLBACK_ENCODING = "cp1251"
XLSX_MAGIC = b"PK\x03\x04"
#: csv's own cap is 128 KiB per cell; a text cell may hold more
csv.field_size_limit(16 * 1024 * 1024)

Cells = list[Any]


def refused(message: str, field: str = "file", problem: str | None = None) -> MalformedRequest:
    return MalformedRequest(message, [ErrorDetail(field, problem or message)], code="invalid_import")


@dataclass
class Table:
    """A file's header row and its rows, read once, in order."""

    format: str  # csv | xlsx
    headers: list[str]
    rows: Iterator[tuple[int, Cells]]
    #: how many record rows the file has, when known before reading them (None: unknown)
    total: int | None = None
    encoding: str | None = None
    delimiter: str | None = None
    #: the file's size in bytes, and how many of them the rows read so far took (a CSV's
    #: progress; None when unknown)
    size: int | None = None
    position: Callable[[], int | None] = lambda: None


def open_table(file: IO[bytes], name: str, *, delimiter: str | None = None,
               encoding: str | None = None, sheet: str | None = None) -> Table:
    """The table in a binary, seekable file; `name` (its file name) only helps say what it
    is."""
    head = file.read(len(XLSX_MAGIC))
    file.seek(0)
    if head == XLSX_MAGIC or name.lower().endswith((".xlsx", ".xlsm")):
        if delimiter is not None or encoding is not None:
            raise refused("delimiter and encoding are for CSV files; this is an XLSX workbook")
        return _xlsx(file, sheet)
    if sheet is not None:
        raise refused(f"sheet {sheet!r} is for XLSX workbooks; {name} is read as CSV")
    return _csv(file, delimiter, encoding)


# -- CSV -------------------------------------------------------------------------------------
def _csv(file: IO[bytes], delimiter: str | None, encoding: str | None) -> Table:
    size = file.seek(0, 2)
    file.seek(0)
    sample = file.read(SAMPLE_BYTES)
    file.seek(0)
    encoding = _encoding(sample, encoding)
    text = _decode_sample(sample, encoding)
    if delimiter is None:
        delimiter = sniff_delimiter(text)
    elif len(delimiter) != 1:
        shown = {"\\t": "\t", "tab": "\t"}.get(delimiter.lower())
        if shown is None:
            raise refused(f"the delimiter must be one character (or tab), not {delimiter!r}",
                          "delimiter")
        delimiter = shown
    reader = csv.reader(_text(file, encoding), delimiter=delimiter)
    try:
        first = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as error:
        raise _unreadable(error, encoding) from None
    if first is None:
        raise refused("the file is empty: its first row must name the columns")
    headers = [cell.strip() for cell in first]
    return Table("csv", _trimmed(headers), _csv_rows(reader, encoding), None,
                 encoding=encoding, delimiter=delimiter, size=size,
                 position=lambda: _offset(file))


def _encoding(sample: bytes, given: str | None) -> str:
    if given is not None:
        try:
            name = codecs.lookup(given).name
        except LookupError:
            raise refused(f"unknown encoding {given!r}; e.g. utf-8, cp1251, koi8-r, utf-16",
                          "encoding") from None
        return "utf-8-sig" if name == "utf-8" else name
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(sample) < SAMPLE_BYTES)
    except UnicodeDecodeError:
        return FALLBACK_ENCODING
    return "utf-8-sig"  # a BOM further on is impossible; utf-8-sig reads plain UTF-8 as well


def _decode_sample(sample: bytes, encoding: str) -> str:
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    return str(decoder.decode(sample, final=False))


def sniff_delimiter(text: str) -> str:
    """The delimiter of the first lines: csv.Sniffer among the usual ones, else the one
    the header line has most of (a one-column file: `,`)."""
    lines = text.splitlines()[:20]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        pass
    header = lines[0] if lines else ""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Text(io.TextIOWrapper):
    """Text over the caller's binary file, which stays the caller's to close: dropped, it
    lets go of the file instead of closing it."""

    def __del__(self) -> None:
        try:
            self.detach()
        except ValueError:  # already detached
            pass


def _text(file: IO[bytes], encoding: str) -> io.TextIOWrapper:
    file.seek(0)
    return _Text(file, encoding=encoding, newline="")


def _offset(file: IO[bytes]) -> int | None:
    """How far into the file the text reader has read (its read-ahead included: a few KB)."""
    try:
        return file.tell()
    except (OSError, ValueError):  # closed, or not seekable after all
        return None


def _csv_rows(reader: Any, encoding: str) -> Iterator[tuple[int, Cells]]:
    number = 1  # the last row read
    try:
        for number, row in enumerate(reader, start=2):
            # a cell that is not blank (most rows: the first; else any of them)
            if (row and row[0].strip()) or "".join(row).strip():
                yield number, row
    except (UnicodeDecodeError, csv.Error) as error:  # reading the row after `number`
        raise _unreadable(error, encoding, number + 1) from None


def _unreadable(error: Exception, encoding: str, row: int | None = None) -> MalformedRequest:
    where = f" at row {row}" if row else ""
    if isinstance(error, UnicodeDecodeError):
        return refused(f"the file cannot be read as {encoding}{where}: give its encoding "
                       "(--encoding / encoding=), e.g. cp1251 or utf-16", "encoding")
    return refused(f"the file is not valid CSV{where}: {error}")


def _trimmed(headers: list[str]) -> list[str]:
    """Headers without the empty ones at the end (a sheet's unused columns)."""
    while headers and not headers[-1]:
        headers.pop()
    return headers


# -- XLSX ------------------------------------------------------------------------------------
def _xlsx(file: IO[bytes], sheet: str | None) -> Table:
    import openpyxl  # only XLSX imports need it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(file, read_only=True, data_only=True)
    except (InvalidFileException, KeyError, OSError, ValueError) as error:
        raise refused(f"the file is not a readable XLSX workbook: {error}") from None
    except Exception as error:  # zipfile.BadZipFile and the like: still the caller's file
        raise refused(f"the file is not a readable XLSX workbook: {error}") from None
    if sheet is None:
        worksheet = book.worksheets[0]
    elif sheet in book.sheetnames:
        worksheet = book[sheet]
    else:
        book.close()
        raise refused(f"the workbook has no sheet {sheet!r}; it has: " + ", ".join(book.sheetnames),
                      "sheet")
    rows = worksheet.iter_rows(values_only=True)
    first = next(rows, None)
    if first is None:
        book.close()
        raise refused("the sheet is empty: its first row must name the columns")
    headers = _trimmed(["" if cell is None else str(cell).strip() for cell in first])
    total = worksheet.max_row - 1 if isinstance(worksheet.max_row, int) and worksheet.max_row else None
    return Table("xlsx", headers, _xlsx_rows(book, rows), total)


def _xlsx_rows(book: Any, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[int, Cells]]:
    try:
        for number, row in enumerate(rows, start=2):
            cells = list(row)
            if any(cell is not None and (not isinstance(cell, str) or cell.strip())
                   for cell in cells):
                yield number, cells
    finally:
        book.close()
