"""Roles in the setup language: who may do what, per entity and operation.

    roles:
      director:
        "*": {create: all, read: all, update: all, delete: all, reassign: all}
      manager:
        client:  {create: all, read: own, update: own, delete: none}
        product: {read: all, hidden: [purchase_price]}
        task:    {create: all, read: team, update: {status: {in: [open, in_progress]}}}

Per entity (or `"*"`, every entity not named in the same role) and operation — `create`,
`read`, `update`, `delete`, `reassign` (give a record another owner) — a scope: `all`,
`team` (records owned by someone of the user's team), `own` (records the user owns),
`none`, a condition in the filter structure whose values may be `$user` (the user's
id), `$user.team` or `$user.email`, or a list of these, any of which lets a record in
(`[own, {observers: {contains: $user}}]`). Anything not listed is `none`. `hidden` fields are
never shown to the role nor usable in its filters, sorts and searches; `readonly` fields
are shown but not writable. `admin` is built in: everything, and managing users.

This module checks a `roles:` block (every problem with its line and a hint) and turns
it into frozen `RoleSpec`s; `engine/access.py` applies them to each request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from engine.errors import Diagnostic
from engine.setup.filters import FilterGrammar, FilterRefused
from engine.setup.names import did_you_mean, identifier_problem
from engine.setup.source import SourceFile
from engine.setup.spec import SetupSpec
from engine.types.fields import FieldTypeRegistry

ADMIN = "admin"
OPERATIONS = ("create", "read", "update", "delete", "reassign")
SCOPES = ("all", "team", "own", "none")
FIELD_LISTS = ("hidden", "readonly")
EVERY_ENTITY = "*"
#: what `$user...` in a condition stands for
USER_VALUES = ("$user", "$user.team", "$user.email")


@dataclass(frozen=True)
class Scope:
    """Which records an operation reaches: a kind, and for `where` the filter parameters."""

    kind: str  # all | team | own | none | where | any
    where: tuple[tuple[str, str], ...] = ()
    #: for `any`: the scopes of a list, any one of which lets a record in
    any: tuple[Scope, ...] = ()


NONE = Scope("none")
ALL = Scope("all")


@dataclass(frozen=True)
class Grant:
    """What one role may do with one entity."""

    scopes: Mapping[str, Scope]
    hidden: frozenset[str] = frozenset()
    readonly: frozenset[str] = frozenset()

    def scope(self, operation: str) -> Scope:
        return self.scopes.get(operation, NONE)


NO_GRANT = Grant(MappingProxyType({}))


@dataclass(frozen=True)
class RoleSpec:
    name: str
    grants: Mapping[str, Grant]  # by entity; every entity of the setup has one
    manages_users: bool = False

    def grant(self, entity: str) -> Grant:
        return self.grants.get(entity, NO_GRANT)


def admin_role(setup: SetupSpec) -> RoleSpec:
    everything = MappingProxyType({op: ALL for op in OPERATIONS})
    return RoleSpec(ADMIN, MappingProxyType({name: Grant(everything) for name in setup.entities}),
                    manages_users=True)


def condition_params(condition: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`{amount: {gte: 1000}, stage: {in: [won]}}` → `[("amount[gte]", "1000"), ...]`:
    the YAML filter structure as the query parameters the list call takes."""
    params = []
    for key, value in condition.items():
        if isinstance(value, dict):
            for op, operand in value.items():
                params.append((f"{key}[{op}]", _text(operand)))
        elif value is None:
            params.append((f"{key}[isnull]", "true"))
        else:
            # the operator form: in a condition every key is a field, even one named `total`
            params.append((f"{key}[eq]", _text(value)))
    return params


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def check_roles(source: SourceFile | None, raw: Any, setup: SetupSpec,
                registry: FieldTypeRegistry) -> tuple[dict[str, RoleSpec], list[Diagnostic]]:
    """The roles of a setup, or the problems that stop them (with file, line and hint)."""
    if not raw or source is None:
        return {}, []
    checker = _RoleChecker(source, setup, registry)
    roles = {}
    for name, body in raw.items():
        role = checker.role(str(name), body)
        if role is not None:
            roles[role.name] = role
    return roles, checker.diagnostics


class _RoleChecker:
    def __init__(self, source: SourceFile, setup: SetupSpec, registry: FieldTypeRegistry):
        self.source = source
        self.setup = setup
        self.registry = registry
        self.diagnostics: list[Diagnostic] = []

    @cached_property
    def grammar(self) -> FilterGrammar:
        """Conditions are checked by the setup's filter grammar — the one the list query
        and the access layer parse with — so a condition that loads is one that runs."""
        return FilterGrammar(self.setup, self.registry)

    def problem(self, code: str, path: tuple[str | int, ...], message: str, hint: str = "",
                at_key: bool = False) -> None:
        self.diagnostics.append(self.source.diagnostic(
            code, ("roles", *path), message, hint, at_key=at_key))

    def role(self, name: str, body: Any) -> RoleSpec | None:
        problem = identifier_problem(name)
        if problem:
            self.problem("role.name", (name,), f"role name {problem}",
                         "role names are lower_snake, e.g. sales_manager", at_key=True)
            return None
        if name == ADMIN:
            self.problem("role.reserved", (name,), "'admin' is a built-in role: it may do "
                         "everything and manage users", "give your role another name, e.g. "
                         "'director'", at_key=True)
            return None
        if not isinstance(body, dict):
            self.problem("role.shape", (name,), "must map entities to what the role may do",
                         'e.g. client: {read: own, update: own} or "*": {read: all}')
            return None
        before = len(self.diagnostics)
        everything = body.get(EVERY_ENTITY)
        default = self.grant(name, EVERY_ENTITY, everything) if everything is not None else None
        grants: dict[str, Grant] = {}
        for entity, declared in body.items():
            entity = str(entity)
            if entity == EVERY_ENTITY:
                continue
            if entity not in self.setup.entities:
                self.problem("role.entity", (name, entity), f"no entity {entity!r}",
                             did_you_mean(entity, self.setup.entities)
                             or "name an entity of the setup, or \"*\" for all of them",
                             at_key=True)
                continue
            grant = self.grant(name, entity, declared)
            if grant is not None and default is not None:
                # the entity's own lines win, operation by operation, over "*"
                grant = Grant(MappingProxyType({**default.scopes, **grant.scopes}),
                              grant.hidden, grant.readonly)
            if grant is not None:
                grants[entity] = grant
        if len(self.diagnostics) > before:
            return None
        for entity in self.setup.entities:
            if entity not in grants and default is not None:
                grants[entity] = default
        if default is not None:
            # an owner-based scope from "*" must meet only entities that have owners
            for operation, scope in default.scopes.items():
                unowned = [entity for entity, grant in grants.items()
                           if grant.scope(operation) is scope
                           and not self.setup.entities[entity].owner]
                by_owner = [p for p in (scope.any or (scope,)) if p.kind in ("own", "team")]
                if by_owner and unowned:
                    self.problem("role.owner", (name, EVERY_ENTITY, operation),
                                 f"{by_owner[0].kind!r} needs an owner, and " + ", ".join(unowned)
                                 + " records have none",
                                 f"give {unowned[0]} its own line with {operation}: all, none "
                                 "or a condition, or 'owner: true'")
            if len(self.diagnostics) > before:
                return None
        return RoleSpec(name, MappingProxyType(grants))

    def grant(self, role: str, entity: str, declared: Any) -> Grant | None:
        path = (role, entity)
        if not isinstance(declared, dict):
            self.problem("role.grant", path, "must map operations to scopes",
                         "e.g. {read: all, update: own}; operations: " + ", ".join(OPERATIONS))
            return None
        spec = self.setup.entities.get(entity)
        scopes: dict[str, Scope] = {}
        fields: dict[str, frozenset[str]] = {}
        ok = True
        for key, value in declared.items():
            key = str(key)
            if key in FIELD_LISTS:
                names = self.field_list(path, key, value, entity)
                ok = ok and names is not None
                fields[key] = names or frozenset()
                continue
            if key not in OPERATIONS:
                self.problem("role.operation", (*path, key), f"unknown operation {key!r}",
                             did_you_mean(key, (*OPERATIONS, *FIELD_LISTS))
                             or "use: " + ", ".join((*OPERATIONS, *FIELD_LISTS)), at_key=True)
                ok = False
                continue
            scope = self.scope((*path, key), value, entity)
            if scope is None:
                ok = False
            else:
                scopes[key] = scope
        if spec is None:  # "*": scopes only, and owner-based ones need every entity to own
            return Grant(MappingProxyType(scopes)) if ok else None
        return Grant(MappingProxyType(scopes), fields.get("hidden", frozenset()),
                     fields.get("readonly", frozenset())) if ok else None

    def scope(self, path: tuple[str | int, ...], value: Any, entity: str) -> Scope | None:
        if isinstance(value, list):
            # [own, {observers: {contains: $user}}]: a record any of them reaches
            if not value:
                self.problem("role.scope", path, "is an empty list of scopes",
                             "write none, or list scopes: [own, {status: open}]")
                return None
            parts = [self.scope((*path, index), item, entity)
                     for index, item in enumerate(value)]
            if any(part is None for part in parts):
                return None
            return Scope("any", any=tuple(p for p in parts if p is not None))
        if isinstance(value, dict):
            return self.condition(path, value, entity)
        if value not in SCOPES:
            self.problem("role.scope", path, f"{value!r} is not a scope",
                         did_you_mean(str(value), SCOPES) or "use all, team, own, none, or a "
                         "condition such as {status: {in: [open]}}")
            return None
        if value in ("own", "team") and entity != EVERY_ENTITY and \
                not self.setup.entities[entity].owner:
            self.problem("role.owner", path, f"{entity} records have no owner, so "
                         f"{value!r} cannot apply", f"add 'owner: true' to {entity}.yaml, "
                         "or use all, none or a condition")
            return None
        return Scope(str(value))

    def condition(self, path: tuple[str | int, ...], value: dict[str, Any],
                  entity: str) -> Scope | None:
        if entity == EVERY_ENTITY:
            self.problem("role.condition", path, "a condition names fields, so it belongs "
                         "to one entity, not \"*\"", "write it under the entity it filters")
            return None
        params = condition_params(value)
        if not params:
            self.problem("role.condition", path, "is an empty condition",
                         "write all, or a condition such as {status: open}")
            return None
        refused = False
        for key, text in params:
            try:
                self.grammar.parse(entity, key, _example(text))
            except FilterRefused as problem:
                refused = True
                self.problem("role.condition", path, f"{key}: {problem}",
                             "write the condition as the list call's filters, e.g. "
                             "{amount: {gte: 1000}, owner: $user}")
        return None if refused else Scope("where", tuple(params))

    def field_list(self, path: tuple[str, ...], key: str, value: Any,
                   entity: str) -> frozenset[str] | None:
        if entity == EVERY_ENTITY:
            self.problem("role.fields", (*path, key), f"{key} names fields of one entity",
                         "list them under that entity, not under \"*\"", at_key=True)
            return None
        spec = self.setup.entities[entity]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem("role.fields", (*path, key), "must be a list of field names",
                         f"e.g. {key}: [{next(iter(spec.fields), 'name')}]")
            return None
        known = [*spec.fields, *spec.links]
        ok = True
        for index, name in enumerate(value):
            if name not in known:
                self.problem("role.fields", (*path, key, index),
                             f"{entity} has no field or link {name!r}",
                             did_you_mean(name, known) or "fields: " + ", ".join(known))
                ok = False
        return frozenset(value) if ok else None


def _example(text: str) -> str:
    """A stand-in for `$user` values while a condition is checked at load time."""
    for name, example in (("$user.email", "user@example.com"), ("$user.team", "team"),
                          ("$user", "1")):
        text = text.replace(name, example)
    return text
