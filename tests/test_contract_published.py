"""What the published OpenAPI says a request may be is what the server takes (issue 9,
"the published contract tells the truth"): each case was a request the document allowed and
the server refused, found by schemathesis' positive-data check."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return dict(document["paths"][path][method])


def test_a_whole_number_written_with_a_fraction_is_an_integer(client: TestClient) -> None:
    """JSON Schema counts 3.0 as an integer: an id, an integer field and a list of ids
    take it, as the published `integer` says."""
    buyer = client.post("/api/client", json={"name": "Ромашка"}).json()
    sale = client.post("/api/sale", json={"number": "S-1", "client": float(buyer["id"]),
                                          "probability": 40.0})
    assert sale.status_code == 201, sale.text
    assert sale.json()["client"] == buyer["id"] and sale.json()["probability"] == 40
    supplier = client.post("/api/supplier", json={"name": "供应商", "quality_score": 1e1})
    assert supplier.status_code == 201, supplier.text
    assert supplier.json()["quality_score"] == 10
    fraction = client.post("/api/supplier", json={"name": "x", "quality_score": 9.5})
    assert fraction.status_code == 422  # not whole: still refused, as published


def test_user_bodies_are_published_as_checked(document: dict[str, Any]) -> None:
    create = _operation(document, "post", "/api/users")["requestBody"]["content"][
        "application/json"]["schema"]
    assert create["required"] == ["email", "roles"] and create["additionalProperties"] is False
    assert create["properties"]["roles"]["minItems"] == 1
    assert "admin" in create["properties"]["roles"]["items"]["enum"]
    change = _operation(document, "patch", "/api/users/{id}")["requestBody"]["content"][
        "application/json"]["schema"]
    assert set(change["properties"]) == {"active", "name", "roles", "team", "language"}
    assert change["additionalProperties"] is False
    # a language is one of the setup's (or null: its first), as the users service checks
    assert change["properties"]["language"]["enum"] == ["en", "ru", None]
    assert create["properties"]["language"] == change["properties"]["language"]


def test_if_match_and_stage_moves_are_published_as_checked(document: dict[str, Any],
                                                          client: TestClient) -> None:
    header = next(p for p in _operation(document, "patch", "/api/sale/{id}")["parameters"]
                  if p["name"] == "If-Match")
    pattern = re.compile(header["schema"]["pattern"])
    for good in ('"3"', "*", ' "3" , "4"'):
        assert pattern.match(good), good
    for bad in ("", "3", 'W/"3"', "*, x"):
        assert not pattern.match(bad), bad
    move = _operation(document, "post", "/api/sale/{id}/stage")["requestBody"]["content"][
        "application/json"]["schema"]
    assert move["required"] == ["to"] and "won" in move["properties"]["to"]["enum"]


def test_a_polymorphic_link_list_publishes_what_every_target_takes(
        document: dict[str, Any], client: TestClient) -> None:
    """`GET /api/task/{id}/about` lists a client or a sale: its sort names only what both
    have, so a field of the task itself (`parent`) is no longer offered."""
    sort = next(p for p in _operation(document, "get", "/api/task/{id}/about")["parameters"]
                if p["name"] == "sort")
    pattern = re.compile(sort["schema"]["pattern"])
    assert pattern.match("-created_at,id") and not pattern.match("parent")
    assert not pattern.match("amount")  # a sale's, not a client's


def test_a_decimal_publishes_its_digits_and_says_which_rule(document: dict[str, Any],
                                                           client: TestClient) -> None:
    rate = document["components"]["schemas"]["LogisticsCreate"]["properties"]["rate_per_kg"]
    limit = rate.get("exclusiveMaximum") or next(
        s["exclusiveMaximum"] for s in rate.get("anyOf", []) if "exclusiveMaximum" in s)
    assert limit == 10 ** 16
    refused = client.post("/api/logistics", json={"name": "x", "rate_per_kg": 1e17})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == [
        {"field": "rate_per_kg", "problem": "is too large: at most 16 digits before the decimal point"}]


def test_a_users_team_is_checked_on_create(client: TestClient) -> None:
    refused = client.post("/api/users", json={"email": "a@example.com", "roles": ["manager"],
                                              "team": "т" * 101})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "team"


def test_a_decimal_string_publishes_its_places_and_digits(document: dict[str, Any],
                                                          client: TestClient) -> None:
    """weight_kg is decimal(12, 3), at least 0: its published pattern takes exactly the
    strings the server takes (trailing zeros past the places and leading zeros are the
    same number), and refuses the ones the server refuses."""
    weight = document["components"]["schemas"]["ProductCreate"]["properties"]["weight_kg"]
    pattern = re.compile(weight["pattern"])
    supplier = client.post("/api/supplier", json={"name": "Поставщик"}).json()["id"]
    for n, (text, stored) in enumerate([("1.250", "1.250"), ("1.25000", "1.250"),
                                        ("000000001.5", "1.500"), ("999999999.999", "999999999.999"),
                                        ("0", "0.000")]):
        assert pattern.match(text), text
        made = client.post("/api/product", json={"sku": f"W-{n}", "name": "x", "supplier": supplier,
                                                 "weight_kg": text})
        assert made.status_code == 201, made.text
        assert made.json()["weight_kg"] == stored
    for text in ("1.2345", "1000000000", "-1", "1.", ".5", "1,5"):
        assert not pattern.match(text), text
        refused = client.post("/api/product", json={"sku": "W-x", "name": "x", "supplier": supplier,
                                                    "weight_kg": text})
        assert refused.status_code == 422, (text, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == "weight_kg"


def test_a_json_number_is_the_decimal_it_stands_for(document: dict[str, Any],
                                                    client: TestClient) -> None:
    """A JSON number reaches the server as a binary float: one within float precision of a
    decimal with the field's places is that decimal (what a JavaScript client computes as
    0.1 + 0.2 is 0.30); one further off has more places, and is refused as published
    (`multipleOf`)."""
    rate = document["components"]["schemas"]["LogisticsCreate"]["properties"]["rate_per_kg"]
    assert rate["multipleOf"] == 0.01
    for n, (number, stored) in enumerate([(0.1 + 0.2, "0.30"), (41 * 0.07, "2.87"),
                                          (123456789012.34, "123456789012.34"),
                                          (1e15, "1000000000000000.00")]):
        made = client.post("/api/logistics", json={"name": f"Перевозчик {n}", "rate_per_kg": number})
        assert made.status_code == 201, (number, made.text)
        assert made.json()["rate_per_kg"] == stored
    for number in (0.005, 0.301, 1e-300):
        refused = client.post("/api/logistics", json={"name": "x", "rate_per_kg": number})
        assert refused.status_code == 422, (number, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == "rate_per_kg"


def test_a_bulk_call_publishes_its_keys_and_row_rules(document: dict[str, Any],
                                                      client: TestClient) -> None:
    """What the bulk schema allows, the server takes; what it refuses, the server refuses:
    a link named by a key gives exactly that key; with upsert_by a row without id gives
    its key; without it a row without id gives what a create needs, and a version needs an
    id; an explicit null id or version is refused; upsert_by null is as if not given."""
    bulk = document["components"]["schemas"]["SaleBulk"]
    client_key = bulk["properties"]["rows"]["items"]["properties"]["client"]["anyOf"][1]
    assert [k["required"] for k in client_key["anyOf"]] == [["inn"], ["email"]]
    assert all(k["additionalProperties"] is False for k in client_key["anyOf"])
    client.post("/api/client", json={"name": "Ромашка", "inn": "1655000001"})

    def call(body: dict[str, Any]) -> Any:
        return client.post("/api/sale/bulk", json=body)
    empty_key = call({"rows": [{"number": "S-1", "client": {}}]})
    assert empty_key.status_code == 422, empty_key.text
    made = call({"upsert_by": None, "rows": [{"number": "S-1", "client": {"inn": "1655000001"}}]})
    assert made.status_code == 200 and made.json()["created"] == 1, made.text
    for row in ({"id": None, "number": "S-2"}, {"number": "S-2", "version": None},
                {"number": "S-2", "version": 1}, {"amount": "1.00"}):
        refused = call({"rows": [row]})
        assert refused.status_code == 422, (row, refused.text)
        assert refused.json()["error"]["code"] == "bulk_failed"
    no_such_key = call({"upsert_by": ["number"], "rows": [{"number": "S-9", "version": 3}]})
    assert no_such_key.status_code == 422
    assert no_such_key.json()["rows"][0]["status"] == 412
    assert no_such_key.json()["rows"][0]["error"]["code"] == "stale_version"
    assert client.get("/api/sale", params={"number": "S-9"}).json()["items"] == []
