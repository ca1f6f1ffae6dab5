"""Bad input, every kind: each is answered with its 4xx JSON error — never a 500 — and the
database is left exactly as it was (checked with a list before and after).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETUP = ROOT / "schemas"
JSON = {"Content-Type": "application/json"}

ITEM = """
entity: item
title: "{s}"
search: [s]
fields:
  s:     {type: string, max_length: 10}
  t:     {type: text}
  i:     {type: integer}
  d:     {type: decimal, digits: 18, places: 6}
  m:     {type: money}
  b:     {type: boolean}
  day:   {type: date}
  at:    {type: datetime}
  mail:  {type: email}
  tel:   {type: phone}
  web:   {type: url}
  color: {type: choice, options: [red, green, blue]}
  tags:  {type: multichoice, options: [alpha, beta, gamma]}
  data:  {type: json}
"""

GOOD_ITEM = {"s": "ok", "t": "text", "i": 1, "d": "1.5", "m": "2.50", "b": True,
             "day": "2024-02-29", "at": "2024-03-20T12:00:00+03:30", "mail": "a@example.com",
             "tel": "+7 495 123 45 67", "web": "https://example.com", "color": "red",
             "tags": ["beta"], "data": {"k": 1}}


@pytest.fixture
def kt_all(make_kt: Callable[..., Kartoteka],
           write_setup: Callable[[dict[str, str]], Path]) -> Kartoteka:
    """The default setup plus an entity with one field of every type."""
    files = {p.name: p.read_text(encoding="utf-8") for p in DEFAULT_SETUP.glob("*.yaml")}
    return make_kt(write_setup({**files, "item.yaml": ITEM}))


@pytest.fixture
def http(kt_all: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt_all), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


# -- helpers ---------------------------------------------------------------------------------

def refused(response: httpx.Response, status: int, code: str | None = None,
            fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check an error answer: status, JSON shape, code, and the fields named in details."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "Traceback" not in response.text
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    details = error.get("details", [])
    assert isinstance(details, list)
    for detail in details:
        assert set(detail) == {"field", "problem"}, detail
        assert isinstance(detail["field"], str) and isinstance(detail["problem"], str)
        assert detail["problem"]
    if code is not None:
        assert error["code"] == code, error
    named = {d["field"] for d in details}
    assert set(fields) <= named, f"expected {fields} named in {details}"
    return error  # type: ignore[no-any-return]


def problem_of(error: dict[str, Any], field: str) -> str:
    return next(d["problem"] for d in error["details"] if d["field"] == field)


def snapshot(http: TestClient, *entities: str) -> dict[str, Any]:
    """Every record of the entities, to compare before and after a refused request."""
    state: dict[str, Any] = {}
    for entity in entities:
        page = http.get(f"/api/{entity}", params={"limit": "500"})
        assert page.status_code == 200, page.text
        state[entity] = page.json()
    return state


def post_raw(http: TestClient, path: str, body: bytes | str, headers: dict[str, str] | None = None,
             method: str = "POST") -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return http.request(method, path, content=content, headers=JSON if headers is None else headers)


def make_client(http: TestClient, **values: Any) -> dict[str, Any]:
    created = http.post("/api/client", json={"name": "Ромашка", **values})
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def make_sale(http: TestClient, client_id: int, number: str, **values: Any) -> dict[str, Any]:
    created = http.post("/api/sale", json={"number": number, "client": client_id, **values})
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


# -- wrong values, per field type ---------------------------------------------------------------

WRONG: dict[str, list[str]] = {
    "s": ["5", "true", "[]", "{}", '"aaaaaaaaaaa"', '"' + "😀" * 11 + '"',
          '"a\\u0000b"', '"\\ud800"', '"x\\udfff"'],
    "t": ["5", '["a"]', '"\\u0000"', '"x\\ud83d"', "false"],
    "i": ['"5"', "1.5", "true", "9223372036854775808", "-9223372036854775809",
          "99999999999999999999999", "1e400", '"abc"', "[1]"],
    "d": ["true", '"abc"', '"1e5"', '"1.2.3"', "[]", '"NaN"', '"Infinity"', '"-Infinity"',
          '"1.1234567"', "1.1234567", '"1234567890123.0"', "1234567890123", '"0x10"', '""',
          '" "', "1e-400", "1e400", '"1' + "0" * 40 + '"', "-1" + "0" * 40],
    "m": ['"0.001"', "0.001", '"12,50"', '"$5"', '"1 000"', "10000000000000000.00", "1e30",
          "true"],
    "b": ['"true"', "1", "0", '"yes"', "[]"],
    "day": ['"2024-02-30"', '"2023-02-29"', '"24-01-01"', '"2024-1-1"', "20240101",
            '"2024-01-01T00:00:00Z"', '"0000-01-01"', '"2024-02-29 "', '"tomorrow"'],
    "at": ['"2024-01-01T10:00:00"', '"2024-01-01"', "1700000000", '"2024-13-01T00:00:00Z"',
           '"2024-01-01T25:00:00Z"', '"2024-01-01T10:00:00+24:00"', '"yesterday"',
           '"9999-12-31T23:00:00-05:00"', '"0001-01-01T00:00:00+03:00"'],
    "mail": ['"no-at-sign"', '"a@b"', "5", '"a b@c.d"', '"a@b.c\\u0000"', '"a@b.c\\ud800"'],
    "tel": ['"abc"', '"12"', "12345", '"+7 495 CALL NOW"'],
    "web": ['"example.com"', '"javascript:alert(1)"', '"http://"', "5",
            '"https://exa mple.com"', '"file:///etc/passwd"'],
    "color": ['"purple"', "1", '["red"]', '"RED"', '"red\\u0000"'],
    "tags": ['"alpha"', '["alpha", "alpha"]', '["delta"]', "[1]", "[null]", '{"alpha": true}'],
    "data": ["1e400", '{"a": -1e400}', '"\\u0000"', '{"\\u0000": 1}', '{"k": "\\ud800"}',
             '{"\\udc00": 1}', "[" * 40 + "]" * 40],
}


@pytest.mark.parametrize("field", list(WRONG))
def test_wrong_values_refused_on_create_and_patch(http: TestClient, field: str) -> None:
    existing = http.post("/api/item", json=GOOD_ITEM)
    assert existing.status_code == 201, existing.text
    url = f"/api/item/{existing.json()['id']}"
    before = snapshot(http, "item")
    wrong: list[str] = []
    for value in WRONG[field]:
        for method, path in (("POST", "/api/item"), ("PATCH", url)):
            response = post_raw(http, path, f'{{"{field}": {value}}}', method=method)
            if response.status_code != 422:
                wrong.append(f"{method} {value[:60]}: {response.status_code} {response.text[:200]}")
                continue
            error = refused(response, 422, "validation_failed")
            named = [d["field"] for d in error["details"]]
            assert any(n == field or n.startswith((field + "[", field + ".")) for n in named), \
                (value, named)
            if field == "s" and "aaaa" in value:
                assert "10" in problem_of(error, field)
    after = snapshot(http, "item")
    assert not wrong, "\n".join(wrong)
    assert after == before


def test_a_body_with_a_byte_order_mark_is_refused_as_json_loads_refuses_it(
        http: TestClient) -> None:
    before = snapshot(http, "item")
    error = refused(post_raw(http, "/api/item", "\ufeff" + json.dumps(GOOD_ITEM)), 400,
                    "malformed_request")
    assert "BOM" in error["message"]
    assert snapshot(http, "item") == before


def test_nan_and_infinity_tokens_are_not_json(http: TestClient) -> None:
    before = snapshot(http, "item")
    for token in ("NaN", "Infinity", "-Infinity"):
        for field in ("d", "m", "i", "data"):
            refused(post_raw(http, "/api/item", f'{{"{field}": {token}}}'), 400,
                    "malformed_request")
        refused(post_raw(http, "/api/item", f'{{"data": {{"x": [{token}]}}}}'), 400)
    assert snapshot(http, "item") == before


# -- fields that are not there, or not the client's to write --------------------------------------

def test_unknown_fields_named_with_did_you_mean(http: TestClient) -> None:
    existing = make_client(http)
    before = snapshot(http, "client")
    error = refused(http.post("/api/client", json={"nmae": "x", "emial": "a@b.cd",
                                                   "zzzzzz": 1}),
                    422, "validation_failed", ("nmae", "emial", "zzzzzz"))
    assert "did you mean 'name'" in problem_of(error, "nmae")
    assert "did you mean 'email'" in problem_of(error, "emial")
    error = refused(http.patch(f"/api/client/{existing['id']}", json={"citty": "Kazan"}),
                    422, "validation_failed", ("citty",))
    assert "did you mean 'city'" in problem_of(error, "citty")
    # an unknown key is refused even beside valid ones: nothing is half-applied
    refused(http.patch(f"/api/client/{existing['id']}", json={"city": "Kazan", "cty": "x"}),
            422, fields=("cty",))
    assert snapshot(http, "client") == before


def test_server_managed_fields_refused(http: TestClient) -> None:
    customer = make_client(http)
    sale = make_sale(http, customer["id"], "S-1")
    before = snapshot(http, "client", "sale")
    managed = {"id": 99, "version": 7, "created_at": "2020-01-01T00:00:00Z",
               "updated_at": "2020-01-01T00:00:00Z"}
    error = refused(http.post("/api/client", json={"name": "x", **managed}), 422,
                    "validation_failed", tuple(managed))
    assert all("server" in problem_of(error, key) for key in managed)
    refused(http.patch(f"/api/client/{customer['id']}", json={"name": "y", **managed}), 422,
            fields=tuple(managed))
    # owner may be given (roles decide who may), but only as an active user's id
    for owner in (1, -1, "me", 2**63):
        refused(http.post("/api/client", json={"name": "x", "owner": owner}), 422,
                fields=("owner",))
        refused(http.patch(f"/api/client/{customer['id']}", json={"owner": owner}), 422,
                fields=("owner",))
    error = refused(http.post("/api/sale", json={"number": "S-2", "client": customer["id"],
                                                 "stage": "won"}), 422, fields=("stage",))
    assert "stage" in problem_of(error, "stage")
    refused(http.patch(f"/api/sale/{sale['id']}", json={"stage": "won"}), 422, fields=("stage",))
    # a value equal to the current one is still refused, not silently ignored
    refused(http.patch(f"/api/sale/{sale['id']}", json={"version": sale["version"]}), 422,
            fields=("version",))
    assert snapshot(http, "client", "sale") == before


def test_missing_required_fields_all_named(http: TestClient) -> None:
    before = snapshot(http, "sale", "product")
    error = refused(http.post("/api/sale", json={}), 422, "validation_failed", ("number", "client"))
    assert all(problem_of(error, f) for f in ("number", "client"))
    refused(http.post("/api/product", json={"unit": "kg"}), 422, fields=("sku", "name"))
    # required fields cannot be cleared either
    product = http.post("/api/product", json={"sku": "P-1", "name": "Болт"}).json()
    before = snapshot(http, "sale", "product")
    refused(http.patch(f"/api/product/{product['id']}", json={"sku": None, "name": None}), 422,
            fields=("sku", "name"))
    assert snapshot(http, "sale", "product") == before


def test_links_to_missing_records_named(http: TestClient) -> None:
    customer = make_client(http)
    sale = make_sale(http, customer["id"], "S-1")
    before = snapshot(http, "sale", "document", "task")
    error = refused(http.post("/api/sale", json={"number": "S-2", "client": 999999}), 422,
                    "link_not_found", ("client",))
    assert "999999" in problem_of(error, "client")
    error = refused(http.post("/api/sale", json={"number": "S-2", "client": customer["id"],
                                                 "products": [999998, 999999]}),
                    422, "link_not_found", ("products",))
    assert "999998" in problem_of(error, "products")
    refused(http.patch(f"/api/sale/{sale['id']}", json={"client": 424242}), 422,
            "link_not_found", ("client",))
    refused(http.post("/api/document", json={"kind": "invoice",
                                             "about": {"entity": "client", "id": 999}}),
            422, "link_not_found", ("about",))
    # ids that are not ids at all
    for bad in (0, -1, 2**63, "1", 1.5, True, [1]):
        refused(http.post("/api/sale", json={"number": "S-3", "client": bad}), 422,
                fields=("client",))
    assert snapshot(http, "sale", "document", "task") == before


def test_polymorphic_link_to_entity_not_in_its_list(http: TestClient) -> None:
    customer = make_client(http)
    task = http.post("/api/task", json={"subject": "Call"}).json()
    before = snapshot(http, "document", "task")
    # a document may belong to a client, sale, supplier, logistics or product — not a task
    error = refused(http.post("/api/document", json={"kind": "act",
                                                     "about": {"entity": "task", "id": task["id"]}}),
                    422, "validation_failed", ("about.entity",))
    assert "client" in problem_of(error, "about.entity")
    for about in ({"entity": "nothing", "id": 1}, {"entity": "client"}, {"id": customer["id"]},
                  {"entity": "client", "id": customer["id"], "extra": 1}, "client:1",
                  customer["id"]):
        response = http.post("/api/document", json={"kind": "act", "about": about})
        error = refused(response, 422)
        assert any(d["field"].startswith("about") for d in error["details"]), error
    refused(http.patch(f"/api/task/{task['id']}", json={"about": {"entity": "task", "id": 1}}),
            422)
    assert snapshot(http, "document", "task") == before


# -- bodies that are not JSON objects -------------------------------------------------------------

def test_malformed_bodies(http: TestClient) -> None:
    existing = make_client(http)
    url = f"/api/client/{existing['id']}"
    before = snapshot(http, "client")
    for method, path in (("POST", "/api/client"), ("PATCH", url)):
        for body in (b'{"name": ', b"{name: 'x'}", b'{"name": "x",}', b"\xff\xfe{}",
                     b'{"name": "x"} trailing', b'{"name": "\\x"}'):
            refused(post_raw(http, path, body, method=method), 400, "malformed_request")
        # the same key twice: which one wins would be a guess
        error = refused(post_raw(http, path, b'{"name": "a", "name": "b"}', method=method), 400,
                        "malformed_request")
        assert "name" in error["message"]
        refused(post_raw(http, path, b'{"name": "a", "data": {"k": 1, "k": 2}}', method=method),
                400)
        # empty
        for empty in (b"", b"   \n"):
            refused(post_raw(http, path, empty, method=method), 400, "malformed_request")
        # JSON, but not an object
        for not_object in (b"[]", b'[{"name": "x"}]', b'"name"', b"42", b"null", b"true"):
            refused(post_raw(http, path, not_object, method=method), 422, "validation_failed",
                    ("",))
    assert snapshot(http, "client") == before


def test_wrong_content_type(http: TestClient) -> None:
    existing = make_client(http)
    before = snapshot(http, "client")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/html",
                         "multipart/form-data; boundary=x", "application/xml"):
        headers = {"Content-Type": content_type}
        refused(post_raw(http, "/api/client", '{"name": "x"}', headers), 415,
                "unsupported_media_type")
        refused(post_raw(http, f"/api/client/{existing['id']}", '{"name": "x"}', headers,
                         method="PATCH"), 415, "unsupported_media_type")
    assert snapshot(http, "client") == before


def test_body_over_the_cap(http: TestClient) -> None:
    existing = make_client(http)
    before = snapshot(http, "client")
    huge = b'{"name": "x", "notes": "' + b"a" * (12 * 1024 * 1024) + b'"}'
    refused(post_raw(http, "/api/client", huge), 413, "payload_too_large")
    refused(post_raw(http, f"/api/client/{existing['id']}", huge, method="PATCH"), 413,
            "payload_too_large")

    # without Content-Length (chunked): the cap holds while reading
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "x", "notes": "'
        for _ in range(12):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    refused(http.post("/api/client", content=chunks(), headers=JSON), 413, "payload_too_large")
    # just under the cap is fine: the cap is on bytes, not on anything else
    text = "a" * (1024 * 1024 - 100)
    assert http.post("/api/client", json={"name": "big", "notes": text}).status_code == 201
    after = snapshot(http, "client")
    assert after["client"]["total"] == before["client"]["total"] + 1


# -- list parameters --------------------------------------------------------------------------

def test_paging_parameters_refused(http: TestClient) -> None:
    make_client(http)
    for params, field in (({"limit": "100000"}, "limit"), ({"limit": "501"}, "limit"),
                          ({"limit": "0"}, "limit"), ({"limit": "-1"}, "limit"),
                          ({"limit": "abc"}, "limit"), ({"limit": "1.5"}, "limit"),
                          ({"limit": ""}, "limit"), ({"offset": "-1"}, "offset"),
                          ({"offset": "x"}, "offset"), ({"limit": "99999999999999999999"}, "limit"),
                          ({"total": "maybe"}, "total"), ({"cursor": "not-a-cursor"}, "cursor")):
        refused(http.get("/api/client", params=params), 400, "invalid_query", (field,))
    refused(http.get("/api/client?limit=1&limit=2"), 400, fields=("limit",))
    assert http.get("/api/client", params={"limit": "500"}).status_code == 200


def test_unknown_sort_and_filter_fields_refused(http: TestClient) -> None:
    make_client(http, city="Kazan")
    cases = [
        ({"sort": "nmae"}, "sort", "nmae"),
        ({"sort": "-name,citty"}, "sort", "citty"),
        ({"sort": "name;DROP TABLE client"}, "sort", "DROP"),
        ({"sort": "segments"}, "sort", "segments"),            # multichoice: not sortable
        ({"nmae": "x"}, "nmae", "nmae"),
        ({"citty[eq]": "Kazan"}, "citty[eq]", "citty"),
        ({"sales.nubmer": "S-1"}, "sales.nubmer", "nubmer"),
        ({"nothing.name": "x"}, "nothing.name", "nothing"),
        ({"Name": "x"}, "Name", ""),
        ({"name[like]": "x"}, "name[like]", "like"),
        ({"name[]": "x"}, "name[]", ""),
        ({"name[eq": "x"}, "name[eq", ""),
        ({"name[gt][lt]": "x"}, "name[gt][lt]", ""),
        ({"segments[gt]": "vip"}, "segments[gt]", "gt"),        # operator not for this type
        ({"name[isnull]": "perhaps"}, "name[isnull]", ""),
        ({"include": "salez"}, "include", "salez"),
    ]
    for params, field, named in cases:
        error = refused(http.get("/api/client", params=params), 400, "invalid_query", (field,))
        assert named in problem_of(error, field), (params, error)
    error = refused(http.get("/api/client", params={"sort": "nmae"}), 400)
    assert "did you mean 'name'" in problem_of(error, "sort")
    error = refused(http.get("/api/client", params={"name[startwith]": "x"}), 400)
    assert "startswith" in problem_of(error, "name[startwith]")
    # every bad parameter is named at once
    error = refused(http.get("/api/client", params={"sort": "zz", "yy": "1", "limit": "0"}), 400)
    assert {d["field"] for d in error["details"]} >= {"sort", "yy", "limit"}


def test_single_get_parameters_refused(http: TestClient) -> None:
    customer = make_client(http)
    url = f"/api/client/{customer['id']}"
    # a single GET takes include only, and only the entity's links
    refused(http.get(url, params={"sort": "name"}), 400, "invalid_query", ("sort",))
    error = refused(http.get(url, params={"include": "nothing"}), 400, "invalid_query",
                    ("include",))
    assert "nothing" in problem_of(error, "include")
    sale = make_sale(http, customer["id"], "S-1")
    error = refused(http.get(f"/api/sale/{sale['id']}", params={"include": "client,clinet"}),
                    400, "invalid_query", ("include",))
    assert "did you mean 'client'" in problem_of(error, "include")


def test_filter_values_of_the_wrong_type_refused(http: TestClient) -> None:
    wrong: list[str] = []
    for params in ({"i": "abc"}, {"i": "1.5"}, {"i": "9223372036854775808"},
                   {"d[gt]": "1e5"}, {"d": "NaN"}, {"m[lt]": "1,5"}, {"b": "maybe"},
                   {"day": "2024-02-30"}, {"at[gt]": "2024-01-01T10:00:00"},
                   {"at": "9999-12-31T23:00:00-05:00"}, {"color": "purple"},
                   {"tags[contains]": "delta"}, {"s": "a\x00b"}, {"i[in]": "1,x"},
                   {"id": "abc"}, {"id": "1.0"}):
        response = http.get("/api/item", params=params)
        if response.status_code != 400:
            wrong.append(f"{params}: {response.status_code} {response.text[:200]}")
            continue
        refused(response, 400, "invalid_query", (next(iter(params)),))
    # numbers past what the field stores are still numbers: compared (nothing matches) or
    # refused, never a 500
    for params in ({"d[lt]": "1" + "0" * 40}, {"m[gt]": "-1" + "0" * 40}, {"i[lt]": "1" + "0" * 30}):
        response = http.get("/api/item", params=params)
        if response.status_code == 200:
            assert response.json()["items"] == []
        elif response.status_code != 400:
            wrong.append(f"{params}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_sql_metacharacters_are_plain_data(http: TestClient) -> None:
    names = ["'; DROP TABLE client; --", "100%", "a_b", "back\\slash", "plain ab",
             'quote"d', "slash/ed", "x' OR '1'='1"]
    ids = {name: make_client(http, name=name)["id"] for name in names}
    for name in names:
        found = http.get("/api/client", params={"name": name}).json()
        assert [r["id"] for r in found["items"]] == [ids[name]], name
    for op, value, expected in (("contains", "%", ["100%"]), ("contains", "_", ["a_b"]),
                                ("startswith", "back\\", ["back\\slash"]),
                                ("contains", "\\", ["back\\slash"]),
                                ("contains", "/", ["slash/ed"]),
                                ("contains", "'", ["'; DROP TABLE client; --", "x' OR '1'='1"]),
                                ("startswith", "%", []), ("startswith", "_", []),
                                ("contains", "--", ["'; DROP TABLE client; --"])):
        found = http.get("/api/client", params={f"name[{op}]": value, "sort": "id"}).json()
        assert sorted(r["name"] for r in found["items"]) == sorted(expected), (op, value)
    for query, expected in (("%", ["100%"]), ("_", ["a_b"]), ("\\", ["back\\slash"]),
                            ("drop table", ["'; DROP TABLE client; --"])):
        found = http.get("/api/client", params={"q": query}).json()
        assert [r["name"] for r in found["items"]] == expected, query
    found = http.get("/api/client", params={"name[in]": "100%,a_b,nobody"}).json()
    assert sorted(r["name"] for r in found["items"]) == ["100%", "a_b"]
    # through a link too
    make_sale(http, ids["'; DROP TABLE client; --"], "S-1")
    found = http.get("/api/sale", params={"client.name": "'; DROP TABLE client; --"}).json()
    assert [r["number"] for r in found["items"]] == ["S-1"]
    # the table is still there, with every record
    listed = http.get("/api/client", params={"limit": "500"}).json()
    assert listed["total"] == len(names)
    assert sorted(r["name"] for r in listed["items"]) == sorted(names)


def test_search_with_nul_or_odd_text_is_not_a_500(http: TestClient) -> None:
    make_client(http, name="Ромашка")
    for query in ("\x00", "a\x00b"):
        response = http.get("/api/client", params={"q": query})
        if response.status_code == 200:
            assert response.json()["items"] == []
        else:
            refused(response, 400, "invalid_query", ("q",))
    refused(http.get("/api/client", params={"q": "x" * 201}), 400, fields=("q",))


# -- paths and methods ---------------------------------------------------------------------------

def test_bad_ids_in_paths_are_404(http: TestClient) -> None:
    customer = make_client(http)
    before = snapshot(http, "client")
    for bad in ("abc", "99999999999999999999", "9223372036854775808", "0", "-1", "1.5", "1e3",
                "%F0%9F%98%80", "%00", "１", " 1", "0x1", str(customer["id"] + 1000)):
        for method in ("GET", "PATCH", "DELETE"):
            kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
            refused(http.request(method, f"/api/client/{bad}", **kwargs), 404, "not_found")
        refused(http.get(f"/api/client/{bad}/sales"), 404, "not_found")
        refused(http.put(f"/api/sale/{bad}/products/1"), 404, "not_found")
    assert snapshot(http, "client") == before


def test_unknown_entity_and_wrong_method(http: TestClient) -> None:
    customer = make_client(http)
    before = snapshot(http, "client")
    for path in ("/api/nothing", "/api/nothing/1", "/api/clients", "/api/client/1/nothing",
                 "/api/Client", "/nothing", "/api/client/1/sales/1/x"):
        refused(http.get(path), 404, "not_found")
        refused(http.post(path, json={}), 404, "not_found")
    for method, path in (("PUT", "/api/client"), ("DELETE", "/api/client"),
                         ("PATCH", "/api/client"), ("POST", f"/api/client/{customer['id']}"),
                         ("PUT", f"/api/client/{customer['id']}"),
                         ("POST", f"/api/client/{customer['id']}/sales")):
        response = http.request(method, path, json={"name": "x"})
        refused(response, 405, "method_not_allowed")
        assert response.headers.get("allow"), "405 must say which methods are allowed"
    assert snapshot(http, "client") == before


# -- versions, conflicts ------------------------------------------------------------------------

def test_if_match_on_patch_and_delete(http: TestClient) -> None:
    customer = make_client(http, city="Kazan")
    url = f"/api/client/{customer['id']}"
    second = http.patch(url, json={"city": "Perm"})
    assert second.json()["version"] == 2
    current = http.get(url)
    for malformed in ("W/\"1\"", "1", '"1', "abc"):
        refused(http.patch(url, json={"city": "Omsk"}, headers={"If-Match": malformed}),
                400, "invalid_header")
        assert http.get(url).json() == current.json()
    for stale in ('"1"', '"0"', '"3"', '"abc"'):
        error = refused(http.patch(url, json={"city": "Omsk"}, headers={"If-Match": stale}),
                        412, "stale_version")
        assert error["message"]
        assert http.get(url).json() == current.json()
    for stale in ('"1"', '"99"'):
        refused(http.delete(url, headers={"If-Match": stale}), 412, "stale_version")
        assert http.get(url).status_code == 200
    fresh = http.patch(url, json={"city": "Omsk"}, headers={"If-Match": current.headers["etag"]})
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["version"] == 3 and fresh.json()["city"] == "Omsk"
    assert fresh.headers["etag"] == '"3"'
    # the If-Match is checked before the body: a stale patch with bad values is still 412
    refused(http.patch(url, json={"city": "x"}, headers={"If-Match": '"2"'}), 412)
    deleted = http.delete(url, headers={"If-Match": fresh.headers["etag"]})
    assert deleted.status_code == 204
    refused(http.get(url), 404, "not_found")


def test_unique_violation_on_create_and_patch(http: TestClient) -> None:
    first = make_client(http, email="boss@romashka.ru", inn="1234567890")
    second = make_client(http, email="other@romashka.ru")
    before = snapshot(http, "client")
    error = refused(http.post("/api/client", json={"name": "Copy", "email": "boss@romashka.ru"}),
                    409, "unique_violation", ("email",))
    assert "email" in error["message"]
    refused(http.post("/api/client", json={"name": "Copy", "inn": "1234567890"}), 409,
            "unique_violation", ("inn",))
    refused(http.patch(f"/api/client/{second['id']}", json={"email": "boss@romashka.ru"}), 409,
            "unique_violation", ("email",))
    refused(http.patch(f"/api/client/{second['id']}",
                       json={"city": "Kazan", "inn": "1234567890"}), 409, fields=("inn",))
    assert snapshot(http, "client") == before
    # the same value on its own record is no conflict
    same = http.patch(f"/api/client/{first['id']}", json={"email": "boss@romashka.ru"})
    assert same.status_code == 200 and same.json()["version"] == first["version"]
    # a unique value on another entity is refused there too
    http.post("/api/product", json={"sku": "P-1", "name": "Болт"})
    refused(http.post("/api/product", json={"sku": "P-1", "name": "Гайка"}), 409,
            "unique_violation", ("sku",))


def test_delete_restricted_by_links(http: TestClient) -> None:
    customer = make_client(http)
    lone = make_client(http, name="Лютик")
    make_sale(http, customer["id"], "S-1")
    product = http.post("/api/product", json={"sku": "P-1", "name": "Болт"}).json()
    make_sale(http, customer["id"], "S-2", products=[product["id"]])
    before = snapshot(http, "client", "sale", "product")
    error = refused(http.delete(f"/api/client/{customer['id']}"), 409, "delete_restricted",
                    ("sale.client",))
    assert "2" in problem_of(error, "sale.client")
    assert "sale" in error["message"] and "2" in error["message"]
    error = refused(http.delete(f"/api/product/{product['id']}"), 409, "delete_restricted",
                    ("sale.products",))
    assert "1" in problem_of(error, "sale.products")
    assert snapshot(http, "client", "sale", "product") == before
    # a client nothing links to goes
    assert http.delete(f"/api/client/{lone['id']}").status_code == 204
