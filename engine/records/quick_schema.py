"""A quick yes for the write bodies that are valid, before jsonschema says why others are not.

A write's body is checked against its entity's JSON Schema (engine/records/schemas.py).
jsonschema walks the schema anew for every body, which costs more than the write's SQL
on a bulk or import row. `QuickValidator` compiles the schema once into small Python
checks that answer only "surely valid" or "not sure": a body they pass is one jsonschema
passes too, so it needs no other check; any other body goes to jsonschema, which finds
and words every problem exactly as before. Nothing is ever accepted on the quick path
that jsonschema would refuse:

- only the keywords our schemas use are compiled (type, enum, const-free strings and
  numbers, lengths, patterns, bounds, steps, properties, required, additionalProperties,
  items, uniqueItems, item counts); a (sub)schema with any other validating keyword is "not
  sure" for every value;
- each keyword's meaning follows jsonschema's Draft 2020-12 (pattern is `re.search`, a
  length counts code points, a bound applies to numbers only, `format` asserts nothing);
- where Python's values blur JSON types, the check is stricter than jsonschema (an
  integer must be an `int`, not a whole float; an enum member must have the value's very
  type), which only sends more bodies to jsonschema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import jsonschema

from engine.types.fields import NO_NUL
from engine.types.validation import Validator

Check = Callable[[Any], bool]

#: keywords that assert nothing for these validators (no format checker is configured)
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "readOnly",
                         "writeOnly", "deprecated", "$comment", "format"})
VALIDATING = frozenset(jsonschema.Draft202012Validator.VALIDATORS)


def _never(value: Any) -> bool:
    return False


def _always(value: Any) -> bool:
    return True


def _number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def compile_check(schema: Any) -> Check:
    """The "surely valid" check of a schema (a check always "not sure" for what it cannot
    judge)."""
    if schema is True:
        return _always
    if not isinstance(schema, dict):
        return _never
    checks: list[Check] = []
    for keyword, value in schema.items():
        if keyword in ANNOTATIONS or keyword not in VALIDATING:
            continue  # an annotation, or a word jsonschema ignores (x-...)
        made = _keyword(keyword, value, schema)
        if made is None:
            return _never  # a keyword not compiled here: jsonschema judges every value
        checks.append(made)
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    return _all_of(checks)


def _all_of(checks: list[Check]) -> Check:
    """Every check passes (a plain loop: this runs per value of every bulk row; two or
    three checks, most fields' count, without the loop)."""
    if len(checks) == 2:
        first, second = checks
        return lambda value: first(value) and second(value)
    if len(checks) == 3:
        first, second, third = checks
        return lambda value: first(value) and second(value) and third(value)

    def check(value: Any) -> bool:
        for one in checks:
            if not one(value):
                return False
        return True
    return check


def _keyword(keyword: str, value: Any, schema: dict[str, Any]) -> Check | None:
    maker = _MAKERS.get(keyword)
    return None if maker is None else maker(value, schema)


#: the Python classes that are surely each JSON type (a subclass is left to jsonschema)
_CLASSES: dict[str, tuple[type, ...]] = {
    "null": (type(None),), "boolean": (bool,), "string": (str,), "integer": (int,),
    "number": (int, float, Decimal), "array": (list,), "object": (dict,)}


def _type(value: Any, schema: dict[str, Any]) -> Check | None:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or any(name not in _CLASSES for name in names):
        return None
    classes = frozenset(cls for name in names for cls in _CLASSES[name])
    return lambda v: type(v) in classes


def _enum(value: Any, schema: dict[str, Any]) -> Check | None:
    if not isinstance(value, list):
        return None
    members = list(value)
    try:  # by (type, value): 1, 1.0 and True are one key otherwise
        keys = frozenset((type(m), m) for m in members)
    except TypeError:  # an unhashable member (a list)
        return lambda v: any(type(m) is type(v) and m == v for m in members)
    return lambda v: (type(v), v) in keys


def _max_length(value: Any, schema: dict[str, Any]) -> Check | None:
    return lambda v: not isinstance(v, str) or len(v) <= value


def _min_length(value: Any, schema: dict[str, Any]) -> Check | None:
    return lambda v: not isinstance(v, str) or len(v) >= value


def _pattern(value: Any, schema: dict[str, Any]) -> Check | None:
    if value == NO_NUL:  # on every string: a test for the one character, not a regex
        return lambda v: not isinstance(v, str) or "\x00" not in v
    try:
        compiled = re.compile(value)
    except (re.error, TypeError):
        return None
    return lambda v: not isinstance(v, str) or compiled.search(v) is not None


def _bound(test: Callable[[Any, Any], bool]) -> Callable[[Any, dict[str, Any]], Check | None]:
    def make(value: Any, schema: dict[str, Any]) -> Check | None:
        if not _number(value):
            return None
        return lambda v: not _number(v) or test(v, value)
    return make


def _multiple_of(value: Any, schema: dict[str, Any]) -> Check | None:
    """Sure for what is not a number (the keyword asserts nothing on it) and for a whole
    number when the step divides 1 (0.01, 0.5, 1); other numbers go to jsonschema's exact
    step (engine/types/validation.py)."""
    if not _number(value) or not value > 0:  # a NaN is not > 0 either
        return None
    step = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    whole_ok = Decimal(1) % step == 0
    return lambda v: not _number(v) or (whole_ok and isinstance(v, int))


def _properties(value: Any, schema: dict[str, Any]) -> Check | None:
    if not isinstance(value, dict):
        return None
    checks = {name: compile_check(sub) for name, sub in value.items()}

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name, item in v.items():
            inner = checks.get(name)
            if inner is not None and not inner(item):
                return False
        return True
    return check


def _additional(value: Any, schema: dict[str, Any]) -> Check | None:
    if value is True:
        return _always
    if value is not False or set(schema) & {"patternProperties", "unevaluatedProperties"}:
        return None
    known = frozenset(schema.get("properties") or {})
    return lambda v: not isinstance(v, dict) or known.issuperset(v)


def _required(value: Any, schema: dict[str, Any]) -> Check | None:
    names = frozenset(value)
    return lambda v: not isinstance(v, dict) or names.issubset(v)


def _items(value: Any, schema: dict[str, Any]) -> Check | None:
    if "prefixItems" in schema:
        return None
    inner = compile_check(value)
    return lambda v: not isinstance(v, list) or all(inner(item) for item in v)


def _unique(value: Any, schema: dict[str, Any]) -> Check | None:
    if value is not True:
        return _always if value is False else None
    # sure only for lists of strings (what multichoice fields hold)
    return lambda v: not isinstance(v, list) or (
        all(isinstance(item, str) for item in v) and len(set(v)) == len(v))


def _max_items(value: Any, schema: dict[str, Any]) -> Check | None:
    return lambda v: not isinstance(v, list) or len(v) <= value


def _min_items(value: Any, schema: dict[str, Any]) -> Check | None:
    return lambda v: not isinstance(v, list) or len(v) >= value


_MAKERS: dict[str, Callable[[Any, dict[str, Any]], Check | None]] = {
    "type": _type, "enum": _enum, "maxLength": _max_length, "minLength": _min_length,
    "pattern": _pattern,
    "minimum": _bound(lambda v, b: v >= b), "maximum": _bound(lambda v, b: v <= b),
    "exclusiveMinimum": _bound(lambda v, b: v > b), "exclusiveMaximum": _bound(lambda v, b: v < b),
    "properties": _properties, "additionalProperties": _additional, "required": _required,
    "multipleOf": _multiple_of, "items": _items, "uniqueItems": _unique,
    "maxItems": _max_items, "minItems": _min_items,
}


ColumnCheck = Callable[[Sequence[Any]], bool]
#: a keyword's check of a column: (its values, the set of their types) → surely valid
_ColumnWord = Callable[[Sequence[Any], set[type]], bool]
#: the types a column check knows exactly (any other type: value by value)
_PLAIN = frozenset({type(None), bool, int, float, Decimal, str, list, dict})
_NUMBERS = frozenset({int, float, Decimal})


def compile_column_check(schema: Any) -> ColumnCheck:
    """The "surely valid" check of many values against one schema at once: True only when
    `compile_check(schema)` passes each of them (an import's column of a batch). Type,
    lengths, enum, pattern, bounds and steps are judged by passes over the values that run
    in C (the set of their types, their longest and shortest text, their least and
    greatest number); a schema with any other keyword, or values of other types (a float,
    whose NaN has no order), value by value. May raise for values Python cannot compare,
    as the value's check may: the caller is then not sure."""
    one = compile_check(schema)

    def each(values: Sequence[Any]) -> bool:
        return all(map(one, values))
    if not isinstance(schema, dict) or one is _never:
        return each
    words: list[_ColumnWord] = []
    for keyword, value in schema.items():
        if keyword in ANNOTATIONS or keyword not in VALIDATING:
            continue
        maker = _COLUMN_MAKERS.get(keyword)
        made = None if maker is None else maker(value, schema)
        if made is None:
            return each
        words.append(made)

    def check(values: Sequence[Any]) -> bool:
        kinds = set(map(type, values))
        if not kinds <= _PLAIN or float in kinds:
            return each(values)
        return all(word(values, kinds) for word in words)
    return check


def _texts(values: Sequence[Any], kinds: set[type]) -> Sequence[str]:
    return values if kinds <= {str} else [v for v in values if type(v) is str]


def _numbers(values: Sequence[Any], kinds: set[type]) -> Sequence[Any]:
    return values if kinds <= _NUMBERS else [v for v in values if type(v) in _NUMBERS]


def _column_type(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or any(name not in _CLASSES for name in names):
        return None
    classes = frozenset(cls for name in names for cls in _CLASSES[name])
    return lambda values, kinds: kinds <= classes


def _column_enum(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
    if not isinstance(value, list):
        return None
    try:  # by (type, value), as `_enum`
        keys = frozenset((type(m), m) for m in value)
    except TypeError:
        return None
    return lambda values, kinds: set(zip(map(type, values), values, strict=True)) <= keys


def _column_max_length(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
    return lambda values, kinds: max(map(len, _texts(values, kinds)), default=0) <= value


def _column_min_length(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
    return lambda values, kinds: min(map(len, _texts(values, kinds)), default=value) >= value


def _column_pattern(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
    if value == NO_NUL:  # on every string: one search of the column's texts joined
        return lambda values, kinds: "\x00" not in "".join(_texts(values, kinds))
    try:
        search = re.compile(value).search
    except (re.error, TypeError):
        return None
    return lambda values, kinds: all(map(search, _texts(values, kinds)))


def _column_bound(least: bool, test: Callable[[Any, Any], bool]
                  ) -> Callable[[Any, dict[str, Any]], _ColumnWord | None]:
    """A bound over the column's least (or greatest) number: no float here, so the
    numbers are ordered (a Decimal NaN raises when compared, and the caller is not sure)."""
    def make(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
        if not _number(value):
            return None
        pick = min if least else max

        def word(values: Sequence[Any], kinds: set[type]) -> bool:
            if not kinds & _NUMBERS:
                return True
            numbers = _numbers(values, kinds)
            return not numbers or test(pick(numbers), value)
        return word
    return make


def _column_multiple_of(value: Any, schema: dict[str, Any]) -> _ColumnWord | None:
    if _multiple_of(value, schema) is None:
        return None
    step = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    whole_ok = Decimal(1) % step == 0
    return lambda values, kinds: not kinds & _NUMBERS or (whole_ok and kinds & _NUMBERS == {int})


_COLUMN_MAKERS: dict[str, Callable[[Any, dict[str, Any]], _ColumnWord | None]] = {
    "type": _column_type, "enum": _column_enum, "maxLength": _column_max_length,
    "minLength": _column_min_length, "pattern": _column_pattern,
    "minimum": _column_bound(True, lambda v, b: v >= b),
    "maximum": _column_bound(False, lambda v, b: v <= b),
    "exclusiveMinimum": _column_bound(True, lambda v, b: v > b),
    "exclusiveMaximum": _column_bound(False, lambda v, b: v < b),
    "multipleOf": _column_multiple_of,
}


class QuickValidator:
    """A Draft 2020-12 validator (no format checker) with a quick "surely valid" path."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        self.full = Validator(schema)  # jsonschema, with an exact multipleOf
        self.surely_valid: Check = compile_check(schema)

    def sure(self, instance: Any) -> bool:
        """Whether `instance` is surely valid (False: jsonschema must judge it)."""
        try:
            return self.surely_valid(instance)
        except Exception:  # a value Python cannot compare (a NaN): jsonschema judges it
            return False

    def iter_errors(self, instance: Any) -> Iterator[jsonschema.ValidationError]:
        if self.sure(instance):
            return iter(())
        return self.full.iter_errors(instance)
