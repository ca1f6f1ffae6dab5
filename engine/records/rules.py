"""Enforcing an entity's rules and stage locks on every write path.

`Rules.check(conn, entity, ids)` is the last step of a write transaction (create, patch,
stage move; bulk and import call it the same way): one SELECT of the written rows with a
flag per rule that binds the acting user, compiled by `engine/storage/rules.py`. Rules
read the rows as stored, so values the same transaction computed before (defaults,
formulas, roll-ups) count. A broken rule raises `RuleFailed` (422 `rule_failed`) and the
transaction rolls back: nothing is written.

`Rules.check_locks(entity, current, changes)` refuses, before anything is written, a patch
that changes a field read-only in the stage the record is in (422 `field_locked`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.access.acting import Acting
from engine.access.scopes import Access
from engine.errors import BrokenRule, ErrorDetail, RuleFailed, ValidationFailed
from engine.setup.rules import NO_RULES, RuleSpec
from engine.storage.rules import broken
from engine.storage.tables import Storage


class Rules:
    """The rules of one storage's entities, checked for the acting user."""

    def __init__(self, storage: Storage, dialect: str, acting: Acting):
        self.storage = storage
        self.dialect = dialect
        self.acting = acting

    def binding(self, entity: str) -> tuple[RuleSpec, ...]:
        """The entity's rules that bind the acting user (the system: those for everyone)."""
        user = self.acting.user
        roles = user.roles if user is not None else ()
        return tuple(r for r in self.storage.setup.rules.get(entity, NO_RULES).rules
                     if r.applies_to(roles))

    def check(self, conn: sa.Connection, entity: str, ids: Iterable[int]) -> None:
        """Raise `RuleFailed` when a row of `ids`, as stored now, breaks a binding rule."""
        rules = self.binding(entity)
        ids = list(ids)
        if not rules or not ids:
            return
        table = self.storage[entity].table
        flags: list[Any] = [broken(self.storage, rule, self.dialect).label(f"r{i}")
                            for i, rule in enumerate(rules)]
        statement: sa.Select[Any] = sa.select(*flags).where(table.c.id.in_(ids))
        rows = conn.execute(Access.unscoped(
            statement, "rules are checked on the rows just written")).all()
        failed = [rule for i, rule in enumerate(rules) if any(row[i] for row in rows)]
        if failed:
            raise RuleFailed(entity, [BrokenRule(r.name, r.fields, r.message) for r in failed],
                             self.storage.setup.languages)

    def check_locks(self, entity: str, current: Mapping[str, Any],
                    changes: Iterable[str]) -> None:
        """Refuse changing a field that is read-only in the record's present stage."""
        locked = self.storage.setup.rules.get(entity, NO_RULES).locked
        stage = current.get("stage")
        refused = [ErrorDetail(name, f"is read-only in stage {stage!r}")
                   for name in changes if stage in locked.get(name, ())]
        if refused:
            raise ValidationFailed(
                f"the {entity} is in stage {stage!r}, where "
                + ", ".join(d.field for d in refused) + " may not change",
                refused, code="field_locked")
