"""Exact SQL sums on both databases, shared by the board's sums and roll-ups.

On SQLite an exact decimal is an integer scaled by 10**places (`ExactDecimal`), and
SQLite's SUM of integers raises "integer overflow" past 2**63: such a column — and a plain
integer column — is summed as its high and low halves, each far from overflowing, and the
halves are joined exactly in Python (SQLite's integer `/` and `%` truncate toward zero, so
high * HALF + low is the value). PostgreSQL sums NUMERIC and BIGINT exactly (a BIGINT SUM
is a NUMERIC), so there a sum is one SUM.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.types.columns import ExactDecimal

HALF = 2 ** 32


def splits(dialect: str, column: Any) -> bool:
    """Is this column summed as two halves on this database?"""
    return dialect == "sqlite" and isinstance(column.type, ExactDecimal | sa.Integer)


def sum_of(dialect: str, column: Any) -> list[Any]:
    """The SUM expressions of a column: one, or two for a split column."""
    if splits(dialect, column):
        raw = sa.type_coerce(column, sa.BigInteger)
        return [sa.func.sum(raw // HALF), sa.func.sum(raw % HALF)]
    return [sa.func.sum(column)]


def joined(dialect: str, column: Any, values: Sequence[Any]) -> Any:
    """The sum from `sum_of`'s values (None over no values): exact, scaled back."""
    if not splits(dialect, column):
        return values[0]
    high, low = values
    if high is None:
        return None
    whole = int(high) * HALF + int(low)
    if isinstance(column.type, ExactDecimal):
        return Decimal(whole).scaleb(-column.type.places)
    return whole
