"""A change's automation event is written with its history row, in the write's transaction,
on both databases — on PostgreSQL by one statement (`WITH … INSERT INTO kt_event …
INSERT INTO kt_change …`, engine/storage/journal.py), so the event costs the write no round
trip of its own. The event carries what the history row does; a write refused after its
history was written (here by a rule, checked last) leaves neither; an entity nothing
listens to writes its history and no event.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Kartoteka
from engine.errors import RuleFailed

FILES = {
    "setup.yaml": """
        name: Events
        automations:
          greet:
            entity: lead
            on: created
            do: [{set: {status: new}}]
          rescore:
            entity: lead
            on: updated
            changed: [score]
            do: [{set: {status: scored}}]
    """,
    "lead.yaml": """
        entity: lead
        fields:
          name: {type: string, required: true}
          score: {type: integer}
          status: {type: choice, options: [new, scored]}
        rules:
          sane_score:
            require: {score: {lte: 100}}
            message: "A score is at most 100"
    """,
    "note.yaml": """
        entity: note
        fields:
          text: {type: string}
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(FILES))


def _rows(kt: Kartoteka, table: sa.Table) -> list[dict[str, Any]]:
    with kt.db.read(system="test: the journal and the outbox as written") as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def test_an_event_carries_what_its_history_row_says(kt: Kartoteka) -> None:
    lead = kt.records.create("lead", {"name": "سلام 你好 Привет", "score": 7})
    kt.records.update("lead", lead["id"], {"score": 100})
    history = _rows(kt, kt.storage.changes)
    events = _rows(kt, kt.storage.events)
    assert [(e["kind"], e["status"], e["depth"], e["cause"]) for e in events] == \
        [("create", "pending", 0, None), ("update", "pending", 0, None)]
    for event, change in zip(events, history, strict=True):
        assert (event["entity"], event["record_id"], event["at"], event["by"],
                event["changes"]) == (change["entity"], change["record_id"], change["at"],
                                      change["by"], change["changes"])
        assert event["next_at"] == event["at"]
    assert events[0]["changes"]["name"] == "سلام 你好 Привет"


def test_a_refused_write_leaves_neither_history_nor_event(kt: Kartoteka) -> None:
    with pytest.raises(RuleFailed):
        kt.records.create("lead", {"name": "Слишком", "score": 101})
    lead = kt.records.create("lead", {"name": "ok", "score": 1})
    with pytest.raises(RuleFailed):
        kt.records.update("lead", lead["id"], {"score": 2**40})
    assert [e["kind"] for e in _rows(kt, kt.storage.events)] == ["create"]
    assert [c["action"] for c in _rows(kt, kt.storage.changes)] == ["create"]
    assert kt.records.get("lead", lead["id"])["score"] == 1


def test_a_change_nothing_listens_to_writes_history_only(kt: Kartoteka) -> None:
    note = kt.records.create("note", {"text": "没有"})
    kt.records.update("note", note["id"], {"text": "ничего"})
    lead = kt.records.create("lead", {"name": "x"})
    kt.records.update("lead", lead["id"], {"name": "y"})  # `rescore` listens to score only
    assert [(c["entity"], c["action"]) for c in _rows(kt, kt.storage.changes)] == \
        [("note", "create"), ("note", "update"), ("lead", "create"), ("lead", "update")]
    assert [(e["entity"], e["kind"]) for e in _rows(kt, kt.storage.events)] == \
        [("lead", "create"), ("lead", "update")]
    kt.automations.run_pending()
    assert kt.records.get("lead", lead["id"])["status"] == "new"
