"""Merge duplicates into one record: `POST /api/{e}/{id}/merge {"others": [ids]}`.

In one transaction, for a survivor and the others merged into it:

1. the caller must be able to update the survivor and to update and delete each other
   (else 404 for a record out of their scope, 403 for one they see but may not change;
   nothing is changed);
2. every record linking to an other now links to the survivor: a one-to-many link's
   column is repointed (polymorphic ones too: tasks, documents about it), a many-to-many
   pair moves with the data it carries (`through:`), and a pair the survivor already has is
   kept once, the survivor's values winning; the others' own many-to-many links move the
   same way. Each repointed record gets a new version and a history entry;
3. the others' history (changes), timeline (comments, calls, meetings), stage history,
   automation runs and events, notifications and fired date triggers move to the survivor
   (`engine.records.merge_moves`): its card shows everything they had, and the funnel
   keeps their time in stage (the time was spent, by the same client under two ids);
4. the others are deleted (their deletion stays recorded under their own ids);
5. the survivor's empty fields and links are filled from the others, the first other
   (in the order given) with a value winning — a field the caller may not see or set is
   left as it is — through `Records.update`, so rules, formulas and roll-ups apply;
6. the merge is recorded in the survivor's history (action `merge`: which records were
   merged in, which fields they filled), and the survivor gets a new version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from engine.errors import ErrorDetail, StaleVersion, ValidationFailed
from engine.records.merge_moves import move_the_rest
from engine.setup.names import link_column, poly_entity_column
from engine.setup.spec import LinkSpec

if TYPE_CHECKING:
    from engine.records.service import Record, Records
    from engine.storage.tables import EntityTable

#: records merged into one in one call, at most
MAX_OTHERS = 50
BODY_KEYS = ("others",)
WHY = "a merge moves every link to the merged records, whoever may see the linking records"


class Merger:
    """The merges of one engine's records."""

    def __init__(self, records: Records):
        self.records = records
        self.storage = records.storage

    def merge(self, entity: str, survivor: int, body: Any, *, if_version: int | None = None,
              actor: int | None = None) -> Record:
        from engine.records.service import checked_id

        table = self.storage[entity]
        survivor = checked_id(survivor, entity)
        records = self.records
        try:
            with records.db.write() as conn:
                # a record out of the caller's scope is 404 whatever the body says
                current = records.locked_row(conn, entity, survivor, "update")
                others = self._others(entity, survivor, body)
                if if_version is not None and current["version"] != if_version:
                    raise StaleVersion(f"{entity} {survivor} is at version "
                                       f"{current['version']}, not {if_version}; read it "
                                       "again and merge then")
                rights = records.access.rights(entity)
                rows = []
                for other in others:
                    rows.append(records.locked_row(conn, entity, other, "update"))
                    if rights is not None:
                        records._require(conn, entity, rights, "delete", other)
                fill = self._fill(table, current, rows)
                now = dt.datetime.now(dt.UTC)
                self._repoint(conn, table, survivor, others, actor, now)
                self._unloop(conn, table, survivor)
                self._move_history(conn, entity, survivor, others)
                move_the_rest(conn, records.journal, entity, survivor, others,
                              current.get("stage"))
                records._delete(conn, entity, others, set(), actor, scoped=True)
                if fill:
                    with records.duplicates.confirmed("all"):
                        records.update(entity, survivor, fill, actor=actor)
                shown = records.shapes[entity]
                now = dt.datetime.now(dt.UTC)  # after the fill's own history entry
                # one more version than it has now (the fill, or a link of its own to an
                # other repointed above, may have counted some already)
                conn.execute(records.access.scoped(
                    sa.update(table.table).where(table.table.c.id == survivor)
                    .values(version=table.table.c.version + 1, updated_at=now),
                    entity, "update"))
                records.journal.change(conn, entity, survivor, "merge",
                                       {"merged": others, "filled": sorted(fill)},
                                       by=actor, at=now)
                row = conn.execute(records.access.scoped(shown.select_by_id, entity, "read"),
                                   {"record_id": survivor}).first()
                assert row is not None
                return records.render(conn, table, [row._mapping])[0]
        except IntegrityError as error:
            raise records._integrity(error) from None

    @staticmethod
    def _others(entity: str, survivor: int, body: Any) -> list[int]:
        if not isinstance(body, dict):
            raise ValidationFailed('a merge takes an object: {"others": [ids]}',
                                   [ErrorDetail("", "must be an object")], code="invalid_merge")
        problems = [ErrorDetail(key, "is not a key of a merge; it takes others")
                    for key in body if key not in BODY_KEYS]
        others = body.get("others")
        if not isinstance(others, list) or not others or len(others) > MAX_OTHERS or not all(
                isinstance(i, int) and not isinstance(i, bool) and 1 <= i < 2**63 for i in others):
            problems.append(ErrorDetail("others", f"must list 1 to {MAX_OTHERS} ids of "
                                        f"{entity} records to merge into this one"))
        elif len(set(others)) != len(others):
            problems.append(ErrorDetail("others", "lists the same id twice"))
        elif survivor in others:
            problems.append(ErrorDetail("others", f"lists {survivor}, the record they are "
                                        "merged into"))
        if problems:
            raise ValidationFailed(f"the merge into {entity} {survivor} is not valid", problems,
                                   code="invalid_merge")
        assert isinstance(others, list)
        return others

    def _fill(self, table: EntityTable, current: dict[str, Any],
              others: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The body that fills the survivor's empty fields and single links from the
        others (the first with a value wins), skipping what the caller may not set or see."""
        spec = table.spec
        rights = self.records.access.rights(spec.name)
        refused = set() if rights is None else {*rights.hidden, *rights.readonly}
        shape = self.records.shapes[spec.name]
        rendered = [shape.render(row) for row in others]
        body: dict[str, Any] = {}
        names = [f.name for f in spec.fields.values() if not f.computed]
        names += [link.name for link in spec.links.values() if not link.many]
        mine = shape.render(current)
        merged = {r["id"] for r in rendered}
        #: links from this entity to itself (a client's parent): an other they name is the
        #: survivor once merged, and the survivor does not become its own
        own = {link.name for link in spec.links.values()
               if not link.many and not link.polymorphic and link.target == spec.name}
        for name in names:
            if name in refused or mine.get(name) not in (None, "", []):
                continue
            value = next((r[name] for r in rendered if r.get(name) not in (None, "", [])), None)
            if name in own and (value in merged or value == mine["id"]):
                value = None
            if value is not None:
                body[name] = value
        return body

    def _repoint(self, conn: sa.Connection, table: EntityTable, survivor: int,
                 others: list[int], actor: int | None, now: dt.datetime) -> None:
        """Every link to an other now points at the survivor."""
        entity = table.name
        records = self.records
        for source_entity, link in self.storage.setup.inbound_links[entity]:
            source = self.storage[source_entity]
            if link.many:
                joins = source.join_tables[link.name]
                for source_id in self._move_pairs(conn, joins, link, "target_id", survivor,
                                                  others):
                    records.rollups.links_changed(conn, source_entity, link.name, source_id,
                                                  [survivor, *others])
                    self._touched(conn, source, source_id, {link.name: {
                        "added": [survivor], "removed": others}}, actor, now)
                continue
            column = source.table.c[link_column(link.name)]
            where: sa.ColumnElement[bool] = column.in_(others)
            if link.polymorphic:
                where = sa.and_(source.table.c[poly_entity_column(link.name)] == entity, where)
            affected = conn.execute(records.access.unscoped(
                sa.select(source.table.c.id).where(where), WHY)).scalars().all()
            if not affected:
                continue
            conn.execute(records.access.unscoped(sa.update(source.table).where(where).values(
                {column.name: survivor, "version": source.table.c.version + 1,
                 "updated_at": now}), WHY))
            moved = {link_column(link.name): survivor}
            records.formulas.changed(conn, source_entity, affected, moved)
            records.rollups.changed(conn, source_entity, affected, moved)
            records.journal.changes_many(conn, source_entity, affected, "update", {
                link.name: ["merged", survivor]}, by=actor, at=now)
        for link in table.spec.links.values():  # the others' own many-to-many links
            if link.many:
                joins = table.join_tables[link.name]
                if self._move_pairs(conn, joins, link, "source_id", survivor, others):
                    records.rollups.links_changed(conn, entity, link.name, survivor,
                                                  self._targets(conn, joins, survivor))

    def _unloop(self, conn: sa.Connection, table: EntityTable, survivor: int) -> None:
        """A link of the survivor to itself that the repointing made (its parent was one
        of the others) is emptied: a record is not its own parent."""
        for link in table.spec.links.values():
            if link.many or link.polymorphic or link.target != table.name:
                continue
            column = table.table.c[link_column(link.name)]
            conn.execute(self.records.access.unscoped(
                sa.update(table.table).where(table.table.c.id == survivor, column == survivor)
                .values({column.name: None}), WHY))

    def _move_pairs(self, conn: sa.Connection, joins: sa.Table, link: LinkSpec, end: str,
                    survivor: int, others: list[int]) -> list[int]:
        """Move the pairs whose `end` is an other to the survivor, keeping the data they
        carry; a pair the survivor has already is kept once (its own). The ids at the
        pairs' other end."""
        far = "source_id" if end == "target_id" else "target_id"
        rows = conn.execute(sa.select(joins).where(joins.c[end].in_(others))
                            .order_by(joins.c[end])).all()
        if not rows:
            return []
        has = set(conn.execute(sa.select(joins.c[far]).where(joins.c[end] == survivor))
                  .scalars())
        touched: list[int] = []
        for row in rows:
            values = dict(row._mapping)
            pair = sa.and_(joins.c[end] == values[end], joins.c[far] == values[far])
            if values[far] in has:
                conn.execute(sa.delete(joins).where(pair))
            else:
                conn.execute(sa.update(joins).where(pair).values({end: survivor}))
                has.add(values[far])
            touched.append(values[far])
        return sorted(set(touched))

    @staticmethod
    def _targets(conn: sa.Connection, joins: sa.Table, survivor: int) -> list[int]:
        return list(conn.execute(sa.select(joins.c.target_id)
                                 .where(joins.c.source_id == survivor)).scalars())

    def _touched(self, conn: sa.Connection, source: EntityTable, source_id: int,
                 change: dict[str, Any], actor: int | None, now: dt.datetime) -> None:
        records = self.records
        conn.execute(records.access.unscoped(
            sa.update(source.table).where(source.table.c.id == source_id)
            .values(version=source.table.c.version + 1, updated_at=now), WHY))
        records.journal.change(conn, source.name, source_id, "update", change, by=actor, at=now)

    def _move_history(self, conn: sa.Connection, entity: str, survivor: int,
                      others: list[int]) -> None:
        for journal in (self.storage.changes, self.storage.activities):
            conn.execute(sa.update(journal).where(
                journal.c.entity == entity, journal.c.record_id.in_(others))
                .values(record_id=survivor))
