"""What the pages show, worked out from the setup, the engine's JSON Schemas and the
caller's rights: list columns, filters, form inputs and values as people read them.

Nothing here is written for one setup: a column, a filter or an input follows from a
field's type and its published schema, so a consultant's setup gets the same app as the
examples. Hidden fields never reach a page (the engine leaves them out of records, and
they are left out of columns, filters and forms); read-only ones are shown but disabled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape

from engine.access.scopes import Rights
from engine.records.titles import TitleTemplate
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, SetupSpec, label_text

#: field types whose values read as numbers (a plug-in type says so through its schema)
NUMBERS = frozenset({"integer", "decimal", "money"})
#: at most this many columns besides the title, and filters, on a list
MAX_COLUMNS = 6
MAX_FILTERS = 8


@dataclass
class Column:
    name: str  # a field, a one-way link, "stage", or "" for the title
    label: str
    sort: str | None  # the field a click sorts by; None: not sortable


@dataclass
class Filter:
    """One filter input of the list grammar: `key` is the query parameter it fills."""

    label: str
    kind: str  # choice | range | link
    keys: tuple[str, ...]
    input: str = "text"  # for ranges: number, date
    options: list[tuple[str, str]] = field(default_factory=list)  # (value, label)
    target: str = ""  # for links: the entity the picker searches


@dataclass
class Input:
    """One input of a create or edit form, made from the field's JSON Schema."""

    name: str
    label: str
    kind: str  # text textarea number decimal date datetime checkbox select checks
    #            link links poly json ids user users
    required: bool = False
    readonly: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    places: int | None = None
    max_length: int | None = None
    targets: tuple[str, ...] = ()
    required_in: list[str] = field(default_factory=list)  # stage labels
    required_now: bool = False
    help: str = ""
    value: Any = None
    titles: dict[str, str] = field(default_factory=dict)  # "entity:id" → title


def text(label: Mapping[str, str] | None, language: str | None) -> str:
    return label_text(label, language) if label else ""


def field_label(spec: EntitySpec, name: str, language: str | None) -> str:
    if name in spec.fields:
        return text(spec.fields[name].label, language) or name
    if name in spec.links:
        return text(spec.links[name].label, language) or name
    return name


def option_label(spec: FieldSpec, value: Any, language: str | None) -> str:
    labels = spec.option_labels.get(value) if isinstance(value, str) else None
    return text(labels, language) if labels else str(value)


def options(spec: FieldSpec, language: str | None) -> list[tuple[str, str]]:
    return [(value, option_label(spec, value, language)) for value in spec.options or ()]


def stage_labels(spec: EntitySpec, language: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    if spec.pipeline:
        for pipeline in spec.pipeline.pipelines.values():
            for stage in pipeline.stages:
                labels.setdefault(stage.name, text(stage.label, language) or stage.name)
    return labels


def _hidden(rights: Rights | None) -> frozenset[str]:
    return frozenset(rights.hidden) if rights else frozenset()


def title_fields(spec: EntitySpec) -> tuple[str, ...]:
    """The record's own fields its title shows, in order."""
    template = TitleTemplate.of(spec)
    if template is None:
        return ()
    return tuple(part[1] for part in template.parts
                 if isinstance(part, tuple) and part[0] is None and part[1] in spec.fields)


def _is_number(spec: FieldSpec) -> bool:
    return spec.type.name in NUMBERS


def _listable(spec: FieldSpec) -> bool:
    return spec.type.name not in ("text", "json", "users") and not spec.type.name.endswith("json")


def columns(spec: EntitySpec, rights: Rights | None, language: str | None,
            title_word: str) -> list[Column]:
    """The title (linking to the card), the stage, then the first fields the title does not
    already show and one-way links, as many as fit."""
    hidden = _hidden(rights)
    shown = title_fields(spec)
    first_sort = next((n for n in shown if n not in hidden and spec.fields[n].type.sortable), "id")
    out = [Column("", title_word if spec.title else "#", first_sort)]
    if spec.pipeline:
        out.append(Column("stage", "", "stage"))
    for name, fspec in spec.fields.items():
        if len(out) > MAX_COLUMNS:
            break
        if name in hidden or name in shown or not _listable(fspec):
            continue
        out.append(Column(name, field_label(spec, name, language),
                          name if fspec.type.sortable else None))
    for link in spec.links.values():
        if len(out) > MAX_COLUMNS + 1:
            break
        if not link.many and not link.through and link.name not in hidden:
            out.append(Column(link.name, field_label(spec, link.name, language),
                              None if link.polymorphic else link.name))
    return out


def filters(spec: EntitySpec, rights: Rights | None, language: str | None,
            words: Mapping[str, str]) -> list[Filter]:
    """Filters by field type in the list grammar: choices by label, ranges for numbers and
    dates, one-way links by title."""
    hidden = _hidden(rights)
    out: list[Filter] = []
    if spec.pipeline:
        labels = stage_labels(spec, language)
        out.append(Filter(words["stage"], "choice", ("stage[eq]",), options=list(labels.items())))
    for name, fspec in spec.fields.items():
        if name in hidden:
            continue
        label = field_label(spec, name, language)
        operators = fspec.type.operators
        if fspec.options and "eq" in operators:
            out.append(Filter(label, "choice", (f"{name}[eq]",), options=options(fspec, language)))
        elif fspec.options and "contains" in operators:
            out.append(Filter(label, "choice", (f"{name}[contains]",),
                              options=options(fspec, language)))
        elif fspec.type.name == "boolean":
            out.append(Filter(label, "choice", (f"{name}[eq]",),
                              options=[("true", words["yes"]), ("false", words["no"])]))
        elif (_is_number(fspec) or fspec.type.moment_kind) and "gte" in operators:
            out.append(Filter(label, "range", (f"{name}[gte]", f"{name}[lte]"),
                              input="date" if fspec.type.moment_kind else "number"))
    for link in spec.links.values():
        if not link.many and not link.polymorphic and link.name not in hidden:
            out.append(Filter(field_label(spec, link.name, language), "link",
                              (f"{link.name}[eq]",), target=link.target))
    return out[:MAX_FILTERS]


def _schema_types(prop: Mapping[str, Any]) -> set[str]:
    kind = prop.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def inputs(spec: EntitySpec, schema: Mapping[str, Any], rights: Rights | None,
           language: str | None, record: Mapping[str, Any] | None,
           next_stage: str | None = None) -> list[Input]:
    """The form's inputs: one per property of the create (or patch) schema the API
    enforces, in the setup's order; server-set and computed fields are not in the schema.
    A field is marked required when the record's stage needs it, or `next_stage` (where
    a refused move was headed) does."""
    hidden = _hidden(rights)
    readonly = frozenset(rights.readonly) if rights else frozenset()
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    stages = stage_labels(spec, language)
    needing = {(record or {}).get("stage"), next_stage} - {None}
    out: list[Input] = []
    for name, prop in properties.items():
        if name == "owner" or name in hidden:
            continue
        item = Input(name, field_label(spec, name, language), "text",
                     required=name in required, readonly=name in readonly,
                     value=(record or {}).get(name, prop.get("default") if record is None else None))
        fspec = spec.fields.get(name)
        link = spec.links.get(name)
        if fspec is not None:
            _field_input(item, fspec, prop, language)
            item.required_in = [stages.get(s, s) for s in sorted(fspec.required_in_stages)]
            item.required_now = bool(needing & fspec.required_in_stages)
            item.help = text(fspec.help, language)
        elif link is not None:
            if link.through:
                continue  # pairs with values are edited on the card (pairs.html)
            item.kind = "poly" if link.polymorphic else "links" if link.many else "link"
            item.targets = link.targets
        else:
            continue
        out.append(item)
    return out


def pair_inputs(link: LinkSpec, language: str | None, values: Mapping[str, Any] | None = None
                ) -> list[Input]:
    """The inputs of one pair of a link that carries data: its through fields, as the PUT
    of a pair takes them (`values`: the pair's, else each field's default). A formula of
    the pairs is shown, never sent (readonly). Inputs a pair row cannot hold compactly
    (date-times, JSON, texts) are plain text boxes sending what is typed."""
    out = []
    for name, fspec in link.through.items():
        value = (values or {}).get(name) if values is not None else fspec.default
        item = Input(name, text(fspec.label, language) or name, "text",
                     required=fspec.required, readonly=fspec.formula is not None, value=value)
        _field_input(item, fspec, fspec.type.json_schema(fspec), language)
        if item.kind in ("datetime", "json", "textarea", "ids"):
            item.kind = "text"
        item.help = text(fspec.help, language)
        out.append(item)
    return out


def _field_input(item: Input, fspec: FieldSpec, prop: Mapping[str, Any],
                 language: str | None) -> None:
    types = _schema_types(prop)
    items = prop.get("items", {})
    type_name = fspec.type.name
    item.max_length = prop.get("maxLength")
    if fspec.type.refers_to_users:  # the page fills in the active users (WebApp.form)
        item.kind = "users" if "array" in types else "user"
    elif fspec.options and "array" in types:
        item.kind, item.options = "checks", options(fspec, language)
    elif fspec.options or "enum" in prop:
        item.kind = "select"
        item.options = options(fspec, language) if fspec.options else [
            (str(v), str(v)) for v in prop["enum"] if v is not None]
    elif "boolean" in types:
        item.kind = "checkbox"
    elif type_name in ("decimal", "money"):
        item.kind, item.places = "decimal", fspec.params.get("places")
    elif "integer" in types:
        item.kind = "number"
    elif "number" in types:
        item.kind = "decimal"
    elif prop.get("format") == "date":
        item.kind = "date"
    elif prop.get("format") == "date-time":
        item.kind = "datetime"
    elif "array" in types and _schema_types(items) & {"integer"}:
        item.kind = "ids"
    elif type_name == "text":
        item.kind = "textarea"
    elif not types & {"string"}:
        item.kind = "json"


def prefill(spec: EntitySpec, inputs: list[Input], params: Sequence[tuple[str, str]]
            ) -> dict[str, Any]:
    """A new record's links given in the query (`client=7`, `about=sale:7`): set on their
    inputs; returns them as a record's values, for their titles."""
    given = dict(params)
    values: dict[str, Any] = {}
    for item in inputs:
        text = given.get(item.name, "")
        if item.readonly or not text:
            continue
        if item.kind == "link" and text.isascii() and text.isdigit() and len(text) < 19:
            values[item.name] = int(text)
        elif item.kind == "poly":
            target, _, number = text.partition(":")
            if target in item.targets and number.isascii() and number.isdigit() and len(number) < 19:
                values[item.name] = {"entity": target, "id": int(number)}
        if item.name in values:
            item.value = values[item.name]
    return values


# -- values as people read them ---------------------------------------------------------------

def card_href(entity: str, record_id: Any) -> str:
    return f"/app/{entity}/{int(record_id)}"


def show(spec: EntitySpec, name: str, value: Any, language: str | None,
         titles: Mapping[tuple[str, int], str], words: Mapping[str, str],
         people: Mapping[int, str] | None = None) -> Markup:
    """A field's or link's value as HTML; numbers and dates carry their raw value for the
    page's script to write as the locale does (Intl), the raw value being the fallback;
    users by name when `people` (id → name) is given."""
    if value is None or value == [] or value == "":
        return Markup("")
    if name == "stage":
        return escape(stage_labels(spec, language).get(value, value))
    if name in spec.links:
        return _show_link(spec.links[name], value, titles)
    fspec = spec.fields.get(name)
    if fspec is None:
        return escape(str(value))
    if fspec.type.refers_to_users and people is not None:
        ids = value if isinstance(value, list) else [value]  # a timeline's change: any part
        return escape(", ".join(people.get(i) or f"#{i}" for i in ids if isinstance(i, int)))
    return _show_field(fspec, value, language, words)


def user_ids(spec: EntitySpec, values: Iterable[Mapping[str, Any]]) -> set[int]:
    """The users the fields of these values name (a task's assignee, its observers)."""
    out: set[int] = set()
    for name, fspec in spec.fields.items():
        if fspec.type.refers_to_users:
            for value in values:
                found = value.get(name)
                ids = found if isinstance(found, list) else [found]
                out.update(i for i in ids if isinstance(i, int) and not isinstance(i, bool))
    return out


def _show_field(fspec: FieldSpec, value: Any, language: str | None,
                words: Mapping[str, str]) -> Markup:
    kind = fspec.type.name
    if fspec.options:
        values = value if isinstance(value, list) else [value]
        return escape(", ".join(option_label(fspec, v, language) for v in values))
    if isinstance(value, bool):
        return escape(words["yes"] if value else words["no"])
    if _is_number(fspec) and isinstance(value, (int, float, str)):
        places = fspec.params.get("places", 0)
        return Markup('<data class="num" value="%s" data-places="%s">%s</data>') % (
            value, places, value)
    if fspec.type.moment_kind and isinstance(value, str):
        return Markup('<time class="%s" datetime="%s">%s</time>') % (
            fspec.type.moment_kind, value, value)
    if kind == "email" and isinstance(value, str):
        return Markup('<a href="mailto:%s">%s</a>') % (value, value)
    if kind == "url" and isinstance(value, str) and value.lower().startswith(("http://", "https://")):
        return Markup('<a href="%s" rel="noopener noreferrer">%s</a>') % (value, value)
    if isinstance(value, (dict, list)):
        return Markup("<code>%s</code>") % json.dumps(value, ensure_ascii=False)
    return escape(str(value))


def _show_link(link: LinkSpec, value: Any, titles: Mapping[tuple[str, int], str]) -> Markup:
    refs = linked_refs(link, value)
    parts = [Markup('<a href="%s">%s</a>') % (card_href(entity, i),
                                              titles.get((entity, i)) or f"#{i}")
             for entity, i in refs]
    return Markup(", ").join(parts)


def linked_refs(link: LinkSpec, value: Any) -> list[tuple[str, int]]:
    """(entity, id) of each record a link's value names."""
    if value is None:
        return []
    if link.polymorphic:
        return [(value["entity"], int(value["id"]))] if isinstance(value, dict) else []
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        record_id = item.get("id") if isinstance(item, dict) else item
        if isinstance(record_id, int):
            out.append((link.target, record_id))
    return out


def refs_of(setup: SetupSpec, entity: str, records: Iterable[Mapping[str, Any]],
            names: Iterable[str]) -> dict[str, set[int]]:
    """The ids, per entity, the named links of these records point to."""
    spec = setup.entities[entity]
    wanted: dict[str, set[int]] = {}
    names = [n for n in names if n in spec.links]
    for record in records:
        for name in names:
            for target, record_id in linked_refs(spec.links[name], record.get(name)):
                wanted.setdefault(target, set()).add(record_id)
    return wanted


def query_string(params: Sequence[tuple[str, str]], **changes: str | None) -> str:
    """The query with `changes` applied (None removes a key), for links on a page."""
    kept = [(k, v) for k, v in params if k not in changes]
    kept += [(k, v) for k, v in changes.items() if v is not None]
    return ("?" + urlencode(kept)) if kept else "?"
