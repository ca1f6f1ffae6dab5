"""Many rows into one table through the database driver: the bulk and import write path.

SQLAlchemy's executemany runs every value of every row through its own parameter
handling, and an INSERT … RETURNING of many rows goes out as several multi-row statements
with a sentinel to put the ids back in order; on an import that costs more than the
database's own work. Here the rows are sent as the driver takes them, after the columns'
own bind processing (a money value becomes SQLite's integer cents exactly as SQLAlchemy
would store it, a moment UTC, JSON its text):

- `insert_rows`: on SQLite, INSERTs of many rows each (`VALUES (?1, ?3), (?1, ?4), …`,
  one executemany of them; a column of one object, such as a batch's moment, bound once
  per statement), or PostgreSQL's COPY … FROM STDIN, the fastest way into a PostgreSQL
  table;
- `reserve_ids`: the ids of `count` new rows, taken before they are written, so that the
  rows go in with their ids and nothing needs to come back. On PostgreSQL from the
  table's sequence in one call (`nextval` over `generate_series`); on SQLite, inside the
  write transaction that holds the database's write lock, the ids SQLite itself would
  give next (AUTOINCREMENT: above the highest id the table ever had).

Nothing here checks an access scope: only writes of new rows, prepared by callers that
checked them (engine/records/plain_creates.py, the journal).
"""

from __future__ import annotations

import functools
import json
import json.encoder
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from operator import is_
from types import NoneType
from typing import Any

import sqlalchemy as sa

from engine.storage.database import UNSCOPED

WHY = "new rows of a bulk write, checked by their caller"


class WholeColumn:
    """A column's bind processing done for all its values at once (a column type's
    `bind_column`, e.g. ExactDecimal's: passes over the column in C)."""

    __slots__ = ("process",)

    def __init__(self, process: Callable[[Sequence[Any]], list[Any]]):
        self.process = process


Processor = Callable[[Any], Any] | WholeColumn | None


def processors(dialect: sa.Dialect, table: sa.Table,
               names: Sequence[str]) -> list[Processor]:
    """The bind processing of each column as this database stores it (an exact decimal is
    an INTEGER on SQLite, and its generic NUMERIC processor would send a float): value by
    value, or a whole column's at once when its type offers that (`bind_column`)."""
    steps: list[Processor] = []
    for name in names:
        impl = table.c[name].type.dialect_impl(dialect)
        bind_column = getattr(impl, "bind_column", None)
        whole = bind_column(dialect) if bind_column is not None else None
        if whole is not None:
            steps.append(WholeColumn(whole))
            continue
        step: Callable[[Any], Any] | None = impl.bind_processor(dialect)
        if step is not None and _plain_json(impl, dialect):
            step = _json_text(step)
        steps.append(step)
    return steps


def _plain_json(impl: Any, dialect: sa.Dialect) -> bool:
    """A JSON column whose bind processing is SQLAlchemy's generic one through `json.dumps`
    (SQLite's; PostgreSQL's JSONB hands psycopg the value itself)."""
    return (isinstance(impl, sa.JSON) and type(impl).bind_processor is sa.JSON.bind_processor
            and getattr(dialect, "_json_serializer", None) in (None, json.dumps)
            and _ENCODER is not None)


def _json_text(step: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`step` (SQLAlchemy's JSON processing: `json.dumps`) with a dict encoded by the very
    C encoder `json.dumps` makes anew on each call with its default settings — made once
    here, as a history entry's dict is the most common value of a bulk write. The text is
    the same, byte for byte; anything else goes through `step`."""
    encoder = _ENCODER
    assert encoder is not None

    def process(value: Any) -> Any:
        if type(value) is not dict:
            return step(value)
        try:
            return "".join(encoder(value, 0))
        except Exception:  # e.g. a value JSON cannot hold: json.dumps raises it as such
            return step(value)
    return process


def _c_encoder() -> Callable[[Any, int], Any] | None:
    """json.dumps' own encoder at its defaults (`JSONEncoder.iterencode` with
    `_one_shot`): ASCII-only text, ", " and ": ", keys in their order, NaN allowed; no
    circular check (a history entry is a tree, and a cycle makes `step` raise as before)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    default = json.JSONEncoder()
    encoder: Callable[[Any, int], Any] = make(
        None, default.default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, True)
    return encoder


_ENCODER = _c_encoder()


def json_objects(names: Sequence[str],
                 columns: Sequence[Sequence[Any]]) -> list[str | None] | None:
    """The JSON text of each row's {name: value} without its empty values (None, []) —
    `json.dumps` of that dict, byte for byte —, made column by column: each distinct value
    of a column of text, whole numbers or booleans encoded once, as the C encoder writes
    them (a text by `encode_basestring_ascii`, a number by `int.__repr__`), after the key
    as it writes a key; any other column's values by that encoder itself, once per
    distinct object. A row's pieces fill the template `{"a": %s, "b": %s%s…}` in C: the key
    of a column with a value in every row is the template's, any other column's piece
    holds its key — after the first column's, with the ", " before it — or is "" for an
    empty value; when the first column has an empty value, a row that starts "{, " loses
    that comma. None for a row with no value; None for them all when a value is not one
    JSON holds (the caller makes the dicts, whose encoding raises as it always did)."""
    encoder = _ENCODER
    if encoder is None or not columns:
        return None
    parts: list[str] = []  # each column's part of the row's template
    pieces: list[list[str]] = []  # each column's piece of each row
    try:
        for name, column in zip(names, columns, strict=True):
            key = ("" if not parts else ", ") + _encode_text(name) + ": "
            kinds = set(map(type, column))
            nulls = NoneType in kinds
            kinds.discard(NoneType)
            encode = _ENCODE_BY_VALUE.get(kinds.pop()) if len(kinds) == 1 else None
            if encode is not None and not nulls:  # a value in every row: the key in the template
                parts.append(key.replace("%", "%%") + "%s")
                distinct = set(column)
                if len(distinct) * 2 > len(column):  # mostly distinct
                    pieces.append(list(map(encode, column)))
                    continue
                done = dict(zip(distinct, map(encode, distinct), strict=True))
                pieces.append(list(map(done.__getitem__, column)))
                continue
            parts.append("%s")
            if encode is not None:  # the values are their own keys: one kind only
                distinct = set(column)
                distinct.discard(None)
                done = dict(zip(distinct, map(key.__add__, map(encode, distinct)),
                                strict=True))
                done[None] = ""
                pieces.append(list(map(done.__getitem__, column)))
                continue
            ids = list(map(id, column))
            by_id = {at: "" if value is None or value == [] else key + "".join(encoder(value, 0))
                     for at, value in dict(zip(ids, column, strict=True)).items()}
            pieces.append(list(map(by_id.__getitem__, ids)))
    except Exception:  # e.g. a value JSON cannot hold
        return None
    texts = list(map(("{" + "".join(parts) + "}").__mod__, zip(*pieces, strict=True)))
    if parts[0] == "%s" and "" in pieces[0]:  # a row without the first column's value
        texts = ["{" + text[3:] if text.startswith("{, ") else text for text in texts]
    if "{}" not in texts:
        return texts  # type: ignore[return-value]  # list is invariant: no None in it
    return [None if text == "{}" else text for text in texts]


_encode_text: Callable[[str], str] = json.encoder.encode_basestring_ascii
#: how json.dumps writes a value of these exact types (json.encoder's C encoder: a text by
#: encode_basestring_ascii, an int by int.__repr__, True and False as words)
_ENCODE_BY_VALUE: dict[type, Callable[[Any], str]] = {
    str: _encode_text, int: int.__repr__, bool: {True: "true", False: "false"}.__getitem__}


def processed(steps: Sequence[Processor],
              columns: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The rows of `columns` (each column's values) as the driver takes them, processed
    column by column. A value that is the very object an earlier row had in that column
    (a batch's one `now` in created_at, updated_at and every history row's `at`; a date or
    an amount a file repeats) is processed once."""
    return list(zip(*_processed_columns(steps, columns), strict=True))


def _processed_columns(steps: Sequence[Processor],
                       columns: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """`processed`, left column by column."""
    return [column if step is None else step.process(column) if isinstance(step, WholeColumn)
            else _each(step, column) for step, column in zip(steps, columns, strict=True)]


def _each(step: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    """`step` of each value, once per distinct object (by identity: `values` holds every
    object, so no two of them share an id meanwhile); a column of one object (a batch's
    moment) without a pass of its own."""
    if values and all(map(is_, values, repeat(values[0]))):
        return [step(values[0])] * len(values)
    ids = list(map(id, values))
    distinct = dict(zip(ids, values, strict=True))
    if len(distinct) == len(ids):
        return list(map(step, values))
    done = {key: step(value) for key, value in distinct.items()}
    return list(map(done.__getitem__, ids))



def insert_rows(conn: sa.Connection, table: sa.Table, names: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """INSERT `rows` (values in the order of `names`, as Python values) in one go: COPY on
    PostgreSQL, INSERTs of many rows each on SQLite. A refused row raises sa.exc.IntegrityError (or
    DBAPIError), as an INSERT through SQLAlchemy does."""
    if rows:
        insert_columns(conn, table, names, list(zip(*rows, strict=True)))


def insert_columns(conn: sa.Connection, table: sa.Table, names: Sequence[str],
                   columns: Sequence[Sequence[Any]], *, ready: Iterable[str] = ()) -> None:
    """`insert_rows` of rows given column by column: `columns[i]` the values of
    `names[i]`, each as long as the others. The columns named in `ready` hold values
    processed already, as the driver takes them (a history's JSON texts)."""
    if not columns or not columns[0]:
        return
    dialect = conn.dialect
    steps = processors(dialect, table, names)
    for name in ready:
        steps[names.index(name)] = None
    done = _processed_columns(steps, columns)
    quote = dialect.identifier_preparer.quote
    names_sql = ", ".join(quote(name) for name in names)
    if dialect.name == "postgresql":
        _copy(conn, f"COPY {quote(table.name)} ({names_sql}) FROM STDIN",
              zip(*done, strict=True))
        return
    if dialect.name == "sqlite":
        _insert_sqlite(conn, f"INSERT INTO {quote(table.name)} ({names_sql}) VALUES ", done)
        return
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {quote(table.name)} ({names_sql}) VALUES ({', '.join([mark] * len(names))})"
    conn.exec_driver_sql(sql, list(zip(*done, strict=True)), execution_options={UNSCOPED: WHY})


#: rows per INSERT statement on SQLite (fewer when that many rows' values exceed its limit
#: of parameters per statement)
SQLITE_ROWS_PER_STATEMENT = 200


def _insert_sqlite(conn: sa.Connection, head: str, columns: Sequence[Sequence[Any]]) -> None:
    """SQLite: the rows by INSERTs of many rows each (`VALUES (?1, ?4, ?5), (?1, ?6, ?7),
    …`), one executemany of the statement for as many rows as fit, and one for the rest.
    SQLite runs each execution of a statement as a whole — the step, the AUTOINCREMENT
    counter's update, the statement's journal —, and the driver binds it in one call: per
    row, an executemany of one-row INSERTs costs about a quarter more of the database's
    CPU. A column of one object (a batch's moment, its entity, a null `by`) is bound once
    per statement, by a numbered parameter every row names: the driver copies each text
    it binds, and asks each value not of a plain type (None) for an adapter. The rows,
    their order and the errors (a taken unique value: IntegrityError) are the same."""
    count = len(columns[0])
    one = [all(map(is_, column, repeat(column[0]))) for column in columns]
    if all(one):
        one[0] = False  # the same row `count` times: one column still goes row by row
    constants = tuple(column[0] for column, same in zip(columns, one, strict=True) if same)
    varying = [column for column, same in zip(columns, one, strict=True) if not same]
    per = max(1, min(SQLITE_ROWS_PER_STATEMENT,
                     (_sqlite_parameters(conn) - len(constants)) // len(varying)))
    step = per * len(varying)
    values = tuple(chain.from_iterable(zip(*varying, strict=True)))
    whole = count // per * per * len(varying)
    options = {UNSCOPED: WHY}
    shape = tuple(one)
    if whole:
        conn.exec_driver_sql(head + _sqlite_rows(shape, per),
                             [constants + values[i:i + step] for i in range(0, whole, step)],
                             execution_options=options)
    if whole < len(values):
        conn.exec_driver_sql(head + _sqlite_rows(shape, (len(values) - whole) // len(varying)),
                             constants + values[whole:], execution_options=options)


@functools.lru_cache(maxsize=64)
def _sqlite_rows(shape: tuple[bool, ...], rows: int) -> str:
    """The VALUES of `rows` rows whose columns are each one parameter (`shape`: True) or
    one per row: the first numbers name the columns of one object, the rest each row's
    other values in turn."""
    constants = shape.count(True)
    next_number = constants + 1
    tuples = []
    for _ in range(rows):
        constant, numbers = 1, []
        for same in shape:
            if same:
                numbers.append(constant)
                constant += 1
            else:
                numbers.append(next_number)
                next_number += 1
        tuples.append("(" + ", ".join(f"?{number}" for number in numbers) + ")")
    return ", ".join(tuples)


def _sqlite_parameters(conn: sa.Connection) -> int:
    """How many parameters one statement of this SQLite connection may have."""
    raw: Any = conn.connection.dbapi_connection
    return int(raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def _copy(conn: sa.Connection, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
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
