"""Record titles: an entity's `title:` template filled from its records, as the acting user
reads them.

    title: "{number} {client.name}"        →   "S-1001 ООО «Ромашка»"

A placeholder is a field of the record, `id`, `stage`, or a field of a record a one-way
link points to (`{client.name}`: the loader checks each). The records come from
`Records.fetch`, in the acting user's scope and without their hidden fields: a record they
may not read has no title, and a field they may not see is left empty — a title never
shows more than the record does. Values are written as the API writes them (`1234.50`,
`2026-12-31`), lists joined by `, `; spaces left by empty values are squeezed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.setup.spec import EntitySpec

if TYPE_CHECKING:
    from engine.records.service import Records

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
Record = dict[str, Any]


@dataclass(frozen=True)
class TitleTemplate:
    """An entity's title, split into text and placeholders (`(None, field)` for the record's
    own field, `(link, field)` for a linked record's)."""

    entity: str
    parts: tuple[str | tuple[str | None, str], ...]

    @classmethod
    def of(cls, spec: EntitySpec) -> TitleTemplate | None:
        if not spec.title:
            return None
        parts: list[str | tuple[str | None, str]] = []
        position = 0
        for match in PLACEHOLDER.finditer(spec.title):
            parts.append(spec.title[position:match.start()])
            head, _, tail = match.group(1).strip().partition(".")
            link = spec.links.get(head) if tail else None
            if tail and (link is None or link.many or link.polymorphic):
                parts.append(match.group(0))  # not a path a title can follow: as written
            else:
                parts.append((head, tail) if tail else (None, head))
            position = match.end()
        parts.append(spec.title[position:])
        return cls(spec.name, tuple(part for part in parts if part != ""))

    @property
    def links(self) -> tuple[str, ...]:
        """The links whose records the title reads."""
        return tuple(dict.fromkeys(part[0] for part in self.parts
                                   if isinstance(part, tuple) and part[0] is not None))

    def render(self, record: Mapping[str, Any], linked: Mapping[str, Mapping[str, Any] | None]
               ) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            link, name = part
            source = record if link is None else linked.get(link)
            out.append("" if source is None else _text(source.get(name)))
        return " ".join("".join(out).split())


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value if item is not None)
    return str(value)


class Titles:
    """The titles of one engine's records, for the acting user."""

    def __init__(self, records: Records):
        self.records = records
        self.templates = {name: TitleTemplate.of(spec)
                          for name, spec in records.storage.setup.entities.items()}

    def has_title(self, entity: str) -> bool:
        return self.templates.get(entity) is not None

    def of(self, conn: sa.Connection, entity: str, ids: Iterable[int]) -> dict[int, str]:
        """id → title of those records of `entity` the acting user may read."""
        template = self.templates.get(entity)
        wanted = {i for i in ids if i is not None}
        if template is None or not wanted:
            return {}
        found = self.records.fetch(conn, entity, wanted)
        spec = self.records.storage.setup.entities[entity]
        linked: dict[str, dict[int, Record]] = {}
        for link in template.links:
            targets = {r[link] for r in found if isinstance(r.get(link), int)}
            linked[link] = {r["id"]: r for r in self.records.fetch(
                conn, spec.links[link].target, targets)}
        return {record["id"]: template.render(record, {
            link: linked[link].get(record.get(link)) for link in template.links})  # type: ignore[arg-type]
            for record in found}
