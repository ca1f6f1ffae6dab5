"""What a merge moves besides links, history and comments (engine/records/merge.py): the
merged records' stage history with its time-in-stage counters, their automation runs and
events, their notifications and the date triggers that fired for them.

After a merge the survivor's card shows what the merged records had, and nothing of
theirs points at a deleted id — except the deletion itself (`kt_change` action `delete`
and its `delete` event), which is about that id.

Time in stage: the merged records' stage moves become the survivor's and their seconds
stay counted. The time was spent — by the same client recorded twice — so the funnel's
exits and totals are the same before and after the merge. `kt_stage_time` keeps them per
`record_id % STAGE_TIME_SHARDS`, so the moved rows are taken out of the others' shards and
counted again in the survivor's: the counters stay equal to a recomputation from
`kt_stage_history` (`rebuild_stage_time`).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from engine.storage.journal import (
    Journal,
    count_stage_time,
    stage_time_select,
    stage_time_shard,
)
from engine.storage.outbox import PENDING
from engine.storage.tables import STAGE_TIME_SHARDS, Storage


def move_the_rest(conn: sa.Connection, journal: Journal, entity: str, survivor: int,
                  others: list[int], stage: str | None = None) -> None:
    """Move the others' stage history, automation runs and events, notifications and
    fired date triggers to the survivor (in `stage`), in the merge's transaction."""
    storage = journal.storage
    if storage[entity].spec.pipeline is not None:
        own = journal.last_stage_entry(conn, entity, survivor, stage) if stage else None
        _move_stages(conn, storage, entity, survivor, others, stage, own)
    for table in (storage.automation_runs, storage.events, storage.notifications):
        # an event not delivered yet stays the other's: run for the survivor, the other's
        # automations would act twice (a second welcome to the same client); under the
        # other's id the worker finds the record gone, as after any quick delete
        pending = [table.c.status != PENDING] if table is storage.events else []
        conn.execute(sa.update(table).where(table.c.entity == entity,
                                            table.c.record_id.in_(others), *pending)
                     .values(record_id=survivor))
    _move_fired(conn, storage, entity, survivor, others)


def _move_stages(conn: sa.Connection, storage: Storage, entity: str, survivor: int,
                 others: list[int], stage: str | None, own: dt.datetime | None) -> None:
    h = storage.stage_history
    theirs = [h.c.entity == entity, h.c.record_id.in_(others)]
    # the survivor's time in its stage counts from its own entry into it (`own`, as
    # last_stage_entry reads it): an other's entry into the same stage after it (a
    # duplicate made later, still in the first stage) stays the other's and goes with its
    # deletion — with the time the other spent in the stage before, if any
    theirs.append(sa.not_(sa.and_(h.c.to_stage == stage, h.c.at > own))
                  if own is not None else h.c.to_stage != stage)
    counted = conn.execute(stage_time_select(h).where(*theirs).group_by(
        h.c.pipeline, h.c.from_stage, stage_time_shard(h))).all()
    back: dict[tuple[str, str], list[int]] = {}
    for pipeline, stage, shard, exits, total in counted:
        count_stage_time(conn, storage, entity, pipeline, stage, shard, -exits, -int(total))
        summed = back.setdefault((pipeline, stage), [0, 0])
        summed[0] += exits
        summed[1] += int(total)
    for (pipeline, stage), (exits, total) in sorted(back.items()):
        count_stage_time(conn, storage, entity, pipeline, stage,
                         survivor % STAGE_TIME_SHARDS, exits, total)
    conn.execute(sa.update(h).where(*theirs).values(record_id=survivor))


def _move_fired(conn: sa.Connection, storage: Storage, entity: str, survivor: int,
                others: list[int]) -> None:
    """A date trigger that fired for an other has fired for the survivor (its date may be
    the one the merge fills in): moved, unless the survivor has the same one already."""
    names = [a.name for a in storage.setup.automations if a.entity == entity]
    if not names:
        return
    fired = storage.fired
    rows = conn.execute(sa.select(fired).where(fired.c.automation.in_(names),
                                               fired.c.record_id.in_(others))
                        .order_by(fired.c.record_id)).all()
    if not rows:
        return
    has = {(row.automation, row.due) for row in conn.execute(
        sa.select(fired.c.automation, fired.c.due).where(
            fired.c.automation.in_(names), fired.c.record_id == survivor))}
    for row in rows:
        key = (row.automation, row.due)
        if key not in has:
            conn.execute(sa.insert(fired).values(automation=row.automation,
                                                 record_id=survivor, due=row.due, at=row.at))
            has.add(key)
    conn.execute(sa.delete(fired).where(fired.c.automation.in_(names),
                                        fired.c.record_id.in_(others)))
