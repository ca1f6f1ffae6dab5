"""Intakes in the setup language: how records arrive without a user's token — a web
form's backend, a partner's inbound webhook — each with its own key and its own fields.

    # setup.yaml
    intakes:
      website:                          # POST /intake/website, header X-Intake-Key
        entity: client
        fields: [name, email, phone, city, notes]   # what a caller may send, nothing else
        set: {source: website}          # fixed values the intake adds
        key_env: WEBSITE_INTAKE_KEY     # the environment variable holding the key
        rate: 30 per minute             # per calling address (default 60 per minute)

Each problem is a located diagnostic (`intake.*`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.errors import Diagnostic
from engine.setup.names import SERVER_MANAGED, did_you_mean, identifier_problem
from engine.setup.source import SourceFile
from engine.setup.spec import Location, SetupSpec
from engine.types.fields import ValueProblem

KEYS = ("entity", "fields", "set", "key_env", "rate")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
RATE = re.compile(r"^\s*(\d{1,6})\s+per\s+(second|minute|hour)\s*$")
PERIOD = {"second": 1, "minute": 60, "hour": 3600}


@dataclass(frozen=True)
class IntakeSpec:
    name: str
    entity: str
    fields: tuple[str, ...]
    key_env: str
    #: calls per `per_seconds`, per calling address
    rate: int = 60
    per_seconds: int = 60
    set: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    location: Location = field(default_factory=lambda: Location(""))


def check_intakes(source: SourceFile | None, raw: Any, setup: SetupSpec,
                  ) -> tuple[tuple[IntakeSpec, ...], list[Diagnostic]]:
    if source is None or raw is None:
        return (), []
    problems: list[Diagnostic] = []

    def problem(code: str, path: tuple[str | int, ...], message: str, hint: str,
                at_key: bool = False) -> None:
        problems.append(source.diagnostic(code, path, message, hint, at_key=at_key))

    if not isinstance(raw, dict):
        problem("intake.shape", ("intakes",), "must be a mapping of names to intakes",
                "e.g. intakes: {website: {entity: client, fields: [name, email], "
                "key_env: WEBSITE_INTAKE_KEY}}")
        return (), problems
    found = []
    for name, body in raw.items():
        path: tuple[str | int, ...] = ("intakes", str(name))
        before = len(problems)
        naming = identifier_problem(str(name))
        if naming:
            problem("intake.name", path, f"intake name {naming}", "lower_snake, e.g. website: "
                    "it is the last part of the URL /intake/<name>", at_key=True)
            continue
        if not isinstance(body, dict):
            problem("intake.shape", path, "must be a mapping with entity:, fields: and key_env:",
                    "e.g. {entity: client, fields: [name, email], key_env: WEBSITE_INTAKE_KEY}")
            continue
        for key in body:
            if key not in KEYS:
                problem("intake.key", (*path, str(key)), f"unknown key {key!r}",
                        did_you_mean(str(key), KEYS) or "keys: " + ", ".join(KEYS), at_key=True)
        for key in ("entity", "fields", "key_env"):
            if key not in body:
                problem(f"intake.{key}", path, f"{key!r} is missing",
                        {"entity": "add entity: <the entity its records are>",
                         "fields": "add fields: [the fields a caller may send]",
                         "key_env": "add key_env: NAME_OF_AN_ENVIRONMENT_VARIABLE holding "
                                    "the intake's key (never the key itself)"}[key],
                        at_key=True)
        if len(problems) > before:
            continue
        entity = setup.entities.get(body["entity"])
        if entity is None:
            problem("intake.entity", (*path, "entity"), f"no entity {body['entity']!r}",
                    did_you_mean(str(body["entity"]), setup.entities)
                    or "entities: " + ", ".join(setup.entities))
            continue
        writable = [n for n, f in entity.fields.items() if not f.computed] + \
            [n for n, link in entity.links.items() if not link.many and not link.polymorphic]
        names = body["fields"]
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) for n in names):
            problem("intake.fields", (*path, "fields"), "must be a list of fields",
                    "e.g. fields: [name, email, phone]")
            continue
        for index, field_name in enumerate(names):
            if field_name not in writable:
                problem("intake.fields", (*path, "fields", index),
                        f"{entity.name} has no field {field_name!r} a caller may send"
                        + (" (it is set by the server)" if field_name in SERVER_MANAGED else ""),
                        did_you_mean(field_name, writable) or "fields: " + ", ".join(writable))
        fixed = body.get("set") or {}
        if not isinstance(fixed, dict):
            problem("intake.set", (*path, "set"), "must be a mapping of fields to values",
                    "e.g. set: {source: website}")
            continue
        for key, value in fixed.items():
            spec = entity.fields.get(key)
            if spec is None or spec.computed:
                problem("intake.set", (*path, "set", str(key)), f"{entity.name} has no field "
                        f"{key!r} an intake may set", did_you_mean(str(key), writable)
                        or "fields: " + ", ".join(writable), at_key=True)
                continue
            try:
                spec.type.parse(spec, value)
            except ValueProblem as trouble:
                problem("intake.set", (*path, "set", str(key)), f"{key}: {value!r} {trouble}",
                        f"write a value {key} can hold")
        key_env = body["key_env"]
        if not isinstance(key_env, str) or not ENV_NAME.match(key_env):
            problem("intake.key_env", (*path, "key_env"), f"{key_env!r} is not the name of an "
                    "environment variable", "e.g. key_env: WEBSITE_INTAKE_KEY (the key itself "
                    "never goes into the setup)")
        rate, per = 60, 60
        if "rate" in body:
            match = RATE.match(str(body["rate"]))
            if match is None or int(match.group(1)) < 1:
                problem("intake.rate", (*path, "rate"), f"{body['rate']!r} is not a rate",
                        "e.g. rate: 30 per minute (second, minute or hour)")
            else:
                rate, per = int(match.group(1)), PERIOD[match.group(2)]
        if len(problems) > before:
            continue
        found.append(IntakeSpec(str(name), entity.name, tuple(names), key_env, rate, per,
                                MappingProxyType(dict(fixed)),
                                Location(source.name, source.line_of(path, key=True)[0])))
    return tuple(found), problems
