"""Migration steps for unique sets and no-overlap rules (engine/storage/constraints.py).

- A new unique set: its shadow columns are added and filled with the folded values
  (`AddColumn`, through the column's backfill hook), then `AddUnique` over its columns.
  The plan lists the values more than one record shares (compared as the rule compares
  them: folded, NULLs never colliding), with their records' ids; while there are any the
  step is refused, and so the whole migration.
- A new no-overlap rule: `AddOverlap` lists the pairs of records that overlap, and the
  records whose range ends before it starts; refused while there are any. On PostgreSQL
  it creates the exclusion constraint (and `btree_gist`); on SQLite, which checks on each
  write, it only records the rule with the setup.
- A removed set or rule is dropped; its shadow columns go without `--allow-data-loss`
  (they hold nothing a user entered).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from engine.setup.constraints import OverlapSpec, UniqueSpec
from engine.setup.names import link_column
from engine.setup.spec import EntitySpec
from engine.storage.constraints import (
    BTREE_GIST,
    Where,
    member_columns,
    overlap_name,
    unique_name,
)
from engine.storage.migrations import steps as s
from engine.storage.tables import Storage

#: the pairs of records shown for a rule they break
Pair = tuple[int, int]


def model(entity: EntitySpec) -> dict[str, Any]:
    """What the setup history records of the entity's rules (nothing when it has none, so
    the version of a setup without them stays what it was)."""
    found: dict[str, Any] = {}
    if entity.unique:
        found["unique"] = {unique_name(entity, u): list(u.members) for u in entity.unique}
    if entity.no_overlap:
        found["no_overlap"] = {overlap_name(entity, r): list(r.fields) for r in entity.no_overlap}
    return found


def is_shadow(column: str) -> bool:
    return any(column.startswith(f"kt_{mode}_") for mode in ("ci", "sp", "cisp"))


@dataclass(kw_only=True)
class DropShadow(s.DropColumn):
    """A shadow column no unique set needs any more: computed, so nothing entered is lost."""

    destructive: ClassVar[bool] = False

    def describe(self) -> str:
        return self.what


def unique_violations(conn: sa.Connection, storage: Storage, entity: EntitySpec,
                      unique: UniqueSpec, live: str,
                      kept: Mapping[str, str]) -> list[tuple[str, int, list[int]]]:
    """The values more than one record shares under `unique`: (shown value, records,
    first ids), most shared first."""
    columns = member_columns(entity, unique.members)
    if any(c not in kept for c in columns):
        return []  # a member added by this plan is empty everywhere: nothing collides
    source = sa.table(live, sa.column("id"), *(sa.column(kept[c]) for c in columns))
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    shown: dict[tuple[Any, ...], str] = {}
    query = sa.select(source.c.id, *(source.c[kept[c]] for c in columns)).order_by(source.c.id)
    for row in conn.execute(query):
        values = row[1:]
        if any(v is None for v in values):
            continue
        key = tuple(unique.fold(str(v)) if c in unique.folded else v
                    for c, v in zip(columns, values, strict=True))
        groups[key].append(row[0])
        shown.setdefault(key, " / ".join(str(v) for v in values))
    shared = sorted((ids for ids in groups.values() if len(ids) > 1), key=lambda i: (-len(i), i))
    by_ids = {tuple(ids): key for key, ids in groups.items()}
    return [(repr(shown[by_ids[tuple(ids)]]), len(ids), ids[:3]) for ids in shared[:s.EXAMPLES]]


@dataclass(kw_only=True)
class AddOverlap(s.Step):
    rule: OverlapSpec
    name: str
    pairs: list[Pair]
    overlapping: int
    backwards: list[int]
    backward: int = 0
    phase: ClassVar[int] = 6

    def describe(self) -> str:
        what = (f"let no two {self.table} records with the same {' and '.join(self.rule.key)} "
                f"overlap in {self.rule.start}–{self.rule.end}")
        problems = []
        if self.overlapping:
            listed = "; ".join(f"#{a} and #{b}" for a, b in self.pairs[:s.EXAMPLES])
            more = self.overlapping - min(len(self.pairs), s.EXAMPLES)
            problems.append(f"{s.count(self.overlapping, 'pair')} overlap: {listed}"
                            + (f"; and {more:,} more" if more > 0 else ""))
        if self.backwards:
            verb = "ends before it starts" if self.backward == 1 else "end before they start"
            problems.append(f"{s.count(self.backward, 'record')} {verb}: "
                            + ", ".join(f"#{i}" for i in self.backwards[:s.EXAMPLES]))
        return f"{what} ({'; '.join(problems) or 'no records overlap'})"

    def apply(self, ctx: s.Context) -> None:
        if ctx.dialect != "postgresql":
            return  # SQLite checks each write; the rule is recorded with the setup
        table = ctx.storage.entities[self.table].table
        [constraint] = [c for c in table.constraints if c.name == self.name]
        ctx.conn.exec_driver_sql(BTREE_GIST)
        ctx.conn.execute(sa.schema.AddConstraint(constraint))


@dataclass(kw_only=True)
class DropOverlap(s.Step):
    name: str
    phase: ClassVar[int] = 2

    def describe(self) -> str:
        return f"let {self.table} records overlap again (drop the rule {self.name}; records kept)"

    def apply(self, ctx: s.Context) -> None:
        if ctx.dialect == "postgresql":
            ctx.conn.exec_driver_sql(f'ALTER TABLE "{self.table}" DROP CONSTRAINT IF EXISTS '
                                     f'"{self.name}"')


def overlap_steps(conn: sa.Connection, storage: Storage, entity: EntitySpec, live: str,
                  kept: Mapping[str, str], previous: Mapping[str, Any]) -> list[s.Step]:
    """Add the new no-overlap rules (each with the records that break it), drop the old."""
    if conn.dialect.name == "postgresql":
        present = set(conn.execute(sa.text(
            "SELECT conname FROM pg_constraint WHERE contype = 'x' AND conrelid = to_regclass(:t)"),
            {"t": f'"{live}"'}).scalars())
    else:
        present = set(previous.get("no_overlap") or ())
    wanted = {overlap_name(entity, rule): rule for rule in entity.no_overlap}
    found: list[s.Step] = [DropOverlap(table=entity.name, name=name)
                           for name in sorted(present - set(wanted))]
    for name, rule in wanted.items():
        if name in present:
            continue
        pairs, total, backwards, backward = _overlapping(conn, storage, entity, rule, live, kept)
        step = AddOverlap(table=entity.name, rule=rule, name=name, pairs=pairs,
                          overlapping=total, backwards=backwards, backward=backward)
        if total or backward:
            step.refusal = "change or delete these records first, so that no two overlap"
        found.append(step)
    return found


def _overlapping(conn: sa.Connection, storage: Storage, entity: EntitySpec, rule: OverlapSpec,
                 live: str, kept: Mapping[str, str]) -> tuple[list[Pair], int, list[int], int]:
    """The pairs of records that overlap under the rule (the first few, and how many),
    and the records whose range ends before it starts."""
    where = Where(storage, entity, rule)
    read = {link_column(c.name) if c.name in entity.links else c.name for c in where.conditions}
    columns = [*member_columns(entity, rule.key), rule.start, rule.end]
    if any(c not in kept for c in (*columns, *read)):
        return [], 0, [], 0  # a column this plan adds is empty everywhere: nothing overlaps
    # the table as it is now, its columns typed as the setup reads them, by their new names
    model = storage.entities[entity.name].table
    typed = [sa.column(kept[c], model.c[c].type).label(c) for c in {*columns, *read}]
    now = sa.select(sa.column("id"), *typed).select_from(sa.table(live)).subquery()
    a, b = now.alias("a"), now.alias("b")
    start, end = rule.start, rule.end
    present = [t.c[c].is_not(None) for t in (a, b) for c in columns]
    same_key = [a.c[c] == b.c[c] for c in member_columns(entity, rule.key)]
    condition = sa.and_(a.c.id < b.c.id, *present, *same_key,
                        *where(a, conn.dialect.name), *where(b, conn.dialect.name),
                        a.c[start] < b.c[end], b.c[start] < a.c[end],
                        a.c[start] < a.c[end], b.c[start] < b.c[end])
    pairs = [(int(x), int(y)) for x, y in conn.execute(
        sa.select(a.c.id, b.c.id).select_from(a).join(b, condition)
        .order_by(a.c.id, b.c.id).limit(s.EXAMPLES)).all()]
    total = int(conn.execute(sa.select(sa.func.count()).select_from(a).join(b, condition))
                .scalar() or 0) if pairs else 0
    one = now.alias("one")
    backwards = sa.and_(one.c[end] < one.c[start], *where(one, conn.dialect.name))
    first = list(conn.execute(sa.select(one.c.id).where(backwards).order_by(one.c.id)
                              .limit(s.EXAMPLES)).scalars())
    counted = int(conn.execute(sa.select(sa.func.count()).select_from(one).where(backwards))
                  .scalar() or 0) if first else 0
    return pairs, total, first, counted


def add_unique(conn: sa.Connection, storage: Storage, table: sa.Table,
               constraint: sa.UniqueConstraint, live: str,
               kept: Mapping[str, str]) -> s.AddUnique | None:
    """The step adding a unique set, with the values its records share; None for a
    field's own `unique: true` (the planner's step for it)."""
    entity = storage.setup.entities.get(table.name)
    unique = next((u for u in entity.unique if unique_name(entity, u) == constraint.name),
                  None) if entity is not None else None
    if entity is None or unique is None:
        return None
    shared = unique_violations(conn, storage, entity, unique, live, kept)
    columns = tuple(str(c.name) for c in constraint.columns)
    step = s.AddUnique(table=table.name, what=f"{table.name}.{unique.words()}",
                       column=columns[0], columns=columns, name=str(constraint.name),
                       duplicates=shared)
    if shared:
        step.refusal = "make each of these values different first"
    return step
