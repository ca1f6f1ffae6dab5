"""The five calls of a collection of the API's own objects — webhook subscriptions
(api/webhooks.py), saved views (api/views.py): list, create, get, change, delete, each
published with its schemas.

    GET    {path}         → {"items": [...]}
    POST   {path}         → 201, Location {path}/{id}
    GET    {path}/{id}
    PATCH  {path}/{id}
    DELETE {path}/{id}    → 204

The service does the work and the checks (who may, what is valid); here: the HTTP side,
the same for every collection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.responses import json_response, no_query, path_id, read_json
from api.threads import in_thread


@dataclass(frozen=True)
class Collection:
    path: str  # "/api/views"
    noun: str  # "view": an ill-formed id's message
    item: dict[str, Any]  # the JSON Schema of one
    body: Callable[[bool], dict[str, Any]]  # the body's schema, for a create (True) or a change
    #: the summaries of list, create, get, change, delete
    summaries: tuple[str, str, str, str, str]
    created: str  # what the Location of a create is ("the new view")
    #: the list call's query parameters (none: a parameter is refused)
    list_parameters: list[dict[str, Any]] = field(default_factory=list)


def add_collection_routes(app: APIRouter, collection: Collection,
                          service_of: Callable[[Request], Any], cap: int,
                          refused: dict[int | str, dict[str, Any]], tag: str,
                          listing: Callable[[Request], Callable[[], Any]] | None = None) -> None:
    """Route `collection`'s five calls to the service `service_of(request)` gives (list(),
    create(body), get(id), change(id, body), delete(id)), run in the thread pool; `listing`
    reads the list call's parameters and answers what lists (default: no parameters,
    the service's `list`). The routes hold no engine: one set serves every app over a
    setup (api.app `_services`)."""
    c = collection

    def plain(request: Request) -> Callable[[], Any]:
        no_query(request)
        return service_of(request).list  # type: ignore[no-any-return]

    def item_id(request: Request) -> int:
        return path_id(request, "id", c.noun)

    lists = listing or plain

    async def list_all(request: Request) -> Response:
        return json_response({"items": await in_thread(lists(request))})

    async def create(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        made = await in_thread(service_of(request).create, body)
        return json_response(made, 201, {"Location": f"{c.path}/{made['id']}"})

    async def get(request: Request) -> Response:
        no_query(request)
        return json_response(await in_thread(service_of(request).get, item_id(request)))

    async def change(request: Request) -> Response:
        no_query(request)
        body = await read_json(request, cap)
        return json_response(await in_thread(service_of(request).change, item_id(request),
                                                      body))

    async def delete(request: Request) -> Response:
        no_query(request)
        await in_thread(service_of(request).delete, item_id(request))
        return Response(status_code=204)

    def ok(schema: dict[str, Any], status: int = 200) -> dict[int | str, dict[str, Any]]:
        return {status: {"description": "OK", "content": {"application/json": {"schema": schema}}},
                **refused}

    items = {"type": "object", "required": ["items"],
             "properties": {"items": {"type": "array", "items": c.item}}}
    created = ok(c.item, 201)
    created[201]["headers"] = {"Location": {"schema": {"type": "string"},
                                            "description": c.created}}
    one = f"{c.path}/{{id}}"
    for path, method, handler, summary, responses in (
        (c.path, "GET", list_all, c.summaries[0], ok(items)),
        (c.path, "POST", create, c.summaries[1], created),
        (one, "GET", get, c.summaries[2], ok(c.item)),
        (one, "PATCH", change, c.summaries[3], ok(c.item)),
        (one, "DELETE", delete, c.summaries[4], {204: {"description": "Deleted"}, **refused}),
    ):
        extra: dict[str, Any] = {"parameters": [
            {"name": "id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10**18}}]
            if path == one else []}
        if path == c.path and method == "GET" and c.list_parameters:
            extra["parameters"] = c.list_parameters
        if method in ("POST", "PATCH"):
            extra["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": c.body(method == "POST")}}}
        app.add_api_route(path, handler, methods=[method], tags=[tag], summary=summary,
                          operation_id=f"{method.lower()}_{path.strip('/').replace('/', '_')}"
                          .replace("{", "").replace("}", ""),
                          response_class=Response, responses=responses, openapi_extra=extra)
