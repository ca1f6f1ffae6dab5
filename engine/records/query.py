"""The list query language: filters, search, sort, paging, include — parsed from query
parameters into SQLAlchemy expressions. Nothing a client writes reaches SQL as text:
names are looked up in the entity's attributes (unknown ones are refused with 400, never
ignored), and values become bound parameters after the field type parsed them.

    field=value  field[op]=value  link.field[op]=value  link=7  q=text
    sort=-amount,number  limit=50  offset=0 | cursor=...  include=client  total=false

A bare control name (`CONTROLS`) is always the control, never a filter, whatever the
entity's fields are called; a field of the same name is filtered in its operator form,
`total[eq]=5`, and sorted and included by its name as any other (`sort=-total`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from engine.errors import ErrorDetail, Forbidden, MalformedRequest
from engine.setup.names import did_you_mean, link_column, poly_entity_column
from engine.setup.spec import LinkSpec
from engine.storage.tables import Attribute, EntityTable, Storage
from engine.types.fields import OPERATORS, ValueProblem, check_text, fold_text

if TYPE_CHECKING:
    from engine.access.scopes import Access

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_IN_VALUES = 500
MAX_SEARCH_LENGTH = 200
MAX_SORT_KEYS = 5
LIST_PARAMS = ("q", "sort", "limit", "offset", "cursor", "include", "total")
#: The board's and the funnel's own controls (engine/reports.py), kept out of filters too.
REPORT_PARAMS = ("pipeline", "from", "to")
CONTROLS = frozenset(LIST_PARAMS + REPORT_PARAMS)
_FILTER_KEY = re.compile(
    r"^(?P<head>[a-z][a-z0-9_]*)(?:\.(?P<tail>[a-z][a-z0-9_]*))?(?:\[(?P<op>[a-z]+)\])?$")


@dataclass(frozen=True)
class SortKey:
    attribute: Attribute
    descending: bool


@dataclass(frozen=True)
class ListQuery:
    entity: str
    conditions: tuple[ColumnElement[bool], ...]
    sort: tuple[SortKey, ...]
    limit: int
    offset: int
    after: tuple[Any, ...] | None
    include: tuple[str, ...]
    with_total: bool
    sort_signature: str


class QueryParser:
    """Turns query parameters into a `ListQuery` for one entity of one storage.

    With `access`, the query is the acting user's: the read scope of every entity a filter
    goes through joins its subquery, and hidden fields are refused wherever a parameter
    names them, with the message an unknown field gets. The entity's own scope is not in
    `ListQuery.conditions`: the statement that runs them comes from `Access.scoped`.
    """

    def __init__(self, storage: Storage, dialect: str, access: Access | None = None):
        self.storage = storage
        self.dialect = dialect
        self.access = access

    def _hidden(self, table: EntityTable) -> frozenset[str]:
        rights = self.access.rights(table.name) if self.access is not None else None
        return rights.hidden if rights is not None else frozenset()

    def parse(self, entity: str, params: Sequence[tuple[str, str]]) -> ListQuery:
        table = self.storage[entity]
        rights = self.access.rights(entity) if self.access is not None else None
        if rights is not None and not rights.allows("read"):
            raise Forbidden(f"your role may not read {entity} records",
                            code="operation_forbidden")
        problems: list[ErrorDetail] = []
        seen: dict[str, str] = {}
        conditions: list[ColumnElement[bool]] = []
        for key, value in params:
            if key in LIST_PARAMS:
                if key == "cursor" and not value:
                    continue  # an empty cursor is the first page
                if key in seen:
                    problems.append(ErrorDetail(key, "is given twice"))
                seen[key] = value
                continue
            if key in REPORT_PARAMS:
                problems.append(ErrorDetail(key, "is a parameter of the board and the funnel, "
                                                 "not of a list"))
                continue
            try:
                conditions.append(self._filter(table, key, value))
            except _Refused as refused:
                problems.append(ErrorDetail(key, str(refused)))
        limit = self._integer(seen, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
        offset = self._integer(seen, "offset", 0, 0, 10**9, problems)
        sort = self._sort(table, seen.get("sort"), problems)
        signature = ",".join(("-" if k.descending else "") + k.attribute.name for k in sort)
        after = None
        if "cursor" in seen:
            if "offset" in seen:
                problems.append(ErrorDetail("cursor", "give either cursor or offset, not both"))
            else:
                after = self._cursor(seen["cursor"], sort, signature, problems)
        if "q" in seen:
            search = self._search(table, seen["q"], problems)
            if search is not None:
                conditions.append(search)
        include = self._include(table, seen.get("include"), problems)
        with_total = True
        if "total" in seen:
            if seen["total"] not in ("true", "false"):
                problems.append(ErrorDetail("total", "must be true or false"))
            with_total = seen["total"] == "true"
        if problems:
            raise MalformedRequest("the list parameters are not valid",
                                   self.explain_controls(entity, problems), code="invalid_query")
        return ListQuery(entity, tuple(conditions), sort, limit, offset, after, include,
                         with_total, signature)

    def explain_controls(self, entity: str, problems: Sequence[ErrorDetail]) -> list[ErrorDetail]:
        """`problems`, where one is about a control that shares its name with a field or link
        the caller may see, told how to filter by that field instead."""
        table = self.storage[entity]
        hidden = self._hidden(table)
        names = {*table.attributes, *table.spec.links,
                 *self.storage.setup.reverse_links[entity]} - hidden
        return [ErrorDetail(d.field, f"{d.problem} ({d.field} is a control here; to filter "
                                     f"{entity}.{d.field}, write {d.field}[eq]=…)")
                if d.field in CONTROLS and d.field in names else d for d in problems]

    # -- filters ---------------------------------------------------------------------------
    def _filter(self, table: EntityTable, key: str, text: str) -> ColumnElement[bool]:
        match = _FILTER_KEY.match(key)
        if not match:
            raise _Refused("is not a field filter: write field=value or field[op]=value")
        head, tail, op = match.group("head"), match.group("tail"), match.group("op") or "eq"
        if op not in OPERATORS:
            raise _Refused(f"unknown operator {op!r}; " + (
                did_you_mean(op, OPERATORS) or "use one of: " + ", ".join(OPERATORS)))
        entity = table.spec
        if head in self._hidden(table):
            raise _Refused(self._unknown(table, head))
        if tail is None:
            if head in table.attributes:
                return self._compare(table.attributes[head], op, text)
            link = entity.links.get(head)
            if link is not None and link.polymorphic:
                return self._polymorphic(table, link, op, text)
            if link is not None and link.many:
                ids = self._ids(op, text)
                joins = table.join_tables[link.name]
                inner = sa.select(joins.c.source_id)
                if ids is not None:
                    inner = inner.where(joins.c.target_id.in_(ids))
                exists = table.table.c.id.in_(inner)
                return sa.not_(exists) if op == "isnull" and _boolean(text) else exists
            if head in self.storage.setup.reverse_links[table.name]:
                # the way back, by the ids of the records at its other end
                target, subquery_of = self._through(table, head)
                if op == "isnull":
                    linked: ColumnElement[bool] = subquery_of(sa.true())
                    return sa.not_(linked) if _boolean(text) else linked
                if op not in ("eq", "in"):
                    raise _Refused("a way back filters with eq, in or isnull")
                return subquery_of(target.table.c.id.in_(self._ids(op, text) or []))  # type: ignore[no-any-return]
            raise _Refused(self._unknown(table, head))
        # through a link: link.field
        target, subquery_of = self._through(table, head)
        hidden = self._hidden(target)
        attribute = target.attributes.get(tail) if tail not in hidden else None
        if attribute is None:
            raise _Refused(f"{target.name} has no field {tail!r}" + _hint(did_you_mean(
                tail, [name for name in target.attributes if name not in hidden])))
        condition: ColumnElement[bool] = subquery_of(self._compare(attribute, op, text))
        return condition

    def _compare(self, attribute: Attribute, op: str, text: str) -> ColumnElement[bool]:
        spec = attribute.field
        if op not in spec.type.operators:
            raise _Refused(f"operator {op!r} does not apply to a {spec.type.name} field; use "
                           + ", ".join(o for o in OPERATORS if o in spec.type.operators))
        if op == "isnull":
            value: Any = _boolean(text)
        elif op == "in":
            parts = text.split(",")
            if len(parts) > MAX_IN_VALUES:
                raise _Refused(f"lists more than {MAX_IN_VALUES} values")
            value = [self._value(attribute, part) for part in parts]
        else:
            value = self._value(attribute, text)
        return spec.type.filter(spec, attribute.column, op, value, self.dialect)

    @staticmethod
    def _value(attribute: Attribute, text: str) -> Any:
        try:
            return attribute.field.type.parse_text(attribute.field, text)
        except ValueProblem as problem:
            raise _Refused(f"{text!r} {problem}") from None

    @staticmethod
    def _ids(op: str, text: str) -> list[int] | None:
        if op == "isnull":
            _boolean(text)
            return None
        if op not in ("eq", "in"):
            raise _Refused("a many-to-many link filters with eq, in or isnull")
        parts = text.split(",") if op == "in" else [text]
        if len(parts) > MAX_IN_VALUES:
            raise _Refused(f"lists more than {MAX_IN_VALUES} values")
        return [_record_id(part) for part in parts]

    def _polymorphic(self, table: EntityTable, link: LinkSpec, op: str,
                     text: str) -> ColumnElement[bool]:
        entity_column = table.table.c[poly_entity_column(link.name)]
        id_column = table.table.c[link_column(link.name)]
        if op == "isnull":
            return entity_column.is_(None) if _boolean(text) else entity_column.is_not(None)
        if op not in ("eq", "in"):
            raise _Refused("a link to several entities filters with eq, in or isnull "
                           f"(value entity:id, e.g. {link.targets[0]}:7)")
        parts = text.split(",") if op == "in" else [text]
        clauses = []
        for part in parts:
            name, _, raw_id = part.partition(":")
            if name not in link.targets:
                raise _Refused(f"{part!r} must be entity:id with entity one of "
                               + ", ".join(link.targets))
            clauses.append(sa.and_(entity_column == name, id_column == _record_id(raw_id)))
        return sa.or_(*clauses)

    def _through(self, table: EntityTable, name: str) -> tuple[EntityTable, Any]:
        """The entity at the other end of link `name`, and how to filter by its records
        (only those the acting user may read)."""
        target, subquery_of = self._through_all(table, name)
        scope = self.access.conditions(target.name, "read") if self.access is not None else []
        if not scope:
            return target, subquery_of
        return target, lambda cond: subquery_of(sa.and_(cond, *scope))

    def _through_all(self, table: EntityTable, name: str) -> tuple[EntityTable, Any]:
        link = table.spec.links.get(name)
        if link is not None:
            if link.polymorphic:
                raise _Refused(f"{name} links to several entities; filter it by {name}=entity:id")
            target = self.storage[link.target]
            if link.many:
                joins = table.join_tables[name]
                return target, lambda cond: table.table.c.id.in_(
                    sa.select(joins.c.source_id).join(
                        target.table, target.table.c.id == joins.c.target_id).where(cond))
            column = table.table.c[link_column(name)]
            return target, lambda cond: column.in_(sa.select(target.table.c.id).where(cond))
        reverse = self.storage.setup.reverse_links[table.name].get(name)
        if reverse is None:
            raise _Refused(self._unknown(table, name))
        source = self.storage[reverse.entity]
        declared = reverse.link
        if declared.many:
            joins = source.join_tables[declared.name]
            return source, lambda cond: table.table.c.id.in_(
                sa.select(joins.c.target_id).join(
                    source.table, source.table.c.id == joins.c.source_id).where(cond))
        id_column = source.table.c[link_column(declared.name)]
        if declared.polymorphic:
            entity_column = source.table.c[poly_entity_column(declared.name)]
            return source, lambda cond: table.table.c.id.in_(
                sa.select(id_column).where(entity_column == table.name, cond))
        # NULLs kept out of the subquery: NOT IN over a list with NULL matches nothing
        return source, lambda cond: table.table.c.id.in_(
            sa.select(id_column).where(id_column.is_not(None), cond))

    def _unknown(self, table: EntityTable, name: str) -> str:
        hidden = self._hidden(table)
        known = [n for n in (*table.attributes, *table.spec.links,
                             *self.storage.setup.reverse_links[table.name]) if n not in hidden]
        return f"{table.name} has no field or link {name!r}" + _hint(did_you_mean(name, known))

    # -- search, sort, paging ---------------------------------------------------------------
    def _search(self, table: EntityTable, text: str,
                problems: list[ErrorDetail]) -> ColumnElement[bool] | None:
        if table.search_column is None:
            problems.append(ErrorDetail("q", f"{table.name} declares no search fields"))
            return None
        if self._hidden(table) & set(table.spec.search):
            problems.append(ErrorDetail("q", f"searching {table.name} would look into fields "
                                             "your role may not see; filter by field instead"))
            return None
        if len(text) > MAX_SEARCH_LENGTH:
            problems.append(ErrorDetail("q", f"is longer than {MAX_SEARCH_LENGTH} characters"))
            return None
        try:
            check_text(text)
        except ValueProblem as problem:
            problems.append(ErrorDetail("q", str(problem)))
            return None
        folded = fold_text(text).strip()
        if not folded:
            return None
        return table.search_column.contains(folded, autoescape=True)

    def _sort(self, table: EntityTable, text: str | None,
              problems: list[ErrorDetail]) -> tuple[SortKey, ...]:
        keys: list[SortKey] = []
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            descending = part.startswith("-")
            name = part.lstrip("-+")
            hidden = self._hidden(table)
            attribute = table.attributes.get(name) if name not in hidden else None
            if attribute is None:
                problems.append(ErrorDetail("sort", f"{table.name} has no field {name!r}" + _hint(
                    did_you_mean(name, [n for n in table.attributes if n not in hidden]))))
                continue
            if not attribute.field.type.sortable:
                problems.append(ErrorDetail("sort", f"a {attribute.field.type.name} field "
                                                    f"({name}) cannot be sorted"))
                continue
            keys.append(SortKey(attribute, descending))
        if len(keys) > MAX_SORT_KEYS:
            problems.append(ErrorDetail("sort", f"sorts by more than {MAX_SORT_KEYS} keys"))
        if not any(k.attribute.name == "id" for k in keys):
            keys.append(SortKey(table.attributes["id"], keys[-1].descending if keys else False))
        return tuple(keys)

    @staticmethod
    def _integer(seen: dict[str, str], name: str, default: int, low: int, high: int,
                 problems: list[ErrorDetail]) -> int:
        if name not in seen:
            return default
        text = seen[name]
        if not re.fullmatch(r"[0-9]{1,10}", text):
            problems.append(ErrorDetail(name, "must be a whole number"))
            return default
        number = int(text)
        if not low <= number <= high:
            problems.append(ErrorDetail(name, f"must be between {low} and {high}"))
            return default
        return number

    @staticmethod
    def _cursor(text: str, sort: tuple[SortKey, ...], signature: str,
                problems: list[ErrorDetail]) -> tuple[Any, ...] | None:
        try:
            padded = text + "=" * (-len(text) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            if data.get("s") != signature or len(data["k"]) != len(sort):
                problems.append(ErrorDetail(
                    "cursor", "was made for another sort order; start again without a cursor"))
                return None
            values = []
            for key, raw in zip(sort, data["k"], strict=True):
                spec = key.attribute.field
                # through parse_text, so a forged cursor is range-checked like a filter value
                values.append(None if raw is None else spec.type.parse_text(spec, str(raw)))
            return tuple(values)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeError,
                RecursionError):
            problems.append(ErrorDetail("cursor", "is not a cursor this server gave out"))
            return None

    def include(self, entity: str, text: str | None) -> tuple[str, ...]:
        """The link names of an `include=` value, refused with 400 when one is unknown."""
        problems: list[ErrorDetail] = []
        names = self._include(self.storage[entity], text, problems)
        if problems:
            raise MalformedRequest("the include parameter is not valid", problems,
                                   code="invalid_query")
        return names

    def _include(self, table: EntityTable, text: str | None,
                 problems: list[ErrorDetail]) -> tuple[str, ...]:
        names: list[str] = []
        for name in (text or "").split(","):
            name = name.strip()
            if not name:
                continue
            hidden = self._hidden(table)
            if name not in table.spec.links or name in hidden:
                problems.append(ErrorDetail("include", f"{table.name} has no link {name!r}" + _hint(
                    did_you_mean(name, [n for n in table.spec.links if n not in hidden]))))
            elif name not in names:
                names.append(name)
        return tuple(names)


def encode_cursor(signature: str, values: Sequence[Any]) -> str:
    raw = json.dumps({"s": signature, "k": list(values)}, separators=(",", ":"),
                     ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


def order_by(sort: Sequence[SortKey], dialect: str) -> list[Any]:
    """ORDER BY with NULL as the smallest value on both databases."""
    clauses = []
    for key in sort:
        column = key.attribute.column
        # NULLS FIRST/LAST only where NULLs can be: on NOT NULL columns (id, stage) it would
        # keep PostgreSQL from reading the order straight from the primary key or an index
        if dialect == "postgresql" and column.nullable:
            clauses.append(column.desc().nulls_last() if key.descending
                           else column.asc().nulls_first())
        else:
            clauses.append(column.desc() if key.descending else column.asc())
    return clauses


def after_condition(sort: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the sort order (keyset paging; NULL is smallest)."""
    alternatives = []
    for index, key in enumerate(sort):
        equal = [_equal(k.attribute.column, v) for k, v in zip(sort[:index], values[:index],
                                                                 strict=True)]
        alternatives.append(sa.and_(*equal, _beyond(key, values[index])))
    return sa.or_(*alternatives)


def _equal(column: Any, value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value  # type: ignore[no-any-return]


def _beyond(key: SortKey, value: Any) -> ColumnElement[bool]:
    column = key.attribute.column
    nullable = column.nullable
    if key.descending:
        if value is None:
            return sa.false()
        return sa.or_(column < value, column.is_(None)) if nullable else column < value
    if value is None:
        return column.is_not(None)
    return column > value  # type: ignore[no-any-return]


class _Refused(Exception):
    """A filter that cannot be applied; the message says why."""


def _hint(text: str) -> str:
    return f"; {text}" if text else ""


def _boolean(text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _Refused("isnull takes true or false")


def _record_id(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", text.strip()) or not 1 <= int(text) <= 2**63 - 1:
        raise _Refused(f"{text!r} is not a record id")
    return int(text)
