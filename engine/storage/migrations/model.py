"""What the setup history records of each applied setup: its tables, and what each column
means (which field of which type, which link to which entity, which stages).

The database alone cannot say that a BIGINT column held an integer field or money in
cents; the recorded model can, so a later setup's type change converts values correctly.
The digest of this model is the setup's version.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from engine.setup.spec import EntitySpec, FieldSpec, LinkSpec
from engine.storage.migrations import constraints
from engine.storage.migrations.rules import rules_model
from engine.storage.tables import Storage
from engine.types.fields import FieldTypeRegistry

HISTORY_TABLE = "kt_setup_history"
_sqlite = sqlite_dialect.dialect()
_postgresql = postgresql.dialect()  # type: ignore[no-untyped-call]


def setup_model(storage: Storage) -> dict[str, Any]:
    """The part of a setup that shapes the database, as plain JSON-able data."""
    tables = {
        table.name: [f"{c.name} {c.type.compile(dialect=_sqlite)}" for c in table.columns]
        for table in storage.metadata.sorted_tables
    }
    entities = {name: entity_model(spec) for name, spec in storage.setup.entities.items()}
    return {"setup": storage.setup.name, "tables": tables, "entities": entities,
            **rules_model(storage.setup)}


def entity_model(entity: EntitySpec) -> dict[str, Any]:
    pipelines = {}
    if entity.pipeline is not None:
        pipelines = {name: list(p.stage_names) for name, p in entity.pipeline.pipelines.items()}
    return {
        "fields": {name: field_model(spec) for name, spec in entity.fields.items()},
        "links": {
            name: {"to": list(link.targets), "many": link.many, "polymorphic": link.polymorphic,
                   "required": link.required, "on_delete": link.on_delete,
                   # only on links whose pairs have formulas: other digests are unchanged
                   **_pair_formulas(link)}
            for name, link in entity.links.items()
        },
        "pipelines": pipelines,
        "pipeline_by": entity.pipeline.pipeline_by if entity.pipeline else None,
        "search": list(entity.search),
        "owner": entity.owner,
        **constraints.model(entity),  # unique sets, no_overlap (when declared)
    }


def _pair_formulas(link: LinkSpec) -> dict[str, Any]:
    formulas = {name: field.formula.source for name, field in link.through.items()
                if field.formula is not None}
    return {"formulas": formulas} if formulas else {}


def field_model(spec: FieldSpec) -> dict[str, Any]:
    return {
        "type": spec.type.name,
        "column": str(spec.type.column_type(spec).compile(dialect=_postgresql)),
        "required": spec.required,
        "unique": spec.unique,
        "index": spec.index,
        "params": dict(spec.params),
        "max_length": spec.max_length,
        "options": list(spec.options) if spec.options is not None else None,
        # only on formula fields, so the digest of a setup without formulas is unchanged
        **({"formula": spec.formula.source} if spec.formula is not None else {}),
        **({"rollup": spec.rollup.source} if spec.rollup is not None else {}),
    }


def field_from_model(name: str, data: dict[str, Any], registry: FieldTypeRegistry) -> FieldSpec | None:
    """The FieldSpec a recorded field had: enough to read and render its stored values."""
    field_type = registry.get(data.get("type", ""))
    if field_type is None:
        return None
    return FieldSpec(
        name=name, type=field_type, label=MappingProxyType({"en": name}),
        required=bool(data.get("required")), unique=bool(data.get("unique")),
        max_length=data.get("max_length"),
        options=tuple(data["options"]) if data.get("options") is not None else None,
        params=MappingProxyType(dict(data.get("params") or {})),
    )


def digest(model: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()


def last_applied(conn: sa.Connection) -> dict[str, Any] | None:
    """The model of the last applied setup, with its `digest`; None on a new database."""
    if not sa.inspect(conn).has_table(HISTORY_TABLE):
        return None
    row = conn.execute(sa.text(
        f"SELECT summary, digest FROM {HISTORY_TABLE} ORDER BY id DESC LIMIT 1")).first()
    if row is None:
        return None
    data: dict[str, Any] = json.loads(row[0])
    data["digest"] = row[1]
    return data
