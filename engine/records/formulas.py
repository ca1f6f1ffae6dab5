"""Formula fields kept true: computed and stored in the same transaction as every write
that changes what they read — the record's own fields, and fields of the records its
many-to-one links reach (`client.discount`, `client.region.rate`).

The batch computation itself is `engine/storage/formulas.py`. Here: which records a write
affects. The record written is recomputed after its INSERT or UPDATE; when it changed a
column that other records' formulas read through links, those records are found with
IN-subqueries back along the link path and recomputed too, and what they change is
propagated in turn (the setup has no formula cycles, so this ends).

Choices, documented in docs/setup-language.md ("Formula fields"):
- a dependent's recompute changes only its formula columns: not its `version`, nor
  `updated_at`, and it is not journalled — the record was not edited, so a client's
  If-Match stays valid and the timeline shows edits, not their echoes;
- the record being written gets its formulas in its own transaction, and their new values
  appear in its journal entry like any other change;
- `today`/`now` are read when a record is computed: a stored `due - today` counts the days
  as of the record's last write (or recompute), not as of the reading.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.errors import ErrorDetail, ValidationFailed
from engine.records import through
from engine.setup.names import link_column
from engine.storage.formulas import BATCH, Changes, EntityFormulas, entity_at, unscoped
from engine.storage.tables import Storage


@dataclass(frozen=True)
class _Watcher:
    """`entity`'s formulas read a column of another entity through `links` (a path prefix)."""

    entity: str
    links: tuple[str, ...]


class Formulas:
    """Keeps every formula field of one storage equal to its expression."""

    def __init__(self, storage: Storage):
        setup = storage.setup
        self.storage = storage
        self.entities = {
            spec.name: EntityFormulas(setup, storage, spec)
            for spec in setup.entities.values()
            if any(f.formula is not None for f in spec.fields.values())}
        #: (entity, column) → the formulas of other records reading it through links
        self.watchers: dict[tuple[str, str], list[_Watcher]] = defaultdict(list)
        for plan in self.entities.values():
            spec = setup.entity(plan.entity)
            for path in plan.paths:
                for depth in range(1, len(path)):
                    at = entity_at(setup, spec, path[:depth])
                    column = link_column(path[depth]) if depth < len(path) - 1 else path[depth]
                    watcher = _Watcher(plan.entity, path[:depth])
                    if watcher not in self.watchers[(at.name, column)]:
                        self.watchers[(at.name, column)].append(watcher)
        #: entity → whether formulas elsewhere read any of its columns
        self.watched = {entity: True for entity, _ in self.watchers}
        #: hear (conn, entity, ids, fields) when recomputed formulas changed stored values
        #: of records other than the one written (roll-ups adding them up: records/rollups.py)
        self.listeners: list[Callable[[sa.Connection, str, list[int], set[str]], None]] = []
        #: entity → its computed fields (formulas and roll-ups): never sent by a client
        self.computed = {
            spec.name: {f.name: "a formula" if f.formula is not None else "a roll-up"
                        for f in spec.fields.values() if f.computed}
            for spec in setup.entities.values()}
        #: entities with a link whose pairs have formula fields (never sent either)
        self.pair_computed = frozenset(
            spec.name for spec in setup.entities.values()
            if any(f.formula is not None for link in spec.links.values()
                   for f in link.through.values()))

    def refuse_computed(self, entity: str, body: Any) -> None:
        """A client never sends a computed field: 422 `field_computed` naming each one."""
        computed = self.computed.get(entity) or {}
        pairs = through.refuse_computed(self.storage.setup.entities[entity], body) \
            if entity in self.pair_computed else []
        if (not computed and not pairs) or not isinstance(body, dict):
            return
        sent = [name for name in computed if name in body]
        if sent or pairs:
            named = [*sent, *(d.field for d in pairs)]
            raise ValidationFailed(
                f"{', '.join(named)} of a {entity} {'is' if len(named) == 1 else 'are'} "
                "computed by the server and cannot be sent",
                [*(ErrorDetail(name, f"is computed by {computed[name]}: leave it out")
                   for name in sent), *pairs],
                code="field_computed")

    def on_write(self, conn: sa.Connection, entity: str, record_id: int,
                 before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
        """After a record's INSERT (`before` None) or UPDATE: compute its formulas, store the
        ones that changed, recompute the records whose formulas read what changed. Returns
        the record's formula values that changed, to merge into what the caller answers."""
        plan = self.entities.get(entity)
        if plan is None and (before is None or not self.watched.get(entity)):
            return {}  # the hot path of a setup without formulas here: nothing to do
        changed = set(after) if before is None else {
            key for key, value in after.items() if before.get(key) != value}
        own: dict[str, Any] = {}
        if plan is not None and (before is None or plan.uses_clock
                                 or changed & plan.own_columns):
            own = plan.recompute(conn, [record_id]).get(record_id, {})
            changed |= set(own)
        if before is not None:  # nothing links to a record just created
            self._dependents(conn, entity, [record_id], changed)
        return own

    def changed(self, conn: sa.Connection, entity: str, ids: Iterable[int],
                fields: Iterable[str]) -> Changes:
        """These stored columns of these records changed outside a record write (a roll-up's
        value, a link emptied by a deletion): recompute whatever reads them — the records'
        own formulas and those of the records linking to them, and so on. Returns what
        changed of these records' own formulas."""
        ids, fields = list(ids), set(fields)
        own: Changes = {}
        if not ids or not fields:
            return own
        plan = self.entities.get(entity)
        if plan is not None and fields & plan.own_columns:
            for chunk in _chunks(ids, BATCH):
                changes = plan.recompute(conn, chunk)
                own.update(changes)
                self._propagate(conn, entity, changes)
        self._dependents(conn, entity, ids, fields)
        return own

    def _dependents(self, conn: sa.Connection, entity: str, ids: list[int],
                    columns: set[str]) -> None:
        seen: set[_Watcher] = set()
        for column in sorted(columns):
            for watcher in self.watchers.get((entity, column), ()):
                if watcher in seen:
                    continue
                seen.add(watcher)
                plan = self.entities[watcher.entity]
                for chunk in _chunks(ids, 500):
                    found = conn.execute(unscoped(self._reaching(watcher, chunk))).scalars()
                    for batch in _chunks(sorted(set(found)), BATCH):
                        self._propagate(conn, watcher.entity, plan.recompute(conn, batch))

    def _propagate(self, conn: sa.Connection, entity: str, changes: Changes) -> None:
        """Recomputed formulas are changed columns too: their readers follow."""
        by_field: dict[str, list[int]] = defaultdict(list)
        for record_id, values in changes.items():
            for name in values:
                by_field[name].append(record_id)
        for name, ids in by_field.items():
            self._dependents(conn, entity, ids, {name})
            for listener in self.listeners:
                listener(conn, entity, ids, {name})

    def _reaching(self, watcher: _Watcher, ids: list[int]) -> sa.Select[Any]:
        """The ids of `watcher.entity` whose link path ends at one of `ids`."""
        setup = self.storage.setup
        spec = setup.entity(watcher.entity)
        tables = [self.storage[spec.name].table]
        for name in watcher.links[:-1]:
            spec = setup.entity(spec.links[name].target)
            tables.append(self.storage[spec.name].table)
        reached: Any = ids
        for table, name in reversed(list(zip(tables, watcher.links, strict=True))):
            reached = sa.select(table.c.id).where(table.c[link_column(name)].in_(reached))
        statement: sa.Select[Any] = reached
        return statement


def _chunks(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]
