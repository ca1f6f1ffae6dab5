"""Duplicate control over HTTP: the confirmation header, `GET /api/{e}/{id}/duplicates`
and `POST /api/{e}/{id}/merge` (engine/records/duplicates.py, engine/records/merge.py).

A write refused with 409 `possible_duplicate` is written when sent again with
`X-Confirm-Duplicate: true` (create, update, bulk, import); a `block` rule's 409
`duplicate` is not. The routes exist for entities that declare `duplicates:`; a link
named `duplicates` or `merge` is then served at `/api/{e}/{id}/links/{name}` (the
API's own routes under a record come first, engine/setup/names.py RECORD_ROUTES).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.responses import engine_of, json_response, no_query, path_id, read_json
from api.threads import in_thread
from engine.errors import ErrorDetail, MalformedRequest
from engine.records.merge import MAX_OTHERS
from engine.records.schemas import builtin
from engine.setup.names import pascal
from engine.setup.spec import EntitySpec

HEADER = "X-Confirm-Duplicate"
REF = "#/components/schemas/"

#: the header as OpenAPI publishes it on every write it confirms
CONFIRM_PARAMETER: dict[str, Any] = {
    "name": HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "enum": ["true", "false"]},
    "description": "true: write it even if it may duplicate a record (a 409 "
                   "possible_duplicate named the candidates); a `block` rule still refuses"}

CANDIDATE: dict[str, Any] = {
    "type": "object", "title": "DuplicateCandidate",
    "properties": {"id": {"type": "integer"}, "title": {"type": ["string", "null"]},
                   "field": {"type": "string"}, "rule": {"type": "string"},
                   "score": {"type": "integer", "minimum": 0, "maximum": 100},
                   "mode": {"type": "string", "enum": ["warn", "block"]}},
    "required": ["id", "field", "rule", "score", "mode"]}
CANDIDATES: dict[str, Any] = {
    "type": "object", "title": "DuplicateCandidates",
    "properties": {"items": {"type": "array", "items": {"$ref": REF + builtin(
        "DuplicateCandidate")}},
        "hidden": {"type": "boolean", "description": "a candidate exists that you cannot see"}},
    "required": ["items", "hidden"]}
MERGE: dict[str, Any] = {
    "type": "object", "title": "Merge", "additionalProperties": False, "required": ["others"],
    "properties": {"others": {"type": "array", "minItems": 1, "maxItems": MAX_OTHERS,
                              "uniqueItems": True,
                              "items": {"type": "integer", "minimum": 1},
                              "description": "the records merged into this one, then deleted"}}}


def schemas() -> dict[str, dict[str, Any]]:
    return {builtin("DuplicateCandidate"): CANDIDATE, builtin("DuplicateCandidates"): CANDIDATES,
            builtin("Merge"): MERGE}


def confirmation(request: Request) -> str:
    """The duplicates check's level for this request: `warn` when the caller confirmed."""
    value = request.headers.get(HEADER)
    if value is None:
        return ""
    word = value.strip().lower()
    if word in ("true", "false"):
        return "warn" if word == "true" else ""
    raise MalformedRequest(f"{HEADER} must be true or false", [ErrorDetail(HEADER, "must be "
                           "true or false")], code="invalid_header")


def add_duplicate_routes(app: APIRouter, entity: EntitySpec, cap: int,
                         refused: dict[int | str, dict[str, Any]], *,
                         if_match: Callable[[Request], int | None],
                         actor: Callable[[Request], int | None],
                         etag: Callable[[dict[str, Any]], str],
                         id_param: dict[str, Any], if_match_schema: dict[str, Any]) -> None:
    """The entity's duplicates and merge routes (only when it declares `duplicates:`)."""
    if entity.duplicates is None:
        return
    name = entity.name
    base = f"/api/{name}/{{id}}"

    async def duplicates(request: Request) -> Response:
        no_query(request)
        record_id = path_id(request, "id", name)
        found = await in_thread(engine_of(request).records.duplicates.candidates,
                                        name, record_id)
        return json_response(found)

    async def merge(request: Request) -> Response:
        no_query(request)
        record_id = path_id(request, "id", name)
        version = if_match(request)
        body = await read_json(request, cap)
        record = await in_thread(engine_of(request).merger.merge, name, record_id, body,
                                         if_version=version, actor=actor(request))
        return json_response(record, 200, {"ETag": etag(record)})

    ok = {"description": "OK", "content": {"application/json": {"schema": {}}}}
    app.add_api_route(f"{base}/duplicates", duplicates, methods=["GET"], tags=[name],
                      response_class=Response, operation_id=f"duplicates_{name}",
                      summary=f"The {name} records that may be this one twice (those you may "
                              "read)",
                      openapi_extra={"parameters": [id_param]},
                      responses={200: {**ok, "content": {"application/json": {"schema": {
                          "$ref": REF + builtin("DuplicateCandidates")}}}}, **refused})
    app.add_api_route(f"{base}/merge", merge, methods=["POST"], tags=[name],
                      response_class=Response, operation_id=f"merge_{name}",
                      summary=f"Merge other {name} records into this one: their links, "
                              "history and timeline move here, then they are deleted",
                      openapi_extra={"parameters": [id_param, {
                          "name": "If-Match", "in": "header", "required": False,
                          "schema": if_match_schema,
                          "description": "this record's ETag; 412 if it changed since"}],
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"$ref": REF + builtin("Merge")}}}}},
                      responses={200: {**ok, "content": {"application/json": {"schema": {
                          "$ref": REF + pascal(name)}}}}, **refused})


BULK_NOTE = (f"\n\nA row that may duplicate a record fails with 409 possible_duplicate unless "
             f"the call carries {HEADER}: true (which confirms every row); a `block` rule's "
             "409 duplicate fails it whatever the header says.")


def publish_confirmation(schema: dict[str, Any], entities: Any) -> None:
    """The confirmation header on every write of an entity with `duplicates:`, and the
    409 those writes may answer."""
    checked = [entity.name for entity in entities if entity.duplicates is not None]
    confirmed = {f"{verb}_{name}" for name in checked for verb in ("create", "update", "import")}
    bulks = {f"bulk_{name}" for name in checked}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if operation.get("operationId") in bulks:
                # said, not a parameter: a bulk row's refusal is in its own result
                operation["description"] = (operation.get("description", "") + BULK_NOTE).strip()
                continue
            if operation.get("operationId") not in confirmed:
                continue
            operation.setdefault("parameters", []).append(CONFIRM_PARAMETER)
            operation.setdefault("responses", {})["409"] = {
                "description": "possible_duplicate (warn: send it again with "
                               f"{HEADER}: true to write it) or duplicate (block); "
                               "details name the candidates you may read",
                "content": {"application/json": {"schema": {"$ref": REF + builtin("Error")}}}}
