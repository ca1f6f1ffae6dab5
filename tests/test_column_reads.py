"""A batch's column at once is read, parsed and rendered exactly as its cells one by one:
for random cells, a column reader (engine/exchange/cells.py) gives each cell's value as the
cell's reader gives it, or says it is not sure (None) — never a value for a cell the
reader refuses —, and a type's `parse_many` (engine/types/fields.py) gives `parse` of each
value, or refuses when `parse` refuses any of them; `render_many` gives `render` of each."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.exchange.cells import Locale, blank, default_readers
from engine.exchange.columns import ESCAPED
from engine.setup.loader import load_setup
from engine.setup.spec import FieldSpec
from engine.types.fields import DecimalType, ValueProblem

SETUP = {
    "setup.yaml": "name: Column reads\nlanguages: [ru, en]\n",
    "thing.yaml": """
        fields:
          text:    {type: string, max_length: 50}
          note:    text
          mail:    email
          phone:   phone
          site:    url
          count:   integer
          bounded: {type: integer, min: -5, max: 1000}
          price:   {type: money, min: 0}
          amount:  money
          ratio:   {type: decimal, digits: 6, places: 3, min: -10, max: 100}
          whole:   {type: decimal, digits: 4, places: 0}
          day:     {type: date, min: 2000-01-01, max: 2030-12-31}
          plain:   date
    """,
}
LOCALES = [Locale(False, dt.UTC), Locale(True, dt.UTC)]
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FieldSpec]:
    folder: Path = tmp_path_factory.mktemp("column-reads")
    for name, text in SETUP.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return dict(load_setup(folder).entities["thing"].fields)


NUMBERISH = "0123456789 ,.-+'_\u00a0\u202f\u066c۱٫x\x00\t"
cells = st.one_of(
    st.text(alphabet=NUMBERISH, max_size=12),
    st.sampled_from(["", " ", "\u00a0", "1 234,50", "1,234.50", "1,234", "0,001", "12", "007",
                     "-3", "+4", "1.", ".5", "'", "_", "9" * 19, "9" * 20, "1 000 000",
                     "٣٤", "2026-01-01", "a@b.co", "Москва", "\ud800", "x\x00y", "1e3"]),
    st.text(max_size=8))
#: the cells of files: mostly numbers as people write them, sometimes anything
columns = st.one_of(
    st.lists(cells, min_size=1, max_size=8),
    st.lists(st.text(alphabet="0123456789 '_", max_size=6), min_size=1, max_size=6),
    st.lists(st.text(alphabet="0123456789 ,", max_size=8), min_size=1, max_size=6),
).filter(
    lambda cells: not any(cell.startswith(ESCAPED) for cell in cells))


def _typed(values: list[Any]) -> list[tuple[type, Any]]:
    """Values compared with their types (1 is not "1", Decimal 1.0 is not 1.00)."""
    return [(type(v), v.as_tuple() if isinstance(v, Decimal) else v) for v in values]


def _one_by_one(read: Callable[..., Any], field: FieldSpec, cells: list[str],
                locale: Locale) -> list[Any] | None:
    """Each cell's value as the import reads it alone (None: the reader refuses one)."""
    try:
        return [None if blank(cell) else read(field, cell, locale) for cell in cells]
    except ValueProblem:
        return None


@pytest.mark.parametrize("name", ["text", "note", "mail", "count", "bounded", "price",
                                  "ratio", "whole"])
@SETTINGS
@given(cells=columns, thousands_comma=st.booleans())
def test_a_column_reader_reads_each_cell_as_its_reader_or_is_not_sure(
        fields: dict[str, FieldSpec], name: str, cells: list[str],
        thousands_comma: bool) -> None:
    field, readers = fields[name], default_readers()
    column = readers.column_reader(field.type)
    assert column is not None
    locale = LOCALES[thousands_comma]
    got = column(field, cells, locale)
    if got is None:
        return
    expected = _one_by_one(readers.reader(field.type), field, cells, locale)
    assert expected is not None, "a column reader read a cell its reader refuses"
    assert _typed(got) == _typed(expected)


def test_column_readers_are_sure_of_what_files_hold(fields: dict[str, FieldSpec]) -> None:
    """Not a test of the speed: the common cells are read by the column (no None)."""
    readers, ru = default_readers(), LOCALES[False]
    price = readers.column_reader(fields["price"].type)
    count = readers.column_reader(fields["count"].type)
    assert price is not None and count is not None
    assert price(fields["price"], ["1 234,50", " 7 ", "", "0,5"], ru) == \
        ["1234.50", "7", None, "0.5"]
    assert count(fields["count"], ["1 234", "12", "\u00a0", "0"], ru) == [1234, 12, None, 0]
    assert price(fields["price"], ["1,234.50"], ru) is None  # both: the reader decides
    assert price(fields["price"], ["1,5"], LOCALES[True]) is None  # 1,5 is not grouped


values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(), st.decimals(places=4, min_value=-10**6, max_value=10**6),
    st.text(alphabet="0123456789.-+ \n", max_size=10),
    st.sampled_from(["0", "1.5", "1.50", "1.505", "-0.0", "100.000", "00012.10", "99999",
                     "1234567890123456.99", "12345678901234567", " 5 ", "5\n", "1e3", "NaN",
                     "2026-01-01", "1999-12-31", "2031-01-01", "2026-02-30", "2026-1-1",
                     "2026-01-01\n", "a@b.co", "a@b", "+7 999 000-00-00", "12", "\x00",
                     "x\ud800", "https://example.com", "Москва"]),
    st.text(max_size=6), st.lists(st.integers(), max_size=2))


@pytest.mark.parametrize("name", ["text", "note", "mail", "phone", "site", "count", "bounded",
                                  "price", "amount", "ratio", "whole", "day", "plain"])
@SETTINGS
@given(column=st.one_of(
    st.lists(values, min_size=1, max_size=6),
    # an import's columns: one type each, or None
    st.lists(st.none() | st.text(alphabet="0123456789.-", max_size=8), min_size=1, max_size=6),
    st.lists(st.none() | st.from_regex(r"-?[0-9]{1,5}(\.[0-9]{1,4})?", fullmatch=True),
             min_size=1, max_size=6),
    st.lists(st.none() | st.dates(dt.date(1990, 1, 1), dt.date(2040, 1, 1)).map(
        dt.date.isoformat), min_size=1, max_size=6),
    st.lists(st.none() | st.integers(min_value=-(2**64), max_value=2**64), min_size=1,
             max_size=6)))
@example(column=["-10.5", "0"]).via("just below a bound: `ratio` (-10..100)")
@example(column=["100.001", None]).via("just above a bound: `ratio`")
@example(column=["-6", "1001"]).via("past the bounds of `bounded` (-5..1000)")
@example(column=["1999-12-31", "2031-01-01"]).via("past the bounds of `day`")
def test_parse_many_is_parse_of_each_value(fields: dict[str, FieldSpec], name: str,
                                           column: list[Any]) -> None:
    field = fields[name]
    try:
        expected = [None if v is None else field.type.parse(field, v) for v in column]
    except Exception as error:  # what parse raises, parse_many raises
        with pytest.raises(type(error)):
            field.type.parse_many(field, column)
        return
    assert _typed(field.type.parse_many(field, column)) == _typed(expected)


def test_a_type_with_a_parse_of_its_own_is_parsed_by_it(fields: dict[str, FieldSpec]) -> None:
    """A plugin's subclass that parses differently is not parsed by its base's passes."""
    class Even(DecimalType):
        name = "even"

        def parse(self, field: FieldSpec, value: Any) -> Any:
            number = super().parse(field, value)
            if number % 2:
                raise ValueProblem("must be even")
            return number

    field = fields["whole"]
    assert Even().parse_many(field, ["2", None]) == [Decimal(2), None]
    with pytest.raises(ValueProblem, match="even"):
        Even().parse_many(field, ["2", "3"])


stored = st.one_of(
    st.none(), st.decimals(allow_nan=False, allow_infinity=False, places=3,
                           min_value=-10**6, max_value=10**6),
    st.decimals(allow_nan=False, allow_infinity=False), st.dates(),
    st.datetimes(), st.integers(), st.text(max_size=4), st.booleans())


@pytest.mark.parametrize("name", ["text", "count", "price", "ratio", "whole", "day", "plain"])
@SETTINGS
@given(column=st.one_of(st.lists(stored, max_size=6),
                        st.lists(st.none() | st.dates(), max_size=6),
                        st.lists(st.none() | st.decimals(allow_nan=False, allow_infinity=False,
                                                         places=2), max_size=6)))
def test_render_many_is_render_of_each_value(fields: dict[str, FieldSpec], name: str,
                                             column: list[Any]) -> None:
    field = fields[name]
    try:
        expected = [None if v is None else field.type.render(field, v) for v in column]
    except Exception as error:
        with pytest.raises(type(error)):
            field.type.render_many(field, column)
        return
    assert _typed(field.type.render_many(field, column)) == _typed(expected)
