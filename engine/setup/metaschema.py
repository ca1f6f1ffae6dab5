"""The meta-schema: JSON Schemas that a setup's YAML files must satisfy.

They check shape only (which keys, which kinds of value); names, cross-references and
type-specific rules are checked in `engine/loader.py`, where a message can say more.
`x-message` on a schema is our own keyword: the message shown when that schema fails;
`{value}` in it stands for the value found. `x-hint`, also ours, is the hint shown with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema

from engine.errors import Diagnostic
from engine.setup.constraints import ENTITY_KEYS, FIELD_UNIQUE
from engine.setup.duplicates import SHAPE as DUPLICATES
from engine.setup.names import did_you_mean
from engine.setup.source import SourceFile
from engine.types.fields import FieldTypeRegistry

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
    "unique": FIELD_UNIQUE,
    "index": {"type": "boolean"},
    "default": {},
    "min": {},
    "max": {},
    "min_length": {"type": "integer", "minimum": 0},
    "max_length": {"type": "integer", "minimum": 1, "maximum": 1048576},
    "pattern": {"type": "string"},
    # a list of values (each may be {value, label}), or a mapping of value to label:
    # engine/setup/options.py reads the three forms
    "options": {
        "if": {"type": "object"},
        "then": {"type": "object", "minProperties": 1, "additionalProperties": {
            "anyOf": [{"type": "null"}, LABEL],
            "x-message": "must be the option's label: a text, or a mapping of language code "
                         "to text, not {value}",
            "x-hint": "write new: {en: New, ru: Новая}, or new: New"}},
        "else": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {
            "if": {"type": "object"},
            "then": {"type": "object", "required": ["value"], "additionalProperties": False,
                     "properties": {"value": {"type": "string",
                                              "x-message": "must be a text, not {value}",
                                              "x-hint": "quote it: '{value}'"},
                                    "label": LABEL}},
            "else": {"type": "string", "x-message": "must be a text, not {value}",
                     "x-hint": "quote it: '{value}'"}}}},
    "required_in_stages": NAME_LIST,
    "readonly_in_stages": NAME_LIST,
    "label": LABEL,
    "help": LABEL,
    "renamed_from": {"type": "string"},
    "formula": {"type": "string", "minLength": 1,
                "x-message": "must be an expression in quotes, not {value}",
                "x-hint": "write formula: \"amount * 2\""},
    # checked in engine/setup/rollups.py, where the messages can name the ways and fields
    "rollup": {"type": "object", "minProperties": 1,
               "x-message": "must be a mapping such as {sum: lines.amount}, not {value}",
               "x-hint": "write rollup: {sum: lines.amount}, {count: lines} or "
                         "{max: orders.ordered_on, where: {stage: won}}"},
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

#: field keys a link's `through` field cannot have: it is added up from nothing and unique
#: with nothing (one row per linked pair), and it has no stages of its own (a `formula`
#: it may have: computed from the pair's own fields, engine/setup/formula_check.py)
THROUGH_REFUSED = frozenset({"rollup", "unique", "index", "required_in_stages",
                             "readonly_in_stages", "renamed_from"})

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
            "roles": NAME_LIST,
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
        "moved": {
            "type": "object", "additionalProperties": {"type": "string"},
            "x-message": "must be a map {removed stage: stage its records move to}",
            "x-hint": "write moved: {old_stage: new_stage}",
        },
        "label": LABEL,
    },
    "additionalProperties": False,
}


def entity_schema(registry: FieldTypeRegistry) -> dict[str, Any]:
    field_keys = {**COMMON_FIELD_KEYS, **registry.all_extra_keys()}
    field_schema: dict[str, Any] = {
        "if": {"type": "object"},
        "then": {"type": "object", "required": ["type"], "properties": field_keys,
                 "additionalProperties": False},
        "else": {"type": "string",
                 "x-message": "must be a mapping such as {type: string}, or a type name"},
    }
    # a link's `through` fields: field declarations without what a join row cannot have
    through_keys = {k: v for k, v in field_keys.items() if k not in THROUGH_REFUSED}
    through_field = {**field_schema, "then": {**field_schema["then"], "properties": through_keys}}
    link = {**LINK, "then": {**LINK["then"], "properties": {
        **LINK["then"]["properties"],
        "through": {"type": "object", "minProperties": 1, "additionalProperties": through_field}}}}
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
            "links": {"type": "object", "additionalProperties": link},
            "pipeline": PIPELINE,
            "pipelines": {"type": "object", "minProperties": 1, "additionalProperties": PIPELINE},
            "pipeline_by": {"type": "string"},
            "renamed_from": {"type": "string"},
            **ENTITY_KEYS,
            "rules": {"type": "object"},
            "duplicates": DUPLICATES,  # checked by engine/setup/duplicates.py
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
        "timezone": {"type": "string"},
        "region": {"type": "string"},  # checked by engine/setup/phones.py
        "roles": {"type": "object"},
        "automations": {"type": "object"},  # checked by engine/setup/automations.py
        "intakes": {"type": "object"},  # checked by engine/setup/intakes.py
    },
    "additionalProperties": False,
}


# -- turning meta-schema failures into diagnostics ------------------------------------

_TYPE_NAMES = {
    "object": "a mapping (key: value)", "array": "a list", "string": "a text",
    "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "null": "empty",
}


def _yaml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return repr(value)


def shape_diagnostics(source: SourceFile, error: jsonschema.ValidationError) -> Iterator[Diagnostic]:
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    validator = error.validator
    expected: Any = error.validator_value
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(schema.get("properties", {}))
        for key in error.instance:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or "allowed keys: " + ", ".join(allowed)
                yield source.diagnostic("shape.unknown_key", (*path, key),
                                        f"unknown key {key!r}", hint, at_key=True)
        return
    if validator == "required" and isinstance(error.instance, dict):
        for key in expected:
            if key not in error.instance:
                yield source.diagnostic("shape.missing_key", path, f"{key!r} is missing",
                                        _MISSING_HINTS.get(key, f"add '{key}:'"), at_key=True)
        return
    message = schema.get("x-message")
    hint = schema.get("x-hint", "")
    if message is not None:
        # our own wording; `{value}` is the value found (replace, not format: labels hold braces)
        shown = str(error.instance) if isinstance(error.instance, (str, int, float)) \
            and not isinstance(error.instance, bool) else _yaml_kind(error.instance)
        kind = _yaml_kind(error.instance)
        message = message.replace("{value}", kind if message.startswith("must") else repr(shown))
        hint = hint.replace("{value}", shown)
    else:
        if validator == "type":
            kinds = expected if isinstance(expected, list) else [expected]
            names = [str(_TYPE_NAMES.get(t, t)) for t in kinds]
            message = f"must be {' or '.join(names)}, found {_yaml_kind(error.instance)}"
            if expected == "boolean":
                hint = "write true or false"
        elif validator == "enum":
            choices = [str(c) for c in expected]
            yield source.diagnostic(
                "shape.enum", path, f"{error.instance!r} is not allowed here",
                did_you_mean(str(error.instance), choices) or "use one of: " + ", ".join(choices))
            return
        elif validator == "uniqueItems":
            message = "lists the same item twice"
        elif validator in ("minItems", "minProperties"):
            message = "must not be empty"
        elif validator in ("minimum", "maximum"):
            word = "at least" if validator == "minimum" else "at most"
            message = f"must be {word} {expected}, found {error.instance}"
            if "minimum" in schema and "maximum" in schema:
                hint = f"use a number from {schema['minimum']} to {schema['maximum']}"
        elif validator == "minLength":
            message = "must not be empty"
        else:
            message = error.message
    yield source.diagnostic(f"shape.{validator}", path, message, hint)


_MISSING_HINTS = {
    "type": "add 'type:' with one of: string, text, integer, decimal, money, boolean, date, "
            "datetime, email, phone, url, choice, multichoice, json",
    "to": "add 'to:' naming the linked entity",
    "stages": "add 'stages: [first, second, ...]'",
    "name": "add 'name:'",
}
