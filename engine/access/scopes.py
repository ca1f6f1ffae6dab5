"""Access at run time: who is acting, and which records and fields that reaches — as SQL.

The acting user belongs to one engine instance (`Acting`, a context variable of its own),
set once per request by the API's authentication (`kt.acting.as_user`); every read and
write asks `Access.rights()` for it. Outside any `as_user` — the command line, scripts,
the API while a database has no users — the engine acts for the system and everything is
reachable.

For a user, each operation of each entity becomes one SQL condition: the OR of what each
of the user's roles grants (`own` → `owner = :me`, `team` → the owner is in my team, a
condition → the list filters it names), `None` when some role grants `all`, and FALSE
when none grants anything. The conditions are built once per user and reused.

Scoped by construction: a SELECT, UPDATE or DELETE that reaches an entity table must come
through `Access.scoped(statement, entity, operation)` — which adds the acting user's
condition and marks the statement — or say why it reaches every record with
`Access.unscoped(statement, why)` (an on_delete cascade, a uniqueness check). `guard`
installs a listener on the database engine that refuses any other statement over an
entity table before it runs (`UnscopedStatement`), so a new read path that forgets the
scope fails in the first test that takes it, instead of leaking records in production.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.access.acting import Acting, User
from engine.errors import UnscopedStatement
from engine.setup.filters import FilterGrammar, FilterRefused
from engine.setup.reads import derived_hidden, transitive_reads
from engine.setup.roles import ADMIN, OPERATIONS, RoleSpec, Scope
from engine.storage.database import UNSCOPED
from engine.storage.filters import compile_all

if TYPE_CHECKING:
    from engine.storage.tables import Storage

_CACHE_SIZE = 4096
#: execution options: set by `Access.scoped` (the operation) and `Access.unscoped` or a
#: system connection (`Database.read/write(system=why)`: why)
SCOPED = "kt_scope"
Statement = TypeVar("Statement", sa.Select[Any], sa.Update, sa.Delete)


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

    def __init__(self, storage: Storage, grammar: FilterGrammar, dialect: str, acting: Acting):
        self.storage = storage
        self.acting = acting
        self.grammar = grammar
        self.dialect = dialect
        self.roles: Mapping[str, RoleSpec] = storage.setup.roles
        #: what each computed field reads, transitively (engine/setup/reads.py)
        self.reads = transitive_reads(storage.setup)
        self._cache: dict[tuple[object, ...], dict[str, Rights]] = {}
        self._lock = threading.Lock()
        #: statement → operation → the statement marked scoped (kept while the statement
        #: lives: statements built per call leave with their last reference)
        self._marked: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

    def rights(self, entity: str) -> Rights | None:
        """The acting user's rights on `entity`; None when nothing is restricted."""
        user = self.acting.user
        if user is None or ADMIN in user.roles:
            return None
        key = (user.id, user.roles, user.team, user.email)
        by_entity = self._cache.get(key)
        if by_entity is None:
            by_entity = {name: self._rights(user, name) for name in self.storage.entities}
            # computed fields reading what the user may not see are as hidden
            derived = derived_hidden(self.reads, lambda e: by_entity[e].hidden,
                                     lambda e: not by_entity[e].allows("read"))
            for name, names in derived.items():
                rights = by_entity[name]
                by_entity[name] = replace(rights, hidden=rights.hidden | names,
                                          readonly=rights.readonly | names)
            with self._lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = by_entity
        return by_entity[entity]

    def conditions(self, entity: str, operation: str) -> list[ColumnElement[bool]]:
        """The acting user's condition for `operation` on `entity`, as a where-clause
        list (empty when every record is reached): for a subquery inside a statement
        that `scoped` builds — a filter through a link, a link list's other end."""
        rights = self.rights(entity)
        condition = None if rights is None else rights.condition(operation)
        return [] if condition is None else [condition]

    def conditions_for_read(self, entity: str) -> list[ColumnElement[bool]]:
        """`conditions(entity, "read")`: the scope of an entity a filter goes through."""
        return self.conditions(entity, "read")

    def scoped(self, statement: Statement, entity: str, operation: str) -> Statement:
        """`statement` over `entity`, narrowed to the records the acting user may
        `operation`, and marked as scoped: the one way to reach an entity table."""
        conditions = self.conditions(entity, operation)
        if conditions:
            return statement.where(*conditions).execution_options(**{SCOPED: operation})
        # unnarrowed, a statement built once (a record's select by id, its update) is
        # marked once: the same marked object, whose compiled form SQLAlchemy finds by a
        # cache key it computed once (a new copy per call costs a new key, every time)
        by_operation = self._marked.get(statement)
        if by_operation is None:
            by_operation = self._marked.setdefault(statement, {})
        marked = by_operation.get(operation)
        if marked is None:
            marked = by_operation[operation] = statement.execution_options(**{SCOPED: operation})
        return marked

    @staticmethod
    def unscoped(statement: Statement, why: str) -> Statement:
        """`statement` reaching every record on purpose, saying why (it shows in the
        statement's execution options, where tests and reviewers read it)."""
        return statement.execution_options(**{UNSCOPED: why})

    def manages_users(self, user: User | None = None) -> bool:
        """May `user` (by default the acting one) manage users?"""
        user = self.acting.user if user is None else user
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
        try:
            # compiled unscoped: a condition's links are never narrowed a second time
            return sa.and_(*compile_all(self.storage, [
                self.grammar.parse(entity, key, _substitute(text, user))
                for key, text in scope.where], self.dialect))
        except FilterRefused:
            # a user value the field cannot hold (a team name that is not one of a choice
            # field's options) matches no record
            return sa.false()


def _substitute(text: str, user: User) -> str:
    return (text.replace("$user.email", user.email)
            .replace("$user.team", user.team or "")
            .replace("$user", str(user.id)))


def guard(engine: sa.Engine, tables: Collection[sa.Table]) -> None:
    """Refuse, before it runs, a SELECT, UPDATE or DELETE reaching one of `tables` outside
    every statement that `Access.scoped` or `Access.unscoped` made (the statement itself,
    or a subquery of it: a scoped subquery inside a statement over another table passes)."""
    guarded = frozenset(tables)
    checked = (sa.Select, sa.CompoundSelect, sa.Update, sa.Delete)
    # statements found to reach no guarded table, while they live: one built once and run
    # on every call (a record's many-to-many links) is walked once, not per execution
    harmless: weakref.WeakSet[Any] = weakref.WeakSet()

    def before_execute(conn: sa.Connection, statement: Any, multiparams: Any, params: Any,
                       options: Mapping[str, Any]) -> None:
        if not isinstance(statement, checked) or SCOPED in options or UNSCOPED in options \
                or statement in harmless:
            return
        table = _unscoped_table(statement, guarded)
        if table is None:
            harmless.add(statement)
        else:
            raise UnscopedStatement(
                f"a statement over {table.name} skipped the access scope: build it with "
                "Access.scoped(statement, entity, operation), or Access.unscoped(statement, "
                "why) when it must reach every record")

    sa.event.listen(engine, "before_execute", before_execute)


def _unscoped_table(statement: Any, guarded: frozenset[sa.Table]) -> sa.Table | None:
    stack = list(statement.get_children())
    if isinstance(statement, (sa.Update, sa.Delete)):
        stack.append(statement.table)
    while stack:
        element = stack.pop()
        options = getattr(element, "_execution_options", None)
        if options and (SCOPED in options or UNSCOPED in options):
            continue  # a subquery made by the builder
        table = element if isinstance(element, sa.Table) else getattr(element, "table", None)
        if isinstance(table, sa.Table) and table in guarded:
            return table
        stack.extend(element.get_children())
    return None
