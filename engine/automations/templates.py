"""Texts of automations filled with a record's values: `{field}` and `{link.field}`.

The one renderer of notifications, e-mails and values an action writes. Never
`str.format` (whose `{0.__class__}` and format specs reach into Python objects): a
placeholder is a dotted path of names; its value comes from `lookup`, rendered as the API
renders it; nothing found (an empty field, a hidden one, a link to nobody) is the empty
text. `{{` and `}}` are literal braces; any other brace text is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_PLACEHOLDER = re.compile(
    r"\{\{|\}\}|\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}")
#: what a one-line text (a subject) may not hold: each run becomes one space
LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


def render(template: str, lookup: Callable[[str], Any], *, single_line: bool = False) -> str:
    """`template` with each placeholder's value; `single_line=True` (for subjects) turns
    line breaks inside values into spaces."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        text = text_of(lookup(match.group(1)))
        return LINE_BREAKS.sub(" ", text) if single_line else text
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
