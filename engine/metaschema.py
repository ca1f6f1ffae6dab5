"""The meta-schema: JSON Schemas that a setup's YAML files must satisfy.

They check shape only (which keys, which kinds of value); names, cross-references and
type-specific rules are checked in `engine/loader.py`, where a message can say more.
`x-message` on a schema is our own keyword: the message shown when that schema fails;
`{value}` in it stands for the value found. `x-hint`, also ours, is the hint shown with it.
"""

from __future__ import annotations

from typing import Any

from engine.fieldtypes import FieldTypeRegistry

LABEL: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
    ],
    "x-message": "must be a text, or a mapping of language code to text, not {value}",
    "x-hint": "write label: Sale, or label: {en: Sale, ru: Сделка}",
}
NAME_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}

COMMON_FIELD_KEYS: dict[str, Any] = {
    "type": {"type": "string"},
    "required": {"type": "boolean"},
    "unique": {"type": "boolean"},
    "index": {"type": "boolean"},
    "default": {},
    "min": {},
    "max": {},
    "min_length": {"type": "integer", "minimum": 0},
    "max_length": {"type": "integer", "minimum": 1, "maximum": 1048576},
    "pattern": {"type": "string"},
    "options": {"type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"type": "string", "x-message": "must be a text, not {value}",
                          "x-hint": "quote it: '{value}'"}},
    "required_in_stages": NAME_LIST,
    "label": LABEL,
    "help": LABEL,
}

LINK: dict[str, Any] = {
    "if": {"type": "object"},
    "then": {
        "type": "object",
        "required": ["to"],
        "properties": {
            "to": {
                "anyOf": [{"type": "string"},
                          {"type": "array", "minItems": 1, "uniqueItems": True,
                           "items": {"type": "string"}}],
                "x-message": "must name an entity, or list the entities of a polymorphic link",
            },
            "many": {"type": "boolean"},
            "required": {"type": "boolean"},
            "on_delete": {"enum": ["restrict", "cascade", "set_null"]},
            "reverse": {"type": "string"},
            "label": LABEL,
            "help": LABEL,
        },
        "additionalProperties": False,
    },
    "else": {"type": "string", "x-message": "must be a mapping such as {to: client}, or an entity name"},
}

STAGE: dict[str, Any] = {
    "if": {"type": "object"},
    "then": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "label": LABEL,
            "probability": {"type": "integer", "minimum": 0, "maximum": 100},
            "category": {"enum": ["open", "won", "lost", "closed"]},
        },
        "additionalProperties": False,
    },
    "else": {"type": "string", "x-message": "must be a stage name, or {name: ..., label: ...}"},
}

PIPELINE: dict[str, Any] = {
    "type": "object",
    "required": ["stages"],
    "properties": {
        "stages": {"type": "array", "minItems": 1, "items": STAGE},
        "final": NAME_LIST,
        "transitions": {
            "anyOf": [
                {"enum": ["free", "forward"]},
                {"type": "object", "additionalProperties": NAME_LIST},
            ],
            "x-message": "must be free, forward, or a map {stage: [stages it may move to]}",
        },
        "label": LABEL,
    },
    "additionalProperties": False,
}


def entity_schema(registry: FieldTypeRegistry) -> dict[str, Any]:
    field_keys = {**COMMON_FIELD_KEYS, **registry.all_extra_keys()}
    field_schema = {
        "if": {"type": "object"},
        "then": {"type": "object", "required": ["type"], "properties": field_keys,
                 "additionalProperties": False},
        "else": {"type": "string",
                 "x-message": "must be a mapping such as {type: string}, or a type name"},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "entity": {"type": "string"},
            "label": LABEL,
            "plural": LABEL,
            "help": LABEL,
            "title": {"type": "string"},
            "search": NAME_LIST,
            "owner": {"type": "boolean"},
            "fields": {"type": "object", "additionalProperties": field_schema},
            "links": {"type": "object", "additionalProperties": LINK},
            "pipeline": PIPELINE,
            "pipelines": {"type": "object", "minProperties": 1, "additionalProperties": PIPELINE},
            "pipeline_by": {"type": "string"},
        },
        "additionalProperties": False,
    }


SETUP_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "languages": {
            "type": "array", "minItems": 1, "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
                      "x-message": "{value} is not a language code",
                      "x-hint": "use a lower-case ISO 639 code such as en, ru, fa, zh, pt-BR"},
        },
        "roles": {"type": "object"},
        "automations": {"type": "array"},
    },
    "additionalProperties": False,
}
