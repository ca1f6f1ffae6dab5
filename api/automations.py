"""Automations over HTTP: a user's in-app notifications, and the automations and their
event queue for those who manage users (the built-in `admin` role).

    GET  /api/me/notifications?unread=true&limit=50&before=<next>   newest first, + unread count
    POST /api/me/notifications/read   {"ids": [1, 2]} or {"all": true}  → {"unread": n}
    GET  /api/automations                                the setup's automations
    GET  /api/automations/events?status=dead&limit=100   the queue: pending, done, dead (admin)
    POST /api/automations/events/{id}/retry              a dead event back in the queue (admin)
    POST /intake/{name}     a record from outside, with the intake's key (X-Intake-Key)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.responses import engine_of, json_response, no_query, path_id, read_json
from api.threads import in_thread
from engine.core import Kartoteka
from engine.errors import ErrorDetail, Forbidden, MalformedRequest, ValidationFailed
from engine.storage.outbox import DEAD, DONE, PENDING

STATUSES = (PENDING, DONE, DEAD)
MAX_EVENTS = 500

NOTIFICATION = {"type": "object", "required": ["id", "at", "subject", "read"], "properties": {
    "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
    "subject": {"type": "string"}, "text": {"type": ["string", "null"]},
    "entity": {"type": ["string", "null"]}, "record_id": {"type": ["integer", "null"]},
    "automation": {"type": ["string", "null"]}, "read": {"type": "boolean"},
    "read_at": {"type": ["string", "null"], "format": "date-time"}}}
EVENT = {"type": "object", "required": ["id", "kind", "entity", "status", "attempts"], "properties": {
    "id": {"type": "integer"}, "kind": {"type": "string"}, "entity": {"type": "string"},
    "record_id": {"type": ["integer", "null"]}, "changes": {},
    "at": {"type": "string"}, "depth": {"type": "integer"}, "cause": {"type": ["string", "null"]},
    "status": {"type": "string", "enum": list(STATUSES)}, "attempts": {"type": "integer"},
    "next_at": {"type": "string"}, "last_error": {"type": ["string", "null"]},
    "done_at": {"type": ["string", "null"]}}}


def add_automation_routes(app: APIRouter, kt: Kartoteka, cap: int,
                          refused: dict[int | str, dict[str, Any]]) -> None:
    """Engine-free handlers (`engine_of(request)`), as api.users'; `kt` only shapes the
    schemas (its setup's intakes)."""
    def admin_only(request: Request) -> Kartoteka:
        engine = engine_of(request)
        if not engine.users.may_manage():
            raise Forbidden("only an admin sees and retries automation events",
                            code="operation_forbidden")
        return engine

    async def notifications(request: Request) -> Response:
        page = await in_thread(engine_of(request).notifications.page,
                                       request.query_params.multi_items())
        return json_response(page)

    async def mark_read(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        return json_response(await in_thread(engine_of(request).notifications.read, body))

    async def automations(request: Request) -> Response:
        no_query(request)
        return json_response({"items": [
            {"name": a.name, "label": dict(a.label), "entity": a.entity, "on": a.on,
             "stages": sorted(a.stages) if a.stages is not None else None,
             "changed": list(a.changed), "actions": [action.kind for action in a.actions]}
            for a in engine_of(request).setup.automations]})

    async def events(request: Request) -> Response:
        engine = admin_only(request)
        problems = []
        params = dict(request.query_params.multi_items())
        for key in params:
            if key not in ("status", "limit"):
                problems.append(ErrorDetail(key, "is not a parameter here; use status, limit"))
        status = params.get("status", DEAD)
        if status not in STATUSES:
            problems.append(ErrorDetail("status", "must be one of: " + ", ".join(STATUSES)))
        limit = params.get("limit", "100")
        if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_EVENTS):
            problems.append(ErrorDetail("limit", f"must be a whole number from 1 to {MAX_EVENTS}"))
        if problems:
            raise MalformedRequest("the event parameters are not valid", problems,
                                   code="invalid_query")
        found = await in_thread(engine.automations.events, status, int(limit))
        return json_response({"items": found})

    async def retry(request: Request) -> Response:
        no_query(request)
        engine = admin_only(request)
        if request.headers.get("content-length", "0") != "0" or \
                "transfer-encoding" in request.headers:
            body = await read_json(request, cap)  # a body is JSON (400 otherwise), and empty
            if body != {}:
                raise ValidationFailed("a retry takes no body", [ErrorDetail(
                    "", "send no body, or {}")])
        event = path_id(request, "id", "event")
        return json_response(await in_thread(engine.automations.retry, event))

    def intake_of(name: str) -> Any:
        async def intake(request: Request) -> Response:
            no_query(request)
            body = await read_json(request, cap)
            address = request.client.host if request.client else "?"
            made = await in_thread(engine_of(request).intakes.submit, name,
                                           request.headers.get("x-intake-key"), address, body)
            return json_response(made, 201)
        return intake

    for spec in kt.setup.intakes:
        intake = intake_of(spec.name)
        fields = kt.schemas[spec.entity].create.get("properties", {})
        app.add_api_route(
            f"/intake/{spec.name}", intake, methods=["POST"], tags=["intake"],
            summary=f"A new {spec.entity} from outside, with the intake's key (no user token)",
            operation_id=f"intake_{spec.name}", response_class=Response,
            responses={201: {"description": "Created", "content": {"application/json": {
                "schema": {"type": "object", "required": ["id", "entity"], "properties": {
                    "id": {"type": "integer"}, "entity": {"const": spec.entity}}}}}},
                **refused},
            openapi_extra={
                "parameters": [{"name": "X-Intake-Key", "in": "header", "required": True,
                                "schema": {"type": "string"},
                                "description": f"the key in the server's {spec.key_env}"}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {name: fields[name] for name in spec.fields if name in fields},
                    "required": [n for n in kt.schemas[spec.entity].create.get("required", [])
                                 if n in spec.fields]}}}}})

    def ok(schema: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
        return {200: {"description": "OK", "content": {"application/json": {"schema": schema}}},
                **refused}

    page = {"type": "object", "required": ["items", "unread", "next"], "properties": {
        "items": {"type": "array", "items": NOTIFICATION}, "unread": {"type": "integer"},
        "next": {"type": ["string", "null"]}}}
    query = [
        {"name": "unread", "in": "query", "schema": {"type": "boolean", "default": False}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
        {"name": "before", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
         "description": "the `next` of the previous page"}]
    read_body = {"type": "object", "additionalProperties": False, "minProperties": 1,
                 "maxProperties": 1, "properties": {
                     "ids": {"type": "array", "minItems": 1, "maxItems": 1000,
                             "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
                     "all": {"const": True}}}
    event_query = [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES),
                                                     "default": DEAD}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                    "maximum": MAX_EVENTS}}]
    listing = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}}
    for path, method, handler, summary, responses, extra in (
        ("/api/me/notifications", "GET", notifications, "My notifications, newest first",
         ok(page), {"parameters": query}),
        ("/api/me/notifications/read", "POST", mark_read, "Mark notifications read",
         ok({"type": "object", "properties": {"unread": {"type": "integer"}}}),
         {"requestBody": {"required": True, "content": {"application/json": {"schema": read_body}}}}),
        ("/api/automations", "GET", automations, "The setup's automations", ok(listing), {}),
        ("/api/automations/events", "GET", events, "Automation events by status (admin)",
         ok({"type": "object", "properties": {"items": {"type": "array", "items": EVENT}}}),
         {"parameters": event_query}),
        ("/api/automations/events/{id}/retry", "POST", retry,
         "Put a dead event back in the queue (admin)", ok(EVENT),
         {"parameters": [{"name": "id", "in": "path", "required": True,
                          "schema": {"type": "integer", "minimum": 1, "maximum": 10**18}}]}),
    ):
        app.add_api_route(path, handler, methods=[method], tags=["automations"], summary=summary,
                          operation_id=f"{method.lower()}_{path.strip('/').replace('/', '_')}"
                          .replace("{", "").replace("}", ""),
                          response_class=Response, responses=responses, openapi_extra=extra)
