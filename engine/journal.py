"""The journal: what happened to each record, written in the same transaction as the
change itself, one statement per event — the card's history, the stage history behind
the funnel, comments and activities."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.storage import Storage

#: record keys that change on every write and say nothing about what the user changed
UNJOURNALLED = frozenset({"id", "created_at", "updated_at", "version"})


class Journal:
    def __init__(self, storage: Storage):
        self.storage = storage

    def change(self, conn: sa.Connection, entity: str, record_id: int, action: str,
               changes: Mapping[str, Any] | None, *, by: int | None, at: dt.datetime) -> None:
        conn.execute(sa.insert(self.storage.changes).values(
            entity=entity, record_id=record_id, at=at, by=by, action=action,
            changes=dict(changes) if changes else None))

    def changes_many(self, conn: sa.Connection, entity: str, record_ids: Iterable[int],
                     action: str, changes: Mapping[str, Any] | None, *, by: int | None,
                     at: dt.datetime) -> None:
        rows = [{"entity": entity, "record_id": record_id, "at": at, "by": by, "action": action,
                 "changes": dict(changes) if changes else None} for record_id in record_ids]
        if rows:
            conn.execute(sa.insert(self.storage.changes), rows)

    def stage(self, conn: sa.Connection, entity: str, record_id: int, pipeline: str,
              from_stage: str | None, to_stage: str, *, by: int | None, at: dt.datetime,
              seconds: int | None) -> None:
        conn.execute(sa.insert(self.storage.stage_history).values(
            entity=entity, record_id=record_id, at=at, by=by, pipeline=pipeline,
            from_stage=from_stage, to_stage=to_stage, seconds=seconds))

    def last_stage_entry(self, conn: sa.Connection, entity: str,
                         record_id: int) -> dt.datetime | None:
        history = self.storage.stage_history
        at: dt.datetime | None = conn.execute(
            sa.select(history.c.at)
            .where(history.c.entity == entity, history.c.record_id == record_id)
            .order_by(history.c.at.desc(), history.c.id.desc()).limit(1)
        ).scalar()
        return at


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`{key: [old, new]}` for every user-visible key whose JSON value changed."""
    return {key: [before.get(key), value] for key, value in after.items()
            if key not in UNJOURNALLED and before.get(key) != value}
