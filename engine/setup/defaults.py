"""Defaults computed when a record is created, and the setup's time zone they are taken in.

    due_on:   {type: date, default: today + 7d}
    start_at: {type: datetime, default: now}
    assignee: {type: user, default: $user}

A field's `default:` is a plain value, checked once when the setup loads, unless it is
dynamic: a relative moment on a `date` or `datetime` field (engine/types/moments.py), or
`$user` on a field of user ids (`refers_to_users`). A dynamic default is kept as text and
meaning (`DynamicDefault`), and the records service asks it for a value on each create —
in the setup's `timezone:` (an IANA name, UTC unless setup.yaml says otherwise), with the
acting user (none from the command line or while a database has no users: the field is
then left empty).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from engine.types.fields import FieldSpec, FieldType, ValueProblem
from engine.types.moments import NotRelative, Relative, parse_relative

USER = "$user"
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class DynamicDefault:
    """A default computed on each create: a relative moment, or the acting user."""

    text: str
    moment: Relative | None = None

    @property
    def user(self) -> bool:
        return self.moment is None

    def value(self, field: FieldSpec, field_type: FieldType, now: dt.datetime,
              zone: dt.tzinfo, user_id: int | None) -> Any:
        """The value a record created at `now` by `user_id` gets (None: left empty)."""
        if self.moment is None:
            return None if user_id is None else field_type.user_default(field, user_id)
        assert field_type.moment_kind is not None
        return field_type.parse(field, self.moment.resolve(now, zone, field_type.moment_kind))


def dynamic_default(field: FieldSpec, field_type: FieldType, raw: Any) -> DynamicDefault | None:
    """The dynamic default `raw` declares for `field`, None when it is a plain value, or
    `ValueProblem` when it tries to be dynamic and cannot."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if text == USER or text.startswith(USER + "."):
        if text != USER:
            raise ValueProblem(f"names {text!r}: a default takes the acting user's id, "
                               "written $user")
        if not field_type.refers_to_users:
            raise ValueProblem("is the acting user, which only a field of users holds; "
                               "declare the field as {type: user, default: $user}")
        return DynamicDefault(USER)
    if field_type.moment_kind is None:
        return None
    try:
        moment = parse_relative(text, field_type.moment_kind)
    except NotRelative as problem:
        raise ValueProblem(str(problem)) from None
    return None if moment is None else DynamicDefault(str(moment), moment)


def timezone_problem(name: Any) -> str | None:
    """Why `name` is not an IANA time zone the server knows, or None."""
    if not isinstance(name, str) or not name.strip():
        return "must be an IANA time zone name such as Europe/Moscow, Asia/Tehran or UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a time zone this server knows"
    return None


def timezone_hint(name: Any) -> str:
    from engine.setup.names import did_you_mean

    return did_you_mean(str(name), sorted(zoneinfo.available_timezones())) or \
        "write an IANA name such as Europe/Moscow, Asia/Tehran, Asia/Shanghai or UTC"
