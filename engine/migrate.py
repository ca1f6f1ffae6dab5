"""Bring a database in step with a setup — for now, only by creating what is missing.

`plan` compares the live database with the generated tables and returns the steps
(create a table, create an index) and the refusals: anything that would alter or drop an
existing table or column. Evolving live tables (add a column, rename, retype) is the
migrations feature still to come; until then `apply` refuses such setups, saying why.
Every applied setup is recorded in `kt_setup_history`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from engine.database import Database
from engine.errors import DatabaseMismatch, MigrationRefused
from engine.storage import Storage


@dataclass
class MigrationPlan:
    steps: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    tables: list[sa.Table] = field(default_factory=list)
    indexes: list[sa.Index] = field(default_factory=list)
    digest: str = ""
    setup_changed: bool = False

    @property
    def up_to_date(self) -> bool:
        return not self.steps and not self.refusals


def setup_summary(storage: Storage) -> dict[str, Any]:
    tables = {}
    for table in storage.metadata.sorted_tables:
        tables[table.name] = [f"{c.name} {c.type.compile(dialect=_generic)}" for c in table.columns]
    return {"setup": storage.setup.name, "tables": tables}


_generic = sqlite_dialect.dialect()


def plan(storage: Storage, database: Database) -> MigrationPlan:
    summary = setup_summary(storage)
    digest = hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()
    result = MigrationPlan(digest=digest)
    inspector = sa.inspect(database.engine)
    existing = set(inspector.get_table_names())
    dialect = database.dialect
    for table in storage.metadata.sorted_tables:
        if table.name not in existing:
            result.steps.append(f"create table {table.name} ({len(table.columns)} columns)")
            result.tables.append(table)
            continue
        live_columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in live_columns:
                result.refusals.append(
                    f"table {table.name} has no column {column.name}: adding a column to an "
                    "existing table needs the migrations feature")
        for name in live_columns:
            if name not in table.columns:
                result.refusals.append(
                    f"column {table.name}.{name} is in the database but not in the setup: "
                    "removing it would lose its data")
        live_indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            wanted_here = _index_for(index, dialect)
            if wanted_here and index.name not in live_indexes:
                result.steps.append(f"create index {index.name} on {table.name}")
                result.indexes.append(index)
    previous = _last_summary(database, existing)
    if previous is not None:
        for name in previous.get("tables", {}):
            if name not in storage.metadata.tables and name in existing:
                result.refusals.append(
                    f"table {name} was created by an earlier setup and is not in this one: "
                    "removing an entity would lose its records")
    result.setup_changed = previous is None or previous.get("digest") != digest
    return result


def _index_for(index: sa.Index, dialect: str) -> bool:
    condition = getattr(index, "_ddl_if", None)
    return condition is None or condition.dialect is None or condition.dialect == dialect


def _last_summary(database: Database, existing: set[str]) -> dict[str, Any] | None:
    if "kt_setup_history" not in existing:
        return None
    with database.read() as conn:
        row = conn.execute(sa.text(
            "SELECT summary, digest FROM kt_setup_history ORDER BY id DESC LIMIT 1")).first()
    if row is None:
        return None
    data: dict[str, Any] = json.loads(row[0])
    data["digest"] = row[1]
    return data


def apply(storage: Storage, database: Database) -> MigrationPlan:
    """Create what is missing, in one transaction; refuse anything else."""
    result = plan(storage, database)
    if result.refusals:
        raise MigrationRefused(result.refusals)
    if result.up_to_date and not result.setup_changed:
        return result
    with database.write() as conn:
        for table in result.tables:
            table.create(conn)
        for index in result.indexes:
            if index.table is not None and index.table not in result.tables:
                index.create(conn)
        conn.execute(sa.insert(storage.setup_history).values(
            applied_at=dt.datetime.now(dt.UTC),
            setup_name=storage.setup.name,
            digest=result.digest,
            summary=json.dumps({**setup_summary(storage)}, ensure_ascii=False),
        ))
    return result


def verify(storage: Storage, database: Database) -> None:
    """Raise `DatabaseMismatch` unless the database has every table, column and index."""
    result = plan(storage, database)
    if result.refusals or result.steps:
        problems = result.refusals + result.steps
        raise DatabaseMismatch(
            "the database does not match the setup:\n"
            + "\n".join(f"- {p}" for p in problems[:20])
            + "\nrun `kartoteka migrate SETUP --db URL` first")
