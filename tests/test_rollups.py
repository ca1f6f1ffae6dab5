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
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka
from engine.errors import ValidationFailed
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


# -- concurrent writers -----------------------------------------------------------------------
def test_twenty_concurrent_lines_are_all_added_up(
        kt: Kartoteka, make_kt: Callable[..., Kartoteka], setup_dir: Path) -> None:
    """20 lines added to one order at once, through three engines (as three API processes
    would be): the order's sum and count hold all of them. On PostgreSQL each writer locks
    the order before it adds up, so none computes from a snapshot missing another's line."""
    engines = [kt, make_kt(setup_dir), make_kt(setup_dir)]
    order = kt.records.create("order", {"number": "A-1"})
    buyer = kt.records.create("customer", {"name": "Ромашка"})
    kt.records.update("order", order["id"], {"customer": buyer["id"]})

    def add(engine: Kartoteka, cents: int) -> None:
        engine.records.create("line", {"quantity": 1, "price": f"1.{cents:02d}",
                                       "order": order["id"]})

    together([partial(add, engines[i % 3], i) for i in range(20)])
    stored = kt.records.get("order", order["id"])
    expected = sum(Decimal(f"1.{i:02d}") for i in range(20))
    assert (Decimal(stored["total"]), stored["lines_count"]) == (expected, 20)
    assert Decimal(kt.records.get("customer", buyer["id"])["spent"]) == expected


# -- the property: stored roll-ups equal a recomputation from scratch --------------------
def _from_scratch(kt: Kartoteka) -> None:
    """Every roll-up of every record added up again in Python from the raw rows."""
    setup = kt.storage.setup
    with kt.db.read(system="test: compare with a recomputation") as conn:
        rows = {name: {row.id: dict(row._mapping) for row in conn.execute(
            kt.storage[name].table.select())} for name in setup.entities}
        pairs = {(name, link): [tuple(r) for r in conn.execute(
            sa.select(joins.c.source_id, joins.c.target_id))]
            for name, table in kt.storage.entities.items()
            for link, joins in table.join_tables.items()}
    for name, entity in setup.entities.items():
        for field in entity.fields.values():
            rollup = field.rollup
            if rollup is None:
                continue
            for record in rows[name].values():
                children = [rows[rollup.child][i] for i in _children(
                    rollup, name, record["id"], rows, pairs)]
                children = [c for c in children if all(
                    _holds(c, condition) for condition in rollup.where)]
                values = [c[rollup.field] for c in children] if rollup.field else children
                present = [v for v in values if v is not None]
                expected: Any
                if rollup.function == "count":
                    expected = len(present)
                elif rollup.function == "sum":
                    expected = sum(present, Decimal(0) if field.type.name != "integer" else 0)
                elif rollup.function == "avg":
                    expected = (sum(present) / len(present)).quantize(Decimal("0.01")) \
                        if present else None
                else:
                    expected = (min if rollup.function == "min" else max)(present, default=None)
                assert record[field.name] == expected, (name, record["id"], field.name)


def _children(rollup: Any, parent: str, parent_id: int, rows: dict[str, dict[int, Record]],
              pairs: dict[tuple[str, str], list[tuple[int, int]]]) -> list[int]:
    link = rollup.link.name
    if rollup.kind == "reverse":
        return [i for i, child in rows[rollup.child].items()
                if child[f"{link}_id"] == parent_id
                and (not rollup.link.polymorphic or child[f"{link}_entity"] == parent)]
    if rollup.kind == "many":
        return [target for source, target in pairs[(parent, link)] if source == parent_id]
    return [source for source, target in pairs[(rollup.child, link)] if target == parent_id]


def _holds(record: Record, condition: Any) -> bool:
    value = record[condition.name]
    assert condition.op == "eq"
    return bool(value == condition.value)


ACTIONS = st.lists(st.tuples(
    st.sampled_from(["customer", "order", "line", "tag", "task", "update_line", "relink_line",
                     "relink_order", "tag_order", "untag_order", "move_order", "delete_line",
                     "delete_order", "delete_customer", "discount", "task_done"]),
    st.integers(0, 5), st.integers(0, 5), st.integers(-3, 9)), max_size=25)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_stored_roll_ups_equal_a_recomputation(make_kt: Callable[..., Kartoteka],
                                               setup_dir: Path, actions: list[Any]) -> None:
    kt = make_kt(setup_dir)
    made: dict[str, list[int]] = {e: [] for e in ("customer", "order", "line", "tag", "task")}

    def pick(entity: str, index: int) -> int | None:
        ids = made[entity]
        return ids[index % len(ids)] if ids else None

    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        for action, first, second, number in actions:
            if action == "customer":
                made["customer"].append(_post(client, "customer", {"name": f"К{first}"})["id"])
            elif action == "order":
                made["order"].append(_post(client, "order", {
                    "number": f"N{first}", "ordered_on": f"2026-0{second + 1}-1{first}",
                    "customer": pick("customer", first)})["id"])
            elif action == "line":
                made["line"].append(_line(client, pick("order", first), number, f"{second}.5",
                                          ["open", "shipped"][first % 2])["id"])
            elif action == "tag":
                made["tag"].append(_post(client, "tag", {"name": f"t{first}"})["id"])
            elif action == "task":
                target = pick("order", first) if second % 2 else pick("customer", first)
                entity = "order" if second % 2 else "customer"
                if target is not None:
                    made["task"].append(_post(client, "task", {
                        "title": "задача", "about": {"entity": entity, "id": target}})["id"])
            elif action == "update_line" and (line := pick("line", first)) is not None:
                _patch(client, "line", line, {"quantity": number,
                                              "status": ["open", "shipped"][second % 2]})
            elif action == "relink_line" and (line := pick("line", first)) is not None:
                _patch(client, "line", line, {"order": pick("order", second)})
            elif action == "relink_order" and (order := pick("order", first)) is not None:
                _patch(client, "order", order, {"customer": pick("customer", second)})
            elif action in ("tag_order", "untag_order") and \
                    (order := pick("order", first)) is not None and \
                    (tag := pick("tag", second)) is not None:
                method = client.put if action == "tag_order" else client.delete
                assert method(f"/api/order/{order}/tags/{tag}").status_code < 500
            elif action == "move_order" and (order := pick("order", first)) is not None:
                client.post(f"/api/order/{order}/stage",
                            json={"to": ["new", "paid", "cancelled"][second % 3]})
            elif action.startswith("delete_"):
                entity = action.removeprefix("delete_")
                target = pick(entity, first)
                if target is not None:
                    assert client.delete(f"/api/{entity}/{target}").status_code == 204
                    made[entity].remove(target)
                    if entity == "order":  # its lines and tasks went with it
                        made["line"] = [i for i in made["line"]
                                        if client.get(f"/api/line/{i}").status_code == 200]
                        made["task"] = [i for i in made["task"]
                                        if client.get(f"/api/task/{i}").status_code == 200]
                    if entity == "customer":
                        made["task"] = [i for i in made["task"]
                                        if client.get(f"/api/task/{i}").status_code == 200]
            elif action == "discount" and (buyer := pick("customer", first)) is not None:
                _patch(client, "customer", buyer, {"discount": str(number)})
            elif action == "task_done" and (task := pick("task", first)) is not None:
                _patch(client, "task", task, {"done": bool(second % 2)})
    _from_scratch(kt)
    kt.close()


# -- migrations ---------------------------------------------------------------------------------
def test_adding_and_changing_a_roll_up_is_a_planned_migration(
        db_url: str, open_kt: Callable[..., Kartoteka],
        write_setup: Callable[..., Path]) -> None:
    plain = {
        "order.yaml": "entity: order\nfields:\n  number: {type: string}\n",
        "line.yaml": "entity: line\nfields:\n  amount: {type: money}\n  open: {type: boolean}\n"
                     "links:\n  order: {to: order, reverse: lines}\n",
    }
    first = open_kt(write_setup(plain, "v1"), db_url)
    first.migrate()
    orders = [first.records.create("order", {"number": n})["id"] for n in ("A", "B", "C")]
    for amount, is_open in (("10.10", True), ("0.05", False), ("3", True)):
        first.records.create("line", {"amount": amount, "open": is_open, "order": orders[0]})
    first.close()

    rolled = {**plain, "order.yaml": plain["order.yaml"]
              + "  total: {type: money, rollup: {sum: lines.amount}}\n"
              + "  doubled: {type: money, formula: \"total * 2\"}\n"}
    second = open_kt(write_setup(rolled, "v2"), db_url)
    steps = [str(step) for step in plan(second.storage, second.db).steps]
    assert steps[-2:] == ["recompute 3 rows of order.total (new roll-up)",
                          "recompute 3 rows of order.doubled (new formula)"], steps
    heard: list[str] = []
    apply(second.storage, second.db, on_progress=heard.append)
    assert "  order: 3 of 3 rows computed" in heard
    got = {r["number"]: (r["total"], r["doubled"]) for r in _all(second, "order")}
    assert got == {"A": ("13.15", "26.30"), "B": ("0.00", "0.00"), "C": ("0.00", "0.00")}
    assert plan(second.storage, second.db).up_to_date
    second.close()

    changed = {**rolled, "order.yaml": rolled["order.yaml"].replace(
        "{sum: lines.amount}", "{sum: lines.amount, where: {open: true}}")}
    third = open_kt(write_setup(changed, "v3"), db_url)
    steps = [str(step) for step in plan(third.storage, third.db).steps]
    assert steps == ["recompute 3 rows of order.total (roll-up changed)",
                     "recompute 3 rows of order.doubled (reads a recomputed roll-up)"], steps
    third.migrate()
    assert {r["number"]: r["total"] for r in _all(third, "order")}["A"] == "13.10"
    third.close()


def _all(kt: Kartoteka, entity: str) -> list[Record]:
    return kt.records.list_page(entity, [("limit", "100")]).items


def test_a_sum_past_64_bits_is_refused_not_wrapped(kt: Kartoteka) -> None:
    """Quantities whose sum passes what a 64-bit integer holds (SQLite's SUM stops there
    with an error, PostgreSQL's gives a number the column cannot take): 422 naming the
    roll-up, never a wrong total, and the line is not written."""
    order = kt.records.create("order", {"number": "A-1"})
    half = 2 ** 62
    kt.records.create("line", {"quantity": half, "order": order["id"]})
    with pytest.raises(ValidationFailed) as refused:
        kt.records.create("line", {"quantity": half, "order": order["id"]})
    assert refused.value.code == "rollup_out_of_range"
    assert [d.field for d in refused.value.details] == ["pieces"]
    stored = kt.records.get("order", order["id"])
    assert (stored["lines_count"], stored["pieces"]) == (1, half)


SCOPED = {
    "setup.yaml": """
roles:
  manager:
    order: {read: all, create: all}
    line: {read: own, create: all, update: own}
""",
    "order.yaml": """
entity: order
fields:
  number: {type: string}
  total: {type: money, rollup: {sum: lines.amount}}
  lines_count: {type: integer, rollup: {count: lines}}
""",
    "line.yaml": """
entity: line
owner: true
fields:
  amount: {type: money}
links:
  order: {to: order, reverse: lines}
""",
}


def test_a_scoped_writer_adds_into_what_everyone_wrote(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """Two managers who each see only their own lines: a roll-up adds up every line,
    whoever wrote it, and a manager's write keeps the others' lines in the total."""
    kt = make_kt(write_setup(SCOPED))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        headers = {}
        for name in ("anna", "boris"):
            _, token = kt.users.add(f"{name}@example.com", ["manager"])
            headers[name] = {"Authorization": f"Bearer {token}"}
        order = http.post("/api/order", json={"number": "N-1"}, headers=headers["anna"]).json()
        for name, amount in (("anna", "10.00"), ("boris", "5.50")):
            made = http.post("/api/line", json={"amount": amount, "order": order["id"]},
                             headers=headers[name])
            assert made.status_code == 201, made.text
        seen = http.get(f"/api/order/{order['id']}", headers=headers["anna"]).json()
        assert (seen["total"], seen["lines_count"]) == ("15.50", 2)
        mine = http.get(f"/api/order/{order['id']}/lines", headers=headers["anna"]).json()
        assert [line["amount"] for line in mine["items"]] == ["10.00"]  # her scope still holds
