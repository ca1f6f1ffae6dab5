"""The FastAPI app generated from a `Kartoteka` engine: a thin translation of engine calls.

Per entity `e` (explicit paths, so each entity has its own operations and schemas in
OpenAPI):

    GET    /api/e                      list           POST   /api/e            create
    GET    /api/e/{id}                 read (ETag)    PATCH  /api/e/{id}       update (If-Match)
    DELETE /api/e/{id}                 delete         GET    /api/e/{id}/{link}  linked records
    PUT    /api/e/{id}/{link}/{other}  add a many-to-many link;  DELETE ... removes it

Every link and way back is also served at /api/e/{id}/links/{link}[/{other}], and only there
when its name is one of the API's own routes under a record (`timeline`, `comments`...).

Handlers are `async def`; engine calls run inline on the event loop or in the thread pool
per operation (`ApiSettings.inline`). On SQLite, reads by id run inline: primary-key work
cheaper than a hop to a thread. Writes go to the pool, where writers queuing for SQLite's
one write lock share a commit (engine/storage/database.py, group commit): one fsync for
many writes, and the loop never waits for a disk. Inline, every write's fsync stopped the
loop: bench/ measured 0.24x the minimal app's creates under a busy disk, 1.27x pooled with
group commit. Lists, which can be slow, go to the pool so they never block the loop. On
PostgreSQL everything goes to the pool: every call waits on the network.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import BaseRoute

from api import bulk as bulk_api
from api import duplicates as duplicates_api
from api.auth import Authentication
from api.automations import add_automation_routes
from api.docs import install_docs
from api.errors import install_error_handlers, refuse_method
from api.export import add_export_route
from api.guard import install_guard
from api.imports import add_import_routes
from api.language import pick_language
from api.responses import engine_of, json_response, no_query, path_id, read_json
from api.routing import index_routes, lean
from api.signin import add_signin_routes
from api.threads import in_thread
from api.users import add_user_routes
from api.views import add_view_routes
from api.web import add_web_app
from api.webhooks import add_webhook_routes
from engine.automations.runner import Runner
from engine.core import Kartoteka
from engine.errors import ErrorDetail, MalformedRequest, StaleVersion
from engine.records.query import DEFAULT_LIMIT, MAX_LIMIT, MAX_SORT_KEYS
from engine.records.schemas import ERROR_SCHEMA, PIPELINE_SCHEMAS, builtin, list_schema
from engine.setup.names import LINKS_ROUTE, RECORD_ROUTES, pascal
from engine.setup.spec import EntitySpec, label_text
from engine.storage.tables import Storage

REF = "#/components/schemas/"
VERSION = "0.1.0"

SQLITE_INLINE = frozenset({"get"})


@dataclass(frozen=True)
class ApiSettings:
    #: operations run on the event loop instead of the thread pool
    inline: frozenset[str] | None = None  # None: chosen by database (see module docstring)
    #: Host names answered besides loopback ones: "crm.example.com", "*.example.com", "*" (api.guard)
    allowed_hosts: tuple[str, ...] = ()
    #: web origins allowed to call the API from a browser (CORS); none by default
    cors_origins: tuple[str, ...] = ()
    #: run the automations' worker in this process while the app runs (`kartoteka serve`)
    worker: bool = False


def create_app(kt: Kartoteka, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    inline = settings.inline
    if inline is None:
        inline = SQLITE_INLINE if kt.db.dialect == "sqlite" else frozenset()
    runner = Runner(kt.automations) if settings.worker else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await run_in_threadpool(runner.stop)

    app = FastAPI(
        title=f"{kt.setup.name} — Kartoteka API",
        version=VERSION,
        description=_DESCRIPTION,
        docs_url=None,  # api.docs serves /docs from local assets
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.kartoteka = kt
    install_error_handlers(app)
    app.add_middleware(Authentication, users=kt.users, sessions=kt.sessions,
                       max_form_bytes=kt.settings.max_body_bytes)
    install_guard(app, settings.allowed_hosts, settings.cors_origins)
    app.router.routes.extend(_generated(kt.storage, kt.settings.max_body_bytes, inline))
    app.router.routes.extend(_services(kt, kt.settings.max_body_bytes))
    add_signin_routes(app, kt)  # /app/sign-in, /app/sign-out, /app/invite/{token}
    install_docs(app)
    add_web_app(app, kt)  # the pages at /app (api/web)
    app.openapi = lambda: _openapi(app, kt)  # type: ignore[method-assign]
    index_routes(app.router)  # a request's route found among its path's few (api/routing.py)
    return app


def _generated(storage: Storage, cap: int, inline: frozenset[str]) -> list[BaseRoute]:
    """`/api/schema` and every entity's routes, for an app over `storage`'s setup: built
    once per storage (and body cap, inline operations) and shared by every app serving that
    setup. Building them is most of `create_app` (FastAPI inspects each of a setup's ~200
    routes), and the tests build thousands of apps over a few setups. The handlers hold no
    engine (`engine_of`), so sharing them is safe; `_engine_free` checks it when they are
    built."""
    def build() -> list[BaseRoute]:
        router = APIRouter()
        maker = _Routes(storage, cap, inline)
        router.add_api_route("/api/schema", maker.schema, methods=["GET"], tags=["setup"],
                             summary="The loaded setup: entities, fields, links, pipelines",
                             response_class=Response, responses=_ok({"type": "object"}))
        for entity in storage.setup.entities.values():
            maker.add_entity(router, entity)
        for route in router.routes:
            _engine_free(route)
        return [lean(route) for route in router.routes]
    return storage.once(f"api routes {cap} {sorted(inline)}", build)


def _services(kt: Kartoteka, cap: int) -> list[BaseRoute]:
    """The API's own calls beside the records': users, passwords, notifications,
    automations, intakes (api.users, api.automations), webhook subscriptions and saved
    views (api.webhooks, api.views). Built once per storage and body cap and shared, as
    `_generated`'s are: their handlers find the engine with `engine_of(request)`; `kt` only
    shapes their published schemas (its setup's roles, languages, entities, intakes)."""
    def build() -> list[BaseRoute]:
        router = APIRouter()
        add_user_routes(router, kt, cap, _REFUSED)
        add_automation_routes(router, kt, cap, _REFUSED)
        add_webhook_routes(router, kt, cap, _REFUSED)
        add_view_routes(router, kt, cap, _REFUSED)
        for route in router.routes:
            _engine_free(route)
        return [lean(route) for route in router.routes]
    return kt.storage.once(f"service routes {cap}", build)


def _engine_free(route: BaseRoute) -> None:
    """Refuse a shared route whose handler holds an engine or one of its services, in its
    closure or in that of a function or object it holds (a helper, a bound method): it
    would answer every app's requests from the first app's database."""
    seen: set[int] = set()

    def held(value: Any, depth: int) -> None:
        value = getattr(value, "__self__", value)  # a bound method: its object
        if id(value) in seen or depth > 4:
            return
        seen.add(id(value))
        module = type(value).__module__
        if isinstance(value, Kartoteka) or (
                module.startswith("engine.") and hasattr(value, "db")):
            raise AssertionError(
                f"route {getattr(route, 'path', route)!r} holds {type(value).__name__} in its "
                "handler: shared routes must find the engine with engine_of(request)")
        inner = value if callable(value) and hasattr(value, "__closure__") else None
        if inner is None and type(value).__module__.startswith("api."):
            for attribute in vars(value).values() if hasattr(value, "__dict__") else ():
                held(attribute, depth + 1)
        for cell in getattr(inner, "__closure__", None) or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            held(contents, depth + 1)

    held(getattr(route, "endpoint", None), 0)


_DESCRIPTION = """Generated by Kartoteka from a YAML setup.

Lists take `field=value`, `field[op]=value` (op: eq ne lt lte gt gte in contains
startswith isnull), `link=id`, `link.field=value`, `q=` (case-insensitive search),
`sort=-field,field`, `limit` (at most 500), `offset` or `cursor`, `include=link`,
`total=false`. Errors are `{"error": {"code", "message", "details": [{"field", "problem"}]}}`.
"""


_REFUSED: dict[int | str, dict[str, Any]] = {"4XX": {
    "description": "The request was refused; nothing was changed",
    "content": {"application/json": {"schema": {"$ref": REF + builtin("Error")}}}}}


def _ok(schema: dict[str, Any], status: int = 200, headers: dict[str, Any] | None = None,
        description: str = "OK") -> dict[int | str, dict[str, Any]]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return {status: response, **_REFUSED}


def _id_param(name: str = "id", what: str = "record") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": f"the {what}'s id",
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}


_ETAG = {"ETag": {"description": "the record's version", "schema": {"type": "string"}}}


#: the largest `offset` the list query accepts (engine.records.query)
MAX_OFFSET = 10**9


#: an If-Match header as the server reads it: `*`, or the ETag in double quotes (a weak
#: `W/` tag, an unquoted or an empty one is a 400); several tags: the first counts
IF_MATCH: dict[str, Any] = {"type": "string", "pattern": r'^\s*(\*\s*|"[^"]*"\s*(,.*)?)$'}


def _list_params(entity: EntitySpec, storage: Storage,
                 *others: EntitySpec) -> list[dict[str, Any]]:
    """A list's parameters; with `others`, of a list that may hold any of these entities
    (a polymorphic link's): what all of them take."""
    entities = (entity, *others)
    shared_links = [n for n in entity.links if all(n in e.links for e in others)]
    links = ", ".join(shared_links) or "none"
    searched = [n for n in entity.search if all(n in e.search for e in others)]

    def sortable_of(spec: EntitySpec) -> list[str]:
        return [name for name, attribute in storage.entities[spec.name].attributes.items()
                if attribute.field.type.sortable]
    sortable = [n for n in sortable_of(entity) if all(n in sortable_of(e) for e in entities)]
    return [
        {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200},
         "description": "case-insensitive search in: " + (", ".join(searched) or "nothing")},
        {"name": "sort", "in": "query", "schema": {"type": "string", "pattern": _names_pattern(
            sortable, "[-+]?", MAX_SORT_KEYS)},
         "description": f"comma-separated fields (at most {MAX_SORT_KEYS}), '-' for descending: "
                        "-amount,number; sortable: " + ", ".join(sortable)},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"},
         "description": "the `next` of the previous page; not with `offset`"},
        {"name": "include", "in": "query", "schema": {"type": "string", "pattern": _names_pattern(
            shared_links, "", len(shared_links))},
         "description": f"links to embed, comma-separated: {links}"},
        {"name": "total", "in": "query", "schema": {"type": "boolean", "default": True},
         "description": "false skips counting"},
    ]


def _stage_move(entity: EntitySpec) -> dict[str, Any]:
    """A stage move's body: `to` one of the entity's stages (whether this record may enter
    it now — transitions, required fields, roles — depends on the record: 409 or 422)."""
    assert entity.pipeline is not None
    return {"type": "object", "title": f"{pascal(entity.name)}StageMove",
            "properties": {"to": {"type": "string",
                                  "enum": list(entity.pipeline.all_stage_names)}},
            "required": ["to"], "additionalProperties": False}


def _names_pattern(names: list[str], prefix: str, most: int) -> str:
    """A comma-separated list of up to `most` of `names`, each after `prefix` (for `sort`
    and `include`): what a client may send whatever its roles; a role that cannot see a
    field or link is refused it with 400. No names: only the empty value."""
    if not names or most < 1:
        return "^$"
    one = prefix + "(" + "|".join(re.escape(name) for name in names) + ")"
    return f"^({one}(,{one}){{0,{most - 1}}})?$"


class _Routes:
    """Builds a setup's generated routes. Their handlers hold no engine: each finds the
    one serving its request with `engine_of`, so the routes can be shared (`_generated`)."""

    def __init__(self, storage: Storage, cap: int, inline: frozenset[str]):
        self.storage = storage
        self.setup = storage.setup
        self.inline = inline
        self.cap = cap

    async def run(self, operation: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if operation in self.inline:
            return fn(*args, **kwargs)
        return await in_thread(fn, *args, **kwargs)

    @staticmethod
    async def schema(request: Request) -> Response:
        no_query(request)
        return json_response(engine_of(request).describe())

    def add_entity(self, app: APIRouter, entity: EntitySpec) -> None:
        name = entity.name
        base = f"/api/{name}"
        schema_name = pascal(name)
        label = label_text(entity.label, self.setup.languages[0])
        tags: list[str | Enum] = [name]

        async def list_records(request: Request) -> Response:
            records = engine_of(request).records
            page = await self.run("list", records.list_page, name, _params(request))
            return json_response(page.as_json())

        async def create_record(request: Request) -> Response:
            no_query(request)
            body = await read_json(request, self.cap)
            actor = _actor(request)
            records = engine_of(request).records
            with records.duplicates.confirmed(duplicates_api.confirmation(request)):
                record = await self.run("create", records.create, name, body, owner=actor,
                                        actor=actor)
            return json_response(record, 201, {"Location": f"{base}/{record['id']}",
                                               "ETag": _etag(record)})

        async def get_record(request: Request) -> Response:
            record_id = path_id(request, "id", name)
            include = _only_include(request)
            record = await self.run("get", engine_of(request).records.get, name, record_id,
                                    include)
            etag = _etag(record)
            if request.headers.get("if-none-match") == etag and not include:
                return Response(status_code=304, headers={"ETag": etag})
            return json_response(record, 200, {"ETag": etag})

        async def patch_record(request: Request) -> Response:
            no_query(request)
            record_id = path_id(request, "id", name)
            if_version = _if_match(request)
            body = await read_json(request, self.cap)
            records = engine_of(request).records
            with records.duplicates.confirmed(duplicates_api.confirmation(request)):
                record = await self.run("update", records.update, name, record_id, body,
                                        if_version=if_version, actor=_actor(request))
            return json_response(record, 200, {"ETag": _etag(record)})

        async def delete_record(request: Request) -> Response:
            no_query(request)
            record_id = path_id(request, "id", name)
            await self.run("delete", engine_of(request).records.delete, name, record_id,
                           if_version=_if_match(request), actor=_actor(request))
            return Response(status_code=204)

        write_body = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF + schema_name + "Create"}}}}}
        patch_body = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF + schema_name + "Patch"}}}}}
        one = {"$ref": REF + schema_name}
        if entity.pipeline is not None:
            self._add_pipeline(app, entity)
        self._add_bulk(app, entity)  # before /{id}: GET /bulk is 405, not "no record 'bulk'"
        add_export_route(app, self.setup, entity, _list_params(entity, self.storage),  # before /{id}
                         _REFUSED)
        add_import_routes(app, entity, self.cap, _REFUSED)  # api/imports.py
        app.add_api_route(base, list_records, methods=["GET"], tags=tags, response_class=Response,
                          summary=f"List {label} records", operation_id=f"list_{name}",
                          openapi_extra={"parameters": _list_params(entity, self.storage)},
                          responses=_ok({"$ref": REF + schema_name + "List"}))
        app.add_api_route(base, create_record, methods=["POST"], tags=tags, status_code=201,
                          response_class=Response, summary=f"Create a {label}",
                          operation_id=f"create_{name}", openapi_extra=write_body,
                          responses=_ok(one, 201, {**_ETAG, "Location": {
                              "description": "the new record's URL", "schema": {"type": "string"}}},
                              "Created"))
        app.add_api_route(base + "/{id}", get_record, methods=["GET"], tags=tags,
                          response_class=Response, summary=f"Read one {label}",
                          operation_id=f"get_{name}",
                          openapi_extra={"parameters": [_id_param(), {
                              "name": "include", "in": "query", "schema": {
                                  "type": "string", "pattern": _names_pattern(
                                      list(entity.links), "", len(entity.links))},
                              "description": "links to embed: " + (", ".join(entity.links) or "none")}]},
                          responses={**_ok(one, 200, _ETAG), 304: {"description": "Not modified"}})
        app.add_api_route(base + "/{id}", patch_record, methods=["PATCH"], tags=tags,
                          response_class=Response, summary=f"Change a {label}",
                          operation_id=f"update_{name}",
                          openapi_extra={"parameters": [_id_param(), {
                              "name": "If-Match", "in": "header", "schema": IF_MATCH,
                              "description": "the ETag you read; 412 if the record changed since"}],
                              **patch_body},
                          responses=_ok(one, 200, _ETAG))
        app.add_api_route(base + "/{id}", delete_record, methods=["DELETE"], tags=tags,
                          status_code=204, response_class=Response, summary=f"Delete a {label}",
                          operation_id=f"delete_{name}",
                          openapi_extra={"parameters": [_id_param()]},
                          responses={204: {"description": "Deleted"}, **_REFUSED})
        duplicates_api.add_duplicate_routes(  # api/duplicates.py, before the links' /{id}/{way}
            app, entity, self.cap, _REFUSED, if_match=_if_match,
            actor=_actor, etag=_etag, id_param=_id_param(), if_match_schema=IF_MATCH)
        self._add_links(app, entity)
        self._add_timeline(app, entity)

    def _add_bulk(self, app: APIRouter, entity: EntitySpec) -> None:
        """POST /api/e/bulk: many creates, updates and upserts in one call (api/bulk.py)."""
        name = entity.name
        path = f"/api/{name}/bulk"
        schema_name = pascal(name)

        async def bulk(request: Request) -> Response:
            no_query(request)
            body = await read_json(request, self.cap * bulk_api.BODY_FACTOR)
            actor = _actor(request)
            kt = engine_of(request)
            with kt.records.duplicates.confirmed(duplicates_api.confirmation(request)):
                result = await in_thread(kt.bulk.run, name, body, actor=actor)
            language = pick_language(request.headers.get("accept-language"),
                                     kt.setup.languages)
            content, status = bulk_api.answer(result, language)
            return json_response(content, status)

        app.add_api_route(path, bulk, methods=["POST"], tags=[name], response_class=Response,
                          operation_id=f"bulk_{name}",
                          summary=f"Create, update or upsert up to {bulk_api.MAX_ROWS} {name} "
                                  "records in one call",
                          openapi_extra={"requestBody": {"required": True, "content": {
                              "application/json": {"schema": {"$ref": REF + schema_name + "Bulk"}}}}},
                          responses={**_ok({"$ref": REF + schema_name + "BulkResult"}),
                                     422: {"description": "all_or_none: a row cannot be written, "
                                           "so none was; every bad row is in details and rows",
                                           "content": {"application/json": {
                                               "schema": {"$ref": REF + builtin("Error")}}}}})
        app.add_api_route(path, refuse_method, include_in_schema=False,
                          methods=["GET", "PUT", "PATCH", "DELETE"])

    def _add_pipeline(self, app: APIRouter, entity: EntitySpec) -> None:
        name = entity.name
        base = f"/api/{name}"
        tags: list[str | Enum] = [name]

        async def board(request: Request) -> Response:
            reports = engine_of(request).reports
            return json_response(await self.run("list", reports.board, name, _params(request)))

        async def funnel(request: Request) -> Response:
            reports = engine_of(request).reports
            return json_response(await self.run("list", reports.funnel, name, _params(request)))

        async def move(request: Request) -> Response:
            record_id = path_id(request, "id", name)
            no_query(request)
            if_version = _if_match(request)
            body = await read_json(request, self.cap)
            record = await self.run("update", engine_of(request).stages.move, name, record_id, body,
                                    if_version=if_version, actor=_actor(request))
            return json_response(record, 200, {"ETag": _etag(record)})

        pipeline_param = {"name": "pipeline", "in": "query", "schema": {
            "type": "string", "enum": list(entity.pipeline.pipelines) if entity.pipeline else []},
            "description": "which pipeline (the first when not given)"}
        filters = [p for p in _list_params(entity, self.storage) if p["name"] == "q"]
        board_filters = [p for p in _list_params(entity, self.storage)
                         if p["name"] in ("q", "include", "sort")]
        app.add_api_route(f"{base}/board", board, methods=["GET"], tags=tags,
                          response_class=Response, operation_id=f"board_{name}",
                          summary="Kanban board: every stage with its count, sums and first records",
                          openapi_extra={"parameters": [pipeline_param, *board_filters, {
                              "name": "limit", "in": "query", "description": "records per column",
                              "schema": {"type": "integer", "minimum": 1, "maximum": 100,
                                         "default": 10}}]},
                          responses=_ok({"$ref": REF + builtin("Board")}))
        app.add_api_route(f"{base}/funnel", funnel, methods=["GET"], tags=tags,
                          response_class=Response, operation_id=f"funnel_{name}",
                          summary="Funnel: per stage reached, conversion, time in stage, forecast",
                          openapi_extra={"parameters": [pipeline_param, *filters, *(
                              {"name": key, "in": "query", "description": f"records created {word}",
                               "schema": {"type": "string", "format": "date"}}
                              for key, word in (("from", "on or after"), ("to", "on or before")))]},
                          responses=_ok({"$ref": REF + builtin("Funnel")}))
        for fixed in ("board", "funnel"):  # not taken for a record id by `/{id}`: 405
            app.add_api_route(f"{base}/{fixed}", refuse_method, include_in_schema=False,
                              methods=["POST", "PUT", "PATCH", "DELETE"])
        app.add_api_route(f"{base}/{{id}}/stage", move, methods=["POST"], tags=tags,
                          response_class=Response, operation_id=f"move_{name}",
                          summary=f"Move a {name} to another stage",
                          openapi_extra={"parameters": [_id_param(), {
                              "name": "If-Match", "in": "header", "schema": IF_MATCH}],
                              "requestBody": {"required": True, "content": {"application/json": {
                                  "schema": _stage_move(entity)}}}},
                          responses=_ok({"$ref": REF + pascal(name)}, 200, _ETAG))

    def _add_timeline(self, app: APIRouter, entity: EntitySpec) -> None:
        name = entity.name
        base = f"/api/{name}"
        tags: list[str | Enum] = [name]

        async def timeline(request: Request) -> Response:
            record_id = path_id(request, "id", name)
            return json_response(await self.run("list", engine_of(request).timeline.page, name,
                                                record_id, _params(request)))

        def adder(kind: str) -> Callable[[Request], Any]:
            async def add(request: Request) -> Response:
                record_id = path_id(request, "id", name)
                no_query(request)
                body = await read_json(request, self.cap)
                method = getattr(engine_of(request).timeline, kind)
                item = await self.run("create", method, name, record_id, body,
                                      actor=_actor(request))
                return json_response(item, 201)
            return add

        app.add_api_route(f"{base}/{{id}}/timeline", timeline, methods=["GET"], tags=tags,
                          response_class=Response, operation_id=f"timeline_{name}",
                          summary=f"A {name}'s timeline, newest first",
                          openapi_extra={"parameters": [_id_param(), {
                              "name": "limit", "in": "query",
                              "schema": {"type": "integer", "minimum": 1, "maximum": 200}}, {
                              "name": "cursor", "in": "query", "schema": {"type": "string"}}]},
                          responses=_ok({"$ref": REF + builtin("Timeline")}))
        for path, kind, schema, what in (("comments", "comment", "Comment", "comment"),
                                         ("activities", "activity", "Activity",
                                          "call, e-mail or meeting")):
            app.add_api_route(f"{base}/{{id}}/{path}", adder(kind), methods=["POST"], tags=tags,
                              status_code=201, response_class=Response,
                              operation_id=f"add_{name}_{path}", summary=f"Add a {what}",
                              openapi_extra={"parameters": [_id_param()], "requestBody": {
                                  "required": True, "content": {"application/json": {
                                      "schema": {"$ref": REF + builtin(schema)}}}}},
                              responses=_ok({"$ref": REF + builtin("TimelineItem")}, 201, None, "Added"))

    def _add_links(self, app: APIRouter, entity: EntitySpec) -> None:
        name = entity.name
        base = f"/api/{name}"
        setup = self.setup
        #: (name, target entity or None, many-to-many, the entities the list may hold)
        ways: list[tuple[str, str | None, bool, tuple[str, ...]]] = []
        for link in entity.links.values():
            ways.append((link.name, None if link.polymorphic else link.target, link.many,
                         link.targets))
        for reverse in setup.reverse_links[name].values():
            ways.append((reverse.name, reverse.entity, reverse.link.many, (reverse.entity,)))
        for way, target, many, holds in ways:
            target_ref: dict[str, Any] = (
                {"$ref": REF + pascal(target) + "List"} if target else
                {"type": "object", "description": "a list of the linked entity's records"})

            def make_list(way: str = way) -> Callable[[Request], Any]:
                async def linked(request: Request) -> Response:
                    record_id = path_id(request, "id", name)
                    page = await self.run("list", engine_of(request).records.linked, name,
                                          record_id, way, _params(request))
                    return json_response(page.as_json())
                return linked

            def make_change(add: bool, way: str = way,
                            other: str = target or "record") -> Callable[[Request], Any]:
                async def change(request: Request) -> Response:
                    record_id = path_id(request, "id", name)
                    no_query(request)
                    other_id = path_id(request, "other_id", other)
                    records = engine_of(request).records
                    if add:  # a link that carries data takes the pair's values as a body
                        sent = request.headers.get("content-length") not in (None, "0") \
                            or "transfer-encoding" in request.headers
                        body = await read_json(request, self.cap) if sent else None
                        await self.run("link", records.add_link, name, record_id, way, other_id,
                                       actor=_actor(request), body=body)
                    else:
                        await self.run("link", records.remove_link, name, record_id, way,
                                       other_id, actor=_actor(request))
                    return Response(status_code=204)
                return change

            # every way at /links/{way}; also at the short /{way} unless the API has a route
            # of that name under a record (engine/naming.py RECORD_ROUTES)
            paths = [(f"{base}/{{id}}/{LINKS_ROUTE}/{way}", f"{name}__{way}")]
            if way not in RECORD_ROUTES:
                paths.insert(0, (f"{base}/{{id}}/{way}", f"{name}_{way}"))
            params = {"parameters": [_id_param(), _id_param("other_id", f"linked {target}")]}
            for path, operation in paths:
                app.add_api_route(path, make_list(), methods=["GET"],
                                  tags=[name], response_class=Response,
                                  summary=f"{way} of a {name}", operation_id=f"list_{operation}",
                                  openapi_extra={"parameters": [
                                      _id_param(),
                                      *_list_params(setup.entities[holds[0]], self.storage,
                                                    *(setup.entities[e] for e in holds[1:]))]},
                                  responses=_ok(target_ref))
                if not many:
                    continue
                app.add_api_route(f"{path}/{{other_id}}", make_change(True),
                                  methods=["PUT"], tags=[name], status_code=204,
                                  response_class=Response, summary=f"Link a {target} to a {name}",
                                  operation_id=f"add_{operation}", openapi_extra=params,
                                  responses={204: {"description": "Linked"}, **_REFUSED})
                app.add_api_route(f"{path}/{{other_id}}", make_change(False),
                                  methods=["DELETE"], tags=[name], status_code=204,
                                  response_class=Response, summary=f"Unlink a {target} from a {name}",
                                  operation_id=f"remove_{operation}", openapi_extra=params,
                                  responses={204: {"description": "Unlinked"}, **_REFUSED})


def _actor(request: Request) -> int | None:
    """The id of the authenticated user (None while the database has no users)."""
    user = getattr(request.state, "user", None)
    return None if user is None else int(user.id)


def _params(request: Request) -> list[tuple[str, str]]:
    return request.query_params.multi_items()


def _only_include(request: Request) -> str | None:
    problems = [ErrorDetail(key, "is not a parameter of this call; only include is")
                for key, _ in request.query_params.multi_items() if key != "include"]
    if len(request.query_params.getlist("include")) > 1:
        problems.append(ErrorDetail("include", "is given twice"))
    if problems:
        raise MalformedRequest("unknown query parameters", problems, code="invalid_query")
    return request.query_params.get("include")


def _etag(record: dict[str, Any]) -> str:
    return f'"{record["version"]}"'


def _if_match(request: Request) -> int | None:
    """The version an If-Match header names; a tag that names no version can never match."""
    header = request.headers.get("if-match")
    if header is not None and not header.strip():
        raise MalformedRequest("If-Match is empty: send the ETag you read, e.g. If-Match: \"3\", "
                               "or leave the header out", [ErrorDetail("If-Match", "is empty")],
                               code="invalid_header")
    if header is None or header.strip() == "*":
        return None
    tag = header.split(",")[0].strip()
    if tag.startswith("W/"):
        raise MalformedRequest(f"If-Match {tag!r} is a weak tag, and If-Match compares strong "
                               "ones: send the ETag as you read it, e.g. If-Match: \"3\"",
                               [ErrorDetail("If-Match", "is a weak tag (W/...)")],
                               code="invalid_header")
    if len(tag) < 2 or not (tag.startswith('"') and tag.endswith('"')):
        raise MalformedRequest(f"If-Match {tag!r} is not quoted: an ETag is in double quotes, "
                               "e.g. If-Match: \"3\"",
                               [ErrorDetail("If-Match", "is not a quoted tag")],
                               code="invalid_header")
    tag = tag[1:-1]
    if not (tag.isascii() and tag.isdigit() and len(tag) < 10):
        raise StaleVersion(f"If-Match {header!r} names no version of this record; "
                           "send the ETag you read, e.g. If-Match: \"3\"")
    return int(tag)


def _openapi(app: FastAPI, kt: Kartoteka) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    creates = {name: entity_schemas.create for name, entity_schemas in kt.schemas.items()}
    for name, entity_schemas in kt.schemas.items():
        names = entity_schemas.names
        components[names["read"]] = entity_schemas.read
        components[names["create"]] = entity_schemas.create
        components[names["patch"]] = entity_schemas.patch
        components[names["list"]] = list_schema(name)
        components.update(bulk_api.schemas(kt.setup.entities[name], entity_schemas.create,
                                           pascal(name), creates, kt.setup.entities))
    components[builtin("Error")] = ERROR_SCHEMA
    components.update(duplicates_api.schemas())
    duplicates_api.publish_confirmation(schema, kt.setup.entities.values())
    components.update(PIPELINE_SCHEMAS)
    _publish_bearer(schema)
    app.openapi_schema = schema
    return schema


def _publish_bearer(schema: dict[str, Any]) -> None:
    """Every `/api` operation takes `Authorization: Bearer <token>` (see api.auth), so
    clients and /docs' "Authorize" button know how to send it. While the database has no
    users the API is open and the header is ignored, which the scheme cannot express."""
    schema["components"]["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "a user's API token (`kartoteka users token` or POST /api/users)"}}
    for path, operations in schema.get("paths", {}).items():
        if (path + "/").startswith("/api/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
