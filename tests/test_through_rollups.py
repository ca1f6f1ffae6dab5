"""Roll-ups over links that carry data, on both databases: a plan's total as the sum of
its procedures' price × quantity (a formula of the pairs), from the plan's side and the
way back from a procedure's, with conditions on the pairs' values; kept true on every
pair created, changed (inline in the body or by a PUT with a body), unlinked, and on a
delete of either side; formulas, roll-ups and rules reading them follow; a pair's formula
never sent by a client; a role that may not see the link may not see what adds it up;
concurrent writers on PostgreSQL; migrations; and a property test that the stored values
always equal a recomputation from scratch.
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
from engine.storage.migrations import apply, plan
from tests.races import together

Record = dict[str, Any]

DENTAL = {
    "setup.yaml": """
languages: [en, ru]
roles:
  manager:
    plan: {read: all, create: all, update: all, hidden: [procedures]}
    procedure: {read: all}
""",
    "procedure.yaml": """
entity: procedure
fields:
  name: {type: string, required: true}
  list_price: {type: money}
  planned: {type: integer, rollup: {count: plans}}
  revenue: {type: money, rollup: {sum: plans.$link.amount}}
  back_teeth: {type: integer, rollup: {sum: plans.$link.quantity, where: {$link.tooth: {gte: 40}}}}
  latest_tooth: {type: integer, rollup: {max: plans.$link.tooth}}
""",
    "plan.yaml": """
entity: plan
fields:
  title: {type: string}
  total: {type: money, rollup: {sum: procedures.$link.amount}}
  pieces: {type: integer, rollup: {sum: procedures.$link.quantity}}
  cheapest: {type: money, rollup: {min: procedures.$link.price}}
  dearest: {type: money, rollup: {max: procedures.$link.price}}
  average: {type: money, rollup: {avg: procedures.$link.price}}
  priced: {type: integer, rollup: {count: procedures.$link.price}}
  molars: {type: integer, rollup: {count: procedures, where: {$link.tooth: {gte: 40}, list_price: {gte: 10}}}}
  with_vat: {type: money, formula: "total * 1.2"}
links:
  procedures:
    to: procedure
    many: true
    reverse: plans
    on_delete: set_null
    through:
      tooth: {type: integer, min: 11, max: 48}
      price: {type: money, required: true}
      quantity: {type: integer, default: 1}
      amount: {type: money, formula: "price * quantity"}
rules:
  budget:
    require: {total: {lte: 10000}}
    message: {en: "A plan costs at most 10 000", ru: "План стоит не больше 10 000"}
""",
    "clinic.yaml": """
entity: clinic
fields:
  name: {type: string}
  planned_total: {type: money, rollup: {sum: plans.total}}
""",
}
# every plan belongs to a clinic: a roll-up of the roll-up
DENTAL["plan.yaml"] += """
"""
DENTAL["plan.yaml"] = DENTAL["plan.yaml"].replace(
    "links:\n", "links:\n  clinic: {to: clinic, reverse: plans, on_delete: set_null}\n")


@pytest.fixture
def setup_dir(write_setup: Callable[..., Path]) -> Path:
    return write_setup(DENTAL)


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], setup_dir: Path) -> Kartoteka:
    return make_kt(setup_dir)


@pytest.fixture
def client(kt: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def _ok(response: Any, status: int = 200) -> Record:
    assert response.status_code == status, response.text
    return dict(response.json()) if response.content else {}


def _get(client: TestClient, entity: str, record_id: int) -> Record:
    return _ok(client.get(f"/api/{entity}/{record_id}"))


def _procedures(client: TestClient, *names: tuple[str, str | None]) -> list[int]:
    return [_ok(client.post("/api/procedure", json={"name": name, "list_price": price}), 201)["id"]
            for name, price in names]


def test_a_plans_total_is_price_times_quantity_over_its_procedures(client: TestClient) -> None:
    filling, crown = _procedures(client, ("Пломба", "50.00"), ("Коронка", "5.00"))
    clinic = _ok(client.post("/api/clinic", json={"name": "Улыбка"}), 201)["id"]
    plan = _ok(client.post("/api/plan", json={"title": "План 1", "clinic": clinic, "procedures": [
        {"id": filling, "tooth": 46, "price": "100.00", "quantity": 3},
        {"id": crown, "tooth": 12, "price": "250.50"}]}), 201)
    assert plan["procedures"] == [
        {"id": filling, "tooth": 46, "price": "100.00", "quantity": 3, "amount": "300.00"},
        {"id": crown, "tooth": 12, "price": "250.50", "quantity": 1, "amount": "250.50"}]
    assert (plan["total"], plan["pieces"], plan["with_vat"]) == ("550.50", 4, "660.60")
    assert (plan["cheapest"], plan["dearest"], plan["average"]) == ("100.00", "250.50", "175.25")
    assert (plan["priced"], plan["molars"]) == (2, 1)  # tooth 46 of a 50.00 procedure
    assert _get(client, "clinic", clinic)["planned_total"] == "550.50"
    seen = _get(client, "procedure", filling)
    assert (seen["planned"], seen["revenue"], seen["back_teeth"], seen["latest_tooth"]) == \
        (1, "300.00", 3, 46)

    # the pair changed inline: quantity 3 → 1, tooth 46 → 21
    plan = _ok(client.patch(f"/api/plan/{plan['id']}", json={"procedures": [
        {"id": filling, "tooth": 21, "price": "100.00", "quantity": 1}, crown]}))
    assert (plan["total"], plan["molars"], plan["pieces"]) == ("350.50", 0, 2)
    seen = _get(client, "procedure", filling)
    assert (seen["revenue"], seen["back_teeth"], seen["latest_tooth"]) == ("100.00", 0, 21)
    assert _get(client, "clinic", clinic)["planned_total"] == "350.50"

    # a PUT with a body changes one pair; from the way back too
    _ok(client.put(f"/api/plan/{plan['id']}/procedures/{crown}",
                   json={"price": "10.00", "quantity": 4, "tooth": 44}), 204)
    assert _get(client, "plan", plan["id"])["total"] == "140.00"
    assert _get(client, "procedure", crown)["back_teeth"] == 4
    _ok(client.put(f"/api/procedure/{crown}/plans/{plan['id']}", json={"price": "1.00"}), 204)
    got = _get(client, "plan", plan["id"])
    assert (got["total"], got["pieces"]) == ("101.00", 2)
    assert _get(client, "procedure", crown)["back_teeth"] == 0  # no tooth any more

    # unlinked, then the procedure deleted (set_null takes it out of the plan)
    _ok(client.delete(f"/api/plan/{plan['id']}/procedures/{crown}"), 204)
    assert _get(client, "plan", plan["id"])["total"] == "100.00"
    assert _get(client, "procedure", crown)["revenue"] == "0.00"
    _ok(client.delete(f"/api/procedure/{filling}"), 204)
    got = _get(client, "plan", plan["id"])
    assert (got["total"], got["pieces"], got["cheapest"], got["average"], got["priced"]) == \
        ("0.00", 0, None, None, 0)
    assert _get(client, "clinic", clinic)["planned_total"] == "0.00"

    # the plan deleted: the procedure's roll-ups over its pairs follow
    _ok(client.put(f"/api/plan/{plan['id']}/procedures/{crown}", json={"price": "7.00"}), 204)
    assert _get(client, "procedure", crown)["revenue"] == "7.00"
    _ok(client.delete(f"/api/plan/{plan['id']}"), 204)
    assert _get(client, "procedure", crown)["revenue"] == "0.00"
    assert _get(client, "procedure", crown)["planned"] == 0
