"""How an exported value becomes a CSV text and an XLSX cell: one pair of converters per
column, chosen once from the field's type and the export's options (engine/records/export.py
says what each form is and why).

The values come as the list renders them (`Records.render`: money `"1234.50"`, dates
`"2026-12-31"`, datetimes `"…Z"`), so an export writes what the API answers; a converter
only changes the form (a decimal comma, a label, a typed cell), never the value, and never
through a float.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.records.export_locale import LocaleFormat
from engine.setup.spec import FieldSpec, label_text
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
)

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Excel keeps 15 significant digits of a number, and at most this many characters of a text
EXCEL_DIGITS = 15
EXCEL_TEXT = 32_767
#: characters an XLSX (XML 1.0) cannot hold (openpyxl refuses them)
XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
LIST_SEPARATOR = ";"

#: a column's converters: value → CSV text, value → XLSX cell
Pair = tuple[Callable[[Any], str], Callable[[Any], Any]]


@dataclass(frozen=True)
class Column:
    """One column: the record's key, its header, and how a value becomes a CSV text or an
    XLSX cell (each built once, for the column's type and the export's options)."""

    key: str
    header: str
    text: Callable[[Any], str]
    cell: Callable[[Any], Any]
    #: the XLSX number format of a decimal column ("0.00")
    number_format: str | None = None


#: a field type's column kind, by the first of its classes listed (a plugin's subclass of a
#: built-in type exports as that type; any other type as its JSON form)
KINDS: dict[type[FieldType], str] = {
    DecimalType: "decimal", IntegerType: "integer", BooleanType: "boolean",
    DateTimeType: "datetime", DateType: "date", ChoiceType: "choice",
    MultichoiceType: "choices", UsersType: "ids", UserType: "integer", JsonType: "jsonvalue",
    StringType: "text",
}


def kind_of(field_type: FieldType) -> str:
    """The column kind of a field type (`json` for a type no built-in one is a base of)."""
    for cls in type(field_type).__mro__:
        if cls in KINDS:
            return KINDS[cls]
    return "json"


def _option_labels(declared: FieldSpec, language: str | None) -> dict[str, str]:
    return {value: label_text(label, language) or value
            for value, label in declared.option_labels.items()}


class Cells:
    """Builds each column's converters: `locale` writes values as that language does
    (None: ISO), `escape` guards CSV text against spreadsheet formulas, `zone` is the
    time zone of locale date-times."""

    def __init__(self, language: str | None, locale: LocaleFormat | None, escape: bool,
                 zone: dt.tzinfo):
        self.language = language
        self.locale = locale
        self.escape = escape
        self.zone = zone

    def column(self, key: str, header: str, kind: str, declared: FieldSpec | None,
               labels: Mapping[str, str] | None = None) -> Column:
        if labels is None and declared is not None and self.locale is not None:
            labels = _option_labels(declared, self.language)
        labels = labels if self.locale is not None else None
        places = int(declared.params.get("places", 0)) if declared is not None and \
            kind == "decimal" else 0
        text, cell = getattr(self, "_" + kind)(labels or {}, places)
        number_format = ("0." + "0" * places if places else "0") if kind == "decimal" else None
        return Column(key, self._guard(header), _or_empty(text), _or_none(cell), number_format)

    def _guard(self, text: str) -> str:
        return "'" + text if self.escape and text.startswith(FORMULA_STARTS) else text

    # each returns (value → CSV text, value → XLSX cell) for a value that is not None
    def _text(self, labels: Mapping[str, str], places: int) -> Pair:
        return (self._guard if self.escape else str), excel_text

    def _integer(self, labels: Mapping[str, str], places: int) -> Pair:
        return str, lambda value: value if abs(value) < 10**EXCEL_DIGITS else str(value)

    def _decimal(self, labels: Mapping[str, str], places: int) -> Pair:
        locale = self.locale
        text: Callable[[Any], str] = str if locale is None else locale.format_decimal
        return text, _excel_decimal

    def _date(self, labels: Mapping[str, str], places: int) -> Pair:
        locale = self.locale
        text: Callable[[Any], str] = str if locale is None else \
            (lambda value: locale.format_date(dt.date.fromisoformat(value)))
        return text, _excel_date

    def _datetime(self, labels: Mapping[str, str], places: int) -> Pair:
        locale, zone = self.locale, self.zone
        if locale is None:
            return str, lambda value: _excel_moment(value, dt.UTC)
        return (lambda value: locale.format_datetime(_moment(value, zone)),
                lambda value: _excel_moment(value, zone))

    def _boolean(self, labels: Mapping[str, str], places: int) -> Pair:
        yes, no = ("true", "false") if self.locale is None else (self.locale.yes, self.locale.no)
        return (lambda value: yes if value else no), bool

    def _choice(self, labels: Mapping[str, str], places: int) -> Pair:
        def text(value: Any) -> str:
            return self._guard(labels.get(value, value))
        return text, lambda value: excel_text(labels.get(value, value))

    def _choices(self, labels: Mapping[str, str], places: int) -> Pair:
        def text(values: Any) -> str:
            return self._guard(LIST_SEPARATOR.join(labels.get(v, v) for v in values))
        return text, lambda values: excel_text(LIST_SEPARATOR.join(labels.get(v, v)
                                                                    for v in values))

    def _ids(self, labels: Mapping[str, str], places: int) -> Pair:
        # a link that carries data renders each pair as an object with its id
        def text(values: Any) -> str:
            return LIST_SEPARATOR.join(str(v["id"] if isinstance(v, dict) else v) for v in values)
        return text, text

    def _ref(self, labels: Mapping[str, str], places: int) -> Pair:
        def text(value: Any) -> str:
            return f"{value['entity']}:{value['id']}"
        return text, text

    def _json(self, labels: Mapping[str, str], places: int) -> Pair:
        def text(value: Any) -> str:
            shown = value if isinstance(value, str) else json.dumps(
                value, ensure_ascii=False, separators=(",", ":"))
            return self._guard(shown)
        return text, lambda value: excel_text(value if isinstance(value, str) else json.dumps(
            value, ensure_ascii=False, separators=(",", ":")))


    def _jsonvalue(self, labels: Mapping[str, str], places: int) -> Pair:
        """A `json` field's value always in its JSON form, a string too (`"=1+1"` in quotes):
        what an import reads back as the same value (text alone is not JSON)."""
        def dumped(value: Any) -> str:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return (lambda value: self._guard(dumped(value))), (lambda value: excel_text(dumped(value)))


def _or_empty(convert: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: "" if value is None else convert(value)


def _or_none(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _moment(value: str, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(zone)


def excel_text(value: str) -> Any:
    if XML_ILLEGAL.search(value):
        value = XML_ILLEGAL.sub("\ufffd", value)
    return ExcelText(value[:EXCEL_TEXT])


def _excel_decimal(value: str) -> Any:
    number = Decimal(value)
    if len(number.as_tuple().digits) > EXCEL_DIGITS:
        return ExcelText(value)  # a float would round it
    return number


def _excel_date(value: str) -> Any:
    day = dt.date.fromisoformat(value)
    return day if day.year >= 1900 else ExcelText(value)


def _excel_moment(value: str, zone: dt.tzinfo) -> Any:
    moment = _moment(value, zone)
    if moment.year < 1900:
        return ExcelText(value)
    return moment.replace(tzinfo=None)  # Excel has no time zones: UTC or the setup's


class ExcelText(str):
    """A value the XLSX writer stores as a text cell (never a formula)."""


