"""The outbox of automations: events written in the same transaction as the change that
causes them, and what the worker made of them (engine/automations/).

- `kt_event`: one row per record change an automation listens to (`create`, `update`,
  `delete`, `stage`), written by the journal inside the write's transaction — a
  rolled-back change leaves no event, a committed one always has its event. The worker
  claims a due `pending` event, runs the automations it triggers in one transaction that
  also marks it `done` (so their writes happen once), or counts a failed attempt and
  retries it later with exponential backoff, until it is `dead` (the dead letters an
  admin lists and retries).
- `kt_automation_run`: what an automation did for an event (or why it did nothing: its
  condition, the loop guard, an error): the record's timeline shows them.
- `kt_notification`: in-app notifications, one per recipient.
- `kt_fired`: what date triggers and schedules have fired, so each fires once.

Only entities with automations or webhook subscriptions (`kt_webhook`, made over the API)
write events, and only of the kinds they listen to: a setup without either pays one set
lookup per write, and a read of `kt_webhook` every SUBSCRIPTIONS_TTL seconds.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.types.columns import UTCDateTime, id_column_type, json_column

PENDING, DONE, DEAD = "pending", "done", "dead"
#: how long the webhook subscriptions' (entity, kind) pairs are trusted without reading
#: kt_webhook again: a subscription made by another process is heard within this time
SUBSCRIPTIONS_TTL = 2.0
#: the event kind of each trigger a webhook subscription may name
SUBSCRIBED_KIND = {"created": "create", "updated": "update", "deleted": "delete",
                   "stage_entered": "stage", "stage_left": "stage"}
#: events that are deliveries to the outside, not changes: made outside a transaction
DELIVERIES = ("webhook", "email")


def outbox_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table]:
    events = sa.Table(
        "kt_event", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=True),
        sa.Column("changes", json_column(), nullable=True),
        sa.Column("by", sa.BigInteger(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        #: how many automations deep the change that wrote it was (0: a person's change)
        sa.Column("depth", sa.SmallInteger(), nullable=False),
        #: the automation whose action made the change, if one did
        sa.Column("cause", sa.String(64), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    #: the worker's claim (pending, in id order: the first pending event is found at once
    #: however many done ones came before it — an index on (status, next_at) left
    #: PostgreSQL walking the primary key through every done event, 75 ms a claim after
    #: 200,000) and the dead-letter list (a status, newest first)
    sa.Index("ix_kt_event_status", events.c.status, events.c.id)
    runs = sa.Table(
        "kt_automation_run", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        #: done, failed, refused (the loop guard)
        sa.Column("status", sa.String(8), nullable=False),
        #: what it did (one entry per action) or why it failed
        sa.Column("detail", json_column(), nullable=True),
        sqlite_autoincrement=True,
    )
    sa.Index("ix_kt_automation_run_record", runs.c.entity, runs.c.record_id, runs.c.at)
    notifications = sa.Table(
        "kt_notification", metadata,
        sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(),
                  sa.ForeignKey("kt_user.id", ondelete="CASCADE",
                                name="fk_kt_notification_user_id"), nullable=False),
        sa.Column("automation", sa.String(64), nullable=True),
        sa.Column("entity", sa.String(64), nullable=True),
        sa.Column("record_id", sa.BigInteger(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("read_at", UTCDateTime(), nullable=True),
        sqlite_autoincrement=True,
    )
    sa.Index("ix_kt_notification_user", notifications.c.user_id, notifications.c.read_at,
             notifications.c.id)
    #: what the clock fired: a date trigger per (automation, record, the date's value), a
    #: schedule per (automation, 0, the occurrence) — once, however many workers look
    fired = sa.Table(
        "kt_fired", metadata,
        sa.Column("automation", sa.String(64), primary_key=True),
        sa.Column("record_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("due", sa.String(40), primary_key=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    return events, runs, notifications, fired


@dataclass(frozen=True)
class Cause:
    """The automation whose actions are running, and how deep in a chain it is."""

    automation: str
    depth: int


class Outbox:
    """Writes the events of one engine's changes (the journal calls `emit`)."""

    def __init__(self, events: sa.Table, watched: Iterable[tuple[str, str]],
                 webhooks: sa.Table | None = None):
        self.events = events
        #: (entity, event kind) pairs some automation listens to
        self.watched = frozenset(watched)
        #: the admin's webhook subscriptions (kt_webhook), read every SUBSCRIPTIONS_TTL
        self.webhooks = webhooks
        self._subscribed: frozenset[tuple[str, str]] = frozenset()
        self._subscribed_at = -SUBSCRIPTIONS_TTL
        self._insert = sa.insert(events)
        #: called after events are written (before the commit): a worker in this process
        #: wakes, and finds them once the change commits
        self.listeners: list[Callable[[], None]] = []
        self._cause: ContextVar[Cause | None] = ContextVar(f"kartoteka_cause_{id(self):x}",
                                                           default=None)

    @contextmanager
    def caused_by(self, automation: str, depth: int) -> Iterator[None]:
        """The writes inside are an automation's: their events carry it and `depth`."""
        token = self._cause.set(Cause(automation, depth))
        try:
            yield
        finally:
            self._cause.reset(token)

    def forget_subscriptions(self) -> None:
        """After a subscription changed in this process: the next write reads them again."""
        self._subscribed_at = -SUBSCRIPTIONS_TTL

    def subscribed(self, conn: sa.Connection) -> frozenset[tuple[str, str]]:
        """The (entity, event kind) pairs an active webhook subscription listens to."""
        now = time.monotonic()
        if self.webhooks is not None and now - self._subscribed_at >= SUBSCRIPTIONS_TTL:
            t = self.webhooks
            rows = conn.execute(sa.select(t.c.entity, t.c.events).where(t.c.active.is_(True)))
            self._subscribed = frozenset((entity, SUBSCRIBED_KIND[event]) for entity, events in rows
                                         for event in events or () if event in SUBSCRIBED_KIND)
            self._subscribed_at = now
        return self._subscribed

    def deliver(self, conn: sa.Connection, kind: str, entity: str, record_id: int | None,
                payload: Mapping[str, Any], *, at: dt.datetime) -> None:
        """A delivery (`webhook`, `email`) to make once this transaction commits: written
        beside the change that asks for it, retried by the worker until it goes through."""
        conn.execute(self._insert, self._row(kind, entity, record_id, payload, None, at))
        for listener in self.listeners:
            listener()

    def _row(self, kind: str, entity: str, record_id: int | None,
             changes: Mapping[str, Any] | None, by: int | None, at: dt.datetime) -> dict[str, Any]:
        """An event's row: pending, due now, carrying the automation whose write it is."""
        cause = self._cause.get()
        return {"kind": kind, "entity": entity, "record_id": record_id,
                "changes": dict(changes) if changes else None, "by": by, "at": at,
                "depth": 0 if cause is None else cause.depth,
                "cause": None if cause is None else cause.automation,
                "status": PENDING, "attempts": 0, "next_at": at}

    def emit(self, conn: sa.Connection, entity: str, record_ids: Iterable[int], kind: str,
             changes: Mapping[str, Any] | None, *, by: int | None, at: dt.datetime) -> None:
        rows = self.rows(conn, entity, record_ids, kind, changes, by=by, at=at)
        if rows:  # one row as one execute: an executemany costs more on PostgreSQL
            conn.execute(self._insert, rows[0] if len(rows) == 1 else rows)
            self.woken()

    def listens(self, conn: sa.Connection, entity: str, kind: str) -> bool:
        """Whether an automation or a webhook subscription listens to `kind` of `entity`."""
        return (entity, kind) in self.watched or (entity, kind) in self.subscribed(conn)

    def rows(self, conn: sa.Connection, entity: str, record_ids: Iterable[int], kind: str,
             changes: Mapping[str, Any] | None, *, by: int | None,
             at: dt.datetime) -> list[dict[str, Any]]:
        """The event rows `emit` writes (none when no automation nor webhook subscription
        listens), for a caller that writes a batch's together (`Journal.deferred`) and then
        calls `woken`."""
        if not self.listens(conn, entity, kind):
            return []
        return [self._row(kind, entity, record_id, changes, by, at) for record_id in record_ids]

    def woken(self) -> None:
        """Events were written: wake the listeners."""
        for listener in self.listeners:
            listener()
