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
    assert set(change["properties"]) == {"active", "name", "roles", "team"}
    assert change["additionalProperties"] is False


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
