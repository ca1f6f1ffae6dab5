"""Roll-up fields in the setup language: a count, sum, minimum, maximum or average over
the records that link to a record, stored on it and kept true by the server.

    fields:
      total:      {type: money, rollup: {sum: lines.amount}}
      paid:       {type: money, rollup: {sum: invoices.total, where: {stage: paid}}}
      open_tasks: {type: integer, rollup: {count: tasks, where: {done: false}}}
      last_order: {type: date, rollup: {max: orders.ordered_on}}
      rating:     {type: decimal, places: 2, rollup: {avg: reviews.score}}

The part before the dot is a *way* from this entity to the records summed over: a way
back (a link declared on the other entity with `reverse:`, plain, many-to-many or
polymorphic), or a many-to-many link of this entity. After the dot, a field of those
records (none for `count`: it counts the records). `where` is a condition on those records
in the filter structure of rules and role conditions, about their own fields.

Along a many-to-many link that carries data (`through:`), `$link.` names a field of the
pairs themselves, as the API and rules do: `{sum: procedures.$link.amount}` adds up the
pairs' amounts, and `where: {$link.tooth: {gte: 40}}` keeps the pairs whose tooth is 40 or
more (beside conditions on the linked records' own fields).

This module checks each `rollup:` once the setup is built (the `where` needs the filter
grammar over every entity) — every problem located, with a hint — and returns the entities
with `FieldSpec.rollup` set. `engine/storage/rollups.py` computes them;
`engine/records/rollups.py` keeps them true on every write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from engine.errors import Diagnostic
from engine.setup.filters import ATTRIBUTE, PAIR, PAIR_KEY, Condition, FilterGrammar, FilterRefused
from engine.setup.graphs import cycles
from engine.setup.names import did_you_mean
from engine.setup.roles import condition_params
from engine.setup.source import SourceFile
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, SetupSpec
from engine.types.fields import FieldTypeRegistry
from engine.types.moments import Deferred

FUNCTIONS = ("count", "sum", "min", "max", "avg")
ROLLUP_KEYS = (*FUNCTIONS, "where")
#: keys a roll-up field cannot have: the server computes its value
EXCLUSIVE_KEYS = ("required", "default", "required_in_stages", "renamed_from", "formula",
                  "unique")

#: how the records summed over are reached from the record holding the roll-up
REVERSE = "reverse"            # child.link → this (one link per child)
MANY = "many"                  # this.link (many-to-many) → children
MANY_REVERSE = "many_reverse"  # child.link (many-to-many) → this

_NUMBERS = ("integer", "decimal", "money")
#: for each function, the child field types it takes (None: any, or no field)
_READS: dict[str, tuple[str, ...]] = {
    "sum": _NUMBERS, "avg": _NUMBERS,
    "min": (*_NUMBERS, "date", "datetime"), "max": (*_NUMBERS, "date", "datetime"),
}


@dataclass(frozen=True)
class RollupSpec:
    """One roll-up field: `function` of `child.field` over the records reached by `way`."""

    function: str
    way: str
    child: str
    field: str | None
    #: REVERSE, MANY or MANY_REVERSE
    kind: str
    #: the declared link the way follows (on the child for REVERSE and MANY_REVERSE)
    link: LinkSpec
    where: tuple[Condition, ...] = ()
    #: the declaration as canonical text: what a migration compares, what OpenAPI shows
    source: str = ""
    #: `field` is one of the pairs' own fields (`procedures.$link.price`), not the records'
    pair: bool = False

    @property
    def record_where(self) -> tuple[Condition, ...]:
        """The conditions on the records' own fields (the others are on the pairs')."""
        return tuple(c for c in self.where if c.kind != PAIR)

    def declaring(self, parent: str) -> str:
        """The entity declaring the link the way follows (for a many-to-many way: whose
        join table holds the pairs), seen from `parent`, the entity holding the roll-up."""
        return parent if self.kind == MANY else self.child

    @property
    def empty(self) -> Any:
        """The value over no records: a count or a sum of nothing is 0, the rest unknown."""
        return 0 if self.function in ("count", "sum") else None


def pair_field(link: str, name: str) -> str:
    """A field of a link's pairs as a computed field's reads name it: `procedures.$link.price`
    (never an entity field's name: those are identifiers)."""
    return f"{link}.{PAIR_KEY}.{name}"


def check_rollups(setup: SetupSpec, sources: Mapping[str, SourceFile],
                  registry: FieldTypeRegistry) -> tuple[dict[str, EntitySpec], list[Diagnostic]]:
    """The entities with their roll-up fields' specs set, and the problems found."""
    grammar = FilterGrammar(setup, registry)
    problems: list[Diagnostic] = []
    entities = dict(setup.entities)
    for name, spec in setup.entities.items():
        source = sources.get(name)
        if source is None:
            continue
        fields = dict(spec.fields)
        for field_name, raw in (source.data.get("fields") or {}).items():
            if not isinstance(raw, dict) or "rollup" not in raw or field_name not in fields:
                continue
            checker = _Checker(setup, grammar, source, spec, fields[field_name], raw)
            rollup = checker.check()
            problems += checker.problems
            if rollup is not None:
                fields[field_name] = replace(fields[field_name], rollup=rollup)
        entities[name] = replace(spec, fields=MappingProxyType(fields))
    if not problems:
        problems += _cycles(replace(setup, entities=MappingProxyType(entities)), sources)
    return entities, problems


class _Checker:
    def __init__(self, setup: SetupSpec, grammar: FilterGrammar, source: SourceFile,
                 spec: EntitySpec, field: FieldSpec, raw: Mapping[str, Any]):
        self.setup = setup
        self.grammar = grammar
        self.source = source
        self.spec = spec
        self.field = field
        self.raw = raw
        self.path: tuple[str | int, ...] = ("fields", field.name, "rollup")
        self.problems: list[Diagnostic] = []

    def problem(self, code: str, path: tuple[str | int, ...], message: str, hint: str,
                at_key: bool = False) -> None:
        self.problems.append(self.source.diagnostic(code, path, message, hint, at_key=at_key))

    def check(self) -> RollupSpec | None:
        body = self.raw["rollup"]
        for key in EXCLUSIVE_KEYS:
            if key in self.raw and self.raw[key] not in (None, False):
                self.problem("rollup.key", ("fields", self.field.name, key),
                             f"a roll-up field takes no {key}: its value is computed",
                             f"remove {key}, or remove the roll-up", at_key=True)
        for key in body:
            if key not in ROLLUP_KEYS:
                self.problem("rollup.key", (*self.path, str(key)), f"unknown key {key!r}",
                             did_you_mean(str(key), ROLLUP_KEYS)
                             or "a roll-up is one of " + ", ".join(FUNCTIONS)
                             + " and an optional where", at_key=True)
        functions = [key for key in body if key in FUNCTIONS]
        if not functions and self.problems:
            return None  # an unknown key, likely the function misspelt: said already
        if len(functions) != 1:
            self.problem("rollup.function", self.path,
                         "names no function" if not functions else
                         "names several functions: " + ", ".join(functions),
                         "give exactly one of " + ", ".join(FUNCTIONS)
                         + ", e.g. {sum: lines.amount}")
            return None
        if self.problems:
            return None
        function = functions[0]
        found = self.way(function, body[function])
        if found is None:
            return None
        way, child, name, kind, link, pair = found
        if not self.fits(function, child, name, link if pair else None):
            return None
        where = self.where(way, child, link, body["where"]) if "where" in body else ()
        if where is None:
            return None
        text = f"{function}: {way}" + (f".{PAIR_KEY}" if pair else "") + (f".{name}" if name else "")
        if "where" in body:
            text += " where " + json.dumps(body["where"], sort_keys=True, ensure_ascii=False,
                                           default=str)
        return RollupSpec(function, way, child.name, name, kind, link, where, text, pair)

    def way(self, function: str, value: Any
            ) -> tuple[str, EntitySpec, str | None, str, LinkSpec, bool] | None:
        """The way, the entity summed over, its field, how it is reached, and whether the
        field is one of the pairs' (`$link.`)."""
        path = (*self.path, function)
        if not isinstance(value, str) or not value:
            self.problem("rollup.way", path, f"must name a way and a field, not {value!r}",
                         f"write {function}: lines.amount (a way back, a dot, a field)")
            return None
        way, _, name = value.partition(".")
        ways = self.ways()
        if way not in ways:
            if way in self.spec.links:
                self.problem("rollup.way", path,
                             f"{way!r} links {_a(self.spec.name)} to one record, so there is "
                             "nothing to add up", "read the linked record's fields with a "
                             f"formula ({way}.<field>), or roll up over a way back: "
                             + (", ".join(ways) or "none is declared"))
            else:
                self.problem("rollup.way", path, f"{self.spec.name} has no way {way!r} to "
                             "records that link to it",
                             did_you_mean(way, list(ways)) or (
                                 "ways: " + ", ".join(ways) if ways else
                                 "name the way on the link that points here, e.g. "
                                 f"{{to: {self.spec.name}, reverse: {way}}}"))
            return None
        child, kind, link = ways[way]
        if not name:
            if function != "count":
                self.problem("rollup.way", path, f"{function} needs a field of the "
                             f"{child.name} records", f"write {function}: {way}.<field>, e.g. "
                             f"{way}.{_example(child, function)}")
                return None
            return way, child, None, kind, link, False
        if name == PAIR_KEY or name.startswith(PAIR_KEY + "."):
            return self.pair_way(function, way, child, name, kind, link)
        if "." in name:
            self.problem("rollup.way", path, "a roll-up reads a field of the records "
                         "themselves, not of records they link to",
                         f"roll up a formula field of {child.name} that reads it")
            return None
        if name not in child.fields:
            known = [f for f in child.fields]
            self.problem("rollup.field", path, f"{child.name} has no field {name!r}",
                         did_you_mean(name, known) or "fields: " + ", ".join(known))
            return None
        return way, child, name, kind, link, False

    def pair_way(self, function: str, way: str, child: EntitySpec, name: str, kind: str,
                 link: LinkSpec) -> tuple[str, EntitySpec, str | None, str, LinkSpec, bool] | None:
        """`way.$link.field`: a field of the pairs of a link that carries data."""
        path = (*self.path, function)
        if kind == REVERSE or not link.through:
            what = "is a way back along a link to one record" if kind == REVERSE else \
                "is a many-to-many link without fields of its own"
            self.problem("rollup.pair", path, f"{way!r} {what}, so its pairs carry no data "
                         f"for {PAIR_KEY} to read",
                         f"roll up a field of the {child.name} records ({way}.<field>), or "
                         "declare the fields on a many-to-many link with through:")
            return None
        field = name[len(PAIR_KEY) + 1:]
        if not field:
            self.problem("rollup.pair", path, f"{PAIR_KEY} names no field of the pairs of {way}",
                         f"write {function}: {way}.{PAIR_KEY}.<field>, one of: "
                         + ", ".join(link.through))
            return None
        if field not in link.through:
            known = list(link.through)
            self.problem("rollup.pair", path, f"the pairs of {way} have no field {field!r}",
                         did_you_mean(field, known) or "their fields: " + ", ".join(known))
            return None
        return way, child, field, kind, link, True

    def ways(self) -> dict[str, tuple[EntitySpec, str, LinkSpec]]:
        found: dict[str, tuple[EntitySpec, str, LinkSpec]] = {}
        for name, reverse in self.setup.reverse_links[self.spec.name].items():
            kind = MANY_REVERSE if reverse.link.many else REVERSE
            found[name] = (self.setup.entities[reverse.entity], kind, reverse.link)
        for link in self.spec.links.values():
            if link.many and not link.polymorphic:
                found[link.name] = (self.setup.entities[link.target], MANY, link)
        return found

    def fits(self, function: str, child: EntitySpec, name: str | None,
             pairs: LinkSpec | None = None) -> bool:
        """The child field (or the pairs' field, along `pairs`) can be rolled up this way,
        into this field."""
        path = (*self.path, function)
        target = self.field.type.name
        if name is None or function == "count":
            if target != "integer":
                self.problem("rollup.type", ("fields", self.field.name, "type"),
                             f"a count is a whole number, but the field is {_a(target)} field",
                             "declare type: integer")
                return False
            return True
        source = (pairs.through if pairs is not None else child.fields)[name].type.name
        owner = f"{pairs.name}.{PAIR_KEY}" if pairs is not None else child.name
        if source not in _READS[function]:
            self.problem("rollup.field", path, f"{owner}.{name} is {_a(source)} field; "
                         f"{function} takes " + ", ".join(_READS[function]) + " fields",
                         "roll up a number, money, date or datetime field, or count the "
                         "records")
            return False
        accepted: tuple[str, ...]
        if source in _NUMBERS:
            accepted = ("decimal", "money") if function == "avg" or source != "integer" \
                else _NUMBERS
        else:
            accepted = (source,)
        if target not in accepted:
            self.problem("rollup.type", ("fields", self.field.name, "type"),
                         f"the {function} of {_a(source)} field does not fit {_a(target)} "
                         "field", "declare type: " + " or ".join(accepted))
            return False
        return True

    def where(self, way: str, child: EntitySpec, link: LinkSpec,
              raw: Any) -> tuple[Condition, ...] | None:
        path = (*self.path, "where")
        if not isinstance(raw, dict) or not raw:
            self.problem("rollup.where", path, "must be a condition such as {stage: paid}",
                         "write the filter structure of rules: {field: value} or "
                         "{field: {op: value}}")
            return None
        found: list[Condition] = []
        for key, text in condition_params(raw):
            field = key.split("[")[0]
            where = (*path, field)
            pair = key.startswith(PAIR_KEY + ".")
            try:
                if pair:  # a condition on the pairs' values: parsed as the parent's filter
                    condition = self.grammar.parse(self.spec.name, f"{way}.{key}", text)
                else:
                    condition = self.grammar.parse(child.name, key, text)
            except FilterRefused as refused:
                self.problem("rollup.where", where, f"{key}: {refused}",
                             f"a condition on the pairs of {way} ({PAIR_KEY}.<field>)" if pair
                             else f"a condition on the {child.name} records summed over")
                return None
            if pair and condition.kind == PAIR:
                inner = condition.inner
                assert inner is not None
                values = inner.value if isinstance(inner.value, list) else [inner.value]
                if any(isinstance(v, Deferred) for v in values):
                    self.problem("rollup.where", where, f"{key}: a roll-up is stored, so a "
                                 "relative date would hold only as of the last change",
                                 "compare with a fixed date")
                    return None
                found.append(condition)
                continue
            if condition.kind != ATTRIBUTE:
                self.problem("rollup.where", where, f"{key}: a roll-up's condition reads the "
                             f"{child.name} records' own fields and links",
                             "compute what you need with a formula field on "
                             f"{child.name}, and filter on it")
                return None
            values = condition.value if isinstance(condition.value, list) else [condition.value]
            if any(isinstance(v, Deferred) for v in values):
                self.problem("rollup.where", where, f"{key}: a roll-up is stored, so a "
                             "relative date would hold only as of the last change",
                             "compare with a fixed date, or filter the list with "
                             f"{key}=... when reading")
                return None
            found.append(condition)
        return tuple(found)


def _cycles(setup: SetupSpec, sources: Mapping[str, SourceFile]) -> list[Diagnostic]:
    """A roll-up that reads itself through formulas and other roll-ups never settles
    (`order.total = sum of lines.amount`, `line.amount` a formula reading `order.total`)."""
    reads = computed_reads(setup)
    problems: list[Diagnostic] = []
    for cycle in cycles({node: sorted(reads[node]) for node in sorted(reads)}):
        cycle = cycle[:-1]
        at = next((i for i, n in enumerate(cycle)
                   if setup.entities[n[0]].fields[n[1]].rollup), None)
        if at is None:
            continue  # formulas alone: reported by the formula check
        cycle = [*cycle[at:], *cycle[:at], cycle[at]]  # from the roll-up round
        entity, field = cycle[0]
        problems.append(sources[entity].diagnostic(
            "rollup.cycle", ("fields", field, "rollup"),
            "the roll-up reads itself: " + " → ".join(f"{e}.{f}" for e, f in cycle),
            "roll up a field that does not depend on this one"))
    return problems


def computed_reads(setup: SetupSpec) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """For each computed field (entity, field), the stored fields it reads directly: a
    formula's paths' ends, a roll-up's records (`id`), field and the fields of its
    `where`. A field of a link's pairs is (the entity declaring the link,
    `link.$link.field`: `pair_field`); a roll-up reading pairs reads the link itself too
    (entity, link) — hidden from a role, the link hides what adds up its pairs. A formula
    of the pairs (`through: {amount: {formula: ...}}`) is a computed field of that name."""
    reads: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for entity in setup.entities.values():
        for field in entity.fields.values():
            if field.formula is not None:
                reads[(entity.name, field.name)] = {
                    _end(setup, entity, path) for path in field.formula.paths}
            elif field.rollup is not None:
                reads[(entity.name, field.name)] = set(_rollup_reads(entity.name, field.rollup))
        for link in entity.links.values():
            for name, field in link.through.items():
                if field.formula is not None:
                    reads[(entity.name, pair_field(link.name, name))] = {
                        (entity.name, pair_field(link.name, path[0]))
                        for path in field.formula.paths}
    return reads


def _rollup_reads(parent: str, rollup: RollupSpec) -> Iterator[tuple[str, str]]:
    yield rollup.child, "id"  # the records themselves: a count tells how many there are
    declaring = rollup.declaring(parent)
    pairs = [c.inner.name for c in rollup.where if c.kind == PAIR and c.inner is not None]
    if rollup.field is not None:
        if rollup.pair:
            pairs.append(rollup.field)
        else:
            yield rollup.child, rollup.field
    for name in pairs:
        yield declaring, rollup.link.name
        yield declaring, pair_field(rollup.link.name, name)
    for condition in rollup.record_where:
        yield rollup.child, condition.name


def _end(setup: SetupSpec, entity: EntitySpec, path: tuple[str, ...]) -> tuple[str, str]:
    for step in path[:-1]:
        entity = setup.entities[entity.links[step].target]
    return entity.name, path[-1]


def _example(child: EntitySpec, function: str) -> str:
    return next((f.name for f in child.fields.values() if f.type.name in _READS[function]),
                "amount")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word
