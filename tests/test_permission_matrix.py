"""The permission matrix, generated from the setup: for every role, entity and operation,
the engine allows or refuses exactly as the role declares — on a record the user owns
and on one someone of another team owns. Adding a role or an entity to the default
setup adds its rows here without editing the test. Scopes given as a condition (or a
list with one) are covered by tests/test_access.py, with records made to meet and miss them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from engine import Kartoteka
from engine.access.users import User
from engine.errors import Forbidden, NotFound, ValidationFailed
from engine.setup.roles import ADMIN, OPERATIONS, Scope, admin_role

SAMPLES: dict[str, Any] = {
    "string": "x", "text": "x", "integer": 1, "decimal": "1", "money": "1.00",
    "boolean": True, "date": "2026-01-01", "datetime": "2026-01-01T00:00:00Z",
    "email": "x@example.com", "phone": "+7 900 000-00-00", "url": "https://example.com",
}


def sample(kt: Kartoteka, entity: str, owner: int | None, serial: list[int]) -> int:
    """A record with every required field and link filled, made as the system."""
    spec = kt.setup.entities[entity]
    body: dict[str, Any] = {}
    serial[0] += 1
    for field in spec.fields.values():
        if not field.required or field.default is not None:
            continue
        kind = field.type.name
        if kind in ("choice", "multichoice"):
            options = list(field.options or ())
            body[field.name] = options[0] if kind == "choice" else options[:1]
        else:
            value = SAMPLES[kind]
            body[field.name] = f"{value}{serial[0]}" if field.unique and kind == "string" else value
    for link in spec.links.values():
        if link.required:
            target = link.targets[0]
            linked = sample(kt, target, owner, serial)
            body[link.name] = ({"entity": target, "id": linked} if link.polymorphic
                               else [linked] if link.many else linked)
    if spec.owner and owner is not None:
        body["owner"] = owner
    return int(kt.records.create(entity, body)["id"])


def perform(kt: Kartoteka, operation: str, entity: str, record: int,
            body: dict[str, Any]) -> Any:
    if operation == "create":
        return kt.records.create(entity, body)
    if operation == "read":
        return kt.records.get(entity, record)
    if operation == "delete":
        return kt.records.delete(entity, record)
    return kt.records.update(entity, record, body)  # update and reassign


def outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except NotFound:
        return "not found"
    except Forbidden:
        return "forbidden"
    except ValidationFailed as failed:
        return "refused: " + failed.code
    return "ok"


def reaches(scope: Scope, mine: bool) -> bool:
    return scope.kind == "all" or (scope.kind in ("own", "team") and mine)


def expected(grant: Any, operation: str, mine: bool, links_to: list[str],
             grants: Callable[[str], Any]) -> str:
    read = grant.scope("read")
    if operation == "create":
        if grant.scope("create").kind == "none":
            return "forbidden"
        # linking to a record one may not see is linking to nothing
        if any(not reaches(grants(target).scope("read"), mine) for target in links_to):
            return "refused: link_not_found"
        return "ok"
    if not reaches(read, mine):
        return "not found"
    if operation == "read":
        return "ok"
    if operation == "reassign":
        if not reaches(grant.scope("update"), mine):
            return "forbidden"
        if grant.scope("reassign").kind == "none":
            return "refused: owner_not_writable"
    return "ok" if reaches(grant.scope(operation), mine) else "forbidden"


def test_every_role_entity_and_operation_as_declared(kt: Kartoteka) -> None:
    roles = {**kt.setup.roles, ADMIN: admin_role(kt.setup)}
    serial = [0]
    checked = 0
    mismatches = []
    for role_name, role in roles.items():
        me, _ = kt.users.add(f"{role_name}@example.com", [role_name], team=f"team-{role_name}")
        other, _ = kt.users.add(f"other-{role_name}@example.com", ["director"], team="elsewhere")
        third, _ = kt.users.add(f"third-{role_name}@example.com", ["director"], team="elsewhere")
        user = User(me.id, me.email, me.name, me.roles, me.team, True)
        for entity, spec in kt.setup.entities.items():
            grant = role.grant(entity)
            if any(grant.scope(op).kind in ("where", "any") for op in OPERATIONS):
                continue
            for mine in (True, False) if spec.owner else (True,):
                owner = me.id if mine else other.id
                for operation in OPERATIONS:
                    if operation == "reassign" and not spec.owner:
                        continue
                    record = sample(kt, entity, owner if spec.owner else None, serial)
                    body: dict[str, Any] = {"owner": third.id} if operation == "reassign" else {}
                    # a new record linked to records the user owns (or, for "other", not)
                    copy = _body_of(kt, entity, record)
                    with kt.acting.as_user(user):
                        got = outcome(partial(perform, kt, operation, entity, record,
                                              copy if operation == "create" else body))
                    want = expected(grant, operation, mine,
                                    [link.targets[0] for link in spec.links.values()
                                     if link.required], role.grant)
                    checked += 1
                    if got != want:
                        mismatches.append(f"{role_name} {operation} {entity} "
                                          f"({'own' if mine else 'other'}): {got}, want {want}")
    assert not mismatches, "\n".join(mismatches)
    assert checked > len(roles) * len(kt.setup.entities) * 4


def _body_of(kt: Kartoteka, entity: str, record_id: int) -> dict[str, Any]:
    """A create body copied from an existing record (unique values made fresh)."""
    spec = kt.setup.entities[entity]
    record = kt.records.get(entity, record_id)
    body: dict[str, Any] = {}
    for name, field in spec.fields.items():
        if field.required and record.get(name) is not None:
            body[name] = record[name] + "-copy" if field.unique else record[name]
    for name, link in spec.links.items():
        if link.required:
            body[name] = record[name]
    return body


@pytest.mark.parametrize("role", ["manager", "lawyer", "purchaser"])
def test_roles_without_a_grant_cannot_list_the_entity(kt: Kartoteka, role: str) -> None:
    user, _ = kt.users.add(f"{role}@example.com", [role])
    granted = kt.setup.roles[role]
    for entity in kt.setup.entities:
        with kt.acting.as_user(user):
            result = outcome(partial(kt.records.list_page, entity, []))
        assert result == ("forbidden" if granted.grant(entity).scope("read").kind == "none"
                          else "ok"), (role, entity)
