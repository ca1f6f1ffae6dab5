"""Computed fields in a migration: a formula or roll-up that is new, or whose definition
changed, is computed over every row of its entity — and so is every computed field that
reads it, after it (a formula of a roll-up, a roll-up of a formula, a roll-up of a
roll-up). Removing a computed field is an ordinary column removal; a field that stops
being computed keeps its last values as ordinary data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.setup.names import join_table_name
from engine.setup.rollups import computed_reads, pair_field
from engine.setup.spec import SetupSpec
from engine.storage.migrations.formulas import RecomputeFormulas
from engine.storage.migrations.pair_formulas import RecomputePairs
from engine.storage.migrations.rollups import RecomputeRollups
from engine.storage.migrations.steps import Step

Node = tuple[str, str]  # (entity, field)


def computed_steps(setup: SetupSpec, previous: Mapping[str, Any],
                   live_name: Mapping[str, str], rows: Any) -> list[Step]:
    """The recompute steps, what is read before its readers. `previous` is the recorded
    model's entities, `live_name` an entity's table now, `rows(table)` counts a live
    table's rows."""
    dirty: dict[Node, str] = {}
    for spec in setup.entities.values():
        before = (previous.get(live_name.get(spec.name, spec.name)) or {}).get("fields") or {}
        for field in spec.fields.values():
            if field.formula is not None:
                what, key, source = "formula", "formula", field.formula.source
            elif field.rollup is not None:
                what, key, source = "roll-up", "rollup", field.rollup.source
            else:
                continue
            old = before.get(field.renamed_from or field.name)
            if old is None or key not in old:
                dirty[(spec.name, field.name)] = f"new {what}"
            elif old[key] != source:
                dirty[(spec.name, field.name)] = f"{what} changed"
    dirty.update(pair_dirty(setup, previous, live_name))
    reads = computed_reads(setup)
    grew = True
    while grew:  # the readers of a recomputed field are recomputed after it
        grew = False
        for node, read in reads.items():
            if node not in dirty and read & dirty.keys():
                dirty[node] = "reads a recomputed " + (
                    "roll-up" if any(_is_rollup(setup, n) for n in read & dirty.keys())
                    else "formula")
                grew = True
    ordered: list[Node] = []

    def visit(node: Node) -> None:  # the setup has no cycles of computed fields
        if node in ordered:
            return
        for read in sorted(reads.get(node, ())):
            if read in dirty and read != node:
                visit(read)
        ordered.append(node)

    for node in sorted(dirty):
        visit(node)
    steps: list[Step] = []
    for entity, name in ordered:
        table = live_name.get(entity)
        if table is None:
            continue  # a new table: its rows are created with their computed fields
        last = steps[-1] if steps else None
        if "." in name:  # a formula of a link's pairs (`procedures.$link.amount`)
            link = name.split(".")[0]
            joins = live_name.get(join_table_name(entity, link))
            if joins is None:
                continue  # a new link: its pairs are written with their formulas
            if isinstance(last, RecomputePairs) and (last.table, last.link) == (entity, link):
                last.fields = (*last.fields, name)
                last.why = "; ".join(sorted(set(last.why.split("; ")) | {dirty[(entity, name)]}))
                continue
            steps.append(RecomputePairs(table=entity, link=link, fields=(name,),
                                        rows=rows(joins), why=dirty[(entity, name)]))
            continue
        kind: type[RecomputeRollups] | type[RecomputeFormulas] = \
            RecomputeRollups if _is_rollup(setup, (entity, name)) else RecomputeFormulas
        if type(last) is kind and last.table == entity:
            last.fields = (*last.fields, name)
            whys = set(last.why.split("; ")) | {dirty[(entity, name)]}
            last.why = "; ".join(sorted(whys))
            continue
        steps.append(kind(table=entity, fields=(name,), rows=rows(table),
                          why=dirty[(entity, name)]))
    return steps


def _is_rollup(setup: SetupSpec, node: Node) -> bool:
    field = setup.entities[node[0]].fields.get(node[1])  # None: a formula of a link's pairs
    return field is not None and field.rollup is not None


def pair_dirty(setup: SetupSpec, previous: Mapping[str, Any],
               live_name: Mapping[str, str]) -> dict[Node, str]:
    """The formulas of links' pairs that are new or changed since the recorded model."""
    dirty: dict[Node, str] = {}
    for spec in setup.entities.values():
        before = (previous.get(live_name.get(spec.name, spec.name)) or {}).get("links") or {}
        for link in spec.links.values():
            old = (before.get(link.name) or {}).get("formulas") or {}
            for name, field in link.through.items():
                if field.formula is None:
                    continue
                if name not in old:
                    dirty[(spec.name, pair_field(link.name, name))] = "new formula"
                elif old[name] != field.formula.source:
                    dirty[(spec.name, pair_field(link.name, name))] = "formula changed"
    return dirty
