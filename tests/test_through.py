"""Links that carry data, over HTTP on both databases: a plan's procedures with a tooth, a
price and a quantity per pair. Created from objects and from bare ids, 422s naming the
pair's field, PUT of one pair with a body, PATCH replacing the list, text in several
scripts, the record's history, located setup errors, and a migration adding a field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from engine import Kartoteka, check_setup
from engine.storage.migrations import apply
from engine.storage.migrations.runner import PlanRefused

Record = dict[str, Any]

PROCEDURE = """
entity: procedure
fields:
  name: {type: string, required: true}
"""
PLAN = """
entity: plan
fields:
  title: {type: string}
links:
  procedures:
    to: procedure
    many: true
    reverse: plans
    through:
      tooth: {type: integer, min: 11, max: 48}
      price: {type: money, required: true}
      quantity: {type: integer, default: 1}
      note: {type: string, max_length: 40}
  helpers: {to: procedure, many: true}
"""
FILES = {"procedure.yaml": PROCEDURE, "plan.yaml": PLAN}


@pytest.fixture
def client(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Iterator[TestClient]:
    kt = make_kt(write_setup(FILES))
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def _procedures(client: TestClient, *names: str) -> list[int]:
    ids = []
    for name in names:
        response = client.post("/api/procedure", json={"name": name})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def _problems(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {d["field"]: d["problem"] for d in response.json()["error"]["details"]}


def test_create_with_objects_reads_back_sorted_with_defaults(client: TestClient) -> None:
    a, b = _procedures(client, "Filling", "Crown")
    response = client.post("/api/plan", json={"title": "P", "procedures": [
        {"id": b, "tooth": 12, "price": "100.00"},
        {"id": a, "price": "50", "quantity": 2, "tooth": None}], "helpers": [b, a]})
    assert response.status_code == 201, response.text
    created = response.json()
    expected = [{"id": a, "tooth": None, "price": "50.00", "quantity": 2, "note": None},
                {"id": b, "tooth": 12, "price": "100.00", "quantity": 1, "note": None}]
    assert created["procedures"] == expected
    assert created["helpers"] == [a, b]  # a link without `through` stays a list of ids
    assert client.get(f"/api/plan/{created['id']}").json()["procedures"] == expected
    listed = client.get("/api/plan").json()["items"][0]
    assert listed["procedures"] == expected
    included = client.get(f"/api/plan/{created['id']}", params={"include": "procedures"}).json()
    assert [(p["id"], p["price"], p["record"]["name"]) for p in included["procedures"]] == [
        (a, "50.00", "Filling"), (b, "100.00", "Crown")]


def test_bare_ids_take_defaults_and_a_required_field_without_one_is_422(
        client: TestClient) -> None:
    (a,) = _procedures(client, "Filling")
    problems = _problems(client.post("/api/plan", json={"procedures": [a]}))
    assert problems == {"procedures[0].price": "is required"}
    assert client.get("/api/plan").json()["total"] == 0  # nothing half-written


def test_through_values_are_validated_like_fields(client: TestClient) -> None:
    a, b = _procedures(client, "Filling", "Crown")
    problems = _problems(client.post("/api/plan", json={"procedures": [
        {"id": a, "price": "abc", "tooth": 10},
        {"id": b, "price": "1", "tooth": 49, "colour": "red"}]}))
    assert set(problems) >= {"procedures[0].tooth", "procedures[1].tooth"}
    assert "at least 11" in problems["procedures[0].tooth"]
    assert "at most 48" in problems["procedures[1].tooth"]
    problems = _problems(client.post("/api/plan", json={"procedures": [
        {"id": a, "price": "abc"}]}))
    assert list(problems) == ["procedures[0].price"]
    problems = _problems(client.post("/api/plan", json={"procedures": [
        {"id": a, "price": "1"}, a]}))
    assert problems == {"procedures[1]": f"lists id {a} twice"}
    problems = _problems(client.post("/api/plan", json={"procedures": [{"price": "1"}]}))
    assert "procedures[0].id" in problems
    problems = _problems(client.post("/api/plan", json={"procedures": [{"id": 999, "price": "1"}]}))
    assert "procedures" in problems
    assert client.get("/api/plan").json()["total"] == 0


def test_text_in_several_scripts(client: TestClient) -> None:
    (a,) = _procedures(client, "Пломба")
    for note in ("دندان آسیا", "Пломба на зуб", "补牙（左上）"):
        response = client.post("/api/plan", json={"procedures": [
            {"id": a, "price": "1.50", "note": note}]})
        assert response.status_code == 201, response.text
        assert response.json()["procedures"][0]["note"] == note
    problems = _problems(client.post("/api/plan", json={"procedures": [
        {"id": a, "price": "1", "note": "字" * 41}]}))
    assert "procedures[0].note" in problems


def test_patch_replaces_the_list_and_history_shows_the_values(client: TestClient) -> None:
    a, b, c = _procedures(client, "A", "B", "C")
    plan = client.post("/api/plan", json={"procedures": [
        {"id": a, "price": "10"}, {"id": b, "price": "20", "tooth": 21}]}).json()
    url = f"/api/plan/{plan['id']}"
    # a bare id keeps the pair's values; an object replaces them; c is new
    response = client.patch(url, json={"procedures": [
        b, {"id": a, "price": "11", "quantity": 3}, {"id": c, "price": "30"}]})
    assert response.status_code == 200, response.text
    assert [(p["id"], p["price"], p["quantity"], p["tooth"])
            for p in response.json()["procedures"]] == [
        (a, "11.00", 3, None), (b, "20.00", 1, 21), (c, "30.00", 1, None)]
    assert response.json()["version"] == plan["version"] + 1
    same = client.patch(url, json={"procedures": [a, b, c]})
    assert same.json()["version"] == plan["version"] + 1  # nothing changed
    assert _problems(client.patch(url, json={"procedures": [
        {"id": a, "quantity": 2}]})) == {"procedures[0].price": "is required"}
    removed = client.patch(url, json={"procedures": [{"id": c, "price": "30"}]})
    assert [p["id"] for p in removed.json()["procedures"]] == [c]
    timeline = client.get(f"{url}/timeline").json()["items"]
    changes = [i for i in timeline if i["type"] == "change" and "procedures" in
               (i.get("changes") or {})]
    assert changes, timeline
    texts = str(changes)
    assert "11.00" in texts and "10.00" in texts


def test_put_one_pair_with_a_body(client: TestClient) -> None:
    a, b = _procedures(client, "A", "B")
    plan = client.post("/api/plan", json={"title": "P"}).json()
    url = f"/api/plan/{plan['id']}/procedures"
    assert client.put(f"{url}/{a}", json={"price": "5", "tooth": 18}).status_code == 204
    assert client.put(f"{url}/{a}", json={"price": "6"}).status_code == 204  # replaced
    assert client.get(f"/api/plan/{plan['id']}").json()["procedures"] == [
        {"id": a, "tooth": None, "price": "6.00", "quantity": 1, "note": None}]
    assert _problems(client.put(f"{url}/{b}")) == {"price": "is required"}
    problems = _problems(client.put(f"{url}/{b}", json={"price": "1", "tooth": 99, "colr": 1}))
    assert set(problems) == {"tooth", "colr"}
    assert client.put(f"{url}/{b}", json=[1]).status_code == 422
    assert client.put(f"{url}/999", json={"price": "1"}).status_code in (404, 422)
    assert len(client.get(f"/api/plan/{plan['id']}").json()["procedures"]) == 1
    # a plain many-to-many link takes no body
    helpers = f"/api/plan/{plan['id']}/helpers/{a}"
    assert client.put(helpers).status_code == 204
    assert client.put(helpers, json={"price": "1"}).status_code == 422
    assert client.delete(f"{url}/{a}").status_code == 204
    assert client.get(f"/api/plan/{plan['id']}").json()["procedures"] == []


def test_linked_lists_carry_the_pair_values_both_ways(client: TestClient) -> None:
    a, b = _procedures(client, "A", "B")
    plan = client.post("/api/plan", json={"procedures": [
        {"id": a, "price": "5", "tooth": 11}, {"id": b, "price": "6"}]}).json()
    page = client.get(f"/api/plan/{plan['id']}/procedures", params={"sort": "id"}).json()
    assert [(i["name"], i["$link"]["price"], i["$link"]["tooth"]) for i in page["items"]] == [
        ("A", "5.00", 11), ("B", "6.00", None)]
    back = client.get(f"/api/procedure/{a}/plans").json()["items"]
    assert [(i["id"], i["$link"]["price"]) for i in back] == [(plan["id"], "5.00")]
    # a pair written from the other end, with a body
    other = client.post("/api/plan", json={"title": "Q"}).json()
    assert client.put(f"/api/procedure/{b}/plans/{other['id']}",
                      json={"price": "9.99", "tooth": 48}).status_code == 204
    assert client.get(f"/api/plan/{other['id']}").json()["procedures"] == [
        {"id": b, "tooth": 48, "price": "9.99", "quantity": 1, "note": None}]


def test_schemas_say_the_link_is_a_list_of_objects(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Plan"]
    items = schema["properties"]["procedures"]["items"]
    assert set(items["properties"]) >= {"id", "tooth", "price", "quantity", "record"}


def test_setup_errors_are_located(write_setup: Callable[..., Path]) -> None:
    def errors(plan: str, name: str) -> str:
        folder = write_setup({"procedure.yaml": PROCEDURE, "plan.yaml": plan}, name)
        return "\n".join(str(d) for d in check_setup(folder).diagnostics)

    computed = PLAN.replace("quantity: {type: integer, default: 1}",
                            "quantity: {type: integer, rollup: {count: plans}}")
    assert "plan.yaml:" in errors(computed, "rollup")
    assert "links.procedures.through.quantity.rollup: unknown key 'rollup'" in errors(
        computed, "rollup2")  # a pair adds up nothing (a formula of its fields it may have)
    bad = PLAN.replace("helpers: {to: procedure, many: true}",
                       "helpers: {to: procedure, through: {x: {type: integer}}}")
    bad = bad.replace("note: {type: string, max_length: 40}", "note: {type: colour}")
    bad = bad.replace("tooth: {type: integer, min: 11, max: 48}", "id: {type: integer}")
    text = errors(bad, "other")
    assert "links.helpers.through: only a many-to-many link can carry fields" in text
    assert "links.procedures.through.note" in text and "unknown field type 'colour'" in text
    assert "links.procedures.through.id: 'id' is managed by Kartoteka" in text


def test_migration_adds_a_through_field(open_kt: Callable[..., Kartoteka], db_url: str,
                                        write_setup: Callable[..., Path],
                                        tmp_path: Path) -> None:
    first = open_kt(write_setup({"procedure.yaml": PROCEDURE, "plan.yaml": PLAN}, "v1"), db_url)
    first.migrate()
    procedure = first.records.create("procedure", {"name": "A"})["id"]
    plan = first.records.create("plan", {"procedures": [{"id": procedure, "price": "7"}]})["id"]
    first.close()
    more = PLAN.replace("      note:", "      surface: {type: string, default: occlusal}\n      note:")
    second = open_kt(write_setup({"procedure.yaml": PROCEDURE, "plan.yaml": more}, "v2"), db_url)
    second.migrate()
    try:
        pairs = second.records.get("plan", plan)["procedures"]
        assert pairs == [{"id": procedure, "tooth": None, "price": "7.00", "quantity": 1,
                          "surface": None, "note": None}]
        second.records.update("plan", plan, {"procedures": [
            {"id": procedure, "price": "7", "surface": "буккальная"}]})
        assert second.records.get("plan", plan)["procedures"][0]["surface"] == "буккальная"
    finally:
        second.close()
    fewer = PLAN.replace("      tooth: {type: integer, min: 11, max: 48}\n", "")
    third = open_kt(write_setup({"procedure.yaml": PROCEDURE, "plan.yaml": fewer}, "v3"), db_url)
    with pytest.raises(PlanRefused, match=r"remove column plan__procedures\.tooth"):
        third.migrate()  # dropping a through field loses data: asked for, as for a field
    apply(third.storage, third.db, allow_data_loss=True, backup_dir=tmp_path / "backup")
    try:
        assert "tooth" not in third.records.get("plan", plan)["procedures"][0]
        assert third.describe()["entities"]["plan"]["links"]["procedures"]["through"]["price"][
            "required"] is True
    finally:
        third.close()
