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

from fastapi import APIRouter

from api.collection_routes import Collection, add_collection_routes
from api.responses import engine_of
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


def add_webhook_routes(app: APIRouter, kt: Kartoteka, cap: int,
                       refused: dict[int | str, dict[str, Any]]) -> None:
    bodies = {create: _body_schema(kt, create=create) for create in (True, False)}
    collection = Collection(
        "/api/webhooks", "webhook", WEBHOOK, bodies.__getitem__, (
            "Webhook subscriptions (admin)",
            "Subscribe a URL to an entity's events; a generated secret is answered once (admin)",
            "One webhook subscription (admin)",
            "Change a webhook subscription: its events, URL, secret, role or active flag (admin)",
            "Delete a webhook subscription (admin)"),
        "the new subscription")
    add_collection_routes(app, collection, lambda request: engine_of(request).webhooks, cap,
                          refused, "webhooks")
