"""The route index (api/routing.py): a request finds the very route Starlette's search of
every route finds — the same handler, the same 405 for a path another method serves, the
same redirect and 404 — while only its path's candidates are searched."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from starlette.routing import BaseRoute, Match, Router
from starlette.testclient import TestClient

from api.app import create_app
from api.routing import RouteIndex, head_of
from engine import Kartoteka

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")


@pytest.fixture
def kt(sqlite_kt: Callable[..., Kartoteka]) -> Kartoteka:
    """The default setup: routes do not depend on the database."""
    return sqlite_kt()


def picked(routes: list[BaseRoute], method: str, path: str) -> tuple[str, BaseRoute | None]:
    """What Starlette's search picks: the first full match, else the first partial one."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return "full", route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return ("partial", partial) if partial is not None else ("none", None)


def paths(routes: list[BaseRoute]) -> Iterator[str]:
    """Each route's path with its parameters filled, with and without a trailing slash,
    one segment longer and one shorter, and paths no route serves."""
    for route in routes:
        path_format = getattr(route, "path_format", None)
        if not isinstance(path_format, str):
            continue
        for fill in ("1", "bulk"):
            path = re.sub(r"\{[^}]*\}", fill, path_format)
            yield from (path, path + "/", path.rstrip("/") + "/more", path.rsplit("/", 1)[0])
    yield from ("/", "", "/api", "/api/", "/nothing", "/api/nothing/1", "/apix", "/app/x/y/z")


def test_the_index_picks_the_route_the_full_search_picks(kt: Kartoteka) -> None:
    router = create_app(kt).router
    routes = list(router.routes)
    index = RouteIndex(router)
    checked = 0
    for path in set(paths(routes)):
        narrowed = index.narrowed(path)
        for method in METHODS:
            expected = picked(routes, method, path)
            got = picked(narrowed.routes, method, path) if narrowed is not None \
                else ("none", None)
            if got[0] == "none":  # the narrowed router's default: the whole router's search
                assert narrowed is None or narrowed.default == router.app
                got = expected if expected[0] == "none" else ("missed", None)
            assert got == expected, (method, path)
            checked += 1
    assert checked > 1000
    # the candidates are few: the hot path searches a handful, not every route
    sale = index.narrowed("/api/client/1")
    assert sale is not None and len(sale.routes) < len(routes) / 10


def test_a_head_is_all_before_the_first_parameter(kt: Kartoteka) -> None:
    heads = {getattr(route, "path_format", ""): head_of(route)
             for route in create_app(kt).router.routes}
    assert heads["/api/client/{id}"] == "/api/client/"
    assert heads["/api/client"] == "/api/client"
    assert heads["/docs/assets/{path}"] == "/docs/assets/"  # a Mount


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/client/"), ("GET", "/api/client"), ("PUT", "/api/client"),
    ("POST", "/api/client/1"), ("GET", "/api/nothing"), ("GET", "/docs/"),
    ("GET", "/app/"), ("DELETE", "/api/schema"), ("GET", "/openapi.json/"),
])
def test_answers_are_those_of_the_full_search(kt: Kartoteka, method: str, path: str) -> None:
    """A redirect, a 405 and a 404 come out as Starlette's own search gives them."""
    indexed = create_app(kt)
    plain = create_app(kt)
    plain.router.middleware_stack = plain.router.app  # Starlette's search of every route
    answers = []
    for app in (indexed, plain):
        with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False,
                        raise_server_exceptions=False) as client:
            response = client.request(method, path)
            answers.append((response.status_code, response.headers.get("location"),
                            response.headers.get("allow"), response.content))
    assert answers[0] == answers[1]


def test_routes_added_after_the_first_request_are_found(kt: Kartoteka) -> None:
    app = create_app(kt)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/client").status_code == 200

        async def late(request: object) -> object:
            from starlette.responses import PlainTextResponse
            return PlainTextResponse("late")
        app.router.add_route("/late/{x}", late)
        assert client.get("/late/1").text == "late"
        assert isinstance(app.router, Router)
