"""The filter language of a setup: what a condition may say about an entity's records.

    field=value  field[op]=value  link.field[op]=value  link=7  many_link[in]=1,2
    poly_link=client:7  way_back[isnull]=true

One grammar for every place a setup or a client writes a condition: the list query's
filters (engine/records/query.py), role conditions (engine/setup/roles.py, checked at
load time, and engine/access/scopes.py, run per user), and what comes next (rules,
automations). A parameter becomes a `Condition` — names looked up in the entity's
attributes and links, the operator checked against the field type, the value parsed by
it (a relative date, `today-30d`, as a `Deferred` resolved each time the query runs) —
or a `FilterRefused` saying why. No SQL here: engine/storage/filters.py compiles a
`Condition` over the tables.

A bare control name (`CONTROLS`: paging, sort, search, include, total, and the board's and
funnel's own) is never a filter; a field of that name is filtered in its operator form,
`total[eq]=5`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from engine.setup.attributes import Attribute, SystemFields
from engine.setup.names import did_you_mean
from engine.setup.spec import EntitySpec, LinkSpec, SetupSpec
from engine.types.fields import OPERATORS, FieldTypeRegistry, ValueProblem
from engine.types.moments import Clock, Deferred, NotRelative, parse_relative, system_clock

LIST_PARAMS = ("q", "sort", "limit", "offset", "cursor", "include", "total")
#: The board's and the funnel's own controls (engine/process/reports.py), kept out of filters too.
REPORT_PARAMS = ("pipeline", "from", "to")
CONTROLS = frozenset(LIST_PARAMS + REPORT_PARAMS)
MAX_IN_VALUES = 500
#: the key that names a field of a linked pair: `procedures.$link.tooth` (as in the `$link`
#: object a linked list carries), never a field name (those are identifiers)
PAIR_KEY = "$link"
_FILTER_KEY = re.compile(
    r"^(?P<head>[a-z][a-z0-9_]*)(?:\.(?P<pair>\$link\.)?(?P<tail>[a-z][a-z0-9_]*))?"
    r"(?:\[(?P<op>[a-z]+)\])?$")

#: Condition kinds
ATTRIBUTE = "attribute"      # a field, system column or single link's id; value typed
MANY = "many"                # a many-to-many link by target ids; value list[int] | bool (isnull)
POLYMORPHIC = "polymorphic"  # a link to several entities; value list[(entity, id)] | bool
REVERSE = "reverse"          # a way back by the ids at its other end; list[int] | bool
THROUGH = "through"          # `link.field`: `inner` is the condition on the other end
PAIR = "pair"                # `link.$link.field`: `inner` is about the linked pairs' data

#: which fields of an entity the caller may not see (refused like unknown ones)
Hidden = Callable[[str], frozenset[str]]


def nothing_hidden(entity: str) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True)
class Condition:
    """One parsed filter: about `entity`, of `kind`, on `name`, with `op` and `value`."""

    entity: str
    kind: str
    name: str
    op: str
    value: Any = None
    inner: Condition | None = None


class FilterRefused(Exception):
    """A filter that cannot be applied; the message says why (a client's 400, a setup's
    located error)."""


class FilterGrammar:
    """Parses filter parameters against one setup's entities."""

    def __init__(self, setup: SetupSpec, registry: FieldTypeRegistry,
                 clock: Clock = system_clock):
        self.setup = setup
        #: relative dates (`today-30d`) become `Deferred` values: resolved on this clock, in
        #: the setup's time zone, each time the compiled condition runs
        self.clock = clock
        self.zone = ZoneInfo(setup.timezone)
        system = SystemFields(registry)
        self.attributes: Mapping[str, Mapping[str, Attribute]] = {
            name: system.attributes(entity) for name, entity in setup.entities.items()}

    def parse(self, entity: str, key: str, text: str,
              hidden: Hidden = nothing_hidden) -> Condition:
        """The condition `key=text` on `entity`, or FilterRefused."""
        match = _FILTER_KEY.match(key)
        if not match:
            raise FilterRefused("is not a field filter: write field=value or field[op]=value")
        head, tail, op = match.group("head"), match.group("tail"), match.group("op") or "eq"
        if op not in OPERATORS:
            raise FilterRefused(f"unknown operator {op!r}; " + (
                did_you_mean(op, OPERATORS) or "use one of: " + ", ".join(OPERATORS)))
        spec = self.setup.entities[entity]
        if head in hidden(entity):
            raise FilterRefused(self.unknown(entity, head, hidden))
        if match.group("pair"):
            assert tail is not None
            return self._pair(spec, head, tail, op, text, hidden)
        if tail is not None:
            target = self._through(spec, head, hidden)
            hidden_there = hidden(target)
            attribute = self.attributes[target].get(tail) if tail not in hidden_there else None
            if attribute is None:
                raise FilterRefused(f"{target} has no field {tail!r}" + _hint(did_you_mean(
                    tail, [n for n in self.attributes[target] if n not in hidden_there])))
            inner = Condition(target, ATTRIBUTE, tail, op, _compared(attribute, op, text, self))
            return Condition(entity, THROUGH, head, op, inner=inner)
        attribute = self.attributes[entity].get(head)
        if attribute is not None:
            return Condition(entity, ATTRIBUTE, head, op, _compared(attribute, op, text, self))
        link = spec.links.get(head)
        if link is not None and link.polymorphic:
            return Condition(entity, POLYMORPHIC, head, op, _polymorphic(link, op, text))
        if link is not None and link.many:
            return Condition(entity, MANY, head, op, _ids(op, text, "a many-to-many link"))
        if head in self.setup.reverse_links[entity]:
            if op not in ("eq", "in", "isnull"):
                raise FilterRefused("a way back filters with eq, in or isnull")
            return Condition(entity, REVERSE, head, op, _ids(op, text, "a way back"))
        raise FilterRefused(self.unknown(entity, head, hidden))

    def _pair(self, spec: EntitySpec, head: str, name: str, op: str, text: str,
              hidden: Hidden) -> Condition:
        """`head.$link.name`: records with a pair along `head` whose `name` matches."""
        link = spec.links.get(head)
        reverse = self.setup.reverse_links[spec.name].get(head)
        declared = link if link is not None else reverse.link if reverse is not None else None
        if declared is None:
            raise FilterRefused(self.unknown(spec.name, head, hidden))
        if not declared.through:
            raise FilterRefused(f"{head} carries no data of its own; filter the linked "
                                f"records' fields with {head}.<field>")
        field = declared.through.get(name)
        if field is None:
            raise FilterRefused(f"the pairs of {head} have no field {name!r}" + _hint(
                did_you_mean(name, list(declared.through))
                or "their fields: " + ", ".join(declared.through)))
        inner = Condition(spec.name, ATTRIBUTE, name, op, _compared((field, None), op, text, self))
        return Condition(spec.name, PAIR, head, op, inner=inner)

    def _through(self, spec: EntitySpec, name: str, hidden: Hidden) -> str:
        """The entity at the other end of link (or way back) `name`."""
        link = spec.links.get(name)
        if link is not None:
            if link.polymorphic:
                raise FilterRefused(
                    f"{name} links to several entities; filter it by {name}=entity:id")
            return link.target
        reverse = self.setup.reverse_links[spec.name].get(name)
        if reverse is None:
            raise FilterRefused(self.unknown(spec.name, name, hidden))
        return reverse.entity

    def unknown(self, entity: str, name: str, hidden: Hidden = nothing_hidden) -> str:
        secret = hidden(entity)
        known = [n for n in (*self.attributes[entity], *self.setup.entities[entity].links,
                             *self.setup.reverse_links[entity]) if n not in secret]
        return f"{entity} has no field or link {name!r}" + _hint(did_you_mean(name, known))


def _compared(attribute: Attribute, op: str, text: str, grammar: FilterGrammar) -> Any:
    spec = attribute[0]
    if op not in spec.type.operators:
        raise FilterRefused(f"operator {op!r} does not apply to a {spec.type.name} field; use "
                            + ", ".join(o for o in OPERATORS if o in spec.type.operators))
    if op == "isnull":
        return boolean(text)
    if op == "in":
        parts = text.split(",")
        if len(parts) > MAX_IN_VALUES:
            raise FilterRefused(f"lists more than {MAX_IN_VALUES} values")
        return [_value(attribute, part, grammar) for part in parts]
    return _value(attribute, text, grammar)


def _value(attribute: Attribute, text: str, grammar: FilterGrammar) -> Any:
    spec = attribute[0]
    kind = spec.type.moment_kind
    try:
        moment = parse_relative(text, kind) if kind is not None else None
        if moment is not None:  # resolved each time the compiled condition runs
            return Deferred(moment, kind, grammar.clock, grammar.zone)  # type: ignore[arg-type]
        return spec.type.parse_text(spec, text)
    except (ValueProblem, NotRelative) as problem:
        raise FilterRefused(f"{text!r} {problem}") from None


def _ids(op: str, text: str, what: str) -> list[int] | bool:
    if op == "isnull":
        return boolean(text)
    if op not in ("eq", "in"):
        raise FilterRefused(f"{what} filters with eq, in or isnull")
    parts = text.split(",") if op == "in" else [text]
    if len(parts) > MAX_IN_VALUES:
        raise FilterRefused(f"lists more than {MAX_IN_VALUES} values")
    return [record_id(part) for part in parts]


def _polymorphic(link: LinkSpec, op: str, text: str) -> list[tuple[str, int]] | bool:
    if op == "isnull":
        return boolean(text)
    if op not in ("eq", "in"):
        raise FilterRefused("a link to several entities filters with eq, in or isnull "
                            f"(value entity:id, e.g. {link.targets[0]}:7)")
    parts = text.split(",") if op == "in" else [text]
    if len(parts) > MAX_IN_VALUES:
        raise FilterRefused(f"lists more than {MAX_IN_VALUES} values")
    pairs = []
    for part in parts:
        name, _, raw_id = part.partition(":")
        if name not in link.targets:
            raise FilterRefused(f"{part!r} must be entity:id with entity one of "
                                + ", ".join(link.targets))
        pairs.append((name, record_id(raw_id)))
    return pairs


def _hint(text: str) -> str:
    return f"; {text}" if text else ""


def boolean(text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise FilterRefused("isnull takes true or false")


def record_id(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", text.strip()) or not 1 <= int(text) <= 2**63 - 1:
        raise FilterRefused(f"{text!r} is not a record id")
    return int(text)
