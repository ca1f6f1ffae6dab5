"""Webhook subscriptions over HTTP, for admins (engine/automations/subscriptions.py):

    GET    /api/webhooks            every subscription (never a secret)
    POST   /api/webhooks            {entity, events, url, secret?, role?, active?} → 201;
                                    a secret the server generated is answered this once
    GET    /api/webhooks/{id}
    PATCH  /api/webhooks/{id}       any of the same keys
    DELETE /api/webhooks/{id}       → 204

Others get 403; while a database has no users, the routes are open like the rest of the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.responses import json_response, no_query, path_id, read_json
from engine.automations.subscriptions import EVENTS, SECRET_MIN
from engine.core import Kartoteka
from engine.setup.roles import ADMIN
from engine.storage.webhooks import SECRET_LENGTH, URL_LENGTH

WEBHOOK = {"type": "object", "required": ["id", "entity", "events", "url", "role", "active",
                                          "created_at", "updated_at"], "properties": {
    "id": {"type": "integer"}, "entity": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}},
    "url": {"type": "string"}, "role": {"type": ["string", "null"]},
    "active": {"type": "boolean"},
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
    "secret": {"type": "string", "description": "only in the answer to a POST without a "
                                                "secret: the one the server made, shown once"}}}


def _body_schema(kt: Kartoteka, *, create: bool) -> dict[str, Any]:
    properties = {
        "entity": {"type": "string", "enum": list(kt.setup.entities)},
        "events": {"type": "array", "minItems": 1, "uniqueItems": True,
                   "items": {"type": "string", "enum": list(EVENTS)}},
        "url": {"type": "string", "minLength": 1, "maxLength": URL_LENGTH,
                "description": "http(s); refused when it is not on the public internet, "
                               "unless the server's KARTOTEKA_WEBHOOK_ALLOW allows it"},
        "secret": {"type": "string", "minLength": SECRET_MIN, "maxLength": SECRET_LENGTH,
                   "description": "signs each delivery; never answered (left out: the "
                                  "server makes one and answers it once)"},
        "role": {"type": ["string", "null"], "enum": [*kt.setup.roles, ADMIN, None],
                 "description": "whose view of the record is sent (null: every field)"},
        "active": {"type": "boolean"}}
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": properties}
    if create:
        schema["required"] = ["entity", "events", "url"]
    return schema


def add_webhook_routes(app: FastAPI, kt: Kartoteka, cap: int,
                       refused: dict[int | str, dict[str, Any]]) -> None:
    hooks = kt.webhooks

    def webhook_id(request: Request) -> int:
        return path_id(request, "id", "webhook")

    async def list_webhooks(request: Request) -> Response:
        no_query(request)
        return json_response({"items": await run_in_threadpool(hooks.list)})

    async def create_webhook(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        made = await run_in_threadpool(hooks.create, body)
        return json_response(made, 201, {"Location": f"/api/webhooks/{made['id']}"})

    async def get_webhook(request: Request) -> Response:
        no_query(request)
        return json_response(await run_in_threadpool(hooks.get, webhook_id(request)))

    async def change_webhook(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        return json_response(await run_in_threadpool(hooks.change, webhook_id(request), body))

    async def delete_webhook(request: Request) -> Response:
        no_query(request)
        await run_in_threadpool(hooks.delete, webhook_id(request))
        return Response(status_code=204)

    def ok(schema: dict[str, Any], status: int = 200) -> dict[int | str, dict[str, Any]]:
        return {status: {"description": "OK", "content": {"application/json": {"schema": schema}}},
                **refused}

    listing = {"type": "object", "required": ["items"],
               "properties": {"items": {"type": "array", "items": WEBHOOK}}}
    created = ok(WEBHOOK, 201)
    created[201]["headers"] = {"Location": {"schema": {"type": "string"},
                                            "description": "the new subscription"}}
    for path, method, handler, summary, responses in (
        ("/api/webhooks", "GET", list_webhooks, "Webhook subscriptions (admin)", ok(listing)),
        ("/api/webhooks", "POST", create_webhook,
         "Subscribe a URL to an entity's events; a generated secret is answered once (admin)",
         created),
        ("/api/webhooks/{id}", "GET", get_webhook, "One webhook subscription (admin)",
         ok(WEBHOOK)),
        ("/api/webhooks/{id}", "PATCH", change_webhook,
         "Change a webhook subscription: its events, URL, secret, role or active flag (admin)",
         ok(WEBHOOK)),
        ("/api/webhooks/{id}", "DELETE", delete_webhook, "Delete a webhook subscription (admin)",
         {204: {"description": "Deleted"}, **refused}),
    ):
        extra: dict[str, Any] = {"parameters": [
            {"name": "id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10**18}}]
            if "{id}" in path else []}
        if method in ("POST", "PATCH"):
            extra["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": _body_schema(kt, create=method == "POST")}}}
        app.add_api_route(path, handler, methods=[method], tags=["webhooks"], summary=summary,
                          operation_id=f"{method.lower()}_{path.strip('/').replace('/', '_')}"
                          .replace("{", "").replace("}", ""),
                          response_class=Response, responses=responses, openapi_extra=extra)
