"""Formulas of a link's pairs (`through: {amount: {type: money, formula: "price * quantity"}}`)
computed and stored on the pair's row of the link's join table.

A pair's formula reads the pair's own fields only (engine/setup/formula_check.py says why),
so it is computed in Python when the pair is written, from the values being written —
no statement of its own — and over every pair by a migration that adds or changes one.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.setup.expressions import NOW, TODAY
from engine.setup.spec import FieldSpec, LinkSpec
from engine.storage.database import UNSCOPED
from engine.storage.formulas import BATCH, EXACT, finisher, formulas_in_order, unstorable

WHY = "formulas of a link's pairs: every pair computed, whoever may see it"


def pair_formulas(link: LinkSpec) -> list[FieldSpec]:
    """The link's formula fields, those another one reads first."""
    return formulas_in_order(link.through)


class PairComputeError(ValueError):
    """A pair's formula gives a value its field cannot hold: which field, and why."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def compute(fields: list[FieldSpec], values: dict[str, Any],
            now: dt.datetime | None = None) -> None:
    """Set the formula `fields` (in order: `pair_formulas`) in one pair's `values`."""
    if not fields:
        return
    env: dict[str, Any] = dict(values)
    if any(f.formula is not None and f.formula.uses_clock for f in fields):
        now = now or dt.datetime.now(dt.UTC)
        env.update({TODAY: now.date(), NOW: now})
    with decimal.localcontext(EXACT):
        for field in fields:
            assert field.formula is not None
            try:
                value = finisher(field)(field.formula.evaluate(env))
            except (ValueError, ArithmeticError, OverflowError) as problem:
                reason = str(problem) if isinstance(problem, ValueError) and str(problem) \
                    else "cannot be computed (a date or number out of range)"
                raise PairComputeError(field.name, reason) from None
            env[field.name] = values[field.name] = value


class LinkPairFormulas:
    """Every pair of one link computed again (a migration step): in batches by pair."""

    def __init__(self, joins: sa.Table, link: LinkSpec):
        self.joins = joins
        self.fields = pair_formulas(link)
        self.inputs = [name for name in link.through]

    def recompute_all(self, conn: sa.Connection,
                      report: Callable[[int], None] | None = None) -> int:
        joins, names = self.joins, [f.name for f in self.fields]
        done, after = 0, (0, 0)
        now = dt.datetime.now(dt.UTC)
        update = sa.update(joins).where(
            joins.c.source_id == sa.bindparam("kt_pair_source"),
            joins.c.target_id == sa.bindparam("kt_pair_target")).values(
            {n: sa.bindparam(f"kt_value_{n}") for n in names})
        while True:
            rows = conn.execute(
                sa.select(joins.c.source_id, joins.c.target_id,
                          *(joins.c[n] for n in self.inputs))
                .where(sa.tuple_(joins.c.source_id, joins.c.target_id) > sa.tuple_(*after))
                .order_by(joins.c.source_id, joins.c.target_id).limit(BATCH),
                execution_options={UNSCOPED: WHY}).all()
            if not rows:
                return done
            updates = []
            for row in rows:
                values: dict[str, Any] = dict(zip(self.inputs, row[2:], strict=True))
                try:
                    compute(self.fields, values, now)
                except PairComputeError as problem:
                    raise unstorable(
                        f"the formula of {joins.name}.{problem.field} gives a value the field "
                        f"cannot hold for the pair ({row[0]}, {row[1]})", problem.field,
                        problem, "formula_out_of_range") from None
                updates.append({"kt_pair_source": row[0], "kt_pair_target": row[1],
                                **{f"kt_value_{n}": values[n] for n in names}})
            conn.execute(update, updates, execution_options={UNSCOPED: WHY})
            done += len(rows)
            after = (rows[-1][0], rows[-1][1])
            if report is not None:
                report(done)


def refused_values(link: LinkSpec, values: Mapping[str, Any]) -> list[str]:
    """The formula fields of the link that `values` (a client's pair) names."""
    return [name for name, field in link.through.items()
            if field.formula is not None and name in values]
