"""The steps of a migration: each one says in plain words what it does and what it costs,
and applies itself through Alembic's operations (batch mode, copy and move, on SQLite).

A step is **safe**, **loses data** (applied only with `--allow-data-loss`, after a
backup), or **refused** (no flag makes it right: duplicates under a new unique rule,
empty rows under a new required rule without a default, a rename onto a taken name).
Steps run in `phase` order inside one transaction: create, rename, drop indexes, change
columns, move records, drop columns and recompute the stages reached, create indexes, drop
tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from engine.setup.spec import FieldSpec, PipelineSpec
from engine.storage.migrations.convert import Converter
from engine.storage.tables import Storage, search_text
from engine.types.fields import ValueProblem

if TYPE_CHECKING:  # imported by the runner only when there are steps to apply
    from alembic.operations import BatchOperations, Operations

#: one row of a problem report: the record id and what is wrong with its value
Example = tuple[int, str]
EXAMPLES = 5


@dataclass
class Context:
    """What a step needs while it applies: the connection, Alembic's operations, the storage."""

    conn: sa.Connection
    op: Operations
    storage: Storage
    dialect: str
    now: dt.datetime
    #: hears a long step's progress (a formula recomputed in batches), when someone listens
    progress: Callable[[str], None] | None = None

    @contextmanager
    def batch(self, table: str, *, recreate: str = "auto") -> Iterator[BatchOperations]:
        """Alembic batch operations on `table`. On SQLite a change other than adding a plain
        column rebuilds the table (copy and move); its AUTOINCREMENT counter is kept, so a
        deleted record's id is never handed out again."""
        entity = table in self.storage.entities
        kwargs = {"sqlite_autoincrement": True} if entity else {}
        counter = self._sequence(table) if self.dialect == "sqlite" and entity else None
        with self.op.batch_alter_table(table, recreate=recreate,  # type: ignore[arg-type]
                                       table_kwargs=kwargs) as batch:
            yield batch
        if counter is not None:
            self.conn.execute(sa.text("UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = :t"),
                              {"seq": counter, "t": table})

    def _sequence(self, table: str) -> int | None:
        return self.conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"),
                                 {"t": table}).scalar()


@dataclass(kw_only=True)
class Step:
    """One change. `refusal` says why it cannot be applied at all; `lost` counts the values
    or rows it would lose (any loss needs `--allow-data-loss`)."""

    table: str
    refusal: str = ""
    lost: int = 0
    phase: ClassVar[int] = 3
    #: loses data whatever the counts say (removing a field, a link, an entity)
    destructive: ClassVar[bool] = False

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError

    @property
    def loses_data(self) -> bool:
        return self.destructive or self.lost > 0

    @property
    def kind(self) -> str:
        return "refused" if self.refusal else "loses data" if self.loses_data else "safe"

    def __str__(self) -> str:
        return self.describe()

    def as_json(self) -> dict[str, Any]:
        return {"step": type(self).__name__, "table": self.table, "kind": self.kind,
                "text": self.describe(), "refusal": self.refusal or None, "lost": self.lost}


def count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def examples(items: Sequence[Example], total: int) -> str:
    shown = "; ".join(f"#{record_id} {text}" for record_id, text in items[:EXAMPLES])
    more = total - min(len(items), EXAMPLES)
    return shown + (f"; and {count(more, 'more')}" if more > 0 else "")


def noted(what: str, note: str) -> str:
    """`remove field x (text)` + `3 values lost` → `remove field x (text; 3 values lost)`."""
    return f"{what[:-1]}; {note})" if what.endswith(")") else f"{what} ({note})"


def lightweight(name: str, *columns: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table(name, sa.column("id", sa.BigInteger()), *columns)


def detached(column: sa.Column[Any], *, nullable: bool) -> sa.Column[Any]:
    """A copy of a generated column, not bound to its table, for Alembic to add."""
    keys = [sa.ForeignKey(fk.target_fullname, ondelete=fk.ondelete, name=fk.name)
            for fk in column.foreign_keys]
    return sa.Column(column.name, column.type, *keys, nullable=nullable)


# -- tables ----------------------------------------------------------------------------------

@dataclass(kw_only=True)
class CreateTable(Step):
    what: str
    phase: ClassVar[int] = 0

    def describe(self) -> str:
        return self.what

    def apply(self, ctx: Context) -> None:
        # the generated Table carries its dialect-specific indexes (`ddl_if`), which
        # SQLAlchemy's own CREATE honours; Alembic's create_table would copy them blindly
        table = ctx.storage.metadata.tables[self.table]
        table.create(ctx.conn)
        # a table kept from others (kt_stage_time, from the stage history) is filled now
        backfill: Callable[..., None] | None = table.info.get("backfill")
        if backfill is not None:
            backfill(ctx.conn, ctx.storage)


@dataclass(kw_only=True)
class RenameEntity(Step):
    old: str
    rows: int
    join_tables: list[tuple[str, str]] = field(default_factory=list)
    #: (table, column) of polymorphic links whose values name entities
    entity_columns: list[tuple[str, str]] = field(default_factory=list)
    phase: ClassVar[int] = 1

    def describe(self) -> str:
        return (f"rename entity {self.old} to {self.table} ({count(self.rows, 'record')} keep "
                "their data; history, timeline and links follow)")

    def apply(self, ctx: Context) -> None:
        ctx.op.rename_table(self.old, self.table)
        for old, new in self.join_tables:
            ctx.op.rename_table(old, new)
        storage = ctx.storage
        keys = [storage.duplicate_keys] if storage.duplicate_keys is not None else []
        for table in (storage.stage_history, storage.changes, storage.activities,
                      storage.stage_time, *keys):
            if sa.inspect(ctx.conn).has_table(table.name):
                ctx.conn.execute(sa.update(table).where(table.c.entity == self.old)
                                 .values(entity=self.table))
        for table_name, column_name in self.entity_columns:
            column = sa.column(column_name, sa.String(64))
            ctx.conn.execute(sa.update(lightweight(table_name, column))
                             .where(column == self.old).values({column_name: self.table}))


@dataclass(kw_only=True)
class DropTable(Step):
    what: str
    rows: int
    phase: ClassVar[int] = 7
    destructive: ClassVar[bool] = True

    def describe(self) -> str:
        return noted(self.what, f"{count(self.rows, 'row')} would be lost")

    def apply(self, ctx: Context) -> None:
        ctx.op.drop_table(self.table)


# -- columns ---------------------------------------------------------------------------------

@dataclass(kw_only=True)
class AddColumn(Step):
    """A new column: a field, a link, the stage, the owner, the search text, or a system
    column. Existing rows get `fill`, or the column's `info["backfill"]` hook fills them."""

    what: str
    detail: str
    column: sa.Column[Any]
    rows: int
    fill: Any = None
    fill_text: str = ""

    def describe(self) -> str:
        if not self.rows:
            effect = "0 rows affected"
        elif self.fill is not None:
            verb = "gets" if self.rows == 1 else "get"
            effect = f"{count(self.rows, 'existing row')} {verb} {self.fill_text or repr(self.fill)}"
        elif self.column.info.get("backfill"):
            effect = f"{count(self.rows, 'existing row')} " + \
                self.column.info.get("filled", "filled from their history")
        else:
            effect = f"{count(self.rows, 'existing row')} left empty"
        return f"{self.what} ({self.detail}, {effect})" if self.detail else f"{self.what} ({effect})"

    def apply(self, ctx: Context) -> None:
        column = self.column
        keyed = bool(column.foreign_keys) and ctx.dialect == "sqlite"
        with ctx.batch(self.table, recreate="always" if keyed else "auto") as batch:
            batch.add_column(detached(column, nullable=True))
        if self.fill is not None and self.rows:
            target = lightweight(self.table, sa.column(column.name, column.type))
            ctx.conn.execute(sa.update(target).values({column.name: self.fill}))
        self.after_fill(ctx)
        backfill: Callable[..., None] | None = column.info.get("backfill")
        if backfill is not None:
            backfill(ctx.conn, ctx.storage, ctx.storage.entities[self.table])
        if not column.nullable:
            with ctx.batch(self.table) as batch:
                batch.alter_column(column.name, nullable=False, existing_type=column.type)

    def after_fill(self, ctx: Context) -> None:
        """What else a new column's values need (the stage's history)."""


@dataclass(kw_only=True)
class AddStage(AddColumn):
    """An entity gains a pipeline: every record starts in the first stage, and its stage
    history says so, so the funnel counts it."""

    pipeline: str = "default"

    def after_fill(self, ctx: Context) -> None:
        if not self.rows:
            return
        history = ctx.storage.stage_history
        ids: list[int] = list(ctx.conn.execute(
            sa.select(sa.column("id")).select_from(sa.table(self.table)).order_by(sa.column("id")))
            .scalars())
        ctx.conn.execute(sa.insert(history), [
            {"entity": self.table, "record_id": record_id, "at": ctx.now, "by": None,
             "pipeline": self.pipeline, "from_stage": None, "to_stage": self.fill, "seconds": None}
            for record_id in ids])


@dataclass(kw_only=True)
class DropColumn(Step):
    what: str
    columns: tuple[str, ...]
    values: int
    phase: ClassVar[int] = 5
    destructive: ClassVar[bool] = True

    def describe(self) -> str:
        return noted(self.what, f"{count(self.values, 'value')} would be lost")

    def apply(self, ctx: Context) -> None:
        with ctx.batch(self.table) as batch:
            for name in self.columns:
                batch.drop_column(name)


@dataclass(kw_only=True)
class RenameColumn(Step):
    what: str
    old: str
    new: str
    existing_type: sa.types.TypeEngine[Any]
    phase: ClassVar[int] = 2

    def describe(self) -> str:
        return f"{self.what} (values kept)"

    def apply(self, ctx: Context) -> None:
        with ctx.batch(self.table) as batch:
            batch.alter_column(self.old, new_column_name=self.new, existing_type=self.existing_type)


@dataclass(kw_only=True)
class Retype(Step):
    """A field changes type: every value is converted (see `convert.py`); values that do not
    convert become empty (or the default), which loses them."""

    entity: str
    old: FieldSpec
    new: FieldSpec
    rows: int
    failures: list[Example]
    nullable_now: bool

    def describe(self) -> str:
        old, new = self.old.type.name, self.new.type.name
        if old == new:
            old, new = _params_text(self.old), _params_text(self.new)
        text = (f"change type of {self.entity}.{self.new.name} from {old} to {new} "
                f"({count(self.rows, 'value')} converted")
        if self.lost:
            into = f"the default {self.new.default!r}" if self.new.has_default else "empty"
            text += (f"; {count(self.lost, 'value')} would not convert and would become {into}: "
                     + examples(self.failures, self.lost))
        return text + ")"

    def apply(self, ctx: Context) -> None:
        name = self.new.name
        old_type, new_type = self.old.type.column_type(self.old), self.new.type.column_type(self.new)
        source = lightweight(self.table, sa.column(name, old_type))
        values = list(ctx.conn.execute(sa.select(source.c.id, source.c[name])
                                       .where(source.c[name].is_not(None))))
        convert = Converter(self.old, self.new)
        updates = []
        for record_id, value in values:
            try:
                converted = convert(value)
            except ValueProblem:
                converted = self.new.default
            updates.append({"kt_id": record_id, "kt_value": converted})
        if not self.nullable_now:
            with ctx.batch(self.table) as batch:
                batch.alter_column(name, nullable=True, existing_type=old_type)
        with ctx.batch(self.table) as batch:
            batch.alter_column(name, type_=new_type, existing_type=old_type,
                               postgresql_using="NULL")
        target = lightweight(self.table, sa.column(name, new_type))
        if updates:
            ctx.conn.execute(sa.update(target).where(target.c.id == sa.bindparam("kt_id"))
                             .values({name: sa.bindparam("kt_value", type_=new_type)}), updates)
        if self.new.required:
            if self.new.has_default:
                ctx.conn.execute(sa.update(target).where(target.c[name].is_(None))
                                 .values({name: self.new.default}))
            with ctx.batch(self.table) as batch:
                batch.alter_column(name, nullable=False, existing_type=new_type)


def _params_text(spec: FieldSpec) -> str:
    params = ", ".join(f"{k} {v}" for k, v in spec.params.items())
    if spec.max_length is not None:
        params = ", ".join(filter(None, [params, f"max_length {spec.max_length}"]))
    return f"{spec.type.name} ({params})" if params else spec.type.name


@dataclass(kw_only=True)
class SetRequired(Step):
    what: str
    column: str
    column_type: sa.types.TypeEngine[Any]
    empty: int
    empty_ids: list[int]
    default: Any = None
    default_text: str = ""

    def describe(self) -> str:
        if not self.empty:
            return f"make {self.what} required (no row is empty)"
        ids = ", ".join(f"#{i}" for i in self.empty_ids[:EXAMPLES])
        if self.default is not None:
            return (f"make {self.what} required ({count(self.empty, 'row')} empty, e.g. {ids}; "
                    f"the default {self.default_text} fills them)")
        return f"make {self.what} required ({count(self.empty, 'row')} empty, e.g. {ids})"

    def apply(self, ctx: Context) -> None:
        if self.empty and self.default is not None:
            target = lightweight(self.table, sa.column(self.column, self.column_type))
            ctx.conn.execute(sa.update(target).where(target.c[self.column].is_(None))
                             .values({self.column: self.default}))
        with ctx.batch(self.table) as batch:
            batch.alter_column(self.column, nullable=False, existing_type=self.column_type)


@dataclass(kw_only=True)
class SetOptional(Step):
    what: str
    column: str
    column_type: sa.types.TypeEngine[Any]

    def describe(self) -> str:
        return f"make {self.what} optional (values kept)"

    def apply(self, ctx: Context) -> None:
        with ctx.batch(self.table) as batch:
            batch.alter_column(self.column, nullable=True, existing_type=self.column_type)


@dataclass(kw_only=True)
class AddUnique(Step):
    what: str
    column: str
    name: str
    duplicates: list[tuple[str, int, list[int]]]
    #: the constraint's columns, when more than `column` (a unique set: migrations/constraints.py)
    columns: tuple[str, ...] = ()
    phase: ClassVar[int] = 6

    def describe(self) -> str:
        if not self.duplicates:
            return f"make {self.what} unique (no value appears twice)"
        listed = "; ".join(f"{value} ×{n} ({', '.join(f'#{i}' for i in ids)})"
                           for value, n, ids in self.duplicates[:EXAMPLES])
        verb = "appears" if len(self.duplicates) == 1 else "appear"
        return (f"make {self.what} unique ({count(len(self.duplicates), 'value')} {verb} more "
                f"than once: {listed})")

    def apply(self, ctx: Context) -> None:
        with ctx.batch(self.table) as batch:
            batch.create_unique_constraint(self.name, list(self.columns or (self.column,)))


@dataclass(kw_only=True)
class DropUnique(Step):
    what: str
    name: str
    phase: ClassVar[int] = 2

    def describe(self) -> str:
        return f"let {self.what} repeat (drop its unique rule; values kept)"

    def apply(self, ctx: Context) -> None:
        with ctx.batch(self.table) as batch:
            batch.drop_constraint(self.name, type_="unique")


@dataclass(kw_only=True)
class Relink(Step):
    """A link's target or its `on_delete` changes: the foreign key is replaced. Ids that
    name no record of the new target are emptied (a many-to-many pair is removed)."""

    what: str
    column: str
    old_key: str | None
    new_key: sa.ForeignKey
    rows: int
    join_table: bool = False

    def describe(self) -> str:
        if not self.lost:
            return f"{self.what} (all {count(self.rows, 'value')} still valid)"
        unit = "link" if self.join_table else "value"
        fate = "would be removed" if self.join_table else "would be emptied"
        return (f"{self.what} ({count(self.lost, unit)} of {self.rows:,} name no "
                f"{self.new_key.column.table.name} and {fate})")

    def apply(self, ctx: Context) -> None:
        target = self.new_key.column.table.name
        column = sa.column(self.column, sa.BigInteger())
        dangling = sa.and_(column.is_not(None), column.not_in(
            sa.select(sa.column("id")).select_from(sa.table(target)).scalar_subquery()))
        table = lightweight(self.table, column)
        if self.join_table:
            ctx.conn.execute(sa.delete(table).where(dangling))
        else:
            ctx.conn.execute(sa.update(table).where(dangling).values({self.column: None}))
        with ctx.batch(self.table, recreate="always" if ctx.dialect == "sqlite" else "auto") as batch:
            if self.old_key:
                batch.drop_constraint(self.old_key, type_="foreignkey")
            batch.create_foreign_key(str(self.new_key.name), target, [self.column], ["id"],
                                     ondelete=self.new_key.ondelete)


# -- indexes ---------------------------------------------------------------------------------

@dataclass(kw_only=True)
class CreateIndex(Step):
    index: sa.Index
    phase: ClassVar[int] = 6

    def describe(self) -> str:
        columns = ", ".join(str(getattr(e, "name", e)) for e in _columns(self.index))
        return f"add index {self.index.name} on {self.table} ({columns})"

    def apply(self, ctx: Context) -> None:
        self.index.create(ctx.conn)


def _columns(index: sa.Index) -> Iterator[Any]:
    for expression in index.expressions:
        while hasattr(expression, "element"):  # column.asc().nulls_first() on PostgreSQL
            expression = expression.element
        yield expression


@dataclass(kw_only=True)
class DropIndex(Step):
    name: str
    phase: ClassVar[int] = 2

    def describe(self) -> str:
        return f"drop index {self.name} on {self.table} (no longer needed)"

    def apply(self, ctx: Context) -> None:
        ctx.op.drop_index(self.name, table_name=self.table)


# -- records ---------------------------------------------------------------------------------

@dataclass(kw_only=True)
class MoveStage(Step):
    """Records in a stage the pipeline no longer has move to the stage `moved:` names; the
    stage history records each move (by nobody: the migration), so funnel and timeline
    stay true."""

    pipeline: PipelineSpec
    selector: str | None  # the choice field that picks a record's pipeline, if several
    pipeline_names: tuple[str, ...]
    first_pipeline: bool  # records whose choice names no pipeline follow the first one
    from_stage: str
    to_stage: str | None
    rows: int
    phase: ClassVar[int] = 4

    def chosen(self, table: sa.TableClause) -> sa.ColumnElement[bool]:
        """The records that follow this step's pipeline."""
        if self.selector is None:
            return sa.true()
        chooser = table.c[self.selector]
        picked = chooser == self.pipeline.name
        if self.first_pipeline:
            picked = sa.or_(picked, chooser.is_(None), chooser.not_in(list(self.pipeline_names)))
        return picked

    def where(self, table: sa.TableClause) -> sa.ColumnElement[bool]:
        return sa.and_(table.c.stage == self.from_stage, self.chosen(table))

    def describe(self) -> str:
        where = "" if self.pipeline.name == "default" else f" (pipeline {self.pipeline.name})"
        if self.to_stage is None:
            return (f"stage {self.from_stage!r} of {self.table}{where} is gone and "
                    f"{count(self.rows, 'record')} are in it")
        return (f"move {count(self.rows, f'{self.table} record')} from removed stage "
                f"{self.from_stage!r} to {self.to_stage!r}{where}")

    def apply(self, ctx: Context) -> None:
        columns: list[sa.ColumnClause[Any]] = [
            sa.column("stage", sa.String(64)), sa.column("version", sa.Integer()),
                   sa.column("updated_at", ctx.storage.stage_history.c.at.type)]
        if self.selector:
            columns.append(sa.column(self.selector, sa.String()))
        table = lightweight(self.table, *columns)
        ids = list(ctx.conn.execute(sa.select(table.c.id).where(self.where(table))
                                    .order_by(table.c.id)).scalars())
        if not ids:
            return
        history = ctx.storage.stage_history
        entered = {row[0]: row[1] for row in ctx.conn.execute(
            sa.select(history.c.record_id, sa.func.max(history.c.at))
            .where(history.c.entity == self.table, history.c.record_id.in_(ids))
            .group_by(history.c.record_id))}
        ctx.conn.execute(sa.update(table).where(table.c.id.in_(ids)).values(
            stage=self.to_stage, version=table.c.version + 1, updated_at=ctx.now))
        ctx.conn.execute(sa.insert(history), [
            {"entity": self.table, "record_id": record_id, "at": ctx.now, "by": None,
             "pipeline": self.pipeline.name, "from_stage": self.from_stage,
             "to_stage": self.to_stage, "seconds": _seconds(entered.get(record_id), ctx.now)}
            for record_id in ids])


def _seconds(start: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if start is None else max(0, int((now - start).total_seconds()))


@dataclass(kw_only=True)
class RecomputeReached(Step):
    """The stages of a pipeline changed (added, removed, renamed, reordered): which stages
    each record has entered is read again from the stage history, under the new numbering
    (engine/progress.py). Runs after the stage moves, so it counts them."""

    rows: int
    phase: ClassVar[int] = 5

    def describe(self) -> str:
        return (f"recompute the stages each {self.table} record reached and the time in "
                f"each stage ({count(self.rows, 'record')}; the stage list changed)")

    def apply(self, ctx: Context) -> None:
        from engine.storage.journal import rebuild_stage_time
        from engine.storage.progress import backfill_reached

        backfill_reached(ctx.conn, ctx.storage, ctx.storage.entities[self.table])
        # stage moves of this migration wrote history rows: the counters follow them
        rebuild_stage_time(ctx.conn, ctx.storage)


@dataclass(kw_only=True)
class RefreshSearch(Step):
    """The `search:` list changed: each record's folded search text is computed again."""

    rows: int
    phase: ClassVar[int] = 4

    def describe(self) -> str:
        return f"recompute the search text of {self.table} ({count(self.rows, 'record')})"

    def apply(self, ctx: Context) -> None:
        entity = ctx.storage.entities[self.table]
        table = entity.table
        names = list(entity.spec.search)
        rows = ctx.conn.execute(sa.select(table.c.id, *(table.c[n] for n in names))).all()
        updates = [{"kt_id": row[0], "kt_text": search_text(entity.spec, dict(zip(names, row[1:],
                                                                                   strict=True)))}
                   for row in rows]
        if updates:
            ctx.conn.execute(sa.update(table).where(table.c.id == sa.bindparam("kt_id"))
                             .values(kt_search=sa.bindparam("kt_text")), updates)


@dataclass(kw_only=True)
class Refused(Step):
    """A change that cannot be made as the setup says (a rename onto a taken name)."""

    what: str

    def describe(self) -> str:
        return self.what

    def apply(self, ctx: Context) -> None:  # pragma: no cover - refused plans never apply
        raise AssertionError(self.refusal)
