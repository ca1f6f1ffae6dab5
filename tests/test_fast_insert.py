"""The driver-level INSERT of bulk writes (engine/storage/fast_insert.py): a history
entry's JSON text is `json.dumps`' own, byte for byte (made from its dict, or column by
column), each column's bind processing runs once per distinct object and gives each row
its own value, and SQLite's many-row INSERTs write every row as one-row INSERTs do."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Kartoteka
from engine.records.plain_creates import _journalled
from engine.storage import fast_insert
from engine.storage.fast_insert import processed, processors
from engine.types.columns import ExactDecimal


def _json_step() -> Any:
    table = sa.Table("t", sa.MetaData(), sa.Column("changes", sa.JSON(none_as_null=True)))
    dialect = sa.create_engine("sqlite://").dialect
    (step,) = processors(dialect, table, ["changes"])
    assert step is not None and not isinstance(step, fast_insert.WholeColumn)
    return step


@pytest.mark.parametrize("value", [
    {"name": "Товар 1 商品 کالا", "price": "1234.50", "qty": 5, "active": True},
    {"note": "多行\nтекст\t\"кавычки\" \\ \u2028 \ud800", "list": ["vip", "new"], "none": None},
    {"ratio": 0.1, "big": 10**30, "nan": float("nan"), "inf": float("-inf"), "nested": {"a": []}},
    {}, {"1": {"2": {"3": [1, [2, [3]]]}}},
])
def test_history_json_is_json_dumps_text(value: dict[str, Any]) -> None:
    assert _json_step()(value) == json.dumps(value)


def test_what_json_cannot_hold_is_refused_as_before() -> None:
    step = _json_step()
    with pytest.raises(TypeError):
        step({"price": Decimal("1.50")})
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="Circular"):
        step(cycle)
    assert step(None) is None and step([1, "a"]) == '[1, "a"]'


def test_each_distinct_object_is_processed_once() -> None:
    calls: list[Any] = []

    def step(value: Any) -> Any:
        calls.append(value)
        return f"<{value}>"
    now = dt.datetime(2026, 12, 31, tzinfo=dt.UTC)
    day = dt.date(2026, 1, 2)
    rows = processed([None, step, step], [[1, 2, 3], [now, now, now], [day, day, "x"]])
    assert rows == [(1, f"<{now}>", f"<{day}>"), (2, f"<{now}>", f"<{day}>"),
                    (3, f"<{now}>", "<x>")]
    assert calls.count(now) == 1 and calls.count(day) == 1
    assert processed([step], [[]]) == []
    assert fast_insert._ENCODER is not None  # CPython's json has its C encoder


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 9])
def test_insert_columns_writes_every_row_in_order(
        db_url: str, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite the rows go in by INSERTs of several rows each (3 here: one statement for
    whole threes, one for the rest), on PostgreSQL by COPY: every row, in order, with its
    own values; AUTOINCREMENT's counter as after one-row INSERTs; a taken unique value is
    an IntegrityError wherever the row is."""
    monkeypatch.setattr(fast_insert, "SQLITE_ROWS_PER_STATEMENT", 3)
    engine = sa.create_engine(db_url)
    table = sa.Table(f"many_{count}", sa.MetaData(),
                     sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                               primary_key=True),
                     sa.Column("name", sa.String(20), unique=True),
                     sa.Column("price", sa.Numeric(10, 2)), sqlite_autoincrement=True)
    try:
        table.metadata.create_all(engine)
        rows = [(i + 1, f"n{i}", Decimal(i) / 4) for i in range(count)]
        with engine.begin() as conn:
            fast_insert.insert_rows(conn, table, ["id", "name", "price"], rows)
            fast_insert.insert_rows(conn, table, ["id", "name", "price"], [])
        with engine.connect() as conn:
            assert [tuple(row) for row in conn.execute(sa.select(table).order_by(table.c.id))] \
                == [(i, name, Decimal(price).quantize(Decimal("0.01")))
                    for i, name, price in rows]
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?",
                                            (table.name,)).scalar() == count
        taken = [(count + 1 + i, f"m{i}", None) for i in range(count)] + \
            [(2 * count + 1, "n0", None)]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            fast_insert.insert_rows(conn, table, ["id", "name", "price"], taken)
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == count
    finally:
        table.metadata.drop_all(engine)
        engine.dispose()


def test_sqlite_statements_stay_within_its_parameter_limit(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row as wide as the limit goes in one per statement; several rows fill a statement
    up to the limit, never beyond it."""
    monkeypatch.setattr(fast_insert, "_sqlite_parameters", lambda conn: 7)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'limit.db'}")
    seen: list[int] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: seen.append(args[2].count("?")))
    for width in (3, 7):
        table = sa.Table(f"w{width}", sa.MetaData(),
                         *(sa.Column(f"c{i}", sa.Integer()) for i in range(width)))
        table.metadata.create_all(engine)
        seen.clear()
        with engine.begin() as conn:
            fast_insert.insert_rows(conn, table, [c.name for c in table.c],
                                    [tuple(range(r, r + width)) for r in range(5)])
        with engine.connect() as conn:
            assert [tuple(row) for row in conn.execute(sa.select(table))] == \
                [tuple(range(r, r + width)) for r in range(5)]
        assert seen and max(seen) <= 7
    engine.dispose()


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(), st.text(max_size=8), st.sampled_from(["", "Ф", "商品", "\u2028", "\ud800", "a\"b"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.none(),
                                                         max_size=2))


def _column_of(kind: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.none() | kind, min_size=4, max_size=4)


@settings(max_examples=120, deadline=None)
@given(columns=st.lists(st.one_of(
    _column_of(json_values), _column_of(st.text(max_size=4)), _column_of(st.integers()),
    _column_of(st.booleans()), _column_of(st.sampled_from(["x", "y"])),
    st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=4, max_size=4)),
    min_size=1, max_size=4))
def test_history_json_made_column_by_column_is_json_dumps_text(columns: list[list[Any]]) -> None:
    """json_objects gives each row's JSON text exactly as json.dumps writes the row's
    dict of its non-empty values (None for a row with none), or says it cannot."""
    names = [f"f{i}" for i in range(len(columns))]
    texts = fast_insert.json_objects(names, columns)
    assert texts is not None
    expected = [json.dumps(d) if d else None for d in _journalled(names, columns)]
    assert texts == expected
    assert all(text is None or type(text) is str for text in texts)


def test_json_objects_keeps_a_key_with_a_percent_sign_as_it_is() -> None:
    """A key is part of the row's %-template when its column has a value in every row."""
    assert fast_insert.json_objects(["100%s", "%d"], [[1, 2], ["x", None]]) == \
        [json.dumps({"100%s": 1, "%d": "x"}), json.dumps({"100%s": 2})]
    assert fast_insert.json_objects(["%", "b"], [[None, "Ф"], [True, False]]) == \
        [json.dumps({"b": True}), json.dumps({"%": "Ф", "b": False})]


def test_json_objects_says_when_json_cannot_hold_a_value() -> None:
    assert fast_insert.json_objects(["price"], [[Decimal("1.50")]]) is None


def test_history_given_as_texts_and_as_mappings_is_stored_alike(kt: Kartoteka) -> None:
    """Inside `deferred`, changes given as JSON texts made already (a bulk create's) and
    as mappings (an update's) go in by one insert: each text as it is, each mapping as
    its column makes it, a null as SQL NULL."""
    journal, now = kt.records.journal, dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)
    with kt.db.write(system="test: history") as conn, journal.deferred(conn):
        assert journal.takes_texts(conn, "client", "create")
        texts = fast_insert.json_objects(["name", "tags"], [["Ромашка", None], [None, ["vip"]]])
        assert texts == ['{"name": "\\u0420\\u043e\\u043c\\u0430\\u0448\\u043a\\u0430"}',
                         '{"tags": ["vip"]}']
        journal.changes_each_text("client", "create", [1, 2], texts, [now, now], by=None)
        journal.changes_each(conn, "client", "update",
                             [(1, {"name": ["Ромашка", "Лютик"]}, now), (2, None, now)], by=7)
        journal.changes_each_text("client", "create", [3], [None], [now], by=None)
    with kt.db.read(system="test: history") as conn:
        rows = conn.execute(sa.select(kt.storage.changes.c.record_id, kt.storage.changes.c.by,
                                      kt.storage.changes.c.action, kt.storage.changes.c.changes)
                            .order_by(kt.storage.changes.c.id)).all()
        nulls = conn.execute(sa.select(sa.func.count()).select_from(kt.storage.changes)
                             .where(kt.storage.changes.c.changes.is_(None))).scalar()
    assert [tuple(row) for row in rows] == [
        (1, None, "create", {"name": "Ромашка"}), (2, None, "create", {"tags": ["vip"]}),
        (1, 7, "update", {"name": ["Ромашка", "Лютик"]}), (2, 7, "update", None),
        (3, None, "create", None)]
    assert nulls == 2  # SQL NULL, not JSON null


@pytest.mark.parametrize("count", [1, 2, 5, 7])
def test_columns_of_one_object_are_bound_once_per_statement(
        db_url: str, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite a column holding one object in every row (a batch's moment, a null) is one
    numbered parameter each row names: every row still gets its value, the statements stay
    within the parameter limit, and rows that are all alike are each written."""
    monkeypatch.setattr(fast_insert, "SQLITE_ROWS_PER_STATEMENT", 3)
    monkeypatch.setattr(fast_insert, "_sqlite_parameters", lambda conn: 8)
    engine = sa.create_engine(db_url)
    numbers: list[int] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: numbers.extend(
        int(n) for n in re.findall(r"\?(\d+)", args[2])))
    table = sa.Table(f"alike_{count}", sa.MetaData(), sa.Column("n", sa.Integer()),
                     sa.Column("at", sa.DateTime()), sa.Column("by", sa.Integer()),
                     sa.Column("what", sa.String(20)))
    now = dt.datetime(2026, 12, 31, 23, 59)
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            fast_insert.insert_columns(conn, table, ["n", "at", "by", "what"], [
                list(range(count)), [now] * count, [None] * count, ["Ёж 商品"] * count])
            fast_insert.insert_columns(conn, table, ["n", "at", "by", "what"], [
                [-1] * count, [now] * count, [None] * count, ["x"] * count])
        with engine.connect() as conn:
            found = sorted(tuple(row) for row in conn.execute(sa.select(table)))
        assert found == sorted([(n, now, None, "Ёж 商品") for n in range(count)]
                               + [(-1, now, None, "x")] * count)
        if engine.dialect.name == "sqlite":
            assert numbers and max(numbers) <= 8
    finally:
        table.metadata.drop_all(engine)
        engine.dispose()


@pytest.mark.parametrize("dialect_url", ["sqlite://", "postgresql+psycopg://"])
@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.none() | st.decimals(allow_nan=False, allow_infinity=False,
                                                places=None, min_value=-10**15,
                                                max_value=10**15)
                       | st.sampled_from([Decimal("1.505"), Decimal("-0.00"), Decimal("12E+3"),
                                          1, "2.50"]), max_size=6))
def test_an_amount_column_is_bound_as_each_amount_is(dialect_url: str,
                                                     values: list[Any]) -> None:
    """ExactDecimal's bind_column gives each value what its bind processing gives it."""
    dialect = sa.create_engine(dialect_url).dialect
    money = ExactDecimal(18, 2).dialect_impl(dialect)
    one = money.bind_processor(dialect)
    whole = money.bind_column(dialect)
    assert one is not None and whole is not None
    expected = [one(value) for value in values]
    assert [(type(v), repr(v)) for v in whole(values)] == [(type(v), repr(v)) for v in expected]
    (step,) = processors(dialect, sa.Table("t", sa.MetaData(), sa.Column("m", money)), ["m"])
    assert isinstance(step, fast_insert.WholeColumn)
