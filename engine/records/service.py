"""Records: create, read, update, delete, list, follow links — the engine's write and read
paths. Every write runs in one transaction: validated first, then checked against the
database (links exist, versions match, unique values free), and either fully applied or
not at all. No HTTP here; `api/` translates these calls.

Why one module of this size: the read path (render, include) and the write path share
the row shapes of each entity, and splitting them would spread that shape over files.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from engine.access.acting import Acting
from engine.access.scopes import Access, Rights
from engine.errors import (
    Conflict,
    ErrorDetail,
    Forbidden,
    MalformedRequest,
    NotFound,
    StaleVersion,
    ValidationFailed,
)
from engine.records import through
from engine.records.constraints import Constraints
from engine.records.defaults import fill_dynamic_defaults
from engine.records.duplicates import Duplicates
from engine.records.formulas import Formulas
from engine.records.query import ListQuery, QueryParser, after_condition, encode_cursor, order_by
from engine.records.rollups import Rollups
from engine.records.rules import Rules
from engine.records.schemas import EntitySchemas, pair_problems, schema_problems
from engine.setup.filters import LIST_PARAMS, PAIR_KEY, FilterGrammar, FilterRefused
from engine.setup.names import did_you_mean, link_column, poly_entity_column
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec
from engine.storage import progress
from engine.storage.database import UNSCOPED, Database
from engine.storage.filters import pair_clauses
from engine.storage.journal import Journal, diff
from engine.storage.tables import SEARCH_COLUMN, EntityTable, Storage, search_text
from engine.types.columns import utc_text
from engine.types.fields import ValueProblem
from engine.types.moments import Clock, system_clock

MAX_ID = 2**63 - 1
#: the parameters naming the row `_Shape.update` changes (kt_: never a field's name)
WHERE_ID = "kt_where_id"
WHERE_VERSION = "kt_where_version"
Record = dict[str, Any]
#: a database row or a dict of column values, by column name
Row = Mapping[Any, Any]


#: the key of a pair's values on each record of a linked list (GET /api/{e}/{id}/{link})


@dataclass(frozen=True)
class Page:
    items: list[Record]
    total: int | None
    next: str | None

    def as_json(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "next": self.next}


class _Shape:
    """How one entity's rows become JSON records: which column goes where, rendered how."""

    def __init__(self, table: EntityTable):
        self.table = table
        spec = table.spec
        # kt_ columns (search text, stage bits) are the server's own, never rendered
        self.columns = [c for c in table.table.columns if not c.name.startswith("kt_")]
        steps: list[tuple[str, str, Callable[[Any], Any] | None]] = []
        for column in self.columns:
            name = str(column.name)  # a plain str: SQLAlchemy's quoted_name is a subclass
            field = spec.fields.get(name)
            if field is not None:
                render = None if field.type.renders_as_is else _bind_render(field)
                steps.append((name, name, render))
            elif name in ("created_at", "updated_at"):
                steps.append((name, name, utc_text))
            elif name in ("id", "version", "owner", "stage"):
                steps.append((name, name, None))
        self.poly = [(l.name, poly_entity_column(l.name), link_column(l.name))
                     for l in spec.links.values() if l.polymorphic]
        self.single = [(l.name, link_column(l.name)) for l in spec.links.values()
                       if not l.many and not l.polymorphic]
        self.many = [l.name for l in spec.links.values() if l.many]
        self.steps = steps
        by_id = table.table.c.id == sa.bindparam("record_id")
        #: built once: statement construction costs more than the query on a hot path
        self.select_by_id = sa.select(*self.columns).where(by_id)
        self.lock_by_id = sa.select(table.table).where(by_id).with_for_update()
        # the writes' statements, built once too: the values are execute parameters, so
        # SQLAlchemy compiles each shape of them once (building `.values(...)` per call,
        # coercing and cache-keying every value, was a third of a create)
        self._insert = sa.insert(table.table).returning(table.table.c.id)
        self._update = sa.update(table.table).where(
            table.table.c.id == sa.bindparam(WHERE_ID),
            table.table.c.version == sa.bindparam(WHERE_VERSION))
        #: (link index, source id, target id) of every many-to-many link of records `ids`
        self.many_links: sa.Select[Any] | sa.CompoundSelect[Any] | None = None
        if self.many:
            ids: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
            parts = [sa.select(sa.literal(index, sa.Integer()).label("link"),
                               joins.c.source_id, joins.c.target_id)
                     .where(joins.c.source_id.in_(ids))
                     for index, joins in enumerate(table.join_tables[n] for n in self.many)]
            self.many_links = parts[0] if len(parts) == 1 else sa.union_all(*parts)

    def insert(self, values: Mapping[str, Any]) -> tuple[sa.Insert, Mapping[str, Any]]:
        """The INSERT … RETURNING id of a new row, and its execute parameters."""
        if any(isinstance(v, sa.ClauseElement) for v in values.values()):
            return self._insert.values(dict(values)), {}  # SQL computes a value
        return self._insert, values

    def update(self, changes: Mapping[str, Any], record_id: int,
               version: int) -> tuple[sa.Update, dict[str, Any]]:
        """The UPDATE of `changes` to one record still at `version`, and its execute
        parameters (a row changed since matches nothing)."""
        where = {WHERE_ID: record_id, WHERE_VERSION: version}
        if any(isinstance(v, sa.ClauseElement) for v in changes.values()):
            return self._update.values(dict(changes)), where  # SQL computes a value
        return self._update, {**changes, **where}

    def render(self, row: Row) -> Record:
        record: Record = {}
        for key, column, render in self.steps:
            value = row[column]
            record[key] = value if render is None or value is None else render(value)
        for name, column in self.single:
            record[name] = row[column]
        for name, entity_column, id_column in self.poly:
            entity = row[entity_column]
            record[name] = None if entity is None else {"entity": entity, "id": row[id_column]}
        for name in self.many:
            record[name] = []
        return record


def _bind_render(field: FieldSpec) -> Callable[[Any], Any]:
    return lambda value: field.type.render(field, value)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _shapes_of(storage: Storage) -> dict[str, _Shape]:
    """Each entity's shape, built once per storage (their statements follow from its
    tables alone; building them was a fifth of an engine's start-up)."""
    return dict(storage.once("shapes", lambda: {
        name: _Shape(table) for name, table in storage.entities.items()}))


class Records:
    """Reads and writes the records of every entity of one storage."""

    def __init__(self, storage: Storage, database: Database,
                 schemas: Mapping[str, EntitySchemas], acting: Acting,
                 clock: Clock = system_clock):
        self.storage = storage
        self.db = database
        self.schemas = schemas
        #: what relative dates and dynamic defaults (`today`, `now-2h`) are resolved against
        self.clock = clock
        grammar = FilterGrammar(storage.setup, storage.registry, clock)
        self.access = Access(storage, grammar, database.dialect, acting)
        #: parses the acting user's queries: their read scope and hidden fields applied
        self.parser = QueryParser(storage, grammar, database.dialect, self.access)
        self.journal = Journal(storage)
        self.formulas = Formulas(storage)
        self.rules = Rules(storage, database.dialect, acting)
        self.rollups = Rollups(storage, database.dialect, self.formulas, self.rules)
        self.shapes = _shapes_of(storage)
        self.constraints = Constraints(storage, self.access, database.dialect)  # unique sets, no_overlap
        self._unique_fields = {
            constraint.name: (table.name, next(iter(constraint.columns)).name)
            for table in storage.entities.values()
            for constraint in table.table.constraints
            if isinstance(constraint, sa.UniqueConstraint) and constraint.name
        }
        self.duplicates = Duplicates(self)  # duplicates: (engine/records/duplicates.py)

    # -- reading -----------------------------------------------------------------------------
    def get(self, entity: str, record_id: int, include: str | None = None) -> Record:
        """One record; `include` is the comma-separated links to embed."""
        table = self.storage[entity]
        links = self.parser.include(entity, include)
        statement = self.access.scoped(self.shapes[entity].select_by_id, entity, "read")
        with self.db.read() as conn:
            rows = conn.execute(statement, {"record_id": checked_id(record_id, entity)}).all()
            records = self.render(conn, table, [row._mapping for row in rows])
            if not records:
                raise NotFound(f"no {entity} with id {record_id}")
            self._include(conn, table, records, links)
        return records[0]

    def list_page(self, entity: str, params: Sequence[tuple[str, str]],
             extra: ColumnElement[bool] | None = None) -> Page:
        query = self.parser.parse(entity, params)
        with self.db.read() as conn:
            return self.page(conn, query, extra)

    def linked(self, entity: str, record_id: int, name: str,
               params: Sequence[tuple[str, str]]) -> Page:
        """Records at the other end of link `name` (declared here, or a way back)."""
        table = self.storage[entity]
        record_id = checked_id(record_id, entity)
        with self.db.read() as conn:
            row = conn.execute(self.access.scoped(
                sa.select(table.table).where(table.table.c.id == record_id), entity, "read")
            ).first()
            if row is None:
                raise NotFound(f"no {entity} with id {record_id}")
            # `$link.<field>` filters the pairs themselves (a link that carries data)
            pairs = self._pair_filters(table, name, params)
            params = [(k, v) for k, v in params if not k.startswith(PAIR_KEY + ".")]
            target, condition = self._linked_condition(table, row._mapping, name, pairs)
            if target is None:
                # an empty link to several entities: no entity to filter, so only the
                # controls are valid — a filter or a typo is refused as on any list
                refused = [ErrorDetail(key, "is not a parameter here: the link is empty, so "
                                            "there is nothing to filter")
                           for key, _ in params if key not in LIST_PARAMS]
                if refused:
                    raise MalformedRequest("the list parameters are not valid", refused,
                                           code="invalid_query")
                return Page([], 0, None)
            query = self.parser.parse(target, params)
            page = self.page(conn, query, condition)
            self._add_pair_values(conn, table, record_id, name, page.items)
            return page

    def _add_pair_values(self, conn: sa.Connection, table: EntityTable, record_id: int,
                         name: str, items: list[Record]) -> None:
        """Each record listed through a link that carries data gets its pair's values
        under `$link` (never a member's name: those are identifiers)."""
        link = table.spec.links.get(name)
        if link is not None:
            if link.through:
                pairs = through.read(conn, table.join_tables[name], link, [record_id])
                for item in items:
                    item[PAIR_KEY] = through.render_values(
                        link, pairs.get(record_id, {}).get(item["id"], {}))
            return
        reverse = self.storage.setup.reverse_links[table.name][name]
        if reverse.link.through:
            joins = self.storage[reverse.entity].join_tables[reverse.link.name]
            found = through.read(conn, joins, reverse.link, [item["id"] for item in items])
            for item in items:
                item[PAIR_KEY] = through.render_values(
                    reverse.link, found.get(item["id"], {}).get(record_id, {}))

    def _pair_filters(self, table: EntityTable, name: str,
                      params: Sequence[tuple[str, str]]) -> list[ColumnElement[bool]]:
        """`$link.tooth[gte]=12` on a linked list: clauses over the link's join table."""
        conditions, problems = [], []
        for key, text in params:
            if not key.startswith(PAIR_KEY + "."):
                continue
            try:
                conditions.append(self.parser.grammar.parse(table.name, f"{name}.{key}", text))
            except FilterRefused as refused:
                problems.append(ErrorDetail(key, str(refused)))
        if problems:
            raise MalformedRequest("the list parameters are not valid", problems,
                                   code="invalid_query")
        if not conditions:
            return []
        return pair_clauses(self.storage, table, name, conditions, self.db.dialect)

    def _linked_condition(self, table: EntityTable, row: Row, name: str,
                          pairs: Sequence[ColumnElement[bool]] = ()
                          ) -> tuple[str | None, ColumnElement[bool]]:
        link = table.spec.links.get(name)
        if link is not None:
            if link.polymorphic:
                target_name = row[poly_entity_column(name)]
                if target_name is None:
                    return None, sa.false()
                target = self.storage[target_name]
                return target_name, target.table.c.id == row[link_column(name)]
            target = self.storage[link.target]
            if link.many:
                joins = table.join_tables[name]
                return link.target, target.table.c.id.in_(
                    sa.select(joins.c.target_id).where(joins.c.source_id == row["id"], *pairs))
            return link.target, target.table.c.id == row[link_column(name)]
        reverse = self.storage.setup.reverse_links[table.name][name]
        source = self.storage[reverse.entity]
        declared = reverse.link
        if declared.many:
            joins = source.join_tables[declared.name]
            return reverse.entity, source.table.c.id.in_(
                sa.select(joins.c.source_id).where(joins.c.target_id == row["id"], *pairs))
        condition = source.table.c[link_column(declared.name)] == row["id"]
        if declared.polymorphic:
            condition = sa.and_(
                source.table.c[poly_entity_column(declared.name)] == table.name, condition)
        return reverse.entity, condition

    # -- the read API processes build on (stages, timeline, reports) ------------------------
    def page(self, conn: sa.Connection, query: ListQuery,
             extra: ColumnElement[bool] | None = None) -> Page:
        """One page of a parsed list query (and `extra`), in the acting user's scope."""
        table = self.storage[query.entity]
        conditions = list(query.conditions)
        if extra is not None:
            conditions.append(extra)
        total = None
        if query.with_total:
            total = conn.execute(self.access.scoped(
                sa.select(sa.func.count()).select_from(table.table).where(*conditions),
                query.entity, "read")).scalar_one()
        page_conditions = list(conditions)
        if query.after is not None:
            page_conditions.append(after_condition(query.sort, query.after))
        statement = self.access.scoped(
            sa.select(*self.shapes[query.entity].columns)
            .where(*page_conditions)
            .order_by(*order_by(query.sort, self.db.dialect))
            .limit(query.limit + 1)
            .offset(query.offset), query.entity, "read")
        rows = conn.execute(statement).all()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_cursor = None
        if more and rows:
            last = rows[-1]._mapping
            values = [_cursor_value(key.attribute.field, last[key.attribute.column.name])
                      for key in query.sort]
            next_cursor = encode_cursor(query.sort_signature, values)
        records = self.render(conn, table, [row._mapping for row in rows])
        self._include(conn, table, records, query.include)
        return Page(records, total, next_cursor)

    def _fetch_where(self, conn: sa.Connection, table: EntityTable,
               condition: ColumnElement[bool]) -> list[Record]:
        rows = conn.execute(self.access.scoped(
            sa.select(*self.shapes[table.name].columns).where(condition)
            .order_by(table.table.c.id), table.name, "read")).all()
        return self.render(conn, table, [row._mapping for row in rows])

    def render(self, conn: sa.Connection, table: EntityTable,
               rows: Sequence[Row]) -> list[Record]:
        """Rows of `table` as the acting user sees them: hidden fields out, many-links in."""
        shape = self.shapes[table.name]
        records = [shape.render(row) for row in rows]
        rights = self.access.rights(table.name)
        if rights is not None and rights.hidden:
            for record in records:
                for name in rights.hidden:
                    record.pop(name, None)
        if shape.many and records:
            # every many-to-many link's ids in one statement (UNION ALL), not one per link
            by_id = {record["id"]: record for record in records}
            assert shape.many_links is not None
            touched = set()
            for link, source_id, target_id in conn.execute(shape.many_links,
                                                           {"ids": list(by_id)}):
                name = shape.many[link]
                if name in by_id[source_id]:
                    by_id[source_id][name].append(target_id)
                    touched.add((source_id, name))
            for source_id, name in touched:  # in id order, as every list of ids
                by_id[source_id][name].sort()
            self._render_through(conn, table, by_id)
        return records

    def _render_through(self, conn: sa.Connection, table: EntityTable,
                        by_id: Mapping[int, Record]) -> None:
        """Each link that carries data as objects with its pairs' values, not bare ids."""
        for link in table.spec.links.values():
            if not link.through:
                continue
            pairs = through.read(conn, table.join_tables[link.name], link, by_id)
            for source_id, record in by_id.items():
                if link.name in record:
                    record[link.name] = through.render(link, pairs.get(source_id, {}))

    def _include(self, conn: sa.Connection, table: EntityTable, records: list[Record],
                 include: Sequence[str]) -> None:
        for name in include:
            link = table.spec.links[name]
            if link.polymorphic:
                wanted: dict[str, set[int]] = defaultdict(set)
                for record in records:
                    if record[name] is not None:
                        wanted[record[name]["entity"]].add(record[name]["id"])
                found = {
                    (entity, linked["id"]): linked
                    for entity, ids in wanted.items()
                    for linked in self.fetch(conn, entity, ids)
                }
                for record in records:
                    ref = record[name]
                    if ref is not None:
                        ref["record"] = found.get((ref["entity"], ref["id"]))
                continue
            if link.through:  # each pair's object gets the linked record under "record"
                by_id = {r["id"]: r for r in self.fetch(
                    conn, link.target, {item["id"] for record in records for item in record[name]})}
                for record in records:
                    record[name] = [{**item, "record": by_id[item["id"]]}
                                    for item in record[name] if item["id"] in by_id]
                continue
            ids: set[int] = set()
            for record in records:
                value = record[name]
                ids.update(value if link.many else [] if value is None else [value])
            by_id = {linked["id"]: linked for linked in self.fetch(conn, link.target, ids)}
            for record in records:
                value = record[name]
                if link.many:
                    record[name] = [by_id[i] for i in value if i in by_id]
                elif value is not None:
                    record[name] = by_id.get(value, value)

    def fetch(self, conn: sa.Connection, entity: str, ids: Iterable[int]) -> list[Record]:
        """The records of `entity` with these ids that the acting user may read."""
        ids = list(ids)
        if not ids:
            return []
        table = self.storage[entity]
        return self._fetch_where(conn, table, table.table.c.id.in_(ids))

    def visible(self, conn: sa.Connection, entity: str, record_id: int,
                operation: str = "read") -> bool:
        """Whether the acting user may `operation` the record (False when it is missing)."""
        table = self.storage[entity].table
        return conn.execute(self.access.scoped(
            sa.select(table.c.id).where(table.c.id == record_id), entity, operation)
        ).first() is not None

    # -- access ------------------------------------------------------------------------------
    def locked_row(self, conn: sa.Connection, entity: str, record_id: int,
                   operation: str) -> dict[str, Any]:
        """A record's row, locked for a write by `operation`: NotFound when the acting user
        may not see it (as if it did not exist), Forbidden when they see it but may not
        `operation` it. Every write to an existing record starts here."""
        rights = self.access.rights(entity)
        row = conn.execute(self.access.scoped(self.shapes[entity].lock_by_id, entity, "read"),
                           {"record_id": record_id}).first()
        if row is None:
            raise NotFound(f"no {entity} with id {record_id}")
        if rights is not None and not rights.same_reach("read", operation):
            self._require(conn, entity, rights, operation, record_id)
        return dict(row._mapping)

    def _require(self, conn: sa.Connection, entity: str, rights: Rights, operation: str,
                 record_id: int) -> None:
        table = self.storage[entity].table
        if not rights.allows(operation) or conn.execute(self.access.scoped(
                sa.select(table.c.id).where(table.c.id == record_id), entity, operation)
        ).first() is None:
            raise Forbidden(f"your role may not {_VERBS[operation]} this {entity}",
                            code="operation_forbidden")

    @staticmethod
    def _check_writable(entity: str, body: Any, rights: Rights | None) -> None:
        """Refuse, before anything is written, a body naming fields the role may not set."""
        if rights is None or not rights.readonly or not isinstance(body, dict):
            return
        refused = sorted(key for key in body if key in rights.readonly)
        if refused:
            raise Forbidden(f"your role may not set {', '.join(refused)} of a {entity}",
                            [ErrorDetail(key, "is not writable by your role") for key in refused],
                            code="fields_forbidden")

    def _check_link_writable(self, entity: str, name: str) -> None:
        """A link the role may not set in a body (read-only or hidden for it) is not linked
        or unlinked pair by pair either, from either end."""
        rights = self.access.rights(entity)
        if rights is not None and name in rights.hidden | rights.readonly:
            raise Forbidden(f"your role may not set {name} of a {entity}",
                            [ErrorDetail(name, "is not writable by your role")],
                            code="fields_forbidden")

    def _check_owner(self, conn: sa.Connection, entity: str, rights: Rights | None,
                     owner: int | None, *, creating: bool) -> None:
        """A new owner given by a client: the role must be allowed to reassign (or, on
        create, name the creator), and the owner must be an active user."""
        user = self.access.acting.user
        if rights is not None and not rights.allows("reassign") and \
                not (creating and user is not None and owner == user.id):
            raise ValidationFailed(
                f"the {entity} is not valid",
                [ErrorDetail("owner", "is set by the server: your role may not give records "
                                      "to another owner")], code="owner_not_writable")
        if owner is None:
            return
        users = self.storage.users
        if conn.execute(sa.select(users.c.id).where(
                users.c.id == owner, users.c.active.is_(True))).first() is None:
            raise ValidationFailed(f"the {entity} is not valid",
                                   [ErrorDetail("owner", f"no active user with id {owner}")],
                                   code="owner_not_found")

    def _check_users(self, conn: sa.Connection, spec: EntitySpec,
                     values: Mapping[str, Any]) -> None:
        """Every id in a field of user ids (`refers_to_users`: a task's observers) is an
        active user."""
        problems = []
        users = self.storage.users
        for field in spec.fields.values():
            ids = field.type.user_ids(values.get(field.name)) if field.type.refers_to_users else None
            if not ids:
                continue
            found = set(conn.execute(sa.select(users.c.id).where(
                users.c.id.in_(ids), users.c.active.is_(True))).scalars())
            missing = [str(i) for i in ids if i not in found]
            if missing:
                problems.append(ErrorDetail(field.name, "no active user with id "
                                            + ", ".join(missing)))
        if problems:
            raise ValidationFailed(f"the {spec.name} is not valid", problems,
                                   code="user_not_found")

    # -- writing -----------------------------------------------------------------------------
    def create(self, entity: str, body: Any, *, owner: int | None = None,
               actor: int | None = None) -> Record:
        table = self.storage[entity]
        spec = table.spec
        rights = self.access.rights(entity)
        if rights is not None and not rights.allows("create"):
            raise Forbidden(f"your role may not create {entity} records",
                            code="operation_forbidden")
        self._check_writable(entity, body, rights)
        self.formulas.refuse_computed(entity, body)
        values, many = self._parse(table, body, self.schemas[entity].create_validator)
        carried = {name: through.resolve(spec.links[name], linked, {})
                   for name, linked in many.items() if isinstance(linked, through.Linked)}
        owner_given = "owner" in values
        for field in spec.fields.values():
            if field.name not in values and field.default is not None:
                values[field.name] = field.default
        user = self.access.acting.user
        fill_dynamic_defaults(spec, values, self.clock, self.storage.setup.timezone,
                              None if user is None else user.id)
        pipeline = None
        if spec.pipeline is not None:
            selector = values.get(spec.pipeline.pipeline_by) if spec.pipeline.pipeline_by else None
            pipeline = spec.pipeline.for_record(selector)
            values["stage"] = pipeline.initial
            self._check_stage_requirements(spec, values)
            values.update(progress.on_create(table, pipeline.initial))
        if spec.owner and not owner_given:
            values["owner"] = owner
        if table.search_column is not None:
            values[SEARCH_COLUMN] = search_text(spec, values)
        values.update(self.rollups.empty(entity))
        now = _now()
        values.update(created_at=now, updated_at=now, version=1)
        try:
            with self.db.write() as conn:
                if owner_given:
                    self._check_owner(conn, entity, rights, values["owner"], creating=True)
                self._check_users(conn, spec, values)
                # foreign keys catch a missing target of a plain link (see the except below);
                # polymorphic links have none, so they are checked here
                self._check_links(conn, table, values, many, polymorphic_only=True)
                self.constraints.before_write(conn, table, values, values)
                shadows = self.duplicates.prepare(spec, values)
                values.update(shadows)
                new_id = conn.execute(*self.shapes[entity].insert(values)).scalar_one()
                self.duplicates.after_write(conn, spec, new_id, shadows, created=True)
                values.update(self.formulas.on_write(conn, entity, new_id, None, values))
                self.rollups.on_write(conn, entity, new_id, None, values)
                self.constraints.after_write(conn, table, values, values, new_id, created=True)
                if rights is not None:
                    # a condition on create (or on reassign, for a given owner) is met by
                    # the new record as stored, or the insert is rolled back
                    user = self.access.acting.user
                    reassigned = owner_given and (user is None or values["owner"] != user.id)
                    for operation in ("create", "reassign") if reassigned else ("create",):
                        self._require(conn, entity, rights, operation, new_id)
                for name, ids in many.items():
                    if name in carried:
                        through.write(conn, table.join_tables[name], new_id, {}, carried[name])
                    else:
                        self._insert_links(conn, table.join_tables[name], new_id, ids)
                    values.update(self.rollups.links_changed(
                        conn, entity, name, new_id, carried[name] if name in carried else ids
                    ).get(new_id, {}))
                values["id"] = new_id
                for column in self.shapes[entity].columns:
                    values.setdefault(column.name, None)
                record = self.shapes[entity].render(values)
                for name, ids in many.items():
                    record[name] = (through.render(spec.links[name], carried[name])
                                    if name in carried else sorted(ids))
                journalled = {k: v[1] for k, v in diff({}, record).items() if v[1] not in (None, [])}
                for name in rights.hidden if rights is not None else ():
                    record.pop(name, None)
                self.journal.change(conn, entity, new_id, "create", journalled, by=actor, at=now)
                if pipeline is not None:
                    self.journal.stage(conn, entity, new_id, pipeline.name, None, pipeline.initial,
                                       by=actor, at=now, seconds=None)
                self.rules.check(conn, entity, [new_id])
        except IntegrityError as error:
            if _is_foreign_key(error):
                with self.db.read() as conn:  # say which link named a missing record
                    self._check_links(conn, table, values, many)
            raise self._integrity(error) from None
        return record

    def update(self, entity: str, record_id: int, body: Any, *,
               if_version: int | None = None, actor: int | None = None) -> Record:
        table = self.storage[entity]
        spec = table.spec
        record_id = checked_id(record_id, entity)
        rights = self.access.rights(entity)
        self._check_writable(entity, body, rights)
        self.formulas.refuse_computed(entity, body)
        values, many = self._parse(table, body, self.schemas[entity].patch_validator)
        try:
            with self.db.write() as conn:
                current = self.locked_row(conn, entity, record_id, "update")
                if if_version is not None and current["version"] != if_version:
                    raise StaleVersion(
                        f"{entity} {record_id} is at version {current['version']}, "
                        f"not {if_version}; read it again and reapply your change")
                changes = {k: v for k, v in values.items() if current.get(k) != v}
                self.rules.check_locks(entity, current, changes)
                link_changes: dict[str, tuple[set[int], set[int]]] = {}
                #: links that carry data: (pairs before, pairs after, journal entry)
                carried: dict[str, tuple[Any, Any, Any]] = {}
                for name, ids in many.items():
                    joins = table.join_tables[name]
                    if isinstance(ids, through.Linked):
                        link = spec.links[name]
                        pairs = through.read(conn, joins, link, [record_id]).get(record_id, {})
                        wanted_pairs = through.resolve(link, ids, pairs)
                        entry = through.journal(link, pairs, wanted_pairs)
                        if entry is not None:
                            carried[name] = (pairs, wanted_pairs, entry)
                            link_changes[name] = (set(entry["added"]), set(entry["removed"]))
                        continue
                    existing = set(conn.execute(sa.select(joins.c.target_id).where(
                        joins.c.source_id == record_id)).scalars())
                    wanted = set(ids)
                    if wanted != existing:
                        link_changes[name] = (wanted - existing, existing - wanted)
                self._check_users(conn, spec, changes)
                if "owner" in changes:
                    self._check_owner(conn, entity, rights, changes["owner"], creating=False)
                    if rights is not None:
                        self._require(conn, entity, rights, "reassign", record_id)
                merged = {**current, **changes}
                if spec.pipeline is not None:
                    switched = _pipeline_switch(spec, current, merged)
                    if switched is not None:
                        changes["stage"] = merged["stage"] = switched
                        changes.update(progress.on_enter(table, switched))
                    self._check_stage_requirements(spec, merged)
                if not changes and not link_changes and not carried:
                    return self.render(conn, table, [current])[0]
                self._check_links(conn, table, _changed_links(spec, changes, merged),
                                  {n: sorted(add) for n, (add, _) in link_changes.items()})
                self.constraints.before_write(conn, table, {**merged, **changes}, changes, record_id)
                shadows = self.duplicates.prepare(spec, {**merged, **changes}, changes)
                changes.update(shadows)
                if table.search_column is not None and any(f in changes for f in spec.search):
                    changes[SEARCH_COLUMN] = search_text(spec, merged)
                now = _now()
                changes.update(version=current["version"] + 1, updated_at=now)
                statement, parameters = self.shapes[entity].update(
                    changes, record_id, current["version"])
                updated = conn.execute(self.access.scoped(statement, entity, "update"),
                                       parameters).rowcount
                if updated != 1:
                    raise StaleVersion(f"{entity} {record_id} was changed by someone else; "
                                       "read it again and reapply your change")
                changes.update(self.formulas.on_write(conn, entity, record_id, current,
                                                      {**merged, **changes}))
                self.rollups.on_write(conn, entity, record_id, current, {**merged, **changes})
                self.constraints.after_write(conn, table, {**merged, **changes}, changes, record_id,
                                       created=False)
                self.duplicates.after_write(conn, spec, record_id, shadows, created=False)
                for name, (added, removed) in link_changes.items():
                    joins = table.join_tables[name]
                    if name in carried:
                        through.write(conn, joins, record_id, *carried[name][:2])
                        continue
                    if removed:
                        conn.execute(sa.delete(joins).where(
                            joins.c.source_id == record_id, joins.c.target_id.in_(removed)))
                    self._insert_links(conn, joins, record_id, added)
                for name, (added, removed) in link_changes.items():
                    changed_pairs = {c["id"] for c in carried[name][2].get("changed", ())} \
                        if name in carried else set()  # new values: roll-ups of pairs follow
                    changes.update(self.rollups.links_changed(
                        conn, entity, name, record_id, added | removed | changed_pairs
                    ).get(record_id, {}))
                shape = self.shapes[entity]
                after = {**merged, **changes}
                journalled: dict[str, Any] = {
                    k: v for k, v in diff(shape.render(current), shape.render(after)).items()
                    if k not in shape.many}
                record = self.render(conn, table, [after])[0]
                for name, (added, removed) in link_changes.items():
                    journalled[name] = (carried[name][2] if name in carried else
                                        {"added": sorted(added), "removed": sorted(removed)})
                self.journal.change(conn, entity, record_id, "update", journalled,
                                    by=actor, at=now)
                if "stage" in journalled:
                    entered = self.journal.last_stage_entry(conn, entity, record_id,
                                                             current["stage"])
                    assert spec.pipeline is not None
                    self.journal.stage(
                        conn, entity, record_id,
                        spec.pipeline.for_record(merged.get(spec.pipeline.pipeline_by or "")).name,
                        current["stage"], merged["stage"], by=actor, at=now,
                        seconds=seconds_since(entered, now))
                self.rules.check(conn, entity, [record_id])
                return record
        except IntegrityError as error:
            raise self._integrity(error) from None

    def delete(self, entity: str, record_id: int, *, if_version: int | None = None,
               actor: int | None = None) -> None:
        record_id = checked_id(record_id, entity)
        try:
            with self.db.write() as conn:
                version = self.locked_row(conn, entity, record_id, "delete")["version"]
                if if_version is not None and version != if_version:
                    raise StaleVersion(f"{entity} {record_id} is at version {version}, "
                                       f"not {if_version}")
                self._delete(conn, entity, [record_id], set(), actor, scoped=True)
        except IntegrityError as error:
            raise self._integrity(error) from None

    def add_link(self, entity: str, record_id: int, name: str, other_id: int, *,
                 actor: int | None = None, body: Any = None) -> None:
        """Link two records; `body`, for a link that carries data, holds the pair's values
        (created or replaced; omitted ones take their defaults)."""
        self._change_link(entity, record_id, name, other_id, add=True, actor=actor, body=body)

    def remove_link(self, entity: str, record_id: int, name: str, other_id: int, *,
                    actor: int | None = None) -> None:
        self._change_link(entity, record_id, name, other_id, add=False, actor=actor)

    def _change_link(self, entity: str, record_id: int, name: str, other_id: int, *,
                     add: bool, actor: int | None, body: Any = None) -> None:
        table = self.storage[entity]
        link = table.spec.links.get(name)
        reversed_ = None if link is not None else self.storage.setup.reverse_links[entity][name]
        owning: LinkSpec = link if link is not None else reversed_.link  # type: ignore[union-attr]
        owning_entity = entity if reversed_ is None else reversed_.entity
        if link is not None:
            owner_entity, joins, owner_link = entity, table.join_tables[name], name
            other_entity = link.target
            source_id, target_id = record_id, other_id
        else:
            reverse = self.storage.setup.reverse_links[entity][name]
            owner_entity, owner_link = reverse.entity, reverse.link.name
            joins = self.storage[reverse.entity].join_tables[reverse.link.name]
            other_entity = reverse.entity
            source_id, target_id = other_id, record_id
        record_id = checked_id(record_id, entity)
        other_id = checked_id(other_id, other_entity)
        owner_table = self.storage[owner_entity].table
        self._check_link_writable(owner_entity, owner_link)
        try:
            with self.db.write() as conn:
                # both ends must be visible; the owning record's row lock, taken for an
                # update, serialises concurrent changes of its links
                other_owns = owner_entity != entity
                for check_entity, check_id, owns in ((entity, record_id, not other_owns),
                                                     (other_entity, other_id, other_owns)):
                    if owns:
                        self.locked_row(conn, check_entity, check_id, "update")
                        continue
                    check = self.storage[check_entity].table
                    if conn.execute(self.access.scoped(
                            sa.select(check.c.id).where(check.c.id == check_id),
                            check_entity, "read")).first() is None:
                        raise NotFound(f"no {check_entity} with id {check_id}")
                # the body is judged once both ends are known to be visible: a 404 first
                carried = _pair_values(self.storage.setup.entities[owning_entity], owning,
                                       target_id, body) if add else None
                pair = sa.and_(joins.c.source_id == source_id, joins.c.target_id == target_id)
                exists = conn.execute(sa.select(joins.c.source_id).where(pair)).first() is not None
                if carried is not None:
                    before = through.read(conn, joins, owning, [source_id]).get(source_id, {})
                    before = {target_id: before[target_id]} if target_id in before else {}
                    entry = through.journal(owning, before, carried)
                    if entry is None:
                        return
                    through.write(conn, joins, source_id, before, carried)
                    self.rollups.links_changed(conn, owner_entity, owner_link, source_id,
                                               [target_id])
                    self._touch_link_owner(conn, owner_entity, owner_table, source_id,
                                           {owner_link: entry}, actor)
                    return
                if add and not exists:
                    conn.execute(sa.insert(joins).values(source_id=source_id, target_id=target_id))
                elif not add and exists:
                    conn.execute(sa.delete(joins).where(pair))
                elif not add:
                    raise NotFound(f"{entity} {record_id} is not linked to {other_entity} {other_id}")
                else:
                    return
                self.rollups.links_changed(conn, owner_entity, owner_link, source_id, [target_id])
                change = {"added": [target_id], "removed": []} if add else \
                    {"added": [], "removed": [target_id]}
                self._touch_link_owner(conn, owner_entity, owner_table, source_id,
                                       {owner_link: change}, actor)
        except IntegrityError as error:
            raise self._integrity(error) from None

    def _touch_link_owner(self, conn: sa.Connection, owner_entity: str, owner_table: sa.Table,
                          source_id: int, change: Mapping[str, Any], actor: int | None) -> None:
        """A link of the record changed: a new version, its history, its rules."""
        now = _now()
        conn.execute(self.access.scoped(
            sa.update(owner_table).where(owner_table.c.id == source_id)
            .values(version=owner_table.c.version + 1, updated_at=now),
            owner_entity, "update"))
        self.journal.change(conn, owner_entity, source_id, "update", dict(change),
                            by=actor, at=now)
        self.rules.check(conn, owner_entity, [source_id])

    # -- write helpers ---------------------------------------------------------------------
    def _parse(self, table: EntityTable, body: Any,
               validator: Any) -> tuple[dict[str, Any], dict[str, list[int]]]:
        spec = table.spec
        problems = schema_problems(validator, body, spec)
        bad = {p.field.split(".")[0].split("[")[0] for p in problems}
        values: dict[str, Any] = {}
        many: dict[str, list[int]] = {}
        if isinstance(body, dict):
            for key, value in body.items():
                if key in bad or (key != "owner" and key not in spec.fields
                                  and key not in spec.links):
                    continue  # refused by the schema: an unknown key, whatever its characters
                if key == "owner":
                    values["owner"] = value
                    continue
                field = spec.fields.get(key)
                if field is not None:
                    if value is None:
                        values[key] = None
                        continue
                    try:
                        values[key] = field.type.parse(field, value)
                    except ValueProblem as problem:
                        problems.append(ErrorDetail(key, str(problem)))
                    continue
                link = spec.links[key]
                if link.through:
                    many[key] = through.parse(link, value, problems)
                elif link.many:
                    many[key] = sorted(value)
                elif link.polymorphic:
                    values[poly_entity_column(key)] = None if value is None else value["entity"]
                    values[link_column(key)] = None if value is None else value["id"]
                else:
                    values[link_column(key)] = value
        if problems:
            raise ValidationFailed(f"the {spec.name} is not valid", problems)
        return values, many

    def _check_stage_requirements(self, spec: EntitySpec, values: Mapping[str, Any]) -> None:
        stage = values.get("stage")
        missing = [ErrorDetail(f.name, f"is required in stage {stage!r}")
                   for f in spec.fields.values()
                   if stage in f.required_in_stages and values.get(f.name) in (None, "", [])]
        if missing:
            raise ValidationFailed(f"the {spec.name} is not valid in stage {stage!r}", missing)

    def _check_links(self, conn: sa.Connection, table: EntityTable, values: Mapping[str, Any],
                     many: Mapping[str, Sequence[int]], *, polymorphic_only: bool = False) -> None:
        problems: list[ErrorDetail] = []
        for link in table.spec.links.values():
            if polymorphic_only and not link.polymorphic and \
                    not self.access.conditions(link.target, "read"):
                continue
            if link.many:
                ids = list(many.get(link.name, ()))
                target = link.target
            else:
                value = values.get(link_column(link.name))
                if value is None:
                    continue
                ids = [value]
                target = values[poly_entity_column(link.name)] if link.polymorphic else link.target
            if not ids:
                continue
            target_table = self.storage[target].table
            # a record the acting user may not see is, to them, a record that does not exist
            found = set(conn.execute(self.access.scoped(
                sa.select(target_table.c.id).where(target_table.c.id.in_(ids)), target, "read"
            )).scalars())
            missing = [i for i in ids if i not in found]
            if missing:
                problems.append(ErrorDetail(
                    link.name, f"no {target} with id " + ", ".join(str(i) for i in missing)))
        if problems:
            raise ValidationFailed("a linked record does not exist", problems,
                                   code="link_not_found")

    @staticmethod
    def _insert_links(conn: sa.Connection, joins: sa.Table, source_id: int,
                      ids: Iterable[int]) -> None:
        rows = [{"source_id": source_id, "target_id": i} for i in sorted(ids)]
        if rows:
            conn.execute(sa.insert(joins), rows)

    def _delete(self, conn: sa.Connection, entity: str, ids: list[int],
                seen: set[tuple[str, int]], actor: int | None, *, scoped: bool = False) -> None:
        """Delete records and apply each inbound link's on_delete. The records a user
        deletes are in their scope (`scoped`: checked again in the DELETE); what the
        setup's on_delete rules then release or cascade to is reached whatever its owner,
        and those statements say so (`Access.unscoped`)."""
        ids = [i for i in ids if (entity, i) not in seen]
        if not ids:
            return
        seen.update((entity, i) for i in ids)
        parents = self.rollups.parents_of(conn, entity, ids)  # what adds these up, before
        for source_entity, link in self.storage.setup.inbound_links[entity]:
            source = self.storage[source_entity]
            for chunk in _chunks(ids):
                self._release(conn, entity, chunk, source, link, seen, actor)
        table = self.storage[entity]
        for joins in table.join_tables.values():
            for chunk in _chunks(ids):
                conn.execute(sa.delete(joins).where(joins.c.source_id.in_(chunk)))
        for chunk in _chunks(ids):
            statement = sa.delete(table.table).where(table.table.c.id.in_(chunk))
            conn.execute(self.access.scoped(statement, entity, "delete") if scoped
                         else self.access.unscoped(statement, "on_delete cascade"))
        self.rollups.recompute(conn, parents)
        self.duplicates.forget(conn, entity, ids)
        if table.spec.pipeline is not None:
            self.journal.forget_stages(conn, entity, ids)
        self.journal.changes_many(conn, entity, ids, "delete", None, by=actor, at=_now())

    def _release(self, conn: sa.Connection, entity: str, ids: list[int], source: EntityTable,
                 link: LinkSpec, seen: set[tuple[str, int]], actor: int | None) -> None:
        """Apply `link.on_delete` to the records of `source` that point at `ids`."""
        reason = {UNSCOPED: f"on_delete {link.on_delete}"}
        if link.many:
            joins = source.join_tables[link.name]
            linked = joins.c.target_id.in_(ids)
            if link.on_delete == "restrict":
                count = conn.execute(
                    sa.select(sa.func.count(sa.distinct(joins.c.source_id))).where(linked),
                    execution_options=reason).scalar_one()
                self._restrict(entity, source.name, link, count)
            owners = conn.execute(sa.select(joins.c.source_id).where(linked).distinct(),
                                  execution_options=reason).scalars().all()
            conn.execute(sa.delete(joins).where(linked), execution_options=reason)
            owners = [o for o in owners if (source.name, o) not in seen]
            for chunk in _chunks(owners):
                conn.execute(sa.update(source.table).where(source.table.c.id.in_(chunk)).values(
                    version=source.table.c.version + 1, updated_at=_now()),
                    execution_options=reason)
            self.journal.changes_many(conn, source.name, owners, "update",
                                      {link.name: {"added": [], "removed": ids}},
                                      by=actor, at=_now())
            return
        id_column = source.table.c[link_column(link.name)]
        where: ColumnElement[bool] = id_column.in_(ids)
        if link.polymorphic:
            where = sa.and_(source.table.c[poly_entity_column(link.name)] == entity, where)
        if link.on_delete == "restrict":
            referencing = conn.execute(sa.select(source.table.c.id).where(where),
                                       execution_options=reason).scalars().all()
            referencing = [r for r in referencing if (source.name, r) not in seen]
            self._restrict(entity, source.name, link, len(referencing))
        elif link.on_delete == "cascade":
            children = conn.execute(sa.select(source.table.c.id).where(where),
                                    execution_options=reason).scalars().all()
            self._delete(conn, source.name, list(children), seen, actor)
        else:
            cleared = {link_column(link.name): None}
            if link.polymorphic:
                cleared[poly_entity_column(link.name)] = None
            affected = conn.execute(sa.select(source.table.c.id).where(where),
                                    execution_options=reason).scalars().all()
            conn.execute(sa.update(source.table).where(where).values(
                **cleared, version=source.table.c.version + 1, updated_at=_now()),
                execution_options=reason)
            self.formulas.changed(conn, source.name, affected, cleared)
            self.rollups.changed(conn, source.name, affected, cleared)
            old = {"entity": entity, "id": ids[0]} if link.polymorphic else ids[0]
            self.journal.changes_many(conn, source.name, affected, "update",
                                      {link.name: [old if len(ids) == 1 else None, None]},
                                      by=actor, at=_now())

    @staticmethod
    def _restrict(entity: str, source: str, link: LinkSpec, count: int) -> None:
        if count:
            raise Conflict(
                f"cannot delete this {entity}: {count} {source} record(s) link to it "
                f"through {source}.{link.name}; delete or relink them first",
                [ErrorDetail(f"{source}.{link.name}", f"{count} record(s) link here")],
                code="delete_restricted",
            )

    def _integrity(self, error: IntegrityError) -> Exception:
        conflict = self.constraints.conflict(error)  # unique sets, no_overlap, unique fields
        if conflict is not None:
            return conflict
        text = str(error.orig)
        constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        target: tuple[str, str] | None = None
        if constraint and constraint in self._unique_fields:
            target = self._unique_fields[constraint]
        elif "UNIQUE constraint failed:" in text:
            table_name, _, column = text.split("UNIQUE constraint failed:")[1].strip().partition(".")
            target = (table_name, column.split(",")[0].strip())
        if target is not None:
            entity, field = target
            return Conflict(f"another {entity} already has this {field}",
                            [ErrorDetail(field, "is already taken by another record")],
                            code="unique_violation")
        if "foreign key" in text.lower() or "FOREIGN KEY" in text:
            return ValidationFailed("a linked record does not exist (it may have just been deleted)",
                                    code="link_not_found")
        return Conflict("the change conflicts with the database's rules: " + text.splitlines()[0],
                        code="conflict")


_VERBS = {"create": "create", "read": "read", "update": "change", "delete": "delete",
          "reassign": "give another owner to"}


def _is_foreign_key(error: IntegrityError) -> bool:
    code = getattr(error.orig, "sqlstate", None)
    return code == "23503" or "FOREIGN KEY constraint failed" in str(error.orig)


def _changed_links(spec: EntitySpec, changes: Mapping[str, Any],
                   merged: Mapping[str, Any]) -> dict[str, Any]:
    """The link columns to check after a change: both columns of a polymorphic link when
    either changed (pointing a task at another entity with the same id is a new link)."""
    values: dict[str, Any] = {}
    for link in spec.links.values():
        if link.many:
            continue
        columns = [link_column(link.name)]
        if link.polymorphic:
            columns.append(poly_entity_column(link.name))
        if any(column in changes for column in columns):
            values.update({column: merged.get(column) for column in columns})
    return values


def _pipeline_switch(spec: EntitySpec, current: Mapping[str, Any],
                     merged: Mapping[str, Any]) -> str | None:
    """When the field choosing the pipeline changes, a record whose stage is not in the new
    pipeline starts that pipeline at its first stage; one whose stage is there stays. A
    record in a final stage has finished its process: its pipeline no longer changes."""
    pipelines = spec.pipeline
    if pipelines is None or pipelines.pipeline_by is None:
        return None
    before = pipelines.for_record(current.get(pipelines.pipeline_by))
    pipeline = pipelines.for_record(merged.get(pipelines.pipeline_by))
    if pipeline is not before and current.get("stage") in before.final:
        raise ValidationFailed(
            f"the {spec.name} is in the final stage {current.get('stage')!r}; "
            "its pipeline no longer changes",
            [ErrorDetail(pipelines.pipeline_by, "cannot change after a final stage")],
            code="transition_refused")
    if merged.get("stage") in pipeline.stage_names:
        return None
    return pipeline.initial


def seconds_since(start: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if start is None else max(0, int((now - start).total_seconds()))


def _cursor_value(field: FieldSpec, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    return field.type.render(field, value)


def checked_id(value: int, entity: str) -> int:
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"no {entity} with id {value}")
    return value


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _pair_values(owner: EntitySpec, link: LinkSpec, target_id: int,
                 body: Any) -> dict[int, through.Values] | None:
    """The values a PUT of one pair of a link that carries data writes (None for a plain
    link, which takes no body)."""
    if not link.through:
        if body is not None:
            raise ValidationFailed(f"the link {link.name} carries no data; send no body",
                                   [ErrorDetail("", "must be empty")])
        return None
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object",
                               [ErrorDetail("", "the body must be a JSON object")])
    through.refuse_computed_pair(link, body)
    problems = [ErrorDetail(key, f"is not a field of the link {link.name}; "
                            + (did_you_mean(key, link.through) or
                               "use one of: " + ", ".join(link.through)))
                for key in body if key not in link.through]
    problems += pair_problems(owner, link, {k: v for k, v in body.items() if k in link.through})
    linked = through.parse(link, [{**body, "id": target_id}], problems)
    problems = [ErrorDetail(p.field.removeprefix(f"{link.name}[0]."), p.problem) for p in problems]
    if problems:
        raise ValidationFailed(f"the {link.name} link is not valid", problems)
    try:
        return through.resolve(link, linked, {})
    except ValidationFailed as error:
        raise ValidationFailed(str(error), [
            ErrorDetail(d.field.removeprefix(f"{link.name}[0]."), d.problem)
            for d in error.details]) from None
