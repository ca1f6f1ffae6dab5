"""One error shape for the whole HTTP API:

    {"error": {"code": "validation_failed", "message": "...",
               "details": [{"field": "amount", "problem": "must be at least 0"}]}}

Engine errors map to statuses here; anything unexpected becomes a 500 with no stack trace
in the body (the trace goes to the server log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from api.guard import ALWAYS, PRIVATE
from api.language import pick_language
from api.responses import json_response
from engine.errors import (
    Conflict,
    Forbidden,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RuleFailed,
    StaleVersion,
    TooManyRequests,
    Unauthorized,
    UnsupportedMedia,
    ValidationFailed,
)

log = logging.getLogger("kartoteka.api")

STATUS: dict[type[RequestError], int] = {
    MalformedRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    StaleVersion: 412,
    PayloadTooLarge: 413,
    UnsupportedMedia: 415,
    ValidationFailed: 422,
    TooManyRequests: 429,
}

_HTTP_CODES = {
    400: "malformed_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
    415: "unsupported_media_type",
}


async def refuse_method(request: Request) -> Response:
    """The endpoint of a fixed path's other methods (`/api/sale/board` has GET only): 405,
    rather than the `/{id}` route beside it taking `board` for an id and answering 404."""
    raise StarletteHTTPException(405)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path (each method is its own route); on a
    fixed path (`/board`), only its own routes', not those of `/{id}` beside it."""
    matched = [route for route in request.app.router.routes
               if route.matches(request.scope)[0] != Match.NONE]
    fixed = [route for route in matched if "{" not in getattr(route, "path", "{")]
    methods: set[str] = set()
    for route in fixed or matched:
        if getattr(route, "endpoint", None) is not refuse_method:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def status_of(error: RequestError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> Response:
        if isinstance(error, RuleFailed):  # the rules' messages in the caller's language
            language = pick_language(request.headers.get("accept-language"), error.languages)
            return json_response(error.as_json(language), status_of(error))
        if isinstance(error, TooManyRequests):
            return json_response(error.as_json(), 429, {"Retry-After": str(error.retry_after)})
        return json_response(error.as_json(), status_of(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        message = str(error.detail) if error.detail else code.replace("_", " ")
        headers = dict(error.headers or {})
        if error.status_code == 404:
            message = "no such endpoint; see /docs for the API"
        elif error.status_code == 405:
            allowed = _allowed_methods(request)
            message = "this endpoint supports " + ", ".join(allowed)
            headers["Allow"] = ", ".join(allowed)
        return json_response(error_body(code, message), error.status_code, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> Response:
        details = [{"field": ".".join(str(p) for p in e.get("loc", ())[1:]),
                    "problem": str(e.get("msg", ""))} for e in error.errors()]
        return json_response(error_body("malformed_request", "the request is not valid", details), 400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # answered outside every middleware (Starlette's ServerErrorMiddleware): the guard's
        # headers are added here
        return json_response(error_body("internal_error",
                                        "the server failed to handle this request; it is logged"),
                             500, {**ALWAYS, **PRIVATE})
