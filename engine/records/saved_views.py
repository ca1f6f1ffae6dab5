"""Saved views: a user's named queries of an entity's list (`kt_view`), for the web app's
list pages and any front end (`/api/views`).

A view belongs to the acting user alone: every read and change is limited to their rows,
and another user's view is "not found" (its existence is nobody else's business). While
a database has no users, the views are the open mode's (`user_id` NULL).

A view keeps the list's query as people typed it (`stage[eq]=won&due_at[gte]=2026-01-01`)
and is checked when it is saved by the same parser the list uses, as the same user, so a
saved view can never be broken by its owner. A setup changed since can still break one (a
field renamed): it is answered with `problem`, the list's own refusal, never a 500.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

import sqlalchemy as sa

from engine.access.acting import Acting
from engine.errors import (
    Conflict,
    ErrorDetail,
    Forbidden,
    MalformedRequest,
    NotFound,
    RequestError,
    ValidationFailed,
)
from engine.records.query import QueryParser
from engine.setup.spec import EntitySpec, SetupSpec
from engine.storage.database import Database
from engine.storage.views import NAME_LENGTH, QUERY_LENGTH
from engine.types.columns import utc_text
from engine.types.fields import ValueProblem, check_text

KEYS = ("entity", "name", "query", "is_default")
#: the views one user may keep per entity
MAX_VIEWS = 100
#: a page position is not what a view keeps: it names what the list shows
POSITION = frozenset({"cursor", "offset"})


def typed_params(spec: EntitySpec, params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A query as people type it, in the list's grammar: empty inputs out, and a bare date
    in a datetime range as the whole day in UTC (`due_at[lte]=2026-05-01` up to its end)."""
    out = []
    for key, value in params:
        if value.strip() == "":
            continue
        name, _, op = key.partition("[")
        fspec = spec.fields.get(name)
        if (fspec is not None and fspec.type.moment_kind == "datetime"
                and len(value) == 10 and value[4:5] == "-"):
            value += "T23:59:59.999999Z" if op.startswith("lt") else "T00:00:00Z"
        out.append((key, value))
    return out


def query_pairs(query: str) -> list[tuple[str, str]]:
    """A stored query string as its (key, value) pairs, empty ones left out."""
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if v.strip()]


class SavedViews:
    def __init__(self, table: sa.Table, db: Database, setup: SetupSpec, parser: QueryParser,
                 acting: Acting):
        self.table = table
        self.db = db
        self.setup = setup
        self.parser = parser
        self.acting = acting

    # -- reading -------------------------------------------------------------------------------
    def for_entity(self, entity: Any | None) -> list[dict[str, Any]]:
        """The acting user's views of `entity` (None: of every entity), by name; each with
        its `problem`, if any."""
        c = self.table.c
        where = [self._mine()]
        if entity is not None:
            self._readable(entity, "entity", MalformedRequest, code="invalid_query")
            where.append(c.entity == entity)
        with self.db.read() as conn:
            rows = conn.execute(sa.select(self.table).where(*where)
                                .order_by(c.entity, c.name, c.id)).all()
        return [self._json(row) for row in rows]

    def get(self, view_id: int) -> dict[str, Any]:
        with self.db.read() as conn:
            return self._json(self._row(conn, view_id))

    def default(self, entity: str) -> dict[str, Any] | None:
        """The acting user's default view of `entity`, if they chose one."""
        c = self.table.c
        with self.db.read() as conn:
            row = conn.execute(sa.select(self.table).where(
                self._mine(), c.entity == entity, c.is_default.is_(True))
                .order_by(c.id).limit(1)).first()
        return None if row is None else self._json(row)

    # -- changing ------------------------------------------------------------------------------
    def create(self, body: Any) -> dict[str, Any]:
        values = self._checked(body, None)
        now = dt.datetime.now(dt.UTC)
        user_id = self._user_id()
        c = self.table.c
        with _unique_names(), self.db.write() as conn:
            mine = conn.execute(sa.select(c.id, c.name).where(
                self._mine(), c.entity == values["entity"])).all()
            if len(mine) >= MAX_VIEWS:
                raise Conflict(f"you keep {MAX_VIEWS} views of {values['entity']} already, the "
                               "most there may be; delete one first", code="too_many_views")
            self._name_free(values["name"], values["entity"], mine, None)
            if values.get("is_default"):
                self._clear_default(conn, values["entity"])
            view_id = conn.execute(sa.insert(self.table).values(
                **{"is_default": False, **values}, user_id=user_id, created_at=now,
                updated_at=now).returning(c.id)).scalar_one()
            return self._json(self._row(conn, view_id))

    def change(self, view_id: int, body: Any) -> dict[str, Any]:
        c = self.table.c
        with _unique_names(), self.db.write() as conn:
            row = self._row(conn, view_id)
            values = self._checked(body, row)
            if "name" in values:
                mine = conn.execute(sa.select(c.id, c.name).where(
                    self._mine(), c.entity == row.entity)).all()
                self._name_free(values["name"], row.entity, mine, view_id)
            if values.get("is_default"):
                self._clear_default(conn, row.entity)
            if values:
                conn.execute(sa.update(self.table).where(c.id == view_id).values(
                    **values, updated_at=dt.datetime.now(dt.UTC)))
            return self._json(self._row(conn, view_id))

    def delete(self, view_id: int) -> None:
        with self.db.write() as conn:
            self._row(conn, view_id)
            conn.execute(sa.delete(self.table).where(self.table.c.id == view_id))

    # -- plumbing ------------------------------------------------------------------------------
    def _user_id(self) -> int | None:
        user = self.acting.user
        return None if user is None else user.id

    def _mine(self) -> sa.ColumnElement[bool]:
        user_id = self._user_id()
        column = self.table.c.user_id
        return column.is_(None) if user_id is None else column == user_id

    def _row(self, conn: sa.Connection, view_id: int) -> Any:
        row = conn.execute(sa.select(self.table).where(
            self.table.c.id == view_id, self._mine())).first()
        if row is None:
            raise NotFound(f"you have no view with id {view_id}")
        return row

    def _clear_default(self, conn: sa.Connection, entity: str) -> None:
        """One default per user and entity: choosing one unsets the one before."""
        c = self.table.c
        conn.execute(sa.update(self.table).where(
            self._mine(), c.entity == entity, c.is_default.is_(True)).values(is_default=False))

    @staticmethod
    def _name_free(name: str, entity: str, mine: Sequence[Any], view_id: int | None) -> None:
        folded = name.casefold()
        if any(row.name.casefold() == folded and row.id != view_id for row in mine):
            raise Conflict(f"you have a view of {entity} named {name!r} already; choose "
                           "another name, or change that view", [ErrorDetail("name", "is taken")],
                           code="view_name_taken")

    def _readable(self, entity: Any, key: str, error: type[RequestError],
                  code: str | None = None) -> str:
        if not isinstance(entity, str) or entity not in self.setup.entities:
            raise error(f"no entity {entity!r}", [ErrorDetail(
                key, f"no entity {entity!r}; entities: " + ", ".join(self.setup.entities))],
                code=code)
        rights = self.parser.access.rights(entity) if self.parser.access else None
        if rights is not None and not rights.allows("read"):
            raise Forbidden(f"your role may not read {entity} records",
                            code="operation_forbidden")
        return entity

    def _checked(self, body: Any, current: Any) -> dict[str, Any]:
        """The body's values, every problem named by field (422); `current` is the stored
        row when changing one (what the body leaves out stays)."""
        if not isinstance(body, dict):
            raise ValidationFailed("a view is a JSON object", [ErrorDetail("", "must be an object")])
        keys = KEYS if current is None else KEYS[1:]
        problems = [ErrorDetail(str(key), "is not a property of a view; use: " + ", ".join(keys)
                                + (" (a view's entity stays)" if key == "entity" else ""))
                    for key in body if key not in keys]
        if current is None:
            problems += [ErrorDetail(key, "is required") for key in ("entity", "name", "query")
                         if key not in body]
        if problems:
            raise ValidationFailed("the view is not valid", problems)
        values = dict(body)
        entity = current.entity if current is not None else self._readable(
            values["entity"], "entity", ValidationFailed)
        if "name" in values:
            values["name"] = _name(values["name"])
        if "query" in values:
            values["query"] = self._query(entity, values["query"])
        if "is_default" in values and not isinstance(values["is_default"], bool):
            raise ValidationFailed("the view is not valid",
                                   [ErrorDetail("is_default", "must be true or false")])
        return values

    def _query(self, entity: str, query: Any) -> str:
        """The query, checked as the list would check it for this user; stored without its
        empty inputs."""
        if not isinstance(query, str) or len(query) > QUERY_LENGTH:
            raise ValidationFailed("the view is not valid", [ErrorDetail(
                "query", f"must be a list's query string of at most {QUERY_LENGTH} characters "
                         "(stage[eq]=won&sort=-amount; empty: the whole list)")])
        try:
            check_text(query)
        except ValueProblem as problem:
            raise ValidationFailed("the view is not valid",
                                   [ErrorDetail("query", str(problem))]) from None
        pairs = query_pairs(query.removeprefix("?"))
        problems = [ErrorDetail(f"query.{key}", "is a page position; a view keeps what the "
                                                "list shows, so leave it out")
                    for key, _ in pairs if key in POSITION]
        if not problems:
            problems = self._problems(entity, pairs)
        if problems:
            raise ValidationFailed("the view's query is one the list refuses", problems)
        kept = urlencode(pairs, safe="[],:")
        if len(kept) > QUERY_LENGTH:  # text in other scripts takes 6 characters a letter
            raise ValidationFailed("the view is not valid", [ErrorDetail(
                "query", f"is {len(kept)} characters long written as a URL; at most "
                         f"{QUERY_LENGTH}")])
        return kept

    def _problems(self, entity: str, pairs: Sequence[tuple[str, str]]) -> list[ErrorDetail]:
        try:
            self.parser.parse(entity, typed_params(self.setup.entities[entity], pairs))
        except (MalformedRequest, Forbidden) as refused:
            return [ErrorDetail(f"query.{d.field}" if d.field else "query", d.problem)
                    for d in refused.details] or [ErrorDetail("query", refused.message)]
        return []

    def _json(self, row: Any) -> dict[str, Any]:
        """A view as the API answers it; `problem` says why its list would be refused now
        (a setup changed since it was saved, or the user's role), else null."""
        problem = None
        if row.entity not in self.setup.entities:
            problem = f"the setup has no entity {row.entity!r} any more"
        else:
            found = self._problems(row.entity, query_pairs(row.query))
            if found:
                problem = "; ".join(f"{d.field.removeprefix('query.')}: {d.problem}"
                                    for d in found)
        return {"id": row.id, "entity": row.entity, "name": row.name, "query": row.query,
                "is_default": bool(row.is_default), "created_at": utc_text(row.created_at),
                "updated_at": utc_text(row.updated_at), "problem": problem}


@contextmanager
def _unique_names() -> Iterator[None]:
    """Two saves of one name at once: the database's unique constraint refuses the second,
    told as `_name_free` would have told it."""
    try:
        yield
    except sa.exc.IntegrityError:
        raise Conflict("you have a view of that name already; choose another name",
                       [ErrorDetail("name", "is taken")], code="view_name_taken") from None


#: `_name`'s rule as a published pattern: something on one line — no control character
#: (Unicode's Cc: U+0000–001F, U+007F–009F), no line or paragraph separator (Zl, Zp: U+2028,
#: U+2029), not only spaces
_NOT_A_BREAK = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
ONE_LINE = rf"^{_NOT_A_BREAK}*[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]{_NOT_A_BREAK}*$"


def _name(name: Any) -> str:
    text = name.strip() if isinstance(name, str) else None
    if not text or len(text) > NAME_LENGTH or any(
            unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
        raise ValidationFailed("the view is not valid", [ErrorDetail(
            "name", f"must be one line of 1 to {NAME_LENGTH} characters, in any "
                    "language and script")])
    try:
        check_text(text)
    except ValueProblem as problem:
        raise ValidationFailed("the view is not valid", [ErrorDetail("name", str(problem))]) from None
    return text

