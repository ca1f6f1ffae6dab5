"""`POST /api/{e}/bulk`: the HTTP side of engine/records/bulk.py — its answer and schemas.

Answers: 200 with each row's result when the rows were written (all_or_none: all of them;
per_row: the good ones — look at each row's `status`); 422 `bulk_failed` when an all_or_none
call had a bad row and nothing was written, every bad row in `details` and in `rows`; 400
`invalid_bulk` for a call that is not valid as a whole (mode, upsert_by, too many rows).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from api.errors import status_of
from engine.errors import RequestError, RuleFailed
from engine.records.bulk import MAX_ROWS, MODES, BulkResult, RowResult, unique_keys
from engine.records.schemas import ERROR_SCHEMA
from engine.setup.spec import EntitySpec

__all__ = ["BODY_FACTOR", "MAX_ROWS", "answer", "schemas"]

#: how many times the single-write body cap a bulk body may be (1,000 rows of about 16 KB
#: each with the default 1 MiB cap)
BODY_FACTOR = 16


def _error(error: RequestError, language: str | None) -> dict[str, Any]:
    body: dict[str, Any] = (error.as_json(language) if isinstance(error, RuleFailed)
                            else error.as_json())
    return dict(body["error"])


def _row(row: RowResult, language: str | None) -> dict[str, Any]:
    if row.error is not None:
        return {"index": row.index, "status": status_of(row.error),
                "error": _error(row.error, language)}
    assert row.record is not None
    return {"index": row.index, "status": 201 if row.created else 200,
            "id": row.record["id"], "version": row.record["version"]}


def answer(result: BulkResult, language: str | None) -> tuple[dict[str, Any], int]:
    """The JSON answer and its status."""
    rows = [_row(row, language) for row in result.rows]
    counts = {"created": sum(1 for r in result.rows if r.ok and r.created),
              "updated": sum(1 for r in result.rows if r.ok and not r.created),
              "failed": len(result.failed)}
    if result.written:
        return {"mode": result.mode, **counts, "rows": rows}, 200
    details = [{"field": f"rows[{row['index']}]" + (f".{d['field']}" if d.get("field") else ""),
                "problem": d["problem"], "code": row["error"]["code"], "row": row["index"]}
               for row in rows if "error" in row
               for d in row["error"].get("details") or [{"field": "",
                                                          "problem": row["error"]["message"]}]]
    message = (f"{counts['failed']} of {len(rows)} rows cannot be written, so none was "
               "(all_or_none); fix them, or send mode per_row to write the good ones")
    return {"error": {"code": "bulk_failed", "message": message, "details": details},
            "rows": [row for row in rows if "error" in row]}, 422


def schemas(entity: EntitySpec, create: dict[str, Any], schema_name: str,
            creates: Mapping[str, dict[str, Any]],
            entities: Mapping[str, EntitySpec]) -> dict[str, dict[str, Any]]:
    """`<Entity>Bulk` (the request) and `<Entity>BulkResult` (the 200 answer); `creates`
    and `entities` are every entity's create schema and spec (a link names its target by
    the target's keys)."""
    properties = copy.deepcopy(create.get("properties", {}))
    for name, link in entity.links.items():
        if name not in properties or link.polymorphic or link.through:
            continue
        target_keys = unique_keys(entities[link.target])
        if not target_keys:
            continue
        by_key = {"description": f"a unique key of {link.target}, e.g. "
                  + _example(link.target, entity),
                  "anyOf": [_key_object(key, creates[link.target]) for key in target_keys]}
        if link.many:
            properties[name] = {"type": "array", "items": {"anyOf": [
                properties[name].get("items", {"type": "integer"}), by_key]}}
        else:
            properties[name] = {"anyOf": [properties[name], by_key]}
    whole = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    row = {"type": "object", "additionalProperties": False,
           "description": "no id: a create (or, with upsert_by, an update of the record with "
                          "that key); id: an update of that record, like PATCH",
           "properties": {"id": {**whole, "description": "update this record"},
                          "version": {**whole, "description": "the version you read (412 "
                                      "stale_version if the record changed since, or, with "
                                      "upsert_by, if no record has the row's key)"},
                          **properties}}
    keys = unique_keys(entity)
    upsert: dict[str, Any] = {"description": "a unique field or declared unique set: "
                              "rows without id update the record with their key, or create it"}
    by_key_rows = []
    for key in keys:  # a key as a field's name, or a list of its members in any order
        named = [{"type": "array", "items": {"type": "string", "enum": list(key)},
                  "minItems": len(key), "maxItems": len(key), "uniqueItems": True}]
        if len(key) == 1:
            named.insert(0, {"type": "string", "const": key[0]})
        upsert.setdefault("anyOf", []).extend(named)
        # with this key, a row without id gives every member of the key
        by_key_rows.append({
            "if": {"required": ["upsert_by"], "properties": {"upsert_by": {"anyOf": named}}},
            "then": {"properties": {"rows": {"items": {"anyOf": [
                {"required": ["id"]},
                {"required": list(key),
                 "properties": {member: {"not": {"type": "null"}} for member in key}}]}}}}})
    upsert["anyOf"] = [*upsert.get("anyOf", []), {"type": "null"}]  # null: as if not given
    required = create.get("required", [])
    request = {"type": "object", "title": schema_name + "Bulk", "additionalProperties": False,
               "required": ["rows"],
               "properties": {"mode": {"type": "string", "enum": list(MODES),
                                       "default": "all_or_none"},
                              "upsert_by": upsert,
                              "rows": {"type": "array", "minItems": 1, "maxItems": MAX_ROWS,
                                       "items": row}},
               # without upsert_by, a row with an id is an update (its version is that
               # record's), one without a create (it gives what a create needs)
               "allOf": [{"if": {"not": {"required": ["upsert_by"], "properties": {
                              "upsert_by": {"not": {"type": "null"}}}}},
                          "then": {"properties": {"rows": {"items": {
                              "dependentRequired": {"version": ["id"]},
                              "anyOf": [{"required": ["id"]}, {"required": required}]}}}}},
                         *by_key_rows]}
    result_row = {"type": "object", "required": ["index", "status"], "properties": {
        "index": {"type": "integer"}, "status": {"type": "integer", "description":
                                    "201 created, 200 updated, else the row's error status"},
        "id": {"type": "integer"}, "version": {"type": "integer"},
        "error": ERROR_SCHEMA["properties"]["error"]}}
    result = {"type": "object", "title": schema_name + "BulkResult",
              "required": ["mode", "created", "updated", "failed", "rows"],
              "properties": {"mode": {"type": "string", "enum": list(MODES)},
                             "created": {"type": "integer"}, "updated": {"type": "integer"},
                             "failed": {"type": "integer"},
                             "rows": {"type": "array", "items": result_row}}}
    return {schema_name + "Bulk": request, schema_name + "BulkResult": result}


def _key_object(key: tuple[str, ...], target_create: dict[str, Any]) -> dict[str, Any]:
    """A link's value naming its target by one of the target's keys: exactly its members."""
    members = target_create.get("properties", {})
    return {"type": "object", "additionalProperties": False, "required": list(key),
            "properties": {name: {"allOf": [copy.deepcopy(members.get(name, {})),
                                            {"not": {"type": "null"}}]} for name in key}}


def _example(target: str, entity: EntitySpec) -> str:
    return '{"<unique field>": "..."}' if target == entity.name else \
        f'{{"<unique field of {target}>": "..."}}'
