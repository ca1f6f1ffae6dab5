"""Converting a stored value from one field type to another, or saying why it cannot be.

A value goes out through the old type's JSON form (what the API shows) and back in
through the new type's parser and JSON Schema, so a retype accepts exactly what a client
could have typed into the new field: `12` becomes money `12.00`, `"42"` becomes the
integer 42, `12.50` does not become an integer.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import jsonschema

from engine.setup.spec import FieldSpec
from engine.types.fields import ValueProblem
from engine.types.validation import Validator


class Converter:
    """Converts values stored by field `old` into values field `new` stores."""

    def __init__(self, old: FieldSpec, new: FieldSpec):
        self.old, self.new = old, new
        self._validator = Validator(new.type.json_schema(new))

    def __call__(self, value: Any) -> Any:
        """The converted value; ValueProblem saying why when it cannot be converted."""
        if value is None:
            return None
        old, new = self.old, self.new
        rendered = old.type.render(old, value)
        candidates: list[Any] = [rendered]
        if isinstance(value, Decimal) and value == value.to_integral_value():
            candidates.append(int(value))
        if isinstance(rendered, (dict, list)):
            candidates.append(json.dumps(rendered, ensure_ascii=False))
        elif isinstance(rendered, bool):
            candidates.append(str(rendered).lower())
        elif not isinstance(rendered, str):
            candidates.append(str(rendered))
        first: ValueProblem | None = None
        for candidate in candidates:
            try:
                return self._checked(new.type.parse(new, candidate))
            except ValueProblem as problem:
                first = first or problem
        for candidate in candidates:
            if isinstance(candidate, str):
                try:
                    return self._checked(new.type.parse(new, new.type.parse_text(new, candidate)))
                except (ValueProblem, TypeError, ValueError):
                    continue
        raise first or ValueProblem(f"cannot be {new.type.noun}")

    def _checked(self, parsed: Any) -> Any:
        rendered = self.new.type.render(self.new, parsed)
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(rendered))
        if error is None:
            return parsed
        if error.validator == "maxLength":
            raise ValueProblem(f"is longer than {error.validator_value} characters")
        if error.validator in ("minimum", "maximum"):
            word = "least" if error.validator == "minimum" else "most"
            raise ValueProblem(f"must be at {word} {error.validator_value}")
        raise ValueProblem(str(error.message))


def shown(spec: FieldSpec, value: Any) -> str:
    """A stored value as a consultant reads it in a plan: `'abc'`, `12.50`."""
    rendered = spec.type.render(spec, value)
    text = json.dumps(rendered, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
