"""Links that carry data: the fields of a many-to-many link's (source, target) pairs.

A body gives such a link as a list whose items are ids (the pair keeps the values it has,
or takes the fields' defaults when new) or objects `{"id": 3, "price": "100.00"}` (the
pair's values are replaced: an omitted field takes its default). A record shows the link as
a list of objects sorted by id. One row per pair: the same target twice needs a line entity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.errors import ErrorDetail, ValidationFailed
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec
from engine.storage.pair_formulas import PairComputeError, compute, pair_formulas, refused_values
from engine.types.fields import ValueProblem

#: the through values of one pair, by field name (stored values, not rendered)
Values = dict[str, Any]


class Linked(list[int]):
    """The ids a body links, sorted, and what it gave for each: its position in the body
    and its through values (None for a bare id)."""

    def __init__(self, ids: Iterable[int], given: Mapping[int, tuple[int, Values | None]]):
        super().__init__(sorted(ids))
        self.given = dict(given)


def parse(link: LinkSpec, value: list[Any], problems: list[ErrorDetail]) -> Linked:
    """The items of a through link's list in a body; type problems are appended, named
    `link[index].field`."""
    given: dict[int, tuple[int, Values | None]] = {}
    for index, item in enumerate(value):
        where = f"{link.name}[{index}]"
        target = item["id"] if isinstance(item, dict) else item
        if target in given:
            problems.append(ErrorDetail(where, f"lists id {target} twice"))
            continue
        if not isinstance(item, dict):
            given[target] = (index, None)
            continue
        values: Values = {}
        for name, field in link.through.items():
            raw = item.get(name)
            if raw is None or field.formula is not None:
                continue
            try:
                values[name] = field.type.parse(field, raw)
            except ValueProblem as problem:
                problems.append(ErrorDetail(f"{where}.{name}", str(problem)))
        given[target] = (index, values)
    return Linked(given, given)


def resolve(link: LinkSpec, linked: Linked, existing: Mapping[int, Values]) -> dict[int, Values]:
    """Every linked pair's values once written: an object's values over the defaults, a
    bare id's current values (or the defaults, when new), and the pair's formulas
    computed from them. A required field left without a value is a 422 naming it, and
    so is a formula giving what its field cannot hold."""
    result: dict[int, Values] = {}
    problems: list[ErrorDetail] = []
    formulas = pair_formulas(link) if any(
        f.formula is not None for f in link.through.values()) else []
    now = dt.datetime.now(dt.UTC)
    for target in linked:
        index, values = linked.given.get(target, (0, None))
        if values is None and target in existing:
            result[target] = dict(existing[target])
            continue
        row = {name: field.default for name, field in link.through.items()}
        row.update(values or {})
        for name, field in link.through.items():
            if field.required and row.get(name) is None:
                problems.append(ErrorDetail(f"{link.name}[{index}].{name}", "is required"))
        try:
            compute(formulas, row, now)
        except PairComputeError as problem:
            raise ValidationFailed(
                f"the formula of {link.name}.{problem.field} gives a value the field cannot "
                f"hold: it {problem.reason}; nothing was written",
                [ErrorDetail(f"{link.name}[{index}].{problem.field}",
                             f"the computed value {problem.reason}")],
                code="formula_out_of_range") from None
        result[target] = row
    if problems:
        raise ValidationFailed(f"a {link.name} link is not valid", problems)
    return result


def refuse_computed(spec: EntitySpec, body: Any) -> list[ErrorDetail]:
    """The formula fields of pairs that a record's body sends (`procedures[0].amount`)."""
    found: list[ErrorDetail] = []
    if not isinstance(body, dict):
        return found
    for link in spec.links.values():
        value = body.get(link.name)
        if not link.through or not isinstance(value, list):
            continue
        for index, item in enumerate(value):
            if isinstance(item, dict):
                found += [ErrorDetail(f"{link.name}[{index}].{name}",
                                      "is computed by a formula: leave it out")
                          for name in refused_values(link, item)]
    return found


def refuse_computed_pair(link: LinkSpec, body: Any) -> None:
    """A PUT of one pair naming a formula field of the link: 422 `field_computed`."""
    sent = refused_values(link, body) if isinstance(body, dict) else []
    if sent:
        raise ValidationFailed(
            f"{', '.join(sent)} of a {link.name} pair {'is' if len(sent) == 1 else 'are'} "
            "computed by the server and cannot be sent",
            [ErrorDetail(name, "is computed by a formula: leave it out") for name in sent],
            code="field_computed")


def read(conn: sa.Connection, joins: sa.Table, link: LinkSpec,
         source_ids: Iterable[int]) -> dict[int, dict[int, Values]]:
    """The stored values of every pair of these sources: source id → target id → values."""
    columns = [joins.c[name] for name in link.through]
    found: dict[int, dict[int, Values]] = {}
    ids = list(source_ids)
    if not ids:
        return found
    for row in conn.execute(sa.select(joins.c.source_id, joins.c.target_id, *columns)
                            .where(joins.c.source_id.in_(ids))):
        found.setdefault(row[0], {})[row[1]] = {
            name: row[2 + i] for i, name in enumerate(link.through)}
    return found


def render(link: LinkSpec, pairs: Mapping[int, Values]) -> list[dict[str, Any]]:
    """A through link as a record shows it: objects sorted by id."""
    return [{"id": target, **render_values(link, pairs[target])} for target in sorted(pairs)]


def render_values(link: LinkSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _render(field, values.get(name)) for name, field in link.through.items()}


def _render(field: FieldSpec, value: Any) -> Any:
    return value if value is None or field.type.renders_as_is else field.type.render(field, value)


def write(conn: sa.Connection, joins: sa.Table, source_id: int, before: Mapping[int, Values],
          after: Mapping[int, Values]) -> None:
    """Make the stored pairs of one source `after` (it was `before`)."""
    gone = [t for t in before if t not in after or before[t] != after[t]]
    if gone:
        conn.execute(sa.delete(joins).where(joins.c.source_id == source_id,
                                            joins.c.target_id.in_(gone)))
    rows = [{"source_id": source_id, "target_id": t, **after[t]}
            for t in sorted(after) if t not in before or before[t] != after[t]]
    if rows:
        conn.execute(sa.insert(joins), rows)


def journal(link: LinkSpec, before: Mapping[int, Values],
            after: Mapping[int, Values]) -> dict[str, Any] | None:
    """How a through link changed, for the record's history: ids added and removed, and
    the values of pairs added or changed (None when nothing changed)."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(t for t in after if t in before and before[t] != after[t])
    if not (added or removed or changed):
        return None
    entry: dict[str, Any] = {"added": added, "removed": removed}
    if changed:
        entry["changed"] = [
            {"id": t, **{name: [_render(field, before[t].get(name)), _render(field, after[t].get(name))]
                         for name, field in link.through.items()
                         if before[t].get(name) != after[t].get(name)}}
            for t in changed]
    if added:
        entry["values"] = [{"id": t, **render_values(link, after[t])} for t in added]
    return entry
