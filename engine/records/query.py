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
from engine.setup.filters import (
    CONTROLS,
    LIST_PARAMS,
    REPORT_PARAMS,
    Condition,
    FilterGrammar,
    FilterRefused,
    nothing_hidden,
)
from engine.setup.names import did_you_mean
from engine.storage.filters import compile_all
from engine.storage.tables import Attribute, EntityTable, Storage
from engine.types.fields import ValueProblem, check_text, fold_text

if TYPE_CHECKING:
    from engine.access.scopes import Access

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SEARCH_LENGTH = 200
MAX_SORT_KEYS = 5
#: filter conditions in one call (each `in` lists up to MAX_IN_VALUES values)
MAX_FILTERS = 50


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

    def __init__(self, storage: Storage, grammar: FilterGrammar, dialect: str,
                 access: Access | None = None):
        self.storage = storage
        self.grammar = grammar
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
        parsed: list[Condition] = []
        filters = sum(1 for key, _ in params if key not in CONTROLS)
        if filters > MAX_FILTERS:
            # a statement of a thousand conditions nests past SQLite's expression depth
            raise MalformedRequest(
                "the list parameters are not valid",
                [ErrorDetail("", f"{filters} filter conditions; at most {MAX_FILTERS} in one "
                                 "call (use field[in]=a,b,c for many values of one field)")],
                code="invalid_query")
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
                parsed.append(self._parse(table, key, value))
            except FilterRefused as refused:
                problems.append(ErrorDetail(key, str(refused)))
        conditions += self._compile(parsed)
        limit = self._integer(seen, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
        offset = self._integer(seen, "offset", 0, 0, 10**9, problems)
        sort = self._sort(table, seen.get("sort"), problems)
        signature = ",".join(("-" if k.descending else "") + k.attribute.name for k in sort)
        after = None
        if "cursor" in seen:  # with an offset: that many records skipped after the cursor
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
    def _parse(self, table: EntityTable, key: str, text: str) -> Condition:
        """One filter parameter, parsed by the setup's grammar (hidden fields unknown)."""
        hidden = self._hidden_by_name if self.access is not None else nothing_hidden
        return self.grammar.parse(table.name, key, text, hidden)

    def _compile(self, conditions: list[Condition]) -> list[ColumnElement[bool]]:
        """The parsed filters over the tables; every entity they go through is narrowed
        to what the caller may read, and conditions on one link's pairs hold on one pair."""
        scope = self.access.conditions_for_read if self.access is not None else None
        return compile_all(self.storage, conditions, self.dialect, scope)

    def _hidden_by_name(self, entity: str) -> frozenset[str]:
        return self._hidden(self.storage[entity])

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




def _hint(text: str) -> str:
    return f"; {text}" if text else ""
