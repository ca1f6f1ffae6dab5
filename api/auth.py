"""Authentication for every `/api` call and every `/app` page, as ASGI middleware so no
route can skip it.

While the database has no users the API and the app are open (served on loopback only,
and guarded by `api.guard` against web pages: Host names, JSON-only bodies, CORS). From
the first user on, a call needs `Authorization: Bearer <token>` (API clients) or the
`kt_session` cookie of a signed-in browser (api/signin/); without either, `/api` answers
401 in the API's error shape, and a page of `/app` (GET) redirects to
`/app/sign-in?next=<path>`. `/openapi.json`, `/docs`, `/app/sign-in`, `/app/invite/…` and
`/app/static/…` need neither. The authenticated user is put in `request.state.user` (the
session, if any, in `request.state.session`) and made the engine's acting user
(`Users.acting`, the engine instance's `Acting`) for the whole request, so every engine call
the route makes is scoped to their roles — a page's exactly as an API call's.

CSRF: a cookie is sent by the browser whoever made the page, so every POST, PUT, PATCH or
DELETE authenticated by the cookie must also carry the session's CSRF token (the `kt_csrf`
cookie's value, which only this server's pages can read) in `X-CSRF-Token`, or for a form
post in the field `csrf_token` — else 403 `csrf_failed`, before any route runs. A Bearer
call needs none: no browser adds that header by itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.responses import json_response
from api.signin.cookies import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SIGN_IN_PATH,
    clear_cookies,
    is_https,
    read_cookie,
)
from api.threads import in_thread
from engine.access.sessions import Sessions
from engine.access.users import Users
from engine.errors import Forbidden, Unauthorized

#: `/app` paths anyone may open: signing in, choosing a password, the app's static files
PUBLIC = (SIGN_IN_PATH, "/app/invite/", "/app/static/")
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM = "application/x-www-form-urlencoded"


def is_public(path: str) -> bool:
    return path == SIGN_IN_PATH or path.startswith(PUBLIC[1:])


class Authentication:
    def __init__(self, app: ASGIApp, users: Users, sessions: Sessions | None = None,
                 max_form_bytes: int = 1024 * 1024):
        self.app = app
        self.users = users
        self.sessions = sessions
        self.max_form_bytes = max_form_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        web = (path + "/").startswith("/app/")
        if scope["type"] != "http" or not ((path + "/").startswith("/api/") or web):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["user"] = state["session"] = None
        if self.users.any_users() and not (web and is_public(path)):
            headers = Headers(scope=scope)
            header = headers.get("authorization")
            cookie = read_cookie(headers, SESSION_COOKIE) if self.sessions else None
            try:
                if header is not None or cookie is None or self.sessions is None:
                    state["user"] = self.users.authenticate(header)
                else:
                    # in the pool: a session's last use is written now and then (a write
                    # that may wait for SQLite's lock must not stop the event loop)
                    session = await in_thread(self.sessions.authenticate, cookie)
                    state["user"], state["session"] = session.user, session
            except Unauthorized as error:
                await self.refuse(scope, error, web, cookie is not None and header is None)(
                    scope, receive, send)
                return
            if state["session"] is not None and scope["method"] in CHANGES:
                token, receive = await self.csrf_token(scope, receive)
                if not state["session"].csrf_matches(token):
                    await _csrf_refused()(scope, receive, send)
                    return
        with self.users.acting.as_user(state["user"]):
            await self.app(scope, receive, send)

    def refuse(self, scope: Scope, error: Unauthorized, web: bool, had_cookie: bool) -> Response:
        """A page asked for without a session: to the sign-in page; anything else — a
        change, or a page's script asking for JSON (`Accept: application/json`, as the
        link pickers' lookups do) — 401. An ended session's cookies are cleared."""
        accept = Headers(scope=scope).get("accept") or ""
        if web and scope["method"] in ("GET", "HEAD") and "application/json" not in accept:
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            response = Response(status_code=303, headers={
                "Location": f"{SIGN_IN_PATH}?next={quote(target, safe='/')}"})
        else:
            response = json_response(error.as_json(), 401, {"WWW-Authenticate": "Bearer"})
        if had_cookie:
            clear_cookies(response, is_https(scope))
        return response

    async def csrf_token(self, scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
        """The CSRF token a change sends: its X-CSRF-Token header, or a form post's
        `csrf_token` field (the body read, up to the cap, and handed on unchanged)."""
        headers = Headers(scope=scope)
        sent = headers.get(CSRF_HEADER)
        media = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if sent is not None or media != FORM:
            return sent, receive
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None, receive
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_form_bytes:
                return None, receive
        fields = parse_qs(body.decode("latin-1"), max_num_fields=1000)
        sent_field = fields[CSRF_FIELD][0] if fields.get(CSRF_FIELD) else None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return sent_field, replay


def _csrf_refused() -> Response:
    error = Forbidden("this change needs the CSRF token: send the kt_csrf cookie's value in the "
                      "X-CSRF-Token header (or a form's csrf_token field); API clients send "
                      "a Bearer token instead", code="csrf_failed")
    return json_response(error.as_json(), 403)

