"""Storage: the SQLAlchemy tables generated from a setup, and what each column means.

Per entity, one table:
- `id`, `created_at`, `updated_at`, `version`; `owner` when the entity says so; `stage`
  when it has a pipeline;
- one typed column per field (the field type chooses it);
- `<link>_id` per many-to-one link, a foreign key with the declared `on_delete`;
- `<link>_entity` + `<link>_id` per polymorphic link, indexed together, so "every task
  about sale 7" is one index lookup;
- `kt_search`: the folded text of the `search:` fields (see `fieldtypes.fold_text`);
- `kt_reached` on pipeline entities: the stages each record has entered, as bits (see
  `engine/progress.py`), behind the funnel's `reached`.
Per many-to-many link, a join table `<entity>__<link>(source_id, target_id)`.

Indexes are generated for what a setup declares, never speculatively — each with its
reason, which `kartoteka check --indexes` prints: every link column (its records' lists,
filters through it, on_delete), the owner column when a role reaches records by owner
(own, team), `stage` on pipeline entities (board columns, stage filters), unique fields,
and fields with `index: true` — the consultant's way of saying "we filter and sort by this".
On pipeline entities, `(stage, field)` for those, so a board column sorted by a field is one
index range, and `(owner, stage, field)` when roles see their own records; and
`(stage, kt_reached, summable fields...)` and, instead of the plain owner and link indexes,
`(owner or link, stage, kt_reached, summable fields...)` answer the board's totals and the
funnel's counts and sums from the index alone, whole or under an owner or link filter.
Fewer indexes are cheaper writes: a field nobody declared is not paid for on every
insert. PostgreSQL indexes sort NULLs first, matching SQLite and our sort order (NULL is
the smallest value).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa

from engine.errors import NotFound
from engine.setup.attributes import SystemFields
from engine.setup.names import db_object_name, did_you_mean, join_table_name, link_column, poly_entity_column
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, SetupSpec
from engine.storage.constraints import add_constraints
from engine.storage.duplicates import add_duplicate_columns, key_table, needs_key_table
from engine.storage.import_jobs import import_job_table
from engine.storage.outbox import outbox_tables
from engine.storage.progress import REACHED_COLUMN, reached_column, stage_bits
from engine.storage.sessions import session_tables
from engine.storage.stage_counts import stage_count_table
from engine.storage.users import user_tables
from engine.storage.views import view_table
from engine.storage.webhooks import webhook_table
from engine.types.columns import UTCDateTime, id_column_type, json_column
from engine.types.fields import FieldTypeRegistry, default_registry, fold_text

T = TypeVar("T")

SEARCH_COLUMN = "kt_search"
#: kt_stage_time rows per (entity, pipeline, stage): see Storage._journal_tables
STAGE_TIME_SHARDS = 8


@dataclass(frozen=True)
class Attribute:
    """A scalar a client can filter or sort by: a field, a system column, a link's id."""

    name: str
    column: sa.Column[Any]
    field: FieldSpec
    link: LinkSpec | None = None


@dataclass
class EntityTable:
    spec: EntitySpec
    table: sa.Table
    attributes: Mapping[str, Attribute]
    join_tables: Mapping[str, sa.Table] = field(default_factory=dict)
    search_column: sa.Column[Any] | None = None
    #: each stage name's bit in `kt_reached`, on pipeline entities
    stage_bits: Mapping[str, int] | None = None
    #: why each generated index exists, by index name (`kartoteka check --indexes`)
    index_reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


class Storage:
    """The generated schema of one setup. Owns its own MetaData (never a global one)."""

    def __init__(self, setup: SetupSpec, registry: FieldTypeRegistry | None = None):
        self.setup = setup
        self.registry = registry or default_registry()
        self._once: dict[str, Any] = {}
        self._once_lock = threading.Lock()
        self.metadata = sa.MetaData()
        self.setup_history = sa.Table(
            "kt_setup_history", self.metadata,
            sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
            sa.Column("applied_at", UTCDateTime(), nullable=False),
            sa.Column("setup_name", sa.String(200), nullable=False),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("summary", sa.Text(), nullable=False),
        )
        self._journal_tables()
        self.users, self.tokens = user_tables(self.metadata)
        self.sessions = session_tables(self.metadata)  # passwords, sessions, invitations
        self.events, self.automation_runs, self.notifications, self.fired = \
            outbox_tables(self.metadata)
        self.import_jobs = import_job_table(self.metadata)
        self.webhooks = webhook_table(self.metadata)
        self.views = view_table(self.metadata)  # the web app's saved views per user
        #: similar duplicate rules' blocking keys (engine/storage/duplicates.py), when any
        self.duplicate_keys = key_table(self.metadata) if needs_key_table(setup) else None
        self._system = SystemFields(self.registry)
        tables: dict[str, EntityTable] = {}
        for entity in setup.entities.values():
            tables[entity.name] = self._entity_table(entity)
        for entity in setup.entities.values():
            self._join_tables(tables, entity)
        self.entities: Mapping[str, EntityTable] = MappingProxyType(tables)

    def once(self, name: str, build: Callable[[], T]) -> T:
        """What follows from these tables alone (JSON Schemas, row shapes, routes), built
        at its first use and shared by every engine over them: never changed once built.
        The tests build thousands of engines over a few setups."""
        with self._once_lock:
            if name not in self._once:
                self._once[name] = build()
            found: T = self._once[name]
            return found

    def __getitem__(self, entity: str) -> EntityTable:
        table = self.entities.get(entity)
        if table is None:
            hint = did_you_mean(entity, self.entities)
            raise NotFound(f"no entity {entity!r} in the setup" + (f"; {hint}" if hint else ""))
        return table

    def _journal_tables(self) -> None:
        """What happened to records, for timelines and reports; written in the same
        transaction as the change it records. `record` is (entity, record_id)."""

        def record_columns() -> list[sa.Column[Any]]:
            return [
                sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
                sa.Column("entity", sa.String(64), nullable=False),
                sa.Column("record_id", sa.BigInteger(), nullable=False),
                sa.Column("at", UTCDateTime(), nullable=False),
                sa.Column("by", sa.BigInteger(), nullable=True),
            ]

        #: every stage a record entered: from (NULL on create), to, when, by whom, and the
        #: seconds it spent in the stage it left
        self.stage_history = sa.Table(
            "kt_stage_history", self.metadata, *record_columns(),
            sa.Column("pipeline", sa.String(64), nullable=False),
            sa.Column("from_stage", sa.String(64), nullable=True),
            sa.Column("to_stage", sa.String(64), nullable=False),
            sa.Column("seconds", sa.BigInteger(), nullable=True),
            sqlite_autoincrement=True,
        )
        #: who changed which fields of a record from what to what (create, update, delete)
        self.changes = sa.Table(
            "kt_change", self.metadata, *record_columns(),
            sa.Column("action", sa.String(16), nullable=False),
            sa.Column("changes", json_column(), nullable=True),
            sqlite_autoincrement=True,
        )
        #: comments and activities (call, e-mail, meeting) on a record's card
        self.activities = sa.Table(
            "kt_activity", self.metadata, *record_columns(),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("direction", sa.String(8), nullable=True),
            sa.Column("duration_seconds", sa.Integer(), nullable=True),
            sa.Column("subject", sa.String(300), nullable=True),
            sa.Column("text", sa.Text(), nullable=True),
            sa.Column("result", sa.Text(), nullable=True),
            sqlite_autoincrement=True,
        )
        for table in (self.stage_history, self.changes, self.activities):
            _add_index(table, "entity", "record_id", "at")
        # time in stage for the records a filtered funnel selects, from the index alone
        _add_index(self.stage_history, "entity", "record_id", "pipeline", "from_stage", "seconds")
        # an unfiltered funnel's medians: one ordered OFFSET per stage
        _add_index(self.stage_history, "entity", "pipeline", "from_stage", "seconds")
        #: time in stage kept as counters: per (entity, pipeline, stage left), the history
        #: rows with `seconds` and their sum, written with each history row (engine/journal.py);
        #: split in `shard`s (record_id % STAGE_TIME_SHARDS) so that concurrent moves out of
        #: one stage rarely wait for the same row lock on PostgreSQL
        self.stage_time = sa.Table(
            "kt_stage_time", self.metadata,
            sa.Column("entity", sa.String(64), primary_key=True),
            sa.Column("pipeline", sa.String(64), primary_key=True),
            sa.Column("stage", sa.String(64), primary_key=True),
            sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
            sa.Column("exits", sa.BigInteger(), nullable=False),
            sa.Column("total_seconds", sa.BigInteger(), nullable=False),
            # created on a database that already has history: counted from it at once
            info={"backfill": _rebuild_stage_time},
        )
        #: the board's counts and sums per stage, kept by triggers (engine/storage/stage_counts.py)
        self.stage_counts = stage_count_table(self.metadata)

    def _entity_table(self, entity: EntitySpec) -> EntityTable:
        name = entity.name
        columns: list[sa.Column[Any]] = [
            sa.Column("id", id_column_type(), primary_key=True, autoincrement=True),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
        ]
        # (columns, why), in the order they are made; see the module docstring for the rule
        indexed: list[tuple[str, str]] = []
        scoped_by = _owner_scoped_roles(self.setup, entity.name)
        if entity.owner:
            columns.append(sa.Column("owner", sa.BigInteger(), nullable=True))
            if scoped_by:
                indexed.append(("owner", _roles_words(scoped_by)
                                + " records by their owner (own or team)"))
        if entity.pipeline:
            columns.append(sa.Column("stage", sa.String(64), nullable=False))
        for spec in entity.fields.values():
            columns.append(sa.Column(spec.name, spec.type.column_type(spec),
                                     nullable=not spec.required))
            if spec.index and not spec.unique:
                indexed.append((spec.name, "declared index: true (filtered and sorted by)"))
        for link in entity.links.values():
            if link.many:
                continue
            id_column = link_column(link.name)
            if link.polymorphic:
                columns.append(sa.Column(poly_entity_column(link.name), sa.String(64), nullable=True))
                columns.append(sa.Column(id_column, sa.BigInteger(), nullable=True))
            else:
                ondelete = {"restrict": "RESTRICT", "cascade": "CASCADE",
                            "set_null": "SET NULL"}[link.on_delete]
                columns.append(sa.Column(
                    id_column, sa.BigInteger(),
                    sa.ForeignKey(f"{link.target}.id", ondelete=ondelete,
                                  name=db_object_name("fk", name, id_column)),
                    nullable=not link.required))
                indexed.append((id_column, f"link {link.name}: its records' lists, filters and "
                                           f"on_delete {link.on_delete}"))
        bits = None
        if entity.pipeline:
            bits = MappingProxyType(stage_bits(entity.pipeline))
            columns.append(reached_column())
        search_column = None
        if entity.search:
            search_column = sa.Column(SEARCH_COLUMN, sa.Text(), nullable=True)
            columns.append(search_column)

        # AUTOINCREMENT: SQLite would otherwise hand a deleted record's id to the next one,
        # and an old ETag or link would then name a different record
        table = sa.Table(name, self.metadata, *columns, sqlite_autoincrement=True)
        for field_name in (f.name for f in entity.fields.values() if f.unique):
            table.append_constraint(sa.UniqueConstraint(
                field_name, name=db_object_name("uq", name, field_name)))
        add_constraints(self, table, entity)  # unique sets, no_overlap (engine/storage/constraints.py)
        add_duplicate_columns(table, entity)  # duplicates: (engine/storage/duplicates.py)
        money = [f.name for f in entity.fields.values() if f.type.summable]
        by_stage = {"owner", *(link_column(link.name) for link in entity.links.values()
                               if not link.many and not link.polymorphic)}
        reasons: dict[str, str] = {}

        def add(why: str, *column_names: str) -> None:
            reasons[_add_index(table, *column_names)] = why

        for column_name, why in indexed:
            if entity.pipeline and column_name in by_stage:
                # the board's totals and the funnel under an owner or link filter, from the
                # index alone; its first column is the plain index it replaces; `id` after
                # `stage`: a board column's page under that filter (id order) is one range
                add(why + "; with the board's and funnel's counts and sums under it",
                    column_name, "stage", "id", REACHED_COLUMN, *money)
            else:
                add(why, column_name)
        if entity.pipeline:
            add("board columns and stage filters, in id order", "stage")
            add("the board's totals and the funnel's counts" + (" and sums" if money else "")
                + ", from the index alone", "stage", REACHED_COLUMN, *money)
            add("the board and the funnel over a period of creation (created_at from … to), "
                "from the index alone", "created_at", "stage", REACHED_COLUMN, *money)
            for spec in entity.fields.values():
                if spec.index and spec.type.sortable:
                    add(f"a stage's records sorted or filtered by {spec.name} (index: true)",
                        "stage", spec.name)
                    if entity.owner and scoped_by:
                        # a manager's scoped list (owner = me, by stage, sorted by a field)
                        # is then one index range too (bench/access.py: 0.21x → 1.15x)
                        add(f"the same under one owner ({', '.join(scoped_by)}: own or "
                            "team)", "owner", "stage", spec.name)
        for link in entity.links.values():
            if link.polymorphic:
                add(f"link {link.name}: the records about one record (timeline, filters)",
                    poly_entity_column(link.name), link_column(link.name))
        dated = {a.date_field: a.name for a in self.setup.automations
                 if a.entity == entity.name and a.date_field is not None}
        for field_name, automation in dated.items():
            if not (entity.fields[field_name].index or entity.fields[field_name].unique):
                add(f"automation {automation}: the records whose {field_name} comes due",
                    field_name)
        attributes = {
            api_name: Attribute(api_name, table.c[link_column(api_name) if link else api_name],
                                spec, link)
            for api_name, (spec, link) in self._system.attributes(entity).items()
        }
        return EntityTable(entity, table, MappingProxyType(attributes), {}, search_column, bits,
                           MappingProxyType(reasons))

    def _join_tables(self, tables: dict[str, EntityTable], entity: EntitySpec) -> None:
        joins: dict[str, sa.Table] = {}
        for link in entity.links.values():
            if not link.many:
                continue
            name = join_table_name(entity.name, link.name)
            target_ondelete = "RESTRICT" if link.on_delete == "restrict" else "CASCADE"
            table = sa.Table(
                name, self.metadata,
                sa.Column("source_id", sa.BigInteger(),
                          sa.ForeignKey(f"{entity.name}.id", ondelete="CASCADE",
                                        name=db_object_name("fk", name, "source_id")),
                          primary_key=True),
                sa.Column("target_id", sa.BigInteger(),
                          sa.ForeignKey(f"{link.target}.id", ondelete=target_ondelete,
                                        name=db_object_name("fk", name, "target_id")),
                          primary_key=True),
                # a link's through fields; nullable, so that adding one migrates the pairs
                # already linked (the records layer enforces `required` on writes)
                *(sa.Column(spec.name, spec.type.column_type(spec), nullable=True)
                  for spec in link.through.values()),
            )
            _add_index(table, "target_id")
            joins[link.name] = table
        tables[entity.name].join_tables = MappingProxyType(joins)


def _rebuild_stage_time(conn: sa.Connection, storage: Storage) -> None:
    from engine.storage.journal import rebuild_stage_time  # journal builds on storage

    rebuild_stage_time(conn, storage)


def _owner_scoped_roles(setup: SetupSpec, entity: str) -> list[str]:
    """The roles whose scope on `entity` compares records' owners (own, team)."""
    def by_owner(scope: Any) -> bool:
        return scope.kind in ("own", "team") or any(by_owner(part) for part in scope.any)

    return [name for name, role in setup.roles.items()
            if any(by_owner(role.grant(entity).scope(op))
                   for op in ("read", "update", "delete", "reassign"))]


def _roles_words(roles: list[str]) -> str:
    """`role manager reaches` / `roles manager and lawyer reach`."""
    if len(roles) == 1:
        return f"role {roles[0]} reaches"
    return f"roles {', '.join(roles[:-1])} and {roles[-1]} reach"


def _add_index(table: sa.Table, *column_names: str) -> str:
    name = db_object_name("ix", table.name, *column_names)
    columns = [table.c[c] for c in column_names]
    # SQLite's NULLs already sort first; PostgreSQL's must be told so
    sa.Index(name, *columns).ddl_if(dialect="sqlite")
    sa.Index(name, *(c.asc().nulls_first() for c in columns)).ddl_if(dialect="postgresql")
    return name


def search_text(spec: EntitySpec, values: Mapping[str, Any]) -> str | None:
    """The folded text `q=` searches: the entity's `search:` fields, one per line."""
    parts = [str(values[name]) for name in spec.search if values.get(name) not in (None, "")]
    return fold_text("\n".join(parts)) if parts else None


def search_texts(spec: EntitySpec, rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """`search_text` of each row, folded in one call: NUL, which no row's text holds here,
    between them. Folding is NFKC (NUL is a starter nothing composes with, so no form
    changes across it), case folding and a translation, both character by character: the
    fold of the joined texts is the join of their folds."""
    return search_texts_of(spec, {name: [values.get(name) for values in rows]
                                  for name in spec.search}, len(rows))


_TEXT_OR_NONE = frozenset({str, type(None)})


def search_texts_of(spec: EntitySpec, columns: Mapping[str, Sequence[Any]],
                    count: int) -> list[str | None]:
    """`search_texts` of `count` rows given column by column (a field not among the
    columns is empty in every row): each row's parts joined in C. A part is a text that
    is not empty: a column of other values is made texts first (None and "" stay empty;
    the text of any other value is never empty)."""
    parts: list[Sequence[Any]] = []
    for name in spec.search:
        column = columns.get(name)
        if column is None:
            continue
        parts.append(column if set(map(type, column)) <= _TEXT_OR_NONE else
                     [None if value is None or value == "" else str(value) for value in column])
    if not parts:
        return [None] * count
    texts = [text or None for text in map("\n".join, map(
        partial(filter, None), zip(*parts, strict=True)))]
    present = [text for text in texts if text is not None]
    joined = "\x00".join(present)
    if joined.count("\x00") != len(present) - 1 and present:  # a text holds a NUL itself
        return [None if text is None else fold_text(text) for text in texts]
    folded = iter(fold_text(joined).split("\x00"))
    return [None if text is None else next(folded) for text in texts]
