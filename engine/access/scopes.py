"""Access at run time: who is acting, and which records and fields that reaches — as SQL.

The acting user lives in a context variable, set once per request by the API's
authentication (`acting_as`); every read and write of `engine/records.py` asks `rights()`
for it, so a new endpoint built on the engine is scoped without having to remember to be.
Outside any `acting_as` — the command line, scripts, the API while a database has no
users — the engine acts for the system and everything is reachable.

For a user, each operation of each entity becomes one SQL condition: the OR of what each
of the user's roles grants (`own` → `owner = :me`, `team` → the owner is in my team, a
condition → the list filters it names), `None` when some role grants `all`, and FALSE
when none grants anything. The conditions are built once per user and reused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.access.users import User
from engine.errors import MalformedRequest
from engine.setup.roles import ADMIN, OPERATIONS, RoleSpec, Scope

if TYPE_CHECKING:
    from engine.records.query import QueryParser
    from engine.storage.tables import Storage

_acting: ContextVar[User | None] = ContextVar("kartoteka_acting_user", default=None)
_CACHE_SIZE = 4096


@contextmanager
def acting_as(user: User | None) -> Iterator[None]:
    """Run the engine calls inside as `user` (None: as the system, unrestricted)."""
    token = _acting.set(user)
    try:
        yield
    finally:
        _acting.reset(token)


def acting_user() -> User | None:
    return _acting.get()


@dataclass(frozen=True)
class Rights:
    """What one user may do with one entity."""

    entity: str
    #: per operation: None (every record), a condition, or None in `denied`
    conditions: Mapping[str, ColumnElement[bool] | None]
    denied: frozenset[str]
    hidden: frozenset[str]
    readonly: frozenset[str]

    def allows(self, operation: str) -> bool:
        return operation not in self.denied

    def condition(self, operation: str) -> ColumnElement[bool] | None:
        """The SQL condition a record must meet for `operation` (None: every record)."""
        if operation in self.denied:
            return sa.false()
        return self.conditions[operation]

    def same_reach(self, first: str, second: str) -> bool:
        return (first in self.denied) == (second in self.denied) and \
            self.conditions.get(first) is self.conditions.get(second)


class Access:
    """Turns the acting user's roles into `Rights` per entity, cached per user."""

    def __init__(self, storage: Storage, parser: QueryParser):
        self.storage = storage
        self.roles: Mapping[str, RoleSpec] = storage.setup.roles
        self.parser = parser  # an unscoped parser: conditions are never scoped twice
        self._cache: dict[tuple[object, ...], dict[str, Rights]] = {}
        self._lock = threading.Lock()

    def rights(self, entity: str) -> Rights | None:
        """The acting user's rights on `entity`; None when nothing is restricted."""
        user = _acting.get()
        if user is None or ADMIN in user.roles:
            return None
        key = (user.id, user.roles, user.team, user.email)
        by_entity = self._cache.get(key)
        if by_entity is None:
            by_entity = {name: self._rights(user, name) for name in self.storage.entities}
            with self._lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = by_entity
        return by_entity[entity]

    def where(self, entity: str, operation: str) -> list[ColumnElement[bool]]:
        """The acting user's condition for `operation` on `entity`, as a where-clause
        list: empty when every record is reached."""
        rights = self.rights(entity)
        condition = None if rights is None else rights.condition(operation)
        return [] if condition is None else [condition]

    def manages_users(self, user: User | None) -> bool:
        if user is None or ADMIN in user.roles:
            return True
        return any(self.roles[r].manages_users for r in user.roles if r in self.roles)

    def _rights(self, user: User, entity: str) -> Rights:
        grants = [self.roles[name].grant(entity) for name in user.roles if name in self.roles]
        conditions: dict[str, ColumnElement[bool] | None] = {}
        denied = set()
        # operations granted alike share one condition object, so `same_reach` is cheap
        built: dict[tuple[Scope, ...], ColumnElement[bool]] = {}
        for operation in OPERATIONS:
            scopes = tuple(grant.scope(operation) for grant in grants)
            # a list of scopes is their OR, like the scopes of several roles
            flat = [part for scope in scopes
                    for part in (scope.any if scope.kind == "any" else (scope,))]
            if any(scope.kind == "all" for scope in flat):
                conditions[operation] = None
                continue
            wanted = [scope for scope in flat if scope.kind != "none"]
            if not wanted:
                denied.add(operation)
                conditions[operation] = None
                continue
            if scopes not in built:
                parts = [self._condition(entity, scope, user) for scope in wanted]
                built[scopes] = parts[0] if len(parts) == 1 else sa.or_(*parts)
            conditions[operation] = built[scopes]
        readers = [g for g in grants if g.scope("read").kind != "none"]
        writers = [g for g in grants if g.scope("update").kind != "none"
                   or g.scope("create").kind != "none"]
        # a role that may only create still gets its record back: without what any of
        # the user's roles hides
        hidden = frozenset.intersection(*(g.hidden for g in readers)) if readers else \
            frozenset().union(*(g.hidden for g in grants))
        readonly = frozenset.intersection(*(g.readonly | g.hidden for g in writers)) \
            if writers else frozenset()
        return Rights(entity, conditions, frozenset(denied), hidden, readonly | hidden)

    def _condition(self, entity: str, scope: Scope, user: User) -> ColumnElement[bool]:
        table = self.storage[entity].table
        if scope.kind == "own" or (scope.kind == "team" and not user.team):
            return table.c.owner == user.id
        if scope.kind == "team":
            users = self.storage.users
            return table.c.owner.in_(sa.select(users.c.id).where(users.c.team == user.team))
        params = [(key, _substitute(text, user)) for key, text in scope.where]
        try:
            query = self.parser.parse(entity, [*params, ("total", "false")])
        except MalformedRequest:
            # a user value the field cannot hold (a team name that is not one of a choice
            # field's options) matches no record
            return sa.false()
        return sa.and_(*query.conditions)


def _substitute(text: str, user: User) -> str:
    return (text.replace("$user.email", user.email)
            .replace("$user.team", user.team or "")
            .replace("$user", str(user.id)))
