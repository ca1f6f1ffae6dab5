"""The sign-in cookies, read and written in one place.

    kt_session  the session token: HttpOnly (no script reads it), SameSite=Lax (sent when
                the user follows a link here, not with another site's posts), Secure when
                the request came over https
    kt_csrf     the session's CSRF token: readable by the page's script, which sends it back
                in `X-CSRF-Token` (or a form's `csrf_token` field); SameSite=Strict. Before
                sign-in, GET /app/sign-in sets a pre-session one that the sign-in post must
                echo (no other site can make a browser sign in to an account of its choosing)
"""

from __future__ import annotations

import secrets
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

SESSION_COOKIE = "kt_session"
CSRF_COOKIE = "kt_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SIGN_IN_PATH = "/app/sign-in"
HOME = "/app"


def read_cookie(headers: Headers, name: str) -> str | None:
    """A cookie's value from the request's Cookie header(s), or None."""
    for value in headers.getlist("cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value)
        except Exception:  # a malformed Cookie header names no cookie of ours
            continue
        if name in jar and jar[name].value:
            return jar[name].value
    return None


def is_https(scope: Scope) -> bool:
    """Whether the browser reached us over TLS (uvicorn's --proxy-headers set the scheme
    from X-Forwarded-Proto when a trusted proxy terminates TLS)."""
    return scope.get("scheme") in ("https", "wss")


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def _cookie(name: str, value: str, *, http_only: bool, same_site: str, secure: bool,
            max_age: int | None) -> str:
    parts = [f"{name}={value}", "Path=/", f"SameSite={same_site}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def session_cookies(response: Response, token: str, csrf: str, max_age: int, secure: bool) -> None:
    response.headers.append("set-cookie", _cookie(SESSION_COOKIE, token, http_only=True,
                                                  same_site="Lax", secure=secure, max_age=max_age))
    csrf_cookie(response, csrf, secure, max_age)


def csrf_cookie(response: Response, csrf: str, secure: bool, max_age: int | None = None) -> None:
    response.headers.append("set-cookie", _cookie(CSRF_COOKIE, csrf, http_only=False,
                                                  same_site="Strict", secure=secure,
                                                  max_age=max_age))


def clear_cookies(headers: list[tuple[bytes, bytes]] | Response, secure: bool) -> None:
    """Expire both cookies (a signed-out or ended session)."""
    for name, http_only, same_site in ((SESSION_COOKIE, True, "Lax"),
                                       (CSRF_COOKIE, False, "Strict")):
        value = _cookie(name, "", http_only=http_only, same_site=same_site, secure=secure,
                        max_age=0)
        if isinstance(headers, Response):
            headers.headers.append("set-cookie", value)
        else:
            headers.append((b"set-cookie", value.encode("latin-1")))


def safe_next(text: object) -> str:
    """Where to go after signing in: a path on this server, else the app's first page
    (`//evil.example`, `https://…`, `/\\evil` and control characters are refused: no
    open redirect)."""
    if not isinstance(text, str) or not text.startswith("/") or len(text) > 2000:
        return HOME
    if text.startswith(("//", "/\\")) or any(c in text for c in "\\\r\n\t") or not text.isprintable():
        return HOME
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        return HOME
    return text
