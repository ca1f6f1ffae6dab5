"""Roll-up fields kept true: recomputed in the same transaction as every write that
changes what they add up — a child created, changed, moved to another parent, deleted or
moved to another stage, and a many-to-many link added or removed.

The batch computation is `engine/storage/rollups.py`. Here: which parents a write
affects. A child's write names its parents (its link's old and new values; for a
many-to-many way, its join rows), and only when it changed something the roll-ups read
(the rolled-up field, a field of `where`, the link itself). Along a way back, the
parents' counts, sums, minimums and maximums move by the child's old and new values, one
statement per parent (engine/storage/rollup_deltas.py); otherwise, or when an increment
cannot say, the parents are locked and computed again. A parent whose roll-ups nothing
reads is done there; for the others, what changed is followed like any change of a
stored column: the parents' formulas and the formulas reading them
(engine/records/formulas.py), the roll-ups of grandparents that add up a roll-up, and the
parents' rules — a line that would push an order past a rule on its total is refused, and
nothing is written.

As for formulas, a parent recomputed keeps its `version` and `updated_at` and gets no
timeline entry: nobody edited it, so an `If-Match` a client holds stays valid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.records.formulas import Formulas
from engine.records.rules import Rules
from engine.setup.names import link_column, poly_entity_column
from engine.setup.rollups import MANY, REVERSE
from engine.setup.spec import LinkSpec
from engine.storage.rollup_deltas import Increment, Increments
from engine.storage.rollups import Changes, EntityRollups, unscoped
from engine.storage.tables import Storage

#: parent entity → ids whose roll-ups are due
Due = dict[str, set[int]]


@dataclass(frozen=True)
class _Watch:
    """Roll-ups of `parent` add up records of the watched entity along one way."""

    parent: str
    child: str
    kind: str
    link: LinkSpec
    #: the child's columns those roll-ups read (rolled-up fields, `where` fields)
    columns: frozenset[str]
    #: the columns that say which parent a child belongs to (REVERSE only)
    key: tuple[str, ...] = ()
    #: the parent's roll-ups along this way kept by increments (REVERSE only), or None:
    #: added up again from the children
    increments: Increments | None = None


class Rollups:
    """Keeps every roll-up field of one storage equal to its definition."""

    def __init__(self, storage: Storage, dialect: str, formulas: Formulas, rules: Rules):
        self.storage = storage
        self.formulas = formulas
        self.rules = rules
        setup = storage.setup
        self.entities = {
            spec.name: EntityRollups(storage, spec, dialect)
            for spec in setup.entities.values()
            if any(f.rollup is not None for f in spec.fields.values())}
        #: child entity → the ways roll-ups read it along
        self.watches: dict[str, list[_Watch]] = defaultdict(list)
        #: (entity declaring a many-to-many link, link) → (parent entity, parents' side)
        self.joins: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        #: (child, parent, kind, link) → the link, and the child's columns read along it
        ways: dict[tuple[str, str, str, str], tuple[LinkSpec, set[str]]] = {}
        for plan in self.entities.values():
            for field in plan.fields:
                rollup = field.rollup
                assert rollup is not None
                attributes = storage[rollup.child].attributes
                _, read = ways.setdefault(
                    (rollup.child, plan.entity, rollup.kind, rollup.link.name),
                    (rollup.link, set()))
                if rollup.field is not None and not rollup.pair:
                    read.add(rollup.field)
                # the pairs' values change only with the pairs: followed by links_changed
                read.update(attributes[c.name].column.name for c in rollup.record_where)
                if rollup.kind != REVERSE:
                    declared = plan.entity if rollup.kind == MANY else rollup.child
                    side = "source" if rollup.kind == MANY else "target"
                    self.joins[(declared, rollup.link.name)].add((plan.entity, side))
        for (child, parent, kind, name), (link, read) in ways.items():
            key: tuple[str, ...] = ()
            increments = None
            if kind == REVERSE:
                key = (link_column(name),) + ((poly_entity_column(name),)
                                              if link.polymorphic else ())
                # a computed field of the child (a formula, a roll-up) also changes outside
                # the child's own write and is followed by `changed`, which adds the
                # parents up again: an increment on top of that would count it twice
                fields = setup.entities[child].fields
                if not any(c in fields and fields[c].computed for c in read):
                    increments = Increments.build(storage, setup.entities[parent], child, name,
                                                  dialect)
            self.watches[child].append(_Watch(parent, child, kind, link, frozenset(read), key,
                                              increments))
        #: parent entities whose roll-ups nothing else reads (no formula, roll-up or rule):
        #: a child's increment needs no answer and nothing follows it
        self.unread = {name for name in self.entities if not self._read(name)}
        formulas.listeners.append(self.changed)

    def _read(self, entity: str) -> bool:
        """Does a formula, a roll-up or a rule read this entity's roll-ups?"""
        names = set(self.entities[entity].names)
        plan = self.formulas.entities.get(entity)
        rules = self.storage.setup.rules.get(entity)
        return bool((plan is not None and names & plan.own_columns)
                    or any(self.formulas.watchers.get((entity, n)) for n in names)
                    or any(names & (w.columns | set(w.key)) for w in self.watches.get(entity, ()))
                    or (rules is not None and rules.rules))

    def empty(self, entity: str) -> dict[str, Any]:
        """A new record's roll-ups: nothing links to it yet."""
        plan = self.entities.get(entity)
        return dict(plan.empty) if plan is not None else {}

    def on_write(self, conn: sa.Connection, entity: str, record_id: int,
                 before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
        """After a record's INSERT (`before` None) or UPDATE, with its formulas: the
        roll-ups adding it up along a link it holds, or reading a field it changed."""
        watches = self.watches.get(entity)
        if not watches:
            return  # the hot path of a setup without roll-ups over this entity
        changed = set(after) if before is None else {
            key for key, value in after.items() if before.get(key) != value}
        due: Due = defaultdict(set)
        increments: dict[tuple[str, int], list[tuple[Increments, Increment | None]]] = \
            defaultdict(list)
        for watch in watches:
            if watch.kind != REVERSE:
                if before is not None and changed & watch.columns:
                    due[watch.parent].update(self._parents(conn, watch, [record_id]))
                continue
            new = _parent(watch, after)
            old = None if before is None else _parent(watch, before)
            if (old is None and new is None) or (
                    before is not None and old == new and not changed & watch.columns):
                continue
            if watch.increments is None or (
                    before is not None and watch.increments.moved(before, after)):
                due[watch.parent].update(i for i in (old, new) if i is not None)
                continue
            if old == new:
                assert before is not None and new is not None
                increments[(watch.parent, new)].append(
                    (watch.increments, watch.increments.changed(before, after)))
                continue
            if old is not None:
                assert before is not None
                increments[(watch.parent, old)].append(
                    (watch.increments, watch.increments.removed(before)))
            if new is not None:
                increments[(watch.parent, new)].append(
                    (watch.increments, watch.increments.added(after)))
        for (parent, parent_id), found in sorted(increments.items()):
            self._increment(conn, parent, parent_id, record_id, found)
        self.recompute(conn, due)

    def _increment(self, conn: sa.Connection, parent: str, parent_id: int, child_id: int,
                   increments: list[tuple[Increments, Increment | None]]) -> None:
        """A parent's roll-ups moved by a child's write (engine/storage/rollup_deltas.py),
        or added up again when an increment cannot say what they are now."""
        changes: dict[str, Any] = {}
        answer = parent not in self.unread
        for plan, increment in increments:
            applied = None if increment is None else plan.apply(conn, parent_id, child_id,
                                                                 increment, answer=answer)
            if applied is None:  # added up again; what the increments before it moved stays
                # in `changes` (the recomputation reports only what differs from the stored)
                again = self.entities[parent].recompute(conn, [parent_id])
                changes.update(again.get(parent_id, {}))
                break
            changes.update(applied)
        if changes:
            self._follow(conn, parent, {parent_id: changes})

    def links_changed(self, conn: sa.Connection, entity: str, link: str, source_id: int,
                      target_ids: Iterable[int]) -> Changes:
        """Join rows of `entity.link` from `source_id` to `target_ids` were added, changed
        or removed: the roll-ups along that link on either side. Returns what changed of
        the source record's own roll-ups (to answer with). The source record is locked by
        the write already (it is the link's owner, locked to change its links, or new), so
        it is not locked a second time."""
        sides = self.joins.get((entity, link))
        if not sides:
            return {}
        due: Due = defaultdict(set)
        for parent, side in sides:
            due[parent].update([source_id] if side == "source" else target_ids)
        return self.recompute(conn, due, held=(entity, source_id)).get(entity, {})

    def parents_of(self, conn: sa.Connection, entity: str, ids: list[int]) -> Due:
        """Before records are deleted: the parents whose roll-ups add them up."""
        due: Due = defaultdict(set)
        for watch in self.watches.get(entity, ()):
            due[watch.parent].update(self._parents(conn, watch, ids))
        return due

    def changed(self, conn: sa.Connection, entity: str, ids: Iterable[int],
                fields: Iterable[str]) -> None:
        """These stored columns of these records changed outside their own write (a
        formula recomputed, a roll-up, a link emptied by a deletion): the roll-ups
        reading them."""
        watches = self.watches.get(entity)
        if not watches:
            return
        ids, fields = list(ids), set(fields)
        due: Due = defaultdict(set)
        for watch in watches:
            if fields & (watch.columns | set(watch.key)):
                due[watch.parent].update(self._parents(conn, watch, ids))
        self.recompute(conn, due)

    def recompute(self, conn: sa.Connection, due: Mapping[str, set[int]],
                  held: tuple[str, int] | None = None) -> dict[str, Changes]:
        """Compute these parents' roll-ups again (locked first, but for the record `held`
        already locked by the write); follow what changed to the formulas and roll-ups
        reading them, then check the parents' rules."""
        done: dict[str, Changes] = {}
        for parent in sorted(due):
            ids = due[parent]
            if not ids:
                continue
            plan = self.entities[parent]
            if held is not None and held[0] == parent and held[1] in ids:
                changes = plan.recompute(conn, [held[1]], lock=False)
                changes.update(plan.recompute(conn, ids - {held[1]}) if len(ids) > 1 else {})
            else:
                changes = plan.recompute(conn, ids)
            if not changes:
                continue
            done[parent] = changes
            self._follow(conn, parent, changes)
        return done

    def _follow(self, conn: sa.Connection, parent: str, changes: Changes) -> None:
        """Roll-ups of these parents changed: the formulas and roll-ups reading them
        follow (what formulas change is added to `changes`), then the parents' rules."""
        by_field: dict[str, list[int]] = defaultdict(list)
        for record_id, values in changes.items():
            for name in values:
                by_field[name].append(record_id)
        for name, changed_ids in by_field.items():
            for record_id, values in self.formulas.changed(
                    conn, parent, changed_ids, {name}).items():
                changes[record_id].update(values)  # answered with the roll-ups
            self.changed(conn, parent, changed_ids, {name})
        self.rules.check(conn, parent, sorted(changes))

    def _parents(self, conn: sa.Connection, watch: _Watch, ids: list[int]) -> set[int]:
        """The parents the records `ids` are added up into along `watch`'s way."""
        if not ids:
            return set()
        if watch.kind == REVERSE:
            child = self.storage[watch.child].table
            statement = sa.select(child.c[watch.key[0]]).where(
                child.c.id.in_(ids), child.c[watch.key[0]].is_not(None))
            if watch.link.polymorphic:
                statement = statement.where(child.c[watch.key[1]] == watch.parent)
        elif watch.kind == MANY:
            joins = self.storage[watch.parent].join_tables[watch.link.name]
            statement = sa.select(joins.c.source_id).where(joins.c.target_id.in_(ids))
        else:
            joins = self.storage[watch.child].join_tables[watch.link.name]
            statement = sa.select(joins.c.target_id).where(joins.c.source_id.in_(ids))
        return set(conn.execute(unscoped(statement.distinct())).scalars())


def _parent(watch: _Watch, values: Mapping[str, Any]) -> int | None:
    """The parent a child's values name along a REVERSE way (None: none of this entity)."""
    if watch.link.polymorphic and values.get(watch.key[1]) != watch.parent:
        return None
    found = values.get(watch.key[0])
    return found if isinstance(found, int) else None

