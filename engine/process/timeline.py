"""A card's timeline, newest first: comments and activities (calls, e-mails, meetings),
the change history, stage moves, and the records that belong to the card through a
polymorphic link (tasks, documents...). Each source is read with its own index
(`entity, record_id, at`) up to one page, and the pages are merged; the cursor is the
(at, source, id) of the last item, so paging is stable while new items arrive.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ErrorDetail, MalformedRequest, NotFound, ValidationFailed
from engine.records.service import Record, Records, checked_id
from engine.setup.names import link_column, poly_entity_column
from engine.setup.spec import Label
from engine.types.columns import utc_text
from engine.types.fields import ValueProblem, check_text

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
ACTIVITY_KINDS = ("call", "email", "meeting")
MAX_TEXT = 20_000


@dataclass(frozen=True)
class _Source:
    rank: int  # tie-break between sources at the same instant (higher first)
    at: Any  # the column ordering this source
    id: Any
    select: Any  # a Select of this source's rows for the record
    item: Callable[[Any], Record]


class Timeline:
    def __init__(self, records: Records):
        self.records = records
        self.storage = records.storage

    # -- reading -----------------------------------------------------------------------------
    def page(self, entity: str, record_id: int, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        limit, cursor = _page_params(params)
        record_id = checked_id(record_id, entity)
        with self.records.db.read() as conn:
            if not self.records.visible(conn, entity, record_id):
                raise NotFound(f"no {entity} with id {record_id}")
            items: list[tuple[tuple[Any, ...], Record]] = []
            sources = self._sources(entity, record_id)
            if cursor is not None and cursor[1] > max(source.rank for source in sources):
                raise MalformedRequest("the timeline parameters are not valid",
                                       [ErrorDetail("cursor", "is not a cursor this server gave out")],
                                       code="invalid_query")
            for source in sources:
                statement = source.select
                if cursor is not None:
                    statement = statement.where(_before(source, cursor))
                rows = conn.execute(
                    statement.order_by(source.at.desc(), source.id.desc()).limit(limit + 1)
                ).all()
                for row in rows:
                    key = (row.at, source.rank, row.id)
                    items.append((key, source.item(row)))
            items.sort(key=lambda pair: (pair[0][0], pair[0][1], pair[0][2]), reverse=True)
            more = len(items) > limit
            items = items[:limit]
            rights = self.records.access.rights(entity)
            if rights is not None and rights.hidden:
                # what a hidden field was and became is as hidden as the field
                for _, item in items:
                    if item["type"] == "change":
                        item["changes"] = {k: v for k, v in item["changes"].items()
                                           if k not in rights.hidden}
            self._embed_records(conn, [item for _, item in items])
        next_cursor = None
        if more and items:
            at, rank, item_id = items[-1][0]
            next_cursor = _encode(at, rank, item_id)
        return {"items": [item for _, item in items], "next": next_cursor}

    def _sources(self, entity: str, record_id: int) -> list[_Source]:
        storage = self.storage
        sources = []
        activities, changes, stages = storage.activities, storage.changes, storage.stage_history
        linked = [(source_entity, link) for source_entity, link in storage.setup.inbound_links[entity]
                  if link.polymorphic]
        # every source its own rank: the cursor tells items of one instant apart by (rank, id)
        top = len(linked)
        runs = storage.automation_runs
        labels = {a.name: a.label for a in storage.setup.automations}
        for rank, table, item in ((top + 4, runs, _automation_item(labels)),
                                  (top + 3, activities, _activity_item),
                                  (top + 2, stages, _stage_item),
                                  (top + 1, changes, _change_item)):
            sources.append(_Source(
                rank, table.c.at, table.c.id,
                sa.select(table).where(table.c.entity == entity, table.c.record_id == record_id),
                item))
        for rank, (source_entity, link) in enumerate(linked):
            source_table = storage[source_entity].table
            sources.append(_Source(
                rank, source_table.c.created_at, source_table.c.id,
                self.records.access.scoped(
                    sa.select(source_table.c.id, source_table.c.created_at.label("at")).where(
                        source_table.c[poly_entity_column(link.name)] == entity,
                        source_table.c[link_column(link.name)] == record_id),
                    source_entity, "read"),
                _record_item(source_entity, link.name)))
        return sources

    def _embed_records(self, conn: sa.Connection, items: list[Record]) -> None:
        wanted: dict[str, list[int]] = {}
        for item in items:
            if item["type"] == "record":
                wanted.setdefault(item["entity"], []).append(item["record_id"])
        for entity, ids in wanted.items():
            found = {r["id"]: r for r in self.records.fetch(conn, entity, ids)}
            for item in items:
                if item["type"] == "record" and item["entity"] == entity:
                    item["record"] = found.get(item.pop("record_id"))

    # -- writing -----------------------------------------------------------------------------
    def comment(self, entity: str, record_id: int, body: Any, *,
                actor: int | None = None) -> Record:
        if not isinstance(body, dict) or set(body) - {"text"}:
            raise ValidationFailed('a comment is {"text": "..."}', _unknown(body, {"text"}))
        text = _text(body, "text", required=True)
        return self._add(entity, record_id, {"kind": "comment", "text": text}, actor)

    def activity(self, entity: str, record_id: int, body: Any, *,
                 actor: int | None = None) -> Record:
        allowed = {"kind", "direction", "duration_seconds", "subject", "text", "result", "at"}
        if not isinstance(body, dict) or set(body) - allowed:
            raise ValidationFailed("an activity has: " + ", ".join(sorted(allowed)),
                                   _unknown(body, allowed))
        problems: list[ErrorDetail] = []
        if body.get("kind") not in ACTIVITY_KINDS:
            problems.append(ErrorDetail("kind", "must be one of: " + ", ".join(ACTIVITY_KINDS)))
        if body.get("direction") not in (None, "in", "out"):
            problems.append(ErrorDetail("direction", "must be in or out"))
        duration = body.get("duration_seconds")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)
                                     or not 0 <= duration <= 10**7):
            problems.append(ErrorDetail("duration_seconds", "must be a whole number of seconds"))
        values: dict[str, Any] = {"kind": body.get("kind"), "direction": body.get("direction"),
                                  "duration_seconds": duration}
        for key, limit in (("subject", 300), ("text", MAX_TEXT), ("result", MAX_TEXT)):
            try:
                values[key] = _text(body, key, required=False, limit=limit)
            except ValidationFailed as failed:
                problems.extend(failed.details)
        at = body.get("at")
        if at is not None:
            try:
                values["at"] = self.storage.registry.get("datetime").parse(None, at)  # type: ignore[union-attr,arg-type]
            except ValueProblem as problem:
                problems.append(ErrorDetail("at", str(problem)))
        if problems:
            raise ValidationFailed("the activity is not valid", problems)
        return self._add(entity, record_id, values, actor)

    def _add(self, entity: str, record_id: int, values: dict[str, Any],
             actor: int | None) -> Record:
        record_id = checked_id(record_id, entity)
        activities = self.storage.activities
        values.setdefault("at", dt.datetime.now(dt.UTC))
        with self.records.db.write() as conn:
            if not self.records.visible(conn, entity, record_id):
                raise NotFound(f"no {entity} with id {record_id}")
            new_id = conn.execute(sa.insert(activities).values(
                entity=entity, record_id=record_id, by=actor, **values
            ).returning(activities.c.id)).scalar_one()
            row = conn.execute(sa.select(activities).where(activities.c.id == new_id)).one()
        return _activity_item(row)


def _unknown(body: Any, allowed: set[str]) -> list[ErrorDetail]:
    if not isinstance(body, dict):
        return [ErrorDetail("", "the body must be a JSON object")]
    return [ErrorDetail(key, "is not a field here") for key in sorted(set(body) - allowed)]


def _text(body: dict[str, Any], key: str, *, required: bool, limit: int = MAX_TEXT) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationFailed("text is missing", [ErrorDetail(key, "is required")])
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValidationFailed("text is not valid", [ErrorDetail(key, "must be a non-empty text")])
    if len(value) > limit:
        raise ValidationFailed("text is too long",
                               [ErrorDetail(key, f"must be at most {limit} characters long")])
    try:
        check_text(value)
    except ValueProblem as problem:
        raise ValidationFailed("text is not valid", [ErrorDetail(key, str(problem))]) from None
    return value


def _activity_item(row: Any) -> Record:
    item: Record = {"type": row.kind, "id": row.id, "at": utc_text(row.at), "by": row.by}
    if row.kind == "comment":
        item["text"] = row.text
    else:
        item.update(direction=row.direction, duration_seconds=row.duration_seconds,
                    subject=row.subject, text=row.text, result=row.result)
    return item


def _stage_item(row: Any) -> Record:
    return {"type": "stage", "id": row.id, "at": utc_text(row.at), "by": row.by,
            "pipeline": row.pipeline, "from": row.from_stage, "to": row.to_stage,
            "seconds_in_previous": row.seconds}


def _change_item(row: Any) -> Record:
    return {"type": "change", "id": row.id, "at": utc_text(row.at), "by": row.by,
            "action": row.action, "changes": row.changes or {}}


def _automation_item(labels: Mapping[str, Label]) -> Callable[[Any], Record]:
    """What an automation did for the record (or why not): attributed to it, not to a user."""
    def item(row: Any) -> Record:
        label = labels.get(row.automation)
        return {"type": "automation", "id": row.id, "at": utc_text(row.at), "by": None,
                "automation": row.automation, "label": dict(label) if label else None,
                "status": row.status, "detail": row.detail or {}}
    return item


def _record_item(entity: str, link: str) -> Callable[[Any], Record]:
    def item(row: Any) -> Record:
        return {"type": "record", "entity": entity, "link": link, "id": row.id,
                "at": utc_text(row.at), "record_id": row.id}
    return item


def _before(source: _Source, cursor: tuple[dt.datetime, int, int]) -> ColumnElement[bool]:
    at, rank, item_id = cursor
    if source.rank < rank:
        return source.at <= at  # type: ignore[no-any-return]
    if source.rank > rank:
        return source.at < at  # type: ignore[no-any-return]
    return sa.or_(source.at < at, sa.and_(source.at == at, source.id < item_id))


def _encode(at: dt.datetime, rank: int, item_id: int) -> str:
    raw = json.dumps([utc_text(at), rank, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_params(params: Sequence[tuple[str, str]]) -> tuple[int, tuple[dt.datetime, int, int] | None]:
    limit, cursor, problems = DEFAULT_LIMIT, None, []
    for key, value in params:
        if key == "limit":
            if re.fullmatch(r"[0-9]{1,4}", value) and 1 <= int(value) <= MAX_LIMIT:
                limit = int(value)
            else:
                problems.append(ErrorDetail("limit", f"must be between 1 and {MAX_LIMIT}"))
        elif key == "cursor":
            if not value:
                continue
            try:
                raw = base64.urlsafe_b64decode((value + "=" * (-len(value) % 4)).encode("ascii"))
                at_text, rank, item_id = json.loads(raw)
                at = dt.datetime.fromisoformat(at_text)
                if not (isinstance(rank, int) and isinstance(item_id, int) and at.tzinfo
                        and 0 <= rank and 0 <= item_id < 2**63):
                    raise ValueError
                cursor = (at, rank, item_id)
            except (ValueError, TypeError, binascii.Error, UnicodeError, RecursionError):
                problems.append(ErrorDetail("cursor", "is not a cursor this server gave out"))
        else:
            problems.append(ErrorDetail(key, "is not a timeline parameter; use limit and cursor"))
    if problems:
        raise MalformedRequest("the timeline parameters are not valid", problems,
                               code="invalid_query")
    return limit, cursor
