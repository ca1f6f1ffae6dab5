"""The options of a `choice` or `multichoice` field, with a label per language.

    status: {type: choice, options: [new, won, lost]}                  # values only
    status:
      type: choice
      options:                                                         # value: label
        new:  {en: New, ru: Новая, fa: جدید, zh: 新}
        won:  {en: Won, ru: Выиграна}
        lost: Lost                                                     # the first language
    status:
      type: choice
      options: [new, {value: won, label: {en: Won, ru: Выиграна}}]     # a list, mixed

Values stay the identifiers clients send and filter by; labels are the words people read.
A label may leave out a language of the setup (readers fall back to another, as for every
label: `spec.label_text`), but may not name one the setup does not declare. The meta-schema
checks the shapes; this module reads the values and labels out of the three forms and
reports what only they can show: a value given twice, a language the setup lacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from engine.errors import Diagnostic
from engine.setup.names import did_you_mean
from engine.setup.source import SourceFile
from engine.setup.spec import Label

Path_ = tuple[str | int, ...]


def _entries(raw: Any) -> Iterator[tuple[str, Any, Path_]]:
    """(value, raw label or None, path of the label inside `options`) for each option."""
    if isinstance(raw, Mapping):
        for value, label in raw.items():
            yield str(value), label, (value,)
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            if isinstance(item, Mapping):
                yield str(item.get("value")), item.get("label"), (index, "label")
            else:
                yield str(item), None, (index,)


def option_values(raw: Any) -> tuple[str, ...]:
    """The option values, in the order written."""
    return tuple(value for value, _, _ in _entries(raw))


def option_labels(raw: Any, languages: tuple[str, ...]) -> Mapping[str, Label]:
    """Each labelled option's label by language (a plain text is in the first language)."""
    labels: dict[str, Label] = {}
    for value, label, _ in _entries(raw):
        if isinstance(label, str):
            labels[value] = MappingProxyType({languages[0]: label})
        elif isinstance(label, Mapping) and label:
            labels[value] = MappingProxyType({str(k): str(v) for k, v in label.items()})
    return MappingProxyType(labels)


def option_problems(source: SourceFile, path: Path_, raw: Any,
                    languages: tuple[str, ...]) -> list[Diagnostic]:
    """A value given twice, or a label in a language the setup does not declare."""
    problems = []
    seen: set[str] = set()
    base = (*path, "options")
    for value, label, where in _entries(raw):
        if value in seen:
            problems.append(source.diagnostic(
                "field.options", (*base, where[0]), f"lists the option {value!r} twice",
                "give each option once, with all its labels"))
        seen.add(value)
        for language in label if isinstance(label, Mapping) else ():
            if language not in languages:
                problems.append(source.diagnostic(
                    "field.option_label", (*base, *where, language),
                    f"labels option {value!r} in {language!r}, which is not a language of "
                    "the setup", did_you_mean(str(language), languages)
                    or "add it to languages: in setup.yaml, or use one of: "
                    + ", ".join(languages), at_key=True))
    return problems
