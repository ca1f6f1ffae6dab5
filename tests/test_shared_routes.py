"""Apps over one setup share its generated routes and those of the API's own calls (users,
automations, webhooks, saved views): building them was most of `create_app`. Each app still
answers from its own engine and database, and a route that would hold an engine — in its
handler's closure or in a helper's the handler holds — is refused when the routes are
built."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from api import app as app_module
from api import create_app
from engine.core import Kartoteka
from tests.conftest import DEFAULT_SETUP


@pytest.fixture
def two_apps(open_kt: Callable[..., Kartoteka],
             tmp_path: Path) -> Iterator[tuple[FastAPI, FastAPI, set[int]]]:
    """Two apps over the default setup, each on its own database, and the ids of the routes
    they share."""
    engines = [open_kt(DEFAULT_SETUP, f"sqlite:///{tmp_path / name}.db") for name in "ab"]
    for kt in engines:
        kt.migrate()
    try:
        first, second = (create_app(kt) for kt in engines)
        yield first, second, {id(r) for r in first.routes} & {id(r) for r in second.routes}
    finally:
        for kt in engines:
            kt.close()


def test_two_apps_over_one_setup_share_routes_and_keep_their_own_databases(
        two_apps: tuple[FastAPI, FastAPI, set[int]]) -> None:
    first, second, shared = two_apps
    assert any(getattr(route, "path", "") == "/api/client/{id}" and id(route) in shared
               for route in first.routes)
    with TestClient(first, base_url="http://127.0.0.1") as a, \
            TestClient(second, base_url="http://127.0.0.1") as b:
        made = a.post("/api/client", json={"name": "Только в А", "city": "Казань"})
        assert made.status_code == 201
        assert b.get("/api/client").json()["total"] == 0
        assert b.get(made.headers["location"]).status_code == 404
        assert b.post("/api/client", json={"name": "Только в Б"}).status_code == 201
        assert [c["name"] for c in a.get("/api/client").json()["items"]] == ["Только в А"]
        assert a.get("/api/client/export").text.count("\n") == 2  # header and one row
        assert b.get("/api/schema").json() == a.get("/api/schema").json()


def test_a_shared_route_holding_an_engine_is_refused_when_built(
        kt: Kartoteka) -> None:
    from fastapi import APIRouter
    from starlette.requests import Request
    from starlette.responses import Response

    records = kt.records

    async def leaky(request: Request) -> Response:
        return Response(str(records))

    router = APIRouter()
    router.add_api_route("/api/leaky", leaky)
    with pytest.raises(AssertionError, match="engine_of"):
        app_module._engine_free(router.routes[0])


def test_a_shared_route_holding_an_engine_through_a_helper_is_refused(kt: Kartoteka) -> None:
    from fastapi import APIRouter
    from starlette.requests import Request
    from starlette.responses import Response

    def admin_only() -> bool:
        return kt.users.may_manage()

    async def leaky(request: Request) -> Response:
        return Response(str(admin_only()))

    router = APIRouter()
    router.add_api_route("/api/leaky", leaky)
    with pytest.raises(AssertionError, match="engine_of"):
        app_module._engine_free(router.routes[0])


def test_the_api_s_own_calls_are_shared_and_answer_from_each_app_s_engine(
        two_apps: tuple[FastAPI, FastAPI, set[int]]) -> None:
    """Users, tokens and saved views made through one app are not seen through another app
    over the same setup and another database."""
    first, second, shared = two_apps
    for path in ("/api/users", "/api/me", "/api/views", "/api/webhooks",
                 "/api/automations/events", "/api/me/notifications"):
        assert any(getattr(route, "path", "") == path and id(route) in shared
                   for route in first.routes), path
    with TestClient(first, base_url="http://127.0.0.1") as a, \
            TestClient(second, base_url="http://127.0.0.1") as b:
        view = a.post("/api/views", json={"entity": "client", "name": "Казань",
                                          "query": "city=Казань"})
        assert view.status_code == 201, view.text
        assert b.get("/api/views").json() == {"items": []}
        made = a.post("/api/users", json={"email": "anna@example.com", "roles": ["admin"]})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        # the first app now has a user (and wants a token); the second is still open
        assert a.get("/api/users").status_code == 401
        assert b.get("/api/users").json() == {"items": []}
        mine = a.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert mine["user"]["email"] == "anna@example.com" and mine["manages_users"]
        assert b.get("/api/me").json()["user"] is None
