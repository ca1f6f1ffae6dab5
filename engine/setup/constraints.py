"""Rules across records: values no two records share (`unique:`) and time ranges no two
records of one key overlap (`no_overlap:`). The specs, and the loader's checks of them.

```yaml
fields:
  email: {type: email, unique: {ignore_case: true}}   # one field, compared folded
unique: [[supplier, number], {fields: [name, city], ignore_case: true, ignore_spaces: true}]
no_overlap: [{key: [dentist], range: [starts_at, ends_at]}]
```

A member of a set is a field or a single link (a link counts as the id it holds; a
polymorphic one as the entity and id). Text fields of an insensitive set are compared in
their folded form (`UniqueSpec.fold`), kept by the server in a shadow column
(`engine/storage/constraints.py`), because SQLite's `lower()` folds only ASCII letters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import Diagnostic, format_path
from engine.setup.filters import ATTRIBUTE, Condition, FilterGrammar, FilterRefused
from engine.setup.names import did_you_mean
from engine.setup.roles import condition_params
from engine.setup.source import SourceFile
from engine.setup.spec import FieldSpec, LinkSpec, Location, SetupSpec
from engine.types.fields import DateTimeType, DateType, EmailType, FieldTypeRegistry, StringType


@dataclass(frozen=True)
class UniqueSpec:
    """A set of fields and single links whose values no two records share. Records with
    an empty member never collide (SQL's rule for NULL)."""

    members: tuple[str, ...]
    ignore_case: bool = False
    ignore_spaces: bool = False
    #: the text members compared in their folded form (all text members of an insensitive set)
    folded: frozenset[str] = frozenset()
    location: Location = field(default_factory=lambda: Location(""))

    @property
    def mode(self) -> str:
        """How the folded members are folded, as it appears in their shadow column's name."""
        return ("ci" if self.ignore_case else "") + ("sp" if self.ignore_spaces else "")

    def fold(self, text: str) -> str:
        """The form two values are compared in: Unicode case folding (`Ромашка` =
        `РОМАШКА`, `Straße` = `STRASSE`) after NFKC, and no whitespace at all
        (`张伟` = `张 伟`, `+7 999` = `+7999`), as asked."""
        if self.ignore_case:
            text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        else:
            text = unicodedata.normalize("NFC", text)
        if self.ignore_spaces:
            text = "".join(text.split())
        return text

    def words(self) -> str:
        """`supplier and number`, `email (ignoring case)`."""
        names = " and ".join(self.members) if len(self.members) < 3 else \
            ", ".join(self.members[:-1]) + " and " + self.members[-1]
        how = [w for w, on in (("case", self.ignore_case), ("spaces", self.ignore_spaces)) if on]
        return names + (f" (ignoring {' and '.join(how)})" if how and self.folded else "")


@dataclass(frozen=True)
class OverlapSpec:
    """No two records with the same `key` have overlapping ranges [start, end): a booking
    may begin when the previous one ends. Records with an empty key member, start or end
    are not checked."""

    key: tuple[str, ...]
    start: str
    end: str
    location: Location = field(default_factory=lambda: Location(""))
    #: only records meeting this condition take part (`where:`, e.g. not cancelled), as
    #: the list call's filter parameters; checked by the filter grammar when the setup loads
    where: tuple[tuple[str, str], ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.key, self.start, self.end)


def _set_shape() -> dict[str, Any]:
    names = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"}}
    return {
        "if": {"type": "object"},
        "then": {"type": "object", "required": ["fields"],
                 "properties": {"fields": names, "ignore_case": {"type": "boolean"},
                                "ignore_spaces": {"type": "boolean"}},
                 "additionalProperties": False},
        "else": {"allOf": [
            {"type": "array", "x-message": "must be a list of fields, or {fields: [...], "
                                           "ignore_case: true}",
             "x-hint": "write unique: [[supplier, number]]"},
            {"minItems": 1, "x-message": "must list at least one field",
             "x-hint": "write unique: [[supplier, number]], or remove the empty set"}],
            "uniqueItems": True, "items": {"type": "string"}},
    }


#: the meta-schema of the keys this module reads (engine/setup/metaschema.py includes them)
FIELD_UNIQUE: dict[str, Any] = {
    "if": {"type": "object"},
    "then": {"type": "object", "properties": {"ignore_case": {"type": "boolean"},
                                              "ignore_spaces": {"type": "boolean"}},
             "additionalProperties": False},
    "else": {"type": "boolean", "x-message": "must be true, false or {ignore_case: true}",
             "x-hint": "write unique: true, or unique: {ignore_case: true, ignore_spaces: true}"},
}
ENTITY_KEYS: dict[str, Any] = {
    "unique": {"type": "array", "items": _set_shape()},
    "no_overlap": {"type": "array", "items": {
        "type": "object", "required": ["key", "range"],
        "properties": {
            "key": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"}},
            "range": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string"},
                      "x-message": "must name two fields: [start, end]",
                      "x-hint": "write range: [starts_at, ends_at]"},
            "where": {"type": "object", "minProperties": 1,
                      "x-message": "must be a condition such as {status: {ne: cancelled}}",
                      "x-hint": "write where: {status: {ne: cancelled}}"},
        },
        "additionalProperties": False}},
}


@dataclass
class _Members:
    """What an entity declares, for looking names up: checked fields and links, and every
    declared name (a member whose own declaration is broken is reported there, not here)."""

    source: SourceFile
    fields: Mapping[str, FieldSpec]
    links: Mapping[str, LinkSpec]
    declared: tuple[str, ...]

    def member(self, name: str, path: tuple[str | int, ...],
               what: str) -> Iterator[Diagnostic]:
        """Problems with `name` as a member of a unique set or an overlap key."""
        field, link = self.fields.get(name), self.links.get(name)
        if field is None and link is None:
            if name not in self.declared:
                yield self.source.diagnostic(
                    "constraint.member", path, f"no field or link {name!r}",
                    did_you_mean(name, self.declared) or f"{what} names fields and single links "
                    "of this entity: " + ", ".join(self.declared))
        elif link is not None and link.many:
            yield self.source.diagnostic(
                "constraint.member", path, f"{name!r} is a many-to-many link; it holds no one value",
                f"{what} takes fields and single links")
        elif field is not None and not field.type.can_be_unique:
            yield self.source.diagnostic(
                "constraint.member", path, f"{name!r} is {_a(field.type.name)} field, which "
                "cannot be compared as one value", f"{what} takes fields of other types and "
                "single links")


def check_constraints(source: SourceFile, data: Mapping[str, Any],
                      fields: Mapping[str, FieldSpec], links: Mapping[str, LinkSpec],
                      declared: tuple[str, ...]
                      ) -> tuple[list[Diagnostic], tuple[UniqueSpec, ...], tuple[OverlapSpec, ...]]:
    """The entity's unique sets (field-level ones included) and overlap rules, with every
    problem found in them."""
    members = _Members(source, fields, links, declared)
    problems: list[Diagnostic] = []
    sets: list[UniqueSpec] = []
    seen: dict[frozenset[str], tuple[str | int, ...]] = {
        frozenset([name]): ("fields", name, "unique")
        for name, field in fields.items() if field.unique}
    #: (where, member names, options, where each member is)
    declarations: list[tuple[tuple[str | int, ...], list[str], Mapping[str, Any],
                             list[tuple[str | int, ...]]]] = []
    for name, raw in (data.get("fields") or {}).items():
        if isinstance(raw, dict) and isinstance(raw.get("unique"), dict) and name in fields:
            path: tuple[str | int, ...] = ("fields", name, "unique")
            declarations.append((path, [name], raw["unique"], [path]))
        elif isinstance(raw, dict) and raw.get("unique") is True and name in fields and \
                isinstance(fields[name].type, EmailType):
            problems.append(source.diagnostic(
                "constraint.email_case", ("fields", name, "unique"), "an e-mail unique as "
                "written: A@x.ru and a@x.ru would be two different records",
                "write unique: {ignore_case: true}", severity="warning"))
    for index, raw in enumerate(data.get("unique") or ()):
        path = ("unique", index)
        names = list(raw["fields"]) if isinstance(raw, dict) else list(raw)
        at = (*path, "fields") if isinstance(raw, dict) else path
        declarations.append((path, names, raw if isinstance(raw, dict) else {},
                             [(*at, i) for i in range(len(names))]))
    for path, names, options, places in declarations:
        field_level = path[0] == "fields"
        found = [p for name, place in zip(names, places, strict=True)
                 for p in members.member(name, place, "unique")]
        problems += found
        if found or any(n not in fields and n not in links for n in names):
            continue
        case, spaces = bool(options.get("ignore_case")), bool(options.get("ignore_spaces"))
        text = frozenset(n for n in names if n in fields and isinstance(fields[n].type, StringType))
        if (case or spaces) and not text:
            problems.append(source.diagnostic(
                "constraint.ignore", path, "ignore_case and ignore_spaces compare text, and "
                + ("this field is not text" if field_level else "none of these fields is text"),
                "remove them, or list a string, text, e-mail, phone or url field"))
            continue
        key = frozenset(names)
        if key in seen:
            problems.append(source.diagnostic(
                "constraint.duplicate", path, "the same fields are already unique at "
                + format_path(seen[key]), "declare each unique set once"))
            continue
        seen[key] = path
        sets.append(UniqueSpec(tuple(names), case, spaces, text if case or spaces else frozenset(),
                               Location(source.name, source.line_of(path)[0])))
    rules: list[OverlapSpec] = []
    taken: dict[tuple[frozenset[str], str, str, tuple[tuple[str, str], ...]], int] = {}
    for index, raw in enumerate(data.get("no_overlap") or ()):
        path = ("no_overlap", index)
        found = [p for i, name in enumerate(raw["key"])
                 for p in members.member(name, (*path, "key", i), "an overlap key")]
        found += _range_problems(members, path, raw["range"], raw["key"])
        problems += found
        if found or any(n not in fields and n not in links for n in raw["key"]):
            continue
        marker = (frozenset(raw["key"]), raw["range"][0], raw["range"][1],
                  tuple(condition_params(raw.get("where") or {})))
        if marker in taken:
            problems.append(source.diagnostic(
                "constraint.duplicate", path, f"the same rule is already no_overlap[{taken[marker]}]",
                "declare each rule once"))
            continue
        taken[marker] = index
        rules.append(OverlapSpec(tuple(raw["key"]), raw["range"][0], raw["range"][1],
                                 Location(source.name, source.line_of(path)[0]),
                                 tuple(condition_params(raw.get("where") or {}))))
    return problems, tuple(sets), tuple(rules)


def _range_problems(members: _Members, path: tuple[str | int, ...], names: list[str],
                    key: list[str]) -> Iterator[Diagnostic]:
    source = members.source
    kinds = []
    for i, name in enumerate(names):
        at = (*path, "range", i)
        field = members.fields.get(name)
        if field is None:
            if name not in members.declared or name in members.links:
                yield source.diagnostic(
                    "constraint.range", at, f"no date or datetime field {name!r}",
                    did_you_mean(name, [n for n, f in members.fields.items()
                                         if isinstance(f.type, (DateType, DateTimeType))])
                    or "range names two date or two datetime "
                    "fields: [start, end]")
            continue
        if not isinstance(field.type, (DateType, DateTimeType)):
            yield source.diagnostic(
                "constraint.range", at, f"{name!r} is {_a(field.type.name)} field; a range is "
                "made of dates or of datetimes", "name two date or two datetime fields")
            continue
        if name in key:
            yield source.diagnostic("constraint.range", at, f"{name!r} is also in the key",
                                    "a field is either the key or an end of the range")
            continue
        kinds.append(field.type.name)
    if len(kinds) == 2 and names[0] == names[1]:
        yield source.diagnostic("constraint.range", (*path, "range"),
                                "the range starts and ends with the same field",
                                "name the start field and the end field: [starts_at, ends_at]")
    elif len(kinds) == 2 and kinds[0] != kinds[1]:
        yield source.diagnostic("constraint.range", (*path, "range"),
                                f"the range mixes {_a(kinds[0])} and {_a(kinds[1])} field",
                                "make both ends dates, or both datetimes")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def overlap_conditions(grammar: FilterGrammar, entity: str,
                       rule: OverlapSpec) -> list[Condition]:
    """The rule's `where:` parsed (FilterRefused when it cannot be; the loader has checked)."""
    conditions = [grammar.parse(entity, key, text) for key, text in rule.where]
    for condition in conditions:
        if condition.kind == ATTRIBUTE and condition.name == "stage":
            raise FilterRefused("the stage changes by stage moves, which this rule does not "
                                "follow; use a choice field of the entity")
        if condition.kind != ATTRIBUTE:
            raise FilterRefused(f"{condition.name!r} is not a field or single link of {entity}; "
                                "where: compares each record's own values")
    return conditions


def check_overlap_where(setup: SetupSpec, registry: FieldTypeRegistry,
                        sources: Mapping[str, SourceFile]) -> list[Diagnostic]:
    """Every `where:` of a no-overlap rule parses, and names the record's own values only
    (the database checks it on each row, as part of the constraint)."""
    grammar = FilterGrammar(setup, registry)
    problems = []
    for entity in setup.entities.values():
        for index, rule in enumerate(entity.no_overlap):
            for key, text in rule.where:
                try:
                    overlap_conditions(grammar, entity.name, replace(rule, where=((key, text),)))
                except FilterRefused as problem:
                    problems.append(sources[entity.name].diagnostic(
                        "constraint.where", ("no_overlap", index, "where"), f"{key}: {problem}",
                        "write the condition as the list call's filters on this entity's own "
                        "fields, e.g. {status: {ne: cancelled}}"))
    return problems
