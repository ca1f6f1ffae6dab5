"""Moving records along their pipeline: `POST /api/{e}/{id}/stage {"to": ...}`.

A move is checked — the stage exists in the record's pipeline, the record is not in a
final stage, the transition is allowed (`free`, `forward`, or the `{from: [to]}` map),
the target stage's `required_in_stages` fields are filled — then applied with its stage
history row (from, to, at, by, seconds spent in the stage left) in one transaction.
A refused move changes nothing and says why (422). Moving to the stage the record is
already in is a conflict (409): two clients making the same move at once get one 200 and
one 409, and the history has one row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from engine.access.acting import User
from engine.errors import (
    Conflict,
    ErrorDetail,
    Forbidden,
    NotFound,
    StaleVersion,
    ValidationFailed,
)
from engine.records.service import Record, Records, checked_id, seconds_since
from engine.setup.names import did_you_mean
from engine.setup.roles import ADMIN
from engine.setup.spec import EntitySpec, PipelineSpec
from engine.storage import progress


class StageMoves:
    def __init__(self, records: Records):
        self.records = records

    def move(self, entity: str, record_id: int, body: Any, *, if_version: int | None = None,
             actor: int | None = None) -> Record:
        records = self.records
        table = records.storage[entity]
        spec = table.spec
        if spec.pipeline is None:
            raise NotFound(f"{entity} has no pipeline")
        target = _target(body)
        record_id = checked_id(record_id, entity)
        with records.db.write() as conn:
            current = records.locked_row(conn, entity, record_id, "update")
            if if_version is not None and current["version"] != if_version:
                raise StaleVersion(f"{entity} {record_id} is at version {current['version']}, "
                                   f"not {if_version}; read it again")
            selector = current.get(spec.pipeline.pipeline_by) if spec.pipeline.pipeline_by else None
            pipeline = spec.pipeline.for_record(selector)
            source = current["stage"]
            _check_move(spec, pipeline, source, target, current)
            _check_role(entity, pipeline, target, records.access.acting.user)
            now = dt.datetime.now(dt.UTC)
            entered = records.journal.last_stage_entry(conn, entity, record_id, source)
            updated = conn.execute(records.access.scoped(
                sa.update(table.table)
                .where(table.table.c.id == record_id, table.table.c.version == current["version"])
                .values(stage=target, version=current["version"] + 1, updated_at=now,
                        **progress.on_enter(table, target)), entity, "update")
            ).rowcount
            if updated != 1:
                raise StaleVersion(f"{entity} {record_id} was changed by someone else; read it again")
            records.journal.stage(conn, entity, record_id, pipeline.name, source, target,
                                  by=actor, at=now, seconds=seconds_since(entered, now))
            merged = {**current, "stage": target, "version": current["version"] + 1,
                      "updated_at": now}
            merged.update(records.formulas.on_write(conn, entity, record_id, current, merged))
            records.rollups.on_write(conn, entity, record_id, current, merged)
            # last, as on every write: a rule may read a formula or a roll-up the move changed
            records.rules.check(conn, entity, [record_id])
            return records.render(conn, table, [merged])[0]


def _check_role(entity: str, pipeline: PipelineSpec, target: str, user: User | None) -> None:
    """A stage with `roles:` is entered only by users with one of them (or admin)."""
    allowed = next(s.roles for s in pipeline.stages if s.name == target)
    if allowed and user is not None and ADMIN not in user.roles and \
            not set(user.roles) & set(allowed):
        raise Forbidden(f"only {' or '.join(allowed)} may move a {entity} to {target}",
                        [ErrorDetail("to", f"{target} is entered by: {', '.join(allowed)}")],
                        code="stage_forbidden")


def _target(body: Any) -> str:
    if not isinstance(body, dict) or set(body) - {"to"}:
        unknown = sorted(set(body) - {"to"}) if isinstance(body, dict) else []
        raise ValidationFailed(
            'a stage move takes {"to": "<stage>"}',
            [ErrorDetail(key, "is not a parameter of a stage move") for key in unknown]
            or [ErrorDetail("", 'the body must be {"to": "<stage>"}')])
    target = body.get("to")
    if not isinstance(target, str) or not target:
        raise ValidationFailed("a stage move needs the stage to move to",
                               [ErrorDetail("to", "is required: the name of a stage")])
    return target


def _check_move(spec: EntitySpec, pipeline: PipelineSpec, source: str, target: str,
                current: dict[str, Any]) -> None:
    stages = pipeline.stage_names
    if target not in stages:
        hint = did_you_mean(target, stages)
        raise ValidationFailed(
            f"no stage {target!r} in the {pipeline.name} pipeline",
            [ErrorDetail("to", f"must be one of: {', '.join(stages)}" + (f"; {hint}" if hint else ""))],
            code="unknown_stage")
    if target == source:
        raise Conflict(f"the {spec.name} is already in stage {target!r}",
                       [ErrorDetail("to", "is the current stage")], code="already_in_stage")
    if source in pipeline.final:
        raise ValidationFailed(
            f"the {spec.name} is in the final stage {source!r} and moves no more",
            [ErrorDetail("to", f"cannot leave final stage {source!r}")], code="transition_refused")
    allowed: tuple[str, ...]
    if pipeline.transitions == "forward":
        allowed = stages[stages.index(source) + 1:] if source in stages else stages
    elif isinstance(pipeline.transitions, str):
        allowed = stages
    else:
        allowed = tuple(pipeline.transitions.get(source, ()))
    if target not in allowed:
        reason = "moves only forward" if pipeline.transitions == "forward" else \
            "the pipeline's transitions do not allow it"
        raise ValidationFailed(
            f"the {spec.name} cannot move from {source!r} to {target!r}: {reason}",
            [ErrorDetail("to", f"from {source!r} it may move to: {', '.join(allowed) or 'nowhere'}")],
            code="transition_refused")
    missing = [ErrorDetail(f.name, f"is required in stage {target!r}")
               for f in spec.fields.values()
               if target in f.required_in_stages and current.get(f.name) in (None, "", [])]
    if missing:
        raise ValidationFailed(
            f"the {spec.name} cannot enter stage {target!r} before these fields are filled",
            missing, code="stage_requirements")
