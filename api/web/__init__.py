"""The web app at `/app`: a list, a card, forms, a board and a funnel per entity,
generated at start-up from the loaded setup and shown per request as the caller's role
allows. See README.md, "The web app".

    GET /app                          the entities the caller may read
    GET /app/{e}                      list: search, filters, sort, cursor paging
    GET /app/{e}/new                  create form          GET /app/{e}/{id}/edit  edit form
    GET /app/{e}/{id}                 card: fields, ways back, timeline, comment box
    GET /app/{e}/board                kanban per pipeline  GET /app/{e}/funnel     funnel
    GET /app/{e}/lookup?q=            {"items": [{"id", "title"}]} for link pickers
    GET /app/static/{app.js,app.css}  the app's own assets (no CDN, no third-party code)

Routes are registered per entity (as the API's are), so `/app/sign-in` and the other
paths of api.auth never meet an entity's. None is in the OpenAPI description.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from api.threads import in_thread
from api.web.pages import STATIC, WebApp, json_lookup
from engine.core import Kartoteka
from engine.errors import NotFound

ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def add_web_app(app: FastAPI, kt: Kartoteka) -> None:
    """Serve the web app at `/app`, and send `/` there."""
    web = WebApp(kt)

    def route(path: str, endpoint: Any) -> None:
        # plain Starlette routes: a page takes the request alone, so FastAPI's analysis of
        # each endpoint's signature (~1 ms a route, 40 routes for a setup of 8 entities, at
        # every start) would find nothing to inject
        app.add_route(path, endpoint, methods=["GET"], include_in_schema=False)

    async def root(request: Request) -> Response:
        return RedirectResponse("/app", 307)

    async def home(request: Request) -> Response:
        return await web.page(request, web.home)

    route("/", root)
    route("/app", home)
    for name in ASSETS:
        route(f"/app/static/{name}", _asset(name))
    for entity in kt.setup.entities:
        _add_entity(app, web, entity, route)


def _asset(name: str) -> Any:
    async def asset(request: Request) -> Response:
        # the page names each asset with ?v=<digest of the assets>, so it may be kept long
        return FileResponse(STATIC / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=31536000, immutable"})
    return asset


def _add_entity(app: FastAPI, web: WebApp, entity: str, route: Any) -> None:
    base = f"/app/{entity}"

    async def list_page(request: Request) -> Response:
        return await web.page(request, web.list_page, entity)

    async def new(request: Request) -> Response:
        return await web.page(request, web.form, entity, None)

    async def board(request: Request) -> Response:
        return await web.page(request, web.board, entity)

    async def cards(request: Request) -> Response:
        return await web.page(request, web.more_cards, entity)

    async def funnel(request: Request) -> Response:
        return await web.page(request, web.funnel, entity)

    async def lookup(request: Request) -> Response:
        if web.signed_out(request):
            return json_lookup([], 401)
        items = await in_thread(web.lookup, entity, request.query_params.get("q", ""))
        return json_lookup(items)

    async def card(request: Request) -> Response:
        return await web.page(request, _with_id(web.card, request), entity)

    async def edit(request: Request) -> Response:
        return await web.page(request, _with_id(web.form, request), entity)

    route(base, list_page)
    route(f"{base}/new", new)
    route(f"{base}/lookup", lookup)
    if web.spec(entity).pipeline is not None:
        route(f"{base}/board", board)
        route(f"{base}/board/cards", cards)
        route(f"{base}/funnel", funnel)
    route(f"{base}/{{id}}", card)
    route(f"{base}/{{id}}/edit", edit)


def _with_id(build: Any, request: Request) -> Any:
    """`build(base, entity, id)` with the path's id, a 404 page when it is not one."""
    text = request.path_params["id"]

    def bound(base: dict[str, Any], entity: str) -> Any:
        if not (text.isascii() and text.isdigit() and 0 < len(text) < 19):
            raise NotFound(f"no {entity} with id {text!r}")
        return build(base, entity, int(text))
    return bound
