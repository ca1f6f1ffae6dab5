"""The worker runs a batch of events in one savepoint, their writes joined without a
savepoint each (engine/automations/worker.py, `_run_changes`); when any event fails, or a
Python action catches a failed write and goes on, the batch is run again with a savepoint
per event. On both databases: a failing event among good ones undoes only itself, and a
caught failure (which leaves a PostgreSQL transaction aborted without a savepoint) does
not lose the batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Kartoteka
from engine.automations.worker import ActionContext
from engine.core import Settings
from engine.errors import KartotekaError
from engine.setup.loader import load_setup
from engine.storage.database import DatabaseSettings

SETUP = {
    "setup.yaml": """
        name: Batches
        automations:
          welcome:
            entity: client
            on: created
            do:
              - call: {action: welcome}
    """,
    "client.yaml": """
        entity: client
        fields:
          name: {type: string, required: true}
          tier: {type: choice, options: [basic, gold]}
    """,
    "task.yaml": """
        entity: task
        fields:
          subject: {type: string, required: true}
    """,
}


@pytest.fixture
def engine_of(write_setup: Callable[..., Path], db_url: str) -> Iterator[Callable[..., Kartoteka]]:
    made: list[Kartoteka] = []

    def make(action: Callable[[ActionContext], Any]) -> Kartoteka:
        folder = write_setup(SETUP)
        kt = Kartoteka(load_setup(folder, actions=["welcome"]),
                       Settings(DatabaseSettings(url=db_url)), actions={"welcome": action})
        kt.migrate()
        made.append(kt)
        return kt
    yield make
    for kt in made:
        kt.close()


def close_tasks(kt: Kartoteka) -> None:
    """From now on the task table refuses every insert, inside the database."""
    with kt.db.write() as conn:
        conn.execute(sa.text("CREATE TRIGGER no_tasks BEFORE INSERT ON task "
                             "BEGIN SELECT RAISE(ABORT, 'tasks are closed'); END")
                     if kt.db.dialect == "sqlite" else sa.text(
                         "CREATE FUNCTION no_tasks() RETURNS trigger AS $$ BEGIN "
                         "RAISE EXCEPTION 'tasks are closed'; END $$ LANGUAGE plpgsql; "
                         "CREATE TRIGGER no_tasks BEFORE INSERT ON task "
                         "FOR EACH ROW EXECUTE FUNCTION no_tasks()"))


def statuses(kt: Kartoteka) -> list[tuple[int | None, str]]:
    events = kt.storage.events
    with kt.db.read() as conn:
        return [(r.record_id, r.status) for r in conn.execute(
            sa.select(events.c.record_id, events.c.status).order_by(events.c.id))]


def tiers(kt: Kartoteka) -> dict[str, Any]:
    table = kt.storage["client"].table
    with kt.db.read(system="a test reads every client") as conn:
        return {r.name: r.tier for r in conn.execute(sa.select(table.c.name, table.c.tier))}


def tasks(kt: Kartoteka) -> int:
    table = kt.storage["task"].table
    with kt.db.read(system="a test counts every task") as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_failing_event_among_good_ones_undoes_only_itself(
        engine_of: Callable[..., Kartoteka]) -> None:
    def welcome(context: ActionContext) -> Any:
        context.records.update("client", context.record["id"], {"tier": "gold"})
        if context.record["name"] == "Сбой":
            context.records.create("task", {"subject": f"Позвонить {context.record['name']}"})
        return None
    kt = engine_of(welcome)
    close_tasks(kt)
    ids = [kt.records.create("client", {"name": name})["id"]
           for name in ("Ромашка", "Сбой", "مشتری", "客户")]
    assert kt.automations.run_pending() == 4
    assert statuses(kt) == [(ids[0], "done"), (ids[1], "pending"), (ids[2], "done"),
                            (ids[3], "done")]
    # the failed event's own update is undone with it; the others' stay
    assert tiers(kt) == {"Ромашка": "gold", "Сбой": None, "مشتری": "gold", "客户": "gold"}
    runs = {(i["automation"], i["status"]) for i in kt.timeline.page(
        "client", ids[1], [])["items"] if i["type"] == "automation"}
    assert runs == {("welcome", "failed")}
    assert [i["status"] for i in kt.timeline.page("client", ids[0], [])["items"]
            if i["type"] == "automation"] == ["done"]


def test_a_failed_write_a_python_action_catches_does_not_lose_the_batch(
        engine_of: Callable[..., Kartoteka]) -> None:
    caught: list[str] = []

    def welcome(context: ActionContext) -> Any:
        try:
            context.records.create("task", {"subject": "Позвонить"})
        except (KartotekaError, sa.exc.DBAPIError) as error:
            caught.append(type(error).__name__)
        context.records.update("client", context.record["id"], {"tier": "gold"})
        return {"caught": len(caught)}
    kt = engine_of(welcome)
    close_tasks(kt)
    for name in ("Ромашка", "Лютик"):
        kt.records.create("client", {"name": name})
    assert kt.automations.run_pending() == 2
    assert [status for _, status in statuses(kt)] == ["done", "done"]
    assert tiers(kt) == {"Ромашка": "gold", "Лютик": "gold"}
    assert tasks(kt) == 0
    # the first event's failure broke the joined batch; it ran again, event by event
    assert len(caught) == 3
