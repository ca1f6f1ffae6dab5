"""Signing in to the web app: passwords (argon2), the `kt_session` cookie and its CSRF
token, sign-out, expiry, the limit on failed sign-ins, invitations, and the open mode of
a database without users — real HTTP through the app, cookies kept by the client, on
both databases."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api import create_app
from api.auth import Authentication
from engine import Kartoteka
from engine.access.sessions import SessionSettings
from engine.access.users import hash_token
from kartoteka.cli import main

PASSWORD = "correct horse battery"
LOCAL = "http://127.0.0.1"


def _client(kt: Kartoteka, base_url: str = LOCAL) -> TestClient:
    return TestClient(create_app(kt), base_url=base_url, raise_server_exceptions=False)


@pytest.fixture
def app_client(kt: Kartoteka) -> Iterator[TestClient]:
    with _client(kt) as client:
        yield client


def _user(kt: Kartoteka, email: str = "anna@example.com", roles: tuple[str, ...] = ("director",),
          password: str | None = PASSWORD) -> tuple[int, str]:
    user, token = kt.users.add(email, list(roles))
    if password is not None:
        kt.sessions.set_password(user.id, {"password": password})
    return user.id, token


def _sign_in(client: TestClient, email: str, password: str, **extra: object) -> Any:
    """Open the sign-in page (which sets the pre-session CSRF cookie), then post the form
    as its script does."""
    assert client.get("/app/sign-in").status_code == 200
    return client.post("/app/sign-in", json={"email": email, "password": password, **extra},
                       headers={"X-CSRF-Token": client.cookies.get("kt_csrf") or ""})


def _csrf(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies.get("kt_csrf") or ""}


def _count(kt: Kartoteka, table: str) -> int:
    with kt.db.read(system="test") as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- signing in and out -------------------------------------------------------------------------
def test_sign_in_sets_the_cookies_and_the_session_acts_as_the_user(
        kt: Kartoteka, app_client: TestClient) -> None:
    user_id, _ = _user(kt, roles=("manager",))
    page = app_client.get("/app/sign-in?next=/app/sale")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    pre = page.headers["set-cookie"]
    assert pre.startswith("kt_csrf=") and "SameSite=Strict" in pre and "HttpOnly" not in pre
    assert "Secure" not in pre  # plain http
    answer = app_client.post("/app/sign-in", headers=_csrf(app_client), json={
        "email": " Anna@Example.COM ", "password": PASSWORD, "next": "/app/sale?stage=won"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["next"] == "/app/sale?stage=won"
    assert answer.json()["user"]["id"] == user_id and "password" not in answer.text
    cookies = answer.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("kt_session="))
    csrf = next(c for c in cookies if c.startswith("kt_csrf="))
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Max-Age=1209600" in session
    assert "HttpOnly" not in csrf and "SameSite=Strict" in csrf
    # the token is stored only as its hash
    token = app_client.cookies.get("kt_session") or ""
    with kt.db.read() as conn:
        stored = conn.execute(sa.select(kt.storage.sessions.sessions.c.token_hash)).scalars().all()
    assert stored == [hash_token(token)] and token not in stored
    # the API and the app know the user; a write is theirs and scoped to their role
    me = app_client.get("/api/me")
    assert me.status_code == 200 and me.json()["user"]["id"] == user_id
    created = app_client.post("/api/client", json={"name": "Ромашка"}, headers=_csrf(app_client))
    assert created.status_code == 201 and created.json()["owner"] == user_id
    assert app_client.get("/api/users").status_code == 403  # a manager, not an admin
    # signing out deletes the session and clears both cookies
    out = app_client.post("/app/sign-out", headers=_csrf(app_client))
    assert out.status_code == 200 and out.json()["next"] == "/app/sign-in"
    assert all("Max-Age=0" in c for c in out.headers.get_list("set-cookie"))
    assert _count(kt, "kt_session") == 0
    assert app_client.get("/api/me").status_code == 401


def test_the_session_cookie_is_secure_over_https(kt: Kartoteka) -> None:
    _user(kt)
    with _client(kt, "https://127.0.0.1") as client:
        assert "Secure" in client.get("/app/sign-in").headers["set-cookie"]
        answer = _sign_in(client, "anna@example.com", PASSWORD)
        assert answer.status_code == 200
        assert all("Secure" in c for c in answer.headers.get_list("set-cookie"))


@pytest.mark.parametrize("email,password", [
    ("anna@example.com", "wrong password!"),
    ("nobody@example.com", PASSWORD),
    ("ANNA@example.com", PASSWORD.upper()),
])
def test_a_wrong_sign_in_is_401_without_saying_which_part_was_wrong(
        kt: Kartoteka, app_client: TestClient, email: str, password: str) -> None:
    _user(kt)
    answer = _sign_in(app_client, email, password)
    assert answer.status_code == 401
    assert answer.json() == {"error": {
        "code": "sign_in_failed", "message": "the e-mail or the password is not right"}}
    assert "kt_session" not in app_client.cookies
    assert _count(kt, "kt_session") == 0


def test_a_disabled_user_or_one_without_a_password_cannot_sign_in(
        kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt, "admin@example.com", ("admin",))
    _user(kt, "nopass@example.com", password=None)
    _user(kt, "gone@example.com")
    kt.users.disable("gone@example.com")
    for email in ("nopass@example.com", "gone@example.com"):
        answer = _sign_in(app_client, email, PASSWORD)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "sign_in_failed"


@pytest.mark.parametrize("body", [
    {"email": "anna@example.com"}, {"password": PASSWORD}, {"email": 7, "password": PASSWORD},
    {"email": "anna@example.com", "password": PASSWORD, "remember": True}, ["anna"],
])
def test_a_malformed_sign_in_is_422(kt: Kartoteka, app_client: TestClient, body: object) -> None:
    _user(kt)
    app_client.get("/app/sign-in")
    answer = app_client.post("/app/sign-in", json=body, headers=_csrf(app_client))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_failed"


# -- the limit on failed sign-ins ---------------------------------------------------------------
def test_five_failures_for_an_e_mail_are_429_even_with_the_right_password(
        kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    for _ in range(4):
        assert _sign_in(app_client, "anna@example.com", "wrong password!").status_code == 401
    # a success resets the count of its e-mail
    assert _sign_in(app_client, "anna@example.com", PASSWORD).status_code == 200
    for _ in range(5):
        assert _sign_in(app_client, "anna@example.com", "wrong password!").status_code == 401
    refused = _sign_in(app_client, "Anna@Example.com", PASSWORD)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_requests"
    wait = int(refused.headers["retry-after"])
    assert 800 < wait <= 900
    # another e-mail is not held back; and the count is in the database: a second engine
    # (another process) refuses too
    _user(kt, "boris@example.com")
    assert _sign_in(app_client, "boris@example.com", PASSWORD).status_code == 200
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
    kt.sessions.clock = lambda: later
    assert _sign_in(app_client, "anna@example.com", PASSWORD).status_code == 200


def test_guesses_sent_together_never_pass_the_limit(kt: Kartoteka) -> None:
    """Twelve wrong passwords at once, straight into the engine as twelve server threads
    would send them: each is counted before its (slow) check, so five are judged and the
    rest refused with 429 — and a successful sign-in at the end is refused too, while the
    window lasts; one success earlier takes back only its own count."""
    from collections import Counter
    from functools import partial

    from engine.errors import TooManyRequests, Unauthorized
    from tests.races import together

    _user(kt)
    kt.sessions.sign_in("anna@example.com", PASSWORD, "10.0.0.9")  # counted, then taken back

    def guess(n: int) -> str:
        try:
            kt.sessions.sign_in("anna@example.com", f"wrong guess {n}!", f"10.0.0.{n}")
        except TooManyRequests:
            return "429"
        except Unauthorized:
            return "401"
        return "signed in"

    assert Counter(together([partial(guess, n) for n in range(12)])) == {"401": 5, "429": 7}
    with pytest.raises(TooManyRequests):
        kt.sessions.sign_in("anna@example.com", PASSWORD, "10.0.0.9")


def test_failures_from_one_address_are_limited_across_e_mails(
        make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt(sessions=SessionSettings(failures_per_address=3))
    _user(kt)
    with _client(kt) as client:
        for n in range(3):
            assert _sign_in(client, f"guess{n}@example.com", "whatever it is").status_code == 401
        answer = _sign_in(client, "anna@example.com", PASSWORD)
        assert answer.status_code == 429
        assert int(answer.headers["retry-after"]) > 0


def test_the_same_limit_holds_in_another_process(kt: Kartoteka, make_kt: Callable[..., Kartoteka],
                                                  app_client: TestClient) -> None:
    _user(kt)
    for _ in range(5):
        _sign_in(app_client, "anna@example.com", "wrong password!")
    other = Kartoteka(kt.setup, kt.settings, storage=kt.storage)
    try:
        with _client(other) as client:
            assert _sign_in(client, "anna@example.com", PASSWORD).status_code == 429
    finally:
        other.close()


# -- expiry and ending sessions -----------------------------------------------------------------
def test_a_session_expires_after_12_idle_hours(kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    _sign_in(app_client, "anna@example.com", PASSWORD)
    start = dt.datetime.now(dt.UTC)
    kt.sessions.clock = lambda: start + dt.timedelta(hours=11)
    assert app_client.get("/api/me").status_code == 200  # used: the idle time starts again
    kt.sessions.clock = lambda: start + dt.timedelta(hours=22)
    assert app_client.get("/api/me").status_code == 200
    kt.sessions.clock = lambda: start + dt.timedelta(hours=34, minutes=1)
    page = app_client.get("/app/sale", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/app/sign-in?next=/app/sale"
    assert any("kt_session=;" in c for c in page.headers.get_list("set-cookie"))
    assert _count(kt, "kt_session") == 0


def test_a_session_ends_after_14_days_however_used(kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    _sign_in(app_client, "anna@example.com", PASSWORD)
    start = dt.datetime.now(dt.UTC)
    for hours in range(10, 14 * 24, 10):
        kt.sessions.clock = lambda hours=hours: start + dt.timedelta(hours=hours)
        assert app_client.get("/api/me").status_code == 200, hours
    kt.sessions.clock = lambda: start + dt.timedelta(days=14, minutes=1)
    answer = app_client.get("/api/me")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "no_session"


def test_disabling_a_user_ends_their_sessions(kt: Kartoteka, app_client: TestClient,
                                              db_url: str) -> None:
    _, admin_token = _user(kt, "admin@example.com", ("admin",))
    anna, _ = _user(kt)
    _user(kt, "boris@example.com")
    with _client(kt) as boris:
        _sign_in(app_client, "anna@example.com", PASSWORD)
        _sign_in(boris, "boris@example.com", PASSWORD)
        assert app_client.get("/api/me").status_code == 200
        changed = app_client.patch(f"/api/users/{anna}", json={"active": False},
                                   headers={"Authorization": f"Bearer {admin_token}"})
        assert changed.status_code == 200, changed.text
        assert app_client.get("/api/me").status_code == 401
        assert app_client.get("/app/sale", follow_redirects=False).status_code == 303
        # the command line disables another: its session ends too
        assert boris.get("/api/me").status_code == 200
        done = CliRunner().invoke(main, ["user", "disable", "boris@example.com", "--db", db_url])
        assert done.exit_code == 0, done.output
        kt.sessions._forget()  # another process: this one's 2-second cache aside
        assert boris.get("/api/me").status_code == 401
    assert _count(kt, "kt_session") == 0


def test_an_admin_setting_a_password_ends_the_users_sessions(
        kt: Kartoteka, app_client: TestClient) -> None:
    _, admin_token = _user(kt, "admin@example.com", ("admin",))
    anna, manager_token = _user(kt, roles=("manager",))
    _sign_in(app_client, "anna@example.com", PASSWORD)
    admin = {"Authorization": f"Bearer {admin_token}"}
    new = "another long secret"
    assert app_client.post(f"/api/users/{anna}/password", json={"password": new},
                           headers=admin).status_code == 204
    assert app_client.get("/api/me").status_code == 401
    assert _sign_in(app_client, "anna@example.com", PASSWORD).status_code == 401
    assert _sign_in(app_client, "anna@example.com", new).status_code == 200
    # only an admin sets another's password; the answer never holds a password
    refused = app_client.post(f"/api/users/{anna}/password", json={"password": "x" * 12},
                              headers={"Authorization": f"Bearer {manager_token}"})
    assert refused.status_code == 403
    assert app_client.post("/api/users/999/password", json={"password": "x" * 12},
                           headers=admin).status_code == 404
    for path in ("/api/users", f"/api/users/{anna}", "/api/me"):
        assert "hash" not in app_client.get(path, headers=admin).text


def test_changing_ones_own_password_keeps_this_session_and_ends_the_others(
        kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt, roles=("manager",))
    with _client(kt) as elsewhere:
        _sign_in(app_client, "anna@example.com", PASSWORD)
        _sign_in(elsewhere, "anna@example.com", PASSWORD)
        wrong = app_client.post("/api/me/password", headers=_csrf(app_client), json={
            "old_password": "not the password", "password": "a new long secret"})
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
        assert wrong.json()["error"]["details"][0]["field"] == "old_password"
        short = app_client.post("/api/me/password", headers=_csrf(app_client), json={
            "old_password": PASSWORD, "password": "short"})
        assert short.status_code == 422 and "at least 10" in short.text
        no_csrf = app_client.post("/api/me/password", json={
            "old_password": PASSWORD, "password": "a new long secret"})
        assert no_csrf.status_code == 403
        done = app_client.post("/api/me/password", headers=_csrf(app_client), json={
            "old_password": PASSWORD, "password": "a new long secret"})
        assert done.status_code == 204, done.text
        assert app_client.get("/api/me").status_code == 200
        assert elsewhere.get("/api/me").status_code == 401
    assert _sign_in(app_client, "anna@example.com", "a new long secret").status_code == 200


# -- CSRF ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "forged"}])
def test_a_change_by_cookie_without_the_csrf_token_is_403_and_changes_nothing(
        kt: Kartoteka, app_client: TestClient, headers: dict[str, str]) -> None:
    _user(kt)
    _sign_in(app_client, "anna@example.com", PASSWORD)
    client_id = app_client.post("/api/client", json={"name": "Ромашка"},
                                headers=_csrf(app_client)).json()["id"]
    for method, path, body in (("POST", "/api/client", {"name": "X"}),
                               ("PATCH", f"/api/client/{client_id}", {"name": "Y"}),
                               ("DELETE", f"/api/client/{client_id}", None),
                               ("POST", "/app/sign-out", None)):
        answer = app_client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "csrf_failed"
    assert [c["name"] for c in app_client.get("/api/client").json()["items"]] == ["Ромашка"]
    assert _count(kt, "kt_session") == 1


def test_the_csrf_token_of_another_session_is_refused(kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    _user(kt, "boris@example.com")
    with _client(kt) as boris:
        _sign_in(app_client, "anna@example.com", PASSWORD)
        _sign_in(boris, "boris@example.com", PASSWORD)
        answer = app_client.post("/api/client", json={"name": "X"}, headers=_csrf(boris))
        assert answer.status_code == 403


def test_a_bearer_token_needs_no_csrf_token(kt: Kartoteka, app_client: TestClient) -> None:
    _, token = _user(kt)
    _sign_in(app_client, "anna@example.com", PASSWORD)
    answer = app_client.post("/api/client", json={"name": "X"},
                             headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201
    # a bad Bearer token is refused, the cookie beside it notwithstanding
    assert app_client.get("/api/me", headers={"Authorization": "Bearer kt_wrong"}).status_code == 401


def test_a_form_post_may_carry_the_csrf_token_as_a_field(kt: Kartoteka) -> None:
    """The middleware reads `csrf_token` from a form body and hands the body on unchanged
    (the generated app's guard takes JSON only; a route that takes forms gets this)."""
    _user(kt)
    signed = kt.sessions.sign_in("anna@example.com", PASSWORD, None)

    async def echo(request: Request) -> JSONResponse:
        form = await request.form()
        return JSONResponse({"user": request.state.user.email, "note": form.get("note")})

    app = Authentication(Starlette(routes=[Route("/app/note", echo, methods=["POST"])]),
                         kt.users, kt.sessions)
    with TestClient(app, base_url=LOCAL, cookies={"kt_session": signed.token}) as client:
        ok = client.post("/app/note", data={"note": "Привет", "csrf_token": signed.csrf})
        assert ok.status_code == 200 and ok.json() == {"user": "anna@example.com", "note": "Привет"}
        assert client.post("/app/note", data={"note": "x", "csrf_token": "forged"}).status_code == 403
        assert client.post("/app/note", data={"note": "x"}).status_code == 403


def test_sign_in_needs_the_pre_session_csrf_cookie_and_this_sites_origin(
        kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    body = {"email": "anna@example.com", "password": PASSWORD}
    bare = app_client.post("/app/sign-in", json=body)
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf_failed"
    app_client.get("/app/sign-in")
    assert app_client.post("/app/sign-in", json=body,
                           headers={"X-CSRF-Token": "guessed"}).status_code == 403
    foreign = app_client.post("/app/sign-in", json=body, headers={
        **_csrf(app_client), "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    same = app_client.post("/app/sign-in", json=body, headers={**_csrf(app_client), "Origin": LOCAL})
    assert same.status_code == 200
    # a form post is refused by the guard before it reaches sign-in (pages post JSON)
    assert app_client.post("/app/sign-in", data=body).status_code == 415


# -- pages and redirects ------------------------------------------------------------------------
def test_pages_redirect_to_sign_in_and_only_a_local_next_is_honoured(
        kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    answer = app_client.get("/app/sale?q=Ромашка&stage=won", follow_redirects=False)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert location.path == "/app/sign-in" and not location.netloc
    target = parse_qs(location.query)["next"][0]  # the page asked for, as the browser sent it
    assert urlsplit(target).path == "/app/sale"
    assert parse_qs(urlsplit(target).query) == {"q": ["Ромашка"], "stage": ["won"]}
    assert app_client.get("/app", follow_redirects=False).status_code == 303
    assert answer.headers["cache-control"] == "no-store"  # a page's answer depends on who asks
    # /api without a session is 401, not a redirect; the public pages need nothing
    assert app_client.get("/api/client").status_code == 401
    assert app_client.post("/app/anything", json={}).status_code == 401
    assert app_client.get("/app/invite/kti_nothing").status_code == 404
    for unsafe in ("//evil.example/x", "https://evil.example", "/\\evil.example",
                   "javascript:alert(1)", "evil", "/app\r\nSet-Cookie: x=1", "", None):
        extra = {} if unsafe is None else {"next": unsafe}
        with _client(kt) as fresh:
            signed = _sign_in(fresh, "anna@example.com", PASSWORD, **extra)
            assert signed.json()["next"] == "/app", unsafe
        page = app_client.get("/app/sign-in", params={} if unsafe is None else {"next": unsafe})
        assert 'name="next" value="/app"' in page.text, unsafe


def test_the_sign_in_page_speaks_the_callers_language(kt: Kartoteka, app_client: TestClient) -> None:
    _user(kt)
    english = app_client.get("/app/sign-in")
    assert '<html lang="en" dir="ltr">' in english.text and "Sign in" in english.text
    russian = app_client.get("/app/sign-in", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert 'lang="ru"' in russian.text and "Пароль" in russian.text
    persian = app_client.get("/app/sign-in?lang=fa")
    assert '<html lang="fa" dir="rtl">' in persian.text and "گذرواژه" in persian.text
    chinese = app_client.get("/app/sign-in", headers={"Accept-Language": "zh-CN"})
    assert 'lang="zh"' in chinese.text and "密码" in chinese.text
    # self-contained: its own script and style by nonce, nothing from elsewhere, no framing
    csp = english.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and english.text.count(f'nonce="{nonce.group(1)}"') == 2
    assert not re.search(r'(src|href)="(https?:)?//', english.text)
    assert english.headers["cache-control"] == "no-store"
    assert 'name="viewport" content="width=device-width' in english.text


def test_without_users_the_app_is_open_as_the_api_is(kt: Kartoteka, app_client: TestClient) -> None:
    assert app_client.get("/api/client").status_code == 200
    assert app_client.post("/api/client", json={"name": "X"}).status_code == 201
    assert app_client.get("/app/sale", follow_redirects=False).status_code == 200  # no redirect
    answer = app_client.get("/app/sign-in?next=/app/sale", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/app/sale"


# -- passwords and invitations ------------------------------------------------------------------
@pytest.mark.parametrize("password,problem", [
    ("123456789", "at least 10 characters"),
    ("ANNA@example.com", "must not be the e-mail address"),
    ("x" * 1001, "at most 1000"),
    ("with\x00nul00", "NUL"),
    (12345678901, "as text"),
])
def test_password_rules_are_said_in_the_422(kt: Kartoteka, app_client: TestClient,
                                            password: object, problem: str) -> None:
    _, admin = _user(kt, "admin@example.com", ("admin",))
    anna, _ = _user(kt, password=None)
    answer = app_client.post(f"/api/users/{anna}/password", json={"password": password},
                             headers={"Authorization": f"Bearer {admin}"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["details"][0]["field"] == "password"
    assert problem in answer.json()["error"]["details"][0]["problem"]
    assert not kt.sessions.has_password(anna)


@pytest.mark.parametrize("email,password", [
    ("мария@пример.рф", "пароль-из-кириллицы"),
    ("زهرا@example.ir", "گذرواژهٔ‌امن‌من"),
    ("王芳@例子.中国", "我的密码非常安全十个字"),
])
def test_persian_chinese_and_russian_e_mails_and_passwords(
        kt: Kartoteka, app_client: TestClient, email: str, password: str) -> None:
    _user(kt, email, password=password)
    assert _sign_in(app_client, email.upper(), password + "!").status_code == 401
    answer = _sign_in(app_client, email.upper(), password)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["email"] == email


def test_a_password_is_compared_in_one_unicode_form(kt: Kartoteka, app_client: TestClient) -> None:
    composed = "пароль йод и ёж"
    _user(kt, password=composed)
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert _sign_in(app_client, "anna@example.com", decomposed).status_code == 200


def test_an_invitation_works_once(kt: Kartoteka, app_client: TestClient) -> None:
    _, admin = _user(kt, "admin@example.com", ("admin",))
    anna, _ = _user(kt, password=None)
    made = app_client.post(f"/api/users/{anna}/invitation",
                           headers={"Authorization": f"Bearer {admin}"})
    assert made.status_code == 201, made.text
    path = made.json()["path"]
    page = app_client.get(path + "?lang=fa")
    assert page.status_code == 200 and "anna@example.com" in page.text and 'dir="rtl"' in page.text
    short = app_client.post(path, json={"password": "short"}, headers=_csrf(app_client))
    assert short.status_code == 422 and "at least 10" in short.text
    assert app_client.post(path, json={"password": PASSWORD}).status_code == 403  # no CSRF
    done = app_client.post(path, json={"password": PASSWORD}, headers=_csrf(app_client))
    assert done.status_code == 200 and done.json()["next"] == "/app"
    assert app_client.get("/api/me").json()["user"]["id"] == anna  # signed in
    again = app_client.post(path, json={"password": "yet another secret"},
                            headers=_csrf(app_client))
    assert again.status_code == 404 and again.json()["error"]["code"] == "invitation_invalid"
    gone = app_client.get(path)
    assert gone.status_code == 404 and "Ask your administrator" in gone.text
    with _client(kt) as fresh:
        assert _sign_in(fresh, "anna@example.com", PASSWORD).status_code == 200
    with kt.db.read() as conn:
        hashes = conn.execute(sa.select(kt.storage.sessions.invitations.c.token_hash)).scalars().all()
    assert path.rsplit("/", 1)[1] not in hashes  # stored hashed


def test_an_invitation_expires_and_a_newer_one_replaces_it(kt: Kartoteka,
                                                            app_client: TestClient) -> None:
    _user(kt, password=None)
    _, first, _ = kt.sessions.invite("anna@example.com")
    _, second, expires = kt.sessions.invite("anna@example.com")
    assert app_client.get(f"/app/invite/{first}").status_code == 404
    assert app_client.get(f"/app/invite/{second}").status_code == 200
    assert dt.timedelta(days=6, hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    kt.sessions.clock = lambda: expires + dt.timedelta(seconds=1)
    assert app_client.get(f"/app/invite/{second}").status_code == 404
    assert app_client.post(f"/app/invite/{second}", json={"password": PASSWORD},
                           headers=_csrf(app_client)).status_code == 404
    kt.sessions.clock = lambda: expires - dt.timedelta(hours=1)
    kt.users.disable("anna@example.com")
    assert app_client.get(f"/app/invite/{second}").status_code == 404  # disabled: gone


# -- the command line and the published contract ------------------------------------------------
def test_the_cli_prints_the_invitation_and_sets_a_password(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    schemas = Path(__file__).resolve().parent.parent / "schemas"
    assert runner.invoke(main, ["migrate", str(schemas), "--db", db_url]).exit_code == 0
    added = runner.invoke(main, ["user", "add", "anna@example.com", "--role", "manager",
                                 "--url", "https://crm.example.com/", "--db", db_url])
    assert added.exit_code == 0, added.output
    link, token = added.stdout.strip().splitlines()
    assert token.startswith("kt_")  # the token stays the last line
    assert re.fullmatch(r"https://crm\.example\.com/app/invite/kti_[\w-]{43}", link), link
    invited = runner.invoke(main, ["user", "invite", "anna@example.com", "--db", db_url])
    assert invited.exit_code == 0
    assert invited.stdout.strip().startswith("http://127.0.0.1:8000/app/invite/kti_")
    short = runner.invoke(main, ["user", "password", "anna@example.com", "--db", db_url],
                          input="short\nshort\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    done = runner.invoke(main, ["user", "password", "anna@example.com", "--db", db_url],
                         input="пароль-из-кириллицы\nпароль-из-кириллицы\n")
    assert done.exit_code == 0, done.output
    assert "пароль" not in done.output  # not echoed
    kt = Kartoteka.open(schemas, db_url)
    try:
        with _client(kt) as client:
            assert client.get(link.replace("https://crm.example.com", "")).status_code == 404
            assert client.get(invited.stdout.strip().replace(
                "http://127.0.0.1:8000", "")).status_code == 200
            assert _sign_in(client, "anna@example.com", "пароль-из-кириллицы").status_code == 200
    finally:
        kt.close()


def test_the_password_routes_are_published_and_the_app_routes_are_not(
        app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    assert "/api/users/{id}/password" in paths and "/api/me/password" in paths
    assert "/api/users/{id}/invitation" in paths
    body = paths["/api/me/password"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["old_password", "password"]
    assert not [path for path in paths if path.startswith("/app")]


def test_session_settings_are_checked() -> None:
    from engine.errors import SettingsError
    with pytest.raises(SettingsError, match="idle_hours"):
        SessionSettings(idle_hours=0)


def test_a_crafted_invitation_path_is_text_on_its_page_never_markup(
        kt: Kartoteka, app_client: TestClient) -> None:
    """The invitation page (no sign-in needed) links to itself in each language: a link
    whose path carries markup must not put it on the page (a meta refresh to elsewhere)."""
    kt.users.create({"email": "anna@example.com", "roles": ["manager"]})
    crafted = ('/app/invite/%22%3E%3Cmeta%20http-equiv%3Drefresh%20content%3D%220%3Burl%3D'
               'https%3A%26sol%3B%26sol%3Bevil.example%22%3E')
    page = app_client.get(crafted)
    assert page.status_code == 404
    assert "<meta http-equiv" not in page.text and '"><' not in page.text.split("<nav", 1)[-1]
