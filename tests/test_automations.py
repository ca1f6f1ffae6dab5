"""Automations on both databases (issue 11): a change writes its event in its own
transaction, the worker runs the automations it triggers once, and what they did is on
the record's timeline; failures are retried with backoff and end as dead letters an admin
retries; the loop guard stops two automations feeding each other; notifications reach
only those who may read the record, with hidden fields left out; a broken automation is
a located setup error."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from engine.automations.worker import MAX_ATTEMPTS, MAX_DEPTH, ActionContext
from engine.core import Settings
from engine.setup.loader import load_setup
from engine.storage.database import DatabaseSettings
from tests.callers import Caller, made

SETUP = {
    "setup.yaml": """
        name: Automations
        languages: [en, ru]
        roles:
          director:
            "*": {create: all, read: all, update: all, delete: all, reassign: all}
          manager:
            client: {create: all, read: own, update: own}
            deal: {create: all, read: own, update: own, hidden: [margin]}
            task: {create: all, read: own, update: own}
          lawyer:
            deal: {read: all}
            client: {read: all}
            task: {create: all, read: own, update: own}
        automations:
          contract_approval:
            label: {en: Contract approval, ru: Согласование договора}
            entity: deal
            on: stage_entered
            stage: contract
            if: {amount: {gte: 1000}}
            do:
              - create:
                  entity: task
                  values: {subject: "Approve the contract of {title} ({client.name})",
                           due_at: now+2d, deal: $record}
                  owner: {role: lawyer}
              - set: {status: review}
              - set: {link: client, values: {tier: gold}}
              - notify:
                  to: [$owner, {role: director}, {role: lawyer}]
                  subject: {en: "{title} is in contract", ru: "{title}: договор"}
                  text: "Margin {margin}, amount {amount}"
          dead_deal:
            entity: deal
            on: updated
            from: {status: open}
            to: {status: dead}
            do: [{move: lost}]
          big_amount:
            entity: deal
            on: updated
            changed: [amount]
            if: {amount: {gte: 100000}}
            do:
              - notify: {to: [{role: director}], subject: "Big deal {title}: {amount}"}
          ping:
            entity: deal
            on: updated
            changed: [note_a]
            do: [{set: {note_b: "{note_a}b"}}]
          pong:
            entity: deal
            on: updated
            changed: [note_b]
            do: [{set: {note_a: "{note_b}a"}}]
          welcome:
            entity: client
            on: created
            do:
              - create: {entity: task, values: {subject: "Call {name}", client: $record}, owner: $owner}
    """,
    "client.yaml": """
        entity: client
        owner: true
        fields:
          name: {type: string, required: true}
          tier: {type: choice, options: [basic, gold]}
    """,
    "deal.yaml": """
        entity: deal
        owner: true
        fields:
          title: {type: string, required: true}
          amount: {type: money}
          margin: {type: money}
          status: {type: choice, options: [open, review, dead], default: open}
          note_a: {type: string, max_length: 2000}
          note_b: {type: string, max_length: 2000}
        links:
          client: {to: client}
        pipeline:
          stages: [new, contract, won, lost]
          final: [won, lost]
          transitions: free
    """,
    "task.yaml": """
        entity: task
        owner: true
        fields:
          subject: {type: string, required: true, max_length: 300}
          due_at: {type: datetime}
        links:
          deal: {to: deal}
          client: {to: client}
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[[dict[str, str]], Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


@pytest.fixture
def people(kt: Kartoteka) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http:
        callers: dict[str, Any] = {"http": http}
        for email, roles, team in (("boss@example.com", ["director"], None),
                                   ("anna@example.com", ["manager"], "north"),
                                   ("oleg@example.com", ["manager"], "south"),
                                   ("lena@example.com", ["lawyer"], None),
                                   ("igor@example.com", ["lawyer"], None),
                                   ("root@example.com", ["admin"], None)):
            user, token = kt.users.add(email, roles, team=team)
            callers[email.split("@")[0]] = Caller(http, token)
            callers[email.split("@")[0] + "_id"] = user.id
        yield callers


def events(kt: Kartoteka, **where: Any) -> list[dict[str, Any]]:
    table = kt.storage.events
    with kt.db.read() as conn:
        statement = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        return [dict(r) for r in conn.execute(statement.order_by(table.c.id)).mappings()]


def test_a_stage_entered_runs_its_actions_once(kt: Kartoteka, people: dict[str, Any]) -> None:
    anna = people["anna"]
    client = made(anna.post("/api/client", json={"name": "Ромашка"}))
    kt.automations.run_pending()  # the welcome task
    deal = made(people["boss"].post("/api/deal", json={
        "title": "Поставка 合同", "amount": "5000.00", "margin": "700.00", "client": client["id"],
        "owner": people["anna_id"]}))
    moved = made(anna.post(f"/api/deal/{deal['id']}/stage", json={"to": "contract"}), 200)
    assert moved["status"] == "open"  # nothing happens inside the request itself
    # deal has no automation on create: its creation wrote no event, its two stages did
    assert [(e["kind"], e["changes"]["to"]) for e in events(kt, status="pending")] == [
        ("stage", "new"), ("stage", "contract")]
    # and the worker goes on with the events its actions cause (the deal's `set` is one)
    assert kt.automations.run_pending() == 3
    assert kt.automations.run_pending() == 0

    task = [t for t in made(people["boss"].get("/api/task"), 200)["items"] if t["deal"]]
    assert len(task) == 1, task
    assert task[0]["subject"] == "Approve the contract of Поставка 合同 (Ромашка)"
    assert task[0]["owner"] in (people["lena_id"], people["igor_id"])
    due = dt.datetime.fromisoformat(task[0]["due_at"].replace("Z", "+00:00"))
    assert dt.timedelta(days=1, hours=23) < due - dt.datetime.now(dt.UTC) <= dt.timedelta(days=2)
    assert made(anna.get(f"/api/deal/{deal['id']}"), 200)["status"] == "review"
    assert made(anna.get(f"/api/client/{client['id']}"), 200)["tier"] == "gold"
    # the lawyer with fewer tasks gets the next approval: least loaded
    second = made(anna.post("/api/deal", json={"title": "Second", "amount": "1000"}))
    made(anna.post(f"/api/deal/{second['id']}/stage", json={"to": "contract"}), 200)
    kt.automations.run_pending()
    owners = sorted(t["owner"] for t in made(people["boss"].get("/api/task"), 200)["items"] if t["deal"])
    assert owners == sorted([people["lena_id"], people["igor_id"]])

    timeline = made(anna.get(f"/api/deal/{deal['id']}/timeline"), 200)["items"]
    runs = [i for i in timeline if i["type"] == "automation"]
    assert [(r["automation"], r["status"]) for r in runs] == [("contract_approval", "done")]
    assert runs[0]["label"] == {"en": "Contract approval", "ru": "Согласование договора"}
    assert runs[0]["by"] is None
    kinds = [next(iter(a)) for a in runs[0]["detail"]["actions"]]
    assert kinds == ["create", "set", "set", "notify"]
    # the automation's own change is journalled without a user
    changes = [i for i in timeline if i["type"] == "change" and "status" in i["changes"]]
    assert changes and changes[0]["by"] is None


def test_a_condition_that_does_not_hold_does_nothing(kt: Kartoteka, people: dict[str, Any]) -> None:
    anna = people["anna"]
    deal = made(anna.post("/api/deal", json={"title": "Small", "amount": "999.99"}))
    made(anna.post(f"/api/deal/{deal['id']}/stage", json={"to": "contract"}), 200)
    kt.automations.run_pending()
    assert made(anna.get(f"/api/deal/{deal['id']}"), 200)["status"] == "open"
    assert not [t for t in made(people["boss"].get("/api/task"), 200)["items"] if t["deal"]]
    assert {e["status"] for e in events(kt)} == {"done"}


def test_a_refused_change_leaves_no_event(kt: Kartoteka, people: dict[str, Any]) -> None:
    anna = people["anna"]
    assert anna.post("/api/deal", json={"title": "", "amount": "x"}).status_code == 422
    deal = made(anna.post("/api/deal", json={"title": "ok"}))
    before = len(events(kt))
    assert anna.post(f"/api/deal/{deal['id']}/stage", json={"to": "nowhere"}).status_code == 422
    assert anna.patch(f"/api/deal/{deal['id']}", json={"amount": "1.001"}).status_code == 422
    assert len(events(kt)) == before


def test_from_and_to_values_and_changed_fields(kt: Kartoteka, people: dict[str, Any]) -> None:
    anna, boss = people["anna"], people["boss"]
    deal = made(anna.post("/api/deal", json={"title": "D", "status": "review"}))
    made(anna.patch(f"/api/deal/{deal['id']}", json={"status": "dead"}), 200)  # not from open
    kt.automations.run_pending()
    assert made(anna.get(f"/api/deal/{deal['id']}"), 200)["stage"] == "new"
    other = made(anna.post("/api/deal", json={"title": "E"}))
    made(anna.patch(f"/api/deal/{other['id']}", json={"status": "dead", "amount": "150000"}), 200)
    kt.automations.run_pending()
    assert made(anna.get(f"/api/deal/{other['id']}"), 200)["stage"] == "lost"
    told = made(boss.get("/api/me/notifications"), 200)
    assert [n["subject"] for n in told["items"]] == ["Big deal E: 150,000.00"]  # as English writes it
    made(anna.patch(f"/api/deal/{other['id']}", json={"title": "E2"}), 200)  # amount unchanged
    kt.automations.run_pending()
    assert made(boss.get("/api/me/notifications"), 200)["unread"] == 1


def test_notifications_respect_reading_rights_and_hidden_fields(
        kt: Kartoteka, people: dict[str, Any]) -> None:
    anna, oleg, boss, lena = people["anna"], people["oleg"], people["boss"], people["lena"]
    deal = made(boss.post("/api/deal", json={"title": "Сделка", "amount": "2000", "margin": "300",
                                             "owner": people["anna_id"]}))
    made(anna.post(f"/api/deal/{deal['id']}/stage", json={"to": "contract"}), 200)
    kt.automations.run_pending()
    mine = made(anna.get("/api/me/notifications"), 200)
    assert [n["subject"] for n in mine["items"]] == ["Сделка is in contract"]
    # the margin is hidden from managers: left out of the text they get, not from the director's
    assert mine["items"][0]["text"] == "Margin , amount 2,000.00"
    assert made(boss.get("/api/me/notifications"), 200)["items"][0]["text"] == \
        "Margin 300.00, amount 2,000.00"
    assert made(lena.get("/api/me/notifications"), 200)["unread"] == 1
    assert made(oleg.get("/api/me/notifications"), 200) == {"items": [], "unread": 0, "next": None}
    item = mine["items"][0]
    assert (item["entity"], item["record_id"], item["automation"], item["read"]) == \
        ("deal", deal["id"], "contract_approval", False)
    # marking read: only one's own
    assert boss.post("/api/me/notifications/read", json={"ids": [item["id"]]}).status_code == 404
    # a whole number written with a point is an integer to the published schema, so here too
    assert made(anna.post("/api/me/notifications/read", json={"ids": [float(item["id"])]}),
                200) == {"unread": 0}
    assert made(anna.get("/api/me/notifications", params={"unread": "true"}), 200)["items"] == []
    assert made(boss.post("/api/me/notifications/read", json={"all": True}), 200) == {"unread": 0}
    # an id past 64 bits is no one's notification
    assert anna.post("/api/me/notifications/read", json={"ids": [2**63, 2.0**64]}).status_code == 404
    for body in ({}, {"ids": []}, {"ids": ["1"]}, {"ids": [1.5]}, {"ids": [0.0]}, {"all": False},
                 {"ids": [1], "all": True}, []):
        assert anna.post("/api/me/notifications/read", json=body).status_code == 422, body
    for params in ({"unread": "yes"}, {"limit": "0"}, {"before": "x"}, {"sort": "id"}):
        assert anna.get("/api/me/notifications", params=params).status_code == 400, params


def test_a_failing_action_is_retried_with_backoff_then_dead_and_retried_by_an_admin(
        kt: Kartoteka, people: dict[str, Any]) -> None:
    anna, root = people["anna"], people["root"]
    # the welcome task's subject is required: a client whose name renders it empty cannot
    # get one... so break the task entity instead: the owner ($owner) is a disabled user
    client = made(anna.post("/api/client", json={"name": "x" * 10}))
    (event,) = [e for e in events(kt) if e["entity"] == "client"]
    with kt.db.write() as conn:  # the task table refuses every insert from now on
        conn.execute(sa.text("CREATE TRIGGER no_tasks BEFORE INSERT ON task "
                             "BEGIN SELECT RAISE(ABORT, 'tasks are closed'); END")
                     if kt.db.dialect == "sqlite" else sa.text(
                         "CREATE FUNCTION no_tasks() RETURNS trigger AS $$ BEGIN "
                         "RAISE EXCEPTION 'tasks are closed'; END $$ LANGUAGE plpgsql; "
                         "CREATE TRIGGER no_tasks BEFORE INSERT ON task "
                         "FOR EACH ROW EXECUTE FUNCTION no_tasks()"))
    clock = {"now": dt.datetime.now(dt.UTC)}
    kt.records.clock = lambda: clock["now"]
    waits = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert kt.automations.run_pending() == 1
        (row,) = [e for e in events(kt) if e["id"] == event["id"]]
        assert row["attempts"] == attempt and "tasks are closed" in row["last_error"]
        assert kt.automations.run_pending() == 0  # not due again yet
        waits.append(row["next_at"] - clock["now"])
        clock["now"] = row["next_at"]
    assert waits[:3] == [dt.timedelta(seconds=10), dt.timedelta(seconds=20),
                         dt.timedelta(seconds=40)]
    assert row["status"] == "dead"
    timeline = made(anna.get(f"/api/client/{client['id']}/timeline"), 200)["items"]
    failed = [i for i in timeline if i["type"] == "automation"]
    assert len(failed) == MAX_ATTEMPTS and {i["status"] for i in failed} == {"failed"}
    assert failed[0]["automation"] == "welcome" and "tasks are closed" in failed[0]["detail"]["error"]
    assert made(people["boss"].get("/api/task"), 200)["items"] == []  # nothing half-done
    # the dead letter, for an admin only
    assert anna.get("/api/automations/events").status_code == 403
    dead = made(root.get("/api/automations/events", params={"status": "dead"}), 200)["items"]
    assert [d["id"] for d in dead] == [event["id"]]
    with kt.db.write() as conn:
        conn.execute(sa.text("DROP TRIGGER no_tasks" if kt.db.dialect == "sqlite"
                             else "DROP TRIGGER no_tasks ON task"))
    retried = made(root.post(f"/api/automations/events/{event['id']}/retry"), 200)
    assert (retried["status"], retried["attempts"]) == ("pending", 0)
    assert kt.automations.run_pending() == 1
    tasks = made(anna.get("/api/task"), 200)["items"]
    assert [(t["subject"], t["client"], t["owner"]) for t in tasks] == [
        ("Call xxxxxxxxxx", client["id"], people["anna_id"])]
    assert root.post(f"/api/automations/events/{event['id']}/retry").status_code == 422
    assert root.post("/api/automations/events/999999/retry").status_code == 404
    assert root.get("/api/automations/events", params={"status": "lost"}).status_code == 400


def test_two_automations_feeding_each_other_stop_at_the_loop_guard(
        kt: Kartoteka, people: dict[str, Any]) -> None:
    anna = people["anna"]
    deal = made(anna.post("/api/deal", json={"title": "Loop"}))
    made(anna.patch(f"/api/deal/{deal['id']}", json={"note_a": "a"}), 200)
    for _ in range(MAX_DEPTH + 3):
        kt.automations.run_pending()
    final = made(anna.get(f"/api/deal/{deal['id']}"), 200)
    # a person wrote "a"; ping and pong then took turns, each change one automation deeper,
    # until the change at MAX_DEPTH: "ab", "aba", "abab"... and no further
    assert len(final["note_b"]) == MAX_DEPTH + 1 and final["note_a"] == final["note_b"][:-1]
    runs = [i for i in made(anna.get(f"/api/deal/{deal['id']}/timeline",
                                     params={"limit": "200"}), 200)["items"]
            if i["type"] == "automation"]
    assert [r["status"] for r in runs].count("done") == MAX_DEPTH
    refused = [r for r in runs if r["status"] == "refused"]
    assert len(refused) == 1 and "loop guard" in refused[0]["detail"]["reason"]
    assert {e["status"] for e in events(kt)} == {"done"}


@pytest.mark.postgres
def test_workers_on_postgresql_share_the_queue_and_run_each_event_once(
        kt: Kartoteka, people: dict[str, Any], db_url: str) -> None:
    if kt.db.dialect != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's")
    anna = people["anna"]
    for n in range(30):
        made(anna.post("/api/client", json={"name": f"Клиент {n}"}))
    counts: list[int] = []

    def work() -> None:
        counts.append(kt.automations.run_pending(limit=1000))
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 30
    tasks = made(people["boss"].get("/api/task", params={"limit": "100"}), 200)["items"]
    assert sorted(t["subject"] for t in tasks) == sorted(f"Call Клиент {n}" for n in range(30))


def test_the_automations_are_listed(people: dict[str, Any]) -> None:
    listed = made(people["anna"].get("/api/automations"), 200)["items"]
    first = listed[0]
    assert first == {"name": "contract_approval", "label": {"en": "Contract approval",
                                                            "ru": "Согласование договора"},
                     "entity": "deal", "on": "stage_entered", "stages": ["contract"],
                     "changed": [], "actions": ["create", "set", "set", "notify"]}


# -- Python actions -----------------------------------------------------------------------

def test_a_python_action_is_called_with_the_record(write_setup: Callable[..., Path],
                                                   db_url: str) -> None:
    seen: list[ActionContext] = []

    def score(context: ActionContext) -> Any:
        seen.append(context)
        context.records.update("client", context.record["id"], {"tier": "gold"})
        context.notify([1], f"scored {context.record['name']}", None)
        return {"level": context.params["level"]}
    files = dict(SETUP)
    files["setup.yaml"] = files["setup.yaml"].replace(
        "- create: {entity: task, values: {subject: \"Call {name}\", client: $record}, owner: $owner}",
        "- call: {action: score, with: {level: 2}}")
    folder = write_setup(files)
    setup = load_setup(folder, actions=["score"])
    kt = Kartoteka(setup, Settings(DatabaseSettings(url=db_url)), actions={"score": score})
    try:
        kt.migrate()
        kt.users.add("boss@example.com", ["director"])
        created = kt.records.create("client", {"name": "Ромашка"})
        assert kt.automations.run_pending() == 1
        assert seen[0].record["name"] == "Ромашка" and seen[0].automation == "welcome"
        assert kt.records.get("client", created["id"])["tier"] == "gold"
        timeline = kt.timeline.page("client", created["id"], [])["items"]
        run = next(i for i in timeline if i["type"] == "automation")
        assert run["detail"]["actions"][0] == {"call": {"action": "score", "result": {"level": 2}}}
    finally:
        kt.close()
    problems = check_setup(folder).diagnostics
    assert [(d.code, "score" in d.message) for d in problems] == [("automation.call", True)]


# -- setup errors --------------------------------------------------------------------------

BROKEN = {
    "wrong_entity": ("{entity: dael, on: created, do: [{move: won}]}", "automation.entity",
                     "did you mean 'deal'"),
    "wrong_trigger": ("{entity: deal, on: create, do: [{move: won}]}", "automation.on",
                      "did you mean 'created'"),
    "no_do": ("{entity: deal, on: created}", "automation.do", "add do:"),
    "stage_unknown": ("{entity: deal, on: stage_entered, stage: contrakt, do: [{move: won}]}",
                      "automation.stage", "did you mean 'contract'"),
    "stage_on_created": ("{entity: deal, on: created, stage: won, do: [{move: won}]}",
                         "automation.stage", "if: {stage"),
    "changed_unknown": ("{entity: deal, on: updated, changed: [amout], do: [{move: won}]}",
                        "automation.field", "did you mean 'amount'"),
    "to_bad_value": ("{entity: deal, on: updated, to: {status: closed}, do: [{move: won}]}",
                     "automation.value", "status"),
    "if_bad": ("{entity: deal, on: created, if: {amount: {gte: lots}}, do: [{move: won}]}",
               "automation.condition", "amount"),
    "action_unknown": ("{entity: deal, on: created, do: [{send: {}}]}", "automation.action",
                       "actions: create"),
    "move_unknown": ("{entity: deal, on: created, do: [{move: wonn}]}", "automation.move",
                     "did you mean 'won'"),
    "create_field": ("{entity: deal, on: created, do: [{create: {entity: task, values: "
                     "{subjekt: x}}}]}", "automation.values", "did you mean 'subject'"),
    "create_link": ("{entity: deal, on: created, do: [{create: {entity: task, values: "
                    "{subject: x, client: $record}}}]}", "automation.values", "$record is a deal"),
    "template": ("{entity: deal, on: created, do: [{set: {title: '{client.nme}'}}]}",
                 "automation.template", "did you mean 'name'"),
    "notify_role": ("{entity: deal, on: created, do: [{notify: {to: [{role: boss}], "
                    "subject: x}}]}", "automation.role", "roles:"),
    "notify_language": ("{entity: deal, on: created, do: [{notify: {to: [$owner], "
                        "subject: {de: x}}}]}", "automation.text", "languages: en, ru"),
    "set_computed_stage": ("{entity: deal, on: created, do: [{set: {stage: won}}]}",
                           "automation.values", "move:"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_automation_is_a_located_setup_error(
        name: str, write_setup: Callable[..., Path]) -> None:
    body, code, hint = BROKEN[name]
    files = dict(SETUP)
    files["setup.yaml"] = files["setup.yaml"].replace(
        "        automations:\n", f"        automations:\n          broken: {body}\n", 1)
    result = check_setup(write_setup(files))
    assert result.setup is None
    problems = [d for d in result.diagnostics if d.severity == "error"]
    assert problems, name
    first = problems[0]
    assert first.code == code, (name, [(d.code, d.message, d.hint) for d in problems])
    assert first.file == "setup.yaml" and first.line > 1
    assert hint in f"{first.message} {first.hint}", (name, first.message, first.hint)


# -- the worker in the server's process, and on its own -----------------------------------

def test_the_served_app_runs_its_worker(kt: Kartoteka) -> None:
    """With `worker=True` (what `kartoteka serve` sets) the automations run without anyone
    calling run_pending: a client created over HTTP gets its welcome task."""
    from api.app import ApiSettings

    with TestClient(create_app(kt, ApiSettings(worker=True)), base_url="http://127.0.0.1") as http:
        client = made(http.post("/api/client", json={"name": "Сразу"}))
        for _ in range(200):
            tasks = made(http.get("/api/task"), 200)["items"]
            if tasks:
                break
            threading.Event().wait(0.02)
        assert [(t["subject"], t["client"]) for t in tasks] == [("Call Сразу", client["id"])]
    assert events(kt, status="pending") == []


def test_kartoteka_worker_once_processes_what_is_due(
        kt: Kartoteka, write_setup: Callable[[dict[str, str]], Path], db_url: str) -> None:
    from click.testing import CliRunner

    from kartoteka.cli import main

    kt.records.create("client", {"name": "Один"})
    kt.records.create("client", {"name": "Два"})
    folder = Path(kt.setup.source)
    done = CliRunner().invoke(main, ["worker", str(folder), "--db", db_url, "--once"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "Processed 2 event(s)." in done.output
    assert sorted(t["subject"] for t in kt.records.list_page("task", []).items) == \
        ["Call Два", "Call Один"]
    again = CliRunner().invoke(main, ["worker", str(folder), "--db", db_url, "--once"])
    assert "Processed 0 event(s)." in again.output


# -- the clock: date triggers and schedules ------------------------------------------------

CLOCKED = {
    "setup.yaml": """
        name: Clocked
        languages: [en, ru]
        timezone: Europe/Moscow
        roles:
          manager:
            "*": {create: all, read: own, update: own}
        automations:
          renewal:
            entity: contract
            on: date
            date: valid_to
            before: 3 days
            if: {status: active}
            do:
              - notify: {to: [$owner], subject: "Renew {number} by {valid_to}"}
          overdue:
            entity: job
            on: date
            date: due_at
            after: 1 hour
            if: {done: false}
            do:
              - set: {late: true}
          monday_review:
            entity: contract
            on: schedule
            schedule: "0 9 * * 1"
            if: {status: active}
            do:
              - notify: {to: [$owner], subject: "Weekly review: {number}"}
    """,
    "contract.yaml": """
        entity: contract
        owner: true
        fields:
          number: {type: string, required: true}
          valid_to: {type: date}
          status: {type: choice, options: [active, closed], default: active}
    """,
    "job.yaml": """
        entity: job
        owner: true
        fields:
          title: {type: string, required: true}
          due_at: {type: datetime}
          done: {type: boolean, default: false}
          late: {type: boolean, default: false}
    """,
}

MSK = dt.timezone(dt.timedelta(hours=3))


@pytest.fixture
def clocked(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(CLOCKED, "clocked"))


def _at(kt: Kartoteka, moment: dt.datetime) -> None:
    kt.records.clock = lambda: moment


def _told(kt: Kartoteka) -> list[str]:
    table = kt.storage.notifications
    with kt.db.read() as conn:
        return list(conn.execute(sa.select(table.c.subject).order_by(table.c.id)).scalars())


def test_a_date_trigger_fires_once_when_the_date_comes_due(clocked: Kartoteka) -> None:
    kt = clocked
    owner, _ = kt.users.add("anna@example.com", ["manager"])
    _at(kt, dt.datetime(2026, 12, 1, 12, 0, tzinfo=MSK))
    for number, valid_to, status in (("C-1", "2026-12-05", "active"), ("C-2", "2026-12-20", "active"),
                                     ("C-3", "2026-12-04", "closed"), ("C-old", "2026-10-01", "active")):
        kt.records.create("contract", {"number": number, "valid_to": valid_to, "status": status},
                          owner=owner.id)
    kt.automations.run_pending()
    assert _told(kt) == []  # 2026-12-05 minus 3 days is the 2nd: not yet
    _at(kt, dt.datetime(2026, 12, 2, 0, 1, tzinfo=MSK))  # the 2nd in Moscow (still the 1st in UTC)
    kt.automations.run_pending()
    # C-3 came due but is closed; C-old came due long ago (beyond the horizon): neither
    assert _told(kt) == ["Renew C-1 by 2026-12-05"]
    _at(kt, dt.datetime(2026, 12, 3, 9, 0, tzinfo=MSK))
    kt.automations.run_pending()
    assert _told(kt) == ["Renew C-1 by 2026-12-05"]  # once
    # a renewed contract comes due again for its new date
    (c1,) = kt.records.list_page("contract", [("number", "C-1")]).items
    kt.records.update("contract", c1["id"], {"valid_to": "2027-01-10"})
    _at(kt, dt.datetime(2027, 1, 7, 8, 0, tzinfo=MSK))
    kt.automations.run_pending()
    assert _told(kt)[-1] == "Renew C-1 by 2027-01-10"


def test_an_hour_after_a_datetime(clocked: Kartoteka) -> None:
    kt = clocked
    start = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    _at(kt, start)
    late = kt.records.create("job", {"title": "Отчёт", "due_at": "2026-12-01T10:30:00Z"})
    done = kt.records.create("job", {"title": "报告", "due_at": "2026-12-01T10:30:00Z", "done": True})
    _at(kt, start + dt.timedelta(minutes=89))
    kt.automations.run_pending()
    assert kt.records.get("job", late["id"])["late"] is False
    _at(kt, start + dt.timedelta(minutes=91))
    kt.automations.run_pending()
    assert kt.records.get("job", late["id"])["late"] is True
    assert kt.records.get("job", done["id"])["late"] is False


def test_a_schedule_fires_once_per_occurrence_in_the_setups_zone(clocked: Kartoteka) -> None:
    kt = clocked
    owner, _ = kt.users.add("anna@example.com", ["manager"])
    kt.records.create("contract", {"number": "A", "status": "active"}, owner=owner.id)
    kt.records.create("contract", {"number": "B", "status": "closed"}, owner=owner.id)
    _at(kt, dt.datetime(2026, 12, 7, 8, 59, tzinfo=MSK))  # a Monday, 8:59 in Moscow
    kt.automations.run_pending()
    assert _told(kt) == []
    _at(kt, dt.datetime(2026, 12, 7, 9, 0, 30, tzinfo=MSK))
    kt.automations.run_pending()
    assert _told(kt) == ["Weekly review: A"]
    _at(kt, dt.datetime(2026, 12, 7, 9, 30, tzinfo=MSK))
    kt.automations.run_pending()
    assert _told(kt) == ["Weekly review: A"]  # once per occurrence
    # a worker back after the whole of next Monday morning skips that missed occurrence
    _at(kt, dt.datetime(2026, 12, 14, 12, 0, tzinfo=MSK))
    kt.automations.run_pending()
    assert _told(kt) == ["Weekly review: A"]


def test_a_date_trigger_on_a_field_gets_an_index(clocked: Kartoteka) -> None:
    indexes = {i.name: [c.name for c in i.columns] for i in clocked.storage["job"].table.indexes}
    assert ["due_at"] in indexes.values()


CLOCK_BROKEN = {
    "date_missing": ("{entity: contract, on: date, do: [{set: {status: closed}}]}", "automation.date",
                     "date: valid_to"),
    "date_not_a_date": ("{entity: contract, on: date, date: number, do: [{set: {status: closed}}]}",
                        "automation.date", "valid_to"),
    "date_hours": ("{entity: contract, on: date, date: valid_to, before: 5 hours, "
                   "do: [{set: {status: closed}}]}", "automation.date", "whole days"),
    "date_span": ("{entity: contract, on: date, date: valid_to, before: soon, "
                  "do: [{set: {status: closed}}]}", "automation.date", "3 days"),
    "schedule_bad": ("{entity: contract, on: schedule, schedule: '61 * * * *', "
                     "do: [{set: {status: closed}}]}", "automation.schedule", "0 9 * * 1-5"),
    "schedule_on_created": ("{entity: contract, on: created, schedule: '0 9 * * *', "
                            "do: [{set: {status: closed}}]}", "automation.schedule", "on: schedule"),
    "if_on_deleted": ("{entity: contract, on: deleted, if: {status: active}, "
                      "do: [{notify: {to: [$owner], subject: x}}]}", "automation.if", "remove if:"),
}


@pytest.mark.parametrize("name", sorted(CLOCK_BROKEN))
def test_a_broken_clock_trigger_is_a_located_setup_error(
        name: str, write_setup: Callable[..., Path]) -> None:
    body, code, hint = CLOCK_BROKEN[name]
    files = dict(CLOCKED)
    files["setup.yaml"] = files["setup.yaml"].replace(
        "        automations:\n", f"        automations:\n          broken: {body}\n", 1)
    result = check_setup(write_setup(files))
    problems = [d for d in result.diagnostics if d.severity == "error"]
    assert result.setup is None and problems
    assert problems[0].code == code, (name, [(d.code, d.message) for d in problems])
    assert hint in f"{problems[0].message} {problems[0].hint}", (name, problems[0])


# -- the default setup's flows (schemas/setup.yaml) ----------------------------------------

def test_the_default_setups_contract_approval_and_overdue_tasks(make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt()
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        tokens = {}
        ids = {}
        for name, role in (("anna", "manager"), ("lena", "lawyer"), ("boss", "director")):
            user, tokens[name] = kt.users.add(f"{name}@example.com", [role])
            ids[name] = user.id

        def as_(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[name]}"}
        client = made(http.post("/api/client", json={"name": "ООО Ромашка"}, headers=as_("anna")))
        sale = made(http.post("/api/sale", json={"number": "S-7", "client": client["id"],
                                                   "contract_no": "Д-7/2026"},
                              headers=as_("anna")))
        contract = made(http.post("/api/document", headers=as_("anna"), json={
            "kind": "contract", "number": "D-1", "about": {"entity": "sale", "id": sale["id"]}}))
        invoice = made(http.post("/api/document", headers=as_("anna"), json={
            "kind": "invoice", "number": "I-1", "about": {"entity": "sale", "id": sale["id"]}}))
        made(http.post(f"/api/sale/{sale['id']}/stage", json={"to": "contract"}, headers=as_("anna")), 200)
        kt.automations.run_pending()
        tasks = made(http.get("/api/task", headers=as_("lena")), 200)["items"]
        assert [(t["subject"], t["priority"], t["about"]) for t in tasks] == [
            ("Approve the contract of sale S-7 (ООО Ромашка)", "high",
             {"entity": "sale", "id": sale["id"]})]
        def status(document: dict[str, Any]) -> str:
            return str(made(http.get(f"/api/document/{document['id']}", headers=as_("anna")),
                            200)["status"])
        assert (status(contract), status(invoice)) == ("review", "draft")
        told = made(http.get("/api/me/notifications", headers=as_("lena")), 200)["items"]
        assert [n["subject"] for n in told] == ["Sale S-7: the contract needs approval"]

        # an open task an hour past due: its owner and the director are told, once
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
        made(http.post("/api/task", json={"subject": "Позвонить", "due_at": past}, headers=as_("anna")))
        made(http.post("/api/task", json={"subject": "Done", "due_at": past, "status": "done"},
                       headers=as_("anna")))
        kt.automations.run_pending()
        kt.records.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        kt.automations.run_pending()
        for name in ("anna", "boss"):
            subjects = [n["subject"] for n in made(http.get(
                "/api/me/notifications", headers=as_(name)), 200)["items"]]
            assert subjects == ["Overdue: Позвонить"], (name, subjects)


def test_bulk_writes_trigger_automations_like_single_ones(kt: Kartoteka) -> None:
    """A bulk call (and so an import, which writes through it) writes its events in its own
    transaction: all-or-none that fails leaves none, one that succeeds one per row."""
    failed = kt.bulk.run("client", {"rows": [{"name": "Первый"}, {"name": ""}]})
    assert not failed.written and events(kt) == []
    done = kt.bulk.run("client", {"rows": [{"name": "Первый"}, {"name": "第二"}]})
    assert done.written
    assert [e["kind"] for e in events(kt)] == ["create", "create"]
    kt.automations.run_pending()
    assert sorted(t["subject"] for t in kt.records.list_page("task", []).items) == \
        ["Call Первый", "Call 第二"]


# -- deliveries: webhooks and e-mail, from the outbox --------------------------------------

DELIVERING = {
    "setup.yaml": """
        name: Delivering
        languages: [ru, en]
        roles:
          manager:
            shipment: {create: all, read: all, update: all, hidden: [cost]}
        automations:
          shipment_moved:
            entity: shipment
            on: stage_entered
            stage: [port, delivered]
            do:
              - notify:
                  to: [{email_field: client_email}]
                  subject: {ru: "Груз {number}: {stage}", en: "Cargo {number}: {stage}"}
                  text: "Здравствуйте! Ваш груз {number} — этап {stage}. 您好"
              - webhook: {url: "URL", secret_env: HOOK_SECRET, role: manager}
    """,
    "shipment.yaml": """
        entity: shipment
        fields:
          number: {type: string, required: true}
          client_email: {type: email}
          cost: {type: money}
        pipeline:
          stages: [booked, port, delivered]
          final: [delivered]
    """,
}


class _Receiver(threading.Thread):
    """A webhook receiver on loopback: fails `failures` times with 500, then answers 200."""

    def __init__(self, failures: int):
        import http.server

        receiver = self
        self.failures = failures
        self.seen: list[tuple[dict[str, str], bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.seen.append((dict(self.headers), body))
                status = 500 if len(receiver.seen) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        super().__init__(target=self.server.serve_forever, args=(0.05,), daemon=True)


def test_a_webhook_failing_three_times_is_delivered_the_fourth_signed_without_hidden_fields(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.automations.webhook import verify

    receiver = _Receiver(failures=3)
    receiver.start()
    try:
        url = f"http://127.0.0.1:{receiver.server.server_port}/hooks/cargo"
        files = {**DELIVERING, "setup.yaml": DELIVERING["setup.yaml"].replace("URL", url)}
        kt = make_kt(write_setup(files, "delivering"))
        monkeypatch.setenv("KARTOTEKA_WEBHOOK_ALLOW", "127.0.0.1")
        monkeypatch.setenv("HOOK_SECRET", "s3cret")
        monkeypatch.delenv("KARTOTEKA_SMTP_URL", raising=False)
        shipment = kt.records.create("shipment", {"number": "МСК-1", "cost": "100.00"})
        kt.stages.move("shipment", shipment["id"], {"to": "port"})
        clock = {"now": dt.datetime.now(dt.UTC)}
        kt.records.clock = lambda: clock["now"]
        kt.automations.run_pending()
        for _ in range(3):
            (hook,) = events(kt, kind="webhook")
            assert hook["status"] == "pending" and hook["last_error"], hook
            clock["now"] = hook["next_at"]
            kt.automations.run_pending()
        (hook,) = events(kt, kind="webhook")
        assert (hook["status"], hook["attempts"]) == ("done", 4)
        assert len(receiver.seen) == 4
        headers, body = receiver.seen[-1]
        assert {r[0]["X-Kartoteka-Event"] for r in receiver.seen} == {str(hook["id"])}
        assert verify(b"s3cret", headers["X-Kartoteka-Signature"], body,
                      now=dt.datetime.now(dt.UTC).timestamp())
        sent = __import__("json").loads(body)
        assert sent["record"]["number"] == "МСК-1" and "cost" not in sent["record"]
        assert (sent["automation"], sent["entity"], sent["id"]) == (
            "shipment_moved", "shipment", shipment["id"])
        # no client e-mail on the record: nobody to mail; e-mail off is no failure then
        assert events(kt, kind="email") == []
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_a_webhook_to_a_private_address_is_refused_and_dead_at_once(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    files = {**DELIVERING, "setup.yaml": DELIVERING["setup.yaml"].replace(
        "URL", "http://10.0.0.7/hooks")}
    kt = make_kt(write_setup(files, "private"))
    monkeypatch.delenv("KARTOTEKA_WEBHOOK_ALLOW", raising=False)
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    shipment = kt.records.create("shipment", {"number": "A-1"})
    kt.stages.move("shipment", shipment["id"], {"to": "port"})
    kt.automations.run_pending()
    (hook,) = events(kt, kind="webhook")
    assert hook["status"] == "dead" and "10.0.0.7" in hook["last_error"]
    runs = [i for i in kt.timeline.page("shipment", shipment["id"], [])["items"]
            if i["type"] == "automation"]
    assert {r["status"] for r in runs} == {"done", "failed"}


def test_a_client_e_mail_field_gets_the_message_through_smtp(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import email
    from email.policy import default as default_policy

    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        files = {**DELIVERING, "setup.yaml": DELIVERING["setup.yaml"].replace(
            "              - webhook: {url: \"URL\", secret_env: HOOK_SECRET, role: manager}\n", "")}
        kt = make_kt(write_setup(files, "mailing"))
        monkeypatch.setenv("KARTOTEKA_SMTP_URL",
                           f"smtp://127.0.0.1:{port}?starttls=0&from=crm@example.com")
        shipment = kt.records.create("shipment", {"number": "МСК-2", "client_email": "ivan@example.com"})
        kt.stages.move("shipment", shipment["id"], {"to": "delivered"})
        kt.automations.run_pending()
        assert [e["status"] for e in events(kt, kind="email")] == ["done"]
        (envelope,) = received
        assert envelope.rcpt_tos == ["ivan@example.com"]
        message = email.message_from_bytes(envelope.original_content, policy=default_policy)
        assert message["Subject"] == "Груз МСК-2: delivered"
        assert "Ваш груз МСК-2" in message.get_content() and "您好" in message.get_content()
    finally:
        controller.stop()


def test_e_mail_off_is_a_dead_letter_that_says_how_to_turn_it_on(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    files = {**DELIVERING, "setup.yaml": DELIVERING["setup.yaml"].replace(
        "              - webhook: {url: \"URL\", secret_env: HOOK_SECRET, role: manager}\n", "")}
    kt = make_kt(write_setup(files, "nomail"))
    monkeypatch.delenv("KARTOTEKA_SMTP_URL", raising=False)
    shipment = kt.records.create("shipment", {"number": "X", "client_email": "x@example.com"})
    kt.stages.move("shipment", shipment["id"], {"to": "port"})
    kt.automations.run_pending()
    (mail_event,) = events(kt, kind="email")
    assert mail_event["status"] == "dead" and "KARTOTEKA_SMTP_URL" in mail_event["last_error"]


# -- the examples' flows ---------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_logistics_tells_the_manager_and_mails_the_client_at_each_delivery_stage(
        make_kt: Callable[..., Kartoteka], monkeypatch: pytest.MonkeyPatch) -> None:
    kt = make_kt(EXAMPLES / "logistics")
    monkeypatch.delenv("KARTOTEKA_SMTP_URL", raising=False)
    manager, _ = kt.users.add("roman@example.com", ["admin"])
    client = kt.records.create("client", {"name": "ООО Ромашка", "email": "buyer@romashka.ru"})
    for number, mode, stage in (("FR-2026-0001", "sea", "at_sea"), ("FR-2026-0002", "air", "departed")):
        shipment = kt.records.create("shipment", {
            "number": number, "mode": mode, "cargo": "Станки", "origin": "Шанхай",
            "destination": "Москва", "client": client["id"], "incoterms": "FOB",
            "quoted_price": "1000.00", "booking_no": "BK-1", "container_no": "MSCU1234567",
            "vessel": "Ever Given", "flight_no": "SU208", "transport_doc_no": "B/L-1"},
            owner=manager.id)
        kt.stages.move("shipment", shipment["id"], {"to": "booked"})
        kt.stages.move("shipment", shipment["id"], {"to": stage})
    kt.automations.run_pending()
    assert _told(kt) == [
        "Груз FR-2026-0001 (Станки): этап booked", "Груз FR-2026-0001 (Станки): этап at_sea",
        "Груз FR-2026-0002 (Станки): этап booked", "Груз FR-2026-0002 (Станки): этап departed"]
    mails = events(kt, kind="email")
    assert len(mails) == 4 and {tuple(m["changes"]["to"]) for m in mails} == {("buyer@romashka.ru",)}
    assert mails[0]["changes"]["text"] == \
        "Здравствуйте! Груз FR-2026-0001 из Шанхай перешёл на этап «booked»."


def test_purchasing_flags_suppliers_below_threshold_and_reminds_renewals(
        make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt(EXAMPLES / "purchasing")
    buyer, _ = kt.users.add("buyer@example.com", ["admin"])
    weak = kt.records.create("supplier", {"name": "Слабый 供应商"}, owner=buyer.id)
    strong = kt.records.create("supplier", {"name": "Сильный"}, owner=buyer.id)
    for supplier, score in ((weak, 40), (strong, 95)):
        kt.records.create("supplier_evaluation", {
            "supplier": supplier["id"], "period": "2026-Q4", "evaluated_on": "2026-12-01",
            "quality_score": score, "delivery_score": score, "cost_score": score})
    kt.records.create("contract", {"number": "K-1", "title": "Поставка", "status": "active",
                                   "supplier": strong["id"], "valid_to": "2027-01-04"},
                      owner=buyer.id)
    _at(kt, dt.datetime(2026, 12, 7, 9, 0, 5, tzinfo=MSK))  # Monday 9:00 in Moscow
    kt.automations.run_pending()
    assert _told(kt) == ["Слабый 供应商: overall score 40.00, below 70",
                         "Contract K-1 ends on 2027-01-04: renew it or let it expire"]


ASSIGNING = {
    "setup.yaml": """
        name: Assigning
        roles:
          manager:
            lead: {create: all, read: own, update: own}
        automations:
          route_leads:
            entity: lead
            on: created
            do:
              - assign:
                  rules:
                    - {if: {city: Москва}, to: {role: manager, team: moscow}}
                    - {to: {role: manager}}
                  pick: round_robin
    """,
    "lead.yaml": """
        entity: lead
        owner: true
        fields:
          name: {type: string, required: true}
          city: {type: string}
    """,
}


def test_leads_are_routed_by_rule_and_round_robin(make_kt: Callable[..., Kartoteka],
                                                  write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup(ASSIGNING, "assigning"))
    moscow = [kt.users.add(f"m{n}@example.com", ["manager"], team="moscow")[0].id for n in range(2)]
    others = [kt.users.add(f"o{n}@example.com", ["manager"], team="kazan")[0].id for n in range(2)]
    leads = [kt.records.create("lead", {"name": f"Лид {n}", "city": city})
             for n, city in enumerate(["Москва", "Москва", "Москва", "Казань"])]
    kt.automations.run_pending()
    owners = [kt.records.get("lead", lead["id"])["owner"] for lead in leads]
    # Moscow's leads go round the Moscow team; the rest to any manager (the one who got a
    # lead longest ago: one of those who have none yet)
    assert owners[:3] == [moscow[0], moscow[1], moscow[0]]
    assert owners[3] in others


def test_a_broken_assignment_is_a_located_setup_error(write_setup: Callable[..., Path]) -> None:
    files = dict(ASSIGNING)
    files["setup.yaml"] = files["setup.yaml"].replace("pick: round_robin", "pick: random")
    problems = [d for d in check_setup(write_setup(files, "badpick")).diagnostics
                if d.severity == "error"]
    assert [(d.code, "round_robin" in d.hint) for d in problems] == [("automation.assign", True)]


# -- intakes: records from outside, with a key -----------------------------------------------

INTAKE = {
    "setup.yaml": """
        name: Intake
        roles:
          manager:
            lead: {create: all, read: own, update: own}
        intakes:
          website:
            entity: lead
            fields: [name, email, city]
            set: {source: website}
            key_env: WEBSITE_KEY
            rate: 3 per minute
        automations:
          route:
            entity: lead
            on: created
            do:
              - assign: {rules: [{to: {role: manager}}]}
              - notify: {to: [$owner], subject: "Новый лид с сайта: {name}"}
    """,
    "lead.yaml": """
        entity: lead
        owner: true
        fields:
          name: {type: string, required: true}
          email: {type: email}
          city: {type: string}
          source: {type: choice, options: [website, call]}
          secret_note: {type: string}
    """,
}


def test_a_lead_arrives_through_the_intake_and_goes_to_a_manager(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    kt = make_kt(write_setup(INTAKE, "intake"))
    anna, token = kt.users.add("anna@example.com", ["manager"])
    monkeypatch.setenv("WEBSITE_KEY", "k3y-5ecret")
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        def post(body: Any, key: str | None = "k3y-5ecret") -> Any:
            headers = {"X-Intake-Key": key} if key else {}
            return http.post("/intake/website", json=body, headers=headers)
        made = post({"name": "Иван 王", "email": "ivan@example.com", "city": "Казань"})
        assert made.status_code == 201, made.text
        assert made.json() == {"id": 1, "entity": "lead"}
        assert post({"name": "x"}, key="wrong").status_code == 401
        refused = post({"name": "x", "secret_note": "hi", "source": "call"})
        assert refused.status_code == 422
        assert {d["field"] for d in refused.json()["error"]["details"]} == {"secret_note", "source"}
        limited = post({"name": "y"})  # the fourth call in a minute from this address
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert http.post("/intake/nosuch", json={}).status_code in (404, 405)
        kt.automations.run_pending()
        lead = kt.records.get("lead", 1)
        assert (lead["source"], lead["owner"], lead["secret_note"]) == ("website", anna.id, None)
        told = http.get("/api/me/notifications", headers={"Authorization": f"Bearer {token}"})
        assert [n["subject"] for n in told.json()["items"]] == ["Новый лид с сайта: Иван 王"]
        assert len(kt.records.list_page("lead", []).items) == 1  # nothing from the refused calls


def test_an_intake_without_its_key_in_the_environment_is_closed(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    kt = make_kt(write_setup(INTAKE, "closed"))
    monkeypatch.delenv("WEBSITE_KEY", raising=False)
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        answer = http.post("/intake/website", json={"name": "x"}, headers={"X-Intake-Key": ""})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "intake_closed"


@pytest.mark.parametrize(("body", "code", "hint"), [
    ("{entity: lead, fields: [name, stage], key_env: K}", "intake.fields", "name"),
    ("{entity: leed, fields: [name], key_env: K}", "intake.entity", "did you mean 'lead'"),
    ("{entity: lead, fields: [name], key_env: my-key}", "intake.key_env", "WEBSITE_INTAKE_KEY"),
    ("{entity: lead, fields: [name], key_env: K, rate: lots}", "intake.rate", "30 per minute"),
    ("{entity: lead, fields: [name], key_env: K, set: {source: fax}}", "intake.set", "source"),
    ("{entity: lead, fields: [name]}", "intake.key_env", "key_env:"),
])
def test_a_broken_intake_is_a_located_setup_error(body: str, code: str, hint: str,
                                                  write_setup: Callable[..., Path]) -> None:
    files = dict(INTAKE)
    files["setup.yaml"] = files["setup.yaml"].replace(
        "        intakes:\n", f"        intakes:\n          broken: {body}\n", 1)
    problems = [d for d in check_setup(write_setup(files, "badintake")).diagnostics
                if d.severity == "error"]
    assert problems and problems[0].code == code, [(d.code, d.message) for d in problems]
    assert hint in f"{problems[0].message} {problems[0].hint}"
    assert problems[0].file == "setup.yaml" and problems[0].line > 1


def test_a_worker_killed_mid_delivery_loses_nothing_and_duplicates_nothing_observable(
        write_setup: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `kartoteka worker` process is killed (SIGKILL) while its webhook call is in
    flight: the delivery stays leased, then (its lease run out) is made again with the same
    event id — a receiver deduplicating on it acts once — and the change event that asked
    for it was processed once."""
    import http.server
    import os
    import signal
    import subprocess
    import sys

    arrived = threading.Event()
    seen: list[str] = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["X-Kartoteka-Event"])
            if len(seen) == 1:
                arrived.set()
                threading.Event().wait(5)  # the first call hangs: the worker dies meanwhile
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hooks"
        folder = write_setup({**DELIVERING, "setup.yaml": DELIVERING["setup.yaml"].replace(
            "URL", url)}, "killed")
        db = f"sqlite:///{tmp_path / 'killed.db'}"
        kt = Kartoteka.open(folder, db)
        kt.migrate()
        shipment = kt.records.create("shipment", {"number": "K-1"})
        kt.stages.move("shipment", shipment["id"], {"to": "port"})
        env = {**os.environ, "KARTOTEKA_WEBHOOK_ALLOW": "127.0.0.1", "HOOK_SECRET": "s",
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("KARTOTEKA_SMTP_URL", None)
        worker = subprocess.Popen([sys.executable, "-m", "kartoteka", "worker", str(folder),
                                   "--db", db], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            assert arrived.wait(30), "the worker never called the webhook"
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
        (hook,) = events(kt, kind="webhook")
        assert (hook["status"], hook["attempts"]) == ("pending", 1)  # leased, not lost
        assert {e["status"] for e in events(kt, kind="stage")} == {"done"}
        with kt.db.write() as conn:  # the lease runs out
            conn.execute(sa.update(kt.storage.events).where(kt.storage.events.c.id == hook["id"])
                         .values(next_at=dt.datetime.now(dt.UTC)))
        monkeypatch.setenv("KARTOTEKA_WEBHOOK_ALLOW", "127.0.0.1")
        monkeypatch.setenv("HOOK_SECRET", "s")
        kt.automations.run_pending()
        (hook,) = events(kt, kind="webhook")
        assert hook["status"] == "done"
        assert seen == [str(hook["id"])] * 2  # twice, one id: a deduplicating receiver acts once
        runs = [i for i in kt.timeline.page("shipment", shipment["id"], [])["items"]
                if i["type"] == "automation" and i["automation"] == "shipment_moved"]
        assert sorted(r["status"] for r in runs) == ["done", "done"]  # the change once, the hook once
        kt.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_deleted_record_triggers_with_its_id(make_kt: Callable[..., Kartoteka],
                                               write_setup: Callable[..., Path]) -> None:
    files = dict(SETUP)
    files["setup.yaml"] = files["setup.yaml"].replace("        automations:\n", (
        "        automations:\n"
        "          gone:\n"
        "            entity: client\n"
        "            on: deleted\n"
        "            do: [{create: {entity: task, values: {subject: 'Client {id} was deleted'}}}]\n"
    ), 1)
    kt = make_kt(write_setup(files, "deleting"))
    client = kt.records.create("client", {"name": "Уходит"})
    kt.automations.run_pending()
    for task in kt.records.list_page("task", []).items:  # its welcome task links to it
        kt.records.delete("task", task["id"])
    kt.records.delete("client", client["id"])
    kt.automations.run_pending()
    subjects = sorted(t["subject"] for t in kt.records.list_page("task", []).items)
    assert f"Client {client['id']} was deleted" in subjects
    assert {e["status"] for e in events(kt)} == {"done"}


def test_kartoteka_worker_lists_and_retries_dead_letters(
        kt: Kartoteka, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kartoteka.cli import main

    kt.records.create("client", {"name": "Мёртвый"})
    with kt.db.write() as conn:  # as if it failed every attempt
        conn.execute(sa.update(kt.storage.events).values(status="dead", attempts=6,
                                                         last_error="tasks are closed"))
    (event,) = events(kt)
    folder = str(Path(kt.setup.source))
    listed = CliRunner().invoke(main, ["worker", folder, "--db", db_url, "--dead"])
    assert listed.exit_code == 0, listed.output
    assert f"{event['id']}\tcreate\tclient" in listed.output and "tasks are closed" in listed.output
    assert "1 dead letter(s); retry one with --retry ID" in listed.output
    retried = CliRunner().invoke(main, ["worker", folder, "--db", db_url, "--retry",
                                        str(event["id"])])
    assert retried.exit_code == 0 and "is pending again" in retried.output
    assert events(kt)[0]["status"] == "pending"
    missing = CliRunner().invoke(main, ["worker", folder, "--db", db_url, "--retry", "999"])
    assert missing.exit_code == 1 and "no event with id 999" in missing.output
