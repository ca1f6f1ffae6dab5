"""JSON Schemas per entity — `<Entity>Create`, `<Entity>Patch`, `<Entity>` (read) — and
their validators, compiled once per engine and used on every write.

The same documents are published in OpenAPI as named components, so what the docs say
is what the server enforces. One read schema serves every role: a field or link that some
role of the setup may not see (`hidden:`) is left out of that role's answers, so it is not
`required` in `<Entity>`; everything else, and the server-managed columns, always are.
Schema failures are translated into `ErrorDetail`s that name the field the way setup
diagnostics name keys (`products[1]`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import jsonschema

from engine.errors import ErrorDetail, format_path
from engine.records.quick_schema import QuickValidator
from engine.setup.names import SERVER_MANAGED, did_you_mean, pascal
from engine.setup.reads import derived_hidden, transitive_reads
from engine.setup.rules import NO_RULES
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, label_text
from engine.storage.tables import EntityTable, Storage
from engine.types.fields import ValueProblem
from engine.types.validation import Validator

MAX_LINKS_IN_BODY = 1000
REF = "#/components/schemas/"


@dataclass(frozen=True)
class EntitySchemas:
    name: str
    create: dict[str, Any]
    patch: dict[str, Any]
    read: dict[str, Any]
    create_validator: QuickValidator
    patch_validator: QuickValidator

    @property
    def names(self) -> dict[str, str]:
        base = pascal(self.name)
        return {"read": base, "create": base + "Create", "patch": base + "Patch", "list": base + "List"}


def schemas_of(storage: Storage) -> dict[str, EntitySchemas]:
    """The schemas of every entity of `storage`, built once per storage (building them and
    compiling their validators was a third of an engine's start-up): a new dict over them."""
    return dict(storage.once("schemas", lambda: build_schemas(storage)))


def build_schemas(storage: Storage) -> dict[str, EntitySchemas]:
    result = {}
    hidden = hideable(storage)
    for name, table in storage.entities.items():
        create = _write_schema(table, storage.setup.languages[0], patch=False)
        patch = _write_schema(table, storage.setup.languages[0], patch=True)
        _note_locks(patch, storage.setup.rules.get(name, NO_RULES).locked)
        read = _read_schema(table, storage.setup.languages[0], hidden.get(name, {}))
        result[name] = EntitySchemas(
            name, create, patch, read,
            QuickValidator(create),  # engine/records/quick_schema.py
            QuickValidator(patch),
        )
    return result


def _note_locks(patch: dict[str, Any], locked: Mapping[str, frozenset[str]]) -> None:
    """A field read-only in stages says so in the patch schema (a JSON Schema cannot check
    it: the stage is the stored record's, not the body's)."""
    for name, stages in locked.items():
        schema = patch["properties"][name]
        schema["x-readonly-in-stages"] = sorted(stages)
        note = "Read-only while the record is in stage " + ", ".join(sorted(stages)) + "."
        before = schema.get("description")
        schema["description"] = f"{before.rstrip('.')}. {note}" if before else note


def hideable(storage: Storage) -> dict[str, dict[str, list[str]]]:
    """Per entity, its fields and links that at least one role of the setup may not see —
    declared `hidden:`, or computed fields reading what the role may not see — each with
    those roles. Derived once for all entities (what computed fields read is walked once)."""
    found: dict[str, dict[str, list[str]]] = {}
    reads = transitive_reads(storage.setup)
    for role in storage.setup.roles.values():
        derived = derived_hidden(  # computed fields reading what the role may not see
            reads, lambda e, role=role: role.grant(e).hidden,  # type: ignore[misc]
            lambda e, role=role: role.grant(e).scope("read").kind == "none",  # type: ignore[misc]
        )
        for entity in storage.entities:
            names = role.grant(entity).hidden | derived.get(entity, frozenset())
            for name in sorted(names):
                found.setdefault(entity, {}).setdefault(name, []).append(role.name)
    return found


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema:
        return {**schema, "type": [schema.get("type", "string"), "null"],
                "enum": [*schema["enum"], None]}
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**schema, "type": [*kind, "null"]}
    if not schema:
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def _described(schema: dict[str, Any], spec: FieldSpec | LinkSpec, language: str) -> dict[str, Any]:
    described = {**schema, "title": label_text(spec.label, language)}
    help_text = getattr(spec, "help", None)
    if help_text:
        described["description"] = label_text(help_text, language)
    option_labels = getattr(spec, "option_labels", None)
    if option_labels:  # an annotation validators ignore: `enum` keeps the values
        described["x-labels"] = {value: label_text(label, language)
                                 for value, label in option_labels.items()}
    return described


def _link_schema(link: LinkSpec, *, read: bool) -> dict[str, Any]:
    id_schema: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    if link.polymorphic:
        ref: dict[str, Any] = {
            "type": "object",
            "properties": {"entity": {"type": "string", "enum": list(link.targets)},
                           "id": id_schema},
            "required": ["entity", "id"],
            "additionalProperties": False,
        }
        if read:
            ref["properties"]["record"] = {"anyOf": [{"$ref": REF + pascal(t)} for t in link.targets]}
        return ref if link.required else nullable(ref)
    if link.through:
        return _through_schema(link, id_schema, read=read)
    if read:
        id_schema = {"anyOf": [id_schema, {"$ref": REF + pascal(link.target)}]}
    if link.many:
        return {"type": "array", "items": id_schema, "uniqueItems": True,
                "maxItems": MAX_LINKS_IN_BODY}
    if link.required:
        return id_schema
    return {"anyOf": [*id_schema["anyOf"], {"type": "null"}]} if read else nullable(id_schema)


def _through_schema(link: LinkSpec, id_schema: dict[str, Any], *, read: bool) -> dict[str, Any]:
    """A link that carries data: objects of the target's id and the pair's fields; a body
    may also give bare ids (the fields take their defaults)."""
    fields = {name: _pair_field_schema(spec) for name, spec in link.through.items()
              if read or spec.formula is None}  # a formula of the pairs is never sent
    item: dict[str, Any] = {"type": "object", "properties": {"id": id_schema, **fields},
                            "required": ["id"], "additionalProperties": False}
    if read:
        item["properties"]["record"] = {"$ref": REF + pascal(link.target)}
        items: dict[str, Any] = item
    else:
        items = {"if": {"type": "object"}, "then": item, "else": id_schema}
    return {"type": "array", "items": items, "maxItems": MAX_LINKS_IN_BODY}


def _pair_field_schema(spec: FieldSpec) -> dict[str, Any]:
    schema = nullable(spec.type.json_schema(spec))
    if spec.formula is not None:
        schema.update(readOnly=True, **{"x-formula": spec.formula.source})
    return schema


def pair_problems(entity: EntitySpec, link: LinkSpec, body: Mapping[str, Any]) -> list[ErrorDetail]:
    """What is wrong with the values of one pair of a link that carries data (a PUT of
    the pair), said as for a record's fields."""
    schema = {"type": "object", "properties": {
        name: nullable(spec.type.json_schema(spec)) for name, spec in link.through.items()}}
    pair = replace(entity, fields=link.through, links={})
    return schema_problems(Validator(schema), body, pair)


def _write_schema(table: EntityTable, language: str, *, patch: bool) -> dict[str, Any]:
    entity: EntitySpec = table.spec
    properties: dict[str, Any] = {}
    required: list[str] = []
    for spec in entity.fields.values():
        if spec.computed:
            continue  # computed by the server: a client sending it gets 422 field_computed
        schema = spec.type.json_schema(spec)
        if not spec.required:
            schema = nullable(schema)
        properties[spec.name] = _described(schema, spec, language)
        if spec.default is not None:
            properties[spec.name]["default"] = spec.type.render(spec, spec.default)
        if spec.required and not spec.has_default and spec.dynamic_default is None \
                and not patch:
            required.append(spec.name)
    for link in entity.links.values():
        properties[link.name] = _described(_link_schema(link, read=False), link, language)
        if link.required and not patch:
            required.append(link.name)
    if entity.owner:
        properties["owner"] = {
            "type": ["integer", "null"], "minimum": 1, "maximum": 2**63 - 1,
            "description": "The responsible user's id. The creator by default; giving a "
                           "record to someone else needs the role's `reassign` right."}
    document: dict[str, Any] = {
        "type": "object",
        "title": f"{pascal(entity.name)}{'Patch' if patch else 'Create'}",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        document["required"] = required
    return document


def _read_schema(table: EntityTable, language: str,
                 hidden: Mapping[str, list[str]]) -> dict[str, Any]:
    entity = table.spec
    properties: dict[str, Any] = {
        "id": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "version": {"type": "integer", "minimum": 1},
    }
    if entity.owner:
        properties["owner"] = {"type": ["integer", "null"]}
    if entity.pipeline:
        properties["stage"] = {"type": "string", "enum": list(entity.pipeline.all_stage_names)}
    for spec in entity.fields.values():
        schema = spec.type.json_schema(spec, read=True)
        properties[spec.name] = _described(schema if spec.required else nullable(schema),
                                           spec, language)
        if spec.formula is not None:
            properties[spec.name]["readOnly"] = True
            properties[spec.name]["x-formula"] = spec.formula.source
        if spec.rollup is not None:
            properties[spec.name]["readOnly"] = True
            properties[spec.name]["x-rollup"] = spec.rollup.source
    for link in entity.links.values():
        properties[link.name] = _described(_link_schema(link, read=True), link, language)
    for name in hidden:
        note = "Left out of the answers to roles that may not see it."
        before = properties[name].get("description")
        properties[name]["description"] = f"{before.rstrip('.')}. {note}" if before else note
        properties[name]["x-hidden-from"] = hidden[name]  # the roles that do not get it
    return {
        "type": "object",
        "title": pascal(entity.name),
        "properties": properties,
        "required": [name for name in properties if name not in hidden],
        "additionalProperties": False,
    }


def list_schema(entity: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": pascal(entity) + "List",
        "properties": {
            "items": {"type": "array", "items": {"$ref": REF + pascal(entity)}},
            "total": {"type": ["integer", "null"]},
            "next": {"type": ["string", "null"]},
        },
        "required": ["items", "total", "next"],
        "additionalProperties": False,
    }


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "problem": {"type": "string"},
                                       "rule": {"type": "string",
                                                "description": "the broken rule (rule_failed), "
                                                               "the matched duplicates rule"},
                                       # possible_duplicate / duplicate: a candidate
                                       "id": {"type": "integer"},
                                       "title": {"type": ["string", "null"]},
                                       "score": {"type": "integer"},
                                       "mode": {"type": "string"}},
                        "required": ["field", "problem"],
                    },
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def schema_problems(validator: jsonschema.Draft202012Validator | QuickValidator, body: Any,
                    entity: EntitySpec) -> list[ErrorDetail]:
    """Every reason `body` fails the schema, one detail per field, in the user's terms."""
    details: list[ErrorDetail] = []
    seen: set[str] = set()
    for detail in _translate_all(validator, body, entity):
        if detail.field not in seen:
            seen.add(detail.field)
            details.append(detail)
    return details


def _translate_all(validator: jsonschema.Draft202012Validator | QuickValidator, body: Any,
                   entity: EntitySpec) -> Iterator[ErrorDetail]:
    if not isinstance(body, dict):
        yield ErrorDetail("", "the body must be a JSON object")
        return
    known = [*entity.fields, *entity.links]
    for error in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.path]):
        path = list(error.absolute_path)
        where = format_path(path)
        kind = error.validator
        if kind == "additionalProperties" and not path:
            for key in body:
                if key in error.schema.get("properties", {}):
                    continue
                if key in SERVER_MANAGED:
                    yield ErrorDetail(key, "is set by the server and cannot be written"
                                      + ("; move a record with POST /api/<entity>/<id>/stage"
                                         if key == "stage" else ""))
                else:
                    hint = did_you_mean(key, known)
                    yield ErrorDetail(key, "is not a field of " + entity.name + (f"; {hint}" if hint else ""))
        elif kind == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    yield ErrorDetail(format_path([*path, key]), "is required")
        else:
            yield ErrorDetail(where, _problem(error, entity, path))


def _problem(error: jsonschema.ValidationError, entity: EntitySpec, path: list[Any]) -> str:
    kind, value = error.validator, cast(Any, error.validator_value)
    spec = entity.fields.get(path[0]) if path and isinstance(path[0], str) else None
    link = entity.links.get(path[0]) if path and isinstance(path[0], str) else None
    if link is not None and len(path) == 3 and path[2] in link.through:  # a pair's field
        spec, link, path = link.through[path[2]], None, [path[2]]
    if kind in ("type", "anyOf"):
        if error.instance is None:
            return "is required and cannot be empty"
        if spec is not None and len(path) == 1:
            return f"must be {spec.type.noun}"
        if link is not None:
            if link.polymorphic and len(path) == 1:
                return 'must be {"entity": ..., "id": ...}'
            if link.many and len(path) == 1:
                return "must be a list of ids"
            return "must be an id (a positive integer)"
        names = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(str(n) for n in names)
    if kind == "enum":
        options = [str(v) for v in value if v is not None]
        return "must be one of: " + ", ".join(options)
    if kind == "minimum":
        return f"must be at least {value}"
    if kind == "maximum":
        return f"must be at most {value}"
    if kind in ("exclusiveMaximum", "exclusiveMinimum") and spec is not None and "digits" in spec.params:
        whole = spec.params["digits"] - spec.params["places"]  # a decimal's published limit
        if abs(value) == 10 ** whole:
            return f"is too large: at most {whole} digits before the decimal point"
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if kind == "maxLength":
        return f"must be at most {value} characters long"
    if kind == "pattern":
        if spec is not None and spec.pattern is None:
            try:  # the type says which rule its published pattern holds (a decimal's places)
                spec.type.parse(spec, error.instance)
            except ValueProblem as problem:
                return str(problem)
            return f"must be {spec.type.noun}"
        return f"does not match the pattern {value}"
    if kind == "uniqueItems":
        return "lists the same value twice"
    if kind == "maxItems":
        return f"lists more than {value} items"
    if kind == "required":
        return "is missing " + ", ".join(value)
    if kind == "additionalProperties":
        return "has unknown keys"
    return error.message


_SUMS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}
_TIMELINE_ITEM: dict[str, Any] = {
    "type": "object",
    "description": "type is comment, call, email, meeting, stage, change, record or automation",
    "properties": {
        "type": {"type": "string"}, "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"}, "by": {"type": ["integer", "null"]},
    },
    "required": ["type", "id", "at"],
}
#: the prefix of the API's own OpenAPI components (`kartoteka.Error`, `kartoteka.Board`…):
#: an entity's components are PascalCase letters and digits, never with a dot, so an entity
#: named `error`, `board` or `comment` keeps its own schema beside the built-in one
BUILTIN = "kartoteka."


def builtin(name: str) -> str:
    """The component name of a built-in schema (see BUILTIN)."""
    return BUILTIN + name


#: the documents of the pipeline and timeline calls, published in OpenAPI
PIPELINE_SCHEMAS: dict[str, Any] = {
    builtin("StageMove"): {"type": "object", "properties": {"to": {"type": "string"}},
                  "required": ["to"], "additionalProperties": False},
    builtin("Board"): {"type": "object", "required": ["pipeline", "columns"], "properties": {
        "pipeline": {"type": "string"},
        "columns": {"type": "array", "items": {"type": "object", "properties": {
            "stage": {"type": "string"}, "label": {"type": "string"},
            "category": {"type": "string"}, "count": {"type": "integer"}, "sums": _SUMS,
            "items": {"type": "array", "items": {"type": "object"}},
            "next": {"type": ["string", "null"]}},
            "required": ["stage", "count", "sums", "items", "next"]}}}},
    builtin("Funnel"): {"type": "object", "required": ["pipeline", "records", "stages"], "properties": {
        "pipeline": {"type": "string"}, "records": {"type": "integer"},
        "stages": {"type": "array", "items": {"type": "object", "properties": {
            "stage": {"type": "string"}, "reached": {"type": "integer"},
            "conversion": {"type": ["number", "null"]}, "drop_off": {"type": ["integer", "null"]},
            "time_in_stage": {"type": "object"}, "current": {"type": "object"},
            "forecast": _SUMS}, "required": ["stage", "reached"]}}}},
    builtin("Timeline"): {"type": "object", "required": ["items", "next"], "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/kartoteka.TimelineItem"}},
        "next": {"type": ["string", "null"]}}},
    builtin("TimelineItem"): _TIMELINE_ITEM,
    builtin("Comment"): {"type": "object", "properties": {"text": {"type": "string", "minLength": 1}},
                "required": ["text"], "additionalProperties": False},
    builtin("Activity"): {"type": "object", "required": ["kind"], "additionalProperties": False,
                 "properties": {
                     "kind": {"enum": ["call", "email", "meeting"]},
                     "direction": {"enum": ["in", "out", None]},
                     "duration_seconds": {"type": ["integer", "null"], "minimum": 0,
                                          "maximum": 10**7},
                     "subject": {"type": ["string", "null"], "maxLength": 300},
                     "text": {"type": ["string", "null"]},
                     "result": {"type": ["string", "null"]},
                     "at": {"type": ["string", "null"], "format": "date-time"}}},
}
