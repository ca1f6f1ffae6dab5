"""The language of a caller's messages: `Accept-Language` matched against the setup's.

    Accept-Language: fa-IR, fa;q=0.9, en;q=0.5   with languages [en, ru, fa]  →  fa

Tags are tried by weight (ties in the order written); a tag matches a language equal to
it or to its primary subtag (`ru-RU` → `ru`, `pt` ↔ `pt-BR` in either direction), case
aside. `*` or no match gives the setup's first language.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick_language(header: str | None, languages: Sequence[str]) -> str | None:
    """The first of `languages` the header asks for, else the first of `languages`."""
    default = languages[0] if languages else None
    if not header:
        return default
    wanted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if tag and weight > 0:
            wanted.append((-weight, position, tag.strip().lower()))
    lowered = {lang.lower(): lang for lang in languages}
    for _, _, tag in sorted(wanted):
        if tag == "*":
            return default
        if tag in lowered:
            return lowered[tag]
        primary = tag.split("-")[0]
        for lower, lang in lowered.items():
            if lower.split("-")[0] == primary:
                return lang
    return default
