"""The loaded setup as plain JSON, for generic front ends (`GET /api/schema`)."""

from __future__ import annotations

from typing import Any

from engine.records.schemas import EntitySchemas
from engine.setup.rules import NO_RULES, RuleSpec
from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec, PipelineSpec, SetupSpec


def describe_setup(setup: SetupSpec, schemas: dict[str, EntitySchemas]) -> dict[str, Any]:
    return {
        "name": setup.name,
        "languages": list(setup.languages),
        "timezone": setup.timezone,
        "entities": {
            name: _entity(entity, setup, schemas[name]) for name, entity in setup.entities.items()
        },
    }


def _entity(entity: EntitySpec, setup: SetupSpec, schemas: EntitySchemas) -> dict[str, Any]:
    described = _entity_body(entity, setup, schemas)
    rules = setup.rules.get(entity.name, NO_RULES)
    for name, stages in rules.locked.items():
        described["fields"][name]["readonly_in_stages"] = sorted(stages)
    described["rules"] = [_rule(rule) for rule in rules.rules]
    return described


def _rule(rule: RuleSpec) -> dict[str, Any]:
    """What a front end may check before it writes: a rule's name, fields and message."""
    return {"name": rule.name, "fields": list(rule.fields), "message": dict(rule.message),
            "roles": None if rule.roles is None else sorted(rule.roles),
            "unless_role": sorted(rule.unless_roles)}


def _entity_body(entity: EntitySpec, setup: SetupSpec, schemas: EntitySchemas) -> dict[str, Any]:
    reverse = setup.reverse_links[entity.name]
    return {
        "label": dict(entity.label),
        "plural": dict(entity.plural),
        "title": entity.title,
        "search": list(entity.search),
        "owner": entity.owner,
        "fields": {name: _field(field) for name, field in entity.fields.items()},
        "links": {name: _link(link) for name, link in entity.links.items()},
        "reverse_links": {
            name: {"from": r.entity, "link": r.link.name, "many_to_many": r.link.many}
            for name, r in reverse.items()
        },
        "pipeline": None if entity.pipeline is None else {
            "pipeline_by": entity.pipeline.pipeline_by,
            "pipelines": {name: _pipeline(p) for name, p in entity.pipeline.pipelines.items()},
        },
        "schemas": schemas.names,
        **_rules(entity),
    }


def _rules(entity: EntitySpec) -> dict[str, Any]:
    """Unique sets and no-overlap rules, when the entity declares any (a field's own
    `unique: {ignore_case: true}` is listed here as a set of one)."""
    found: dict[str, Any] = {}
    if entity.unique:
        found["unique"] = [{"fields": list(u.members), "ignore_case": u.ignore_case,
                            "ignore_spaces": u.ignore_spaces} for u in entity.unique]
    if entity.no_overlap:
        found["no_overlap"] = [{"key": list(r.key), "range": [r.start, r.end]}
                               for r in entity.no_overlap]
    return found


def _field(field: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": field.type.name, "label": dict(field.label),
                           "required": field.required}
    for key in ("unique", "index"):
        if getattr(field, key):
            out[key] = True
    for key in ("min", "max", "min_length", "max_length", "pattern"):
        value = getattr(field, key)
        if value is not None:
            out[key] = value
    if field.options is not None:
        out["options"] = list(field.options)
    if field.option_labels:  # values stay the identifiers; labels per language
        out["option_labels"] = {value: dict(label) for value, label in field.option_labels.items()}
    if field.default is not None:
        out["default"] = field.type.render(field, field.default)
    if field.dynamic_default is not None:  # computed on each create: today+7d, $user
        out["default"] = field.dynamic_default.text
        out["dynamic_default"] = True
    if field.required_in_stages:
        out["required_in_stages"] = sorted(field.required_in_stages)
    if field.help:
        out["help"] = dict(field.help)
    if field.formula is not None:
        out["formula"] = field.formula.source  # computed by the server, read-only
    if field.rollup is not None:
        out["rollup"] = field.rollup.source  # added up by the server, read-only
    out.update(field.params)
    return out


def _link(link: LinkSpec) -> dict[str, Any]:
    described = _link_only(link)
    if link.through:  # a link that carries data: its pairs' fields
        described["through"] = {name: _field(field) for name, field in link.through.items()}
    return described


def _link_only(link: LinkSpec) -> dict[str, Any]:
    return {
        "to": list(link.targets) if link.polymorphic else link.target,
        "label": dict(link.label),
        "many": link.many,
        "polymorphic": link.polymorphic,
        "required": link.required,
        "on_delete": link.on_delete,
        "reverse": link.reverse,
    }


def _pipeline(pipeline: PipelineSpec) -> dict[str, Any]:
    transitions = pipeline.transitions
    return {
        "stages": [
            {"name": s.name, "label": dict(s.label), "probability": s.probability,
             "category": s.category}
            for s in pipeline.stages
        ],
        "initial": pipeline.initial,
        "final": sorted(pipeline.final),
        "transitions": transitions if isinstance(transitions, str)
        else {k: list(v) for k, v in transitions.items()},
    }
