"""What a web page must not be able to do with the API: the HTTP guard.

While a database has no users the API is open on loopback, so the threat is a page the
operator visits: it can send "simple" cross-site requests (a form or `text/plain` POST,
which no CORS preflight precedes), and, through DNS rebinding, make its own name resolve
to 127.0.0.1 and call the API as its own origin. Pure-ASGI middleware, outermost first:

    ResponseHeaders  every answer: `X-Content-Type-Options: nosniff`; every `/api` and
                     `/app` page answer (each depends on who asks): `Cache-Control: no-store`
    TrustedHosts     the `Host` header must name this server: loopback names always, plus
                     the configured ones (`*` any, `*.example.com` subdomains) → else 400
                     `host_not_allowed` (a rebound name is refused)
    Cors             only when origins are configured: Starlette's CORSMiddleware with
                     exact origins, its refusals in the API's error shape
    JsonBodies       a POST, PUT or PATCH body must be sent as `application/json` (or
                     `application/…+json`) → else 415 `unsupported_media_type`, on every
                     route, before any route or authentication runs; a bodiless call
                     (`POST /api/users/{id}/tokens`) needs no `Content-Type`. The one
                     exception: a multipart upload to `POST /api/{e}/import` with no
                     `Origin`, or this server's own or a CORS origin (api/uploads.py)
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.responses import json_media_problem, json_response
from api.uploads import is_multipart, is_upload_path, upload_problem
from engine.errors import MalformedRequest, UnsupportedMedia

log = logging.getLogger("kartoteka.api")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = "*"
#: headers on every answer, and those on every answer that depends on who asks
ALWAYS = {"X-Content-Type-Options": "nosniff"}
PRIVATE = {"Cache-Control": "no-store"}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match",
                "X-Confirm-Duplicate")
CORS_EXPOSED = ("ETag", "Location")

#: Host headers whose answer TrustedHosts remembers (more are judged each time)
DECIDED_HOSTS = 256

_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")


def install_guard(app: Starlette, allowed_hosts: Iterable[str] = (),
                  cors_origins: Iterable[str] = ()) -> None:
    """Wrap a Starlette/FastAPI app in the guard (call after its other middleware)."""
    hosts = tuple(normalize_host(h) for h in allowed_hosts)
    origins = tuple(normalize_origin(o) for o in cors_origins)
    app.add_middleware(JsonBodies, origins=origins)  # each one added wraps those before it
    if origins:
        app.add_middleware(Cors, allow_origins=origins, allow_methods=CORS_METHODS,
                           allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED)
    app.add_middleware(TrustedHosts, allowed=hosts)
    app.add_middleware(ResponseHeaders)


def normalize_host(text: str) -> str:
    """A configured host name as it is compared: lower case, IPv6 in brackets; ValueError
    when it is not a bare name (no scheme, port or path)."""
    name = text.strip().lower().removesuffix(".")
    if name == ANY_HOST:
        return name
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if _NAME.match(name):
            return name
        raise ValueError(f"{text!r} is not a host name; give the name alone, without scheme, "
                         "port or path: crm.example.com, 192.168.1.10, *.example.com or *") from None
    return f"[{address}]" if address.version == 6 else str(address)


def normalize_origin(text: str) -> str:
    """A configured CORS origin, `scheme://host[:port]`; ValueError for anything else."""
    value = text.strip().removesuffix("/")
    parts = urlsplit(value)
    if value in ("*", "null") or parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r} is not an origin; give each web app's exact origin, "
                         "scheme://host[:port], e.g. https://app.example.com ('*' is not "
                         "accepted: it would let every web page call the API)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a port that is not a number") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def host_name(header: str) -> str | None:
    """The name a Host header gives, without its port (None when it is not host[:port])."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[:end + 1], value[end + 1:]
        try:
            name = f"[{ipaddress.IPv6Address(name[1:-1])}]"
        except ValueError:
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isascii() and (rest[1:].isdigit() or rest == ":")):
        return None
    return name.removesuffix(".") or None


def is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class ResponseHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = {**ALWAYS, **PRIVATE} if _private(scope["path"]) else ALWAYS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _private(path: str) -> bool:
    """Whether answers at `path` depend on who asks: the API's, and the web app's pages
    (a signed-in user's; not its static files), which no shared cache may keep."""
    path += "/"
    return path.startswith("/api/") or (path.startswith("/app/")
                                        and not path.startswith("/app/static/"))


class TrustedHosts:
    """Answers only requests whose Host names this server (not Starlette's
    TrustedHostMiddleware: its refusal is plain text, and it knows no loopback addresses)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()):
        self.app = app
        names = set(allowed)
        self.any = ANY_HOST in names
        self.exact = {n for n in names if not n.startswith("*.")}
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))
        self.logged: set[str] = set()
        #: Host headers seen and whether they are allowed: a client sends the same one
        #: each time (parsing it and its address took a request's time at every request)
        self.decided: dict[bytes | None, bool] = {}

    def allows(self, name: str) -> bool:
        return (self.any or name in self.exact or is_loopback(name)
                or any(name.endswith(suffix) for suffix in self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for key, value in scope["headers"] if key == b"host"), None)
        allowed = self.decided.get(raw)
        if allowed:
            await self.app(scope, receive, send)
            return
        header = None if raw is None else raw.decode("latin-1")
        name = host_name(header) if header else None
        if allowed is None:
            allowed = name is not None and self.allows(name)
            if len(self.decided) < DECIDED_HOSTS:
                self.decided[raw] = allowed
            if allowed:
                await self.app(scope, receive, send)
                return
        if header is None:
            message = "the request has no Host header; name the server, e.g. Host: localhost"
        else:
            shown = header if len(header) <= 100 else header[:100] + "…"
            message = (f"this server does not answer to the host {shown!r}: only to its loopback "
                       "names and those it is started with (kartoteka serve --allowed-host NAME, "
                       "or KARTOTEKA_ALLOWED_HOSTS)")
            if len(self.logged) < 100 and shown not in self.logged:
                self.logged.add(shown)
                log.warning("refused a request for host %r; if that is a name of this server, "
                            "serve with --allowed-host %s", shown, name or shown)
        error = MalformedRequest(message, code="host_not_allowed")
        await json_response(error.as_json(), 400)(scope, receive, send)


class Cors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the API's error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        what = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-type")}
        error = MalformedRequest(f"this cross-origin request is not allowed ({what}); "
                                 "the server is started with the origins it accepts "
                                 "(--cors-origin, or KARTOTEKA_CORS_ORIGINS)", code="cors_refused")
        return json_response(error.as_json(), 400, headers)


class JsonBodies:
    def __init__(self, app: ASGIApp, origins: tuple[str, ...] = ()):
        self.app = app
        self.origins = origins  # the CORS origins, which may also upload files (api/imports.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = Headers(scope=scope)
            has_body = headers.get("content-length", "0").strip() != "0" \
                or "transfer-encoding" in headers
            content_type = headers.get("content-type")
            upload = is_multipart(content_type) and is_upload_path(scope["path"])
            problem = upload_problem(headers.get("origin"), headers.get("host"), self.origins) \
                if upload else json_media_problem(content_type, has_body)
            if problem:
                error = UnsupportedMedia(problem)
                await json_response(error.as_json(), 415)(scope, receive, send)
                return
        await self.app(scope, receive, send)
