"""Cells as people write them → the JSON values a write takes, per field type.

A reader turns one cell (text from a CSV; text, a number, a date or a boolean from XLSX)
into the value a JSON body would carry, or raises `ValueProblem` saying what it expected.
The field type's own `parse` then checks the value exactly as for any write; readers only
undo how people (and Excel) write values:

- numbers with spaces, no-break spaces or apostrophes between thousands, a decimal comma
  (`1 234,50`), Persian and Arabic digits and separators; a comma between thousands only in
  a setup whose first language writes numbers that way (en, zh, ...);
- dates as ISO (`2026-12-31`), day first with dots or slashes (`31.12.2026`, `31/12/2026`),
  year first with slashes, dots or 年月日 (`2026/12/31`, `2026年12月31日`); date-times the
  same with a time, in the setup's time zone unless they carry an offset;
- choices by value or by label in any of the setup's languages, case and spaces ignored;
  a multichoice cell lists them separated by `,` or `;`;
- booleans as yes/no, да/нет, true/false, 1/0 (and بله/خیر, 是/否...).

Readers are registered per field type class (`CELL_READERS.register`), found along the
class's bases, so a type derived from `IntegerType` reads as an integer unless it
registers its own; a type with no reader takes the cell's text as is.

A reader may come with a column reader: the cells of a whole column (an import's batch,
engine/exchange/fast_rows.py), all of them text, read at once by a few passes mostly in C
(the texts stripped, joined and translated in one call, checked by one pattern each, made
numbers by `map(int, ...)`): exactly the reader's value of each cell — None for a blank
one —, or None when it is not sure (a cell in another script, a separator it leaves to
the reader...), and the caller reads the cells one by one. It never refuses a cell: the
reader says why a cell is bad.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from engine.setup.spec import FieldSpec, SetupSpec
from engine.types.columns import utc_text
from engine.types.fields import (
    BooleanType,
    ChoiceType,
    DateTimeType,
    DateType,
    DecimalType,
    FieldType,
    IntegerType,
    JsonType,
    MultichoiceType,
    StringType,
    UsersType,
    UserType,
    ValueProblem,
)

#: languages whose people write 1,234.50 (a comma between thousands, a decimal point)
THOUSANDS_COMMA = frozenset({"en", "zh", "ja", "ko", "th", "he", "hi"})
YES = frozenset({"yes", "y", "true", "t", "1", "да", "д", "истина", "+", "✓", "x",
                 "بله", "بلی", "آری", "درست", "是", "对", "對", "真", "ja", "oui", "sí", "si"})
NO = frozenset({"no", "n", "false", "f", "0", "нет", "н", "ложь", "-",
                "خیر", "نه", "نادرست", "否", "不", "错", "假", "nein", "non"})
#: what separates thousands, besides a comma: spaces of every width and apostrophes
_GROUPING = dict.fromkeys(map(ord, " \u00a0\u202f\u2009\u2007'’_\u066c"), None)
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DAY_FIRST = re.compile(r"^(\d{1,2})[./](\d{1,2})[./](\d{4}|\d{2})$")
_YEAR_FIRST = re.compile(r"^(\d{4})[./年](\d{1,2})[./月](\d{1,2})日?$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?$")
_GROUPED = re.compile(r"[-+]?[1-9]\d{0,2}(,\d{3})+")
_WHOLE = re.compile(r"[-+]?\d{1,19}")
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


@dataclass(frozen=True)
class Locale:
    """How the setup's people write numbers and moments (and, per import, each choice
    field's options by value and label, built once)."""

    thousands_comma: bool
    timezone: dt.tzinfo
    options: dict[int, Mapping[str, str]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, setup: SetupSpec) -> Locale:
        first = setup.languages[0].split("-")[0].lower() if setup.languages else "en"
        return cls(first in THOUSANDS_COMMA, ZoneInfo(setup.timezone))


Reader = Callable[[FieldSpec, Any, Locale], Any]
#: text cells of a column → each one's value as the reader reads it, or None (not sure)
ColumnReader = Callable[[FieldSpec, Sequence[str], Locale], "list[Any] | None"]


class CellReaders:
    """Readers by field type class, found along the type's bases."""

    def __init__(self) -> None:
        self._readers: dict[type[FieldType], tuple[Reader, ColumnReader | None]] = {}

    def register(self, field_type: type[FieldType], reader: Reader,
                 column: ColumnReader | None = None) -> None:
        """`reader` for cells of `field_type` (and the types derived from it that have
        none of their own); `column`, if given, reads a column of text cells exactly as
        `reader` reads each (see the module docstring)."""
        self._readers[field_type] = (reader, column)

    def _found(self, field_type: FieldType) -> tuple[Reader, ColumnReader | None]:
        for cls in type(field_type).__mro__:
            found = self._readers.get(cls)
            if found is not None:
                return found
        return _as_is, None

    def reader(self, field_type: FieldType) -> Reader:
        return self._found(field_type)[0]

    def column_reader(self, field_type: FieldType) -> ColumnReader | None:
        """The column reader registered with the type's reader (None: cell by cell)."""
        return self._found(field_type)[1]


def normal(text: str) -> str:
    """Text compared ignoring case, spaces, underscores and Unicode forms."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().replace("_", " ").split())


def blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _text(cell: Any) -> str:
    if type(cell) is str:  # a CSV's every cell: the quick way out
        return cell
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # a phone or a code Excel stored as a number
    if isinstance(cell, dt.datetime | dt.date | dt.time):
        return cell.isoformat()
    return str(cell)


def _as_is(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    return cell if not isinstance(cell, str) else cell.strip()


def read_string(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if isinstance(cell, bool):
        raise ValueProblem("must be text, not a true/false cell")
    return _text(cell).strip()


def read_string_column(field: FieldSpec, cells: Sequence[str], locale: Locale) -> list[Any]:
    return [text or None for text in map(str.strip, cells)]


def _ascii_texts(cells: Sequence[str]) -> tuple[list[str], str] | None:
    """The stripped texts of a column's cells that are not blank, and their join with NUL
    between them — when every cell is ASCII without a NUL of its own (None otherwise)."""
    texts = [text for text in map(str.strip, cells) if text]
    joined = "\x00".join(texts)
    if not joined.isascii() or joined.count("\x00") != len(texts) - 1:
        return None
    return texts, joined


def _with_blanks(cells: Sequence[str], values: Iterable[Any]) -> list[Any]:
    """`values` (one per cell that is not blank) with None for each blank cell."""
    found = iter(values)
    return [next(found) if not cell.isspace() and cell else None for cell in cells]


def _number_text(cell: str, locale: Locale) -> str:
    """`1 234,50` → `1234.50`; the digits of any script become ASCII."""
    # ASCII text is its own NFKC form: the normalising is for other scripts' digits and spaces
    text = (cell if cell.isascii() else unicodedata.normalize("NFKC", cell)).strip() \
        .translate(_GROUPING)
    if not text.isascii():
        text = "".join(str(unicodedata.digit(c)) if c.isdigit() and not c.isascii() else c
                       for c in text).replace("\u066b", ".").replace("\u2212", "-")
    if "," in text and "." in text:  # the last of the two is the decimal separator
        if text.rfind(",") > text.rfind("."):
            text = text.replace(".", "").replace(",", ".")
        else:
            text = text.replace(",", "")
    elif "," in text:
        # thousands only as written: 1,234 and 12,345,678, never 0,001 (a decimal comma)
        grouped = _GROUPED.fullmatch(text)
        text = text.replace(",", "") if grouped and locale.thousands_comma else text.replace(",", ".")
    return text


def read_integer_column(field: FieldSpec, cells: Sequence[str], locale: Locale) -> list[Any] | None:
    """ASCII cells of digits only (up to 19 of them, grouped or not): `int` of each, as
    `read_integer`."""
    found = _ascii_texts(cells)
    if found is None:
        return None
    joined = found[1].translate(_GROUPING)  # 1 234 is 1234, as `_number_text` reads it
    texts = joined.split("\x00")
    if not joined.replace("\x00", "").isdigit() or max(map(len, texts)) > 19 \
            or "" in texts:
        return None
    return _with_blanks(cells, map(int, texts))


def read_integer(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if isinstance(cell, bool):
        raise ValueProblem("must be a whole number, not a true/false cell")
    if isinstance(cell, int):
        return cell
    if isinstance(cell, float):
        if cell.is_integer():
            return int(cell)
        raise ValueProblem(f"must be a whole number, not {cell}")
    text = _text(cell)
    if text.isdigit() and text.isascii() and len(text) <= 19:  # plain digits: as below
        return int(text)
    text = _number_text(text, locale)
    if not _WHOLE.fullmatch(text):
        raise ValueProblem("must be a whole number, like 1 234")
    return int(text)


def read_decimal(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if isinstance(cell, bool):
        raise ValueProblem("must be a number, not a true/false cell")
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, float):
        return repr(cell)  # the shortest text of Excel's double: 0.1, not 0.1000000000000000055
    text = _number_text(_text(cell), locale)
    try:
        Decimal(text)
    except InvalidOperation:
        raise ValueProblem("must be a number, like 1 234,50 or 1234.50") from None
    if not _DECIMAL.fullmatch(text):
        raise ValueProblem("must be a number, like 1 234,50 or 1234.50")
    return text


def read_decimal_column(field: FieldSpec, cells: Sequence[str], locale: Locale) -> list[Any] | None:
    """ASCII cells (`1 234,50`, `1234.50`, `-7`): their grouping taken out of them all by
    one translate, a decimal comma made a point by one replace — when no cell has both a
    comma and a point, and the setup's people do not group thousands by commas (else the
    reader judges each cell) —, each text checked by one pattern: as `read_decimal`."""
    found = _ascii_texts(cells)
    if found is None:
        return None
    joined = found[1].translate(_GROUPING)
    if "," in joined:
        if "." in joined or locale.thousands_comma:
            return None
        joined = joined.replace(",", ".")
    texts = joined.split("\x00")
    if not texts or not all(map(_DECIMAL.fullmatch, texts)):
        return None  # Decimal takes every text the pattern matches
    return _with_blanks(cells, texts)


def read_boolean(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, int | float) and cell in (0, 1):
        return bool(cell)
    word = normal(_text(cell))
    if word in YES:
        return True
    if word in NO:
        return False
    raise ValueProblem("must be yes or no (да/нет, true/false, 1/0)")


def _day(year: str, month: str, day: str) -> dt.date:
    whole = int(year)
    if len(year) == 2:
        whole += 2000 if whole < 70 else 1900
    try:
        return dt.date(whole, int(month), int(day))
    except ValueError:
        raise ValueProblem("is not a real date") from None


def _date_text(text: str) -> dt.date:
    for pattern, order in ((_ISO_DATE, (1, 2, 3)), (_YEAR_FIRST, (1, 2, 3)),
                           (_DAY_FIRST, (3, 2, 1))):
        match = pattern.match(text)
        if match:
            year, month, day = (match.group(i) for i in order)
            return _day(year, month, day)
    raise ValueProblem("must be a date, like 31.12.2026 or 2026-12-31")


def read_date(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if isinstance(cell, dt.datetime):
        if cell.time() != dt.time(0):
            raise ValueProblem("must be a date without a time")
        return cell.date().isoformat()
    if isinstance(cell, dt.date):
        return cell.isoformat()
    return _date_cell(_text(cell).strip())


@functools.lru_cache(maxsize=4096)
def _date_cell(text: str) -> str:
    """A date cell's text as ISO (remembered: a file's dates repeat; a refused text raises
    every time, as it is not remembered)."""
    date, _, time = text.partition(" ") if "T" not in text else text.partition("T")
    if time and not re.fullmatch(r"0{1,2}:00(:00(\.0+)?)?", time.strip()):
        raise ValueProblem("must be a date without a time")
    return _date_text(date.strip()).isoformat()


def read_datetime(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if isinstance(cell, dt.datetime):
        moment = cell
    elif isinstance(cell, dt.date):
        moment = dt.datetime.combine(cell, dt.time(0))
    else:
        text = _text(cell).strip()
        if DateTimeType._shape.match(text):
            return text  # ISO 8601 with an offset: as an API client sends it
        date, _, time = text.replace("T", " ", 1).partition(" ")
        day = _date_text(date.strip())
        match = _TIME.match(time.strip() or "0:00")
        if not match:
            raise ValueProblem("must be a date and time, like 31.12.2026 18:30 or "
                               "2026-12-31T18:30:00+03:00")
        hour, minute, second, fraction = match.groups()
        try:
            moment = dt.datetime.combine(day, dt.time(
                int(hour), int(minute), int(second or 0), int((fraction or "0").ljust(6, "0"))))
        except ValueError:
            raise ValueProblem("is not a real time of day") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=locale.timezone)  # as the setup's people mean it
    try:  # in UTC: a zone's offset long ago has seconds (Moscow's +02:30:17), ISO 8601 none
        return utc_text(moment)
    except OverflowError:
        raise ValueProblem("is before 0001-01-01 00:00 UTC, the first moment stored") from None


def option_finder(field: FieldSpec) -> Mapping[str, str]:
    """Each option by its value and by each of its labels, compared as `normal` text."""
    found: dict[str, str] = {}
    for option in field.options or ():
        for label in field.option_labels.get(option, {}).values():
            found.setdefault(normal(label), option)
    for option in field.options or ():
        found[normal(option)] = option  # a value wins over another option's label
    return found


def _option(field: FieldSpec, text: str, locale: Locale) -> str:
    options = locale.options.get(id(field))
    if options is None:
        options = locale.options[id(field)] = option_finder(field)
    found = options.get(normal(text))
    if found is None:
        raise ValueProblem("must be one of: " + ", ".join(field.options or ())
                           + " (by value or label)")
    return found


def read_choice(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    return _option(field, _text(cell), locale)


def read_multichoice(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    return [_option(field, part, locale) for part in re.split(r"[;,]", _text(cell))
            if part.strip()]


def read_json(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    if not isinstance(cell, str):
        return cell
    try:
        return json.loads(cell)
    except ValueError:
        raise ValueProblem("must be JSON, like {\"a\": 1} or [1, 2]") from None


def read_user_ids(field: FieldSpec, cell: Any, locale: Locale) -> Any:
    return [read_integer(field, part, locale) for part in re.split(r"[;,]", _text(cell))
            if part.strip()]


def default_readers() -> CellReaders:
    readers = CellReaders()
    for field_type, reader in ((BooleanType, read_boolean),
                               (DateType, read_date), (DateTimeType, read_datetime),
                               (ChoiceType, read_choice), (MultichoiceType, read_multichoice),
                               (JsonType, read_json), (UsersType, read_user_ids),
                               (UserType, read_integer)):
        readers.register(field_type, reader)
    readers.register(StringType, read_string, read_string_column)
    readers.register(IntegerType, read_integer, read_integer_column)
    readers.register(DecimalType, read_decimal, read_decimal_column)
    return readers


def split_many(cell: Any) -> Iterable[str]:
    """The parts of a cell naming several records (a many-to-many link): `;`-separated."""
    return [part.strip() for part in _text(cell).split(";") if part.strip()]
