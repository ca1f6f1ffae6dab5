"""Many new records of a plain entity in one INSERT: bulk's fast path for creates.

A bulk batch (or an import's) of creates costs one INSERT round trip and one `create`'s
worth of bookkeeping per row. For an entity where a create does nothing after its INSERT
but write its history and check its rules — no formulas, no roll-ups reading it, no
unique sets, ranges or duplicate rules, no pipeline, no fields of user ids, no links to several entities,
no link whose target the caller sees only in part, and a role that may create anywhere —
the batch's rows are prepared exactly as `Records.create` prepares one (the same checks of
writable and computed fields, the same validation, defaults, owner and search text), then
written with one executemany INSERT … RETURNING, their history with one executemany, and
their rules checked once over them all.

Anything else is not taken here (`None`: the caller writes the rows one by one): a row
setting its owner or a many-to-many link, a value SQL computes. And when the batch fails
in the database (a unique value taken, a missing link, a broken rule), the caller undoes
it and writes its rows one by one, which says which row failed and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from engine.errors import RequestError
from engine.records.defaults import fill_dynamic_defaults
from engine.records.service import Record, Records
from engine.storage.journal import diff
from engine.storage.tables import SEARCH_COLUMN, search_text


class NotTaken(Exception):
    """The batch is not for this path (or failed in it): write its rows one by one."""


class PlainCreates:
    """The fast path of one engine's bulk creates."""

    def __init__(self, records: Records):
        self.records = records

    def takes(self, entity: str) -> bool:
        """Whether a create of `entity`, by the acting user, is only its INSERT, history and
        rules (see the module docstring)."""
        records = self.records
        table = records.storage[entity]
        spec = table.spec
        if spec.pipeline is not None or spec.unique or spec.no_overlap or spec.duplicates:
            return False
        if entity in records.formulas.entities or records.rollups.watches.get(entity):
            return False
        if any(f.type.refers_to_users for f in spec.fields.values()):
            return False
        for link in spec.links.values():
            if link.polymorphic or (not link.many and records.access.conditions(link.target,
                                                                                "read")):
                return False
        rights = records.access.rights(entity)
        return rights is None or (rights.allows("create") and rights.condition("create") is None)

    def values(self, entity: str, body: Any, owner: int | None,
               now: dt.datetime) -> dict[str, Any]:
        """A new record's column values, as `Records.create` makes them before its INSERT
        (RequestError for a row that is not valid; NotTaken for one this path leaves)."""
        records = self.records
        table = records.storage[entity]
        spec = table.spec
        rights = records.access.rights(entity)
        records._check_writable(entity, body, rights)  # the create's own checks, in its order
        records.formulas.refuse_computed(entity, body)
        values, many = records._parse(table, body, records.schemas[entity].create_validator)
        if many or "owner" in values:
            raise NotTaken
        for field in spec.fields.values():
            if field.name not in values and field.default is not None:
                values[field.name] = field.default
        user = records.access.acting.user
        fill_dynamic_defaults(spec, values, records.clock, records.storage.setup.timezone,
                              None if user is None else user.id)
        if spec.owner:
            values["owner"] = owner
        if table.search_column is not None:
            values[SEARCH_COLUMN] = search_text(spec, values)
        values.update(records.rollups.empty(entity))
        values.update(created_at=now, updated_at=now, version=1)
        if any(isinstance(v, sa.ClauseElement) for v in values.values()):
            raise NotTaken
        return values

    def write(self, conn: sa.Connection, entity: str, rows: Sequence[dict[str, Any]], *,
              actor: int | None) -> list[Record]:
        """INSERT the prepared rows, write their history, check their rules: the records
        as a create answers them. NotTaken when the database refuses any of them."""
        records = self.records
        table = records.storage[entity]
        shape = records.shapes[entity]
        keys = sorted({key for row in rows for key in row})
        statement = sa.insert(table.table).returning(table.table.c.id,
                                                     sort_by_parameter_order=True)
        try:
            ids = conn.execute(statement, [{k: row.get(k) for k in keys} for row in rows]
                               ).scalars().all()
            rights = records.access.rights(entity)
            made = []
            for row, new_id in zip(rows, ids, strict=True):
                values = dict(row, id=new_id)
                for column in shape.columns:
                    values.setdefault(column.name, None)
                record = shape.render(values)
                journalled = {k: v[1] for k, v in diff({}, record).items()
                              if v[1] not in (None, [])}
                for name in rights.hidden if rights is not None else ():
                    record.pop(name, None)
                records.journal.change(conn, entity, new_id, "create", journalled, by=actor,
                                       at=values["created_at"])
                made.append(record)
            records.rules.check(conn, entity, ids)
        except (sa.exc.IntegrityError, RequestError):
            raise NotTaken from None
        return made
