"""The backup written before a migration that loses data.

SQLite: a copy of the whole file, taken with SQLite's online backup while the migration
holds the write lock and before it writes, so it is exactly the database the plan was
made on.
PostgreSQL: every table a lossy step touches, exported as CSV (COPY) into a folder, in
the same transaction as the migration.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa


def write_backup(conn: sa.Connection, tables: Iterable[str], folder: Path | None) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    if conn.dialect.name == "sqlite":
        database = Path(conn.engine.url.database or "kartoteka.db")
        where = folder or database.parent
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{database.stem}.before-migrate-{stamp}{database.suffix or '.db'}"
        # read through a second connection: the migration's own holds the write lock and has
        # written nothing yet, so this reads exactly the data the plan was made on (WAL)
        source, copy = sqlite3.connect(database), sqlite3.connect(path)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        return path
    name = conn.engine.url.database or "kartoteka"
    path = (folder or Path.cwd()) / f"{name}.before-migrate-{stamp}"
    path.mkdir(parents=True, exist_ok=False)
    preparer = conn.dialect.identifier_preparer
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for table in sorted(set(tables)):
            with (path / f"{table}.csv").open("wb") as out:
                with cursor.copy(f"COPY {preparer.quote(table)} TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
                    for chunk in copy:
                        out.write(bytes(chunk))
    finally:
        cursor.close()
    return path
