"""One error shape for every error the API produces, pinned here:

    {"error": {"code": "...", "message": "...", "details": [{"field": ..., "problem": ...}]}}

`details` is present when there is something to say per field (400 bad JSON or query,
409, 422) and absent otherwise; nothing else is ever in the body, and no stack trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

JSON = {"Content-Type": "application/json"}
Make = Callable[[TestClient], httpx.Response]


@dataclass(frozen=True)
class Case:
    status: int
    code: str
    make: Make
    details: bool          # details present, with at least one entry
    field: str | None = None   # a field the details must name


def _client(http: TestClient, **values: object) -> int:
    response = http.post("/api/client", json={"name": "Ромашка", **values})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _stale_patch(http: TestClient) -> httpx.Response:
    record_id = _client(http)
    return http.patch(f"/api/client/{record_id}", json={"city": "Kazan"},
                      headers={"If-Match": '"7"'})


def _stale_delete(http: TestClient) -> httpx.Response:
    record_id = _client(http)
    return http.delete(f"/api/client/{record_id}", headers={"If-Match": '"7"'})


def _unique(http: TestClient) -> httpx.Response:
    _client(http, email="a@example.com")
    return http.post("/api/client", json={"name": "Copy", "email": "a@example.com"})


def _restricted(http: TestClient) -> httpx.Response:
    record_id = _client(http)
    assert http.post("/api/sale", json={"number": "S-1", "client": record_id}).status_code == 201
    return http.delete(f"/api/client/{record_id}")


def _missing_link(http: TestClient) -> httpx.Response:
    return http.post("/api/sale", json={"number": "S-1", "client": 999999})


def _raw(method: str, path: str, body: bytes, content_type: str = "application/json") -> Make:
    return lambda http: http.request(method, path, content=body,
                                     headers={"Content-Type": content_type})


CASES: dict[str, Case] = {
    "400-bad-json": Case(400, "malformed_request", _raw("POST", "/api/client", b'{"name": '), True),
    "400-duplicate-key": Case(400, "malformed_request",
                              _raw("POST", "/api/client", b'{"name": "a", "name": "b"}'), False),
    "400-empty-body": Case(400, "malformed_request", _raw("POST", "/api/client", b""), False),
    "400-nan": Case(400, "malformed_request",
                    _raw("POST", "/api/product", b'{"sku": "P", "name": "N", "weight_kg": NaN}'),
                    False),
    "400-not-utf8": Case(400, "malformed_request", _raw("POST", "/api/client", b'{"name": "\xff"}'),
                         False),
    "400-bad-limit": Case(400, "invalid_query", lambda h: h.get("/api/client?limit=100000"), True,
                          "limit"),
    "400-unknown-filter": Case(400, "invalid_query", lambda h: h.get("/api/client?nmae=x"), True,
                               "nmae"),
    "400-unknown-sort": Case(400, "invalid_query", lambda h: h.get("/api/client?sort=nmae"), True,
                             "sort"),
    "400-unknown-operator": Case(400, "invalid_query",
                                 lambda h: h.get("/api/client?name[like]=x"), True, "name[like]"),
    "404-no-record": Case(404, "not_found", lambda h: h.get("/api/client/424242"), False),
    "404-bad-id": Case(404, "not_found", lambda h: h.get("/api/client/abc"), False),
    "404-huge-id": Case(404, "not_found", lambda h: h.get("/api/client/99999999999999999999"),
                        False),
    "404-patch-missing": Case(404, "not_found",
                              lambda h: h.patch("/api/client/424242", json={"name": "x"}), False),
    "404-delete-missing": Case(404, "not_found", lambda h: h.delete("/api/client/424242"), False),
    "404-unknown-entity": Case(404, "not_found", lambda h: h.get("/api/nothing"), False),
    "404-unknown-path": Case(404, "not_found", lambda h: h.get("/nothing/at/all"), False),
    "404-unknown-link": Case(404, "not_found", lambda h: h.get("/api/client/1/nothing"), False),
    "405-put-list": Case(405, "method_not_allowed", lambda h: h.put("/api/client", json={}), False),
    "405-post-record": Case(405, "method_not_allowed",
                            lambda h: h.post("/api/client/1", json={}), False),
    "409-unique": Case(409, "unique_violation", _unique, True, "email"),
    "409-restricted": Case(409, "delete_restricted", _restricted, True, "sale.client"),
    "412-patch": Case(412, "stale_version", _stale_patch, False),
    "412-delete": Case(412, "stale_version", _stale_delete, False),
    "413-body": Case(413, "payload_too_large",
                     _raw("POST", "/api/client", b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'),
                     False),
    "415-text": Case(415, "unsupported_media_type",
                     _raw("POST", "/api/client", b'{"name": "x"}', "text/plain"), False),
    "415-form": Case(415, "unsupported_media_type",
                     _raw("POST", "/api/client", b"name=x", "application/x-www-form-urlencoded"),
                     False),
    "415-no-type": Case(415, "unsupported_media_type",
                        lambda h: h.post("/api/client", content=b'{"name": "x"}'), False),
    "400-host": Case(400, "host_not_allowed",
                     lambda h: h.get("/api/client", headers={"Host": "attacker.example"}), False),
    "422-invalid": Case(422, "validation_failed",
                        lambda h: h.post("/api/sale", json={"number": 5, "amount": "-1"}), True,
                        "number"),
    "422-unknown-field": Case(422, "validation_failed",
                              lambda h: h.post("/api/client", json={"nmae": "x"}), True, "nmae"),
    "422-server-field": Case(422, "validation_failed",
                             lambda h: h.post("/api/client", json={"name": "x", "id": 1}), True,
                             "id"),
    "422-not-object": Case(422, "validation_failed", _raw("POST", "/api/client", b"[1, 2]"), True,
                           ""),
    "422-nul": Case(422, "validation_failed",
                    _raw("POST", "/api/client", b'{"name": "a\\u0000b"}'), True, "name"),
    "422-surrogate": Case(422, "validation_failed",
                          _raw("POST", "/api/client", b'{"name": "\\ud800"}'), True, "name"),
    "422-surrogate-key": Case(422, "validation_failed",
                              _raw("POST", "/api/client", b'{"\\ud800": 1, "name": "x"}'), True),
    "422-missing-link": Case(422, "link_not_found", _missing_link, True, "client"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_shape(client: TestClient, name: str) -> None:
    case = CASES[name]
    response = case.make(client)
    assert response.status_code == case.status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    text = response.text
    for leak in ("Traceback", 'File "', "site-packages", "sqlalchemy", "psycopg", "Error:"):
        assert leak not in text, f"{leak!r} in {text[:300]}"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    expected_keys = ["code", "message", "details"] if case.details else ["code", "message"]
    assert sorted(error) == sorted(expected_keys), error
    assert error["code"] == case.code
    assert isinstance(error["message"], str) and error["message"].strip()
    if case.details:
        details = error["details"]
        assert isinstance(details, list) and details
        for detail in details:
            assert sorted(detail) == ["field", "problem"], detail
            assert isinstance(detail["field"], str)
            assert isinstance(detail["problem"], str) and detail["problem"].strip()
        if case.field is not None:
            assert case.field in [d["field"] for d in details], details


def test_405_says_what_is_allowed(client: TestClient) -> None:
    response = client.put("/api/client", json={})
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


def test_error_messages_echo_odd_input_as_valid_json(client: TestClient) -> None:
    """Input echoed back in an error (unknown keys with lone surrogates, NUL, quotes,
    long text) still gives strict, parseable JSON."""
    for body in (b'{"\\ud800\\u0000\\"": 1}', b'{"' + b"k" * 10_000 + b'": 1}',
                 b'{"</script>": 1}'):
        response = client.post("/api/client", content=body, headers=JSON)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "validation_failed" and error["details"]
    response = client.get("/api/client", params={"sort": "\x00'\"\\"})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "sort"


def test_the_openapi_error_schema_matches(client: TestClient) -> None:
    """What /openapi.json promises for errors is what the handlers send."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["kartoteka.Error"]
    error = schema["properties"]["error"]
    assert set(error["properties"]) == {"code", "message", "details"}
    assert set(error["required"]) == {"code", "message"}
    assert set(error["properties"]["details"]["items"]["required"]) == {"field", "problem"}
