"""Pipeline reports, computed in SQL (GROUP BY), never by loading records into Python.

Board (`GET /api/{e}/board`): for each stage of a pipeline, in order, empty ones too: its
count, the sums of the entity's summable fields (money, `FieldType.summable`), and its
first records; each column's `next` is a cursor for the list call filtered by that stage
(`GET /api/{e}?stage=S&cursor=...`). Unfiltered, for a caller without a read scope, the
counts and sums are the counters the database keeps per stage (engine/storage/stage_counts.py:
a few rows, whatever the table's size); else one GROUP BY stage over the selected records,
from a covering index when they are selected by owner, link or creation period
(storage/tables.py). Each column's page is the list's page query, by the `stage` index (or
(owner or link, stage, id) under such a filter).

Funnel (`GET /api/{e}/funnel`): for each stage, over the stage history of the records the
filters select (`from`/`to` bound the records' creation dates):
- `reached`: records that were ever in this stage or beyond it. Stages may be skipped,
  so a deal that went from lead straight to invoiced has passed proposal too. Stages in
  the `lost` and `closed` categories count only the records that entered them;
- `conversion` (reached ÷ reached of the previous stage) and `drop_off`;
- time in stage: how many moves left it, average and median seconds spent there before.
  The moves counted are the stage history rows **made in this pipeline** (their
  `pipeline` column) by the records the filters select, whatever pipeline those records
  follow now (a pipeline switch's row belongs to the new pipeline). A deleted record's
  stage history is deleted with it (engine/journal.py), so no history row outlives its
  record;
- `current`: records now in the stage, with the sums of its summable fields and the
  probability-weighted `forecast` of each sum.

How it stays fast at a million records (figures in bench/README.md):
- `reached`, `records` and `current` come from one GROUP BY (stage, kt_reached) over the
  selected records: `kt_reached` holds the stages each record entered as bits
  (engine/progress.py), so the history is not read for them. Unfiltered, or under an
  owner or link filter, that is a scan of a covering index (storage.py).
- Time in stage, unfiltered (no list conditions — so no filter and no read scope of the
  caller — and no from/to): exits and totals from the counters `kt_stage_time` kept with
  each history row, and each median by an ordered OFFSET over the history index
  (entity, pipeline, from_stage, seconds); both cover exactly the history rows of this
  pipeline, because deleting a record deletes its history and takes it out of the
  counters. A scoped caller never reads the counters: they include everyone's records.
- Time in stage, filtered: one statement over the selected records' history from the
  covering index (entity, record_id, pipeline, from_stage, seconds), with window
  functions per stage left: the count, the sum and the middle row(s) for the median. It
  costs in proportion to the history of the records selected.
- Counters edited around (history changed by hand, or a database older than the table)
  are rebuilt by `engine.storage.journal.rebuild_stage_time`; tests check the two paths agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ErrorDetail, MalformedRequest, NotFound
from engine.records.service import Records
from engine.setup.spec import PipelineSpec, label_text
from engine.storage.progress import REACHED_COLUMN, mask
from engine.storage.stage_counts import countable, counted, stage_totals
from engine.storage.sums import joined, splits, sum_of
from engine.storage.tables import EntityTable

BOARD_LIMIT = 10
MAX_BOARD_LIMIT = 100


class Reports:
    def __init__(self, records: Records):
        self.records = records
        self.storage = records.storage

    def board(self, entity: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        table, pipeline, rest = self._pipeline(entity, params)
        rest = list(rest)
        if not any(key == "limit" for key, _ in rest):
            rest.append(("limit", str(BOARD_LIMIT)))
        problems = []
        for key, value in rest:
            if key == "limit" and not (value.isascii() and value.isdigit() and len(value) < 19
                                            and 1 <= int(value) <= MAX_BOARD_LIMIT):
                problems.append(ErrorDetail(
                    "limit", f"must be between 1 and {MAX_BOARD_LIMIT} records per column"))
            if key in ("cursor", "offset", "total"):
                problems.append(ErrorDetail(key, "page a column with the list call: "
                                                 f"/api/{entity}?stage=<stage>&cursor=<its next>"))
        if problems:
            raise MalformedRequest("the board parameters are not valid",
                                   self.records.parser.explain_controls(entity, problems),
                                   code="invalid_query")
        query = self.records.parser.parse(entity, [*rest, ("total", "false")])
        conditions = [*query.conditions, *self._in_pipeline(table, pipeline)]
        summable = self._summed_fields(table)
        stage = table.table.c.stage
        access = self.records.access
        with self.records.db.read() as conn:
            totals = self._kept_totals(conn, entity, pipeline, query.conditions, summable)
            if totals is None:
                totals = {
                    row[0]: [row[1], *_combined(conn, table, summable, row[2:])]
                    for row in conn.execute(access.scoped(
                        sa.select(stage, sa.func.count(), *_summed(conn, table, summable))
                        .where(*conditions).group_by(stage), entity, "read"))
                }
            columns = []
            for spec in pipeline.stages:
                page = self.records.page(conn, query, sa.and_(*self._in_pipeline(table, pipeline),
                                                                stage == spec.name))
                found = totals.get(spec.name)
                columns.append({
                    "stage": spec.name,
                    "label": label_text(spec.label, self.storage.setup.languages[0]),
                    "category": spec.category,
                    "count": int(found[0]) if found else 0,
                    "sums": _sums(summable, found[1:] if found else None),
                    "items": page.items,
                    "next": page.next,
                })
        return {"pipeline": pipeline.name, "columns": columns}

    def _kept_totals(self, conn: sa.Connection, entity: str, pipeline: PipelineSpec,
                     conditions: Sequence[Any], summable: list[Any]
                     ) -> dict[str, list[Any]] | None:
        """{stage: [count, sums...]} of every record of the pipeline from the kept counters
        (engine/storage/stage_counts.py), or None when they do not answer: a filter, a
        caller with a read scope (the counters include everyone's records), a summed field
        they do not sum, or a database whose counters are not kept."""
        if conditions or self.records.access.conditions(entity, "read"):
            return None
        names = [field.name for field in summable]
        if not set(names) <= set(countable(self.storage[entity])) \
                or not counted(conn, self.storage, entity):
            return None
        return stage_totals(conn, self.storage, entity, pipeline.name, names)

    def funnel(self, entity: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        table, pipeline, rest = self._pipeline(entity, params)
        problems: list[ErrorDetail] = []
        created_from, created_to, rest = _date_range(rest, problems)
        problems += [ErrorDetail(key, "does not apply to the funnel") for key, _ in rest
                     if key in ("sort", "limit", "offset", "cursor", "include", "total")]
        if problems:
            raise MalformedRequest("the funnel parameters are not valid",
                                   self.records.parser.explain_controls(entity, problems),
                                   code="invalid_query")
        query = self.records.parser.parse(entity, [*rest, ("total", "false")])
        t = table.table
        # what the caller selects: the list's filters and the creation range; with the
        # caller's read scope (engine/access/scopes.py), empty = every record
        access = self.records.access
        chosen = [*query.conditions]
        if created_from is not None:
            chosen.append(t.c.created_at >= created_from)
        if created_to is not None:
            chosen.append(t.c.created_at < created_to)
        conditions = [*chosen, *self._in_pipeline(table, pipeline)]
        progress = [s.name for s in pipeline.stages if s.category in ("open", "won")]
        bits = table.stage_bits
        assert bits is not None
        # reached stage S (open/won) = entered S or any open/won stage after it
        beyond = {name: mask(bits, progress[index:]) for index, name in enumerate(progress)}
        summable = self._summed_fields(table)
        reached_column = t.c[REACHED_COLUMN]
        with self.records.db.read() as conn:
            # one pass over the records (a covering index when unfiltered or by owner/link):
            # how many are in each stage with each set of stages entered, and their sums
            groups = conn.execute(access.scoped(
                sa.select(t.c.stage, reached_column, sa.func.count(),
                          *_summed(conn, table, summable))
                .where(*conditions).group_by(t.c.stage, reached_column), entity, "read")).all()
            if chosen or access.conditions(entity, "read"):
                # filtered, or a scoped caller: exact, from the selected records' history
                times = self._times_selected(conn, entity, pipeline, access.scoped(
                    sa.select(t.c.id).where(*chosen), entity, "read"))
            else:  # every record: the kept counters and one ordered OFFSET per median
                times = self._times_all(conn, entity, pipeline)
        current: dict[str, list[Any]] = {}  # stage: [count, sums...]
        reached_by_mask: dict[int, int] = {}
        for stage_name, reached_mask, count, *raw_sums in groups:
            stage_sums = _combined(conn, table, summable, raw_sums)
            totals = current.setdefault(stage_name, [0] + [None] * len(summable))
            totals[0] += count
            for index, value in enumerate(stage_sums, start=1):
                if value is not None:
                    totals[index] = value if totals[index] is None else totals[index] + value
            reached_mask = reached_mask or 0
            reached_by_mask[reached_mask] = reached_by_mask.get(reached_mask, 0) + count
        considered = sum(count for entered, count in reached_by_mask.items() if entered)
        stages = []
        previous: int | None = None
        for spec in pipeline.stages:
            wanted = beyond.get(spec.name, bits.get(spec.name, 0))
            reached = sum(count for entered, count in reached_by_mask.items() if entered & wanted)
            found = current.get(spec.name)
            stage_totals = found[1:] if found else None
            left, total, median = times.get(spec.name, (0, 0, None))
            stages.append({
                "stage": spec.name,
                "label": label_text(spec.label, self.storage.setup.languages[0]),
                "category": spec.category,
                "probability": spec.probability,
                "reached": reached,
                "conversion": None if spec.name not in beyond or not previous
                else round(reached / previous, 4),
                "drop_off": None if spec.name not in beyond or previous is None
                else previous - reached,
                "time_in_stage": {
                    "exits": left,
                    "average_seconds": round(total / left) if left else None,
                    "median_seconds": median,
                },
                "current": {"count": int(found[0]) if found else 0,
                            "sums": _sums(summable, stage_totals)},
                "forecast": _forecast(summable, stage_totals, spec.probability),
            })
            if spec.name in beyond:
                previous = reached
        return {"pipeline": pipeline.name, "records": considered, "stages": stages}

    def _times_all(self, conn: sa.Connection, entity: str, pipeline: PipelineSpec
                   ) -> dict[str, tuple[int, int, int | None]]:
        """Time in stage of every record: {stage: (exits, total seconds, median seconds)}.
        Exits and totals from kt_stage_time; each median is the middle row(s) of the
        history index (entity, pipeline, from_stage, seconds), found by OFFSET."""
        kept = self.storage.stage_time.c
        h = self.storage.stage_history.c
        wanted = pipeline.stage_names
        counters = {
            stage: (int(exits), int(total)) for stage, exits, total in conn.execute(
                sa.select(kept.stage, sa.func.sum(kept.exits), sa.func.sum(kept.total_seconds))
                .where(kept.entity == entity, kept.pipeline == pipeline.name)
                .group_by(kept.stage))
            if stage in wanted}
        seconds = h.seconds.asc().nulls_first() if conn.dialect.name == "postgresql" \
            else h.seconds.asc()
        times: dict[str, tuple[int, int, int | None]] = {}
        for stage, (exits, total) in counters.items():
            if exits <= 0:
                continue
            middle = conn.execute(
                sa.select(h.seconds)
                .where(h.entity == entity, h.pipeline == pipeline.name, h.from_stage == stage,
                       h.seconds.is_not(None))
                .order_by(seconds).limit(2 - exits % 2).offset((exits - 1) // 2)
            ).scalars().all()
            times[stage] = (exits, total, round(sum(middle) / len(middle)) if middle else None)
        return times

    def _times_selected(self, conn: sa.Connection, entity: str, pipeline: PipelineSpec,
                        selected: sa.Select[Any]) -> dict[str, tuple[int, int, int | None]]:
        """Time in stage of the selected records, the same definition as `_times_all`, in
        one statement over their history (the index entity, record_id, pipeline, ...):
        per stage left, the row count, the sum and the middle row(s) by row_number."""
        h = self.storage.stage_history.c
        # the history rows are found by record (entity, record_id), the index made for it,
        # and SQLite (no statistics) must see no reason to prefer the unfiltered path's
        # (entity, pipeline, from_stage, seconds): so no pipeline condition (SQLite pushes
        # one down into the window's subquery, measured 6 s instead of 0.4 s for 6% of
        # 1M records) and partitions in (stage, pipeline) order, which that index does not
        # deliver sorted. Each partition gives at most two rows; this pipeline's are kept.
        by_stage = [h.from_stage, h.pipeline]
        rows = (
            sa.select(h.pipeline, h.from_stage, h.seconds,
                      sa.func.row_number().over(partition_by=by_stage, order_by=h.seconds)
                      .label("rank"),
                      sa.func.count().over(partition_by=by_stage).label("exits"),
                      sa.func.sum(h.seconds).over(partition_by=by_stage).label("total"))
            .where(h.entity == entity, h.record_id.in_(selected), h.seconds.is_not(None))
            .subquery())
        found: dict[str, tuple[int, int, list[int]]] = {}
        for name, stage, value, exits, total in conn.execute(
                sa.select(rows.c.pipeline, rows.c.from_stage, rows.c.seconds, rows.c.exits, rows.c.total)
                .where(sa.or_(rows.c.rank == (rows.c.exits + 1) // 2,
                              rows.c.rank == (rows.c.exits + 2) // 2))):
            if name == pipeline.name and stage in pipeline.stage_names:
                found.setdefault(stage, (int(exits), int(total), []))[2].append(value)
        return {stage: (exits, total, round(sum(middle) / len(middle)))
                for stage, (exits, total, middle) in found.items()}

    def _pipeline(self, entity: str, params: Sequence[tuple[str, str]]
                  ) -> tuple[EntityTable, PipelineSpec, list[tuple[str, str]]]:
        table = self.storage[entity]
        pipelines = table.spec.pipeline
        if pipelines is None:
            raise NotFound(f"{entity} has no pipeline")
        chosen = [value for key, value in params if key == "pipeline"]
        rest = [(key, value) for key, value in params if key != "pipeline"]
        if not chosen:
            return table, next(iter(pipelines.pipelines.values())), rest
        if len(chosen) > 1 or chosen[0] not in pipelines.pipelines:
            raise MalformedRequest(
                "the pipeline parameter is not valid",
                [ErrorDetail("pipeline", "must be one of: " + ", ".join(pipelines.pipelines))],
                code="invalid_query")
        return table, pipelines.pipelines[chosen[0]], rest

    def _summed_fields(self, table: EntityTable) -> list[Any]:
        """The summable fields summed per stage — without those hidden from the acting user,
        whose sums would tell what the field hides."""
        rights = self.records.access.rights(table.name)
        hidden = rights.hidden if rights is not None else frozenset()
        return [f for f in table.spec.fields.values() if f.type.summable and f.name not in hidden]

    @staticmethod
    def _in_pipeline(table: EntityTable, pipeline: PipelineSpec) -> list[ColumnElement[bool]]:
        pipelines = table.spec.pipeline
        if pipelines is None or pipelines.pipeline_by is None:
            return []
        column = table.table.c[pipelines.pipeline_by]
        if pipeline.name == next(iter(pipelines.pipelines)):
            return [sa.or_(column == pipeline.name, column.is_(None))]
        return [column == pipeline.name]


def _summed(conn: sa.Connection, table: EntityTable, summed: list[Any]) -> list[Any]:
    """The SUM expressions of the summed fields: one each, two for a column SQLite sums in
    halves (engine/storage/sums.py)."""
    dialect = conn.dialect.name
    return [e for field in summed for e in sum_of(dialect, table.table.c[field.name])]


def _combined(conn: sa.Connection, table: EntityTable, summed: list[Any],
              values: Sequence[Any]) -> list[Any]:
    """A row's sums from `_summed`'s columns, exactly."""
    dialect = conn.dialect.name
    sums: list[Any] = []
    position = 0
    for field in summed:
        column = table.table.c[field.name]
        width = 2 if splits(dialect, column) else 1
        sums.append(joined(dialect, column, values[position:position + width]))
        position += width
    return sums


def _forecast(summed: list[Any], totals: Sequence[Any] | None,
              probability: int | None) -> dict[str, Any]:
    if probability is None:
        return {field.name: None for field in summed}
    return {field.name: field.type.render_sum(field, totals[index] if totals else None,
                                              probability)
            for index, field in enumerate(summed)}


def _sums(summed: list[Any], totals: Sequence[Any] | None) -> dict[str, Any]:
    return {field.name: field.type.render_sum(field, totals[index] if totals else None)
            for index, field in enumerate(summed)}


def _date_range(params: Sequence[tuple[str, str]], problems: list[ErrorDetail]
                ) -> tuple[dt.datetime | None, dt.datetime | None, list[tuple[str, str]]]:
    bounds: dict[str, dt.datetime] = {}
    rest = []
    seen: set[str] = set()
    for key, value in params:
        if key in ("from", "to") and key in seen:
            problems.append(ErrorDetail(key, "is given more than once; give it once"))
        elif key in ("from", "to"):
            seen.add(key)
            try:
                day = dt.date.fromisoformat(value)
                bounds[key] = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                if key == "to":
                    if day == dt.date.max:  # the day after 9999-12-31 does not exist
                        del bounds[key]
                    else:
                        bounds[key] += dt.timedelta(days=1)
            except ValueError:
                problems.append(ErrorDetail(key, "must be a date, YYYY-MM-DD"))
        else:
            rest.append((key, value))
    return bounds.get("from"), bounds.get("to"), rest
