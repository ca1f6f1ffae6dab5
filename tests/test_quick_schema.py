"""The quick "surely valid" path of write bodies (engine/records/quick_schema.py) never
accepts what jsonschema refuses: checked on every create and patch schema of the default
setup and the examples, with bodies built from each schema's own properties and values at
their edges, valid and not."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.records.quick_schema import (
    ANNOTATIONS,
    QuickValidator,
    compile_check,
    compile_column_check,
)
from engine.records.schemas import build_schemas
from engine.setup.loader import load_setup
from engine.storage.tables import Storage

ROOT = Path(__file__).resolve().parent.parent
SETUPS = [ROOT / "schemas", *sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())]


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for folder in SETUPS:
        try:
            setup = load_setup(folder)
        except Exception:  # an example that is not a loadable setup folder
            continue
        for name, schemas in build_schemas(Storage(setup)).items():
            found += [(f"{folder.name}.{name}.create", schemas.create),
                      (f"{folder.name}.{name}.patch", schemas.patch)]
    return found


SCHEMAS = _schemas()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False), st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=300), st.sampled_from(["", "a@b.co", "+7 999 000 00 00", "1655000001",
                                             "2026-12-31", "https://example.com", "0", "x" * 256]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _at_length(most: int) -> st.SearchStrategy[str]:
    """Texts of one character fewer than `most`, exactly `most` and one more: a drawn head,
    then one drawn character repeated (drawing each of 255 characters was most of this
    module's time, for a check of the length)."""
    return st.builds(lambda head, fill, size: (head + fill * size)[:size],
                     st.text(max_size=8), st.characters(),
                     st.sampled_from(sorted({max(0, most - 1), most, most + 1})))


def _value(sub: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a property's schema allows, and some at and beyond its edges."""
    kinds = sub.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    options: list[st.SearchStrategy[Any]] = [st.none()] if "null" in kinds else []
    if "enum" in sub:
        options.append(st.sampled_from(sub["enum"]))
    elif "string" in kinds:
        most = sub.get("maxLength", 40)
        text = st.from_regex(sub["pattern"]) if "pattern" in sub else st.text(max_size=most)
        options.append(text)
        options.append(_at_length(most))
    if "integer" in kinds or "number" in kinds:
        low, high = sub.get("minimum", -(2**63)), sub.get("maximum", 2**63 - 1)
        options.append(st.integers(min_value=int(low) - 1, max_value=int(high) + 1))
        if "number" in kinds:
            options.append(st.decimals(min_value=Decimal(str(low)) - 1,
                                       max_value=Decimal(str(high)) + 1, places=2))
    if "boolean" in kinds:
        options.append(st.booleans())
    if "array" in kinds:
        options.append(st.lists(_value(sub.get("items") or {}), max_size=4))
    return st.one_of(options) if options else values


def _near_valid(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {name: _value(properties[name]) for name in required},
        optional={name: _value(sub) for name, sub in properties.items() if name not in required})


def _enum_values(schema: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for sub in (schema.get("properties") or {}).values():
        found += list(sub.get("enum") or []) + list((sub.get("items") or {}).get("enum") or [])
    return found


class _Case:
    """What one schema's examples draw from and are checked by, built once for its 40
    examples (building hypothesis strategies and validators for every example was most of
    this module's time)."""

    def __init__(self, schema: dict[str, Any]):
        self.properties = list(schema.get("properties") or {})
        known = _enum_values(schema)
        self.value = st.one_of(values, st.sampled_from(known) if known else values,
                               st.lists(st.sampled_from(known), max_size=3) if known else values)
        self.body = _near_valid(schema)
        self.key = st.sampled_from([*self.properties, "unknown", "id"])
        self.quick = QuickValidator(schema)
        self.validator = jsonschema.Draft202012Validator(schema)


_CASES: dict[str, _Case] = {}


@pytest.mark.parametrize(("name", "schema"), SCHEMAS, ids=[n for n, _ in SCHEMAS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_quick_path_accepts_only_what_jsonschema_accepts(name: str, schema: dict[str, Any],
                                                             data: st.DataObject) -> None:
    case = _CASES.get(name) or _CASES.setdefault(name, _Case(schema))
    body = data.draw(case.body)  # mostly valid…
    if case.properties and data.draw(st.booleans()):  # …or one value away from it
        body[data.draw(case.key)] = data.draw(case.value)
    if case.quick.surely_valid(body):
        errors = list(case.validator.iter_errors(body))
        assert not errors, (body, [e.message for e in errors])


def test_valid_bodies_take_the_quick_path() -> None:
    """The quick path is taken at all: a plain valid body of the default setup passes it."""
    schemas = dict(SCHEMAS)
    client = QuickValidator(schemas["schemas.client.create"])
    assert client.surely_valid({"name": "Ромашка", "inn": "1655000001", "segments": ["vip"],
                                "email": "a@b.co", "kind": None})
    for body in ({"name": ""}, {"name": "x", "inn": "12"}, {"name": "x", "segments": ["vip", "vip"]},
                 {"name": "x", "nope": 1}, {}, {"name": 5}, {"name": "x", "owner": True}):
        assert not client.surely_valid(body)
        assert list(client.iter_errors(body))  # and jsonschema says why


@pytest.mark.parametrize(("schema", "value", "sure"), [
    ({"type": "integer", "minimum": 0}, 1.0, False),  # a whole float: left to jsonschema
    ({"type": "number", "maximum": 1}, Decimal("0.5"), True),
    ({"type": "number", "exclusiveMaximum": 1}, 1, False),
    ({"enum": [1, "a"]}, True, False),  # True == 1 in Python, not in JSON
    ({"type": "string", "maxLength": 2}, "秘密", True),  # code points, not bytes
    ({"type": "string", "pattern": "^a"}, "ba", False),
    ({"anyOf": [{"type": "string"}]}, "x", False),  # not compiled: never sure
    ({"type": "string", "x-note": 1, "format": "email"}, "not an e-mail", True),
])
def test_keyword_by_keyword(schema: dict[str, Any], value: Any, sure: bool) -> None:
    assert compile_check(schema)(value) is sure
    if sure:
        assert jsonschema.Draft202012Validator(schema).is_valid(value)


def _distinct_properties() -> list[tuple[str, dict[str, Any]]]:
    """Every distinct property schema of every create schema (what an import's columns are
    checked by), named after the first property that has it: most are alike (a text of 255
    characters, a nullable link), and alike schemas are checked alike."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, schema in SCHEMAS:
        if name.endswith(".create"):
            for key, sub in (schema.get("properties") or {}).items():
                checked = {word: v for word, v in sub.items() if word not in ANNOTATIONS}
                found.setdefault(json.dumps(checked, sort_keys=True, default=str),
                                 (f"{name}.{key}", sub))
    return list(found.values())


PROPERTIES = _distinct_properties()


def _judged(check: Any, value: Any) -> bool:
    try:
        return bool(check(value))
    except Exception:  # not sure, as QuickValidator.sure and the import's columns take it
        return False


@pytest.mark.parametrize(("name", "schema"), PROPERTIES, ids=[n for n, _ in PROPERTIES])
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_column_check_says_what_the_value_check_says_of_each(
        name: str, schema: dict[str, Any], data: st.DataObject) -> None:
    """An import's column of a batch is checked at once (`compile_column_check`): sure
    exactly when the property's own check is sure of every value (and never when any is
    refused), whatever the mix of types, edges, NaNs and empty cells."""
    if name not in _COLUMNS:  # built once per property, not for each of its examples
        known = list(schema.get("enum") or []) + list((schema.get("items") or {}).get("enum") or [])
        one = st.one_of(_value(schema), values, st.sampled_from(known) if known else values,
                        st.sampled_from([float("nan"), Decimal("NaN"), None, "", True, 0, -1]))
        _COLUMNS[name] = (st.lists(one, max_size=8), st.lists(_value(schema), max_size=5),
                          compile_check(schema), compile_column_check(schema))
    mixed, plain, value_check, column_check = _COLUMNS[name]
    column = data.draw(mixed)
    if data.draw(st.booleans()):  # mostly one kind, as a file's column is
        column = data.draw(plain)
    each = all(_judged(value_check, value) for value in column)
    assert _judged(column_check, column) is each


_COLUMNS: dict[str, tuple[Any, Any, Any, Any]] = {}


@pytest.mark.parametrize(("schema", "column", "sure"), [
    ({"type": ["string", "null"], "maxLength": 2}, ["ab", None, "秘密"], True),
    ({"type": ["string", "null"], "maxLength": 2}, ["ab", None, "abc"], False),
    ({"type": "string", "minLength": 1}, ["a", ""], False),
    ({"type": ["integer", "null"], "minimum": 0, "maximum": 9}, [0, 9, None], True),
    ({"type": ["integer", "null"], "minimum": 0}, [3, -1], False),
    ({"type": ["integer"], "minimum": 0}, [3, True], False),  # a boolean is no integer
    ({"type": ["string", "number"], "minimum": 0, "multipleOf": 0.01}, ["-5", 3], True),
    ({"type": ["string", "number"], "minimum": 0, "multipleOf": 0.01}, [Decimal("0.5")], False),
    ({"type": "number", "minimum": 0}, [1.0, float("nan")], False),  # floats: one by one
    ({"enum": ["a", None]}, ["a", None, "a"], True),
    ({"enum": [1, "a"]}, [1, True], False),  # True == 1 in Python, not in JSON
    ({"type": "string", "pattern": "^[0-9]+$"}, ["12", "1a"], False),
    ({"type": "string"}, [], True),
])
def test_a_column_check_keyword_by_keyword(schema: dict[str, Any], column: list[Any],
                                           sure: bool) -> None:
    assert _judged(compile_column_check(schema), column) is sure
    assert all(_judged(compile_check(schema), value) for value in column) is sure
