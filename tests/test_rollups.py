"""Roll-up fields over HTTP on both databases: counts, exact sums, minimums, maximums and
averages over a way back, a many-to-many link from either side and a polymorphic link,
with and without a condition; kept true on every create, patch, re-link, stage move,
link change and (cascading) delete; roll-ups of formulas and formulas of roll-ups;
the parent's rules enforced; concurrent writers on PostgreSQL; migrations; and a property
test that the stored values always equal a recomputation from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka
from engine.storage.migrations import apply, plan
from tests.races import together

Record = dict[str, Any]

FILES = {
    "setup.yaml": """
languages: [en, ru]
""",
    "customer.yaml": """
entity: customer
fields:
  name: {type: string, required: true}
  discount: {type: decimal, places: 2}
  spent: {type: money, rollup: {sum: orders.total}}
  orders_count: {type: integer, rollup: {count: orders}}
  open_orders: {type: integer, rollup: {count: orders, where: {stage: new}}}
  last_ordered: {type: date, rollup: {max: orders.ordered_on}}
  first_ordered: {type: date, rollup: {min: orders.ordered_on}}
  average: {type: decimal, places: 2, rollup: {avg: orders.total}}
  tasks_open: {type: integer, rollup: {count: tasks, where: {done: false}}}
""",
    "order.yaml": """
entity: order
fields:
  number: {type: string, required: true}
  ordered_on: {type: date}
  total: {type: money, index: true, rollup: {sum: lines.amount}}
  shipped: {type: money, rollup: {sum: lines.amount, where: {status: shipped}}}
  lines_count: {type: integer, rollup: {count: lines}}
  biggest: {type: integer, rollup: {max: lines.quantity}}
  pieces: {type: integer, rollup: {sum: lines.quantity}}
  tags_count: {type: integer, rollup: {count: tags}}
  net: {type: money, formula: "total * (1 - coalesce(customer.discount, 0) / 100)"}
  tasks_open: {type: integer, rollup: {count: tasks, where: {done: false}}}
links:
  customer: {to: customer, reverse: orders, on_delete: set_null}
  tags: {to: tag, many: true, reverse: orders, on_delete: set_null}
pipeline:
  stages: [new, paid, cancelled]
  final: [paid, cancelled]
rules:
  within_limit:
    require: {total: {lte: 100000}}
    message: {en: "An order cannot exceed 100 000", ru: "Заказ не может превышать 100 000"}
""",
    "line.yaml": """
entity: line
fields:
  name: {type: string}
  quantity: {type: integer}
  price: {type: money}
  amount: {type: money, formula: "quantity * price"}
  status: {type: choice, options: [open, shipped]}
links:
  order: {to: order, reverse: lines, on_delete: cascade}
""",
    "tag.yaml": """
entity: tag
fields:
  name: {type: string}
  orders_count: {type: integer, rollup: {count: orders}}
  tagged_total: {type: money, rollup: {sum: orders.total}}
""",
    "task.yaml": """
entity: task
fields:
  title: {type: string}
  done: {type: boolean, default: false}
links:
  about: {to: [order, customer], reverse: tasks, on_delete: cascade}
""",
}


@pytest.fixture
def setup_dir(write_setup: Callable[..., Path]) -> Path:
    return write_setup(FILES)


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], setup_dir: Path) -> Kartoteka:
    return make_kt(setup_dir)


@pytest.fixture
def client(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def _post(client: TestClient, entity: str, body: dict[str, Any]) -> Record:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _patch(client: TestClient, entity: str, record_id: int, body: dict[str, Any]) -> Record:
    response = client.patch(f"/api/{entity}/{record_id}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _get(client: TestClient, entity: str, record_id: int) -> Record:
    response = client.get(f"/api/{entity}/{record_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _line(client: TestClient, order: int | None, quantity: int, price: str,
          status: str = "open") -> Record:
    return _post(client, "line", {"name": "строка", "quantity": quantity, "price": price,
                                  "status": status, "order": order})


def test_a_new_record_starts_from_nothing(client: TestClient) -> None:
    order = _post(client, "order", {"number": "A-1"})
    assert (order["total"], order["lines_count"], order["biggest"], order["pieces"]) == \
        ("0.00", 0, None, 0)
    buyer = _post(client, "customer", {"name": "Ромашка"})
    assert (buyer["spent"], buyer["orders_count"], buyer["last_ordered"], buyer["average"]) == \
        ("0.00", 0, None, None)


def test_children_added_changed_moved_and_deleted(client: TestClient) -> None:
    first = _post(client, "order", {"number": "A-1"})
    second = _post(client, "order", {"number": "A-2"})
    line = _line(client, first["id"], 3, "10.10")
    _line(client, first["id"], 1, "0.05", status="shipped")
    order = _get(client, "order", first["id"])
    assert (order["total"], order["shipped"], order["lines_count"], order["biggest"],
            order["pieces"]) == ("30.35", "0.05", 2, 3, 4)
    _patch(client, "line", line["id"], {"quantity": 7, "status": "shipped"})
    order = _get(client, "order", first["id"])
    assert (order["total"], order["shipped"], order["biggest"]) == ("70.75", "70.75", 7)
    _patch(client, "line", line["id"], {"order": second["id"]})  # moved: both orders change
    assert _get(client, "order", first["id"])["total"] == "0.05"
    assert _get(client, "order", second["id"])["total"] == "70.70"
    _patch(client, "line", line["id"], {"order": None})
    assert _get(client, "order", second["id"])["total"] == "0.00"
    assert client.delete(f"/api/line/{line['id']}").status_code == 204
    order = _get(client, "order", first["id"])
    assert (order["total"], order["lines_count"], order["biggest"]) == ("0.05", 1, 1)


def test_a_parent_recomputed_keeps_its_version_and_history(client: TestClient) -> None:
    order = _post(client, "order", {"number": "A-1"})
    _line(client, order["id"], 2, "5")
    again = _get(client, "order", order["id"])
    assert again["version"] == order["version"] and again["total"] == "10.00"
    timeline = client.get(f"/api/order/{order['id']}/timeline").json()
    changes = [item for item in timeline["items"] if item["type"] == "change"]
    assert len(changes) == 1  # its creation, and no echoes of its lines
    stale = client.patch(f"/api/order/{order['id']}", json={"number": "A-1b"},
                         headers={"If-Match": f'"{order["version"]}"'})
    assert stale.status_code == 200, stale.text


def test_roll_ups_of_formulas_and_formulas_of_roll_ups(client: TestClient) -> None:
    buyer = _post(client, "customer", {"name": "Иванов", "discount": "10"})
    order = _post(client, "order", {"number": "A-1", "customer": buyer["id"],
                                    "ordered_on": "2026-03-01"})
    line = _line(client, order["id"], 4, "2.50")  # amount is a formula: 10.00
    assert _get(client, "order", order["id"])["net"] == "9.00"  # a formula of a roll-up
    _patch(client, "line", line["id"], {"price": "25"})
    assert _get(client, "order", order["id"])["net"] == "90.00"
    customer = _get(client, "customer", buyer["id"])  # a roll-up of a roll-up
    assert (customer["spent"], customer["orders_count"], customer["average"]) == \
        ("100.00", 1, "100.00")
    other = _post(client, "order", {"number": "A-2", "customer": buyer["id"],
                                    "ordered_on": "2026-01-15"})
    _line(client, other["id"], 1, "0.01")
    customer = _get(client, "customer", buyer["id"])
    assert (customer["spent"], customer["average"], customer["first_ordered"],
            customer["last_ordered"]) == ("100.01", "50.01", "2026-01-15", "2026-03-01")
    _patch(client, "customer", buyer["id"], {"discount": "50"})  # the formula follows
    assert _get(client, "order", order["id"])["net"] == "50.00"


def test_a_stage_move_changes_a_roll_up_with_a_condition(client: TestClient) -> None:
    buyer = _post(client, "customer", {"name": "王"})
    order = _post(client, "order", {"number": "A-1", "customer": buyer["id"]})
    assert _get(client, "customer", buyer["id"])["open_orders"] == 1
    moved = client.post(f"/api/order/{order['id']}/stage", json={"to": "paid"})
    assert moved.status_code == 200, moved.text
    assert _get(client, "customer", buyer["id"])["open_orders"] == 0


def test_many_to_many_from_both_sides(client: TestClient) -> None:
    urgent = _post(client, "tag", {"name": "срочно"})
    vip = _post(client, "tag", {"name": "VIP"})
    order = _post(client, "order", {"number": "A-1", "tags": [urgent["id"], vip["id"]]})
    assert order["tags_count"] == 2  # the answer to the create holds it already
    _line(client, order["id"], 1, "7")
    assert _get(client, "tag", urgent["id"])["tagged_total"] == "7.00"
    assert _patch(client, "order", order["id"], {"tags": [vip["id"]]})["tags_count"] == 1
    assert _get(client, "tag", urgent["id"])["orders_count"] == 0
    assert client.delete(f"/api/order/{order['id']}/tags/{vip['id']}").status_code == 204
    assert _get(client, "order", order["id"])["tags_count"] == 0
    assert _get(client, "tag", vip["id"])["orders_count"] == 0
    linked = client.put(f"/api/tag/{urgent['id']}/orders/{order['id']}")
    assert linked.status_code in (200, 204), linked.text
    assert _get(client, "order", order["id"])["tags_count"] == 1
    assert _get(client, "tag", urgent["id"])["tagged_total"] == "7.00"
    assert client.delete(f"/api/tag/{urgent['id']}").status_code == 204
    assert _get(client, "order", order["id"])["tags_count"] == 0


def test_a_polymorphic_way_counts_only_its_own_entity(client: TestClient) -> None:
    buyer = _post(client, "customer", {"name": "رضا"})
    order = _post(client, "order", {"number": str(buyer["id"])})
    task = _post(client, "task", {"title": "позвонить",
                                  "about": {"entity": "customer", "id": buyer["id"]}})
    _post(client, "task", {"title": "x", "about": {"entity": "order", "id": order["id"]}})
    assert _get(client, "customer", buyer["id"])["tasks_open"] == 1
    assert _get(client, "order", order["id"])["tasks_open"] == 1
    _patch(client, "task", task["id"], {"about": {"entity": "order", "id": order["id"]}})
    assert _get(client, "customer", buyer["id"])["tasks_open"] == 0
    assert _get(client, "order", order["id"])["tasks_open"] == 2
    _patch(client, "task", task["id"], {"done": True})
    assert _get(client, "order", order["id"])["tasks_open"] == 1


def test_cascades_and_released_links_are_followed(client: TestClient) -> None:
    buyer = _post(client, "customer", {"name": "A"})
    order = _post(client, "order", {"number": "A-1", "customer": buyer["id"]})
    _line(client, order["id"], 1, "3")
    assert _get(client, "customer", buyer["id"])["spent"] == "3.00"
    assert client.delete(f"/api/order/{order['id']}").status_code == 204  # lines cascade
    customer = _get(client, "customer", buyer["id"])
    assert (customer["spent"], customer["orders_count"]) == ("0.00", 0)
    assert client.get("/api/line").json()["items"] == []


def test_a_client_cannot_send_a_roll_up(client: TestClient) -> None:
    response = client.post("/api/order", json={"number": "A-1", "total": "5"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "field_computed"
    assert error["details"] == [{"field": "total", "problem": "is computed by a roll-up: "
                                                           "leave it out"}]
    assert client.get("/api/order").json()["items"] == []


def test_a_child_breaking_the_parents_rule_is_refused_whole(client: TestClient) -> None:
    order = _post(client, "order", {"number": "A-1"})
    _line(client, order["id"], 1, "99999")
    response = client.post("/api/line", json={"quantity": 1, "price": "2",
                                              "order": order["id"]},
                           headers={"Accept-Language": "ru"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "rule_failed"
    assert "Заказ не может превышать 100 000" in response.text
    assert _get(client, "order", order["id"])["total"] == "99999.00"
    assert len(client.get("/api/line").json()["items"]) == 1  # nothing half-written


def test_filter_and_sort_by_roll_ups(client: TestClient) -> None:
    for number, price in (("A", "5"), ("B", "50"), ("C", "0.5")):
        order = _post(client, "order", {"number": number})
        _line(client, order["id"], 1, price)
    found = client.get("/api/order", params={"total[gte]": "1", "sort": "-total"}).json()
    assert [o["number"] for o in found["items"]] == ["B", "A"]
    assert client.get("/api/order", params={"sort": "lines_count"}).status_code == 200


def test_exact_sums_at_the_edge_of_money(client: TestClient) -> None:
    order = _post(client, "order", {"number": "A-1"})
    big = "9999999999999999.99"  # the largest money value (18 digits)
    first = _post(client, "line", {"quantity": 1, "price": big, "order": None})
    _post(client, "line", {"quantity": 1, "price": "-9999999999999999.98", "order": order["id"]})
    _patch(client, "line", first["id"], {"order": order["id"]})
    assert _get(client, "order", order["id"])["total"] == "0.01"  # exact, no float on the way
    response = client.post("/api/line", json={"quantity": 1, "price": big,
                                              "order": order["id"]})
    # 0.01 + big does not fit 18 digits: refused, named, nothing written
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "rollup_out_of_range"
    assert _get(client, "order", order["id"])["lines_count"] == 2
