"""The driver-level INSERT of bulk writes (engine/storage/fast_insert.py): a history
entry's JSON text is `json.dumps`' own, byte for byte, and each column's bind processing
runs once per distinct object and gives each row its own value."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from engine.storage import fast_insert
from engine.storage.fast_insert import processed, processors


def _json_step() -> Any:
    table = sa.Table("t", sa.MetaData(), sa.Column("changes", sa.JSON(none_as_null=True)))
    dialect = sa.create_engine("sqlite://").dialect
    (step,) = processors(dialect, table, ["changes"])
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
