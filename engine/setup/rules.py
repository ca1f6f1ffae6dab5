"""Rules and stage locks in the setup language: what a record must satisfy to be stored.

    rules:
      period_ordered:
        require: {valid_to: {gt: $record.valid_from}}
        message: {en: "The contract must end after it starts", ru: "..."}
      small_discount:
        unless_role: [director]            # or `roles: [manager]`: only for these roles
        require: {discount: {lte: 10}}
        message: "A discount above 10% needs a director"
      approve_only_matched:
        when: {stage: approved}            # the records the rule is about, after the write
        require: {matched: true}
        fields: [matched]                  # named in the 422 (default: what `require` reads)
        message: "..."
    fields:
      amount: {type: money, readonly_in_stages: [paid, cancelled]}

`when` and `require` are the filter structure of role conditions, parsed by the setup's
`FilterGrammar`; a value `$record.<field>` names another field of the same record (a
column comparison; `$record.` cannot clash with `$user`, nor with any field name). A rule
fails when its `when` holds and its `require` is certainly false: a condition about an
empty field is unknown, as in SQL, and unknown passes — write `{field: {isnull: false}}`
in `require` (or `required: true` on the field) to demand a value.

This module checks the blocks (every problem with file, line and hint) and builds frozen
`RuleSpec`s and the stage locks; `engine/storage/rules.py` compiles a rule to SQL and
`engine/records/rules.py` enforces rules on every write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.errors import Diagnostic
from engine.setup.filters import Condition, FilterGrammar, FilterRefused
from engine.setup.names import did_you_mean, identifier_problem
from engine.setup.roles import ADMIN, condition_params
from engine.setup.source import SourceFile
from engine.setup.spec import Label, Location, SetupSpec
from engine.types.fields import FieldTypeRegistry

RULE_KEYS = ("when", "require", "message", "fields", "roles", "unless_role")
#: the prefix of a value naming another field of the same record
FIELD_REF = "$record."
COMPARISONS = ("eq", "ne", "lt", "lte", "gt", "gte")
#: types whose values compare with each other's
_KINDS = {"integer": "number", "decimal": "number", "money": "number"}


@dataclass(frozen=True)
class Comparison:
    """`name op $record.other`: two fields of one record compared in SQL."""

    entity: str
    name: str
    op: str
    other: str


Clause = Condition | Comparison


@dataclass(frozen=True)
class RuleSpec:
    name: str
    entity: str
    require: tuple[Clause, ...]
    message: Label
    when: tuple[Clause, ...] = ()
    #: the fields the 422 names
    fields: tuple[str, ...] = ()
    #: applies only when the acting user has one of these roles (None: to everyone)
    roles: frozenset[str] | None = None
    #: never applies when the acting user has one of these roles
    unless_roles: frozenset[str] = frozenset()
    location: Location = field(default_factory=lambda: Location(""))

    def applies_to(self, roles: tuple[str, ...]) -> bool:
        """Does the rule bind a user with `roles` (the system, or an open API: none)?"""
        if self.unless_roles & set(roles):
            return False
        return self.roles is None or bool(self.roles & set(roles))


@dataclass(frozen=True)
class EntityRules:
    """An entity's rules, and its fields read-only while a record is in given stages."""

    rules: tuple[RuleSpec, ...] = ()
    locked: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))


NO_RULES = EntityRules()


def check_rules(sources: Mapping[str, SourceFile], setup: SetupSpec, roles: Mapping[str, Any],
                registry: FieldTypeRegistry) -> tuple[dict[str, EntityRules], list[Diagnostic]]:
    """Every entity's rules and locks, and the problems found (warnings among them)."""
    grammar = FilterGrammar(setup, registry)
    known_roles = [*roles, ADMIN]
    found: dict[str, EntityRules] = {}
    diagnostics: list[Diagnostic] = []
    for name, source in sources.items():
        checker = _RuleChecker(source, setup, grammar, name, known_roles)
        rules = tuple(r for r in (checker.rule(str(k), v) for k, v in
                                  (source.data.get("rules") or {}).items()) if r is not None)
        locked = checker.locks()
        diagnostics += checker.diagnostics
        if rules or locked:
            found[name] = EntityRules(rules, MappingProxyType(locked))
    return found, diagnostics


class _RuleChecker:
    def __init__(self, source: SourceFile, setup: SetupSpec, grammar: FilterGrammar,
                 entity: str, known_roles: list[str]):
        self.source = source
        self.setup = setup
        self.grammar = grammar
        self.entity = entity
        self.known_roles = known_roles
        self.diagnostics: list[Diagnostic] = []

    def problem(self, code: str, path: tuple[str | int, ...], message: str, hint: str = "",
                at_key: bool = False, severity: str = "error") -> None:
        self.diagnostics.append(self.source.diagnostic(
            code, path, message, hint, at_key=at_key, severity=severity))

    # -- rules -----------------------------------------------------------------------------
    def rule(self, name: str, body: Any) -> RuleSpec | None:
        path: tuple[str | int, ...] = ("rules", name)
        before = len(self.diagnostics)
        problem = identifier_problem(name)
        if problem:
            self.problem("rule.name", path, f"rule name {problem}", "rule names are "
                         "lower_snake, e.g. period_ordered: the API's errors name them",
                         at_key=True)
            return None
        if not isinstance(body, dict):
            self.problem("rule.shape", path, "must be a mapping with require: and message:",
                         "e.g. {require: {discount: {lte: 10}}, message: Too much}")
            return None
        for key in body:
            if key not in RULE_KEYS:
                self.problem("rule.key", (*path, str(key)), f"unknown key {key!r}",
                             did_you_mean(str(key), RULE_KEYS)
                             or "allowed keys: " + ", ".join(RULE_KEYS), at_key=True)
        if "require" not in body:
            self.problem("rule.require", path, "'require' is missing", "add require: "
                         "{field: {op: value}}, what every record must satisfy", at_key=True)
        if "message" not in body:
            self.problem("rule.message", path, "'message' is missing", "add message: {"
                         + ", ".join(f"{lang}: ..." for lang in self.setup.languages)
                         + "}, shown to whoever breaks the rule", at_key=True)
        require = self.clauses((*path, "require"), body.get("require"))
        when = self.clauses((*path, "when"), body["when"]) if "when" in body else ()
        message = self.message((*path, "message"), body.get("message"))
        fields = self.field_names((*path, "fields"), body["fields"]) if "fields" in body \
            else _read_fields(require)
        if "roles" in body and "unless_role" in body:
            self.problem("rule.roles", (*path, "unless_role"), "a rule takes roles: or "
                         "unless_role:, not both", "keep one of them", at_key=True)
        only = self.role_list((*path, "roles"), body["roles"]) if "roles" in body else None
        unless = self.role_list((*path, "unless_role"), body.get("unless_role", []))
        if len(self.diagnostics) > before or require is None or when is None or \
                message is None or fields is None or unless is None:
            return None
        return RuleSpec(name, self.entity, require, message, when, fields, only, unless,
                        Location(self.source.name, self.source.line_of(path, key=True)[0]))

    def clauses(self, path: tuple[str | int, ...], raw: Any) -> tuple[Clause, ...] | None:
        if raw is None and path[-1] == "require":
            return None  # reported as missing
        if not isinstance(raw, dict) or not raw:
            self.problem("rule.condition", path, "must be a condition such as "
                         "{discount: {lte: 10}}", "write the filter structure of role "
                         "conditions: {field: value} or {field: {op: value}}")
            return None
        out: list[Clause] = []
        ok = True
        for key, value in raw.items():
            pairs = list(value.items()) if isinstance(value, dict) else \
                [("isnull", True)] if value is None else [("eq", value)]
            for op, operand in pairs:
                where = (*path, str(key), str(op)) if isinstance(value, dict) else (*path, str(key))
                clause = self.clause(where, str(key), str(op), operand)
                ok = ok and clause is not None
                if clause is not None:
                    out.append(clause)
        return tuple(out) if ok else None

    def clause(self, path: tuple[str | int, ...], key: str, op: str, operand: Any) -> Clause | None:
        if isinstance(operand, str) and operand.startswith(FIELD_REF):
            return self.comparison(path, key, op, operand[len(FIELD_REF):])
        if "$user" in str(operand):
            self.problem("rule.user", path, "a rule cannot compare with $user",
                         "say who a rule binds with roles: or unless_role:")
            return None
        param_key, text = condition_params({key: {op: operand}})[0]
        try:
            return self.grammar.parse(self.entity, param_key, text)
        except FilterRefused as refused:
            hint = "a value naming another field is written " + FIELD_REF + "<field>" \
                if isinstance(operand, str) and operand.startswith("$") else \
                "write it as the list call's filters, e.g. {amount: {gte: 1000}}"
            self.problem("rule.condition", path, f"{param_key}: {refused}", hint)
            return None

    def comparison(self, path: tuple[str | int, ...], name: str, op: str,
                   other: str) -> Comparison | None:
        attributes = self.grammar.attributes[self.entity]
        ok = True
        for which in (name, other):
            if which not in attributes:
                self.problem("rule.field", path, f"{self.entity} has no field {which!r}",
                             did_you_mean(which, attributes) or "fields: " + ", ".join(attributes))
                ok = False
        if not ok:
            return None
        left, right = attributes[name][0], attributes[other][0]
        if op not in COMPARISONS or op not in left.type.operators:
            usable = [o for o in COMPARISONS if o in left.type.operators]
            self.problem("rule.operator", path, f"{op!r} cannot compare two {left.type.name} "
                         "fields", "use one of: " + ", ".join(usable))
            return None
        if _KINDS.get(left.type.name, left.type.name) != _KINDS.get(right.type.name,
                                                                    right.type.name):
            self.problem("rule.field_type", path, f"{name} is {left.type.name} and {other} is "
                         f"{right.type.name}: their values do not compare",
                         "compare fields of one type (integer, decimal and money compare)")
            return None
        return Comparison(self.entity, name, op, other)

    def message(self, path: tuple[str | int, ...], raw: Any) -> Label | None:
        if raw is None:
            return None  # reported as missing
        if isinstance(raw, str) and raw:
            return MappingProxyType({self.setup.languages[0]: raw})
        if not isinstance(raw, dict) or not raw or \
                not all(isinstance(v, str) and v for v in raw.values()):
            self.problem("rule.message", path, "must be a text, or a text per language",
                         "e.g. message: {" + ", ".join(f"{lang}: ..."
                                                       for lang in self.setup.languages) + "}")
            return None
        for lang in raw:
            if lang not in self.setup.languages:
                self.problem("rule.message_language", (*path, str(lang)),
                             f"{lang!r} is not a language of the setup",
                             did_you_mean(str(lang), self.setup.languages) or "languages: "
                             + ", ".join(self.setup.languages), at_key=True)
        missing = [lang for lang in self.setup.languages if lang not in raw]
        if missing:
            self.problem("rule.message_missing", path, "has no text in " + ", ".join(missing),
                         "users of that language see the first language's text; add "
                         + ", ".join(f"{lang}: ..." for lang in missing), severity="warning")
        return MappingProxyType({str(k): v for k, v in raw.items()})

    def field_names(self, path: tuple[str | int, ...], raw: Any) -> tuple[str, ...] | None:
        spec = self.setup.entities[self.entity]
        known = [*self.grammar.attributes[self.entity], *spec.links]
        if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
            self.problem("rule.fields", path, "must be a list of field names",
                         f"e.g. fields: [{next(iter(spec.fields), 'name')}]")
            return None
        ok = True
        for index, name in enumerate(raw):
            if name not in known:
                self.problem("rule.fields", (*path, index), f"{self.entity} has no field {name!r}",
                             did_you_mean(name, known) or "fields: " + ", ".join(known))
                ok = False
        return tuple(raw) if ok else None

    def role_list(self, path: tuple[str | int, ...], raw: Any) -> frozenset[str] | None:
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            self.problem("rule.roles", path, "must be a list of roles", "e.g. [director]")
            return None
        ok = True
        for index, role in enumerate(raw):
            if role not in self.known_roles:
                self.problem("rule.roles", (*path, index), f"no role {role!r} in setup.yaml",
                             did_you_mean(role, self.known_roles)
                             or "roles: " + ", ".join(self.known_roles))
                ok = False
        return frozenset(raw) if ok else None

    # -- stage locks -----------------------------------------------------------------------
    def locks(self) -> dict[str, frozenset[str]]:
        """`readonly_in_stages:` of each field, checked against the entity's stages."""
        spec = self.setup.entities[self.entity]
        stages = spec.pipeline.all_stage_names if spec.pipeline else ()
        locked: dict[str, frozenset[str]] = {}
        for name, decl in (self.source.data.get("fields") or {}).items():
            listed = decl.get("readonly_in_stages") if isinstance(decl, dict) else None
            if not listed:
                continue
            path: tuple[str | int, ...] = ("fields", name, "readonly_in_stages")
            if not stages:
                self.problem("field.readonly_in_stages", path, f"{self.entity} has no pipeline, "
                             "so no stage can lock a field", "add a pipeline, or remove the key",
                             at_key=True)
                continue
            bad = False
            for index, stage in enumerate(listed):
                if stage not in stages:
                    self.problem("field.readonly_in_stages", (*path, index),
                                 f"no stage {stage!r}", did_you_mean(stage, stages)
                                 or "stages: " + ", ".join(stages))
                    bad = True
            if not bad:
                locked[str(name)] = frozenset(listed)
        return locked


def _read_fields(require: tuple[Clause, ...] | None) -> tuple[str, ...]:
    """The fields a `require` reads, in order: what a 422 names by default."""
    names: dict[str, None] = {}
    for clause in require or ():
        names.setdefault(clause.name)
        if isinstance(clause, Comparison):
            names.setdefault(clause.other)
    return tuple(names)
