"""Automations in the setup language: what the system does by itself, checked at load time.

    # setup.yaml
    automations:
      contract_approval:
        label: {en: Contract approval, ru: Согласование договора}
        entity: sale
        on: stage_entered            # created | updated | deleted | stage_entered | stage_left
        stage: contract              # (stage_entered, stage_left) one stage or a list
        changed: [amount]            # (updated) only when one of these fields changed
        from: {status: open}         # (updated) what the fields were ...
        to: {status: done}           # ... and became
        if: {amount: {gte: 100000}}  # the record after the change, in the filter language
        do:
          - create:
              entity: task
              values: {subject: "Approve contract {number}", due_at: now+2d, about: $record}
              owner: {role: lawyer}  # $owner, $actor, {user: e-mail}, {role: r, team: $owner}
          - set: {status: approved}                    # fields of the record
          - set: {link: client, values: {tier: gold}}  # of the record a link names
          - set: {way: documents, where: {kind: contract}, values: {status: review}}
                                                       # of the records linking to it
          - move: won                                  # the record to a stage
          - assign: {rules: [{if: {city: Moscow}, to: {role: manager, team: moscow}},
                             {to: {role: manager}}], pick: round_robin}   # its owner
          - notify:
              to: [$owner, {role: director}, {email_field: email}]
              subject: {en: "Sale {number} is in contract", ru: "Сделка {number} на договоре"}
              text: "..."
          - webhook: {url: "https://erp.example.com/hooks", secret_env: ERP_SECRET, role: manager}
          - call: {action: my_action, with: {...}}     # registered in Python (docs/extending.md)

`if:` is the filter structure of roles and rules (`{field: value}`, `{field: {op: value}}`,
`{link.field: ...}`). Texts (`subject`, `text`, the string values of `create` and `set`)
take `{field}` and `{link.field}` placeholders of the trigger record. Every problem is a
located diagnostic (`automation.*`), like the rest of a setup.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from croniter import croniter

from engine.errors import Diagnostic
from engine.setup.filters import FilterGrammar
from engine.setup.names import did_you_mean, identifier_problem
from engine.setup.roles import ADMIN
from engine.setup.rules import Clause, _RuleChecker
from engine.setup.source import SourceFile
from engine.setup.spec import EntitySpec, Label, Location, SetupSpec
from engine.types.fields import FieldTypeRegistry, ValueProblem
from engine.types.moments import NotRelative, parse_relative

TRIGGERS = ("created", "updated", "deleted", "stage_entered", "stage_left", "date", "schedule")
#: the event each trigger listens to (the journal's, or the worker's clock for date/schedule)
EVENT_OF = {"created": "create", "updated": "update", "deleted": "delete",
            "stage_entered": "stage", "stage_left": "stage", "date": "date",
            "schedule": "schedule"}
KEYS = ("label", "entity", "on", "stage", "changed", "from", "to", "date", "before", "after",
        "schedule", "if", "do")
#: `before: 3 days` / `after: 1 hour`
OFFSET = re.compile(r"^\s*(\d{1,4})\s*(minute|hour|day|week)s?\s*$")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
ACTIONS = ("create", "set", "move", "assign", "notify", "webhook", "call")
#: how `assign` picks among the users a rule names
PICKS = ("least_loaded", "round_robin")
#: a value naming the trigger record (a link's value in `create` and `set`)
RECORD = "$record"
#: recipients and owners named by the trigger record
OWNER, ACTOR = "$owner", "$actor"
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]*)\}(?!\})")


@dataclass(frozen=True)
class ActionSpec:
    kind: str
    params: Mapping[str, Any]
    location: Location


@dataclass(frozen=True)
class AutomationSpec:
    name: str
    label: Label
    entity: str
    on: str
    actions: tuple[ActionSpec, ...]
    #: stage_entered / stage_left: the stages (None: any)
    stages: frozenset[str] | None = None
    #: updated: fires only when one of these changed (empty: any change)
    changed: tuple[str, ...] = ()
    #: updated: the fields' values before and after, as the API renders them
    old: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    new: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    when: tuple[Clause, ...] = ()
    location: Location = field(default_factory=lambda: Location(""))
    #: on: date — the date or datetime field, and the seconds after it (negative: before)
    date_field: str | None = None
    offset_seconds: int = 0
    #: on: schedule — a cron expression (minute hour day month weekday), in the setup's zone
    schedule: str | None = None

    @property
    def event(self) -> str:
        return EVENT_OF[self.on]


def check_automations(source: SourceFile | None, raw: Any, setup: SetupSpec,
                      registry: FieldTypeRegistry, actions: Collection[str],
                      ) -> tuple[tuple[AutomationSpec, ...], list[Diagnostic]]:
    """The automations of setup.yaml and the problems found. `actions` are the Python
    actions registered for `call:` (engine.automations.actions)."""
    if source is None or raw is None:
        return (), []
    checker = _Checker(source, setup, registry, actions)
    if not isinstance(raw, dict):
        checker.problem("automation.shape", ("automations",), "must be a mapping of names to "
                        "automations", "e.g. automations: {contract_approval: {entity: sale, "
                        "on: created, do: [...]}}")
        return (), checker.diagnostics
    found = tuple(a for a in (checker.automation(str(k), v) for k, v in raw.items())
                  if a is not None)
    return found, checker.diagnostics


class _Checker:
    def __init__(self, source: SourceFile, setup: SetupSpec, registry: FieldTypeRegistry,
                 actions: Collection[str]):
        self.source = source
        self.setup = setup
        self.registry = registry
        self.grammar = FilterGrammar(setup, registry)
        self.actions = actions
        self.diagnostics: list[Diagnostic] = []

    def problem(self, code: str, path: tuple[str | int, ...], message: str, hint: str = "",
                at_key: bool = False) -> None:
        self.diagnostics.append(self.source.diagnostic(code, path, message, hint, at_key=at_key))

    def location(self, path: tuple[str | int, ...]) -> Location:
        return Location(self.source.name, self.source.line_of(path, key=True)[0])

    # -- one automation --------------------------------------------------------------------
    def automation(self, name: str, body: Any) -> AutomationSpec | None:
        path: tuple[str | int, ...] = ("automations", name)
        before = len(self.diagnostics)
        problem = identifier_problem(name)
        if problem:
            self.problem("automation.name", path, f"automation name {problem}",
                         "automation names are lower_snake, e.g. contract_approval: the "
                         "timeline and the API name them", at_key=True)
            return None
        if not isinstance(body, dict):
            self.problem("automation.shape", path, "must be a mapping with entity:, on: and do:",
                         "e.g. {entity: sale, on: created, do: [{set: {status: new}}]}")
            return None
        for key in body:
            if key not in KEYS:
                self.problem("automation.key", (*path, str(key)), f"unknown key {key!r}",
                             did_you_mean(str(key), KEYS) or "allowed keys: " + ", ".join(KEYS),
                             at_key=True)
        for key in ("entity", "on", "do"):
            if key not in body:
                self.problem(f"automation.{key}", path, f"{key!r} is missing",
                             {"entity": "add entity: <the entity whose records trigger it>",
                              "on": "add on: one of " + ", ".join(TRIGGERS),
                              "do": "add do: [a list of actions: " + ", ".join(ACTIONS) + "]"}[key],
                             at_key=True)
        if len(self.diagnostics) > before:
            return None
        entity = self.entity((*path, "entity"), body["entity"])
        on = body["on"]
        if on not in TRIGGERS:
            self.problem("automation.on", (*path, "on"), f"unknown trigger {on!r}",
                         did_you_mean(str(on), TRIGGERS) or "triggers: " + ", ".join(TRIGGERS))
            return None
        if entity is None:
            return None
        label = self.label((*path, "label"), body.get("label"), name)
        stages = self.stages(path, entity, on, body)
        changed, old, new = self.change(path, entity, on, body)
        date_field, offset = self.date(path, entity, on, body)
        schedule = self.schedule(path, on, body)
        if on == "deleted" and "if" in body:
            self.problem("automation.if", (*path, "if"), "a deleted record has no fields to "
                         "ask about", "remove if:, or trigger on: updated / stage_entered",
                         at_key=True)
        when: tuple[Clause, ...] = ()
        if "if" in body:
            when = self.condition((*path, "if"), entity.name, body["if"]) or ()
        actions = self.action_list((*path, "do"), entity, body["do"])
        if len(self.diagnostics) > before or actions is None:
            return None
        return AutomationSpec(name, label, entity.name, on, actions, stages, changed,
                              MappingProxyType(old), MappingProxyType(new), when,
                              self.location(path), date_field, offset, schedule)

    def entity(self, path: tuple[str | int, ...], raw: Any) -> EntitySpec | None:
        if raw not in self.setup.entities:
            self.problem("automation.entity", path, f"no entity {raw!r}",
                         did_you_mean(str(raw), self.setup.entities)
                         or "entities: " + ", ".join(self.setup.entities))
            return None
        return self.setup.entities[raw]

    def label(self, path: tuple[str | int, ...], raw: Any, name: str) -> Label:
        if raw is None:
            return MappingProxyType({self.setup.languages[0]: name.replace("_", " ")})
        if isinstance(raw, str) and raw:
            return MappingProxyType({self.setup.languages[0]: raw})
        if isinstance(raw, dict) and raw and all(isinstance(v, str) and v for v in raw.values()):
            return MappingProxyType({str(k): v for k, v in raw.items()})
        self.problem("automation.label", path, "must be a text, or a text per language",
                     "e.g. label: {" + ", ".join(f"{lang}: ..." for lang in self.setup.languages)
                     + "}")
        return MappingProxyType({self.setup.languages[0]: name})

    def stages(self, path: tuple[str | int, ...], entity: EntitySpec, on: str,
               body: dict[str, Any]) -> frozenset[str] | None:
        if "stage" not in body:
            return None
        if on not in ("stage_entered", "stage_left"):
            self.problem("automation.stage", (*path, "stage"), f"stage: is for stage_entered "
                         f"and stage_left, not {on}", "use if: {stage: ...} to ask about the "
                         "stage a record is in", at_key=True)
            return None
        if entity.pipeline is None:
            self.problem("automation.stage", (*path, "stage"), f"{entity.name} has no pipeline",
                         "stage triggers are for entities with pipeline: or pipelines:",
                         at_key=True)
            return None
        raw = body["stage"]
        names = raw if isinstance(raw, list) else [raw]
        known = sorted({s for p in entity.pipeline.pipelines.values() for s in p.stage_names})
        for index, stage in enumerate(names):
            if stage not in known:
                where = (*path, "stage", index) if isinstance(raw, list) else (*path, "stage")
                self.problem("automation.stage", where, f"{entity.name} has no stage {stage!r}",
                             did_you_mean(str(stage), known) or "stages: " + ", ".join(known))
        return frozenset(str(s) for s in names)

    def change(self, path: tuple[str | int, ...], entity: EntitySpec, on: str,
               body: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]:
        named = [k for k in ("changed", "from", "to") if k in body]
        if named and on != "updated":
            self.problem("automation.changed", (*path, named[0]), f"{named[0]}: is for on: "
                         f"updated, not {on}", "remove it, or make the trigger on: updated",
                         at_key=True)
            return (), {}, {}
        changed: list[str] = []
        raw = body.get("changed", [])
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
            self.problem("automation.changed", (*path, "changed"), "must be a list of fields",
                         "e.g. changed: [amount, stage]")
        else:
            for index, name in enumerate(raw):
                if self.field_name((*path, "changed", index), entity, name):
                    changed.append(name)
        values: list[dict[str, Any]] = []
        for key in ("from", "to"):
            given = body.get(key, {})
            rendered: dict[str, Any] = {}
            if not isinstance(given, dict):
                self.problem("automation.changed", (*path, key), "must be a mapping of fields to "
                             "values", f"e.g. {key}: {{status: open}}")
            else:
                for name, value in given.items():
                    where = (*path, key, str(name))
                    if self.field_name(where, entity, str(name)):
                        rendered[str(name)] = self.value(where, entity, str(name), value)
            values.append(rendered)
        return tuple(changed), values[0], values[1]

    def date(self, path: tuple[str | int, ...], entity: EntitySpec, on: str,
             body: dict[str, Any]) -> tuple[str | None, int]:
        """on: date — `date: field` and `before:` / `after:` (`3 days`, `1 hour`)."""
        named = [k for k in ("date", "before", "after") if k in body]
        if on != "date":
            if named:
                self.problem("automation.date", (*path, named[0]), f"{named[0]}: is for on: "
                             f"date, not {on}", "e.g. on: date, date: valid_to, before: 3 days",
                             at_key=True)
            return None, 0
        dated = [n for n, f in entity.fields.items() if f.type.name in ("date", "datetime")]
        if "date" not in body:
            self.problem("automation.date", path, "'date' is missing", "name the date or "
                         "datetime field: date: " + (dated[0] if dated else "valid_to"),
                         at_key=True)
            return None, 0
        name = body["date"]
        spec = entity.fields.get(name) if isinstance(name, str) else None
        if spec is None or spec.type.name not in ("date", "datetime"):
            self.problem("automation.date", (*path, "date"), f"{entity.name} has no date or "
                         f"datetime field {name!r}", did_you_mean(str(name), dated) or
                         ("date fields: " + ", ".join(dated) if dated else
                          f"{entity.name} has none: add a field of type date or datetime"))
            return None, 0
        if "before" in body and "after" in body:
            self.problem("automation.date", (*path, "after"), "before: and after: together",
                         "keep one of them", at_key=True)
            return None, 0
        key = "before" if "before" in body else "after" if "after" in body else None
        if key is None:
            return name, 0
        match = OFFSET.match(str(body[key]))
        if match is None:
            self.problem("automation.date", (*path, key), f"{body[key]!r} is not a time span",
                         f"e.g. {key}: 3 days (minutes, hours, days, weeks)")
            return None, 0
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
        if spec.type.name == "date" and seconds % 86400:
            self.problem("automation.date", (*path, key), f"{name} is a date: it comes due by "
                         "whole days", f"e.g. {key}: 1 day, or make {name} a datetime")
            return None, 0
        return name, -seconds if key == "before" else seconds

    def schedule(self, path: tuple[str | int, ...], on: str, body: dict[str, Any]) -> str | None:
        if on != "schedule":
            if "schedule" in body:
                self.problem("automation.schedule", (*path, "schedule"), f"schedule: is for "
                             f"on: schedule, not {on}", "e.g. on: schedule, schedule: "
                             "'0 9 * * 1-5'", at_key=True)
            return None
        raw = body.get("schedule")
        if not isinstance(raw, str) or len(raw.split()) != 5 or not croniter.is_valid(raw):
            self.problem("automation.schedule", (*path, "schedule") if "schedule" in body else path,
                         f"{raw!r} is not a schedule" if "schedule" in body else
                         "'schedule' is missing", "five cron fields in the setup's time zone: "
                         "minute hour day month weekday, e.g. '0 9 * * 1-5' (9:00 on weekdays)",
                         at_key="schedule" not in body)
            return None
        return raw

    def field_name(self, path: tuple[str | int, ...], entity: EntitySpec, name: str) -> bool:
        known = [*entity.fields, *entity.links, *(["stage"] if entity.pipeline else []),
                 *(["owner"] if entity.owner else [])]
        if name not in known:
            self.problem("automation.field", path, f"{entity.name} has no field {name!r}",
                         did_you_mean(name, known) or "fields: " + ", ".join(known))
            return False
        return True

    def value(self, path: tuple[str | int, ...], entity: EntitySpec, name: str, value: Any) -> Any:
        """`value` of field `name` as the API renders it (what the journal holds)."""
        spec = entity.fields.get(name)
        if spec is None or value is None:
            return value
        try:
            return spec.type.render(spec, spec.type.parse(spec, value))
        except ValueProblem as problem:
            self.problem("automation.value", path, f"{name}: {value!r} {problem}",
                         f"write a value {name} can hold")
            return value

    def condition(self, path: tuple[str | int, ...], entity: str, raw: Any) -> tuple[Clause, ...] | None:
        checker = _RuleChecker(self.source, self.setup, self.grammar, entity,
                               [*self.setup.roles, ADMIN])
        clauses = checker.clauses(path, raw)
        for diagnostic in checker.diagnostics:
            code = diagnostic.code.replace("rule.", "automation.", 1)
            self.diagnostics.append(replace(diagnostic, code=code))
        return clauses

    # -- actions ---------------------------------------------------------------------------
    def action_list(self, path: tuple[str | int, ...], entity: EntitySpec,
                    raw: Any) -> tuple[ActionSpec, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.problem("automation.do", path, "must be a list of actions",
                         "e.g. do: [{set: {status: new}}]; actions: " + ", ".join(ACTIONS))
            return None
        found = []
        for index, item in enumerate(raw):
            where = (*path, index)
            if not isinstance(item, dict) or len(item) != 1:
                self.problem("automation.action", where, "an action is one key: "
                             + ", ".join(ACTIONS), "e.g. - set: {status: new}")
                continue
            kind, params = next(iter(item.items()))
            if kind not in ACTIONS:
                self.problem("automation.action", (*where, str(kind)), f"unknown action {kind!r}",
                             did_you_mean(str(kind), ACTIONS) or "actions: " + ", ".join(ACTIONS),
                             at_key=True)
                continue
            checked = getattr(self, f"action_{kind}")((*where, kind), entity, params)
            if checked is not None:
                found.append(ActionSpec(kind, MappingProxyType(checked), self.location(where)))
        return tuple(found)

    def _keys(self, path: tuple[str | int, ...], params: Any, allowed: tuple[str, ...],
              required: tuple[str, ...], example: str) -> bool:
        if not isinstance(params, dict):
            self.problem("automation.action", path, "must be a mapping", f"e.g. {example}")
            return False
        ok = True
        for key in params:
            if key not in allowed:
                self.problem("automation.action", (*path, str(key)), f"unknown key {key!r}",
                             did_you_mean(str(key), allowed) or "keys: " + ", ".join(allowed),
                             at_key=True)
                ok = False
        for key in required:
            if key not in params:
                self.problem("automation.action", path, f"{key!r} is missing", f"e.g. {example}",
                             at_key=True)
                ok = False
        return ok

    def values(self, path: tuple[str | int, ...], trigger: EntitySpec, target: EntitySpec,
               raw: Any) -> dict[str, Any] | None:
        """Values for `target`'s fields: templates of the trigger record, `$record` for a
        link to it, relative dates; a constant is checked as the field would check it."""
        if not isinstance(raw, dict) or not raw:
            self.problem("automation.values", path, "must be a mapping of fields to values",
                         "e.g. values: {subject: 'Call {name}'}")
            return None
        out: dict[str, Any] = {}
        for name, value in raw.items():
            where = (*path, str(name))
            if name in ("stage", "id", "created_at", "updated_at", "version"):
                self.problem("automation.values", where, f"{name} is set by the server",
                             "move a record with the move: action" if name == "stage" else
                             "leave it out", at_key=True)
                continue
            link = target.links.get(name)
            if link is not None:
                if value == RECORD and trigger.name not in link.targets:
                    self.problem("automation.values", where, f"{target.name}.{name} links to "
                                 f"{', '.join(link.targets)}, not to {trigger.name}",
                                 f"$record is a {trigger.name}")
                    continue
                out[name] = value
                continue
            spec = target.fields.get(name)
            if spec is None and not (name == "owner" and target.owner):
                known = [*target.fields, *target.links]
                self.problem("automation.values", where, f"{target.name} has no field {name!r}",
                             did_you_mean(str(name), known) or "fields: " + ", ".join(known),
                             at_key=True)
                continue
            if spec is not None and spec.computed:
                self.problem("automation.values", where, f"{name} is computed by the system",
                             "leave it out", at_key=True)
                continue
            if isinstance(value, str) and (PLACEHOLDER.search(value) or value.startswith("$")):
                self.template(where, trigger, value)
            elif spec is not None and value is not None:
                try:
                    if not (isinstance(value, str) and spec.type.name in ("date", "datetime")
                            and parse_relative(value, spec.type.name)):
                        spec.type.parse(spec, value)
                except (ValueProblem, NotRelative) as problem:
                    self.problem("automation.value", where, f"{name}: {value!r} {problem}",
                                 f"write a value {name} can hold")
                    continue
            out[name] = value
        return out

    def template(self, path: tuple[str | int, ...], entity: EntitySpec, text: Any) -> None:
        if not isinstance(text, str):
            return
        if text.startswith("$") and not PLACEHOLDER.search(text):
            if text not in (RECORD, OWNER, ACTOR) and not text.startswith(RECORD + "."):
                self.problem("automation.template", path, f"unknown value {text!r}",
                             f"{RECORD}, {OWNER}, {ACTOR} or {RECORD}.<field>")
            elif text.startswith(RECORD + "."):
                self.path_of(path, entity, text[len(RECORD) + 1:])
            return
        for match in PLACEHOLDER.finditer(text):
            self.path_of(path, entity, match.group(1).strip())

    def path_of(self, path: tuple[str | int, ...], entity: EntitySpec, dotted: str) -> None:
        """`{field}` or `{link.field}` of `entity` (a many-to-one link)."""
        parts = dotted.split(".")
        current = entity
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            link = current.links.get(part)
            if not last:
                if link is None or link.many or link.polymorphic:
                    self.problem("automation.template", path, f"{{{dotted}}}: {current.name} has "
                                 f"no link {part!r} to one record",
                                 "a placeholder follows links to one record: {client.name}")
                    return
                current = self.setup.entities[link.target]
                continue
            known = [*current.fields, *current.links, "id", "created_at", "updated_at",
                     *(["stage"] if current.pipeline else []), *(["owner"] if current.owner else [])]
            if part not in known:
                self.problem("automation.template", path, f"{{{dotted}}}: {current.name} has no "
                             f"field {part!r}", did_you_mean(part, known) or "fields: "
                             + ", ".join(known))

    def texts(self, path: tuple[str | int, ...], entity: EntitySpec, raw: Any) -> Label | None:
        if isinstance(raw, str):
            raw = {self.setup.languages[0]: raw}
        if not isinstance(raw, dict) or not raw or \
                not all(isinstance(v, str) for v in raw.values()):
            self.problem("automation.text", path, "must be a text, or a text per language",
                         "e.g. {" + ", ".join(f"{lang}: ..." for lang in self.setup.languages) + "}")
            return None
        first = self.setup.languages[0]
        for lang, text in raw.items():
            if lang not in self.setup.languages:
                self.problem("automation.text", (*path, str(lang)), f"{lang!r} is not a language "
                             "of this setup", "languages: " + ", ".join(self.setup.languages),
                             at_key=True)
            self.template((*path, str(lang)), entity, text)
        if first not in raw:
            self.problem("automation.text", path, f"the text in {first}, the setup's first "
                         "language, is missing", f"add {first}: ... — what a recipient whose "
                         "language has no text here gets")
        return MappingProxyType({str(k): v for k, v in raw.items()})

    def person(self, path: tuple[str | int, ...], raw: Any, *, email_field: EntitySpec | None = None
               ) -> Any:
        """Who: $owner, $actor, {user: e-mail}, {role: r[, team: $owner | name]} (and, for
        notify, {email_field: field or link.field} of `email_field`)."""
        if raw in (OWNER, ACTOR):
            return raw
        if isinstance(raw, dict) and set(raw) == {"user"} and isinstance(raw["user"], str):
            return dict(raw)
        if isinstance(raw, dict) and "role" in raw and set(raw) <= {"role", "team"}:
            known = [*self.setup.roles, ADMIN]
            if raw["role"] not in known:
                self.problem("automation.role", (*path, "role"), f"no role {raw['role']!r}",
                             did_you_mean(str(raw["role"]), known) or "roles: " + ", ".join(known))
                return None
            return dict(raw)
        if email_field is not None and isinstance(raw, dict) and set(raw) == {"email_field"}:
            self.path_of(path, email_field, str(raw["email_field"]))
            return dict(raw)
        self.problem("automation.person", path, f"{raw!r} names nobody",
                     f"{OWNER}, {ACTOR}, {{user: a@example.com}}, {{role: director}}, "
                     "{role: director, team: $owner}"
                     + (", {email_field: email}" if email_field is not None else ""))
        return None

    def action_create(self, path: tuple[str | int, ...], entity: EntitySpec,
                      params: Any) -> dict[str, Any] | None:
        if not self._keys(path, params, ("entity", "values", "owner"), ("entity", "values"),
                          "create: {entity: task, values: {subject: 'Call {name}'}}"):
            return None
        target = self.entity((*path, "entity"), params["entity"])
        if target is None:
            return None
        values = self.values((*path, "values"), entity, target, params["values"])
        owner = None
        if "owner" in params:
            if not target.owner:
                self.problem("automation.owner", (*path, "owner"), f"{target.name} has no owner",
                             "add owner: true to its entity file, or leave owner out", at_key=True)
                return None
            owner = self.person((*path, "owner"), params["owner"])
        if values is None:
            return None
        return {"entity": target.name, "values": values, "owner": owner}

    def action_set(self, path: tuple[str | int, ...], entity: EntitySpec,
                   params: Any) -> dict[str, Any] | None:
        if isinstance(params, dict) and "way" in params:
            if not self._keys(path, params, ("way", "where", "values"), ("way", "values"),
                              "set: {way: documents, where: {kind: contract}, values: "
                              "{status: review}}"):
                return None
            ways = self.setup.reverse_links.get(entity.name, {})
            way = ways.get(params["way"]) if isinstance(params["way"], str) else None
            if way is None or way.link.many:
                usable = [n for n, w in ways.items() if not w.link.many]
                self.problem("automation.way", (*path, "way"), f"{entity.name} has no way back "
                             f"{params['way']!r} from records linking to it",
                             did_you_mean(str(params["way"]), usable) or
                             ("ways back: " + ", ".join(usable) if usable else
                              "give the link a reverse: name in the entity that links here"))
                return None
            source = self.setup.entities[way.entity]
            where: tuple[Clause, ...] = ()
            if "where" in params:
                where = self.condition((*path, "where"), source.name, params["where"]) or ()
            values = self.values((*path, "values"), entity, source, params["values"])
            return None if values is None else {"way": way.name, "where": where,
                                                "values": values}
        if isinstance(params, dict) and "link" in params:
            if not self._keys(path, params, ("link", "values"), ("link", "values"),
                              "set: {link: client, values: {tier: gold}}"):
                return None
            link = entity.links.get(params["link"])
            if link is None or link.many or link.polymorphic:
                one = [n for n, l in entity.links.items() if not l.many and not l.polymorphic]
                self.problem("automation.link", (*path, "link"), f"{entity.name} has no link "
                             f"{params['link']!r} to one record",
                             did_you_mean(str(params["link"]), one) or "links: " + ", ".join(one))
                return None
            target = self.setup.entities[link.target]
            values = self.values((*path, "values"), entity, target, params["values"])
            return None if values is None else {"link": link.name, "values": values}
        values = self.values(path, entity, entity, params)
        return None if values is None else {"values": values}

    def action_move(self, path: tuple[str | int, ...], entity: EntitySpec,
                    params: Any) -> dict[str, Any] | None:
        if entity.pipeline is None:
            self.problem("automation.move", path, f"{entity.name} has no pipeline",
                         "move: is for entities with pipeline: or pipelines:")
            return None
        known = sorted({s for p in entity.pipeline.pipelines.values() for s in p.stage_names})
        if params not in known:
            self.problem("automation.move", path, f"{entity.name} has no stage {params!r}",
                         did_you_mean(str(params), known) or "stages: " + ", ".join(known))
            return None
        return {"to": params}

    def action_notify(self, path: tuple[str | int, ...], entity: EntitySpec,
                      params: Any) -> dict[str, Any] | None:
        if not self._keys(path, params, ("to", "subject", "text", "email", "language"),
                          ("to", "subject"), "notify: {to: [$owner], subject: 'Sale {number} won'}"):
            return None
        if params.get("email", False) not in (True, False):
            self.problem("automation.notify", (*path, "email"), "must be true or false",
                         "email: true also e-mails the users told in the app")
            return None
        raw = params["to"] if isinstance(params["to"], list) else [params["to"]]
        people = [self.person((*path, "to", i), p, email_field=entity) for i, p in enumerate(raw)]
        subject = self.texts((*path, "subject"), entity, params["subject"])
        text = self.texts((*path, "text"), entity, params["text"]) if "text" in params else None
        language = self.mail_language((*path, "language"), entity, params.get("language"), people)
        if any(p is None for p in people) or subject is None or language is False:
            return None
        return {"to": people, "subject": subject, "text": text,
                "email": bool(params.get("email", False)), "language": language}

    def mail_language(self, path: tuple[str | int, ...], entity: EntitySpec, raw: Any,
                      people: list[Any]) -> str | bool | None:
        """`language: client.language` — the field (of the record, or through links to one
        record) whose value picks the language of the e-mail to an address on the record;
        None when not given, False after a problem."""
        if raw is None:
            return None
        before = len(self.diagnostics)
        if not isinstance(raw, str) or not raw:
            self.problem("automation.language", path, "must name a field, e.g. "
                         "language: client.language", "the field's value is a language code "
                         "of the setup (" + ", ".join(self.setup.languages) + ")")
            return False
        self.path_of(path, entity, raw)
        if len(self.diagnostics) > before:
            return False
        if not any(isinstance(p, dict) and "email_field" in p for p in people):
            self.problem("automation.language", path, "language: is for e-mail to an address on "
                         "the record", "add {email_field: ...} to to:, or remove language: (users "
                         "get their own language)", at_key=True)
            return False
        return raw

    def action_assign(self, path: tuple[str | int, ...], entity: EntitySpec,
                      params: Any) -> dict[str, Any] | None:
        """`assign: {rules: [{if: {city: Moscow}, to: {role: manager, team: moscow}},
        {to: {role: manager}}], pick: round_robin}`: the first rule whose `if` holds names
        the users; one of them becomes the record's owner."""
        example = ("assign: {rules: [{if: {city: Moscow}, to: {role: manager, team: moscow}}, "
                   "{to: {role: manager}}], pick: round_robin}")
        if not entity.owner:
            self.problem("automation.assign", path, f"{entity.name} has no owner",
                         "add owner: true to its entity file")
            return None
        if not self._keys(path, params, ("rules", "pick"), ("rules",), example):
            return None
        pick = params.get("pick", "least_loaded")
        if pick not in PICKS:
            self.problem("automation.assign", (*path, "pick"), f"unknown pick {pick!r}",
                         did_you_mean(str(pick), PICKS) or "pick: " + " or ".join(PICKS))
            return None
        rules = params["rules"]
        if not isinstance(rules, list) or not rules:
            self.problem("automation.assign", (*path, "rules"), "must be a list of rules",
                         f"e.g. {example}")
            return None
        checked = []
        for index, rule in enumerate(rules):
            where = (*path, "rules", index)
            if not isinstance(rule, dict) or "to" not in rule or set(rule) - {"if", "to"}:
                self.problem("automation.assign", where, "a rule is {to: who} or "
                             "{if: condition, to: who}", f"e.g. {example}")
                return None
            when = self.condition((*where, "if"), entity.name, rule["if"]) if "if" in rule else ()
            who = self.person((*where, "to"), rule["to"])
            if when is None or who is None:
                return None
            checked.append({"if": when, "to": who})
        return {"rules": checked, "pick": pick}

    def action_webhook(self, path: tuple[str | int, ...], entity: EntitySpec,
                       params: Any) -> dict[str, Any] | None:
        if not self._keys(path, params, ("url", "secret_env", "role"), ("url",),
                          "webhook: {url: 'https://erp.example.com/hooks/crm', "
                          "secret_env: ERP_HOOK_SECRET}"):
            return None
        url = params["url"]
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem("automation.webhook", (*path, "url"), f"{url!r} is not an http(s) URL",
                         "e.g. url: https://erp.example.com/hooks/crm")
            return None
        secret = params.get("secret_env")
        if secret is not None and not (isinstance(secret, str) and ENV_NAME.match(secret)):
            self.problem("automation.webhook", (*path, "secret_env"), f"{secret!r} is not the "
                         "name of an environment variable", "e.g. secret_env: ERP_HOOK_SECRET "
                         "(the secret itself never goes into the setup)")
            return None
        role = params.get("role")
        if role is not None and role not in self.setup.roles:
            self.problem("automation.role", (*path, "role"), f"no role {role!r}",
                         did_you_mean(str(role), self.setup.roles)
                         or "roles: " + ", ".join(self.setup.roles))
            return None
        return {"url": url, "secret_env": secret, "role": role}

    def action_call(self, path: tuple[str | int, ...], entity: EntitySpec,
                    params: Any) -> dict[str, Any] | None:
        if isinstance(params, str):
            params = {"action": params}
        if not self._keys(path, params, ("action", "with"), ("action",),
                          "call: {action: my_action, with: {level: 2}}"):
            return None
        if params["action"] not in self.actions:
            known = sorted(self.actions)
            self.problem("automation.call", (*path, "action"), f"no action {params['action']!r} "
                         "is registered", did_you_mean(str(params["action"]), known) or
                         ("registered: " + ", ".join(known) if known else
                          "register one in Python: docs/extending.md, 'Actions'"))
            return None
        return {"action": params["action"], "with": params.get("with") or {}}
