"""Webhook subscriptions an admin makes over the API (`/api/webhooks`), beside the setup's
`webhook:` actions: "POST this entity's records to this URL when these events happen".

A subscription names an entity, its events (created, updated, deleted, stage_entered,
stage_left), the URL, the signing secret and the role whose view of the record is sent.
Its events are delivered by the worker exactly like a setup webhook's (signed, retried,
dead letters, leases: engine/automations/worker.py); the outbox writes the events of a
subscribed entity as it does for automations (engine/storage/outbox.py).

Checked like every body: unknown keys and wrong values are a 422 naming the fields, and
the URL passes the same SSRF rules as a delivery (`webhook.check_target`, the
`KARTOTEKA_WEBHOOK_ALLOW` allow-list included) before it is stored. The secret is
write-only: never answered, except once when the server generated it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from engine.automations import webhook
from engine.automations.channels import DeliveryFailed
from engine.errors import ErrorDetail, Forbidden, NotFound, ValidationFailed
from engine.setup.roles import ADMIN
from engine.setup.spec import SetupSpec
from engine.storage.database import Database
from engine.storage.outbox import Outbox
from engine.storage.webhooks import SECRET_LENGTH, URL_LENGTH
from engine.types.columns import utc_text
from engine.types.fields import ValueProblem, check_text

#: the triggers a subscription may listen to (the record events of automations)
EVENTS = ("created", "updated", "deleted", "stage_entered", "stage_left")
KEYS = ("entity", "events", "url", "secret", "role", "active")
#: a secret shorter than this is too easy to guess
SECRET_MIN = 16


class Webhooks:
    def __init__(self, table: sa.Table, db: Database, setup: SetupSpec, outbox: Outbox,
                 may_manage: Callable[[], bool]):
        self.table = table
        self.db = db
        self.setup = setup
        self.outbox = outbox
        self.may_manage = may_manage

    def _require_admin(self) -> None:
        if not self.may_manage():
            raise Forbidden("only an admin sees and changes webhook subscriptions",
                            code="operation_forbidden")

    # -- reading -------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        self._require_admin()
        with self.db.read() as conn:
            rows = conn.execute(sa.select(self.table).order_by(self.table.c.id)).all()
        return [_json(row) for row in rows]

    def get(self, webhook_id: int) -> dict[str, Any]:
        self._require_admin()
        with self.db.read() as conn:
            return _json(self._row(conn, webhook_id))

    def _row(self, conn: sa.Connection, webhook_id: int) -> Any:
        row = conn.execute(sa.select(self.table).where(self.table.c.id == webhook_id)).first()
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id}")
        return row

    # -- changing ------------------------------------------------------------------------------
    def create(self, body: Any) -> dict[str, Any]:
        """A new subscription; answers it, with `secret` when the server generated one
        (the only time it is shown)."""
        self._require_admin()
        values = self._checked(body, None)
        generated = None
        if "secret" not in values:
            generated = values["secret"] = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        with self.db.write() as conn:
            webhook_id = conn.execute(sa.insert(self.table).values(
                **{"role": None, "active": True, **values}, created_at=now, updated_at=now,
            ).returning(self.table.c.id)).scalar_one()
            answer = _json(self._row(conn, webhook_id))
        self.outbox.forget_subscriptions()
        return {**answer, "secret": generated} if generated is not None else answer

    def change(self, webhook_id: int, body: Any) -> dict[str, Any]:
        self._require_admin()
        with self.db.write() as conn:
            row = self._row(conn, webhook_id)
            values = self._checked(body, row)
            if values:
                conn.execute(sa.update(self.table).where(self.table.c.id == webhook_id).values(
                    **values, updated_at=dt.datetime.now(dt.UTC)))
            answer = _json(self._row(conn, webhook_id))
        self.outbox.forget_subscriptions()
        return answer

    def delete(self, webhook_id: int) -> None:
        """Deliveries already queued for it fail (not retried): the subscription is gone."""
        self._require_admin()
        with self.db.write() as conn:
            self._row(conn, webhook_id)
            conn.execute(sa.delete(self.table).where(self.table.c.id == webhook_id))
        self.outbox.forget_subscriptions()

    # -- checking ------------------------------------------------------------------------------
    def _checked(self, body: Any, current: Any) -> dict[str, Any]:
        """The body's values, every problem named by field (422); `current` is the stored
        row when changing one (what the body leaves out stays)."""
        if not isinstance(body, dict):
            raise ValidationFailed("a webhook subscription is a JSON object",
                                   [ErrorDetail("", "must be an object")])
        problems = [ErrorDetail(str(key), "is not a webhook property; use: " + ", ".join(KEYS))
                    for key in body if key not in KEYS]
        if current is None:
            problems += [ErrorDetail(key, "is required") for key in ("entity", "events", "url")
                         if key not in body]
        values = {key: value for key, value in body.items() if key in KEYS}
        entity = values.get("entity", None if current is None else current.entity)
        if "entity" in values and (not isinstance(values["entity"], str)
                                   or values["entity"] not in self.setup.entities):
            problems.append(ErrorDetail("entity", f"no entity {values['entity']!r}; entities: "
                                        + ", ".join(self.setup.entities)))
            entity = None
        if "events" in values or ("entity" in values and current is not None):
            events = values.get("events", None if current is None else current.events)
            problems += _event_problems(events, self.setup, entity)
        if "url" in values:
            problems += _url_problems(values["url"])
        if "secret" in values:
            secret = values["secret"]
            if not isinstance(secret, str) or not SECRET_MIN <= len(secret) <= SECRET_LENGTH \
                    or not secret.isprintable():
                problems.append(ErrorDetail("secret", f"must be text of {SECRET_MIN} to "
                                            f"{SECRET_LENGTH} printable characters (leave it "
                                            "out and the server makes one)"))
        if values.get("role") is not None:
            roles = [*self.setup.roles, ADMIN]
            if values["role"] not in roles:
                problems.append(ErrorDetail("role", f"no role {values['role']!r}; roles: "
                                            + ", ".join(roles) + " (or null: every field)"))
        if "active" in values and not isinstance(values["active"], bool):
            problems.append(ErrorDetail("active", "must be true or false"))
        if problems:
            raise ValidationFailed("the webhook subscription is not valid", problems)
        if "events" in values:
            values["events"] = list(dict.fromkeys(values["events"]))
        return values


def _event_problems(events: Any, setup: SetupSpec, entity: str | None) -> list[ErrorDetail]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        return [ErrorDetail("events", "must be a list of one or more of: " + ", ".join(EVENTS))]
    problems = [ErrorDetail("events", f"unknown event {e!r}; events: " + ", ".join(EVENTS))
                for e in events if e not in EVENTS]
    staged = [e for e in events if e in ("stage_entered", "stage_left")]
    if staged and entity is not None and setup.entities[entity].pipeline is None:
        problems.append(ErrorDetail("events", f"{staged[0]}: {entity} has no pipeline"))
    return problems


def _url_problems(url: Any) -> list[ErrorDetail]:
    """The delivery's own rules, checked now: a URL a delivery would refuse is never stored."""
    if not isinstance(url, str) or not 0 < len(url) <= URL_LENGTH:
        return [ErrorDetail("url", f"must be an http(s) URL of at most {URL_LENGTH} characters")]
    try:
        check_text(url)
        webhook.check_target(url, webhook.allowed_from_env())
    except ValueProblem as problem:
        return [ErrorDetail("url", str(problem))]
    except DeliveryFailed as refused:  # TargetRefused, or a host that does not resolve
        return [ErrorDetail("url", str(refused))]
    return []


def _json(row: Any) -> dict[str, Any]:
    """A subscription as the API answers it: never its secret."""
    return {"id": row.id, "entity": row.entity, "events": list(row.events), "url": row.url,
            "role": row.role, "active": bool(row.active), "created_at": utc_text(row.created_at),
            "updated_at": utc_text(row.updated_at)}
