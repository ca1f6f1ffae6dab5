"""Formula fields across a setup: each `formula:` parsed and type-checked against the
fields it names (through many-to-one links, any depth), its result fitting its `type:`,
and no formula reading itself, directly or through other formulas.

Run by the loader once every entity file has been read, because a path such as
`client.region.rate` reaches other files. Each problem is a located diagnostic
(`sale.yaml:9 fields.net.formula`) with the character of the formula it is about.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Protocol

from engine.errors import Diagnostic
from engine.setup.expressions import (
    DATETIME,
    FIELD_TYPES,
    INT,
    RESULT_TYPES,
    TEXT,
    Formula,
    FormulaProblem,
    compile_formula,
)
from engine.setup.graphs import cycles
from engine.setup.names import did_you_mean
from engine.setup.source import SourceFile
from engine.setup.spec import FieldSpec, LinkSpec, PipelinesSpec

#: server-managed columns a formula may read, and their value types
BUILT_INS = {"id": INT, "created_at": DATETIME, "updated_at": DATETIME, "version": INT}
#: keys a formula field cannot have: the server computes its value
EXCLUSIVE_KEYS = ("required", "default", "required_in_stages", "renamed_from")


class Draft(Protocol):
    """What the check reads of an entity under construction (the loader's draft)."""

    name: str
    source: SourceFile
    data: dict[str, Any]
    field_names: tuple[str, ...]
    fields: dict[str, FieldSpec]
    links: dict[str, LinkSpec]
    pipeline: PipelinesSpec | None


class _Skip(Exception):
    """A path through something already reported broken: no second error."""


def check_formulas(drafts: Mapping[str, Draft], broken: set[str]) -> list[Diagnostic]:
    """Compile every formula into its field's spec (in the drafts); the problems found."""
    problems: list[Diagnostic] = []
    for draft in drafts.values():
        for name, raw in (draft.data.get("fields") or {}).items():
            if isinstance(raw, dict) and "formula" in raw and name in draft.fields:
                problems.extend(_check_one(draft, name, raw, drafts, broken))
        problems.extend(check_pair_formulas(draft))
    if not problems:
        problems.extend(_cycles(drafts))
    return problems


def check_pair_formulas(draft: Draft) -> list[Diagnostic]:
    """The formulas of a link's pairs (`through: {amount: {formula: "price * quantity"}}`),
    compiled into the link's through fields. Such a formula reads the pair's own fields
    only: a pair is written with its values, so what it computes from is at hand, and no
    change elsewhere has to find the pairs reading it."""
    problems: list[Diagnostic] = []
    for link_name, decl in (draft.data.get("links") or {}).items():
        link = draft.links.get(link_name)
        if link is None or not isinstance(decl, dict) or not isinstance(decl.get("through"), dict):
            continue
        through = dict(link.through)
        found: list[Diagnostic] = []
        for name, raw in decl["through"].items():
            if isinstance(raw, dict) and "formula" in raw and name in through:
                found.extend(_check_pair_one(draft, link_name, name, raw, through))
        if not found:
            found.extend(_pair_cycles(draft, link_name, through))
        problems += found
        draft.links[link_name] = replace(link, through=MappingProxyType(through))
    return problems


def _check_pair_one(draft: Draft, link: str, name: str, raw: Mapping[str, Any],
                    through: dict[str, FieldSpec]) -> Iterator[Diagnostic]:
    spec = through[name]
    path = ("links", link, "through", name)
    clashes = [key for key in ("required", "default") if raw.get(key) not in (None, False)]
    for key in clashes:
        yield draft.source.diagnostic(
            "formula.key", (*path, key), f"a formula field takes no {key}: its value is computed",
            f"remove {key}, or remove the formula", at_key=True)
    if spec.type.name not in RESULT_TYPES:
        yield draft.source.diagnostic(
            "formula.type", (*path, "type"), f"a formula cannot compute {_a(spec.type.name)} field",
            "formula fields are " + ", ".join(RESULT_TYPES))
        return
    if clashes:
        return

    def resolve(names: tuple[str, ...], position: int) -> str:
        if len(names) > 1:
            raise FormulaProblem(
                f"{'.'.join(names)!r}: a formula of the pairs of {link} reads the pair's own "
                "fields, not the linked records'", position,
                "give the pair the value it needs as a through field, or compute it on the "
                "records with a formula field")
        field = through.get(names[0])
        if field is None:
            raise FormulaProblem(f"the pairs of {link} have no field {names[0]!r}", position,
                                 did_you_mean(names[0], list(through))
                                 or _listing("fields", list(through)))
        kind = FIELD_TYPES.get(field.type.name)
        if kind is None:
            raise FormulaProblem(f"{names[0]!r} is {_a(field.type.name)} field, which a formula "
                                 "cannot read", position,
                                 "formulas read numbers, money, text, choices, dates and booleans")
        return kind

    try:
        formula = compile_formula(raw["formula"], resolve)
    except FormulaProblem as problem:
        pointer = f"{raw['formula'][:problem.position]}⟨here⟩{raw['formula'][problem.position:]}"
        yield draft.source.diagnostic(
            "formula.invalid", (*path, "formula"),
            f"{problem.message} (at character {problem.position + 1}: {pointer})",
            problem.hint or "see 'Formula fields' in docs/setup-language.md")
        return
    if formula.type not in (*RESULT_TYPES[spec.type.name], "null"):
        yield draft.source.diagnostic(
            "formula.result", (*path, "formula"),
            f"gives {_a(formula.type)}, but the field is {_a(spec.type.name)}",
            _result_hint(formula.type, spec.type.name))
        return
    through[name] = replace(spec, formula=formula)


def _pair_cycles(draft: Draft, link: str, through: Mapping[str, FieldSpec]) -> list[Diagnostic]:
    """A formula of the pairs reading itself through the pair's other formulas."""
    reads = {name: sorted(p[0] for p in field.formula.paths)
             for name, field in through.items() if field.formula is not None}
    return [draft.source.diagnostic(
        "formula.cycle", ("links", link, "through", cycle[0], "formula"),
        f"the formula reads itself: {' → '.join(cycle)}",
        "compute it from other fields of the pair, never in a circle") for cycle in cycles(reads)]


def _check_one(draft: Draft, name: str, raw: Mapping[str, Any], drafts: Mapping[str, Draft],
               broken: set[str]) -> Iterator[Diagnostic]:
    spec = draft.fields[name]
    path = ("fields", name)
    clashes = [key for key in EXCLUSIVE_KEYS if key in raw and raw[key] not in (None, False)]
    for key in clashes:
        yield draft.source.diagnostic(
            "formula.key", (*path, key), f"a formula field takes no {key}: its value is computed",
            f"remove {key}, or remove the formula", at_key=True)
    if spec.type.name not in RESULT_TYPES:
        yield draft.source.diagnostic(
            "formula.type", (*path, "type"),
            f"a formula cannot compute {_a(spec.type.name)} field",
            "formula fields are " + ", ".join(RESULT_TYPES))
        return
    if name in (draft.data.get("search") or ()):
        position = list(draft.data["search"]).index(name)
        yield draft.source.diagnostic(
            "formula.search", ("search", position),
            f"{name!r} is a formula field; search does not cover formulas yet",
            "search the fields the formula reads instead")
        return
    if clashes:
        return
    try:
        formula = compile_formula(raw["formula"], _resolver(draft, drafts, broken))
    except _Skip:
        draft.fields.pop(name)
        return
    except FormulaProblem as problem:
        yield _located(draft, name, raw["formula"], problem)
        return
    accepted = RESULT_TYPES[spec.type.name]
    if formula.type not in (*accepted, "null"):
        yield draft.source.diagnostic(
            "formula.result", (*path, "formula"),
            f"gives {_a(formula.type)}, but the field is {_a(spec.type.name)}",
            _result_hint(formula.type, spec.type.name))
        return
    draft.fields[name] = replace(spec, formula=formula)


def _located(draft: Draft, name: str, source: str, problem: FormulaProblem) -> Diagnostic:
    pointer = f"{source[:problem.position]}⟨here⟩{source[problem.position:]}"
    return draft.source.diagnostic(
        "formula.invalid", ("fields", name, "formula"),
        f"{problem.message} (at character {problem.position + 1}: {pointer})",
        problem.hint or "see 'Formula fields' in docs/setup-language.md")


def _result_hint(found: str, field_type: str) -> str:
    if field_type == "integer" and found == "number":
        return "round it: round(x) gives a whole number, or declare type: decimal"
    if found == TEXT:
        return "declare type: string, or compute a value of the field's type"
    return f"declare the field's type to fit ({found}), or change the formula"


def _resolver(draft: Draft, drafts: Mapping[str, Draft], broken: set[str]) -> Any:
    def resolve(path: tuple[str, ...], position: int) -> str:
        current = draft
        for index, step in enumerate(path):
            last = index == len(path) - 1
            where = ".".join(path[:index + 1])
            if not last:
                current = _follow(current, step, where, position, drafts, broken)
                continue
            return _field_type(current, step, where, position)
        raise AssertionError("a path has at least one name")
    return resolve


def _follow(draft: Draft, step: str, where: str, position: int, drafts: Mapping[str, Draft],
            broken: set[str]) -> Draft:
    link = draft.links.get(step)
    if link is None:
        if step in draft.field_names or step in BUILT_INS:
            raise FormulaProblem(f"{where!r} is a field of {draft.name}, not a link", position,
                                 "only a link is followed with a dot: client.discount")
        if step in (draft.data.get("links") or {}):
            raise _Skip
        raise FormulaProblem(f"{draft.name} has no link {step!r}", position,
                             did_you_mean(step, list(draft.links))
                             or _listing("links", list(draft.links)))
    if link.many:
        raise FormulaProblem(
            f"{where!r} is a many-to-many link: a formula reads one record per link", position,
            "follow a many-to-one link, or sum the linked records with a roll-up")
    if link.polymorphic:
        raise FormulaProblem(
            f"{where!r} links to one of several entities, so its fields are not known", position,
            "follow a link to one entity")
    target = drafts.get(link.target)
    if target is None:
        raise _Skip  # reported as a broken file or an unknown entity
    return target


def _field_type(draft: Draft, name: str, where: str, position: int) -> str:
    if name in BUILT_INS:
        return BUILT_INS[name]
    if name == "owner" and draft.data.get("owner"):
        return INT
    if name == "stage" and draft.pipeline is not None:
        return TEXT
    spec = draft.fields.get(name)
    if spec is None:
        if name in draft.field_names:
            raise _Skip
        if name in draft.links:
            raise FormulaProblem(f"{where!r} is a link; a formula reads the fields of the linked "
                                 "record", position, f"name one of its fields: {where}.<field>")
        names = [*draft.field_names, *BUILT_INS]
        raise FormulaProblem(f"{draft.name} has no field {name!r}", position,
                             did_you_mean(name, names) or _listing("fields", names))
    kind = FIELD_TYPES.get(spec.type.name)
    if kind is None:
        raise FormulaProblem(f"{where!r} is {_a(spec.type.name)} field, which a formula "
                             "cannot read", position,
                             "formulas read numbers, money, text, choices, dates and booleans")
    return kind


def _cycles(drafts: Mapping[str, Draft]) -> list[Diagnostic]:
    """A formula that reads itself, directly or through other formulas, never settles."""
    reads: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for draft in drafts.values():
        for name, spec in draft.fields.items():
            if spec.formula is not None:
                reads[(draft.name, name)] = [_end(drafts, draft, path)
                                             for path in sorted(spec.formula.paths)]
    problems: list[Diagnostic] = []
    for cycle in cycles(reads):
        entity, field = cycle[0]
        loop = " → ".join(f"{e}.{f}" for e, f in cycle)
        problems.append(drafts[entity].source.diagnostic(
            "formula.cycle", ("fields", field, "formula"),
            f"the formula reads itself: {loop}",
            "compute it from other fields; a formula may read other formulas, "
            "but never in a circle"))
    return problems


def _end(drafts: Mapping[str, Draft], draft: Draft, path: tuple[str, ...]) -> tuple[str, str]:
    current = draft
    for step in path[:-1]:
        current = drafts[current.links[step].target]
    return current.name, path[-1]


def _listing(what: str, names: list[str]) -> str:
    return f"{what}: " + ", ".join(names) if names else f"there are no {what}"


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


__all__ = ["Formula", "check_formulas"]
