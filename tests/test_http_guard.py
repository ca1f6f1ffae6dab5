"""The HTTP guard (api/guard.py): a web page the operator visits cannot drive the API.

Real HTTP through the ASGI app. The guard does not touch the database, so apart from the
attack itself (run on SQLite and PostgreSQL) these tests use one SQLite engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from api import ApiSettings, create_app
from api.guard import normalize_host, normalize_origin
from engine import Kartoteka
from kartoteka.cli import main

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "http://127.0.0.1"
APP = "https://app.example.com"
BODY = b'{"email": "mallory@example.com", "roles": ["admin"]}'


@pytest.fixture
def lite(sqlite_kt: Callable[..., Kartoteka]) -> Kartoteka:
    return sqlite_kt()


def http(kt: Kartoteka, **settings: Any) -> TestClient:
    return TestClient(create_app(kt, ApiSettings(**settings)), base_url=LOCAL,
                      raise_server_exceptions=False)


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


# -- the attack: a page posts to the open API --------------------------------------------------

@pytest.mark.parametrize("content_type", [
    None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "text/json"])
def test_a_simple_cross_site_post_creates_no_admin(
        client: TestClient, kt: Kartoteka, content_type: str | None) -> None:
    """A form or fetch() POST with a CORS-safelisted type (or none) needs no preflight."""
    headers = {"Origin": "https://evil.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    for path in ("/api/users", "/api/client"):
        error = refused(client.post(path, content=BODY, headers=headers), 415,
                        "unsupported_media_type")
        assert "application/json" in error["message"]
        sent = (content_type or "no Content-Type").split(";")[0]
        assert sent in error["message"]
    assert not kt.users.any_users()
    assert client.get("/api/client").json()["total"] == 0


def test_json_bodies_with_parameters_or_a_json_suffix_are_taken(lite: Kartoteka) -> None:
    with http(lite) as api:
        made = api.post("/api/client", content=b'{"name": "Romashka"}',
                        headers={"Content-Type": "application/json; charset=utf-8"})
        assert made.status_code == 201, made.text
        changed = api.patch(f"/api/client/{made.json()['id']}", content=b'{"city": "Kazan"}',
                            headers={"Content-Type": "application/merge-patch+json"})
        assert changed.status_code == 200, changed.text
        # a chunked body without a Content-Type is refused like any other
        refused(api.post("/api/client", content=iter([b'{"name": ', b'"x"}'])), 415,
                "unsupported_media_type")
        # a declared non-JSON type is refused even with no body to read
        refused(api.post("/api/sale/1/stage", headers={"Content-Type": "text/plain"}), 415,
                "unsupported_media_type")
        assert api.get("/api/client").json()["total"] == 1


def test_bodiless_calls_designed_so_still_work(lite: Kartoteka) -> None:
    admin, token = lite.users.add("olga@example.com", ["admin"])
    bearer = {"Authorization": f"Bearer {token}"}
    with http(lite) as api:
        issued = api.post(f"/api/users/{admin.id}/tokens", headers=bearer)
        assert issued.status_code == 201, issued.text
        sale = api.post("/api/sale", json={"number": "S-1", "client": api.post(
            "/api/client", json={"name": "x"}, headers=bearer).json()["id"]}, headers=bearer)
        product = api.post("/api/product", json={"sku": "A", "name": "Paper"}, headers=bearer)
        linked = api.put(f"/api/sale/{sale.json()['id']}/products/{product.json()['id']}",
                         headers=bearer)
        assert linked.status_code == 204, linked.text
        # a stage move needs its body: the empty one is malformed, as before
        refused(api.post(f"/api/sale/{sale.json()['id']}/stage", headers=bearer), 400,
                "malformed_request")


# -- Host: DNS rebinding ----------------------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LocalHost.", "127.0.0.1",
                                  "127.0.0.1:59999", "127.0.0.2", "[::1]", "[::1]:8000",
                                  "[0:0::1]:80"])
def test_loopback_names_are_answered(lite: Kartoteka, host: str) -> None:
    with http(lite) as api:
        assert api.get("/api/client", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "testserver",
                                  "127.0.0.1.attacker.example", "localhost.attacker.example",
                                  "localhost:80@attacker.example", "localhost:x", "[::1",
                                  "0.0.0.0:8000", "192.168.1.10", ""])
def test_a_rebound_host_is_refused(lite: Kartoteka, host: str) -> None:
    with http(lite) as api:
        for path in ("/api/client", "/docs", "/openapi.json"):
            refused(api.get(path, headers={"Host": host}), 400, "host_not_allowed")
        refused(api.post("/api/users", content=BODY,
                         headers={"Host": host, "Content-Type": "application/json"}),
                400, "host_not_allowed")
    assert not lite.users.any_users()


def test_the_refusal_names_the_host_and_the_fix(lite: Kartoteka) -> None:
    with http(lite, allowed_hosts=("crm.internal.example",)) as api:
        error = refused(api.get("/api/client", headers={"Host": "attacker.example:8000"}), 400,
                        "host_not_allowed")
    assert "attacker.example:8000" in error["message"]
    assert "--allowed-host" in error["message"]
    assert "crm.internal.example" not in error["message"]  # configured names are not told


def test_configured_hosts(lite: Kartoteka) -> None:
    with http(lite, allowed_hosts=("CRM.example.com", "*.corp.example", "10.0.0.5", "::2")) as api:
        for host in ("crm.example.com", "crm.example.com:443", "a.corp.example",
                     "b.a.corp.example:8000", "10.0.0.5:8000", "[::2]", "localhost"):
            assert api.get("/api/client", headers={"Host": host}).status_code == 200, host
        for host in ("example.com", "corp.example", "xcorp.example", "10.0.0.6"):
            refused(api.get("/api/client", headers={"Host": host}), 400, "host_not_allowed")
    with http(lite, allowed_hosts=("*",)) as api:
        assert api.get("/api/client", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("given, expected", [
    ("Crm.Example.com.", "crm.example.com"), ("::1", "[::1]"), ("[::1]", "[::1]"),
    ("*.example.com", "*.example.com"), ("*", "*"), ("10.0.0.5", "10.0.0.5")])
def test_host_names_are_normalized(given: str, expected: str) -> None:
    assert normalize_host(given) == expected


@pytest.mark.parametrize("given", ["https://crm.example.com", "crm.example.com:8000",
                                   "crm.example.com/api", "", "a b", "*.*.example.com"])
def test_a_host_that_is_not_a_name_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="without scheme, port or path"):
        normalize_host(given)


@pytest.mark.parametrize("given, expected", [
    ("https://App.Example.com/", "https://app.example.com"),
    ("http://localhost:5173", "http://localhost:5173"), ("http://[::1]:3000", "http://[::1]:3000")])
def test_origins_are_normalized(given: str, expected: str) -> None:
    assert normalize_origin(given) == expected


@pytest.mark.parametrize("given", ["*", "null", "app.example.com", "https://app.example.com/x",
                                   "ftp://app.example.com", "https://"])
def test_an_origin_that_is_not_exact_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        normalize_origin(given)


# -- CORS -------------------------------------------------------------------------------------

def preflight(api: TestClient, origin: str, method: str = "POST",
              headers: str = "content-type, authorization") -> Any:
    return api.options("/api/client", headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def test_no_cors_by_default(lite: Kartoteka) -> None:
    with http(lite) as api:
        answer = preflight(api, APP)
        refused(answer, 405, "method_not_allowed")
        assert not any(h.startswith("access-control-") for h in answer.headers)
        plain = api.get("/api/client", headers={"Origin": APP})
        assert plain.status_code == 200
        assert "access-control-allow-origin" not in plain.headers


def test_cors_for_configured_origins(lite: Kartoteka) -> None:
    with http(lite, cors_origins=(APP,)) as api:
        answer = preflight(api, APP, "PATCH", "authorization, content-type, if-match, if-none-match")
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == APP
        allowed = answer.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "if-match", "if-none-match"):
            assert header in allowed
        assert "PATCH" in answer.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in answer.headers
        made = api.post("/api/client", json={"name": "x"}, headers={"Origin": APP})
        assert made.status_code == 201
        assert made.headers["access-control-allow-origin"] == APP
        assert "ETag" in made.headers["access-control-expose-headers"]
        # the guard's refusals carry the CORS headers, so the web app can read them
        wrong = api.post("/api/client", content=b"{}", headers={"Origin": APP,
                                                                 "Content-Type": "text/plain"})
        refused(wrong, 415, "unsupported_media_type")
        assert wrong.headers["access-control-allow-origin"] == APP


@pytest.mark.parametrize("origin, headers, extra", [
    ("https://evil.example", "content-type", {}),
    ("https://app.example.com.evil.example", "content-type", {}),
    ("http://app.example.com", "content-type", {}),
    (APP, "x-custom", {}),
    (APP, "content-type", {"Access-Control-Request-Private-Network": "true"})])
def test_other_cross_origin_preflights_are_refused_in_the_error_shape(
        lite: Kartoteka, origin: str, headers: str, extra: dict[str, str]) -> None:
    with http(lite, cors_origins=(APP,)) as api:
        answer = api.options("/api/client", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers, **extra})
        refused(answer, 400, "cors_refused")
        if origin != APP:
            assert "access-control-allow-origin" not in answer.headers
            assert "access-control-allow-origin" not in api.get(
                "/api/client", headers={"Origin": origin}).headers


# -- headers on every answer ------------------------------------------------------------------

def test_nosniff_everywhere_and_no_store_on_api_answers(lite: Kartoteka,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    with http(lite) as api:
        answers = {
            "list": api.get("/api/client"),
            "create": api.post("/api/client", json={"name": "x"}),
            "me": api.get("/api/me"),
            "404": api.get("/api/nothing"),
            "415": api.post("/api/client", content=b"{}", headers={"Content-Type": "text/plain"}),
            "host": api.get("/api/client", headers={"Host": "attacker.example"}),
        }
        monkeypatch.setattr(lite.records, "list_page", boom)
        answers["500"] = api.get("/api/client")
        public = {"docs": api.get("/docs"), "openapi": api.get("/openapi.json")}
        lite.users.add("olga@example.com", ["admin"])
        answers["401"] = api.get("/api/client")
    assert answers["500"].status_code == 500
    for name, answer in {**answers, **public}.items():
        assert answer.headers["x-content-type-options"] == "nosniff", name
    for name, answer in answers.items():
        assert answer.headers["cache-control"] == "no-store", name
    for name, answer in public.items():
        assert answer.status_code == 200, name
        assert "no-store" not in answer.headers.get("cache-control", ""), name


# -- kartoteka serve --------------------------------------------------------------------------

@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., tuple[Any, str]]:
    """Runs `kartoteka serve` up to uvicorn; answers (the app it would serve, stderr)."""
    import uvicorn

    url = f"sqlite:///{tmp_path / 'served.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["migrate", str(ROOT / "schemas"), "--db", url]).exit_code == 0
    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: apps.append(app))

    def serve(*args: str, env: dict[str, str] | None = None, users: bool = False) -> tuple[Any, str]:
        if users:
            assert runner.invoke(main, ["user", "add", "olga@example.com", "--role", "admin",
                                        "--db", url]).exit_code == 0
        result = runner.invoke(main, ["serve", str(ROOT / "schemas"), "--db", url, *args], env=env)
        assert result.exit_code == 0, result.output
        return apps.pop(), result.stderr

    return serve


def answers(app: Any, host: str) -> int:
    with TestClient(app, base_url=f"http://{host}") as api:
        return int(api.get("/openapi.json").status_code)


def test_serve_answers_loopback_names_by_default(served: Callable[..., tuple[Any, str]]) -> None:
    app, stderr = served()
    assert "Answering requests for localhost, 127.0.0.1, [::1] (Host)" in stderr
    assert answers(app, "localhost:8000") == 200
    assert answers(app, "attacker.example") == 400


def test_serve_takes_allowed_hosts_and_cors_origins(served: Callable[..., tuple[Any, str]]) -> None:
    app, stderr = served("--allowed-host", "crm.example.com", "--allowed-host", "b.example,c.example",
                         "--cors-origin", APP)
    assert "crm.example.com, b.example, c.example (Host)" in stderr
    assert f"Browsers may call the API from {APP} (CORS)" in stderr
    for host in ("crm.example.com", "c.example:8000", "127.0.0.1"):
        assert answers(app, host) == 200
    with TestClient(app, base_url=LOCAL) as api:
        assert preflight(api, APP).headers["access-control-allow-origin"] == APP


def test_serve_reads_the_environment(served: Callable[..., tuple[Any, str]]) -> None:
    app, _ = served(env={"KARTOTEKA_ALLOWED_HOSTS": "crm.example.com, b.example",
                         "KARTOTEKA_CORS_ORIGINS": APP})
    assert answers(app, "b.example") == 200
    with TestClient(app, base_url=LOCAL) as api:
        assert preflight(api, APP).status_code == 200


def test_serve_warns_of_any_host(served: Callable[..., tuple[Any, str]]) -> None:
    app, stderr = served("--allowed-host", "*")
    assert "warning: --allowed-host '*'" in stderr
    assert "DNS rebinding" in stderr and "create an admin" in stderr
    assert answers(app, "whatever.example") == 200


def test_serve_on_every_address_tells_to_add_names(served: Callable[..., tuple[Any, str]]) -> None:
    app, stderr = served("--host", "0.0.0.0", users=True)
    assert "add --allowed-host NAME" in stderr
    assert answers(app, "0.0.0.0") == 400
    app, _ = served("--host", "192.168.1.10")
    assert answers(app, "192.168.1.10:8000") == 200  # the address served on is a name of it


@pytest.mark.parametrize("option, value", [("--allowed-host", "https://crm.example.com"),
                                           ("--cors-origin", "*")])
def test_serve_refuses_a_bad_name(tmp_path: Path, option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["serve", str(ROOT / "schemas"), "--db",
                                       f"sqlite:///{tmp_path / 'x.db'}", option, value])
    assert result.exit_code == 2
    assert value in result.stderr and option in result.stderr


def _session_cookie(app: Any) -> str:
    """Sign a user in to the served app through the sign-in page; its session cookie."""
    kt = app.state.kartoteka
    user, _ = kt.users.add("nika@example.com", ["director"])
    kt.sessions.set_password(user.id, {"password": "correct horse battery"})
    with TestClient(app, base_url=LOCAL) as browser:
        assert browser.get("/app/sign-in").status_code == 200
        answer = browser.post("/app/sign-in", json={
            "email": "nika@example.com", "password": "correct horse battery"},
            headers={"X-CSRF-Token": browser.cookies.get("kt_csrf") or ""})
        assert answer.status_code == 200, answer.text
        return next(c for c in answer.headers.get_list("set-cookie")
                    if c.startswith("kt_session="))


def test_serve_sets_how_long_sessions_last(served: Callable[..., tuple[Any, str]]) -> None:
    app, stderr = served("--session-idle", "90m", "--session-max", "30d")
    assert "Browser sessions end after 90m without a request, or 30d after signing in." in stderr
    settings = app.state.kartoteka.settings.sessions
    assert (settings.idle_hours, settings.absolute_days) == (1.5, 30)
    assert "Max-Age=2592000" in _session_cookie(app)  # 30 days
    # one of the two: the other keeps its default
    app, stderr = served("--session-idle", "8H")
    settings = app.state.kartoteka.settings.sessions
    assert (settings.idle_hours, settings.absolute_days) == (8, 14)
    assert "8h without a request, or 14d after signing in" in stderr
    app, stderr = served("--session-max", "8h")  # shorter than the default idle 12h
    assert "8h without a request, or 8h after signing in" in stderr
    app, stderr = served()
    assert "Browser sessions end" not in stderr
    assert app.state.kartoteka.settings.sessions.idle_hours == 12


def test_serve_reads_session_lengths_from_the_environment(
        served: Callable[..., tuple[Any, str]]) -> None:
    app, _ = served(env={"KARTOTEKA_SESSION_IDLE": "30m", "KARTOTEKA_SESSION_MAX": "12h"})
    settings = app.state.kartoteka.settings.sessions
    assert (settings.idle_hours, settings.absolute_days) == (0.5, 0.5)
    assert "Max-Age=43200" in _session_cookie(app)
    app, _ = served("--session-max", "2d", env={"KARTOTEKA_SESSION_MAX": "12h"})
    assert app.state.kartoteka.settings.sessions.absolute_days == 2  # the option wins


@pytest.mark.parametrize("args, problem", [
    (["--session-idle", "8"], "'8' is not a duration: write a number and a unit"),
    (["--session-idle", "8 hours"], "m (minutes), h (hours) or d (days)"),
    (["--session-max", "-1d"], "'-1d' is not a duration"),
    (["--session-max", "0h"], "it must be longer than zero"),
    (["--session-max", "3651d"], "longer than 3650d"),
    (["--session-idle", "восемь часов"], "is not a duration"),
    (["--session-idle", "۸h"], "is not a duration"),  # Persian digits: not ours to guess
    (["--session-idle", "31d", "--session-max", "30d"],
     "would already have ended at its maximum length, 30d"),
])
def test_serve_refuses_a_bad_session_length(tmp_path: Path, args: list[str], problem: str) -> None:
    result = CliRunner().invoke(main, ["serve", str(ROOT / "schemas"), "--db",
                                       f"sqlite:///{tmp_path / 'x.db'}", *args])
    assert result.exit_code == 2, result.output
    assert problem in result.stderr and args[-2] in result.stderr, result.stderr


def test_serve_refuses_a_bad_session_length_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", str(ROOT / "schemas"), "--db",
                                       f"sqlite:///{tmp_path / 'x.db'}"],
                                env={"KARTOTEKA_SESSION_MAX": "forever"})
    assert result.exit_code == 2
    assert "'forever' is not a duration" in result.stderr
    assert "--session-max" in result.stderr
