"""Compare a setup with the live database and list the steps that bring the database in
step, each with its counts (rows affected, values that would not convert, duplicates).

What the database shows (tables, columns, keys, indexes) is read with SQLAlchemy's
inspector; what it means (the field type behind a column, the stages) comes from the
model recorded with the last applied setup (`model.py`). Renames are never guessed: a
field or entity is renamed only when the setup says `renamed_from:`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa

from engine.setup.names import join_table_name, link_column, poly_entity_column
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec
from engine.storage.duplicates import SHADOW_PREFIX as DUPLICATE_SHADOW
from engine.storage.migrations import constraints
from engine.storage.migrations import steps as s
from engine.storage.migrations.computed import computed_steps
from engine.storage.migrations.convert import Converter, shown
from engine.storage.migrations.model import digest, field_from_model, field_model, setup_model
from engine.storage.migrations.rules import rule_steps
from engine.storage.progress import REACHED_COLUMN
from engine.storage.tables import SEARCH_COLUMN, Storage
from engine.types.fields import ValueProblem

#: tables Kartoteka never drops: its own, and the databases' own
KEPT_TABLES = ("kt_", "sqlite_", "alembic_")
SAME_ON_DELETE = {None: "RESTRICT", "NO ACTION": "RESTRICT"}


@dataclass
class MigrationPlan:
    """The steps that bring a database in step with a setup, in the order they apply."""

    steps: list[s.Step] = field(default_factory=list)
    digest: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    setup_changed: bool = False

    @property
    def refusals(self) -> list[str]:
        return [f"{step.describe()}: {step.refusal}" for step in self.steps if step.refusal]

    @property
    def data_loss(self) -> list[s.Step]:
        """Steps that lose data: applied only with `--allow-data-loss`, after a backup."""
        return [step for step in self.steps if step.loses_data and not step.refusal]

    @property
    def up_to_date(self) -> bool:
        return not self.steps

    def as_json(self) -> dict[str, Any]:
        return {"up_to_date": self.up_to_date, "digest": self.digest,
                "setup_changed": self.setup_changed,
                "needs_allow_data_loss": bool(self.data_loss), "refused": bool(self.refusals),
                "steps": [step.as_json() for step in self.steps]}


def compare(conn: sa.Connection, storage: Storage, previous: dict[str, Any] | None) -> MigrationPlan:
    model = setup_model(storage)
    version = digest(model)
    planner = _Planner(conn, storage, previous or {})
    planner.run()
    planner.steps += rule_steps(conn, storage, previous or {}, planner.live_name)
    ordered = sorted(planner.steps, key=lambda step: step.phase)
    return MigrationPlan(ordered, version, model,
                         previous is None or previous.get("digest") != version)


class _Planner:
    def __init__(self, conn: sa.Connection, storage: Storage, previous: dict[str, Any]):
        self.conn = conn
        self.storage = storage
        self.dialect = conn.dialect.name
        self.inspector = sa.inspect(conn)
        self.live = set(self.inspector.get_table_names())
        self.catalog = _Catalog(conn, self.inspector, self.live)
        self.previous_entities: dict[str, Any] = previous.get("entities") or {}
        self.previous_tables: set[str] = set(previous.get("tables") or ())
        self.steps: list[s.Step] = []
        #: new table name → its name in the database now
        self.live_name: dict[str, str] = {name: name for name in self.live}
        #: old entity name → new one, for the renames this plan makes
        self.renamed: dict[str, str] = {}

    def run(self) -> None:
        self.entity_renames()
        for table in self.storage.metadata.sorted_tables:
            if table.name in self.live_name:
                self.compare_table(table)
            else:
                self.steps.append(s.CreateTable(table=table.name, what=self.creation(table)))
        self.removed_tables()
        self.steps += computed_steps(self.storage.setup, self.previous_entities,
                                     self.live_name, self.rows)

    # -- entities ---------------------------------------------------------------------------
    def entity_renames(self) -> None:
        for entity in self.storage.setup.entities.values():
            old, new = entity.renamed_from, entity.name
            if old is None or old not in self.live:
                continue
            if new in self.live:
                self.steps.append(s.Refused(
                    table=new, what=f"rename entity {old} to {new}",
                    refusal=f"the database already has a table {new}; remove one of the two "
                            "first, or drop renamed_from"))
                continue
            joins = []
            for link in entity.links.values():
                old_join, new_join = join_table_name(old, link.name), join_table_name(new, link.name)
                if link.many and old_join in self.live:
                    joins.append((old_join, new_join))
                    self.live_name[new_join] = old_join
                    del self.live_name[old_join]
            columns = [(other.name, poly_entity_column(link.name))
                       for other in self.storage.setup.entities.values()
                       for link in other.links.values() if link.polymorphic and new in link.targets]
            self.steps.append(s.RenameEntity(table=new, old=old, rows=self.rows(old),
                                             join_tables=joins, entity_columns=columns))
            self.live_name[new] = old
            del self.live_name[old]
            self.renamed[old] = new

    def creation(self, table: sa.Table) -> str:
        entity = self.storage.setup.entities.get(table.name)
        if entity is not None:
            return (f"add entity {entity.name} (new table, {count_fields(entity)}, "
                    f"{len(table.columns)} columns)")
        for owner in self.storage.setup.entities.values():
            for link in owner.links.values():
                if link.many and join_table_name(owner.name, link.name) == table.name:
                    return (f"add link {owner.name}.{link.name} (many-to-many to {link.target}, "
                            f"new table {table.name})")
        return f"create Kartoteka's table {table.name}"

    def removed_tables(self) -> None:
        wanted = set(self.storage.metadata.tables)
        gone = [live for new, live in self.live_name.items()
                if new == live and live not in wanted and not live.startswith(KEPT_TABLES)
                and (live in self.previous_entities or live in self.previous_tables or "__" in live)]
        for name in self._drop_order(gone):
            if "__" in name:
                entity, _, link = name.partition("__")
                what = f"remove link {entity}.{link} (many-to-many, table {name})"
            else:
                what = f"remove entity {name} (table {name})"
            self.steps.append(s.DropTable(table=name, what=what, rows=self.rows(name)))

    def _drop_order(self, names: list[str]) -> list[str]:
        """Tables that point at others go first, so PostgreSQL's keys never block a drop."""
        pending = sorted(names, key=lambda n: ("__" not in n, n))
        targets = {n: {fk["referred_table"] for fk in self.catalog.get("foreign_keys", n)} for n in pending}
        ordered: list[str] = []
        while pending:
            free = [n for n in pending if not any(n in targets[o] for o in pending if o != n)]
            pick = free[0] if free else pending[0]
            ordered.append(pick)
            pending.remove(pick)
        return ordered

    # -- one table --------------------------------------------------------------------------
    def compare_table(self, table: sa.Table) -> None:
        live = self.live_name[table.name]
        entity = self.storage.setup.entities.get(table.name)
        previous: dict[str, Any] = self.previous_entities.get(live) or {}
        columns: dict[str, Any] = {c["name"]: c for c in self.catalog.get("columns", live)}
        rows = self.rows(live)
        kept: dict[str, str] = {}  # new column name → live column name
        for column in table.columns:
            spec = entity.fields.get(column.name) if entity else None
            if column.name in columns:
                kept[column.name] = column.name
            elif spec is not None and spec.renamed_from in columns:
                kept[column.name] = spec.renamed_from
                self.steps.append(s.RenameColumn(
                    table=table.name, what=f"rename field {table.name}.{spec.renamed_from} "
                                           f"to {column.name}",
                    old=spec.renamed_from, new=column.name,
                    existing_type=columns[spec.renamed_from]["type"]))
            else:
                self.steps.append(self.added(table, entity, column, rows))
        for name in columns:
            if name in kept.values():
                continue
            if entity is not None:
                spec = next((f for f in entity.fields.values() if f.renamed_from == name), None)
                if spec is not None and spec.name in columns:
                    self.steps.append(s.Refused(
                        table=table.name, what=f"rename field {table.name}.{name} to {spec.name}",
                        refusal=f"the table already has a column {spec.name}"))
                    continue
            self.steps.append(self.dropped(table.name, live, name, previous))
        if entity is not None:
            for column_name, live_column in kept.items():
                self.compare_column(table, entity, previous, column_name, live_column,
                                    dict(columns[live_column]), rows)
            self.stage_moves(entity, live, previous)
            self.search(entity, previous, kept, rows)
        self.keys(table, live, kept, rows)
        self.uniques(table, live, kept, previous)
        if entity is not None:  # no_overlap rules (migrations/constraints.py)
            self.steps += constraints.overlap_steps(self.conn, self.storage, entity, live, kept,
                                              previous)
        self.indexes(table, live)

    def added(self, table: sa.Table, entity: EntitySpec | None, column: sa.Column[Any],
              rows: int) -> s.Step:
        name = table.name
        what, detail = f"add column {name}.{column.name}", ""
        fill: Any = None
        fill_text = ""
        spec = entity.fields.get(column.name) if entity else None
        link = _link_of(entity, column.name)
        if spec is not None:
            what = f"add field {name}.{spec.name}"
            detail = spec.type.name + (", required" if spec.required else "")
            if spec.has_default and rows:
                fill, fill_text = spec.default, f"the default {shown(spec, spec.default)}"
        elif link is not None:
            what = f"add link {name}.{link.name}"
            detail = "to " + " | ".join(link.targets) + (", required" if link.required else "")
        elif column.name == "stage" and entity is not None and entity.pipeline is not None:
            pipeline = next(iter(entity.pipeline.pipelines.values()))
            return s.AddStage(
                table=name, what=f"add the pipeline to {name}", detail="column stage",
                column=column, rows=rows, fill=pipeline.initial,
                fill_text=f"the first stage {pipeline.initial!r}", pipeline=pipeline.name)
        elif column.name == "owner":
            what = f"add the owner of {name}"
        elif column.name == SEARCH_COLUMN:
            what = f"add the search text of {name}"
        elif constraints.is_shadow(column.name):
            what = f"add {name}.{column.name}, the folded copy a unique rule compares"
        elif column.name.startswith(DUPLICATE_SHADOW):
            what = f"add {name}.{column.name}, the normalised copy a duplicates rule compares"
        step = s.AddColumn(table=name, what=what, detail=detail, column=column, rows=rows,
                           fill=fill, fill_text=fill_text)
        if not column.nullable and rows and fill is None and not column.info.get("backfill"):
            hint = ("give it a `default:`" if spec is not None else
                    "make it optional first, fill it, then make it required")
            step.refusal = f"it is required and {count_rows(rows)} would be empty; {hint}"
        return step

    def dropped(self, table: str, live: str, column: str, previous: dict[str, Any]) -> s.Step:
        fields = previous.get("fields") or {}
        links = previous.get("links") or {}
        columns: tuple[str, ...] = (column,)
        if constraints.is_shadow(column):
            return constraints.DropShadow(table=table, what=f"remove {table}.{column}, the folded "
                                    "copy an old unique rule compared", columns=columns, values=0)
        if column.startswith(DUPLICATE_SHADOW):
            return constraints.DropShadow(table=table, what=f"remove {table}.{column}, the "
                                          "normalised copy an old duplicates rule compared",
                                          columns=columns, values=0)
        if column in fields:
            what = f"remove field {table}.{column} ({fields[column].get('type')})"
        elif column.endswith("_id") and column[:-3] in links:
            what = f"remove link {table}.{column[:-3]}"
        elif column.endswith("_entity") and column[:-7] in links:
            what = f"remove link {table}.{column[:-7]} (which entity it names)"
        elif column == "stage":
            what = f"remove the pipeline of {table} (each record's stage)"
        elif column == "owner":
            what = f"remove the owner of {table}"
        elif column == SEARCH_COLUMN:
            what = f"remove the search text of {table} (computed; no entered value lost)"
        else:
            what = f"remove column {table}.{column}"
        values = self.scalar(sa.select(sa.func.count()).select_from(sa.table(live))
                             .where(sa.column(column).is_not(None)))
        step = s.DropColumn(table=table, what=what, columns=columns, values=values)
        return step

    def compare_column(self, table: sa.Table, entity: EntitySpec, previous: dict[str, Any],
                       name: str, live_name: str, live: dict[str, Any], rows: int) -> None:
        column = table.c[name]
        spec = entity.fields.get(name)
        old_name = spec.renamed_from if spec is not None and live_name != name else name
        recorded = (previous.get("fields") or {}).get(old_name)
        if spec is not None and recorded is not None and _retyped(recorded, spec):
            old = field_from_model(name, recorded, self.storage.registry)
            if old is not None:
                self.steps.append(self.retype(table.name, self.live_name[table.name], live_name,
                                              entity, old, spec, bool(live["nullable"])))
                return
        what = f"{'field' if spec else 'link' if _link_of(entity, name) else 'column'} {table.name}.{name}"
        if spec is None and (link := _link_of(entity, name)) is not None:
            what = f"link {table.name}.{link.name}"
        if live["nullable"] and not column.nullable:
            source = sa.table(self.live_name[table.name], sa.column("id"), sa.column(live_name))
            empty = self.scalar(sa.select(sa.func.count()).select_from(source)
                                .where(source.c[live_name].is_(None)))
            ids = list(self.conn.execute(sa.select(source.c.id).where(source.c[live_name].is_(None))
                                         .order_by(source.c.id).limit(s.EXAMPLES)).scalars())
            default = spec.default if spec is not None else None
            step = s.SetRequired(table=table.name, what=what, column=name, column_type=column.type,
                                 empty=empty, empty_ids=ids, default=default,
                                 default_text=shown(spec, default) if spec and default is not None
                                 else "")
            if empty and default is None:
                step.refusal = ("give it a `default:` that fills the empty rows, or fill them "
                                "before making it required")
            self.steps.append(step)
        elif not live["nullable"] and column.nullable:
            self.steps.append(s.SetOptional(table=table.name, what=what, column=name,
                                            column_type=column.type))

    def retype(self, table: str, live: str, column: str, entity: EntitySpec, old: FieldSpec,
               new: FieldSpec, nullable: bool) -> s.Retype:
        source = sa.table(live, sa.column("id"), sa.column(column, old.type.column_type(old)))
        convert = Converter(old, new)
        failures: list[s.Example] = []
        converted = lost = 0
        for record_id, value in self.conn.execute(
                sa.select(source.c.id, source.c[column]).where(source.c[column].is_not(None))
                .order_by(source.c.id)):
            try:
                convert(value)
                converted += 1
            except ValueProblem as problem:
                lost += 1
                if len(failures) < s.EXAMPLES:
                    failures.append((record_id, f"{shown(old, value)} {problem}"))
        step = s.Retype(table=table, entity=entity.name, old=old, new=new, rows=converted,
                        failures=failures, nullable_now=nullable, lost=lost)
        if new.required:
            empty = self.scalar(sa.select(sa.func.count()).select_from(source)
                                .where(source.c[column].is_(None)))
            if (empty or lost) and not new.has_default:
                step.refusal = (f"the field is required and {count_rows(empty + lost)} would be "
                                "empty; give it a `default:`")
        return step

    # -- links, uniques, indexes ---------------------------------------------------------------
    def keys(self, table: sa.Table, live: str, kept: dict[str, str], rows: int) -> None:
        existing = {fk["constrained_columns"][0]: fk for fk in self.catalog.get("foreign_keys", live)
                    if len(fk["constrained_columns"]) == 1}
        for name, live_column in kept.items():
            column = table.c[name]
            for key in column.foreign_keys:
                target = key.column.table.name
                found = existing.get(live_column)
                if found is not None:
                    referred = self.renamed.get(found["referred_table"], found["referred_table"])
                    ondelete = (found.get("options") or {}).get("ondelete")
                    same = (referred == target and _on_delete(ondelete) == _on_delete(key.ondelete))
                    if same:
                        continue
                    was = f"was {referred}" if referred != target else (
                        f"deleting a {target} was {_on_delete(ondelete).lower()}")
                else:
                    was = "had no key"
                join = table.name not in self.storage.entities
                what = (f"change link {self._link_words(table.name, name)} to point at {target} "
                        f"({was}; on delete {key.ondelete.lower() if key.ondelete else 'restrict'})")
                target_live = self.live_name.get(target, target)
                source = sa.table(live, sa.column(live_column))
                total = self.scalar(sa.select(sa.func.count()).select_from(source)
                                    .where(source.c[live_column].is_not(None)))
                dangling = 0
                if target_live in self.live:
                    dangling = self.scalar(sa.select(sa.func.count()).select_from(source).where(
                        source.c[live_column].is_not(None),
                        source.c[live_column].not_in(sa.select(sa.column("id"))
                                                     .select_from(sa.table(target_live))
                                                     .scalar_subquery())))
                else:
                    dangling = total
                step = s.Relink(table=table.name, what=what, column=name,
                                old_key=found["name"] if found else None, new_key=key, rows=total,
                                join_table=join, lost=dangling)
                if dangling and not column.nullable and not join:
                    step.refusal = "the link is required, so its values cannot be emptied"
                self.steps.append(step)

    def _link_words(self, table: str, column: str) -> str:
        if table in self.storage.entities:
            link = _link_of(self.storage.setup.entities[table], column)
            return f"{table}.{link.name}" if link else f"{table}.{column}"
        entity, _, link_name = table.partition("__")
        return f"{entity}.{link_name} (many-to-many)"

    def uniques(self, table: sa.Table, live: str, kept: dict[str, str],
                previous: dict[str, Any]) -> None:
        wanted = {tuple(c.name for c in constraint.columns): constraint
                  for constraint in table.constraints if isinstance(constraint, sa.UniqueConstraint)}
        present = {tuple(self.live_to_new(kept, c) for c in u["column_names"]): u
                   for u in self.catalog.get("unique_constraints", live)}
        for columns, constraint in wanted.items():
            if columns in present:
                continue
            unique_set = constraints.add_unique(self.conn, self.storage, table, constraint, live, kept)
            if unique_set is not None:
                self.steps.append(unique_set)
                continue
            name = columns[0]
            live_column = kept.get(name)
            duplicates: list[tuple[str, int, list[int]]] = []
            if live_column is not None:
                duplicates = self.duplicates(table, live, name, live_column, previous)
            step = s.AddUnique(table=table.name, what=f"field {table.name}.{name}", column=name,
                               name=str(constraint.name), duplicates=duplicates)
            if duplicates:
                step.refusal = "make each of these values different first"
            self.steps.append(step)
        for columns, found in present.items():
            if columns not in wanted and found.get("name"):
                self.steps.append(s.DropUnique(table=table.name,
                                               what=f"field {table.name}.{', '.join(columns)}",
                                               name=str(found["name"])))

    def duplicates(self, table: sa.Table, live: str, name: str, live_column: str,
                   previous: dict[str, Any]) -> list[tuple[str, int, list[int]]]:
        spec = self.storage.setup.entities[table.name].fields[name]
        recorded = (previous.get("fields") or {}).get(live_column)
        old = field_from_model(name, recorded, self.storage.registry) if recorded else None
        reader = old or spec
        source = sa.table(live, sa.column("id"), sa.column(live_column, reader.type.column_type(reader)))
        value = source.c[live_column]
        found = self.conn.execute(
            sa.select(value, sa.func.count()).where(value.is_not(None)).group_by(value)
            .having(sa.func.count() > 1).order_by(sa.func.count().desc(), value)
            .limit(s.EXAMPLES)).all()
        result = []
        for row in found:
            ids = list(self.conn.execute(sa.select(source.c.id).where(value == row[0])
                                         .order_by(source.c.id).limit(3)).scalars())
            result.append((shown(reader, row[0]), int(row[1]), ids))
        return result

    def live_to_new(self, kept: dict[str, str], live_column: str) -> str:
        return next((new for new, old in kept.items() if old == live_column), live_column)

    def indexes(self, table: sa.Table, live: str) -> None:
        wanted = {str(index.name): index for index in table.indexes
                  if _for_dialect(index, self.dialect)}
        present = {str(ix["name"]) for ix in self.catalog.get("indexes", live)
                   if ix["name"] and not ix.get("unique") and not ix.get("duplicates_constraint")}
        for name in sorted(present - set(wanted)):
            self.steps.append(s.DropIndex(table=table.name, name=name))
        for key, index in wanted.items():
            if key not in present:
                self.steps.append(s.CreateIndex(table=table.name, index=index))

    # -- records ------------------------------------------------------------------------------
    def stage_moves(self, entity: EntitySpec, live: str, previous: dict[str, Any]) -> None:
        if entity.pipeline is None or "stage" not in {c["name"] for c in self.catalog.get("columns", live)}:
            return
        selector = entity.pipeline.pipeline_by
        names = tuple(entity.pipeline.pipelines)
        table = sa.table(live, sa.column("id"), sa.column("stage"),
                         *([sa.column(selector)] if selector else []))
        for index, pipeline in enumerate(entity.pipeline.pipelines.values()):
            move = partial(s.MoveStage, table=entity.name, pipeline=pipeline, selector=selector,
                           pipeline_names=names, first_pipeline=index == 0)
            condition = sa.and_(table.c.stage.not_in(list(pipeline.stage_names)),
                                move(from_stage="", to_stage=None, rows=0).chosen(table))
            found = self.conn.execute(sa.select(table.c.stage, sa.func.count()).where(condition)
                                      .group_by(table.c.stage).order_by(table.c.stage)).all()
            for stage, n in found:
                step = move(from_stage=stage, to_stage=pipeline.moved.get(stage), rows=int(n))
                if step.to_stage is None:
                    where = "pipeline:" if selector is None else f"pipelines: {pipeline.name}:"
                    step.refusal = (f"say where they go: under {where} add "
                                    f"moved: {{{stage}: <stage>}}")
                self.steps.append(step)
        # kt_reached numbers the stages in their order: a change of the list renumbers them
        live_columns = {c["name"] for c in self.catalog.get("columns", live)}
        recorded = list(dict.fromkeys(
            stage for stages in (previous.get("pipelines") or {}).values() for stage in stages))
        if REACHED_COLUMN in live_columns and recorded != list(entity.pipeline.all_stage_names):
            self.steps.append(s.RecomputeReached(table=entity.name, rows=self.rows(live)))

    def search(self, entity: EntitySpec, previous: dict[str, Any], kept: dict[str, str],
               rows: int) -> None:
        if not entity.search or not rows or SEARCH_COLUMN not in kept:
            if entity.search and rows and SEARCH_COLUMN not in kept:
                self.steps.append(s.RefreshSearch(table=entity.name, rows=rows))
            return
        renamed = any(kept.get(name, name) != name for name in entity.search)
        if previous and (list(previous.get("search") or ()) != list(entity.search) or renamed):
            self.steps.append(s.RefreshSearch(table=entity.name, rows=rows))

    # -- helpers ------------------------------------------------------------------------------
    def rows(self, table: str) -> int:
        return self.catalog.rows(table)

    def scalar(self, query: sa.Select[Any]) -> int:
        return int(self.conn.execute(query).scalar() or 0)


class _Catalog:
    """What the database holds, read once per plan: each kind of reflection (columns, keys,
    uniques, indexes) for every table in one call, and every table's row count in one
    statement. Asked table by table, a plan on PostgreSQL sent five catalog queries per
    table — a hundred round trips for a setup of twenty tables, on every `check`, `migrate`
    and start-up; SQLite's dialect still reads each table's PRAGMAs, as before."""

    def __init__(self, conn: sa.Connection, inspector: sa.Inspector, live: set[str]):
        self.conn, self.inspector, self.live = conn, inspector, sorted(live)
        self.reflected: dict[str, dict[str, list[Any]]] = {}
        self.counts: dict[str, int] | None = None

    def get(self, kind: str, table: str) -> list[Any]:
        """`Inspector.get_<kind>(table)`, from one `get_multi_<kind>` over every table."""
        found = self.reflected.get(kind)
        if found is None:
            multi = getattr(self.inspector, f"get_multi_{kind}")
            found = {name: list(value) for (_schema, name), value in
                     multi(filter_names=self.live).items()} if self.live else {}
            self.reflected[kind] = found
        if table not in found:  # not a table of the default schema: as the single call would
            return list(getattr(self.inspector, f"get_{kind}")(table))
        return found[table]

    def rows(self, table: str) -> int:
        if self.counts is None:
            counts = [sa.select(sa.func.count()).select_from(sa.table(name)).scalar_subquery()
                      for name in self.live]
            values = self.conn.execute(sa.select(*counts)).one() if counts else ()
            self.counts = {name: int(value or 0) for name, value in zip(self.live, values, strict=True)}
        if table not in self.counts:
            return int(self.conn.execute(
                sa.select(sa.func.count()).select_from(sa.table(table))).scalar() or 0)
        return self.counts[table]


def _retyped(recorded: dict[str, Any], spec: FieldSpec) -> bool:
    now = field_model(spec)
    return any(recorded.get(key) != now[key] for key in ("type", "column", "params"))


def _link_of(entity: EntitySpec | None, column: str) -> LinkSpec | None:
    if entity is None:
        return None
    for link in entity.links.values():
        if column in (link_column(link.name), poly_entity_column(link.name)) and not link.many:
            return link
    return None


def _on_delete(value: str | None) -> str:
    upper = value.upper() if value else None
    return SAME_ON_DELETE.get(upper, upper or "RESTRICT")


def _for_dialect(index: sa.Index, dialect: str) -> bool:
    condition = getattr(index, "_ddl_if", None)
    return condition is None or condition.dialect is None or condition.dialect == dialect


def count_rows(n: int) -> str:
    return s.count(n, "row")


def count_fields(entity: EntitySpec) -> str:
    return s.count(len(entity.fields), "field")
