"""Column types that behave the same on SQLite and PostgreSQL.

- `ExactDecimal`: NUMERIC(digits, places) on PostgreSQL; on SQLite, whose NUMERIC
  affinity turns values into floats, an INTEGER of the value scaled by 10**places. Both
  keep every digit, sort numerically and sum exactly in SQL.
- `UTCDateTime`: TIMESTAMP WITH TIME ZONE on PostgreSQL; on SQLite an ISO text in UTC.
  Python sees aware datetimes in UTC either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import repeat
from types import NoneType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    impl = sa.Numeric
    cache_ok = True

    def __init__(self, digits: int, places: int):
        super().__init__()
        self.digits = digits
        self.places = places
        self._scale = Decimal(10) ** places
        self._quantum = Decimal(1).scaleb(-places)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(self.digits, self.places, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value)
        if dialect.name == "sqlite":
            return int((value * self._scale).to_integral_value())
        return value

    def bind_column(self, dialect: Dialect) -> Callable[[Sequence[Any]], list[Any]] | None:
        """This type's bind processing of a whole column's values, for the driver-level
        inserts of bulk writes and imports (engine/storage/fast_insert.py): Decimals by
        passes over them in C — on SQLite each one times 10**places, made integral, an int;
        on PostgreSQL each one itself, as `Decimal(value)` would copy it —, exactly what
        `process_bind_param` gives each; other values one by one. None when the impl has
        a bind processing of its own (then value by value, as SQLAlchemy does)."""
        if self.impl_instance.bind_processor(dialect) is not None:
            return None
        scale, sqlite = self._scale, dialect.name == "sqlite"

        def process(values: Sequence[Any]) -> list[Any]:
            present = present_of(values, Decimal)
            if present is None:
                return [self.process_bind_param(value, dialect) for value in values]
            if not sqlite:
                return list(values)
            return with_nones(values, list(map(int, map(Decimal.to_integral_value, map(
                Decimal.__mul__, present, repeat(scale))))))
        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / self._scale).quantize(self._quantum)
        return Decimal(value).quantize(self._quantum)

    @property
    def python_type(self) -> type:
        return Decimal


def present_of(values: Sequence[Any], kind: type) -> list[Any] | None:
    """The values that are not None, when each is of exactly `kind` (else None). By
    their types, not `None in values`: its == would ask each Decimal to compare itself.
    For the passes over a whole column (`bind_column`, the field types' `parse_many` and
    `render_many`)."""
    kinds = set(map(type, values))
    if not kinds <= {kind, NoneType}:
        return None
    return [value for value in values if value is not None] if NoneType in kinds \
        else list(values)


def with_nones(values: Sequence[Any], done: list[Any]) -> list[Any]:
    """`done` (one per value of `values` that is not None) with None where `values` has
    None."""
    if len(done) == len(values):
        return done
    found = iter(done)
    return [None if value is None else next(found) for value in values]


def utc_text(value: dt.datetime) -> str:
    """A moment as the API, exports and histories write it: ISO 8601 in UTC, `Z` for the
    zone (`2026-12-05T21:48:00Z`)."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class UTCDateTime(TypeDecorator[dt.datetime]):
    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.String(32))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database")
        value = value.astimezone(dt.UTC)
        if dialect.name == "postgresql":
            return value
        # fixed width (years padded to 4 digits: strftime's %Y is not, before 1000), so
        # text order is time order and every stored value reads back
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            # our own fixed format ending in Z; fromisoformat is C-fast, strptime is not
            return dt.datetime.fromisoformat(value)
        moment: dt.datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)

    @property
    def python_type(self) -> type:
        return dt.datetime


def json_column() -> TypeEngine[Any]:
    # none_as_null: an empty value is SQL NULL (isnull filters find it), not JSON null
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def id_column_type() -> TypeEngine[int]:
    # SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias)
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")
