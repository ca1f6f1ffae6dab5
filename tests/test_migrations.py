"""Migrations on a live database, on SQLite and PostgreSQL: a populated database (10,000
records over four entities) is taken through 18 setup versions — fields and entities
added, renamed, retyped, made required and unique, relinked and removed, stages removed
and moved, with and without --allow-data-loss. After each version every row of every
table is compared with what the plan said: nothing else may change. A refused version
changes nothing at all; a migration made to fail midway leaves the database as it was
(that test and those of one refusal or hook run on a tenth of the records).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import sqlite3
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Kartoteka, MigrationRefused
from engine.storage import stage_counts
from engine.storage.migrations import apply, history, plan
from engine.storage.migrations.steps import Step
from engine.storage.tables import STAGE_TIME_SHARDS
from tests.conftest import DEFAULT_SETUP

CLIENTS, PRODUCTS, SALES, TASKS = 2_000, 500, 6_000, 1_500  # 10,000 records
STAGES = ("lead", "proposal", "negotiation", "won", "lost")

CLIENT = """
    entity: client
    title: "{name}"
    fields:
      name: {type: string, required: true}
      city: {type: string}
      rating: {type: integer}
      code: {type: string}
"""
PRODUCT = """
    entity: product
    fields:
      title: {type: string, required: true}
      price: {type: money}
"""
SALE = """
    entity: sale
    fields:
      number: {type: string, required: true}
      amount: {type: integer}
      note: {type: text}
    links:
      client: {to: client, required: true, reverse: sales}
      products: {to: product, many: true, reverse: sales}
    pipeline:
      stages: [lead, proposal, negotiation, won, lost]
      final: [won, lost]
"""
TASK = """
    entity: task
    fields:
      subject: {type: string, required: true}
      due: {type: date}
    links:
      client: {to: client, reverse: tasks}
"""
SUPPLIER = """
    entity: supplier
    fields:
      name: {type: string, required: true}
"""


class _Any:
    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "<any>"


ANY = _Any()
Snapshot = dict[str, dict[Any, dict[str, Any]]]


# -- helpers ---------------------------------------------------------------------------------

def write(folder: Path, files: dict[str, str]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def snapshot(url: str) -> Snapshot:
    """Every row of every table, raw as the database stores it, keyed by primary key."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        result: Snapshot = {}
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                # kt_stage_count: the board's counters, checked against a recount instead
                if table.name in ("kt_setup_history", "sqlite_sequence", "kt_stage_count"):
                    continue
                names = [c.name for c in table.columns]
                keys = [names.index(c.name) for c in table.primary_key.columns]
                rows = conn.execute(sa.select(table)).all()
                result[table.name] = {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]:
                                      dict(zip(names, r, strict=True)) for r in rows}
        return result
    finally:
        engine.dispose()


def _summed_counts(conn: sa.Connection, kt: Kartoteka) -> set[tuple[Any, ...]]:
    """The board's counters (engine/storage/stage_counts.py) summed over their shards
    (only the sum means anything), but the zero ones."""
    c = kt.storage.stage_counts.c
    rows = conn.execute(sa.select(c.entity, c.pipeline, c.stage, c.field, sa.func.sum(c.records),
                                  sa.func.sum(c.high) * 2 ** 32 + sa.func.sum(c.low))
                        .group_by(c.entity, c.pipeline, c.stage, c.field)).all()
    return {tuple(row) for row in rows if row[4] or row[5]}


def kept_counts(kt: Kartoteka) -> set[tuple[Any, ...]]:
    with kt.db.read(system="test") as conn:
        return _summed_counts(conn, kt)


def recounted(kt: Kartoteka) -> set[tuple[Any, ...]]:
    """The counters as a recount from the records makes them (rolled back)."""
    rows: set[tuple[Any, ...]] = set()
    try:
        with kt.db.write(system="test") as conn:
            stage_counts.recount(conn, kt.storage)
            rows = _summed_counts(conn, kt)
            raise Boom("undo the recount")
    except Boom:
        return rows


def sqlite_bytes(url: str) -> str:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_same(after: Snapshot, expected: Snapshot) -> None:
    if after == expected:  # compared at C speed; value by value below only to say where
        return
    assert sorted(after) == sorted(expected), "tables differ"
    for table in expected:
        assert after[table].keys() == expected[table].keys(), f"rows of {table} differ"
        for key, row in expected[table].items():
            got = after[table][key]
            assert got.keys() == row.keys(), f"columns of {table} differ: {sorted(got)} {sorted(row)}"
            for column, value in row.items():
                assert value == got[column], f"{table} #{key} {column}: {got[column]!r}, want {value!r}"


def seed(kt: Kartoteka, share: int = 1) -> None:
    """10,000 records (a `share`-th of them: 1,000 for 10), links and stage history."""
    clients_, products_, sales_, tasks_ = (n // share for n in (CLIENTS, PRODUCTS, SALES, TASKS))
    storage, now = kt.storage, dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    system = {"created_at": now, "updated_at": now, "version": 1}
    clients = [{"id": i, **system, "name": f"Client {i % 1900}", "city": None if i % 4 else "Kazan",
                "rating": i % 10, "code": f"C-{i}" if i % 3 == 0 else str(i)}
               for i in range(1, clients_ + 1)]
    products = [{"id": i, **system, "title": f"Product {i}", "price": Decimal(i) / 4}
                for i in range(1, products_ + 1)]
    sales = [{"id": i, **system, "number": f"S-{i}", "amount": i * 3, "note": f"note {i}" if i % 2 else None,
              "client_id": i % clients_ + 1, "stage": STAGES[i % 5]} for i in range(1, sales_ + 1)]
    tasks = [{"id": i, **system, "subject": f"Call {i}", "due": dt.date(2024, 6, 1 + i % 28),
              "client_id": None if i % 5 == 0 else i % clients_ + 1} for i in range(1, tasks_ + 1)]
    links = [{"source_id": i, "target_id": i % products_ + 1} for i in range(1, 2_000 // share + 1)]
    history_rows = [{"entity": "sale", "record_id": s["id"], "at": now, "by": None,
                     "pipeline": "default", "from_stage": None, "to_stage": s["stage"],
                     "seconds": None} for s in sales]
    with kt.db.write(system="test") as conn:
        for entity, rows in (("client", clients), ("product", products), ("sale", sales),
                             ("task", tasks)):
            conn.execute(sa.insert(storage[entity].table), rows)
        conn.execute(sa.insert(storage["sale"].join_tables["products"]), links)
        conn.execute(sa.insert(storage.stage_history), history_rows)


# -- the 18 versions ---------------------------------------------------------------------------

def _money(dialect: str) -> Callable[[Any], Any]:
    return (lambda v: None if v is None else v * 100) if dialect == "sqlite" else (
        lambda v: None if v is None else Decimal(v))


def _code(v: Any) -> Any:
    return int(v) if v is not None and v.isdigit() else None


def _drop(table: str, column: str) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        for row in snap[table].values():
            del row[column]
    return change


def _add(table: str, column: str, value: Any = None) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        for row in snap[table].values():
            row[column] = value
    return change


def _map(table: str, column: str, fn: Callable[[Any], Any]) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        for row in snap[table].values():
            row[column] = fn(row[column])
    return change


def _rename_column(table: str, old: str, new: str) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        for row in snap[table].values():
            row[new] = row.pop(old)
    return change


def _rename_table(old: str, new: str) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        snap[new] = snap.pop(old)
    return change


def _drop_table(name: str) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        del snap[name]
    return change


def _move_stage(old: str, new: str) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        for row in snap["sale"].values():
            if row["stage"] == old:
                row.update(stage=new, version=row["version"] + 1, updated_at=ANY)
        history = snap["kt_stage_history"]
        moved = [r for r in snap["sale"].values() if r["updated_at"] is ANY]
        for n, row in enumerate(moved, start=max(history) + 1):
            history[n] = {"id": n, "entity": "sale", "record_id": row["id"], "at": ANY, "by": None,
                          "pipeline": "default", "from_stage": old, "to_stage": new, "seconds": ANY}
        # the moves are time spent in the removed stage: counted per shard of the record id
        counters = snap.setdefault("kt_stage_time", {})
        for row in moved:
            key = ("sale", "default", old, row["id"] % STAGE_TIME_SHARDS)
            counter = counters.setdefault(key, {
                "entity": "sale", "pipeline": "default", "stage": old,
                "shard": key[3], "exits": 0, "total_seconds": ANY})
            counter["exits"] += 1
        # the stages are numbered anew, and each sale's reached stages read from its history:
        # the stage it was created in (unless removed) and the one it was moved to
        stages = [s for s in STAGES if s != old]
        for row in snap["sale"].values():
            row["kt_reached"] = 1 << stages.index(row["stage"])
    return change


def _new_table(name: str) -> Callable[[Snapshot], None]:
    def change(snap: Snapshot) -> None:
        snap[name] = {}
    return change


def _clear_links(table: str, column: str) -> Callable[[Snapshot], None]:
    return _map(table, column, lambda v: None)


def versions(dialect: str) -> list[tuple[str, dict[str, str], bool, str, list[Callable[[Snapshot], None]]]]:
    """(what, files, allow_data_loss, refusal text or "", changes to the snapshot)."""
    client, sale, task = CLIENT, SALE, TASK
    base = {"client.yaml": client, "product.yaml": PRODUCT, "sale.yaml": sale, "task.yaml": task}
    out: list[tuple[str, dict[str, str], bool, str, list[Callable[[Snapshot], None]]]] = []

    def step(what: str, flag: bool = False, refused: str = "",
             changes: list[Callable[[Snapshot], None]] | None = None) -> None:
        out.append((what, dict(base), flag, refused, changes or []))

    base["client.yaml"] = client = client.replace(
        "city: {type: string}", "city: {type: string, index: true}\n      phone: {type: phone}")
    step("add a field and an index", changes=[_add("client", "phone")])
    base["client.yaml"] = client = client.replace("city: {type: string, index: true}",
                                                  "town: {type: string, index: true, renamed_from: city}")
    step("rename a field", changes=[_rename_column("client", "city", "town")])
    base["sale.yaml"] = sale = sale.replace("amount: {type: integer}", "amount: {type: money}")
    step("integer to money: every value rescales", changes=[_map("sale", "amount", _money(dialect))])
    before_code = client
    base["client.yaml"] = client = client.replace("code: {type: string}", "code: {type: integer}")
    step("string to integer, without the flag", refused="would not convert")
    step("string to integer, with the flag", flag=True, changes=[_map("client", "code", _code)])
    assert before_code != client
    base["client.yaml"] = client = client.replace(
        "town: {type: string, index: true, renamed_from: city}",
        "town: {type: string, index: true, renamed_from: city, required: true}")
    step("required, empty rows, no default", refused="empty")
    base["client.yaml"] = client = client.replace("renamed_from: city, required: true}",
                                                  "renamed_from: city, required: true, default: Unknown}")
    step("required with a default", changes=[_map("client", "town", lambda v: v or "Unknown")])
    base["client.yaml"] = client = client.replace("name: {type: string, required: true}",
                                                  "name: {type: string, required: true, unique: true}")
    step("unique with duplicates", refused="appear more than once")
    base["client.yaml"] = client = client.replace("required: true, unique: true}", "required: true}")
    base["sale.yaml"] = sale = sale.replace("number: {type: string, required: true}",
                                            "number: {type: string, required: true, unique: true}")
    step("unique without duplicates")
    base["supplier.yaml"] = SUPPLIER
    base["task.yaml"] = task = task.replace("client: {to: client, reverse: tasks}",
                                            "client: {to: supplier, reverse: tasks}")
    step("relink to a new entity, without the flag", refused="lose data")
    step("relink to a new entity, with the flag", flag=True,
         changes=[_new_table("supplier"), _clear_links("task", "client_id")])
    base.pop("product.yaml")
    base["item.yaml"] = PRODUCT.replace("entity: product", "entity: item\n    renamed_from: product")
    base["sale.yaml"] = sale = sale.replace("to: product", "to: item")
    step("rename an entity", changes=[_rename_table("product", "item")])
    base["sale.yaml"] = sale = sale.replace("[lead, proposal, negotiation, won, lost]",
                                            "[lead, negotiation, won, lost]")
    step("remove a stage with records in it", refused="moved: {proposal: <stage>}")
    base["sale.yaml"] = sale = sale.replace("final: [won, lost]",
                                            "final: [won, lost]\n      moved: {proposal: negotiation}")
    step("remove a stage, moving its records", changes=[_move_stage("proposal", "negotiation")])
    base["sale.yaml"] = sale = sale.replace("      note: {type: text}\n", "")
    step("remove a field, without the flag", refused="lose data")
    step("remove a field, with the flag", flag=True, changes=[_drop("sale", "note")])
    base.pop("task.yaml")
    base["sale.yaml"] = sale = sale.replace("      products: {to: item, many: true, reverse: sales}\n", "")
    step("remove an entity and a many-to-many link", flag=True,
         changes=[_drop_table("task"), _drop_table("sale__products")])
    base["client.yaml"] = client = client + "    pipeline:\n      stages: [new, active]\n"
    step("an entity gains a pipeline", changes=[_add("client", "stage", "new"), _client_history,
                                                 _add("client", "kt_reached", 1)])
    return out


def _client_history(snap: Snapshot) -> None:
    history = snap["kt_stage_history"]
    for n, record_id in enumerate(sorted(snap["client"]), start=max(history) + 1):
        history[n] = {"id": n, "entity": "client", "record_id": record_id, "at": ANY, "by": None,
                      "pipeline": "default", "from_stage": None, "to_stage": "new", "seconds": None}


def _live(db_url: str, tmp_path: Path, share: int) -> tuple[str, Path]:
    folder = write(tmp_path / "setup", {"client.yaml": CLIENT, "product.yaml": PRODUCT,
                                        "sale.yaml": SALE, "task.yaml": TASK})
    kt = Kartoteka.open(folder, db_url)
    kt.migrate()
    seed(kt, share)
    kt.close()
    return db_url, folder


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> tuple[str, Path]:
    """The populated database: 10,000 records."""
    return _live(db_url, tmp_path, 1)


@pytest.fixture
def live_tenth(db_url: str, tmp_path: Path) -> tuple[str, Path]:
    """The same with a tenth of the records, for a test of one migration's refusal or failure
    (seeding 10,000 records was most of such a test's time)."""
    return _live(db_url, tmp_path, 10)


def test_a_populated_database_through_eighteen_setup_versions(
        live: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = live
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    expected = snapshot(url)
    assert sum(len(expected[t]) for t in ("client", "product", "sale", "task")) == 10_000
    steps = versions(dialect)
    assert len(steps) >= 15
    applied_versions = 1
    for number, (what, files, flag, refused, changes) in enumerate(steps, start=1):
        write(folder, files)
        before_bytes = sqlite_bytes(url) if dialect == "sqlite" else ""
        kt = Kartoteka.open(folder, url)
        try:
            planned = plan(kt.storage, kt.db)
            assert planned.steps, f"v{number} {what}: nothing planned"
            if refused:
                with pytest.raises(MigrationRefused) as raised:
                    apply(kt.storage, kt.db, allow_data_loss=flag, backup_dir=tmp_path / "backups")
                assert refused in str(raised.value), f"v{number} {what}: {raised.value}"
                assert "Nothing was changed" in str(raised.value)
            else:
                done = apply(kt.storage, kt.db, allow_data_loss=flag, backup_dir=tmp_path / "backups")
                applied_versions += 1
                assert (done.backup is not None) == bool(done.plan.data_loss), what
                if done.backup is not None:
                    assert done.backup.exists()
                assert plan(kt.storage, kt.db).up_to_date, f"v{number} {what}: not in step after"
                assert kept_counts(kt) == recounted(kt), f"v{number} {what}: board counters"
        finally:
            kt.close()
        if refused and dialect == "sqlite":
            assert sqlite_bytes(url) == before_bytes, f"v{number} {what}: the file changed"
        for change in changes:
            change(expected)
        assert_same(snapshot(url), expected)
    kt = Kartoteka.open(folder, url)
    try:
        assert len(history(kt.db)) == applied_versions
    finally:
        kt.close()


# -- failing midway --------------------------------------------------------------------------

class Boom(RuntimeError):
    pass


def test_a_migration_failing_midway_leaves_the_database_as_it_was(
        live_tenth: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = live_tenth
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    files = {"client.yaml": CLIENT.replace("rating: {type: integer}", "rating: {type: decimal}")
             .replace("city: {type: string}", "town: {type: string, renamed_from: city}")
             + "      phone: {type: phone, index: true}\n",
             "product.yaml": PRODUCT, "task.yaml": TASK,
             "sale.yaml": SALE.replace("      note: {type: text}\n", "").replace(
                 "[lead, proposal, negotiation, won, lost]", "[lead, negotiation, won, lost]"
             ).replace("final: [won, lost]", "final: [won, lost]\n      moved: {proposal: lead}")}
    write(folder, files)
    before = snapshot(url)
    before_bytes = sqlite_bytes(url) if dialect == "sqlite" else ""
    kt = Kartoteka.open(folder, url)
    seen: list[Step] = []

    def fail_late(step: Step) -> None:
        seen.append(step)
        if len(seen) == len(planned.steps) - 1:
            raise Boom("injected failure")

    try:
        planned = plan(kt.storage, kt.db)
        assert len(planned.steps) >= 5
        with pytest.raises(Boom):
            apply(kt.storage, kt.db, allow_data_loss=True, backup_dir=tmp_path / "b", on_step=fail_late)
        assert len(seen) == len(planned.steps) - 1
        assert [str(s) for s in plan(kt.storage, kt.db).steps] == [str(s) for s in planned.steps]
    finally:
        kt.close()
    if dialect == "sqlite":
        assert sqlite_bytes(url) == before_bytes
    assert_same(snapshot(url), before)


# -- hooks and refusals ----------------------------------------------------------------------

def test_a_derived_column_is_filled_by_its_backfill_hook_in_the_same_transaction(
        live_tenth: tuple[str, Path]) -> None:
    """A system column another module adds (say, days in the current stage) carries
    `info["backfill"]`; migrate calls it right after adding the column."""
    url, folder = live_tenth
    calls: list[str] = []

    def backfill(conn: sa.Connection, storage: Any, entity_table: Any) -> None:
        calls.append(entity_table.name)
        table = entity_table.table
        conn.execute(sa.update(table).values(kt_moves=sa.select(sa.func.count()).where(
            storage.stage_history.c.entity == entity_table.name,
            storage.stage_history.c.record_id == table.c.id).scalar_subquery()))

    kt = Kartoteka.open(folder, url)
    try:
        kt.storage["sale"].table.append_column(
            sa.Column("kt_moves", sa.Integer(), nullable=False, info={"backfill": backfill}))
        planned = plan(kt.storage, kt.db)
        assert [str(s) for s in planned.steps] == [
            "add column sale.kt_moves (600 existing rows filled from their history)"]
        apply(kt.storage, kt.db)
        assert calls == ["sale"]
        with kt.db.read(system="test") as conn:
            moves = conn.execute(sa.text("SELECT DISTINCT kt_moves FROM sale")).scalars().all()
        assert moves == [1]
        assert plan(kt.storage, kt.db).up_to_date
    finally:
        kt.close()


def test_an_entity_renamed_onto_an_existing_table_is_refused(live_tenth: tuple[str, Path]) -> None:
    url, folder = live_tenth
    write(folder, {"client.yaml": CLIENT, "product.yaml": PRODUCT, "sale.yaml": SALE,
                   "task.yaml": TASK, "supplier.yaml": SUPPLIER})
    kt = Kartoteka.open(folder, url)
    kt.migrate()
    kt.close()
    write(folder, {"client.yaml": CLIENT, "sale.yaml": SALE.replace("to: product", "to: supplier"),
                   "task.yaml": TASK,
                   "supplier.yaml": SUPPLIER.replace("entity: supplier",
                                                     "entity: supplier\n    renamed_from: product")})
    before = snapshot(url)
    kt = Kartoteka.open(folder, url)
    try:
        with pytest.raises(MigrationRefused) as refused:
            apply(kt.storage, kt.db, allow_data_loss=True)
        assert ("rename entity product to supplier: the database already has a table supplier"
                in str(refused.value))
    finally:
        kt.close()
    assert_same(snapshot(url), before)


def test_a_database_older_than_the_time_in_stage_counters_gets_them_counted(
        db_url: str) -> None:
    """A database made before kt_stage_time existed: migrate creates the table and counts
    it from the stage history at once, so the fast funnel agrees with the exact one."""
    from tests.conftest import DEFAULT_SETUP

    kt = Kartoteka.open(DEFAULT_SETUP, db_url)
    try:
        kt.migrate()
        client = kt.records.create("client", {"name": "Ромашка"})
        for n in range(6):
            sale = kt.records.create("sale", {"number": f"S-{n}", "client": client["id"]})
            for stage in ("proposal", "negotiation")[: n % 3]:
                kt.stages.move("sale", sale["id"], {"to": stage})
        exact = kt.reports.funnel("sale", [("id[gte]", "1")])
        with kt.db.write(system="test") as conn:
            conn.execute(sa.text("DROP TABLE kt_stage_time"))
        planned = [str(step) for step in kt.plan().steps]
        assert any("kt_stage_time" in line for line in planned), planned
        kt.migrate()
        fast = kt.reports.funnel("sale", [])
        assert [s["time_in_stage"] for s in fast["stages"]] == \
            [s["time_in_stage"] for s in exact["stages"]]
        assert fast["stages"][0]["time_in_stage"]["exits"] == 4
    finally:
        kt.close()


def test_an_entity_added_to_a_migrated_setup_starts_at_id_1(
        make_kt: Callable[..., Kartoteka], tmp_path: Path) -> None:
    """A second migration of a database — the default setup and then one entity more — is
    recorded after the first (also on a PostgreSQL database the tests reused: its kept
    migration history's numbers go on), and the new entity's records start at 1."""
    make_kt()
    folder = tmp_path / "more"
    shutil.copytree(DEFAULT_SETUP, folder)
    (folder / "thing.yaml").write_text("fields:\n  name: {type: string, label: {ru: Имя}}\n",
                                       encoding="utf-8")
    again = make_kt(folder)
    assert again.records.create("thing", {"name": "Вещь 物"})["id"] == 1
    assert len(history(again.db)) == 2
