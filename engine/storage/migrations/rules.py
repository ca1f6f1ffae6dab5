"""Rules in migrations: adding, changing or removing a rule is a step of the plan.

The setup history records a fingerprint of each rule (what it checks and whom it binds,
not its message), so the planner sees a rule added, changed or removed. A new or changed
rule's step counts the existing records that break it and lists their ids (the first
`SHOWN`), so `kartoteka migrate --plan` says what to fix.

Applying is never refused for them: the step is safe, the rule is recorded, the records
stay as they are, and each is refused its next write (create, patch, stage move) until it
satisfies the rule. A rule that reads a field or table the same migration creates or
renames cannot be counted before the migration runs; its step says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.sql import visitors

from engine.setup.rules import RuleSpec
from engine.setup.spec import SetupSpec
from engine.storage.database import UNSCOPED
from engine.storage.migrations import steps as s
from engine.storage.rules import broken
from engine.storage.tables import Storage

#: ids of breaking records a step lists
SHOWN = 20


def rules_model(setup: SetupSpec) -> dict[str, Any]:
    """`{"rules": {entity: {rule: fingerprint}}}` for the setup history; nothing when the
    setup has no rules (so a setup without rules keeps its version)."""
    found = {entity: {rule.name: fingerprint(rule) for rule in rules.rules}
             for entity, rules in setup.rules.items() if rules.rules}
    return {"rules": found} if found else {}


def fingerprint(rule: RuleSpec) -> str:
    """What a rule checks and whom it binds; its message and named fields left out."""
    checked = repr((rule.when, rule.require, sorted(rule.roles) if rule.roles is not None
                    else None, sorted(rule.unless_roles)))
    return hashlib.sha256(checked.encode()).hexdigest()[:16]


@dataclass(kw_only=True)
class RuleStep(s.Step):
    """A rule added, changed or removed: no DDL; the plan shows the records breaking it."""

    entity: str
    rule: str
    change: str  # add | change | remove
    breaking: int | None = None  # None: not countable before the migration runs
    ids: list[int] = field(default_factory=list)
    phase: ClassVar[int] = 8

    def describe(self) -> str:
        what = f"{self.change} rule {self.entity}.{self.rule}"
        if self.change == "remove":
            return what
        if self.breaking is None:
            return f"{what} (records are checked against it from their next write)"
        if not self.breaking:
            return f"{what} (no record breaks it)"
        shown = ", ".join(f"#{i}" for i in self.ids)
        more = self.breaking - len(self.ids)
        return (f"{what} ({s.count(self.breaking, 'record')} break it now: {shown}"
                + (f" and {more:,} more" if more > 0 else "")
                + "; each is refused its next write until it satisfies the rule)")

    def apply(self, ctx: s.Context) -> None:
        """Nothing to change: the rule is recorded with the setup version."""

    def as_json(self) -> dict[str, Any]:
        return {**super().as_json(), "entity": self.entity, "rule": self.rule,
                "change": self.change, "breaking": self.breaking, "ids": self.ids}


def rule_steps(conn: sa.Connection, storage: Storage, previous: dict[str, Any],
               live_name: dict[str, str]) -> list[s.Step]:
    """The steps for rules added, changed or removed since the `previous` model."""
    before: dict[str, dict[str, str]] = previous.get("rules") or {}
    now = rules_model(storage.setup).get("rules", {})
    found: list[s.Step] = []
    for entity, rules in storage.setup.rules.items():
        for rule in rules.rules:
            recorded = before.get(entity, {}).get(rule.name)
            if recorded == now[entity][rule.name]:
                continue
            change = "add" if recorded is None else "change"
            breaking, ids = _breaking(conn, storage, rule, live_name)
            found.append(RuleStep(table=entity, entity=entity, rule=rule.name, change=change,
                                  breaking=breaking, ids=ids))
    for entity, names in before.items():
        for name in names:
            if name not in now.get(entity, {}):
                found.append(RuleStep(table=entity, entity=entity, rule=name, change="remove"))
    return found


def _breaking(conn: sa.Connection, storage: Storage, rule: RuleSpec,
              live_name: dict[str, str]) -> tuple[int | None, list[int]]:
    """How many records break `rule` now, and the first ids; None when the rule reads a
    table or column the database does not have yet under its new name."""
    if rule.entity not in live_name:
        return 0, []  # a new entity: its table is created empty
    condition = broken(storage, rule, conn.dialect.name)
    inspector = sa.inspect(conn)
    columns: dict[str, set[str]] = {}
    for element in visitors.iterate(condition):
        table = getattr(element, "table", None)
        if isinstance(element, sa.Column) and isinstance(table, sa.Table):
            if live_name.get(table.name) != table.name:
                return None, []
            if table.name not in columns:
                columns[table.name] = {c["name"] for c in inspector.get_columns(table.name)}
            if element.name not in columns[table.name]:
                return None, []
    table = storage[rule.entity].table
    every = {UNSCOPED: "the migration plan counts every record that breaks a rule"}
    total = int(conn.execute(sa.select(sa.func.count()).select_from(table).where(condition)
                             .execution_options(**every)).scalar() or 0)
    ids = list(conn.execute(sa.select(table.c.id).where(condition).order_by(table.c.id)
                            .limit(SHOWN).execution_options(**every)).scalars()) if total else []
    return total, ids
