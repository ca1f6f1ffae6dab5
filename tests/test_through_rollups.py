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
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka
from engine.errors import ValidationFailed
from engine.storage.migrations import apply
from engine.storage.migrations import plan as migration_plan
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
  clinic: {to: clinic, reverse: plans, on_delete: set_null}  # its planned_total: a roll-up of a roll-up
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


def test_a_client_never_sends_a_pairs_formula(client: TestClient) -> None:
    (filling,) = _procedures(client, ("Пломба", None))
    refused = client.post("/api/plan", json={"title": "x", "procedures": [
        {"id": filling, "price": "1.00", "amount": "999.00"}]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "field_computed"
    assert [d["field"] for d in error["details"]] == ["procedures[0].amount"]
    assert client.get("/api/plan").json()["items"] == []  # nothing half-written
    plan = _ok(client.post("/api/plan", json={"title": "x"}), 201)["id"]
    refused = client.put(f"/api/plan/{plan}/procedures/{filling}",
                         json={"price": "1.00", "amount": "5.00"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "field_computed")
    assert [d["field"] for d in refused.json()["error"]["details"]] == ["amount"]
    refused = client.patch(f"/api/plan/{plan}", json={"procedures": [
        filling, {"id": filling + 1, "price": "1", "amount": None}]})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "procedures[1].amount"
    assert _get(client, "plan", plan)["procedures"] == []
    # OpenAPI: the pair's formula is read-only, and not in what a client writes
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    read = schemas["Plan"]["properties"]["procedures"]["items"]["properties"]["amount"]
    assert (read["readOnly"], read["x-formula"]) == (True, "price * quantity")
    written = schemas["PlanCreate"]["properties"]["procedures"]["items"]["then"]["properties"]
    assert "amount" not in written and "price" in written


def test_a_pair_the_plans_rule_or_its_fields_cannot_take_is_refused_whole(
        client: TestClient) -> None:
    filling, crown = _procedures(client, ("Пломба", None), ("Коронка", None))
    plan = _ok(client.post("/api/plan", json={"procedures": [
        {"id": filling, "price": "9000.00"}]}), 201)["id"]
    # the budget rule reads the total: a second pair past 10 000 is refused, with its message
    refused = client.put(f"/api/plan/{plan}/procedures/{crown}", json={"price": "500.00",
                                                                      "quantity": 3})
    assert refused.status_code == 422, refused.text
    assert "A plan costs at most 10 000" in refused.text
    refused = client.put(f"/api/procedure/{filling}/plans/{plan}", json={"price": "10000.01"},
                         headers={"Accept-Language": "ru"})
    assert "План стоит не больше 10 000" in refused.text
    got = _get(client, "plan", plan)
    assert (got["total"], [p["id"] for p in got["procedures"]]) == ("9000.00", [filling])
    assert _get(client, "procedure", crown)["planned"] == 0
    # a product past what money holds: 422 naming the pair's field, nothing written
    refused = client.patch(f"/api/plan/{plan}", json={"procedures": [
        {"id": filling, "price": "9999999999999999.99", "quantity": 1000}]})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "formula_out_of_range"
    assert refused.json()["error"]["details"][0]["field"] == "procedures[0].amount"
    assert _get(client, "plan", plan)["procedures"][0]["price"] == "9000.00"


def test_filter_and_sort_by_a_roll_up_of_pairs(client: TestClient) -> None:
    filling, crown = _procedures(client, ("Пломба", None), ("Коронка", None))
    for title, price in (("дорогой", "700.00"), ("дешёвый", "70.00")):
        _ok(client.post("/api/plan", json={"title": title, "procedures": [
            {"id": filling, "price": price, "quantity": 2}, {"id": crown, "price": "1"}]}), 201)
    found = client.get("/api/plan", params={"total[gte]": "500", "sort": "-total"}).json()
    assert [p["title"] for p in found["items"]] == ["дорогой"]
    ordered = client.get("/api/plan", params={"sort": "total"}).json()["items"]
    assert [p["total"] for p in ordered] == ["141.00", "1401.00"]


def test_a_role_that_may_not_see_the_link_does_not_see_what_adds_it_up(
        kt: Kartoteka, client: TestClient) -> None:
    """The manager may not see plans' procedures (`hidden: [procedures]`): the plan's roll-ups
    over its pairs are hidden too, and so is the procedure's revenue added up from those
    pairs — not the count of plans, which reads no pair."""
    (filling,) = _procedures(client, ("Пломба", None))
    plan = kt.records.create("plan", {"title": "П", "procedures": [
        {"id": filling, "price": "100.00", "quantity": 2}]})["id"]
    _, token = kt.users.add("manager@example.com", ["manager"])
    headers = {"Authorization": f"Bearer {token}"}
    seen = _ok(client.get(f"/api/plan/{plan}", headers=headers))
    assert "title" in seen
    for hidden in ("procedures", "total", "pieces", "average", "molars", "with_vat"):
        assert hidden not in seen, hidden
    seen = _ok(client.get(f"/api/procedure/{filling}", headers=headers))
    assert seen["planned"] == 1
    assert "revenue" not in seen and "back_teeth" not in seen
    refused = client.get("/api/plan", params={"total[gte]": "1"}, headers=headers)
    assert refused.status_code == 400, refused.text
    refused = client.get("/api/procedure", params={"sort": "revenue"}, headers=headers)
    assert refused.status_code == 400, refused.text


LABELLED = {
    "procedure.yaml": "entity: procedure\nfields:\n  name: {type: string}\n",
    "plan.yaml": """
entity: plan
fields:
  title: {type: string}
  teeth: {type: integer, rollup: {count: procedures.$link.label}}
  last_on: {type: date, rollup: {max: procedures.$link.due}}
links:
  procedures:
    to: procedure
    many: true
    reverse: plans
    through:
      tooth: {type: integer}
      note: {type: string}
      label: {type: string, max_length: 12, formula: "note & ' #' & tooth"}
      planned: {type: date}
      due: {type: date, formula: "planned + 14 days"}
""",
}


def test_a_pairs_formula_of_text_and_dates(make_kt: Callable[..., Kartoteka],
                                           write_setup: Callable[..., Path]) -> None:
    """Text joined in any script, a date moved by days, null propagating (no note: no
    label, not counted), and a text past the field's length refused, naming the pair."""
    kt = make_kt(write_setup(LABELLED, "labelled"))
    a, b, c = (kt.records.create("procedure", {"name": n})["id"] for n in ("a", "b", "c"))
    plan = kt.records.create("plan", {"procedures": [
        {"id": a, "tooth": 36, "note": "دندان", "planned": "2026-12-25"},
        {"id": b, "tooth": 11, "note": "牙齿", "planned": "2026-12-31"},
        {"id": c, "tooth": 48}]})
    assert [(p["label"], p["due"]) for p in plan["procedures"]] == [
        ("دندان #36", "2027-01-08"), ("牙齿 #11", "2027-01-14"), (None, None)]
    assert (plan["teeth"], plan["last_on"]) == (2, "2027-01-14")
    with pytest.raises(ValidationFailed) as refused:
        kt.records.update("plan", plan["id"], {"procedures": [
            a, {"id": b, "tooth": 11, "note": "Зубной ряд верхний"}]})
    assert refused.value.code == "formula_out_of_range"
    assert [d.field for d in refused.value.details] == ["procedures[1].label"]
    assert kt.records.get("plan", plan["id"])["teeth"] == 2  # nothing written


# -- concurrent writers -----------------------------------------------------------------------
def test_twenty_concurrent_pairs_are_all_added_up(
        kt: Kartoteka, make_kt: Callable[..., Kartoteka], setup_dir: Path) -> None:
    """20 writers at once, through three engines: ten add a pair to one plan (each its own
    procedure), ten link one procedure to their own plan. The plan's total and the
    procedure's revenue hold every pair: on PostgreSQL each writer locks the record it adds
    into before it adds up."""
    engines = [kt, make_kt(setup_dir), make_kt(setup_dir)]
    shared = kt.records.create("procedure", {"name": "общая"})["id"]
    plan = kt.records.create("plan", {"title": "общий"})["id"]
    own_procedures = [kt.records.create("procedure", {"name": f"п{i}"})["id"] for i in range(10)]
    own_plans = [kt.records.create("plan", {"title": f"план {i}"})["id"] for i in range(10)]

    def to_plan(engine: Kartoteka, i: int) -> None:
        engine.records.add_link("plan", plan, "procedures", own_procedures[i],
                                body={"price": f"1.{i:02d}", "quantity": 2})

    def to_procedure(engine: Kartoteka, i: int) -> None:
        engine.records.add_link("procedure", shared, "plans", own_plans[i],
                                body={"price": f"2.{i:02d}", "tooth": 40 + i % 8})

    together([partial(to_plan, engines[i % 3], i) for i in range(10)]
             + [partial(to_procedure, engines[i % 3], i) for i in range(10)])
    got = kt.records.get("plan", plan)
    assert (Decimal(got["total"]), got["pieces"]) == (
        sum(2 * Decimal(f"1.{i:02d}") for i in range(10)), 20)
    got = kt.records.get("procedure", shared)
    assert (Decimal(got["revenue"]), got["planned"], got["back_teeth"]) == (
        sum(Decimal(f"2.{i:02d}") for i in range(10)), 10, 10)
    _from_scratch(kt)


# -- the property: stored roll-ups equal a recomputation from scratch --------------------
def _from_scratch(kt: Kartoteka) -> None:
    """Every pair's formula and every roll-up of plans and procedures computed again in
    Python from the raw rows."""
    with kt.db.read(system="test: compare with a recomputation") as conn:
        plans = {r.id: dict(r._mapping) for r in conn.execute(kt.storage["plan"].table.select())}
        procedures = {r.id: dict(r._mapping)
                      for r in conn.execute(kt.storage["procedure"].table.select())}
        clinics = {r.id: dict(r._mapping)
                   for r in conn.execute(kt.storage["clinic"].table.select())}
        pairs = [dict(r._mapping) for r in conn.execute(
            kt.storage["plan"].join_tables["procedures"].select())]
    for pair in pairs:
        assert pair["amount"] == pair["price"] * pair["quantity"], pair
    money = Decimal("0.01")
    for plan_id, plan in plans.items():
        mine = [p for p in pairs if p["source_id"] == plan_id]
        prices = [p["price"] for p in mine]
        expected = {
            "total": sum((p["amount"] for p in mine), Decimal(0)),
            "pieces": sum(p["quantity"] for p in mine),
            "cheapest": min(prices, default=None), "dearest": max(prices, default=None),
            "average": (sum(prices) / len(prices)).quantize(money, ROUND_HALF_UP) if prices else None,
            "priced": len(prices),
            "molars": sum(1 for p in mine if p["tooth"] is not None and p["tooth"] >= 40
                          and (procedures[p["target_id"]]["list_price"] or 0) >= 10),
        }
        assert {k: plan[k] for k in expected} == expected, plan_id
        assert plan["with_vat"] == (plan["total"] * Decimal("1.2")).quantize(money, ROUND_HALF_UP)
    for procedure_id, procedure in procedures.items():
        mine = [p for p in pairs if p["target_id"] == procedure_id]
        teeth = [p["tooth"] for p in mine if p["tooth"] is not None]
        expected = {
            "planned": len(mine),
            "revenue": sum((p["amount"] for p in mine), Decimal(0)),
            "back_teeth": sum(p["quantity"] for p in mine
                              if p["tooth"] is not None and p["tooth"] >= 40),
            "latest_tooth": max(teeth, default=None),
        }
        assert {k: procedure[k] for k in expected} == expected, procedure_id
    for clinic_id, clinic in clinics.items():
        assert clinic["planned_total"] == sum(
            (p["total"] for p in plans.values() if p["clinic_id"] == clinic_id), Decimal(0))


ACTIONS = st.lists(st.tuples(
    st.sampled_from(["procedure", "plan", "clinic", "relink", "put_pair", "put_back",
                     "unlink", "delete_plan", "delete_procedure", "list_price", "move_plan"]),
    st.integers(0, 4), st.integers(0, 4), st.integers(11, 48)), max_size=25)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_stored_roll_ups_of_pairs_equal_a_recomputation(
        make_kt: Callable[..., Kartoteka], setup_dir: Path, actions: list[Any]) -> None:
    kt = make_kt(setup_dir)
    made: dict[str, list[int]] = {"procedure": [], "plan": [], "clinic": []}

    def pick(entity: str, index: int) -> int | None:
        ids = made[entity]
        return ids[index % len(ids)] if ids else None

    def pairs(first: int, second: int, tooth: int) -> list[Any]:
        chosen = {pick("procedure", first + k) for k in range(second % 3)} - {None}
        return [{"id": p, "price": f"{tooth}.{second}5", "quantity": second + 1,
                 "tooth": tooth} if (p + tooth) % 3 else p for p in sorted(chosen)]  # type: ignore[operator]

    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        for action, first, second, tooth in actions:
            plan, procedure = pick("plan", first), pick("procedure", second)
            if action == "procedure":
                made["procedure"].append(_ok(client.post("/api/procedure", json={
                    "name": "Процедура", "list_price": f"{tooth - 20}.00"}), 201)["id"])
            elif action == "clinic":
                made["clinic"].append(_ok(client.post("/api/clinic", json={}), 201)["id"])
            elif action == "plan":
                body = {"clinic": pick("clinic", second),
                        "procedures": [p for p in pairs(first, second, tooth)
                                       if isinstance(p, dict)]}
                made["plan"].append(_ok(client.post("/api/plan", json=body), 201)["id"])
            elif action == "relink" and plan is not None:
                # a bare id keeps a linked pair's values; a new pair without its required
                # price is refused whole (and the roll-ups stay as they were)
                answer = client.patch(f"/api/plan/{plan}",
                                      json={"procedures": pairs(first, second, tooth)})
                assert answer.status_code == 200 or "is required" in answer.text, answer.text
            elif action in ("put_pair", "put_back") and plan and procedure:
                body = {"price": f"{second}.{tooth}", "quantity": first + 1,
                        "tooth": tooth if second % 2 else None}
                path = f"/api/plan/{plan}/procedures/{procedure}" if action == "put_pair" \
                    else f"/api/procedure/{procedure}/plans/{plan}"
                _ok(client.put(path, json=body), 204)
            elif action == "unlink" and plan and procedure:
                assert client.delete(f"/api/plan/{plan}/procedures/{procedure}").status_code \
                    in (204, 404)
            elif action.startswith("delete_"):
                entity = action.removeprefix("delete_")
                target = pick(entity, first)
                if target is not None:
                    _ok(client.delete(f"/api/{entity}/{target}"), 204)
                    made[entity].remove(target)
            elif action == "list_price" and procedure is not None:
                _ok(client.patch(f"/api/procedure/{procedure}",
                                 json={"list_price": f"{tooth - 30}.00"}))
            elif action == "move_plan" and plan is not None:
                _ok(client.patch(f"/api/plan/{plan}", json={"clinic": pick("clinic", second)}))
    _from_scratch(kt)
    kt.close()


# -- migrations ---------------------------------------------------------------------------------
def test_adding_and_changing_a_pairs_formula_and_its_roll_up_is_a_planned_migration(
        db_url: str, open_kt: Callable[..., Kartoteka],
        write_setup: Callable[..., Path]) -> None:
    plain = {
        "procedure.yaml": "entity: procedure\nfields:\n  name: {type: string}\n",
        "plan.yaml": "entity: plan\nfields:\n  title: {type: string}\nlinks:\n"
                     "  procedures:\n    to: procedure\n    many: true\n    reverse: plans\n"
                     "    through:\n      price: {type: money}\n"
                     "      quantity: {type: integer, default: 1}\n",
    }
    first = open_kt(write_setup(plain, "v1"), db_url)
    first.migrate()
    a, b = (first.records.create("procedure", {"name": n})["id"] for n in ("A", "B"))
    first.records.create("plan", {"title": "P1", "procedures": [
        {"id": a, "price": "10.10", "quantity": 3}, {"id": b, "price": "0.05"}]})
    first.records.create("plan", {"title": "P2", "procedures": [{"id": a, "price": "1"}]})
    first.close()

    computed = {
        "procedure.yaml": plain["procedure.yaml"]
        + "  revenue: {type: money, rollup: {sum: plans.$link.amount}}\n",
        "plan.yaml": plain["plan.yaml"].replace(
            "  title: {type: string}\n",
            "  title: {type: string}\n  total: {type: money, rollup: {sum: procedures.$link.amount}}\n")
        + "      amount: {type: money, formula: \"price * quantity\"}\n",
    }
    second = open_kt(write_setup(computed, "v2"), db_url)
    steps = [str(step) for step in migration_plan(second.storage, second.db).steps]
    assert steps[-3:] == ["recompute 3 pairs of plan.procedures.$link.amount (new formula)",
                          "recompute 2 rows of plan.total (new roll-up)",
                          "recompute 2 rows of procedure.revenue (new roll-up)"], steps
    heard: list[str] = []
    apply(second.storage, second.db, on_progress=heard.append)
    assert "  plan.procedures: 3 of 3 pairs computed" in heard
    assert {r["title"]: r["total"] for r in _all(second, "plan")} == {"P1": "30.35", "P2": "1.00"}
    assert {r["name"]: r["revenue"] for r in _all(second, "procedure")} == \
        {"A": "31.30", "B": "0.05"}
    assert migration_plan(second.storage, second.db).up_to_date
    second.close()

    changed = {**computed, "plan.yaml": computed["plan.yaml"].replace(
        "price * quantity", "price * quantity * 2")}
    third = open_kt(write_setup(changed, "v3"), db_url)
    steps = [str(step) for step in migration_plan(third.storage, third.db).steps]
    assert steps == ["recompute 3 pairs of plan.procedures.$link.amount (formula changed)",
                     "recompute 2 rows of plan.total (reads a recomputed formula)",
                     "recompute 2 rows of procedure.revenue (reads a recomputed formula)"], steps
    third.migrate()
    assert {r["title"]: r["total"] for r in _all(third, "plan")} == {"P1": "60.70", "P2": "2.00"}
    third.close()


def _all(kt: Kartoteka, entity: str) -> list[Record]:
    return kt.records.list_page(entity, [("limit", "100")]).items
