"""A rule (`engine.setup.rules.RuleSpec`) as SQL: the condition a record breaks it by.

`broken(storage, rule, dialect)` is `when AND NOT require`, wrapped so that unknown
(a comparison with an empty field) counts as not broken: a record breaks a rule only when
its `require` is certainly false. Conditions compile with the list filters' own compiler,
unscoped (a rule is about every record, whoever wrote it); a `$record.<field>` value is a
comparison of two columns of the same row. Used by the writes (engine/records/rules.py)
and by the migration plan, which counts the rows that break a new or changed rule.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.setup.rules import Clause, Comparison, RuleSpec
from engine.storage.filters import compile_all
from engine.storage.tables import Storage


def broken(storage: Storage, rule: RuleSpec, dialect: str) -> ColumnElement[bool]:
    """True for the rows of `rule.entity` that break `rule`; never NULL."""
    holds = sa.and_(*_clauses(storage, rule.require, dialect))
    applies = _clauses(storage, rule.when, dialect)
    condition = sa.and_(*applies, sa.not_(holds))
    return sa.case((condition, sa.true()), else_=sa.false())


def _clauses(storage: Storage, clauses: tuple[Clause, ...],
             dialect: str) -> list[ColumnElement[bool]]:
    """Filter conditions compiled together (those on one link's pairs hold on one pair),
    then the comparisons of two fields."""
    return [*compile_all(storage, [c for c in clauses if not isinstance(c, Comparison)],
                         dialect),
            *(_compared(storage, c) for c in clauses if isinstance(c, Comparison))]


def _compared(storage: Storage, clause: Comparison) -> ColumnElement[bool]:
    table = storage[clause.entity]
    left = table.attributes[clause.name].column
    right = table.attributes[clause.other].column
    compared: ColumnElement[bool] = {
        "eq": left == right, "ne": left != right, "lt": left < right,
        "lte": left <= right, "gt": left > right, "gte": left >= right,
    }[clause.op]
    return compared
