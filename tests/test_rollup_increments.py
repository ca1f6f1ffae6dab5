"""Roll-ups kept by increments (engine/storage/rollup_deltas.py) on both databases: a
child's create, patch and move change its parents' counts, sums, minimums and maximums by
one statement, and where an increment cannot know the answer — an extreme removed, a
condition's field changed, a sum leaving its range — the parent is added up again. After
every step the stored values equal a recomputation from the raw rows; concurrent writers
on PostgreSQL lose no increment. The parent here has no rule nor formula reading its
roll-ups (the increment's quiet form, without RETURNING); tests/test_rollups.py covers
parents that are read.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Kartoteka
from engine.errors import ValidationFailed
from tests.races import together

FILES = {
    "order.yaml": """
        entity: order
        fields:
          number: {type: string}
          total: {type: money, rollup: {sum: lines.amount}}
          shipped: {type: money, rollup: {sum: lines.amount, where: {status: shipped}}}
          lines_count: {type: integer, rollup: {count: lines}}
          priced: {type: integer, rollup: {count: lines.amount}}
          biggest: {type: integer, rollup: {max: lines.quantity}}
          smallest: {type: integer, rollup: {min: lines.quantity}}
          first_due: {type: date, rollup: {min: lines.due}}
    """,
    "line.yaml": """
        entity: line
        fields:
          name: {type: string}
          quantity: {type: integer}
          amount: {type: money}
          due: {type: date}
          status: {type: choice, options: [open, shipped]}
        links:
          order: {to: order, reverse: lines}
    """,
}


@pytest.fixture
def setup_dir(write_setup: Callable[..., Path]) -> Path:
    return write_setup(FILES)


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], setup_dir: Path) -> Kartoteka:
    return make_kt(setup_dir)


def _expected(lines: list[dict[str, Any]]) -> dict[str, Any]:
    amounts = [ln["amount"] for ln in lines if ln["amount"] is not None]
    quantities = [ln["quantity"] for ln in lines if ln["quantity"] is not None]
    dues = [ln["due"] for ln in lines if ln["due"] is not None]
    return {
        "total": sum(amounts, Decimal(0)),
        "shipped": sum((ln["amount"] or 0 for ln in lines if ln["status"] == "shipped"),
                       Decimal(0)),
        "lines_count": len(lines), "priced": len(amounts),
        "biggest": max(quantities, default=None), "smallest": min(quantities, default=None),
        "first_due": min(dues, default=None)}


def _check(kt: Kartoteka) -> None:
    """Every order's stored roll-ups equal what its lines add up to, from the raw rows."""
    order, line = kt.storage["order"].table, kt.storage["line"].table
    with kt.db.read(system="test: compare with a recomputation") as conn:
        orders = [dict(r._mapping) for r in conn.execute(sa.select(order))]
        lines = [dict(r._mapping) for r in conn.execute(sa.select(line))]
    for stored in orders:
        mine = [ln for ln in lines if ln["order_id"] == stored["id"]]
        assert {k: stored[k] for k in _expected(mine)} == _expected(mine), stored["id"]


def test_creates_patches_and_moves_keep_every_function_true(kt: Kartoteka) -> None:
    records = kt.records
    a = records.create("order", {"number": "А-1"})["id"]
    b = records.create("order", {"number": "乙-2"})["id"]
    first = records.create("line", {"name": "болт", "quantity": 5, "amount": "10.50",
                                    "due": "2026-03-01", "status": "shipped", "order": a})
    _check(kt)
    second = records.create("line", {"name": "螺丝", "quantity": 2, "amount": "0.01",
                                     "status": "open", "order": a})
    records.create("line", {"name": "без заказа", "quantity": 9, "amount": "1"})  # no parent
    _check(kt)
    records.update("line", second["id"], {"quantity": 7, "amount": "3.25"})  # a new maximum
    _check(kt)
    records.update("line", second["id"], {"quantity": 1})  # the maximum removed: added up
    _check(kt)
    records.update("line", first["id"], {"quantity": None, "amount": None, "due": None})
    _check(kt)
    records.update("line", second["id"], {"status": "shipped"})  # the condition's field
    _check(kt)
    records.update("line", second["id"], {"amount": "-2.00"})  # in `shipped` now
    _check(kt)
    records.update("line", first["id"], {"order": b, "quantity": 4, "amount": "99.99"})  # moved
    _check(kt)
    records.update("line", second["id"], {"order": None})  # out of every order
    _check(kt)
    records.update("line", second["id"], {"order": b, "due": "2025-12-31"})  # back, elsewhere
    _check(kt)
    records.update("line", second["id"], {"name": "ничего для сумм"})  # nothing summed changed
    _check(kt)
    assert records.get("order", b)["lines_count"] == 2


def test_a_sum_leaving_its_range_is_refused_and_nothing_is_written(kt: Kartoteka) -> None:
    records = kt.records
    order = records.create("order", {"number": "N-1"})["id"]
    big = "9" * 16 + ".99"  # money: 18 digits, 2 after the point
    records.create("line", {"quantity": 1, "amount": big, "order": order})
    with pytest.raises(ValidationFailed) as refused:
        records.create("line", {"quantity": 1, "amount": "0.01", "order": order})
    assert refused.value.code == "rollup_out_of_range"
    stored = records.get("order", order)
    assert (stored["total"], stored["lines_count"]) == (big, 1)
    with kt.db.read(system="test: the refused line was not written") as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            kt.storage["line"].table)).scalar_one() == 1
    records.create("line", {"quantity": 1, "amount": "-" + big, "order": order})
    _check(kt)


@pytest.mark.postgres
def test_concurrent_increments_and_recomputations_lose_nothing(
        kt: Kartoteka, make_kt: Callable[..., Kartoteka], setup_dir: Path, db_url: str) -> None:
    """Creates (increments) and patches removing a maximum (recomputations) of lines of one
    order, at once through three engines: the stored values hold every one of them."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    engines = [kt, make_kt(setup_dir), make_kt(setup_dir)]
    order = kt.records.create("order", {"number": "Ω"})["id"]
    tall = [kt.records.create("line", {"quantity": 100 + i, "amount": "1.00",
                                       "order": order})["id"] for i in range(6)]

    def add(engine: Kartoteka, i: int) -> None:
        engine.records.create("line", {"quantity": i, "amount": f"0.{i:02d}",
                                       "status": "shipped", "order": order})

    def shrink(engine: Kartoteka, line: int) -> None:
        engine.records.update("line", line, {"quantity": 1, "amount": "2.00"})

    together([partial(add, engines[i % 3], i) for i in range(18)]
             + [partial(shrink, engines[i % 3], line) for i, line in enumerate(tall)])
    _check(kt)
    stored = kt.records.get("order", order)
    assert (stored["lines_count"], stored["biggest"]) == (24, 17)
