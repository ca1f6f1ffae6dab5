"""Unique sets and no-overlap rules on the write path (engine/setup/constraints.py says
what they are, engine/storage/constraints.py how the database holds them).

Every create and update calls `Constraints.before_write` inside its write transaction, with the
record as it will be stored: the shadow columns of insensitive unique sets get their
folded values, and each range is checked (its end after its start, else 422). After the
INSERT or UPDATE, `Constraints.after_write` looks, for each no-overlap rule the record takes
part in (its `where:` holds for the stored row), for another record with the same key
whose range overlaps (409 `overlap`, and the transaction rolls back). That look is
race-free: SQLite runs one write transaction at a time, and on PostgreSQL a
transaction-scoped advisory lock per (rule, key), taken before the write, makes
concurrent bookings of one dentist wait for each other, so the second one sees the
first. The exclusion constraint, checked at commit, stays as the database's own
guarantee. Other records are looked at whatever the acting user may read; one they may
read is named in the error, any other is not.
A unique set is enforced by its UNIQUE constraint; `conflict` turns its violation (and an
exclusion violation) into the 409 the API returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from engine.access.scopes import Access
from engine.errors import Conflict, ErrorDetail, ValidationFailed
from engine.setup.constraints import OverlapSpec, UniqueSpec
from engine.setup.names import link_column
from engine.setup.spec import EntitySpec
from engine.storage.constraints import Where, member_columns, overlap_name, shadow_values
from engine.storage.tables import EntityTable, Storage

WHY = "no_overlap: a booking conflicts with every other, whoever may read it"


class Constraints:
    """The unique sets and no-overlap rules of one storage, for one acting user."""

    def __init__(self, storage: Storage, access: Access, dialect: str):
        self.storage = storage
        self.access = access
        self.dialect = dialect
        #: constraint name, and (table, its columns) as SQLite names them → (entity, members, set)
        self.uniques: dict[Any, tuple[str, tuple[str, ...], UniqueSpec | None]] = {}
        self.overlaps: dict[str, tuple[EntitySpec, OverlapSpec]] = {}
        #: per (entity, rule): its `where:` as SQL, and every column it reads
        self.where: dict[tuple[str, OverlapSpec], Where] = {}
        self.columns: dict[tuple[str, OverlapSpec], frozenset[str]] = {}
        for table in storage.entities.values():
            spec = table.spec
            for field in spec.fields.values():
                if field.unique:
                    self._unique(spec, (field.name,), None)
            for unique in spec.unique:
                self._unique(spec, unique.members, unique)
            for rule in spec.no_overlap:
                self.overlaps[overlap_name(spec, rule)] = (spec, rule)
                self.where[(spec.name, rule)] = where = Where(storage, spec, rule)
                self.columns[(spec.name, rule)] = frozenset((
                    *member_columns(spec, rule.key), rule.start, rule.end,
                    *(link_column(c.name) if c.name in spec.links else c.name
                      for c in where.conditions)))

    def _unique(self, spec: EntitySpec, members: tuple[str, ...],
                unique: UniqueSpec | None) -> None:
        columns = tuple(member_columns(spec, members, unique))
        target = (spec.name, members, unique)
        self.uniques[(spec.name, columns)] = target
        table = self.storage[spec.name].table
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint) and \
                    tuple(c.name for c in constraint.columns) == columns:
                self.uniques[str(constraint.name)] = target

    # -- the write path ----------------------------------------------------------------------
    def before_write(self, conn: sa.Connection, table: EntityTable, record: Mapping[str, Any],
                     changes: dict[str, Any], record_id: int | None = None) -> None:
        """Before the INSERT or UPDATE: add the shadow values to `changes`, refuse a
        backwards range (422), and on PostgreSQL wait for the bookings of the same key
        being written now. `record` is the record as it will be stored, by column;
        `record_id` is None on create."""
        spec = table.spec
        if spec.unique:
            changes.update(shadow_values(spec, record, None if record_id is None else changes))
        if not spec.no_overlap:
            return
        self._check_ranges(spec, record)
        if self.dialect == "postgresql":
            locks = sorted(_lock_id(overlap_name(spec, rule), key)
                           for rule in self._touched(spec, changes, record_id)
                           if (key := self._key(spec, rule, record)) is not None)
            for lock in locks:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))

    def after_write(self, conn: sa.Connection, table: EntityTable, record: Mapping[str, Any],
                    changes: Mapping[str, Any], record_id: int, *, created: bool) -> None:
        """After it, in the same transaction: refuse (409, rolled back) a record that now
        overlaps another under a rule it takes part in (its `where:` holds for it)."""
        spec = table.spec
        for rule in self._touched(spec, changes, None if created else record_id):
            key = self._key(spec, rule, record)
            if key is None:
                continue
            where = self.where[(spec.name, rule)](table.table, self.dialect)
            if where and conn.execute(self.access.unscoped(sa.select(table.table.c.id).where(
                    table.table.c.id == record_id, *where), WHY)).first() is None:
                continue
            other = self._overlapping(conn, table, rule, key, record, record_id, where)
            if other is not None:
                raise self._overlap(conn, spec, rule, other)

    def _touched(self, spec: EntitySpec, changes: Mapping[str, Any],
                 record_id: int | None) -> list[OverlapSpec]:
        """The rules a write may break: all on create, those whose columns changed on update."""
        return [rule for rule in spec.no_overlap if record_id is None or any(
            column in changes for column in self.columns[(spec.name, rule)])]

    @staticmethod
    def _check_ranges(spec: EntitySpec, record: Mapping[str, Any]) -> None:
        problems = []
        for start_field, end_field in dict.fromkeys((r.start, r.end) for r in spec.no_overlap):
            start, end = record.get(start_field), record.get(end_field)
            if start is not None and end is not None and end <= start:
                problems.append(ErrorDetail(end_field, f"must be after {start_field} (a range "
                                                       "ends after it starts)"))
        if problems:
            raise ValidationFailed(f"the {spec.name} is not valid", problems)

    @staticmethod
    def _key(spec: EntitySpec, rule: OverlapSpec,
             record: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The values the rule compares, or None when one is empty (nothing to check)."""
        values = tuple(record.get(c) for c in (*member_columns(spec, rule.key), rule.start,
                                               rule.end))
        return None if any(v is None for v in values) else values

    def _overlapping(self, conn: sa.Connection, table: EntityTable, rule: OverlapSpec,
                     key: tuple[Any, ...], record: Mapping[str, Any], record_id: int,
                     where: list[Any]) -> int | None:
        t = table.table
        columns = member_columns(table.spec, rule.key)
        start, end = t.c[rule.start], t.c[rule.end]
        conditions = [t.c[c] == v for c, v in zip(columns, key, strict=False)]
        conditions += [start < record[rule.end], end > record[rule.start], t.c.id != record_id,
                       *where]
        found: int | None = conn.execute(self.access.unscoped(
            sa.select(t.c.id).where(*conditions).order_by(t.c.id).limit(1), WHY)).scalar()
        return found

    def _overlap(self, conn: sa.Connection | None, spec: EntitySpec, rule: OverlapSpec,
                 other: int | None) -> Conflict:
        if other is not None and conn is not None:
            t = self.storage[spec.name].table
            readable = conn.execute(self.access.scoped(
                sa.select(t.c.id).where(t.c.id == other), spec.name, "read")).first()
            if readable is None:
                other = None
        named = f"{spec.name} {other}" if other is not None else f"another {spec.name}"
        key = " and ".join(rule.key)
        return Conflict(
            f"{rule.start}–{rule.end} overlaps {named} with the same {key}; ranges include "
            f"their start and exclude their end",
            [ErrorDetail(name, f"overlaps {named}") for name in rule.fields], code="overlap")

    # -- errors the database raised ----------------------------------------------------------
    def conflict(self, error: IntegrityError) -> Conflict | None:
        """The 409 for a violated unique set or exclusion constraint; None for another error."""
        constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        if constraint in self.overlaps:
            spec, rule = self.overlaps[constraint]
            return self._overlap(None, spec, rule, None)
        target = self.uniques.get(constraint)
        text = str(error.orig)
        if target is None and "UNIQUE constraint failed:" in text:
            named = text.split("UNIQUE constraint failed:")[1].strip().splitlines()[0]
            pairs = [part.strip().partition(".") for part in named.split(",")]
            target = self.uniques.get((pairs[0][0], tuple(column for _, _, column in pairs)))
        if target is None:
            return None
        entity, members, unique = target
        words = unique.words() if unique is not None else members[0]
        details = [ErrorDetail(name, "is already taken by another record" if len(members) == 1
                               else "together with " + " and ".join(m for m in members if m != name)
                               + ", is already taken by another record") for name in members]
        return Conflict(f"another {entity} already has this {words}", details,
                        code="unique_violation")


def _lock_id(name: str, key: tuple[Any, ...]) -> int:
    """A signed 64-bit advisory lock number for one rule and key (a collision only makes
    two unrelated bookings wait for each other)."""
    digest = hashlib.sha256(repr((name, key[:-2])).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
