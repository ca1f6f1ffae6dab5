"""In-app notifications: what automations told each user (`notify:`), newest first, and
which of them the user has read. A user reads and marks only their own; while the API is
open (no users yet) there is nobody to tell, and the list is empty."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.access.acting import Acting
from engine.errors import ErrorDetail, MalformedRequest, NotFound, ValidationFailed
from engine.storage.database import Database
from engine.storage.tables import Storage
from engine.types.columns import utc_text
from engine.types.fields import INT64_MAX

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: the most ids one call marks read
MAX_IDS = 1000


class Notifications:
    def __init__(self, storage: Storage, db: Database, acting: Acting):
        self.table = storage.notifications
        self.db = db
        self.acting = acting

    def page(self, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """`unread=true` for the unread ones only, `limit`, `before=<id>` for the next page."""
        unread_only, limit, before = _params(params)
        user = self.acting.user
        if user is None:
            return {"items": [], "unread": 0, "next": None}
        t = self.table
        statement = sa.select(t).where(t.c.user_id == user.id)
        if unread_only:
            statement = statement.where(t.c.read_at.is_(None))
        if before is not None:
            statement = statement.where(t.c.id < before)
        with self.db.read() as conn:
            rows = conn.execute(statement.order_by(t.c.id.desc()).limit(limit + 1)).all()
            unread = self._unread(conn, user.id)
        items = [_item(row) for row in rows[:limit]]
        return {"items": items, "unread": unread,
                "next": str(items[-1]["id"]) if len(rows) > limit else None}

    def read(self, body: Any) -> dict[str, Any]:
        """Mark `{"ids": [...]}` (or `{"all": true}`) read; answers the unread count."""
        ids, everything = _read_body(body)
        user = self.acting.user
        if user is None:
            raise NotFound("nobody is signed in: there are no notifications to mark")
        t = self.table
        with self.db.write() as conn:
            mine = t.c.user_id == user.id
            if not everything:
                # an id past 64 bits names no notification (nor may it reach the database)
                found = set(conn.execute(sa.select(t.c.id).where(
                    mine, t.c.id.in_([i for i in ids if i <= INT64_MAX]))).scalars())
                missing = [i for i in ids if i not in found]
                if missing:
                    raise NotFound(f"no notification with id {missing[0]}",
                                   [ErrorDetail("ids", f"not yours or missing: {missing[:10]}")])
                mine = sa.and_(mine, t.c.id.in_(ids))
            conn.execute(sa.update(t).where(mine, t.c.read_at.is_(None))
                         .values(read_at=dt.datetime.now(dt.UTC)))
            return {"unread": self._unread(conn, user.id)}

    def _unread(self, conn: sa.Connection, user_id: int) -> int:
        t = self.table
        count: int = conn.execute(sa.select(sa.func.count()).where(
            t.c.user_id == user_id, t.c.read_at.is_(None))).scalar_one()
        return count


def _moment(value: dt.datetime | None) -> str | None:
    return None if value is None else utc_text(value)


def _item(row: Any) -> dict[str, Any]:
    return {"id": row.id, "at": _moment(row.at), "subject": row.subject, "text": row.text,
            "entity": row.entity, "record_id": row.record_id, "automation": row.automation,
            "read": row.read_at is not None, "read_at": _moment(row.read_at)}


def _params(params: Sequence[tuple[str, str]]) -> tuple[bool, int, int | None]:
    problems: list[ErrorDetail] = []
    seen: dict[str, str] = {}
    for key, value in params:
        if key not in ("unread", "limit", "before"):
            problems.append(ErrorDetail(key, "is not a parameter here; use unread, limit, before"))
        elif key in seen:
            problems.append(ErrorDetail(key, "is given twice"))
        seen[key] = value
    unread = seen.get("unread", "false")
    if unread not in ("true", "false"):
        problems.append(ErrorDetail("unread", "must be true or false"))
    limit, before = DEFAULT_LIMIT, None
    if "limit" in seen:
        text = seen["limit"]
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
            problems.append(ErrorDetail("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
        else:
            limit = int(text)
    if "before" in seen:
        text = seen["before"]
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            problems.append(ErrorDetail("before", "must be the `next` of the previous page"))
        else:
            before = int(text)
    if problems:
        raise MalformedRequest("the notification parameters are not valid", problems,
                               code="invalid_query")
    return unread == "true", limit, before


def _read_body(body: Any) -> tuple[list[int], bool]:
    if not isinstance(body, Mapping) or set(body) - {"ids", "all"} or \
            ("ids" in body) == ("all" in body):
        raise ValidationFailed('mark notifications read with {"ids": [1, 2]} or {"all": true}',
                               [ErrorDetail("", "give ids or all, not both")])
    if "all" in body:
        if body["all"] is not True:
            raise ValidationFailed("all must be true", [ErrorDetail("all", "must be true")])
        return [], True
    ids = body["ids"]
    whole = [_whole(i) for i in ids] if isinstance(ids, list) else None
    if not whole or len(whole) > MAX_IDS or not all(i is not None and i >= 1 for i in whole):
        raise ValidationFailed("ids must be notification ids",
                               [ErrorDetail("ids", f"must be 1 to {MAX_IDS} whole numbers from 1")])
    return list(dict.fromkeys(i for i in whole if i is not None)), False


def _whole(value: Any) -> int | None:
    """A whole number as JSON writes it: `5`, or `5.0`, which JSON Schema's integer takes
    too (a body's numbers with a point are read as Decimal)."""
    if type(value) is int:
        return value
    if type(value) in (float, Decimal) and math.isfinite(value) and value == int(value):
        return int(value)
    return None
