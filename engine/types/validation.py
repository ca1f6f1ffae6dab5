"""The JSON Schema validator every value of a record is checked with.

Draft 2020-12 as the `jsonschema` package implements it, except `multipleOf` on numbers
with a fraction: the package divides floats (`0.003 / 0.001` is `2.9999999999999996`,
"not a multiple"), while a decimal field's step is exact. A float is taken as the decimal
it stands for (`number_decimal`), an integer or a decimal as itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import ValidationError

from engine.types.fields import WIDE, number_decimal


def _exact(number: int | float) -> Decimal:
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


def _multiple_of(validator: Any, step: int | float, instance: Any,
                 schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "number"):
        return
    exact_step = _exact(step)
    value: Decimal | None = Decimal(instance) if isinstance(instance, int) else None
    if isinstance(instance, float | Decimal):
        exponent = exact_step.as_tuple().exponent
        value = number_decimal(instance, max(0, -exponent) if isinstance(exponent, int) else 0)
    if value is None or value.remainder_near(exact_step, context=WIDE) != 0:
        exponent = exact_step.as_tuple().exponent
        power_of_ten = exact_step.as_tuple().digits == (1,) and isinstance(exponent, int)
        yield ValidationError(f"has more than {-int(exponent)} decimal places"
                              if power_of_ten and int(exponent) < 0 else
                              f"must be a multiple of {step}")


#: typed as the class it extends: the same interface (jsonschema's `extend` is untyped)
Validator = cast(type[jsonschema.Draft202012Validator], jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"multipleOf": _multiple_of}))
