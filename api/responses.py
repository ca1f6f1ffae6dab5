"""JSON in and out: fast encoding, strict decoding, a capped body."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import ErrorDetail, MalformedRequest, NotFound, PayloadTooLarge, UnsupportedMedia

if TYPE_CHECKING:
    from engine.core import Kartoteka

JSON_TYPE = "application/json"


def engine_of(request: Request) -> Kartoteka:
    """The engine serving this request. A setup's generated routes are shared by every app
    built over it (api.app `_generated`), so their handlers find the engine on the app
    serving the request, never in a closure."""
    kt: Kartoteka = request.app.state.kartoteka
    return kt


#: the largest id a row can have (a signed 64-bit integer)
MAX_ID = 2**63 - 1


def path_id(request: Request, key: str, what: str) -> int:
    """The id a path names (`/api/users/{id}`): digits naming a row that can exist, else
    404 `no <what> with id '…'` — never a number the database cannot compare."""
    text = request.path_params[key]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_ID:
        raise NotFound(f"no {what} with id {text!r}")
    return int(text)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    try:
        body = orjson.dumps(content)
    except orjson.JSONEncodeError as error:
        if "surrogates" not in str(error):
            raise
        # text a client sent with lone surrogates, echoed in an error message: escape it
        body = json.dumps(content, ensure_ascii=True).encode()
    return Response(body, status_code=status, headers=headers, media_type=JSON_TYPE)


def json_media_problem(content_type: str | None, has_body: bool) -> str | None:
    """Why a request body with this Content-Type is refused, or None: JSON is
    `application/json` or `application/…+json`, parameters (`; charset=utf-8`) aside. A body
    without a Content-Type is refused too: a web page can send one cross-site with no
    CORS preflight, as it can `text/plain` and form types."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not media:
        return ("the body has no Content-Type; send it with Content-Type: application/json"
                if has_body else None)
    if media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json")):
        return None
    shown = media if len(media) <= 100 else media[:100] + "…"
    return f"the body is sent as {shown}; send JSON with Content-Type: application/json"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} is given twice")
        result[key] = value
    return result


def _number(text: str) -> Decimal | int:
    """A JSON number written with a fraction or an exponent: an exact Decimal — or, when
    its value is whole (`3011.0`, `1e3`), the integer, as JSON Schema counts it (an id or an
    integer field takes it; a decimal field takes either)."""
    value = Decimal(text)
    if value.is_finite() and value == value.to_integral_value() and value.adjusted() < 20:
        return int(value)
    return value


async def read_json(request: Request, cap: int) -> Any:
    """The request body as JSON; numbers with a fraction become exact Decimals (whole ones,
    integers)."""
    content_type = request.headers.get("content-type")
    problem = json_media_problem(content_type, has_body=False)
    if problem:
        raise UnsupportedMedia(problem)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"the body is larger than {cap} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            raise PayloadTooLarge(f"the body is larger than {cap} bytes")
    if not data.strip():
        raise MalformedRequest("the body is empty; send a JSON object")
    problem = json_media_problem(content_type, has_body=True)
    if problem:
        raise UnsupportedMedia(problem)
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except UnicodeDecodeError:
        raise MalformedRequest("the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise MalformedRequest(
            f"the body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
            [ErrorDetail("", error.msg)]) from None
    except (ValueError, RecursionError) as error:
        message = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise MalformedRequest(f"the body is not acceptable JSON: {message}") from None


#: json.loads with these settings makes its decoder anew at every call
_DECODER = json.JSONDecoder(parse_float=_number, parse_constant=_no_constants,
                            object_pairs_hook=_unique_keys)


def no_query(request: Request) -> None:
    """Refuse query parameters on a call that takes none: a typo must not pass unseen."""
    problems = [ErrorDetail(key, "is not a parameter of this call; it takes none")
                for key, _ in request.query_params.multi_items()]
    if problems:
        raise MalformedRequest("unknown query parameters", problems, code="invalid_query")
