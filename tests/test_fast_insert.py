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
