"""Saved views over HTTP, for the web app and any front end (engine/records/saved_views.py):
each caller sees and changes only their own.

    GET    /api/views?entity=sale   the caller's views of an entity, by name (without
                                    `entity`: of every entity)
    POST   /api/views               {entity, name, query, is_default?} → 201
    GET    /api/views/{id}
    PATCH  /api/views/{id}          any of name, query, is_default
    DELETE /api/views/{id}          → 204

A view's `query` is the list's query string (`stage[eq]=won&sort=-amount`), checked as
`GET /api/{entity}` would check it for the caller; a view another user made is 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from api.collection_routes import Collection, add_collection_routes
from api.responses import engine_of
from engine.core import Kartoteka
from engine.errors import ErrorDetail, MalformedRequest
from engine.records.saved_views import MAX_VIEWS, ONE_LINE
from engine.storage.views import NAME_LENGTH, QUERY_LENGTH

VIEW = {"type": "object", "required": ["id", "entity", "name", "query", "is_default",
                                       "created_at", "updated_at", "problem"], "properties": {
    "id": {"type": "integer"}, "entity": {"type": "string"}, "name": {"type": "string"},
    "query": {"type": "string", "description": "the list's query string, as GET /api/{entity} "
                                               "takes it"},
    "is_default": {"type": "boolean"},
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
    "problem": {"type": ["string", "null"],
                "description": "why the list would refuse this query now (the setup changed "
                               "since it was saved), else null"}}}


def _body_schema(kt: Kartoteka, *, create: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "entity": {"type": "string", "enum": list(kt.setup.entities)},
        "name": {"type": "string", "minLength": 1, "maxLength": NAME_LENGTH, "pattern": ONE_LINE,
                 "description": "unique among the caller's views of the entity (case aside)"},
        "query": {"type": "string", "maxLength": QUERY_LENGTH,
                  "description": "filters, q, sort as the list takes them; refused (422) when "
                                 "the list would refuse them, and with a cursor or offset"},
        "is_default": {"type": "boolean",
                       "description": "applied when the caller opens the entity's list in "
                                      "the web app with no query; unsets their former default"}}
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": properties}
    if create:
        schema["required"] = ["entity", "name", "query"]
    else:
        del properties["entity"]
    return schema


def _entity_param(request: Request) -> str | None:
    """`?entity=`, at most once, and nothing else: a typo in the query must not pass unseen."""
    given = request.query_params.multi_items()
    problems = [ErrorDetail(key, "is not a parameter of this call; it takes entity")
                for key, _ in given if key != "entity"]
    entities = [value for key, value in given if key == "entity"]
    if len(entities) > 1:
        problems.append(ErrorDetail("entity", "is given twice; give one entity (?entity=sale), "
                                              "or none for the views of every entity"))
    if problems:
        raise MalformedRequest("the parameters are not valid", problems, code="invalid_query")
    return entities[0] if entities else None


def add_view_routes(app: APIRouter, kt: Kartoteka, cap: int,
                    refused: dict[int | str, dict[str, Any]]) -> None:
    def listing(request: Request) -> Callable[[], Any]:
        entity, views = _entity_param(request), engine_of(request).views
        return lambda: views.for_entity(entity)

    bodies = {create: _body_schema(kt, create=create) for create in (True, False)}
    collection = Collection(
        "/api/views", "view", VIEW, bodies.__getitem__, (
            "Your saved views of an entity's list (without entity: of every entity)",
            f"Save a view: a name for a list's query (at most {MAX_VIEWS} per entity)",
            "One of your saved views",
            "Rename a saved view, change its query, or make it your default",
            "Delete one of your saved views"),
        "the new view",
        [{"name": "entity", "in": "query", "required": False,
          "schema": {"type": "string", "enum": list(kt.setup.entities)}}])
    add_collection_routes(app, collection, lambda request: engine_of(request).views, cap, refused,
                          "views", listing)
