"""The board's counts and sums per stage, kept by the database itself (`kt_stage_count`).

An unfiltered board at a million records would otherwise count and sum every record of
the pipeline on each call (a scan of a covering index: ~400 ms on SQLite). Instead each
pipeline entity's table carries triggers that add a write's change to per-stage counters
in the same statement and transaction as the write: +1 record and its amounts on INSERT,
-1 on DELETE, the old stage out and the new one in on an UPDATE that moves a record,
switches its pipeline or changes an amount. Triggers, not engine code, because then every
write path keeps them exact with nothing to remember — the records service, bulk calls,
the import's driver-level inserts (engine/storage/fast_insert.py), merges, the foreign
keys' cascading deletes, a migration's UPDATEs — and no write pays a round trip for them.

Rows are (entity, pipeline, stage, field, shard): the row of field `''` holds the record
count, the row of each summable field its sum. Sums are exact on both databases: on
SQLite the stored integer (an exact decimal scaled by its places, or an integer) is added
as its high and low halves (engine/storage/sums.py, the same split as the board's SUM);
on PostgreSQL `high` is NUMERIC and holds the sum itself. Only the sum over a key's
shards means anything. On PostgreSQL a write adds to the shard of its connection
(`pg_backend_pid() % SHARDS`), so that concurrent transactions rarely lock the same
counter row: a long one (an all-or-nothing import of a big file) would otherwise hold the
rows of the first stage — every shard, had it been chosen by record — and make every
other create wait for its commit; and two transactions on different shards never wait
for each other, in any order. Rarely is not never: a connection whose process falls in the
long transaction's shard waits for its commit, and two multi-statement transactions on one
shard moving records through the same stages in opposite orders can deadlock (docs/api.md,
Board, says so; append-only delta rows folded by the reader would close both). (SQLite has
one writer at a time: its shard is the record id's, and a recount's everywhere.)

PostgreSQL runs statement-level triggers over transition tables: one grouped upsert per
statement, its rows locked in key order (two statements never wait for each other's rows
in opposite orders), and an UPDATE that changes none of the counted columns writes nothing
(its grouped delta is zero). SQLite has only row triggers; it has no concurrent writers.

`keep(conn, storage, rebuild=...)` installs the wanted triggers (their names carry a digest
of their text, so a changed setup — a stage, a money field, a renamed entity — gives new
names) and recounts from the tables: `kartoteka migrate` calls it after its steps.
`counted(conn, storage, entity)` says whether the counters of an entity may be read: its
triggers are the wanted ones. Only the unfiltered board of a caller without a read scope
reads them (engine/process/reports.py); filtered boards group the selected records.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.setup.names import db_object_name
from engine.storage.sums import HALF, joined, sum_of
from engine.types.columns import ExactDecimal

if TYPE_CHECKING:
    from engine.storage.tables import EntityTable, Storage

TABLE = "kt_stage_count"
SHARDS = 16
#: the field of a count row
COUNT = ""
KEY = ("entity", "pipeline", "stage", "field", "shard")


def stage_count_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE, metadata,
        sa.Column("entity", sa.String(64), primary_key=True),
        sa.Column("pipeline", sa.String(64), primary_key=True),
        sa.Column("stage", sa.String(64), primary_key=True),
        sa.Column("field", sa.String(64), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        # SQLite: the high halves' sum; PostgreSQL: the sum itself
        sa.Column("high", sa.BigInteger().with_variant(sa.Numeric(), "postgresql"),
                  nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
    )


def countable(table: EntityTable) -> list[str]:
    """The summable fields the counters sum: those stored as exact decimals or integers
    (a summable plugin type stored otherwise is summed by the board's GROUP BY)."""
    return [f.name for f in table.spec.fields.values()
            if f.type.summable and isinstance(table.table.c[f.name].type, ExactDecimal | sa.Integer)]


# -- reading --------------------------------------------------------------------------------

def counted(conn: sa.Connection, storage: Storage, entity: str) -> bool:
    """Are the entity's counters kept: are its triggers in the database the wanted ones?
    (A database not migrated since they exist, or built another way, has none.)"""
    dialect = conn.dialect.name
    wanted = storage.once(f"stage_counts.{dialect}.{entity}",
                          lambda: frozenset(_wanted(dialect, storage, storage[entity])))
    return bool(wanted) and wanted <= _installed(conn, {storage[entity].table.name})


def stage_totals(conn: sa.Connection, storage: Storage, entity: str, pipeline: str,
                 fields: list[str]) -> dict[str, list[Any]]:
    """{stage: [count, sum of each of `fields`]} of every record of `pipeline`, from the
    counters: one statement over a few rows per stage. Sums as the board's SUM gives them
    (engine/storage/sums.py `joined`)."""
    c = storage.stage_counts.c
    dialect = conn.dialect.name
    table = storage[entity].table
    totals: dict[str, list[Any]] = {}
    for stage, field, records, high, low in conn.execute(
            sa.select(c.stage, c.field, sa.func.sum(c.records), sa.func.sum(c.high),
                      sa.func.sum(c.low))
            .where(c.entity == entity, c.pipeline == pipeline,
                   c.field.in_([COUNT, *fields]))
            .group_by(c.stage, c.field)):
        row = totals.setdefault(stage, [0, *(None for _ in fields)])
        if field == COUNT:
            row[0] = int(records)
        else:
            row[1 + fields.index(field)] = joined(dialect, table.c[field], [high, low])
    return totals


# -- keeping ---------------------------------------------------------------------------------

def keep(conn: sa.Connection, storage: Storage, *, rebuild: bool) -> bool:
    """Install the wanted triggers if they are not all there (dropping ours that are not
    wanted) and recount; with `rebuild`, recount anyway. Says whether it recounted."""
    dialect = conn.dialect.name
    wanted: dict[str, list[str]] = {}
    for table in storage.entities.values():
        wanted.update(_wanted(dialect, storage, table))
    installed = _installed(conn, None)
    if set(wanted) == installed and not rebuild:
        return False
    _drop(conn, installed)
    for statements in wanted.values():
        for statement in statements:
            conn.exec_driver_sql(statement)
    recount(conn, storage)
    return True


def pause(conn: sa.Connection) -> None:
    """Drop our triggers for a migration's steps: a step may rename or drop a column an
    installed trigger names, and a later step's UPDATE would then fail in it. `keep`
    installs them again after the steps and recounts, in the same transaction."""
    _drop(conn, _installed(conn, None))


def recount(conn: sa.Connection, storage: Storage) -> None:
    """Every counter again from the entity tables: one GROUP BY per pipeline entity."""
    target = storage.stage_counts
    conn.execute(sa.delete(target))
    dialect = conn.dialect.name
    for table in storage.entities.values():
        if table.spec.pipeline is None:
            continue
        t = table.table
        pipeline = _pipeline_of(table, t.c)
        shard = t.c.id % sa.literal_column(str(SHARDS))
        columns = ["entity", "pipeline", "stage", "field", "shard", "records", "high", "low"]
        conn.execute(sa.insert(target).from_select(columns, sa.select(
            sa.literal(table.name), pipeline, t.c.stage, sa.literal(COUNT), shard,
            sa.func.count(), sa.literal(0), sa.literal(0)).group_by(pipeline, t.c.stage, shard)))
        for name in countable(table):
            high, low = _halves(dialect, t.c[name])
            conn.execute(sa.insert(target).from_select(columns, sa.select(
                sa.literal(table.name), pipeline, t.c.stage, sa.literal(name), shard,
                sa.literal(0), high, low).group_by(pipeline, t.c.stage, shard)))


def _pipeline_of(table: EntityTable, columns: Any) -> Any:
    """The pipeline a row counts in: its selector's value, the first pipeline when none
    (as the board selects them, engine/process/reports.py `_in_pipeline`)."""
    pipelines = table.spec.pipeline
    assert pipelines is not None
    first = next(iter(pipelines.pipelines))
    if pipelines.pipeline_by is None:
        return sa.literal(first)
    return sa.func.coalesce(columns[pipelines.pipeline_by], first)


def _halves(dialect: str, column: Any) -> tuple[Any, Any]:
    """The (high, low) SUMs of a column, as the counters hold them."""
    sums = [sa.func.coalesce(total, 0) for total in sum_of(dialect, column)]
    return (sums[0], sums[1]) if len(sums) == 2 else (sums[0], sa.literal(0))


# -- the triggers' text -----------------------------------------------------------------------

def _wanted(dialect: str, storage: Storage, table: EntityTable) -> dict[str, list[str]]:
    """{trigger name: the statements that create it} for one entity (none without a
    pipeline). Names end in a digest of the statements."""
    if table.spec.pipeline is None:
        return {}
    build = _sqlite if dialect == "sqlite" else _postgresql
    wanted: dict[str, list[str]] = {}
    for event in ("insert", "update", "delete"):
        draft = build(table, event, "NAME")
        digest = hashlib.sha1("\n".join(draft).encode()).hexdigest()[:8]
        name = db_object_name("kt_count", table.table.name, event, digest)
        wanted[name] = build(table, event, name)
    return wanted


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _row_values(table: EntityTable, row: str, sign: str) -> list[str]:
    """The VALUES rows one record adds (sign +) or takes away (sign -)."""
    pipelines = table.spec.pipeline
    assert pipelines is not None
    first = _text(next(iter(pipelines.pipelines)))
    pipeline = first if pipelines.pipeline_by is None \
        else f"coalesce({row}.{_q(pipelines.pipeline_by)}, {first})"
    key = f"{_text(table.table.name)}, {pipeline}, {row}.stage"
    shard = f"{row}.id % {SHARDS}"
    rows = [f"({key}, {_text(COUNT)}, {shard}, {sign}1, 0, 0)"]
    for name in countable(table):
        value = f"{row}.{_q(name)}"
        rows.append(f"({key}, {_text(name)}, {shard}, 0, "
                    f"{sign}coalesce({value} / {HALF}, 0), {sign}coalesce({value} % {HALF}, 0))")
    return rows


_UPSERT = (f"INSERT INTO {TABLE} (entity, pipeline, stage, field, shard, records, high, low) "
           "VALUES {values} ON CONFLICT (" + ", ".join(KEY) + ") DO UPDATE SET "
           "records = records + excluded.records, high = high + excluded.high, "
           "low = low + excluded.low;")


def _sqlite(table: EntityTable, event: str, name: str) -> list[str]:
    t = _q(table.table.name)
    if event == "insert":
        head, body = f"AFTER INSERT ON {t}", _UPSERT.format(
            values=", ".join(_row_values(table, "NEW", "")))
    elif event == "delete":
        head, body = f"AFTER DELETE ON {t}", _UPSERT.format(
            values=", ".join(_row_values(table, "OLD", "-")))
    else:
        watched = _watched(table)
        changed = " OR ".join(f"OLD.{_q(c)} IS NOT NEW.{_q(c)}" for c in watched)
        head = (f"AFTER UPDATE OF {', '.join(_q(c) for c in watched)} ON {t} "
                f"WHEN {changed}")
        body = (_UPSERT.format(values=", ".join(_row_values(table, "OLD", "-")))
                + " " + _UPSERT.format(values=", ".join(_row_values(table, "NEW", ""))))
    return [f"CREATE TRIGGER {_q(name)} {head} BEGIN {body} END"]


def _watched(table: EntityTable) -> list[str]:
    """The columns whose change moves a record between counters."""
    pipelines = table.spec.pipeline
    assert pipelines is not None
    selector = [pipelines.pipeline_by] if pipelines.pipeline_by else []
    return ["stage", *selector, *countable(table)]


def _postgresql(table: EntityTable, event: str, name: str) -> list[str]:
    """A function and its statement-level trigger: the statement's rows (transition
    tables) grouped into one upsert, in key order."""
    pipelines = table.spec.pipeline
    assert pipelines is not None
    first = _text(next(iter(pipelines.pipelines)))
    pipeline = first if pipelines.pipeline_by is None \
        else f"coalesce(r.{_q(pipelines.pipeline_by)}, {first})"

    def rows(source: str, sign: str) -> list[str]:
        # the connection's shard (see the module's docstring); no %: the driver reads it
        # as a placeholder
        shard = f"mod(pg_backend_pid(), {SHARDS})::smallint"
        selects = [f"SELECT {pipeline} AS pipeline, r.stage AS stage, {_text(COUNT)} AS field, "
                   f"{shard} AS shard, {sign}1 AS records, 0::numeric AS high FROM {source} r"]
        for field in countable(table):
            selects.append(f"SELECT {pipeline}, r.stage, {_text(field)}, {shard}, 0, "
                           f"{sign}coalesce(r.{_q(field)}, 0)::numeric FROM {source} r")
        return selects

    sources = {"insert": rows("kt_new", ""), "delete": rows("kt_old", "-"),
               "update": [*rows("kt_old", "-"), *rows("kt_new", "")]}[event]
    having = " HAVING sum(d.records) <> 0 OR sum(d.high) <> 0" if event == "update" else ""
    body = (f"INSERT INTO {TABLE} AS c (entity, pipeline, stage, field, shard, records, high, low) "
            f"SELECT {_text(table.table.name)}, d.pipeline, d.stage, d.field, d.shard, "
            "sum(d.records), sum(d.high), 0 FROM ("
            + " UNION ALL ".join(sources) + ") AS d "
            "GROUP BY d.pipeline, d.stage, d.field, d.shard" + having
            + " ORDER BY d.pipeline, d.stage, d.field, d.shard "
            "ON CONFLICT (" + ", ".join(KEY) + ") DO UPDATE SET "
            "records = c.records + excluded.records, high = c.high + excluded.high")
    referencing = {"insert": "NEW TABLE AS kt_new", "delete": "OLD TABLE AS kt_old",
                   "update": "OLD TABLE AS kt_old NEW TABLE AS kt_new"}[event]
    return [
        f"CREATE OR REPLACE FUNCTION {_q(name)}() RETURNS trigger LANGUAGE plpgsql AS $kt$ "
        f"BEGIN {body}; RETURN NULL; END $kt$",
        f"CREATE TRIGGER {_q(name)} AFTER {event.upper()} ON {_q(table.table.name)} "
        f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {_q(name)}()",
    ]


_OURS = {
    "sqlite": "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' "
              "AND substr(name, 1, 9) = 'kt_count_'",
    "postgresql": "SELECT t.tgname, c.relname FROM pg_trigger t "
                  "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
                  "AND c.relnamespace = current_schema()::regnamespace "
                  "AND left(t.tgname, 9) = 'kt_count_'",
}


def _installed(conn: sa.Connection, tables: set[str] | None) -> set[str]:
    """Our triggers in the database (on `tables`, or on any)."""
    rows = conn.execute(sa.text(_OURS[conn.dialect.name])).all()
    return {name for name, table in rows if tables is None or table in tables}


def _drop(conn: sa.Connection, names: set[str]) -> None:
    if conn.dialect.name == "sqlite":
        for name in sorted(names):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(name)}")
        return
    for name, table in conn.execute(sa.text(_OURS["postgresql"])).all():
        conn.exec_driver_sql(f"DROP TRIGGER {_q(name)} ON {_q(table)}")
    for name in conn.execute(sa.text(
            "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
            "AND left(proname, 9) = 'kt_count_'")).scalars().all():
        conn.exec_driver_sql(f"DROP FUNCTION {_q(name)}()")
