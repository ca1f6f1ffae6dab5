"""Which field each column of a file fills: by name, by label, or by a mapping file.

A header finds a field, a link or a link's target field (`client.inn`, `Клиент.ИНН`) by
its name or by its label in any of the setup's languages, ignoring case, spaces and
underscores (`Телефон` and `PHONE` both find `phone`). A mapping (`{header: target}`, from
a mapping file or the API's `mapping` form field) names the target of a header itself, or
skips it (`null`). A column that finds nothing, finds two things, names a field the role
may not see or set, a computed field or a server-managed one is a problem: every problem
is reported together, before any row is read — a column is never silently dropped
(`skip_unknown` turns unknown columns into warnings, still reported).

A link column names records by the target's title (`Клиент: Ромашка`; an entity whose
title is made of its own text fields), by one of its unique fields (`client.inn`), or by
id (`client.id`); a many-to-many link's cell lists several, separated by `;`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.access.scopes import Rights
from engine.errors import ErrorDetail, MalformedRequest
from engine.exchange.cells import CellReaders, ColumnReader, Reader, normal
from engine.records.bulk import unique_keys
from engine.records.export_cells import FORMULA_STARTS
from engine.records.export_locale import SYSTEM_LABELS
from engine.setup.names import did_you_mean
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, SetupSpec
from engine.types.fields import StringType

#: columns the server manages (`id` is taken: rows update by id): a file exported by
#: Kartoteka has them, so they are skipped with a warning, found by name or by the export's
#: header in any language
SERVER_MANAGED = ("created_at", "updated_at", "version", "stage")
_SERVER_HEADERS = {normal(text): name for name in (*SERVER_MANAGED, "owner")
                   for text in (name, *SYSTEM_LABELS[name].values())}
#: the export's header of a link's title column: "Клиент (название)", "client (title)"
_TITLE_HEADER = re.compile(r"^(.+?)\s*\((" + "|".join(
    re.escape(word) for word in SYSTEM_LABELS["title"].values()) + r")\)$", re.IGNORECASE)
#: the export's escape of text a spreadsheet would run as a formula (a leading ')
ESCAPED = tuple("'" + start for start in FORMULA_STARTS)
SKIPPED = "skipped"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class Title:
    """How a record's title is matched: the literal parts and the fields between them."""

    parts: tuple[str, ...]  # literal, field, literal, field, ..., literal
    entity: str

    @property
    def fields(self) -> tuple[str, ...]:
        return self.parts[1::2]


@dataclass
class Column:
    """One column of the file and what it fills."""

    index: int
    header: str
    name: str  # the key of the row's JSON body: a field, a link, or id
    field: FieldSpec | None = None  # a field of the entity, or the target's key field
    link: LinkSpec | None = None
    by: str = "value"  # value | id | title | key (a unique field of the link's target)
    title: Title | None = None
    #: the cell reader of `field` (engine/exchange/cells.py)
    read: Reader | None = None
    #: the column reader registered with `field`'s reader: the import's fast path reads a
    #: batch's text cells without an export's escape with it, all at once (cells.py)
    read_column: ColumnReader | None = None

    @property
    def target(self) -> str:
        """What the column fills: a field, a link (by id or title), or a link's key part."""
        if self.by == "key" and self.field is not None:
            return f"{self.name}.{self.field.name}"
        return self.name


@dataclass
class ColumnPlan:
    columns: list[Column]
    warnings: list[ErrorDetail]
    #: body key → the header of the column that fills it (for errors)
    header_of: dict[str, str]
    #: how many columns the header row names: a row with a value beyond them is refused
    width: int = 0


def title_of(entity: EntitySpec) -> Title | None:
    """The entity's title, if every part of it is a text field of its own."""
    if not entity.title:
        return None
    pieces = _PLACEHOLDER.split(entity.title)
    names = pieces[1::2]
    if not names or any(name not in entity.fields or
                        not isinstance(entity.fields[name].type, StringType) for name in names):
        return None
    return Title(tuple(pieces), entity.name)


def _labels(item: FieldSpec | LinkSpec) -> list[str]:
    return [item.name, *item.label.values()]


class _Finder:
    """Names and labels of one entity's fields and links, as `normal` text."""

    def __init__(self, entity: EntitySpec, with_links: bool = True):
        self.found: dict[str, list[FieldSpec | LinkSpec]] = {}
        items: list[FieldSpec | LinkSpec] = list(entity.fields.values())
        if with_links:
            items += list(entity.links.values())
        for item in items:
            for text in _labels(item):
                bucket = self.found.setdefault(normal(text), [])
                if item not in bucket:
                    bucket.append(item)
        self.names = [item.name for item in items]

    def find(self, text: str) -> list[FieldSpec | LinkSpec]:
        return self.found.get(normal(text), [])


def plan_columns(setup: SetupSpec, entity: EntitySpec, headers: Sequence[str],
                 rights_of: Callable[[str], Rights | None], readers: CellReaders, *,
                 mapping: Mapping[str, str | None] | None = None,
                 skip_unknown: bool = False) -> ColumnPlan:
    """The columns of a file with these headers, or MalformedRequest listing every problem."""
    planner = _Planner(setup, entity, rights_of, readers)
    columns: list[Column] = []
    problems: list[ErrorDetail] = []
    warnings: list[ErrorDetail] = []
    seen: dict[str, str] = {}
    normal_mapping = {normal(k): v for k, v in (mapping or {}).items()}
    titled = planner.title_columns(headers)
    for index, header in enumerate(headers):
        shown = header or f"(column {index + 1}, no header)"
        explicit = header in (mapping or {}) or normal(header) in normal_mapping
        if explicit:
            target = (mapping or {}).get(header, normal_mapping.get(normal(header)))
            if target is None:
                warnings.append(ErrorDetail(shown, "is skipped, as the mapping says"))
                continue
            column, problem = planner.by_target(index, shown, target)
        elif not header:
            column, problem = None, "has no header: name its field in the first row, or " \
                                    "map it (a mapping file)"
        else:
            column, problem = planner.by_header(index, header)
            server = _SERVER_HEADERS.get(normal(header))
            if column is None and server is not None and problem is not None \
                    and problem.startswith("matches no "):
                warnings.append(ErrorDetail(shown, f"is {server}, which the server sets: "
                                            "skipped"))
                continue
        if column is not None and column.link is not None and column.by in ("id", "title") \
                and not explicit and titled.get(column.name, shown) != shown:
            warnings.append(ErrorDetail(shown, f"holds {column.name}'s ids, and the records are "
                                        f"found by their titles in {titled[column.name]!r}: "
                                        "skipped"))
            continue
        if column is None:
            assert problem is not None
            unknown = problem.startswith("matches no ")
            if unknown and skip_unknown:
                warnings.append(ErrorDetail(shown, problem + " — skipped (skip_unknown)"))
            else:
                problems.append(ErrorDetail(shown, problem))
            continue
        refusal = planner.refusal(column)
        if refusal and refusal.endswith(SKIPPED):
            warnings.append(ErrorDetail(shown, refusal))
            continue
        if refusal:
            problems.append(ErrorDetail(shown, refusal))
            continue
        key = column.target
        other = seen.get(key) or (seen.get(column.name) if column.by == "key" else next(
            (seen[k] for k in seen if k.startswith(column.name + ".")), None))
        if other is not None:
            problems.append(ErrorDetail(shown, f"fills {column.name}, as column {other!r} "
                                        "does: map one of them elsewhere, or skip it"))
            continue
        seen[key] = shown
        columns.append(column)
    for name in mapping or {}:
        if name not in headers and normal(name) not in {normal(h) for h in headers}:
            problems.append(ErrorDetail(f"mapping.{name}", "names a column the file does not "
                                        "have; its columns are: " + ", ".join(headers)))
    if problems:
        raise MalformedRequest(f"the columns of the file do not all fit {entity.name}: nothing "
                               "was imported", problems, code="invalid_import")
    header_of: dict[str, str] = {}
    for column in columns:
        header_of.setdefault(column.name, column.header)
        if column.field is not None and column.link is not None:
            header_of.setdefault(f"{column.name}.{column.field.name}", column.header)
    return ColumnPlan(columns, warnings, header_of, len(headers))


class _Planner:
    def __init__(self, setup: SetupSpec, entity: EntitySpec,
                 rights_of: Callable[[str], Rights | None], readers: CellReaders):
        self.setup = setup
        self.entity = entity
        self.rights_of = rights_of
        self.rights = rights_of(entity.name)
        self.readers = readers
        self.finder = _Finder(entity)

    def title_columns(self, headers: Sequence[str]) -> dict[str, str]:
        """Link → the header of its title column, for the headers an export writes for
        linked records' titles ("Клиент (название)" after "Клиент")."""
        titled: dict[str, str] = {}
        for header in headers:
            link = self._titled_link(header or "")
            if link is not None:
                titled.setdefault(link.name, header)
        return titled

    def _titled_link(self, header: str) -> LinkSpec | None:
        match = _TITLE_HEADER.match(header.strip())
        if match is None or self.finder.find(header):
            return None
        links = [item for item in self.finder.find(match.group(1)) if isinstance(item, LinkSpec)]
        return links[0] if len(links) == 1 else None

    def by_header(self, index: int, header: str) -> tuple[Column | None, str | None]:
        titled = self._titled_link(header)
        if titled is not None:
            return self._link_title(index, header, titled)
        found = self.finder.find(header)
        if not found and normal(header) == "id":
            return Column(index, header, "id", by="id"), None
        if not found and "." in header:
            head, _, tail = header.partition(".")
            links = [item for item in self.finder.find(head) if isinstance(item, LinkSpec)]
            if len(links) == 1:
                return self._link_part(index, header, links[0], tail)
        return self._one(index, header, header, found)

    def by_target(self, index: int, header: str, target: str) -> tuple[Column | None, str | None]:
        """A target the mapping names: `field`, `link`, `link.field`, `link.id`, `link.title`."""
        head, dot, tail = target.partition(".")
        if target == "id":
            return Column(index, header, "id", by="id"), None
        item = self.entity.fields.get(head) or self.entity.links.get(head)
        if item is None:
            hint = did_you_mean(head, self.finder.names)
            return None, (f"is mapped to {target!r}, which is not a field or link of "
                          f"{self.entity.name}" + (f"; {hint}" if hint else ""))
        if dot:
            if not isinstance(item, LinkSpec):
                return None, f"is mapped to {target!r}, but {head} is a field, not a link"
            return self._link_part(index, header, item, tail, exact=True)
        return self._one(index, header, target, [item])

    def _one(self, index: int, header: str, text: str,
             found: list[FieldSpec | LinkSpec]) -> tuple[Column | None, str | None]:
        if not found:
            hint = did_you_mean(text, self.finder.names)
            return None, (f"matches no field or link of {self.entity.name} by name or label"
                          + (f"; {hint}" if hint else "") + " (map it in a mapping file, or "
                          "skip it with skip_unknown)")
        if len(found) > 1:
            return None, ("matches several: " + ", ".join(i.name for i in found)
                          + "; name one in a mapping file")
        item = found[0]
        if isinstance(item, LinkSpec):
            return self._link_title(index, header, item)
        return Column(index, header, item.name, field=item,
                      read=_unescaped(self.readers.reader(item.type)),
                      read_column=self.readers.column_reader(item.type)), None

    def _link_title(self, index: int, header: str, link: LinkSpec) -> tuple[Column | None, str | None]:
        if link.polymorphic or link.through:
            return None, (f"fills the link {link.name}, which links "
                          + ("records of several entities" if link.polymorphic else
                             "with values on each pair") + ": it cannot be imported from a column")
        target = self.setup.entities[link.target]
        title = title_of(target)
        if title is None:
            keys = [k[0] for k in unique_keys(target) if len(k) == 1]
            return None, (f"fills the link {link.name}, but a {target.name}'s title is not made "
                          "of its own text fields, so records cannot be found by it: name "
                          f"them by a unique field ({link.name}."
                          + (f"{keys[0]}" if keys else "<unique field>") + f") or by id ({link.name}.id)")
        return Column(index, header, link.name, link=link, by="title", title=title), None

    def _link_part(self, index: int, header: str, link: LinkSpec, part: str,
                   exact: bool = False) -> tuple[Column | None, str | None]:
        if link.polymorphic or link.through:
            return self._link_title(index, header, link)
        if normal(part) == "id":
            return Column(index, header, link.name, link=link, by="id"), None
        if normal(part) == "title":
            return self._link_title(index, header, link)
        target = self.setup.entities[link.target]
        fields = [target.fields[part]] if exact and part in target.fields else \
            [i for i in _Finder(target, with_links=False).find(part) if isinstance(i, FieldSpec)]
        if len(fields) != 1:
            return None, (f"names {part!r} of {target.name}, which is not one of its fields"
                          if not fields else f"names {part!r}, which matches several fields "
                          f"of {target.name}")
        key_field = fields[0]
        if not any(key_field.name in key for key in unique_keys(target)):
            keys = ", ".join(k[0] for k in unique_keys(target) if len(k) == 1) or "none"
            return None, (f"names {link.target}s by {key_field.name}, which is not unique, so "
                          f"it may name several: use a unique field ({keys}), the title, or id")
        return Column(index, header, link.name, field=key_field, link=link, by="key",
                      read=self.readers.reader(key_field.type)), None

    def refusal(self, column: Column) -> str | None:
        """Why a column may not be imported (hidden, read-only, computed, server-managed)."""
        name = column.name
        rights = self.rights
        if name in SERVER_MANAGED or (name == "owner" and self.entity.owner):
            return f"fills {name}, which the server sets: {SKIPPED}"
        if rights is not None and name in rights.hidden:
            return f"matches no field your role may see (is {name} spelt right?)"
        if rights is not None and name in rights.readonly:
            return f"fills {name}, which your role may not set"
        if column.link is None and column.field is not None and column.field.computed:
            return f"fills {name}, which the server computes (a formula or roll-up): {SKIPPED}"
        if column.link is not None and column.field is not None and column.by == "key":
            target_rights = self.rights_of(column.link.target)
            if target_rights is not None and column.field.name in target_rights.hidden:
                return f"names {column.link.target} records by a field your role may not see"
        if column.link is not None and column.title is not None:
            target_rights = self.rights_of(column.link.target)
            if target_rights is not None and set(column.title.fields) & target_rights.hidden:
                return (f"names {column.link.target} records by their title, which shows "
                        "fields your role may not see: name them by id or a unique field")
        return None


MAPPING_KEYS = ("columns", "skip_unknown")


def read_mapping(data: Any, where: Callable[[tuple[str | int, ...]], str] | None = None
                 ) -> tuple[dict[str, str | None], bool]:
    """A mapping file's content (`columns: {header: target or null}`, `skip_unknown:
    true`) → (columns, skip_unknown); MalformedRequest naming each problem, located by
    `where(path)` (`mapping.yaml:3 columns.Телефон`) when the file's lines are known."""
    def at(*path: str | int) -> str:
        return where(path) if where is not None else ".".join(str(p) for p in path) or "mapping"

    problems: list[ErrorDetail] = []
    if not isinstance(data, dict):
        raise MalformedRequest("the mapping is not valid", [ErrorDetail(
            at(), "must be a mapping: columns: {\"Header in the file\": field, ...}")],
            code="invalid_import")
    problems += [ErrorDetail(at(key), "is not a key of a mapping; it takes "
                             + ", ".join(MAPPING_KEYS)) for key in data if key not in MAPPING_KEYS]
    columns = data.get("columns")
    result: dict[str, str | None] = {}
    if not isinstance(columns, dict) or not columns:
        problems.append(ErrorDetail(at("columns"), "must map each header to a field "
                                    "(phone, client.inn, client.title, client.id) or to null "
                                    "to skip it"))
    else:
        for header, target in columns.items():
            if target is not None and (not isinstance(target, str) or not target.strip()):
                problems.append(ErrorDetail(at("columns", str(header)),
                                            "must name a field (phone, client.inn...) or be null"))
                continue
            result[str(header).strip()] = None if target is None else target.strip()
    skip = data.get("skip_unknown", False)
    if not isinstance(skip, bool):
        problems.append(ErrorDetail(at("skip_unknown"), "must be true or false"))
    if problems:
        raise MalformedRequest("the mapping is not valid", problems, code="invalid_import")
    return result, bool(skip)


def _unescaped(read: Reader) -> Reader:
    """`read`, after taking off the ' that an export puts before text a spreadsheet would
    run as a formula ('=1+1, '+7 495…): a file exported by Kartoteka imports as it was."""

    def unescaped(field: FieldSpec, cell: Any, locale: Any) -> Any:
        if isinstance(cell, str) and cell.startswith(ESCAPED):
            cell = cell[1:]
        return read(field, cell, locale)
    return unescaped
