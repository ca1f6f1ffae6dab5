"""The journal: what happened to each record, written in the same transaction as the
change itself, one statement per event — the card's history, the stage history behind
the funnel, comments and activities.

Time in stage is also kept as counters (`kt_stage_time`): each stage history row that
leaves a stage with `seconds` adds 1 exit and its seconds to the counter of (entity, its
`pipeline`, its `from_stage`), in the same transaction. Deleting a record deletes its
stage history and takes its rows back out of the counters (`forget_stages`; the delete
itself stays in kt_change). So the counters always equal a GROUP BY over the history of
the records that exist — the unfiltered funnel reads them instead of the history.
`rebuild_stage_time(conn, storage)` recomputes them from kt_stage_history: run it once
after `kartoteka migrate` creates the table on a database that has history, and after
editing `kt_stage_history` by hand.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.storage.fast_insert import WholeColumn, insert_columns, processors
from engine.storage.outbox import Outbox
from engine.storage.tables import STAGE_TIME_SHARDS, Storage

#: record keys that change on every write and say nothing about what the user changed
UNJOURNALLED = frozenset({"id", "created_at", "updated_at", "version"})


class Journal:
    def __init__(self, storage: Storage):
        self.storage = storage
        #: the events automations listen to, written with the journal's rows
        self.outbox = Outbox(storage.events, (
            (automation.entity, automation.event) for automation in storage.setup.automations),
            storage.webhooks)
        # built once, the values passed as execute parameters: one compiled statement for
        # every event (a statement built with `.values(...)` per write costs more than its
        # execution)
        self._insert_change = sa.insert(storage.changes)
        #: PostgreSQL: a change and its one event in one statement (no round trip of its
        #: own), by the columns they set
        self._insert_both: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}
        self._insert_stage = sa.insert(storage.stage_history)
        #: this thread's entries kept by `deferred`
        self._deferred = threading.local()

    def change(self, conn: sa.Connection, entity: str, record_id: int, action: str,
               changes: Mapping[str, Any] | None, *, by: int | None, at: dt.datetime) -> None:
        row = {"entity": entity, "record_id": record_id, "at": at, "by": by, "action": action,
               "changes": dict(changes) if changes else None}
        pending: _Pending | None = getattr(self._deferred, "pending", None)
        if pending is None and conn.dialect.name == "postgresql":
            self._change_with_event(conn, row, changes)
            return
        self._emit(conn, entity, (record_id,), action, changes, by=by, at=at)
        if pending is not None:
            pending.append(row)
            return
        conn.execute(self._insert_change, row)

    def changes_each(self, conn: sa.Connection, entity: str, action: str,
                     entries: Iterable[tuple[int, Mapping[str, Any] | None, dt.datetime]], *,
                     by: int | None) -> None:
        """`change` of each (record id, changes, at): a batch's history (inside `deferred`,
        kept in one go; its events only when something listens to them)."""
        pending: _Pending | None = getattr(self._deferred, "pending", None)
        if pending is None:
            for record_id, changes, at in entries:
                self.change(conn, entity, record_id, action, changes, by=by, at=at)
            return
        entries = list(entries)
        if self.outbox.listens(conn, entity, action):
            for record_id, changes, at in entries:
                self._emit(conn, entity, (record_id,), action, changes, by=by, at=at)
        for record_id, changes, at in entries:
            pending.append({"entity": entity, "record_id": record_id, "at": at, "by": by,
                            "action": action, "changes": dict(changes) if changes else None})

    def takes_texts(self, conn: sa.Connection, entity: str, action: str) -> bool:
        """Whether `changes_each` of this change may be given each entry's changes as their
        JSON text already made (`fast_insert.json_objects`) instead of a mapping: inside
        `deferred`, where they are kept to be written together, and when no event of
        them is written (whose changes are read as a mapping)."""
        return getattr(self._deferred, "pending", None) is not None \
            and not self.outbox.listens(conn, entity, action)

    def changes_each_text(self, entity: str, action: str, record_ids: Sequence[int],
                          texts: Sequence[str | None], moments: Sequence[dt.datetime], *,
                          by: int | None) -> None:
        """`changes_each` of changes given as their JSON text (see `takes_texts`), column
        by column: the records' ids, their texts, the moments of their changes."""
        pending: _Pending | None = getattr(self._deferred, "pending", None)
        if pending is None:
            raise RuntimeError("Journal.changes_each_text is only for use inside deferred")
        count = len(record_ids)
        pending.texts = True
        pending.extend({"entity": [entity] * count, "record_id": record_ids, "at": moments,
                        "by": [by] * count, "action": [action] * count, "changes": texts})

    def _change_with_event(self, conn: sa.Connection, row: dict[str, Any],
                           changes: Mapping[str, Any] | None) -> None:
        """PostgreSQL: the history row and its event (if anything listens) by ONE statement,
        `WITH e AS (INSERT INTO kt_event …) INSERT INTO kt_change …` — the event costs the
        write no round trip of its own, and is still in the write's transaction."""
        events = self.outbox.rows(conn, row["entity"], (row["record_id"],), row["action"],
                                  changes, by=row["by"], at=row["at"])
        if not events:
            conn.execute(self._insert_change, row)
            return
        (event,) = events  # one record's change: one event
        keys = (tuple(row), tuple(event))
        statement = self._insert_both.get(keys)
        if statement is None:
            statement = self._insert_both[keys] = _with_event(
                self.storage.changes, keys[0], self.storage.events, keys[1])
        conn.execute(statement, {**row, **{f"event_{k}": v for k, v in event.items()}})
        self.outbox.woken()

    def _emit(self, conn: sa.Connection, entity: str, record_ids: Iterable[int], kind: str,
              changes: Mapping[str, Any] | None, *, by: int | None, at: dt.datetime) -> None:
        """The change's automation events: written now, or inside `deferred` kept (in the
        order they happen) for its one insert."""
        events: list[dict[str, Any]] | None = getattr(self._deferred, "events", None)
        if events is not None:
            events.extend(self.outbox.rows(conn, entity, record_ids, kind, changes, by=by,
                                               at=at))
            return
        self.outbox.emit(conn, entity, record_ids, kind, changes, by=by, at=at)

    @contextmanager
    def deferred(self, conn: sa.Connection) -> Iterator[None]:
        """Inside (in this thread), `change` keeps its entries, written together by one
        executemany when the block ends — in the same transaction, before it commits — or
        dropped when it ends with an exception (whose caller undoes the block's writes as
        well). A bulk batch's history in one statement instead of one per row; nothing
        reads kt_change while writing. The events of those changes (automations' outbox)
        likewise: one insert of them all, through the driver (engine/storage/fast_insert.py)."""
        pending = _Pending()
        events: list[dict[str, Any]] = []
        self._deferred.pending, self._deferred.events = pending, events
        try:
            yield
        finally:
            self._deferred.pending = self._deferred.events = None
        if pending.columns["entity"]:
            ready: tuple[str, ...] = ()
            if pending.texts:  # the changes as JSON texts, each mapping made one as well
                ready = ("changes",)
                pending.columns["changes"] = self._texts(conn, pending.columns["changes"])
            insert_columns(conn, self.storage.changes, list(pending.columns),
                           list(pending.columns.values()), ready=ready)
        if events:
            _insert_dicts(conn, self.storage.events, events)
            self.outbox.woken()

    def _texts(self, conn: sa.Connection, changes: list[Any]) -> list[Any]:
        """A history's changes as the driver takes them, some given as their JSON text
        already (`changes_each_text`): a text as it is (a change is never a bare text),
        a mapping by the column's own processing."""
        (step,) = processors(conn.dialect, self.storage.changes, ["changes"])
        if step is None or isinstance(step, WholeColumn):  # no JSON column type does that
            raise RuntimeError("kt_change.changes is processed value by value")
        return [value if value is None or type(value) is str else step(value)
                for value in changes]

    def changes_many(self, conn: sa.Connection, entity: str, record_ids: Iterable[int],
                     action: str, changes: Mapping[str, Any] | None, *, by: int | None,
                     at: dt.datetime) -> None:
        ids = list(record_ids)
        rows = [{"entity": entity, "record_id": record_id, "at": at, "by": by, "action": action,
                 "changes": dict(changes) if changes else None} for record_id in ids]
        if rows:
            conn.execute(self._insert_change, rows)
            self._emit(conn, entity, ids, action, changes, by=by, at=at)

    def stage(self, conn: sa.Connection, entity: str, record_id: int, pipeline: str,
              from_stage: str | None, to_stage: str, *, by: int | None, at: dt.datetime,
              seconds: int | None) -> None:
        conn.execute(self._insert_stage, {
            "entity": entity, "record_id": record_id, "at": at, "by": by, "pipeline": pipeline,
            "from_stage": from_stage, "to_stage": to_stage, "seconds": seconds})
        self._emit(conn, entity, (record_id,), "stage",
                         {"pipeline": pipeline, "from": from_stage, "to": to_stage}, by=by, at=at)
        if from_stage is not None and seconds is not None:
            _count_stage_time(conn, self.storage, entity, pipeline, from_stage,
                              record_id % STAGE_TIME_SHARDS, 1, seconds)

    def forget_stages(self, conn: sa.Connection, entity: str, record_ids: Iterable[int]) -> None:
        """Delete the stage history of deleted records and take it out of the counters."""
        h = self.storage.stage_history
        ids = list(record_ids)
        for first in range(0, len(ids), 500):
            chunk = ids[first:first + 500]
            mine = [h.c.entity == entity, h.c.record_id.in_(chunk)]
            for pipeline, stage, shard, exits, total in conn.execute(
                    _stage_time_select(h).where(*mine).group_by(
                        h.c.pipeline, h.c.from_stage, _shard(h))):
                _count_stage_time(conn, self.storage, entity, pipeline, stage, shard,
                                  -exits, -int(total))
            conn.execute(sa.delete(h).where(*mine))

    def last_stage_entry(self, conn: sa.Connection, entity: str, record_id: int,
                         stage: str | None = None) -> dt.datetime | None:
        """When the record last entered `stage` (its current one; any stage if None). A
        merge gives the survivor the merged records' moves: their entries into other stages
        must not cut its time in its own."""
        history = self.storage.stage_history
        at: dt.datetime | None = conn.execute(
            sa.select(history.c.at)
            .where(history.c.entity == entity, history.c.record_id == record_id,
                   *([] if stage is None else [history.c.to_stage == stage]))
            .order_by(history.c.at.desc(), history.c.id.desc()).limit(1)
        ).scalar()
        return at


class _Pending:
    """The history rows kept by `Journal.deferred`, column by column (a batch's thousand
    rows are added as whole columns, not as a dict each)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in _CHANGE_KEYS}
        #: whether some changes are given as their JSON text (`changes_each_text`)
        self.texts = False

    def append(self, row: dict[str, Any]) -> None:
        for name, column in self.columns.items():
            column.append(row[name])

    def extend(self, columns: Mapping[str, Sequence[Any]]) -> None:
        for name, column in self.columns.items():
            column.extend(columns[name])


#: a history row's keys (`Journal.change`), in the order it makes them
_CHANGE_KEYS = ("entity", "record_id", "at", "by", "action", "changes")


def _with_event(changes: sa.Table, change_columns: tuple[str, ...], events: sa.Table,
                event_columns: tuple[str, ...]) -> Any:
    """`WITH e AS (INSERT INTO kt_event …) INSERT INTO kt_change …`: a change's history row
    and its automation event written by one statement (PostgreSQL runs a data-modifying
    WITH whatever the outer statement does; SQLite has none). The event's values are the
    parameters `event_<column>`."""
    def values(table: sa.Table, names: tuple[str, ...], prefix: str) -> dict[str, Any]:
        return {n: sa.bindparam(prefix + n, type_=table.c[n].type) for n in names}
    event = sa.insert(events).values(values(events, event_columns, "event_")).cte("kt_new_event")
    return sa.insert(changes).values(values(changes, change_columns, "")).add_cte(event)


def _insert_dicts(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows of the same keys, column by column."""
    if rows:
        names = list(rows[0])
        insert_columns(conn, table, names, [list(map(itemgetter(name), rows)) for name in names])


def _shard(h: sa.Table) -> sa.ColumnElement[Any]:
    # inline, so that PostgreSQL sees the same expression in SELECT and GROUP BY
    return h.c.record_id % sa.literal_column(str(STAGE_TIME_SHARDS))


def _stage_time_select(h: sa.Table) -> sa.Select[Any]:
    """(pipeline, stage left, shard, exits, total seconds) of stage history rows."""
    return sa.select(h.c.pipeline, h.c.from_stage, _shard(h),
                     sa.func.count(), sa.func.sum(h.c.seconds)
                     ).where(h.c.from_stage.is_not(None), h.c.seconds.is_not(None))


def _count_stage_time(conn: sa.Connection, storage: Storage, entity: str, pipeline: str,
                      stage: str, shard: int, exits: int, seconds: int) -> None:
    table = storage.stage_time
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
    conn.execute(insert.values(
        entity=entity, pipeline=pipeline, stage=stage, shard=shard, exits=exits,
        total_seconds=seconds,
    ).on_conflict_do_update(
        index_elements=[table.c.entity, table.c.pipeline, table.c.stage, table.c.shard],
        set_={"exits": table.c.exits + insert.excluded.exits,
              "total_seconds": table.c.total_seconds + insert.excluded.total_seconds}))


def rebuild_stage_time(conn: sa.Connection, storage: Storage) -> None:
    """Recompute every `kt_stage_time` counter from `kt_stage_history` (one GROUP BY):
    for `kartoteka migrate` on a database whose history predates the table, or after the
    history was edited by hand."""
    h, table = storage.stage_history, storage.stage_time
    conn.execute(sa.delete(table))
    shard = _shard(h)
    conn.execute(sa.insert(table).from_select(
        ["entity", "pipeline", "stage", "shard", "exits", "total_seconds"],
        sa.select(h.c.entity, h.c.pipeline, h.c.from_stage, shard, sa.func.count(),
                  sa.func.sum(h.c.seconds))
        .where(h.c.from_stage.is_not(None), h.c.seconds.is_not(None))
        .group_by(h.c.entity, h.c.pipeline, h.c.from_stage, shard)))


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`{key: [old, new]}` for every user-visible key whose JSON value changed."""
    return {key: [before.get(key), value] for key, value in after.items()
            if key not in UNJOURNALLED and before.get(key) != value}


#: for a merge, which moves stage history from one record to another
#: (engine/records/merge_moves.py)
count_stage_time = _count_stage_time
stage_time_select = _stage_time_select
stage_time_shard = _shard
