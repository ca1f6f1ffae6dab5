"""Texts of automations with the trigger record's values: `{field}` and `{link.field}`.

A tiny renderer on purpose, never `str.format` (whose `{0.__class__}` and format specs
reach into Python objects): a placeholder is a dotted path of names the setup checked at
load time; its value comes from `lookup`, rendered as the API renders it; nothing found
(an empty field, a hidden one, a link to nobody) is the empty text. `{{` and `}}` are
literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z0-9_.]+)\}")


def render(template: str, lookup: Callable[[str], Any]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        return text_of(lookup(match.group(1)))
    return _PLACEHOLDER.sub(one, template)


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(text_of(v) for v in value)
    if isinstance(value, dict):  # a polymorphic link's value, an embedded record
        return str(value.get("id", ""))
    return str(value)
