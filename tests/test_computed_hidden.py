"""A computed field tells what it reads, so it is hidden wherever what it reads is: a
formula reading a hidden field (directly, through a link, through another formula), a
roll-up adding up a hidden field or records of an entity the role may not read. As a
manager and a director with real tokens, on both databases: answers, includes, linked
lists, board sums, history, filters and sorts, `/api/me`, and the published schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka

FILES = {
    "setup.yaml": """
languages: [en, ru]
roles:
  manager:
    product: {read: all, create: all, update: all, hidden: [purchase_price]}
    line: {read: all, create: all, update: all}
    order: {read: all, create: all, update: all}
    supplier_note: {}
  director:
    "*": {read: all, create: all, update: all, delete: all}
""",
    "product.yaml": """
entity: product
fields:
  name: {type: string}
  price: {type: money}
  purchase_price: {type: money}
  margin: {type: money, formula: "price - purchase_price"}
  margin_pct: {type: decimal, places: 1, formula: "margin / price * 100"}
  label: {type: string, formula: "upper(name)"}
  notes_count: {type: integer, rollup: {count: notes}}
""",
    "supplier_note.yaml": """
entity: supplier_note
fields:
  text: {type: string}
links:
  product: {to: product, reverse: notes}
""",
    "line.yaml": """
entity: line
fields:
  quantity: {type: integer}
  cost: {type: money, formula: "quantity * product.purchase_price"}
  amount: {type: money, formula: "quantity * product.price"}
links:
  product: {to: product}
  order: {to: order, reverse: lines}
""",
    "order.yaml": """
entity: order
fields:
  number: {type: string}
  total: {type: money, rollup: {sum: lines.amount}}
  total_cost: {type: money, rollup: {sum: lines.cost}}
pipeline:
  stages: [new, done]
""",
}
SECRET = {"product": {"margin", "margin_pct", "notes_count", "purchase_price"},
          "line": {"cost"}, "order": {"total_cost"}}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(FILES))


@pytest.fixture
def callers(kt: Kartoteka) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http:
        found = {}
        for name in ("manager", "director"):
            _, token = kt.users.add(f"{name}@example.com", [name])
            found[name] = (http, {"Authorization": f"Bearer {token}"})
        yield found


def _call(caller: Any, method: str, path: str, **kw: Any) -> Any:
    http, headers = caller
    return getattr(http, method)(path, headers=headers, **kw)


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _world(callers: dict[str, Any]) -> dict[str, Any]:
    director = callers["director"]
    product = _ok(_call(director, "post", "/api/product", json={
        "name": "Чай 茶", "price": "20.00", "purchase_price": "12.50"}), 201)
    _ok(_call(director, "post", "/api/supplier_note", json={
        "text": "закупка", "product": product["id"]}), 201)
    order = _ok(_call(director, "post", "/api/order", json={"number": "N-1"}), 201)
    line = _ok(_call(director, "post", "/api/line", json={
        "quantity": 2, "product": product["id"], "order": order["id"]}), 201)
    return {"product": product, "order": order, "line": line}


def test_the_director_sees_every_computed_value(callers: dict[str, Any]) -> None:
    world = _world(callers)
    director = callers["director"]
    product = _ok(_call(director, "get", f"/api/product/{world['product']['id']}"))
    assert (product["margin"], product["margin_pct"], product["notes_count"]) == \
        ("7.50", "37.5", 1)
    order = _ok(_call(director, "get", f"/api/order/{world['order']['id']}"))
    assert (order["total"], order["total_cost"]) == ("40.00", "25.00")


def test_computed_fields_reading_the_hidden_are_hidden(callers: dict[str, Any]) -> None:
    world = _world(callers)
    manager = callers["manager"]
    for entity, secret in SECRET.items():
        record_id = world[entity]["id"]
        answers = [_ok(_call(manager, "get", f"/api/{entity}/{record_id}")),
                   *_ok(_call(manager, "get", f"/api/{entity}"))["items"]]
        for answer in answers:
            assert not secret & set(answer), (entity, answer)
    product = _ok(_call(manager, "get", f"/api/product/{world['product']['id']}"))
    assert product["label"] == "ЧАЙ 茶" and product["price"] == "20.00"  # reads nothing hidden
    order = _ok(_call(manager, "get", f"/api/order/{world['order']['id']}"))
    assert order["total"] == "40.00"
    line = _ok(_call(manager, "get", f"/api/line/{world['line']['id']}",
                     params={"include": "product"}))
    assert line["product"]["label"] == "ЧАЙ 茶" and not SECRET["product"] & set(line["product"])
    lines = _ok(_call(manager, "get", f"/api/order/{world['order']['id']}/lines"))["items"]
    assert lines and all("cost" not in line and line["amount"] == "40.00" for line in lines)
    board = _ok(_call(manager, "get", "/api/order/board"))
    assert "total_cost" not in str(board) and "total" in str(board)
    history = _ok(_call(manager, "get", f"/api/line/{world['line']['id']}/timeline"))
    assert "cost" not in str(history) and "25.00" not in str(history)
    rights = _ok(_call(manager, "get", "/api/me"))["rights"]
    assert set(rights["product"]["hidden"]) == SECRET["product"]
    assert rights["order"]["hidden"] == ["total_cost"]


@pytest.mark.parametrize("params", [{"margin[gt]": "0"}, {"margin": "7.50"},
                                    {"sort": "-margin_pct"}, {"notes_count[gte]": "1"}])
def test_filtering_or_sorting_by_them_is_as_unknown(callers: dict[str, Any],
                                                    params: dict[str, str]) -> None:
    _world(callers)
    refused = _call(callers["manager"], "get", "/api/product", params=params)
    assert refused.status_code == 400, refused.text
    assert _call(callers["director"], "get", "/api/product", params=params).status_code == 200


def test_the_published_schema_says_so_and_validates_the_managers_answers(
        callers: dict[str, Any]) -> None:
    world = _world(callers)
    manager = callers["manager"]
    document = _ok(_call(manager, "get", "/openapi.json"))
    schemas = document["components"]["schemas"]
    for entity, name in (("product", "Product"), ("order", "Order"), ("line", "Line")):
        schema = schemas[name]
        for field in SECRET[entity]:
            assert field not in schema.get("required", []), (name, field)
            assert "Left out of the answers" in schema["properties"][field]["description"]
            assert schema["properties"][field]["x-hidden-from"] == ["manager"]
        answer = _ok(_call(manager, "get", f"/api/{entity}/{world[entity]['id']}"))
        resolver = {"components": {"schemas": schemas}}
        jsonschema.validate(answer, {**schema, **resolver})
