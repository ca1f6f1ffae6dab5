"""Dynamic defaults on create: `today + 7d`, `now`, `$user` (engine/setup/defaults.py).

Filled in after a body is checked and before the record is written, for each field the
body leaves out: the moment in the setup's time zone on the engine's clock, the acting
user's id (none outside a user's request: the field stays empty, and a required one is
refused as missing). The value goes through the field type's own checks, so a declared
`min`/`max` holds for computed defaults too.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from engine.errors import ErrorDetail, ValidationFailed
from engine.setup.spec import EntitySpec
from engine.types.fields import ValueProblem
from engine.types.moments import Clock


def fill_dynamic_defaults(spec: EntitySpec, values: dict[str, Any], clock: Clock,
                          timezone: str, user_id: int | None) -> None:
    """Set each dynamic default `values` leaves out, or raise `ValidationFailed`."""
    dynamic = [(field, field.dynamic_default) for field in spec.fields.values()
               if field.dynamic_default is not None and field.name not in values]
    if not dynamic:
        return
    now, zone = clock(), ZoneInfo(timezone)
    problems = []
    for field, default in dynamic:
        try:
            value = default.value(field, field.type, now, zone, user_id)
        except ValueProblem as problem:
            problems.append(ErrorDetail(field.name, f"the default {default.text} {problem}"))
            continue
        if value is None and field.required:
            problems.append(ErrorDetail(field.name, "is required (its default, $user, is empty "
                                                    "when no user is acting)"))
        values[field.name] = value
    if problems:
        raise ValidationFailed(f"the {spec.name} is not valid", problems)
