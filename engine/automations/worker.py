"""The worker: takes the outbox's due events (engine/storage/outbox.py) and runs the
automations they trigger (engine/setup/automations.py).

Due events are claimed in batches (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so several
workers share the queue; on SQLite the write lock serialises them) and run in the batch's
transaction: each automation an event triggers is checked (its trigger's details, the
loop guard, its `if:`), its actions run, the deliveries of the admin's webhook
subscriptions (engine/automations/subscriptions.py) are queued, and the event is marked
`done` — committed together, so an automation's writes happen once, even when a worker
dies mid-way (its transaction is rolled back, the events stay `pending`). The batch runs
in one savepoint; when an action fails, it runs again with a savepoint per event, so that
everything the failing event's automations wrote is undone and nothing else: the failure
is recorded on the record's timeline, and the event is tried again later (exponential
backoff) until MAX_ATTEMPTS, when it becomes a dead letter an admin can list and retry
(`GET /api/automations/events?status=dead`, `POST .../{id}/retry`). Deliveries (webhooks,
e-mail) are leased in the batch and made after its commit, outside any transaction.

Texts of notifications and e-mails are chosen per recipient: a user's `language`, an
address's from the field `language:` names, else the setup's first language.

Actions run as the system (every record, every field), attributed to the automation:
the events their writes cause carry it and a depth one more than the event's. The loop
guard: an event at MAX_DEPTH runs no automation (each is recorded as `refused`), and an
automation never fires on a change its own action made to the same record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from croniter import croniter
from sqlalchemy.dialects import postgresql, sqlite

from engine.access.acting import User
from engine.access.users import Users
from engine.automations import mail, webhook
from engine.automations.channels import DeliveryFailed
from engine.automations.localized import Localizer
from engine.automations.templates import render
from engine.errors import ErrorDetail, NotFound, RequestError, ValidationFailed
from engine.process.stages import StageMoves
from engine.records.service import Record, Records
from engine.records.titles import Titles
from engine.setup.automations import ACTOR, OWNER, RECORD, AutomationSpec
from engine.setup.names import link_column, poly_entity_column
from engine.setup.roles import ADMIN
from engine.setup.spec import FieldSpec, LinkSpec, label_text
from engine.storage.outbox import DEAD, DELIVERIES, DONE, PENDING, SUBSCRIBED_KIND
from engine.storage.rules import _clauses
from engine.types.moments import NotRelative, Relative, parse_relative

log = logging.getLogger("kartoteka.automations")

MAX_DEPTH = 5
MAX_ATTEMPTS = 6
#: the first retry waits this long; each next one twice as long, up to BACKOFF_CAP
BACKOFF = dt.timedelta(seconds=10)
BACKOFF_CAP = dt.timedelta(hours=1)
#: events claimed and committed together (each in its own savepoint): one commit for many
BATCH = 50
#: how long a worker holds a delivery it is making (then another may make it again)
LEASE = dt.timedelta(minutes=2)
#: how often the clock's triggers are looked at, at most
TICK = dt.timedelta(seconds=1)
#: a date trigger fires for dates that came due at most this long ago (so a new automation,
#: or a worker back after a stop, does not fire for every old record)
DATE_HORIZON = dt.timedelta(days=7)
#: a schedule's occurrence missed by longer than this (the server was stopped) is skipped
SCHEDULE_GRACE = dt.timedelta(hours=1)


@dataclass
class ActionContext:
    """What a Python action (`call:`) gets: the trigger record as it is now, its `with:`
    parameters, and the services to act with (as the system, inside the event's
    transaction: what it writes is undone if a later action fails)."""

    automation: str
    entity: str
    record: Record
    params: Mapping[str, Any]
    records: Records
    event: Mapping[str, Any]
    notify: Callable[[Sequence[int], str, str | None], list[int]]


#: a Python action: returns what it did (JSON), shown on the timeline
Action = Callable[[ActionContext], Any]


class _Redo(Exception):
    """A write inside the batch's joined savepoint failed and was caught: run it again,
    each event in a savepoint of its own."""


@dataclass
class _Run:
    automation: AutomationSpec
    detail: list[Any] = field(default_factory=list)


class Automations:
    def __init__(self, records: Records, stages: StageMoves, users: Users,
                 actions: Mapping[str, Action], zone: str):
        self.records = records
        self.stages = stages
        self.users = users
        self.actions = dict(actions)
        self.zone = ZoneInfo(zone)
        self.storage = records.storage
        self.db = records.db
        self.outbox = records.journal.outbox
        #: the titles of linked records a notification names, as its reader may read them
        self.records_titles = Titles(records)
        self.by_event: dict[tuple[str, str], list[AutomationSpec]] = {}
        for automation in self.storage.setup.automations:
            self.by_event.setdefault((automation.entity, automation.event), []).append(automation)
        #: the automations the clock fires (on: date, on: schedule)
        self.timed = [a for a in self.storage.setup.automations if a.on in ("date", "schedule")]
        self._last_tick: dt.datetime | None = None
        #: per date automation, the (record, due) keys this process saw fired
        self._seen: dict[str, set[tuple[int, str]]] = {}
        self._pending_seen: list[tuple[str, list[tuple[int, str]]]] = []
        #: set by a write that emitted events: an in-process worker wakes at once
        self.wake = threading.Event()
        self.outbox.listeners.append(self.wake.set)

    # -- the queue ---------------------------------------------------------------------------
    def run_pending(self, limit: int = 100) -> int:
        """Fire the date triggers and schedules that came due, then process up to `limit`
        due events; how many were processed."""
        self.fire_due()
        done = 0
        while done < limit:
            batch = self._process_batch(min(BATCH, limit - done))
            if not batch:
                break
            done += batch
        return done

    # -- the clock: date triggers and schedules ------------------------------------------------
    def fire_due(self) -> int:
        """Write an event for each date trigger and schedule that came due since the last
        look (at most once a second); each fires once, however many workers look (the
        `kt_fired` row is written with the event, ON CONFLICT DO NOTHING)."""
        if not self.timed:
            return 0
        now = self.records.clock()
        if self._last_tick is not None and dt.timedelta(0) <= now - self._last_tick < TICK:
            return 0
        self._last_tick = now
        fired = 0
        self._pending_seen = []
        with self.records.access.acting.as_user(None), self.db.write() as conn:
            for automation in self.timed:
                if automation.on == "date":
                    fired += self._fire_dates(conn, automation, now)
                else:
                    fired += self._fire_schedule(conn, automation, now)
        for name, keys in self._pending_seen:  # committed: fired here or by another worker
            self._seen[name].update(keys)
        return fired

    def _claim(self, conn: sa.Connection, automation: AutomationSpec,
               keys: Sequence[tuple[int, str]], now: dt.datetime) -> list[tuple[int, str]]:
        """The (record, due) keys this call fired: the others had fired already."""
        if not keys:
            return []
        table = self.storage.fired
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
        rows = [{"automation": automation.name, "record_id": r, "due": d, "at": now}
                for r, d in keys]
        claimed = conn.execute(insert.on_conflict_do_nothing().returning(
            table.c.record_id, table.c.due), rows).all()
        return [(row.record_id, row.due) for row in claimed]

    def _fire_dates(self, conn: sa.Connection, automation: AutomationSpec,
                    now: dt.datetime) -> int:
        """The records whose date (plus the offset) came due within DATE_HORIZON."""
        assert automation.date_field is not None
        spec = self.storage[automation.entity]
        column = spec.table.c[automation.date_field]
        offset = dt.timedelta(seconds=automation.offset_seconds)
        latest: dt.date | dt.datetime
        if spec.spec.fields[automation.date_field].type.name == "date":
            latest = now.astimezone(self.zone).date() - offset  # due by the local day
            earliest: dt.date | dt.datetime = latest - DATE_HORIZON
        else:
            latest = now - offset
            earliest = latest - DATE_HORIZON
        rows = conn.execute(self.records.access.unscoped(
            sa.select(spec.table.c.id, column).where(column <= latest, column > earliest),
            "a date trigger looks at every record's date")).all()
        # what this process saw fire already is not offered again (every look would try
        # the whole window's records; the database's kt_fired still decides, for all workers)
        seen = self._seen.setdefault(automation.name, set())
        keys = [(row[0], row[1].isoformat()) for row in rows]
        seen &= set(keys)  # what left the window is forgotten
        fresh = [key for key in keys if key not in seen]
        self._pending_seen.append((automation.name, fresh))  # once this transaction commits
        claimed = self._claim(conn, automation, fresh, now)
        for record_id, due in claimed:
            self.outbox.emit(conn, automation.entity, (record_id,), "date",
                             {"automation": automation.name, "field": automation.date_field,
                              "value": due}, by=None, at=now)
        return len(claimed)

    def _fire_schedule(self, conn: sa.Connection, automation: AutomationSpec,
                       now: dt.datetime) -> int:
        """The schedule's latest occurrence, when it is at most SCHEDULE_GRACE old: an
        event per record its `if:` selects."""
        assert automation.schedule is not None
        local = now.astimezone(self.zone)
        occurrence: dt.datetime = croniter(automation.schedule, local).get_prev(dt.datetime)
        if local - occurrence > SCHEDULE_GRACE:
            return 0
        due = occurrence.astimezone(dt.UTC).isoformat()
        if not self._claim(conn, automation, [(0, due)], now):
            return 0
        table = self.storage[automation.entity].table
        ids = conn.execute(self.records.access.unscoped(
            sa.select(table.c.id).where(*_clauses(self.storage, automation.when,
                                                  conn.dialect.name)).order_by(table.c.id),
            "a schedule runs for every record its condition selects")).scalars().all()
        self.outbox.emit(conn, automation.entity, ids, "schedule",
                         {"automation": automation.name, "at": due}, by=None, at=now)
        return len(ids)

    def _process_batch(self, size: int) -> int:
        """Claim up to `size` due events in one transaction (on PostgreSQL `FOR UPDATE SKIP
        LOCKED`: other workers take others); run each change event's automations in a
        savepoint of it, so its writes and its `done` commit together (one commit for the
        batch); lease the deliveries and make them after the commit. How many were taken."""
        events = self.storage.events
        now = self.records.clock()
        with self.records.access.acting.as_user(None), self.db.write() as conn:
            claim = (sa.select(events).where(events.c.status == PENDING, events.c.next_at <= now)
                     .order_by(events.c.id).limit(size))
            if conn.dialect.name == "postgresql":
                claim = claim.with_for_update(skip_locked=True)
            rows = [dict(row) for row in conn.execute(claim).mappings()]
            deliveries = [row for row in rows if row["kind"] in DELIVERIES]
            changes = [row for row in rows if row["kind"] not in DELIVERIES]
            if changes:
                self._run_changes(conn, changes, now, self._subscriptions(conn))
            if deliveries:
                # a network call must not hold the database: leased now, made after the commit
                conn.execute(sa.update(events).where(
                    events.c.id.in_([d["id"] for d in deliveries])).values(
                    attempts=events.c.attempts + 1, next_at=now + LEASE))
        for event in deliveries:
            self._deliver(event, now)
        return len(rows)

    def _subscriptions(self, conn: sa.Connection) -> dict[tuple[str, str], list[Any]]:
        """The active webhook subscriptions (kt_webhook), by (entity, event kind)."""
        t = self.storage.webhooks
        found: dict[tuple[str, str], list[Any]] = {}
        for row in conn.execute(sa.select(t.c.id, t.c.entity, t.c.events, t.c.role)
                                .where(t.c.active.is_(True)).order_by(t.c.id)):
            for kind in dict.fromkeys(SUBSCRIBED_KIND[e] for e in row.events or ()
                                      if e in SUBSCRIBED_KIND):
                found.setdefault((row.entity, kind), []).append(row)
        return found

    def _run_changes(self, conn: sa.Connection, changes: list[dict[str, Any]], now: dt.datetime,
                     subscriptions: Mapping[tuple[str, str], list[Any]]) -> None:
        """Run the claimed change events and mark them done. First all together, in one
        savepoint, every write inside joining it (`Database.joining`): two statements for
        the batch instead of four per event (a savepoint of the event and of each write,
        each a round trip on PostgreSQL). When any event fails — or a write inside failed
        and a Python action went on — that savepoint is undone and each event runs again
        in a savepoint of its own, so a failure undoes only its event's writes. The done
        marks and the timeline's runs are written once for the batch."""
        done: list[int] = []
        runs: list[dict[str, Any]] = []
        try:
            with conn.begin_nested(), self.db.joining() as state:
                for event in changes:
                    runs += self._runs(event, self._run_event_and_hooks(conn, event,
                                                                         subscriptions))
                    if state.broken:
                        raise _Redo
                    done.append(event["id"])
        except Exception:  # _Redo, or an event's failure: each in a savepoint of its own
            done, runs = [], []
            for event in changes:
                found = self._run_claimed(conn, event, now, subscriptions)
                if found is not None:
                    done.append(event["id"])
                    runs += found
        events = self.storage.events
        if done:
            conn.execute(sa.update(events).where(events.c.id.in_(done)).values(
                status=DONE, attempts=events.c.attempts + 1, done_at=now, last_error=None))
        if runs:
            conn.execute(sa.insert(self.storage.automation_runs), runs)

    def _run_event_and_hooks(self, conn: sa.Connection, event: dict[str, Any],
                             subscriptions: Mapping[tuple[str, str], list[Any]],
                             ) -> list[tuple[str, _Run | None, str | None]]:
        """The event's automations run, and its subscriptions' deliveries queued."""
        runs = self._run_event(conn, event)
        for subscription in subscriptions.get((event["entity"], event["kind"]), ()):
            self._queue_subscription(conn, subscription, event)
        return runs

    def _runs(self, event: Mapping[str, Any],
              runs: list[tuple[str, _Run | None, str | None]]) -> list[dict[str, Any]]:
        """The timeline's rows of what the event's automations did (or why not)."""
        at = dt.datetime.now(dt.UTC)
        rows = []
        for name, run, refusal in runs:
            if event["record_id"] is None or (run is None and not refusal):
                continue
            status, detail = ("done", {"actions": run.detail}) if run is not None else (
                "refused", {"reason": refusal})
            rows.append({"automation": name, "event_id": event["id"], "entity": event["entity"],
                         "record_id": event["record_id"], "at": at, "status": status,
                         "detail": detail})
        return rows

    def _run_claimed(self, conn: sa.Connection, event: dict[str, Any], now: dt.datetime,
                     subscriptions: Mapping[tuple[str, str], list[Any]],
                     ) -> list[dict[str, Any]] | None:
        """One event in a savepoint of its own: its timeline rows, or None when it failed
        (the failure recorded, the event retried later or dead)."""
        events = self.storage.events
        try:
            with self.db.write():  # the automations' writes: undone together on failure
                runs = self._run_event_and_hooks(conn, event, subscriptions)
        except Exception as error:
            message = _describe(error)
            log.warning("event %s (%s %s %s) failed: %s", event["id"], event["kind"],
                        event["entity"], event["record_id"], message)
            self._record_run(conn, event, getattr(error, "automation", "?"), "failed",
                             {"error": message, "attempt": event["attempts"] + 1})
            attempts = event["attempts"] + 1
            conn.execute(sa.update(events).where(events.c.id == event["id"]).values(
                attempts=attempts, last_error=message,
                status=DEAD if attempts >= MAX_ATTEMPTS else PENDING,
                next_at=now + min(BACKOFF * 2 ** (attempts - 1), BACKOFF_CAP)))
            return None
        return self._runs(event, runs)

    def _deliver(self, event: dict[str, Any], now: dt.datetime) -> None:
        """Make a delivery (its lease taken): done, or retried with backoff when the failure
        may pass, or dead at once when it cannot. Killed half-way, the lease runs out and
        the delivery is made again: at least once (receivers dedupe on the event id)."""
        payload = event["changes"] or {}
        try:
            if event["kind"] == "webhook":
                answer: Any = {"status": self._post(event["id"], payload)}
            else:
                self._mail(event["id"], payload)
                answer = {"to": payload["to"]}
            error: DeliveryFailed | None = None
        except DeliveryFailed as failure:
            error = failure
        except ValueError as failure:  # an address or a header that cannot be sent
            error = DeliveryFailed(str(failure), retryable=False)
        events = self.storage.events
        attempts = event["attempts"] + 1
        with self.records.access.acting.as_user(None), self.db.write() as conn:
            if error is None:
                conn.execute(sa.update(events).where(events.c.id == event["id"]).values(
                    status=DONE, done_at=self.records.clock(), last_error=None))
                self._record_run(conn, event, payload.get("automation") or "?", "done",
                                 {"actions": [{event["kind"]: answer}]})
                return
            message = str(error)
            dead = not error.retryable or attempts >= MAX_ATTEMPTS
            wait = max(min(BACKOFF * 2 ** (attempts - 1), BACKOFF_CAP),
                       dt.timedelta(seconds=error.retry_after or 0))
            conn.execute(sa.update(events).where(events.c.id == event["id"]).values(
                status=DEAD if dead else PENDING, last_error=message, next_at=now + wait))
            self._record_run(conn, event, payload.get("automation") or "?", "failed",
                             {"error": message, "attempt": attempts, "retried": not dead})
        log.warning("%s delivery %s failed%s: %s", event["kind"], event["id"],
                    "" if dead else ", retried later", message)

    def _post(self, event_id: int, payload: Mapping[str, Any]) -> int:
        if payload.get("webhook") is not None:
            return self._post_subscription(event_id, payload)
        secret = None
        if payload.get("secret_env"):
            value = os.environ.get(payload["secret_env"])
            if not value:
                raise DeliveryFailed(f"the webhook's secret_env {payload['secret_env']} is not "
                                     "set in the worker's environment; set it, then retry",
                                     retryable=False)
            secret = value.encode()
        body = json.dumps(payload["body"], ensure_ascii=False, separators=(",", ":")).encode()
        return webhook.post(payload["url"], body, secret=secret, event_id=str(event_id),
                            allowed=webhook.allowed_from_env())

    def _post_subscription(self, event_id: int, payload: Mapping[str, Any]) -> int:
        """A subscription's delivery, to its URL and signed with its secret as they are now
        (a URL fixed by the admin is used when a dead letter is retried)."""
        t = self.storage.webhooks
        with self.db.read() as conn:
            row = conn.execute(sa.select(t.c.url, t.c.secret).where(
                t.c.id == payload["webhook"])).first()
        if row is None:
            raise DeliveryFailed(f"webhook {payload['webhook']} was deleted", retryable=False)
        body = json.dumps(payload["body"], ensure_ascii=False, separators=(",", ":")).encode()
        return webhook.post(row.url, body, secret=row.secret.encode(), event_id=str(event_id),
                            allowed=webhook.allowed_from_env())

    @staticmethod
    def _mail(event_id: int, payload: Mapping[str, Any]) -> None:
        settings = mail.settings_from_env()
        if settings is None:
            raise DeliveryFailed(f"e-mail is off: set {mail.SMTP_ENV} (docs/automations.md, "
                                 "'E-mail'), then retry", retryable=False)
        message = mail.build_message(settings.sender, payload["to"], payload["subject"],
                                     payload.get("text") or "", event_id=str(event_id),
                                     language=payload.get("language"))
        mail.send(settings, message)

    def _record_run(self, conn: sa.Connection, event: Mapping[str, Any], automation: str,
                    status: str, detail: Any) -> None:
        if event["record_id"] is None:
            return
        conn.execute(sa.insert(self.storage.automation_runs).values(
            automation=automation, event_id=event["id"], entity=event["entity"],
            record_id=event["record_id"], at=dt.datetime.now(dt.UTC), status=status,
            detail=detail))

    # -- one event ---------------------------------------------------------------------------
    def _run_event(self, conn: sa.Connection,
                   event: dict[str, Any]) -> list[tuple[str, _Run | None, str | None]]:
        results: list[tuple[str, _Run | None, str | None]] = []
        for automation in self.by_event.get((event["entity"], event["kind"]), ()):
            if not _triggered(automation, event):
                continue
            if event["cause"] == automation.name:
                continue  # its own change: an automation does not trigger itself
            if event["depth"] >= MAX_DEPTH:
                results.append((automation.name, None,
                                f"loop guard: this change is {event['depth']} automations deep "
                                f"(at most {MAX_DEPTH})"))
                log.warning("automation %s refused by the loop guard on %s %s",
                            automation.name, event["entity"], event["record_id"])
                continue
            if automation.on != "deleted" and not self._holds(conn, automation, event["record_id"]):
                continue
            run = _Run(automation)
            try:
                with self.outbox.caused_by(automation.name, event["depth"] + 1):
                    for action in automation.actions:
                        run.detail.append(getattr(self, f"_do_{action.kind}")(
                            conn, automation, event, dict(action.params)))
            except Exception as error:
                error.automation = automation.name  # type: ignore[attr-defined]
                raise
            results.append((automation.name, run, None))
        return results

    def _holds(self, conn: sa.Connection, automation: AutomationSpec, record_id: int) -> bool:
        """Whether the record still exists and meets the automation's `if:`."""
        table = self.storage[automation.entity].table
        statement = sa.select(table.c.id).where(
            table.c.id == record_id, *_clauses(self.storage, automation.when, conn.dialect.name))
        return conn.execute(self.records.access.unscoped(
            statement, "an automation's condition is about the record, whoever may read it")
        ).first() is not None

    def _trigger(self, conn: sa.Connection, automation: AutomationSpec,
                 event: Mapping[str, Any]) -> Record:
        """The trigger record as the event left it; a deleted one is only its id."""
        if event["kind"] == "delete":
            return {"id": event["record_id"]}
        return _as_of(self._record(conn, automation.entity, event["record_id"]), event)

    def _record(self, conn: sa.Connection, entity: str, record_id: int) -> Record:
        found = self.records.fetch(conn, entity, [record_id])
        if not found:
            raise NotFound(f"no {entity} with id {record_id}")
        return found[0]

    # -- values and people ---------------------------------------------------------------------
    def _values(self, conn: sa.Connection, automation: AutomationSpec, event: Mapping[str, Any],
                target: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        fetched: list[Record] = []

        def trigger() -> Record:  # read only when a value needs it (a constant does not)
            if not fetched:
                fetched.append(self._trigger(conn, automation, event))
            return fetched[0]
        spec = self.storage[target].spec
        out: dict[str, Any] = {}
        for name, value in raw.items():
            link = spec.links.get(name)
            if value == RECORD:
                out[name] = ({"entity": automation.entity, "id": event["record_id"]}
                             if link is not None and link.polymorphic else event["record_id"])
            elif value == OWNER:
                out[name] = trigger().get("owner")
            elif value == ACTOR:
                out[name] = event["by"]
            elif isinstance(value, str) and value.startswith(RECORD + "."):
                out[name] = self._lookup(conn, automation.entity, trigger(),
                                         value[len(RECORD) + 1:])
            elif (relative := _relative(value, spec.fields.get(name))) is not None:
                out[name] = relative.resolve(self.records.clock(), self.zone,
                                             spec.fields[name].type.name).isoformat()
            elif isinstance(value, str) and ("{" in value or "}" in value):
                out[name] = self._render(conn, automation.entity, trigger(), value)
            else:
                out[name] = value
        return out

    def _render(self, conn: sa.Connection, entity: str, record: Record, text: str,
                hidden: Callable[[str], frozenset[str]] | None = None, *,
                single_line: bool = False, language: str | None = None) -> str:
        """`text` filled from `record`; for people (`language`: a notification's, an
        e-mail's) each value as that language writes it (engine/automations/localized.py),
        else as the API renders it (a value an action writes)."""
        if language is None:
            return render(text, lambda path: self._lookup(conn, entity, record, path, hidden),
                          single_line=single_line)
        localizer = Localizer(language, self.zone,
                              lambda target, ids: self.records_titles.of(conn, target, ids),
                              self.records_titles.has_title)
        return render(text, lambda path: localizer.value(
            self._spec_at(entity, path), self._lookup(conn, entity, record, path, hidden)),
                      single_line=single_line)

    def _spec_at(self, entity: str, path: str) -> FieldSpec | LinkSpec | None:
        """The field or link a placeholder's path ends at."""
        *links, name = path.split(".")
        spec = self.storage[entity].spec
        for part in links:
            link = spec.links.get(part)
            if link is None or link.polymorphic:
                return None
            spec = self.storage[link.target].spec
        return spec.fields.get(name) or spec.links.get(name)

    def _lookup(self, conn: sa.Connection, entity: str, record: Record, path: str,
                hidden: Callable[[str], frozenset[str]] | None = None) -> Any:
        """`field` or `link.field` of `record`, as the API renders it (None when hidden
        from the reader or unreachable)."""
        parts = path.split(".")
        current, current_entity = record, entity
        for part in parts[:-1]:
            if hidden is not None and part in hidden(current_entity):
                return None
            link = self.storage[current_entity].spec.links[part]
            value = current.get(part)
            if value is None:
                return None
            found = self.records.fetch(conn, link.target, [value])
            if not found:
                return None
            current, current_entity = found[0], link.target
        if hidden is not None and parts[-1] in hidden(current_entity):
            return None
        return current.get(parts[-1])

    def _people(self, conn: sa.Connection, automation: AutomationSpec, event: Mapping[str, Any],
                who: Any, count_in: str | None = None) -> list[int]:
        """The active users `who` names; for a role, with `count_in`, the least loaded one
        (fewest records of that entity owned) — else all of them."""
        def owner() -> int | None:
            found = self.records.fetch(conn, automation.entity, [event["record_id"]])
            return found[0].get("owner") if found else None

        if who == ACTOR:
            return [event["by"]] if event["by"] is not None else []
        if who == OWNER:
            return [user for user in [owner()] if user is not None]
        active = self.users.all_active(conn)
        if "user" in who:
            return [u.id for u in active if u.email == who["user"].lower()]
        team = who.get("team")
        if team == OWNER:
            owner_id = owner()
            team = next((u.team for u in active if u.id == owner_id), None)
        candidates = [u.id for u in active if who["role"] in u.roles
                      and ("team" not in who or (team is not None and u.team == team))]
        if count_in is None or not candidates:
            return candidates
        return [self._pick(conn, self.storage[count_in].table, candidates, "least_loaded")]

    # -- actions -------------------------------------------------------------------------------
    def _do_create(self, conn: sa.Connection, automation: AutomationSpec,
                   event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        target = params["entity"]
        values = self._values(conn, automation, event, target, params["values"])
        owner = None
        if params.get("owner") is not None:
            chosen = self._people(conn, automation, event, params["owner"], count_in=target)
            owner = chosen[0] if chosen else None
        record = self.records.create(target, values, owner=owner)
        return {"create": {"entity": target, "id": record["id"]}}

    def _do_set(self, conn: sa.Connection, automation: AutomationSpec,
                event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        entity, record_id = automation.entity, event["record_id"]
        if "way" in params:
            way = self.storage.setup.reverse_links[entity][params["way"]]
            source = self.storage[way.entity].table
            where = [source.c[link_column(way.link.name)] == record_id,
                     *_clauses(self.storage, params["where"], conn.dialect.name)]
            if way.link.polymorphic:
                where.append(source.c[poly_entity_column(way.link.name)] == entity)
            ids = conn.execute(self.records.access.unscoped(
                sa.select(source.c.id).where(*where).order_by(source.c.id),
                "an automation's set: reaches every record linking to its record")).scalars().all()
            values = self._values(conn, automation, event, way.entity, params["values"])
            for other in ids:
                self.records.update(way.entity, other, values)
            return {"set": {"entity": way.entity, "ids": list(ids), "fields": sorted(values)}}
        if "link" in params:
            trigger = self._record(conn, entity, record_id)
            link = self.storage[entity].spec.links[params["link"]]
            if trigger.get(link.name) is None:
                return {"set": {"link": link.name, "skipped": "the link is empty"}}
            entity, record_id = link.target, trigger[link.name]
            values = self._values(conn, automation, event, entity, params["values"])
        else:
            values = self._values(conn, automation, event, entity, params["values"])
        record = self.records.update(entity, record_id, values)
        return {"set": {"entity": entity, "id": record_id, "fields": sorted(values),
                        "version": record["version"]}}

    def _do_move(self, conn: sa.Connection, automation: AutomationSpec,
                 event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        current = self._record(conn, automation.entity, event["record_id"])
        if current.get("stage") == params["to"]:
            return {"move": {"to": params["to"], "skipped": "already there"}}
        self.stages.move(automation.entity, event["record_id"], {"to": params["to"]})
        return {"move": {"to": params["to"]}}

    def _do_assign(self, conn: sa.Connection, automation: AutomationSpec,
                   event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        """The first rule whose condition holds names the users; the least loaded of them
        (fewest records of the entity owned) or, round robin, the one whose latest record
        of the entity is the oldest (who got one longest ago) becomes the owner."""
        entity, record_id = automation.entity, event["record_id"]
        table = self.storage[entity].table
        for rule in params["rules"]:
            if rule["if"] and conn.execute(self.records.access.unscoped(
                    sa.select(table.c.id).where(table.c.id == record_id,
                                                *_clauses(self.storage, rule["if"],
                                                          conn.dialect.name)),
                    "an assignment rule is about the record")).first() is None:
                continue
            candidates = self._people(conn, automation, event, rule["to"])
            if not candidates:
                continue
            chosen = self._pick(conn, table, candidates, params["pick"])
            self.records.update(entity, record_id, {"owner": chosen})
            return {"assign": {"owner": chosen, "pick": params["pick"]}}
        return {"assign": {"skipped": "no rule named an active user"}}

    def _pick(self, conn: sa.Connection, table: sa.Table, candidates: list[int], pick: str) -> int:
        measure = sa.func.count() if pick == "least_loaded" else sa.func.max(table.c.id)
        found: dict[int, int] = dict(conn.execute(self.records.access.unscoped(
            sa.select(table.c.owner, measure).where(table.c.owner.in_(candidates))
            .group_by(table.c.owner), "whom to assign: what each candidate owns")).all())
        return min(candidates, key=lambda user: (found.get(user, 0), user))

    def _do_notify(self, conn: sa.Connection, automation: AutomationSpec,
                   event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        recipients: list[int] = []
        addresses: list[str] = []
        trigger = self._trigger(conn, automation, event)
        for who in params["to"]:
            if isinstance(who, dict) and "email_field" in who:
                address = self._lookup(conn, automation.entity, trigger, who["email_field"])
                if isinstance(address, str) and address and address not in addresses:
                    addresses.append(address)
                continue
            recipients += [u for u in self._people(conn, automation, event, who)
                           if u not in recipients]
        told = self.notify(conn, recipients, automation.entity, event["record_id"],
                           params["subject"], params.get("text"), automation=automation.name,
                           event=event)
        mailed: list[str] = []
        if params.get("email"):  # the users told in the app, at their own addresses
            for user in self.users.by_ids(conn, told):
                with self.records.access.acting.as_user(user):
                    seen = _as_of(self.records.fetch(
                        conn, automation.entity, [event["record_id"]])[0], event)
                    hidden = self._hidden_for(user)
                    self._queue_mail(conn, automation, event, [user.email], seen, params, hidden,
                                     self.language_of(user.language))
                mailed.append(user.email)
        # an address on the record (a client's): filled as the system sees the record, so
        # its template says only what the receiver may know; in the language a field of the
        # record names (`language: client.language`), else the setup's first
        language = self.language_of(self._lookup(conn, automation.entity, trigger,
                                                 params["language"])
                                    if params.get("language") else None)
        for address in addresses:
            self._queue_mail(conn, automation, event, [address], trigger, params, None, language)
            mailed.append(address)
        return {"notify": {"users": told, **({"email": mailed} if mailed else {})}}

    def _hidden_for(self, user: User) -> Callable[[str], frozenset[str]]:
        def hidden(name: str) -> frozenset[str]:
            with self.records.access.acting.as_user(user):
                rights = self.records.access.rights(name)
            return frozenset() if rights is None else rights.hidden
        return hidden

    def _queue_mail(self, conn: sa.Connection, automation: AutomationSpec,
                    event: Mapping[str, Any], to: list[str], record: Record,
                    params: Mapping[str, Any], hidden: Callable[[str], frozenset[str]] | None,
                    language: str) -> None:
        subject = self._render(conn, automation.entity, record,
                               self._text(params["subject"], language), hidden, single_line=True,
                               language=language)
        text = "" if params.get("text") is None else self._render(
            conn, automation.entity, record, self._text(params["text"], language), hidden,
            language=language)
        # Content-Language: the language the texts were found in, when it is one
        found = {language if language in texts else self.storage.setup.languages[0]
                 for texts in (params["subject"], params.get("text")) if texts is not None}
        self.outbox.deliver(conn, "email", automation.entity, event["record_id"], {
            "automation": automation.name, "to": to, "subject": subject, "text": text,
            "language": found.pop() if len(found) == 1 else None}, at=self.records.clock())

    def _as_role(self, entity: str, record: Record, role: str | None) -> Record:
        """`record` without the fields `role` hides (all of them without a role); only its
        id for a role the setup no longer has."""
        if not role:
            return record
        if role not in self.storage.setup.roles and role != ADMIN:
            return {"id": record.get("id")}
        reader = User(0, "", None, (role,), None, True)
        with self.records.access.acting.as_user(reader):
            rights = self.records.access.rights(entity)
        return {k: v for k, v in record.items()
                if rights is None or k not in rights.hidden}

    def _queue_subscription(self, conn: sa.Connection, subscription: Any,
                            event: Mapping[str, Any]) -> None:
        """A subscription's deliveries for a record event: one per trigger it names that
        the event is (a stage move is a stage_left and a stage_entered)."""
        changes = event["changes"] or {}
        triggers = [t for t in subscription.events if SUBSCRIBED_KIND.get(t) == event["kind"]]
        if event["kind"] == "stage":
            triggers = [t for t in triggers if changes.get(
                "to" if t == "stage_entered" else "from") is not None]
        if not triggers:
            return
        record = {"id": event["record_id"]} if event["kind"] == "delete" else _as_of(
            self._record(conn, event["entity"], event["record_id"]), event)
        record = self._as_role(event["entity"], record, subscription.role)
        for trigger in dict.fromkeys(triggers):
            body = {"webhook": subscription.id, "trigger": trigger, "entity": event["entity"],
                    "id": event["record_id"], "changes": event["changes"], "record": record}
            self.outbox.deliver(conn, "webhook", event["entity"], event["record_id"], {
                "automation": f"webhook {subscription.id}", "webhook": subscription.id,
                "body": json.loads(json.dumps(body, default=str))}, at=self.records.clock())

    def _do_webhook(self, conn: sa.Connection, automation: AutomationSpec,
                    event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        """A signed POST of the record (as `role` sees it, when given) to `url`, made once
        the event's transaction commits (a delivery event of its own, retried alone)."""
        record = self._as_role(automation.entity, self._trigger(conn, automation, event),
                               params.get("role"))
        body = {"automation": automation.name, "trigger": automation.on,
                "entity": automation.entity, "id": event["record_id"],
                "changes": event["changes"], "record": record}
        self.outbox.deliver(conn, "webhook", automation.entity, event["record_id"], {
            "automation": automation.name, "url": params["url"],
            "secret_env": params.get("secret_env"),
            "body": json.loads(json.dumps(body, default=str))}, at=self.records.clock())
        return {"webhook": {"url": params["url"], "queued": True}}

    def _do_call(self, conn: sa.Connection, automation: AutomationSpec,
                 event: Mapping[str, Any], params: dict[str, Any]) -> Any:
        action = self.actions[params["action"]]
        record = self._trigger(conn, automation, event)

        def notify(users: Sequence[int], subject: str, text: str | None = None) -> list[int]:
            language = self.storage.setup.languages[0]
            return self.notify(conn, users, automation.entity, event["record_id"],
                               {language: subject}, None if text is None else {language: text},
                               automation=automation.name)
        result = action(ActionContext(automation.name, automation.entity, record,
                                      params.get("with") or {}, self.records, dict(event), notify))
        return {"call": {"action": params["action"], "result": result}}

    # -- notifications -------------------------------------------------------------------------
    def notify(self, conn: sa.Connection, users: Sequence[int], entity: str, record_id: int,
               subject: Mapping[str, str], text: Mapping[str, str] | None, *,
               automation: str | None = None,
               event: Mapping[str, Any] | None = None) -> list[int]:
        """In-app notifications to `users` about a record: only those who may read it are
        told, and each text is filled with the record as that user sees it (a hidden field
        is left empty), in the user's language. Returns who was told."""
        told = []
        for user in self.users.by_ids(conn, users):
            if not user.active:
                continue
            with self.records.access.acting.as_user(user):
                if not self.records.visible(conn, entity, record_id):
                    continue
                seen = self.records.fetch(conn, entity, [record_id])[0]
                if event is not None:
                    seen = _as_of(seen, event)

                hidden = self._hidden_for(user)
                language = self.language_of(user.language)
                subject_text = self._render(conn, entity, seen, self._text(subject, language),
                                            hidden, language=language)
                body = None if text is None else self._render(
                    conn, entity, seen, self._text(text, language), hidden, language=language)
            conn.execute(sa.insert(self.storage.notifications).values(
                user_id=user.id, automation=automation, entity=entity, record_id=record_id,
                subject=subject_text[:2000], text=body, at=dt.datetime.now(dt.UTC)))
            told.append(user.id)
        return told

    def language_of(self, wanted: Any) -> str:
        """`wanted` when it is one of the setup's languages, else the setup's first."""
        languages = self.storage.setup.languages
        return wanted if isinstance(wanted, str) and wanted in languages else languages[0]

    def _text(self, texts: Mapping[str, str], language: str) -> str:
        """The text in `language`, else in the setup's first language."""
        if language in texts:
            return texts[language]
        return label_text(texts, self.storage.setup.languages[0])

    # -- dead letters --------------------------------------------------------------------------
    def events(self, status: str, limit: int = 100) -> list[dict[str, Any]]:
        events = self.storage.events
        with self.db.read() as conn:
            rows = conn.execute(sa.select(events).where(events.c.status == status)
                                .order_by(events.c.id.desc()).limit(limit)).mappings().all()
        return [_event_json(row) for row in rows]

    def retry(self, event_id: int) -> dict[str, Any]:
        """Put a dead (or failing) event back in the queue, due now, with its attempts reset."""
        events = self.storage.events
        with self.db.write() as conn:
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).mappings().first()
            if row is None:
                raise NotFound(f"no event with id {event_id}")
            if row["status"] == DONE:
                raise ValidationFailed("the event is done", [ErrorDetail(
                    "id", "was processed; only a dead or pending event is retried")],
                    code="event_done")
            conn.execute(sa.update(events).where(events.c.id == event_id).values(
                status=PENDING, attempts=0, next_at=dt.datetime.now(dt.UTC)))
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).mappings().one()
        self.wake.set()
        return _event_json(row)


def _triggered(automation: AutomationSpec, event: Mapping[str, Any]) -> bool:
    """Whether the event is the automation's trigger, its details (stage, fields, values)
    included."""
    changes = event["changes"] or {}
    if automation.on in ("date", "schedule"):  # fired for one automation by name
        return bool(changes.get("automation") == automation.name)
    if automation.on in ("stage_entered", "stage_left"):
        stage = changes.get("to") if automation.on == "stage_entered" else changes.get("from")
        return stage is not None and (automation.stages is None or stage in automation.stages)
    if automation.on != "updated":
        return True
    if automation.changed and not any(name in changes for name in automation.changed):
        return False
    for name, value in automation.old.items():
        if name not in changes or not isinstance(changes[name], list) or changes[name][0] != value:
            return False
    for name, value in automation.new.items():
        if name not in changes or not isinstance(changes[name], list) or changes[name][1] != value:
            return False
    return True


def _as_of(record: Record, event: Mapping[str, Any]) -> Record:
    """The record as the event left it: the values its change set (a stage entered, the new
    values of an update) over the record as it is now, so a text about the event says what
    happened even when the record moved on before the worker ran. Only keys the record has
    (a field hidden from the reader stays hidden)."""
    changes = event.get("changes") or {}
    if event["kind"] == "stage" and changes.get("to") is not None:
        new = {"stage": changes["to"]}
    elif event["kind"] == "update":
        new = {k: v[1] for k, v in changes.items() if isinstance(v, list) and len(v) == 2}
    else:
        return record
    return {**record, **{k: v for k, v in new.items() if k in record}}


def _relative(value: Any, field: FieldSpec | None) -> Relative | None:
    """`value` as a relative moment (`now+2d`) for a date or datetime field, else None."""
    if not isinstance(value, str) or field is None or field.type.name not in ("date", "datetime"):
        return None
    try:
        return parse_relative(value, field.type.name)
    except NotRelative:
        return None


def _describe(error: BaseException) -> str:
    if isinstance(error, RequestError):
        details = "; ".join(f"{d.field}: {d.problem}" if d.field else d.problem
                            for d in error.details)
        return f"{error.message}" + (f" ({details})" if details else "")
    return f"{type(error).__name__}: {error}"


def _event_json(row: Any) -> dict[str, Any]:
    def moment(value: Any) -> Any:
        return None if value is None else value.isoformat().replace("+00:00", "Z")
    return {"id": row["id"], "kind": row["kind"], "entity": row["entity"],
            "record_id": row["record_id"], "changes": row["changes"], "at": moment(row["at"]),
            "depth": row["depth"], "cause": row["cause"], "status": row["status"],
            "attempts": row["attempts"], "next_at": moment(row["next_at"]),
            "last_error": row["last_error"], "done_at": moment(row["done_at"])}
