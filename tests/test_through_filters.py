"""Filtering by the data a link carries (`procedures.$link.tooth=12`), on both databases:
from the declaring entity and from the way back, several conditions holding on one pair,
a linked list filtered by its pairs (`$link.price[gte]=100`), wrong names, operators and
values (400), text in several scripts, a role condition on a pair, and a role whose scope
hides some linked records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka
from tests.test_through import FILES as THROUGH_FILES

FILES = {
    **THROUGH_FILES,
    "setup.yaml": """
roles:
  assistant:
    procedure: {read: all}
    plan: {read: [{procedures.$link.note: "ассистент"}]}
""",
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(FILES))


@pytest.fixture
def client(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def _made(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


def _world(client: TestClient) -> dict[str, int]:
    filling = _made(client.post("/api/procedure", json={"name": "Пломба"}))["id"]
    crown = _made(client.post("/api/procedure", json={"name": "Коронка 牙冠"}))["id"]
    first = _made(client.post("/api/plan", json={"title": "A", "procedures": [
        {"id": filling, "tooth": 12, "price": "50", "quantity": 1},
        {"id": crown, "tooth": 36, "price": "300", "quantity": 2, "note": "ассистент"}]}))
    second = _made(client.post("/api/plan", json={"title": "B", "procedures": [
        {"id": filling, "tooth": 36, "price": "60", "note": "دندان آسیا"}]}))
    third = _made(client.post("/api/plan", json={"title": "C", "helpers": [filling]}))
    return {"filling": filling, "crown": crown, "first": first["id"], "second": second["id"],
            "third": third["id"]}


def _titles(client: TestClient, params: dict[str, str]) -> list[str]:
    response = client.get("/api/plan", params={**params, "sort": "title"})
    assert response.status_code == 200, response.text
    return [plan["title"] for plan in response.json()["items"]]


def test_plans_by_the_data_of_their_pairs(client: TestClient) -> None:
    _world(client)
    assert _titles(client, {"procedures.$link.tooth": "36"}) == ["A", "B"]
    assert _titles(client, {"procedures.$link.price[gte]": "100"}) == ["A"]
    assert _titles(client, {"procedures.$link.tooth[in]": "11,12"}) == ["A"]
    assert _titles(client, {"procedures.$link.note[isnull]": "false"}) == ["A", "B"]
    assert _titles(client, {"procedures.$link.note[contains]": "آسیا"}) == ["B"]


def test_conditions_on_one_link_hold_on_one_pair(client: TestClient) -> None:
    _world(client)
    # plan A has tooth 12 (price 50) and tooth 36 (price 300): no single pair is both
    assert _titles(client, {"procedures.$link.tooth": "12",
                            "procedures.$link.price[gte]": "100"}) == []
    assert _titles(client, {"procedures.$link.tooth": "36",
                            "procedures.$link.price[gte]": "100"}) == ["A"]
    # with a condition on the linked record too
    assert _titles(client, {"procedures.$link.tooth": "36", "procedures.name": "Пломба"}) == ["B"]


def test_from_the_way_back(client: TestClient) -> None:
    world = _world(client)
    found = client.get("/api/procedure", params={"plans.$link.quantity[gte]": "2"}).json()
    assert [p["id"] for p in found["items"]] == [world["crown"]]


def test_a_linked_list_filtered_by_its_pairs(client: TestClient) -> None:
    world = _world(client)
    listed = client.get(f"/api/plan/{world['first']}/procedures",
                        params={"$link.price[gte]": "100"})
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(p["id"], p["$link"]["tooth"]) for p in items] == [(world["crown"], 36)]
    back = client.get(f"/api/procedure/{world['filling']}/plans",
                      params={"$link.tooth": "36"}).json()["items"]
    assert [p["id"] for p in back] == [world["second"]]


@pytest.mark.parametrize(("params", "said"), [
    ({"procedures.$link.tooht": "12"}, "did you mean 'tooth'?"),
    ({"procedures.$link.tooth[contains]": "1"}, "does not apply to a integer field"),
    ({"procedures.$link.tooth": "двенадцать"}, "двенадцать"),
    ({"helpers.$link.tooth": "12"}, "carries no data of its own"),
    ({"nothing.$link.tooth": "12"}, "no field or link 'nothing'"),
    ({"procedures.$link.price[gt]": "1e999"}, "1e999"),
])
def test_wrong_pair_filters_are_400(client: TestClient, params: dict[str, str],
                                    said: str) -> None:
    response = client.get("/api/plan", params=params)
    assert response.status_code == 400, response.text
    assert said in response.text
    listed = client.get("/api/plan/1/procedures", params={"$link.colour": "red"})
    assert listed.status_code in (400, 404), listed.text


def test_a_role_condition_on_a_pair(kt: Kartoteka, client: TestClient) -> None:
    world = _world(client)
    _, token = kt.users.add("assistant@example.com", ["assistant"])
    seen = client.get("/api/plan", headers={"Authorization": f"Bearer {token}"}).json()
    assert [p["id"] for p in seen["items"]] == [world["first"]]
