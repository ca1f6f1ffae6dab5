"""The board's kept counts and sums (engine/storage/stage_counts.py), on both databases.

Whatever writes the records — single creates, patches, stage moves, pipeline switches,
deletes, bulk calls, imports, merges, the foreign keys' cascading deletes, concurrent
writers, migrations that add stages and money fields — the unfiltered board (read from
the counters) answers exactly as the board that groups the records (forced by a filter
that selects every record), and recounting from scratch changes no counter.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.exchange.files import open_table
from engine.exchange.imports import ImportOptions
from engine.storage import stage_counts
from tests.races import together

Record = dict[str, Any]

DEALS = """
    entity: deal
    owner: true
    fields:
      code:   {type: string, required: true, unique: true}
      kind:   {type: choice, options: [sale, rent]}
      amount: {type: money}
      fee:    {type: money, places: 3}
      note:   {type: text}
    duplicates:
      rules:
        same_note: {exact: note}
    links:
      account: {to: account, on_delete: cascade}
    pipelines:
      sale:
        stages: [new, offer, signed, {name: won, category: won}, {name: lost, category: lost}]
        final: [won, lost]
      rent:
        stages: [viewing, {name: signed, label: {en: Lease signed, ru: Договор, zh: 签约}},
                 {name: ended, category: closed}]
        final: [ended]
    pipeline_by: kind
"""
ACCOUNTS = """
    entity: account
    fields:
      name: {type: string, required: true}
"""
#: the largest amount of the default 18 digits: a few of them overflow 64 bits on SQLite
MAX = "9999999999999999.99"


def _setup(write_setup: Callable[..., Path], deals: str = DEALS, name: str = "setup") -> Path:
    return write_setup({"deal.yaml": deals, "account.yaml": ACCOUNTS}, name)


def _api(kt: Kartoteka) -> TestClient:
    return TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False)


def _ok(response: Any, *statuses: int) -> Record:
    assert response.status_code in (statuses or (200, 201)), response.text
    return dict(response.json()) if response.content else {}


def _boards_agree(api: TestClient, kt: Kartoteka) -> None:
    """Each pipeline's board from the counters equals the board grouped from the records,
    and a recount from scratch leaves every counter as it was."""
    assert stage_counts_kept(kt)
    for pipeline in ("sale", "rent"):
        kept = _ok(api.get("/api/deal/board", params={"pipeline": pipeline}))
        grouped = _ok(api.get("/api/deal/board", params={"pipeline": pipeline, "id[gte]": "1"}))
        assert kept == grouped
    before = _counters(kt)
    with kt.db.write(system="test") as conn:
        stage_counts.recount(conn, kt.storage)
    assert _counters(kt) == before


def stage_counts_kept(kt: Kartoteka) -> bool:
    with kt.db.read(system="test") as conn:
        return stage_counts.counted(conn, kt.storage, "deal")


def _counters(kt: Kartoteka) -> dict[tuple[str, str, str], tuple[int, int]]:
    """The counters summed over shards, zero rows left out (a recount writes none)."""
    c = kt.storage.stage_counts.c
    with kt.db.read(system="test") as conn:
        rows = conn.execute(sa.select(c.pipeline, c.stage, c.field, sa.func.sum(c.records),
                                      sa.func.sum(c.high) * 2 ** 32 + sa.func.sum(c.low))
                            .group_by(c.pipeline, c.stage, c.field)).all()
    return {(p, s, f): (int(n), int(total)) for p, s, f, n, total in rows if n or total}


def _column(board: Record, stage: str) -> Record:
    return next(c for c in board["columns"] if c["stage"] == stage)


def test_kept_board_equals_a_recount_after_random_work(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(_setup(write_setup))
    rng = random.Random(20261205)
    stages = {name: p.stage_names for name, p in kt.storage["deal"].spec.pipeline.pipelines.items()}  # type: ignore[union-attr]
    amounts = [None, "0", "0.01", "1234.50", "-3.00", MAX, "77.77"]
    with _api(kt) as api:
        accounts = [_ok(api.post("/api/account", json={"name": n}))["id"]
                    for n in ("Ромашка", "北京贸易", "شرکت پارس")]
        alive: dict[int, str] = {}  # id: kind
        merged = 0
        for step in range(140):
            action = rng.random()
            if action < 0.25 or len(alive) < 4:
                kind = rng.choice(["sale", "rent", None])
                body = {"code": f"D-{step}", "account": rng.choice(accounts),
                        "amount": rng.choice(amounts), "fee": rng.choice([None, "0.125", "9.999"]),
                        **({"kind": kind} if kind else {})}
                alive[_ok(api.post("/api/deal", json=body))["id"]] = kind or "sale"
                continue
            record = rng.choice(sorted(alive))
            if action < 0.55:
                response = api.post(f"/api/deal/{record}/stage",
                                    json={"to": rng.choice(stages[alive[record]])})
                _ok(response, 200, 409, 422)
            elif action < 0.7:  # an amount, a pipeline switch, or a change counted nowhere
                change = rng.choice([{"amount": rng.choice(amounts)}, {"fee": "1.001"},
                                     {"kind": "rent" if alive[record] == "sale" else "sale"},
                                     {"note": f"Примечание {step} 备注"}])
                if _ok(api.patch(f"/api/deal/{record}", json=change), 200, 422) and "kind" in change:
                    alive[record] = change["kind"]
            elif action < 0.8:  # bulk: two creates and an update in one call
                rows = [{"code": f"B-{step}-{n}", "amount": rng.choice(amounts)} for n in range(2)]
                rows.append({"id": record, "amount": "5.00"})
                for row in _ok(api.post("/api/deal/bulk", json={"rows": rows}))["rows"]:
                    alive.setdefault(row["id"], "sale")
            elif action < 0.87:  # a merge deletes the others
                others = [r for r in sorted(alive) if r != record][:2]
                response = api.post(f"/api/deal/{record}/merge", json={"others": others})
                _ok(response, 200, 422)  # 422: the survivor's pipeline is final, a kind differs
                for other in others if response.status_code == 200 else ():
                    del alive[other]
                merged += response.status_code == 200
            else:
                _ok(api.delete(f"/api/deal/{record}"), 204)
                del alive[record]
        assert merged
        _boards_agree(api, kt)

        # an import (the driver's own inserts, engine/storage/fast_insert.py)
        csv = "code,kind,amount,fee\n" + "".join(
            f"I-{n},{rng.choice(['sale', 'rent'])},{rng.choice(['', '10.00', MAX])},0.5\n"
            for n in range(30))
        result = kt.imports.run("deal", open_table(io.BytesIO(csv.encode()), "deals.csv"),
                                ImportOptions())
        assert result.progress.failed == 0
        _boards_agree(api, kt)

        # a cascading delete, done by the database's foreign key
        _ok(api.delete(f"/api/account/{accounts[0]}"), 204)
        _boards_agree(api, kt)
        assert sum(c["count"] for p in ("sale", "rent") for c in _ok(
            api.get("/api/deal/board", params={"pipeline": p}))["columns"]) == \
            _ok(api.get("/api/deal", params={"limit": "1"}))["total"]


def test_sums_past_64_bits_stay_exact(make_kt: Callable[..., Kartoteka],
                                      write_setup: Callable[..., Path]) -> None:
    kt = make_kt(_setup(write_setup))
    with _api(kt) as api:
        for n in range(5):
            _ok(api.post("/api/deal", json={"code": f"M-{n}", "amount": MAX, "fee": "0.001"}))
        column = _column(_ok(api.get("/api/deal/board")), "new")
        assert column["count"] == 5
        assert Decimal(column["sums"]["amount"]) == Decimal(MAX) * 5
        assert column["sums"]["fee"] == "0.005"
        _boards_agree(api, kt)


def test_migrations_that_change_stages_and_money_fields_recount(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    # a setup of this test alone: the PostgreSQL fixture reuses a database emptied of an
    # identical setup, with its kt_setup_history sequence reset, which a second migration
    # in the same test then collides with (tests/pg.py `reuse`)
    kt = make_kt(_setup(write_setup, DEALS.replace("note:   {type: text}",
                                                   "note:   {type: text}\n      memo: text")))
    with _api(kt) as api:
        for n in range(4):
            _ok(api.post("/api/deal", json={"code": f"D-{n}", "amount": "10.00", "fee": "1.000"}))
        _ok(api.post("/api/deal/1/stage", json={"to": "offer"}))
    with kt.db.read(system="test") as conn:
        before = stage_counts._installed(conn, None)
    # a stage more, `fee` no longer money-summed (it becomes a plain decimal), a new money field
    changed = DEALS.replace("note:   {type: text}", "note:   {type: text}\n      memo: text")
    changed = changed.replace("stages: [new, offer,", "stages: [new, call, offer,").replace(
        "fee:    {type: money, places: 3}", "fee:    {type: decimal, places: 3}\n"
        "      bonus:  {type: money}")
    kt = make_kt(_setup(write_setup, changed, "changed"))
    with kt.db.read(system="test") as conn:
        after = stage_counts._installed(conn, None)
    assert before and after and not before & after  # the triggers' text changed: new names
    with _api(kt) as api:
        board = _ok(api.get("/api/deal/board"))
        assert [c["stage"] for c in board["columns"]][:3] == ["new", "call", "offer"]
        assert _column(board, "new")["count"] == 3 and _column(board, "offer")["count"] == 1
        assert _column(board, "new")["sums"] == {"amount": "30.00", "bonus": "0.00"}
        made = _ok(api.post("/api/deal", json={"code": "D-9", "bonus": "2.50"}))
        _ok(api.post(f"/api/deal/{made['id']}/stage", json={"to": "call"}))
        assert _column(_ok(api.get("/api/deal/board")), "call")["sums"]["bonus"] == "2.50"
        _boards_agree(api, kt)


def test_without_its_triggers_the_board_groups_and_migrate_puts_them_back(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """A database whose counters are not kept (triggers dropped by hand, or built another
    way) still gets an exact board; `kartoteka migrate` installs them and recounts."""
    kt = make_kt(_setup(write_setup))
    with _api(kt) as api:
        _ok(api.post("/api/deal", json={"code": "D-1", "amount": "10.00"}))
        with kt.db.write(system="test") as conn:
            stage_counts._drop(conn, stage_counts._installed(conn, None))
        _ok(api.post("/api/deal", json={"code": "D-2", "amount": "5.00"}))  # not counted
        assert not stage_counts_kept(kt)
        assert _column(_ok(api.get("/api/deal/board")), "new")["sums"]["amount"] == "15.00"
        assert kt.migrate().up_to_date
        assert stage_counts_kept(kt)
        assert _column(_ok(api.get("/api/deal/board")), "new")["sums"]["amount"] == "15.00"
        _boards_agree(api, kt)


def test_a_scoped_caller_never_reads_everyones_counters(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    roles = {"setup.yaml": "name: t\nroles:\n  seller:\n    deal: {create: all, read: own}\n"
                           "    account: {read: all}\n"}
    kt = make_kt(write_setup({"deal.yaml": DEALS, "account.yaml": ACCOUNTS, **roles}))
    seller, _ = kt.users.add("seller@example.com", ["seller"])
    kt.records.create("deal", {"code": "D-1", "amount": "1.00"})
    kt.records.create("deal", {"code": "D-2", "amount": "2.00"}, owner=seller.id)
    with kt.acting.as_user(seller):
        column = _column(kt.reports.board("deal", []), "new")
    assert (column["count"], column["sums"]["amount"]) == (1, "2.00")
    assert _column(kt.reports.board("deal", []), "new")["count"] == 2


def test_concurrent_writers_keep_the_counts_exact(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """Threads create, move and delete records of the same stages at the same moment (on
    PostgreSQL: concurrent transactions on the same counter rows): no lost update, no
    deadlock."""
    kt = make_kt(_setup(write_setup))
    other = make_kt(_setup(write_setup))  # a second engine: another API process

    def work(engine: Kartoteka, tag: int) -> Callable[[], int]:
        def run() -> int:
            done = 0
            for n in range(12):
                made = engine.records.create("deal", {"code": f"T{tag}-{n}", "amount": "1.50"})
                engine.stages.move("deal", made["id"], {"to": "offer" if n % 2 else "signed"})
                if n % 3 == 0:
                    engine.records.delete("deal", made["id"])
                done += 1
            return done
        return run

    assert together([work(kt if n % 2 else other, n) for n in range(6)]) == [12] * 6
    with _api(kt) as api:
        board = _ok(api.get("/api/deal/board"))
        assert sum(c["count"] for c in board["columns"]) == 6 * 8
        # in offer: odd n but 3 and 9, four per thread
        assert _column(board, "offer")["sums"]["amount"] == f"{Decimal('1.50') * 6 * 4:.2f}"
        _boards_agree(api, kt)


@pytest.mark.parametrize("params", [{"owner": "1"}, {"account": "1"},
                                    {"created_at[gte]": "2000-01-01T00:00:00Z"}])
def test_filtered_boards_group_the_selected_records(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        params: dict[str, str]) -> None:
    """Owner, link and period filters: read from their covering indexes, never the counters."""
    kt = make_kt(_setup(write_setup))
    with _api(kt) as api:
        account = _ok(api.post("/api/account", json={"name": "A"}))["id"]
        _ok(api.post("/api/deal", json={"code": "D-1", "amount": "3.00", "account": account}))
        with kt.db.write(system="test") as conn:
            conn.execute(sa.update(kt.storage["deal"].table).values(owner=1))
        _ok(api.post("/api/deal", json={"code": "D-2", "amount": "4.00"}))
        column = _column(_ok(api.get("/api/deal/board", params=params)), "new")
        expected = (2, "7.00") if "created_at[gte]" in params else (1, "3.00")
        assert (column["count"], column["sums"]["amount"]) == expected


def test_a_migration_renaming_a_money_field_and_moving_a_stage_recounts(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """The steps run without the triggers (a renamed column named in one would break the
    stage move's UPDATE after it), which come back, recounted, in the same transaction."""
    first = DEALS.replace("note:   {type: text}", "note:   {type: text}\n      memo2: text")
    kt = make_kt(_setup(write_setup, first))
    for n in range(3):
        made = kt.records.create("deal", {"code": f"D-{n}", "amount": "2.00"})
        kt.stages.move("deal", made["id"], {"to": "offer"})
    changed = first.replace("amount: {type: money}", "total:  {type: money, renamed_from: amount}")
    changed = changed.replace("stages: [new, offer,", "stages: [new,").replace(
        "final: [won, lost]", "final: [won, lost]\n        moved: {offer: new}")
    kt = make_kt(_setup(write_setup, changed, "changed"))
    with _api(kt) as api:
        column = _column(_ok(api.get("/api/deal/board")), "new")
        assert (column["count"], column["sums"]["total"]) == (3, "6.00")
        _boards_agree(api, kt)


def test_a_long_transaction_does_not_hold_other_writers_on_postgresql(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path], db_url: str) -> None:
    """An open transaction that created records (an import's, say) holds only the counter
    rows of its connection's shard: a create on another connection does not wait for it."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time")
    kt = make_kt(_setup(write_setup))
    table = kt.storage["deal"].table
    engine = sa.create_engine(kt.db.engine.url, pool_size=20)
    held = [engine.connect() for _ in range(20)]
    try:
        shards = []
        for conn in held:
            shards.append(int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
                          % stage_counts.SHARDS)
            conn.rollback()
        first = held[0]
        second = next(c for c, n in zip(held, shards, strict=True) if n != shards[0])
        now = dt.datetime.now(dt.UTC)
        row = {"created_at": now, "updated_at": now, "version": 1, "stage": "new"}
        with first.begin():
            # as many records as shards: had the shard been the record's, every one held
            first.execute(sa.insert(table), [{"code": f"LONG-{n}", "amount": 1, **row}
                                             for n in range(stage_counts.SHARDS)])
            with second.begin():  # the same stage, the same counters' keys, another shard
                second.exec_driver_sql("SET LOCAL lock_timeout = '3s'")
                second.execute(sa.insert(table).values(code="OTHER-1", amount=2, **row))
        with _api(kt) as api:
            column = _column(_ok(api.get("/api/deal/board")), "new")
            assert (column["count"], column["sums"]["amount"]) == (stage_counts.SHARDS + 1,
                                                                  f"{stage_counts.SHARDS + 2}.00")
            _boards_agree(api, kt)
    finally:
        for conn in held:
            conn.close()
        engine.dispose()
