"""Many rows into one table through the database driver: the bulk and import write path.

SQLAlchemy's executemany runs every value of every row through its own parameter
handling, and an INSERT … RETURNING of many rows goes out as several multi-row statements
with a sentinel to put the ids back in order; on an import that costs more than the
database's own work. Here the rows are sent as the driver takes them, after the columns'
own bind processing (a money value becomes SQLite's integer cents exactly as SQLAlchemy
would store it, a moment UTC, JSON its text):

- `insert_rows`: SQLite's (and psycopg's) executemany of one `INSERT … VALUES (?, …)`, or
  PostgreSQL's COPY … FROM STDIN, the fastest way into a PostgreSQL table;
- `reserve_ids`: the ids of `count` new rows, taken before they are written, so that the
  rows go in with their ids and nothing needs to come back. On PostgreSQL from the
  table's sequence in one call (`nextval` over `generate_series`); on SQLite, inside the
  write transaction that holds the database's write lock, the ids SQLite itself would
  give next (AUTOINCREMENT: above the highest id the table ever had).

Nothing here checks an access scope: only writes of new rows, prepared by callers that
checked them (engine/records/plain_creates.py, the journal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from engine.storage.database import UNSCOPED

WHY = "new rows of a bulk write, checked by their caller"
Processor = Callable[[Any], Any] | None


def processors(dialect: sa.Dialect, table: sa.Table,
               names: Sequence[str]) -> list[Processor]:
    """The bind processing of each column as this database stores it (an exact decimal is
    an INTEGER on SQLite, and its generic NUMERIC processor would send a float)."""
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def processed(steps: Sequence[Processor],
              rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The rows' values as the driver takes them. A value that is the very object the
    column's previous row had (a batch's one `now` in created_at, updated_at and every
    history row's `at`) is processed once."""
    pairs = [(index, step) for index, step in enumerate(steps) if step is not None]
    if not pairs:
        return [tuple(row) for row in rows]
    last: list[Any] = [_NOTHING] * len(steps)
    done: list[Any] = [None] * len(steps)
    out = []
    for row in rows:
        values = list(row)
        for index, step in pairs:
            value = values[index]
            if value is not last[index]:
                last[index], done[index] = value, step(value)
            values[index] = done[index]
        out.append(tuple(values))
    return out


_NOTHING = object()


def insert_rows(conn: sa.Connection, table: sa.Table, names: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """INSERT `rows` (values in the order of `names`, as Python values) in one go: COPY on
    PostgreSQL, one executemany elsewhere. A refused row raises sa.exc.IntegrityError (or
    DBAPIError), as an INSERT through SQLAlchemy does."""
    if not rows:
        return
    dialect = conn.dialect
    values = processed(processors(dialect, table, names), rows)
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in names)
    if dialect.name == "postgresql":
        _copy(conn, f"COPY {quote(table.name)} ({columns}) FROM STDIN", values)
        return
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({', '.join([mark] * len(names))})"
    conn.exec_driver_sql(sql, values, execution_options={UNSCOPED: WHY})


def _copy(conn: sa.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """COPY through psycopg 3 on the connection's own transaction; its errors become
    SQLAlchemy's, as any statement's (a taken unique value: IntegrityError)."""
    raw: Any = conn.connection.dbapi_connection  # a psycopg.Connection
    try:
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except Exception as error:
        import psycopg

        if not isinstance(error, psycopg.Error):
            raise
        wrapped = sa.exc.DBAPIError.instance(sql, None, error, psycopg.Error)
        raise wrapped from error


def reserve_ids(conn: sa.Connection, table: sa.Table, count: int) -> list[int]:
    """The ids of `count` rows about to be inserted into `table` (inside a write)."""
    if count <= 0:
        return []
    quote = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql":
        found = conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence(%(table)s, 'id')) "
            "FROM generate_series(1, %(count)s)",
            {"table": quote(table.name), "count": count},
            execution_options={UNSCOPED: WHY}).scalars().all()
        return [int(i) for i in found]
    # SQLite: the write lock is held (BEGIN IMMEDIATE), so no other writer takes these;
    # AUTOINCREMENT gives max(highest id ever, highest id now) + 1, as here
    highest = conn.exec_driver_sql(
        f"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "
        f"coalesce((SELECT max(id) FROM {quote(table.name)}), 0))",
        (table.name,), execution_options={UNSCOPED: WHY}).scalar_one()
    first = int(highest) + 1
    return list(range(first, first + count))
