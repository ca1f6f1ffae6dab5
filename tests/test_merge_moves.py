"""A merge moves everything the merged records had to the survivor, on SQLite and
PostgreSQL: stage moves (and their time in stage, the funnel's counters equal to a
recomputation from the history), automation runs and events, notifications and fired
date triggers — and nothing of theirs points at a deleted id but their deletion."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.storage.journal import rebuild_stage_time
from tests.callers import Caller, made

SETUP = {
    "setup.yaml": """
        name: Merges
        languages: [en, ru]
        roles:
          manager:
            deal: {create: all, read: all, update: all, delete: all}
        automations:
          contract_entered:
            entity: deal
            on: stage_entered
            stage: contract
            do:
              - notify: {to: [$owner], subject: "{title} is in contract"}
    """,
    "deal.yaml": """
        owner: true
        title: "{title}"
        fields:
          title: {type: string, required: true}
          inn: string
        pipeline:
          stages: [new, contract, won, lost]
          final: [won, lost]
          transitions: free
        duplicates:
          rules:
            same_inn: {exact: inn}
    """,
}
CONFIRM = {"X-Confirm-Duplicate": "true"}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


def counters(kt: Kartoteka) -> list[tuple[Any, ...]]:
    table = kt.storage.stage_time
    with kt.db.read() as conn:
        return sorted(tuple(row) for row in conn.execute(
            sa.select(table).where(table.c.exits != 0)))


def rows_of(kt: Kartoteka, table: sa.Table, record_id: int) -> int:
    with kt.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(
            table.c.entity == "deal", table.c.record_id == record_id)).scalar_one())


def test_a_merge_moves_stage_moves_runs_and_notifications(kt: Kartoteka) -> None:
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        _, token = kt.users.add("anna@example.com", ["manager"])
        anna = Caller(http, token)
        deals = [made(anna.post("/api/deal", json={"title": title, "inn": "7701000001"},
                                headers=CONFIRM))
                 for title in ("Поставка", "Поставка (дубль)", "تحویل 合同")]
        survivor, other, third = (d["id"] for d in deals)
        assert survivor % 8 != other % 8  # their time in stage is kept in different shards
        for deal, stages in ((survivor, ["contract"]), (other, ["contract", "won"]),
                             (third, ["contract", "lost"])):
            for stage in stages:
                made(anna.post(f"/api/deal/{deal}/stage", json={"to": stage}), 200)
        while kt.automations.run_pending():
            pass
        # times in stage that tell the records apart, then the counters counted again
        history = kt.storage.stage_history
        with kt.db.write(system="test") as conn:
            conn.execute(sa.update(history).where(history.c.from_stage.is_not(None)).values(
                seconds=history.c.record_id * 1000 + sa.func.length(history.c.to_stage)))
            rebuild_stage_time(conn, kt.storage)
            # the survivor entered its stage an hour ago; the others moved since
            now = dt.datetime.now(dt.UTC)
            conn.execute(sa.update(history).values(at=now - dt.timedelta(minutes=10)))
            conn.execute(sa.update(history).where(history.c.to_stage == "contract").values(
                at=now - dt.timedelta(hours=2)))
            conn.execute(sa.update(history).where(
                history.c.record_id == survivor, history.c.to_stage == "contract").values(
                at=now - dt.timedelta(hours=1)))
        funnel = [s["time_in_stage"] for s in made(anna.get("/api/deal/funnel"), 200)["stages"]]
        before = counters(kt)
        notified = made(anna.get("/api/me/notifications"), 200)["items"]
        assert len(notified) == 3

        merged = made(anna.post(f"/api/deal/{survivor}/merge",
                                json={"others": [other, third]}), 200)
        assert merged["id"] == survivor

        # the survivor's timeline: every stage move and automation run of the three
        timeline = made(anna.get(f"/api/deal/{survivor}/timeline?limit=100"), 200)["items"]
        moves = sorted((i["from"] or "", i["to"]) for i in timeline if i["type"] == "stage")
        assert moves == sorted([("", "new"), ("new", "contract"), ("contract", "won"),
                                ("", "new"), ("new", "contract"),
                                ("", "new"), ("new", "contract"), ("contract", "lost")])
        runs = [i for i in timeline if i["type"] == "automation"]
        assert [r["automation"] for r in runs] == ["contract_entered"] * 3
        # the notifications about the merged records now lead to the survivor
        after = made(anna.get("/api/me/notifications"), 200)["items"]
        assert {(n["entity"], n["record_id"]) for n in after} == {("deal", survivor)}
        assert sorted(n["subject"] for n in after) == sorted(n["subject"] for n in notified)

        # the funnel's time in stage is unchanged, and the counters equal a recomputation
        # (one record now: `reached` counts records, the time spent stays)
        assert [s["time_in_stage"] for s in made(anna.get("/api/deal/funnel"), 200)["stages"]
                ] == funnel
        kept = counters(kt)
        assert all(r[3] == survivor % 8 for r in kept)  # all the survivor's now
        with kt.db.write(system="test") as conn:
            rebuild_stage_time(conn, kt.storage)
        assert counters(kt) == kept
        assert {(r[1], r[2]) for r in before} == {(r[1], r[2]) for r in kept}
        for stage in {r[2] for r in before}:
            assert sum(r[4] for r in before if r[2] == stage) == sum(
                r[4] for r in kept if r[2] == stage)
            assert sum(r[5] for r in before if r[2] == stage) == sum(
                r[5] for r in kept if r[2] == stage)

        # nothing of theirs is left under their ids, but their deletion
        storage = kt.storage
        for gone in (other, third):
            for table in (storage.stage_history, storage.automation_runs,
                          storage.notifications, storage.activities):
                assert rows_of(kt, table, gone) == 0, table.name
            with kt.db.read() as conn:
                kinds = conn.execute(sa.select(storage.events.c.kind).where(
                    storage.events.c.record_id == gone)).scalars().all()
                actions = conn.execute(sa.select(storage.changes.c.action).where(
                    storage.changes.c.record_id == gone)).scalars().all()
            assert set(kinds) <= {"delete"} and actions == ["delete"]

        # a move of the survivor afterwards counts its time since it entered its stage,
        # not since a merged record's later move into another one
        made(anna.post(f"/api/deal/{survivor}/stage", json={"to": "won"}), 200)
        timeline = made(anna.get(f"/api/deal/{survivor}/timeline?limit=1"), 200)["items"]
        assert timeline[0]["to"] == "won" and 3500 < timeline[0]["seconds_in_previous"] < 3700
        moved = counters(kt)
        with kt.db.write(system="test") as conn:
            rebuild_stage_time(conn, kt.storage)
        assert counters(kt) == moved


def test_a_duplicate_made_later_does_not_cut_the_survivors_time_in_stage(
        kt: Kartoteka) -> None:
    """The common merge: a record waits in the first stage, its duplicate is made later
    (entering the same stage then). After the merge, the survivor's next move counts its
    time in the stage from its own entry, not from the duplicate's."""
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        _, token = kt.users.add("anna@example.com", ["manager"])
        anna = Caller(http, token)
        survivor, later = (made(anna.post("/api/deal", json={"title": title, "inn": "7701000001"},
                                          headers=CONFIRM))["id"]
                           for title in ("Ромашка", "Ромашка 2"))
        history = kt.storage.stage_history
        now = dt.datetime.now(dt.UTC)
        with kt.db.write(system="test") as conn:
            for record_id, ago in ((survivor, 4), (later, 1)):  # hours in `new`
                conn.execute(sa.update(history).where(history.c.record_id == record_id)
                             .values(at=now - dt.timedelta(hours=ago)))
        made(anna.post(f"/api/deal/{survivor}/merge", json={"others": [later]}), 200)
        made(anna.post(f"/api/deal/{survivor}/stage", json={"to": "contract"}), 200)
        moved = made(anna.get(f"/api/deal/{survivor}/timeline?limit=1"), 200)["items"][0]
        assert moved["to"] == "contract"
        assert 4 * 3600 - 60 < moved["seconds_in_previous"] < 4 * 3600 + 60
        assert rows_of(kt, history, later) == 0
        kept = counters(kt)
        with kt.db.write(system="test") as conn:
            rebuild_stage_time(conn, kt.storage)
        assert counters(kt) == kept


def test_an_event_not_delivered_yet_stays_with_the_merged_record(kt: Kartoteka) -> None:
    """A duplicate moved to `contract` and merged before the worker ran: its automation does
    not notify about the survivor (the survivor never entered `contract`)."""
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        _, token = kt.users.add("anna@example.com", ["manager"])
        anna = Caller(http, token)
        survivor, other = (made(anna.post("/api/deal", json={"title": title, "inn": "7701000002"},
                                          headers=CONFIRM))["id"]
                           for title in ("Лотос", "Лотос (дубль)"))
        made(anna.post(f"/api/deal/{other}/stage", json={"to": "contract"}), 200)
        made(anna.post(f"/api/deal/{survivor}/merge", json={"others": [other]}), 200)
        while kt.automations.run_pending():
            pass
        assert made(anna.get("/api/me/notifications"), 200)["items"] == []
        events = kt.storage.events
        with kt.db.read() as conn:
            kinds = conn.execute(sa.select(events.c.kind).where(
                events.c.record_id == other)).scalars().all()
        assert sorted(kinds) == ["stage", "stage"]  # its creation and its move, undelivered


def test_a_merge_without_pipeline_or_automations_moves_what_there_is(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup({
        "setup.yaml": "name: Plain\nlanguages: [ru]\n",
        "client.yaml": ("fields:\n  name: {type: string, required: true}\n"
                        "duplicates:\n  rules:\n    same_name: {exact: name}\n"),
    }))
    survivor = kt.records.create("client", {"name": "Ромашка"})
    with kt.records.duplicates.confirmed("all"):
        other = kt.records.create("client", {"name": "ромашка"})
    merged = kt.merger.merge("client", survivor["id"], {"others": [other["id"]]})
    assert merged["id"] == survivor["id"]
    assert kt.records.list_page("client", []).total == 1


def test_a_date_trigger_that_fired_for_a_merged_record_does_not_fire_again(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """The merge fills the survivor's empty date from the other, whose reminder has gone
    out: the survivor is not reminded twice, and the fired mark is the survivor's."""
    kt = make_kt(write_setup({
        "setup.yaml": """
            name: Renewals
            languages: [ru]
            timezone: Europe/Moscow
            roles:
              manager:
                "*": {create: all, read: all, update: all, delete: all}
            automations:
              renewal:
                entity: contract
                on: date
                date: valid_to
                before: 3 days
                do:
                  - notify: {to: [$owner], subject: "Продлить {number} до {valid_to}"}
        """,
        "contract.yaml": """
            owner: true
            fields:
              number: {type: string, required: true}
              valid_to: date
            duplicates:
              rules:
                same_number: {exact: number}
        """,
    }, "renewals"))
    owner, _ = kt.users.add("anna@example.com", ["manager"], language="ru")
    msk = dt.timezone(dt.timedelta(hours=3))
    kt.records.clock = lambda: dt.datetime(2026, 12, 1, 12, 0, tzinfo=msk)
    survivor = kt.records.create("contract", {"number": "Д-1"}, owner=owner.id)
    with kt.records.duplicates.confirmed("all"):
        other = kt.records.create("contract", {"number": "д-1", "valid_to": "2026-12-05"},
                                  owner=owner.id)
    kt.records.clock = lambda: dt.datetime(2026, 12, 2, 9, 0, tzinfo=msk)
    while kt.automations.run_pending():
        pass
    table, fired = kt.storage.notifications, kt.storage.fired
    with kt.db.read() as conn:
        assert conn.execute(sa.select(table.c.subject)).scalars().all() == [
            "Продлить д-1 до 05.12.2026"]
    merged = kt.merger.merge("contract", survivor["id"], {"others": [other["id"]]})
    assert merged["valid_to"] == "2026-12-05"
    kt.records.clock = lambda: dt.datetime(2026, 12, 3, 9, 0, tzinfo=msk)
    while kt.automations.run_pending():
        pass
    with kt.db.read() as conn:
        assert conn.execute(sa.select(table.c.record_id)).scalars().all() == [survivor["id"]]
        assert set(conn.execute(sa.select(fired.c.record_id)).scalars()) == {survivor["id"]}
