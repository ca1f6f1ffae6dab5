"""POST /api/{e}/bulk on SQLite and PostgreSQL, through real HTTP: both modes, upserts by a
unique field and by a unique set, links by a target's unique field, every bad row reported,
and all_or_none leaving the database exactly as it was (rows and history)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from engine import Kartoteka
from tests.counting import rows_per_table

SETUP = {
    "setup.yaml": """
        name: Bulk test
        languages: [en, ru]
        roles:
          manager:
            company: {create: all, read: all, update: own, hidden: [secret]}
            invoice: {create: all, read: all, update: all}
    """,
    "company.yaml": """
        owner: true
        fields:
          name: {type: string, required: true, max_length: 100}
          inn:  {type: string, unique: true, pattern: "^[0-9]{10}$"}
          city: string
          secret: string
          score: {type: integer, min: 0, max: 100}
          email: {type: email, unique: {ignore_case: true}}
          double: {type: integer, formula: "coalesce(score, 0) * 2"}
          billed: {type: integer, rollup: {sum: invoices.amount}}
        links:
          parent: {to: company}
        rules:
          not_forbidden:
            require: {name: {ne: Forbidden}}
            fields: [name]
            message: "That name is forbidden"
    """,
    "invoice.yaml": """
        fields:
          number: {type: string, required: true}
          amount: integer
        links:
          company: {to: company, required: true, reverse: invoices}
        unique: [[company, number]]
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


def counts(kt: Kartoteka) -> tuple[int, ...]:
    """Rows of every table (records, history, links): what all_or_none must leave alone."""
    return rows_per_table(kt)


def bulk(http: TestClient, entity: str, body: Any, **headers: str) -> Any:
    return http.post(f"/api/{entity}/bulk", json=body, headers=headers)


def test_creates_updates_and_upserts_in_one_call(kt: Kartoteka, http: TestClient) -> None:
    made = bulk(http, "company", {"rows": [
        {"name": "Ромашка", "inn": "1655000001", "city": "Казань"},
        {"name": "شرکت پارس", "inn": "1655000002"},
        {"name": "北京贸易", "inn": "1655000003", "parent": {"inn": "1655000001"}},
    ]})
    assert made.status_code == 200, made.text
    answer = made.json()
    assert answer["created"] == 3 and answer["failed"] == 0
    assert [r["status"] for r in answer["rows"]] == [201, 201, 201]
    ids = [r["id"] for r in answer["rows"]]
    third = http.get(f"/api/company/{ids[2]}").json()
    assert third["name"] == "北京贸易" and third["parent"] == ids[0]

    again = bulk(http, "company", {"mode": "per_row", "upsert_by": "inn", "rows": [
        {"inn": "1655000002", "name": "شرکت پارس نو"},  # exists: updated
        {"inn": "1655000004", "name": "Новая"},  # new: created
        {"id": ids[0], "version": 1, "city": "Москва"},  # by id, with its version
    ]}).json()
    assert [(r["status"], r.get("version")) for r in again["rows"]] == [(200, 2), (201, 1), (200, 2)]
    assert again["rows"][0]["id"] == ids[1]
    assert http.get(f"/api/company/{ids[1]}").json()["name"] == "شرکت پارس نو"
    history = http.get(f"/api/company/{ids[1]}/timeline").json()
    assert len(history["items"]) == 2  # created, then changed: as single writes


def test_upsert_by_a_unique_set_with_links_by_key(kt: Kartoteka, http: TestClient) -> None:
    company = http.post("/api/company", json={"name": "A", "inn": "1000000001"}).json()
    rows = [{"company": {"inn": "1000000001"}, "number": "N-1", "amount": 10},
            {"company": company["id"], "number": "N-1", "amount": 20}]  # same key: an update
    answer = bulk(http, "invoice", {"upsert_by": ["number", "company"], "rows": rows}).json()
    assert [r["status"] for r in answer["rows"]] == [201, 200]
    assert answer["rows"][0]["id"] == answer["rows"][1]["id"]
    listed = http.get("/api/invoice").json()["items"]
    assert [(i["number"], i["amount"]) for i in listed] == [("N-1", 20)]


def test_upsert_by_what_is_not_unique_is_refused_naming_what_is(http: TestClient) -> None:
    for upsert_by in ("city", ["name", "city"], 5, ["inn", "inn"]):
        answer = bulk(http, "company", {"upsert_by": upsert_by, "rows": [{"name": "x"}]})
        assert answer.status_code == 400, answer.text
        assert "what is: inn" in answer.text
    answer = bulk(http, "invoice", {"upsert_by": "number", "rows": [{"number": "1"}]})
    assert answer.status_code == 400 and "[company, number]" in answer.text


def test_all_or_none_reports_every_bad_row_and_writes_nothing(
        kt: Kartoteka, http: TestClient) -> None:
    http.post("/api/company", json={"name": "Old", "inn": "2000000001"})
    before = counts(kt)
    answer = bulk(http, "company", {"mode": "all_or_none", "rows": [
        {"name": "Хорошая", "inn": "2000000002"},
        {"name": "Forbidden"},  # rule
        {"name": "x", "colour": "red"},  # unknown field
        {"name": "y", "inn": "2000000001"},  # taken
        {"name": "z", "parent": {"inn": "9999999999"}},  # no such link target
        {"name": "w", "score": 101},  # at the edge + 1
        "not a row",
        {"id": 999999, "name": "nobody"},
    ]})
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["error"]["code"] == "bulk_failed"
    assert sorted({d["row"] for d in error["error"]["details"]}) == [1, 2, 3, 4, 5, 6, 7]
    statuses = {r["index"]: (r["status"], r["error"]["code"]) for r in error["rows"]}
    assert statuses[1] == (422, "rule_failed")
    assert statuses[3][0] == 409
    assert statuses[4] == (422, "link_not_found")
    assert statuses[7][0] == 404
    assert any(d["field"] == "rows[2].colour" for d in error["error"]["details"])
    assert counts(kt) == before
    assert http.get("/api/company").json()["total"] == 1


def test_per_row_writes_the_good_rows_only(kt: Kartoteka, http: TestClient) -> None:
    first = http.post("/api/company", json={"name": "A", "inn": "3000000001"}).json()
    answer = bulk(http, "company", {"mode": "per_row", "rows": [
        {"name": "Good", "inn": "3000000002"},
        {"name": "Bad", "inn": "3000000003", "score": -1},
        {"id": first["id"], "version": 7, "name": "stale"},
        {"name": "Also good", "city": "Tehran"},
        {"name": "Computed?", "id": "x"},
    ]})
    assert answer.status_code == 200
    rows = answer.json()["rows"]
    assert [r["status"] for r in rows] == [201, 422, 412, 201, 422]
    names = sorted(r["name"] for r in http.get("/api/company").json()["items"])
    assert names == ["A", "Also good", "Good"]  # the bad row left nothing behind


def test_roles_hidden_fields_and_update_rights(kt: Kartoteka, http: TestClient) -> None:
    boss, _ = kt.users.add("boss@example.com", ["admin"])
    manager, token = kt.users.add("m@example.com", ["manager"])
    other = {"Authorization": f"Bearer {kt.users.add('o@example.com', ['admin'])[1]}"}
    theirs = http.post("/api/company", json={"name": "Theirs", "inn": "4000000001"},
                       headers=other).json()
    auth = {"Authorization": f"Bearer {token}"}
    answer = http.post("/api/company/bulk", headers=auth, json={"mode": "per_row", "rows": [
        {"name": "Mine", "inn": "4000000002"},
        {"name": "Secretive", "secret": "x"},
        {"id": theirs["id"], "name": "Taken over"},
    ]})
    rows = answer.json()["rows"]
    assert [r["status"] for r in rows] == [201, 403, 403], answer.text
    assert http.get(f"/api/company/{theirs['id']}", headers=auth).json()["name"] == "Theirs"
    assert boss.id and manager.id


def test_limits_and_malformed_calls(http: TestClient) -> None:
    too_many = bulk(http, "company", {"rows": [{"name": f"c{i}"} for i in range(1001)]})
    assert too_many.status_code == 400 and "at most 1000" in too_many.text
    for body in ([], {"rows": []}, {"rows": "x"}, {"mode": "some", "rows": [{}]},
                 {"rows": [{}], "extra": 1}):
        answer = bulk(http, "company", body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "invalid_bulk"
    assert http.get("/api/company/bulk").status_code == 405


def test_a_thousand_rows_fit_in_one_call(http: TestClient) -> None:
    rows = [{"name": f"Компания {i} — 公司 — شرکت " + "x" * 50, "inn": f"{5000000000 + i}",
             "city": "Санкт-Петербург"} for i in range(1000)]
    answer = bulk(http, "company", {"rows": rows})
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["created"] == 1000
    assert http.get("/api/company?limit=1").json()["total"] == 1000


def test_openapi_has_the_bulk_schemas(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"CompanyBulk", "CompanyBulkResult", "InvoiceBulk"} <= set(components)
    row = components["InvoiceBulk"]["properties"]["rows"]["items"]
    assert row["additionalProperties"] is False and "anyOf" in row["properties"]["company"]
    assert "/api/company/bulk" in schema["paths"]


def test_formulas_rollups_and_a_key_that_ignores_case(kt: Kartoteka, http: TestClient) -> None:
    made = bulk(http, "company", {"upsert_by": "email", "rows": [
        {"name": "Вега", "email": "Info@Vega.example", "score": 21},
        {"name": "Вега Плюс", "email": "info@vega.EXAMPLE"},  # the same key, other case
    ]}).json()
    assert [r["status"] for r in made["rows"]] == [201, 200]
    company = http.get(f"/api/company/{made['rows'][0]['id']}").json()
    assert (company["name"], company["double"]) == ("Вега Плюс", 42)
    lines = bulk(http, "invoice", {"rows": [
        {"company": {"email": "INFO@vega.example"}, "number": str(n), "amount": n}
        for n in (1, 2, 3)]}).json()
    assert lines["created"] == 3, lines
    assert http.get(f"/api/company/{company['id']}").json()["billed"] == 6
    refused = bulk(http, "company", {"mode": "per_row", "rows": [
        {"id": company["id"], "double": 1}]}).json()["rows"][0]
    assert (refused["status"], refused["error"]["code"]) == (422, "field_computed")


def test_an_all_or_none_batch_with_a_key_twice_is_one_record(
        kt: Kartoteka, http: TestClient) -> None:
    before = counts(kt)
    answer = bulk(http, "company", {"upsert_by": ["inn"], "rows": [
        {"name": "Первая", "inn": "6000000001"}, {"name": "Вторая", "inn": "6000000001"},
        {"name": "Bad", "score": "many"}]})
    assert answer.status_code == 422 and [r["index"] for r in answer.json()["rows"]] == [2]
    assert counts(kt) == before
    answer = bulk(http, "company", {"upsert_by": ["inn"], "rows": [
        {"name": "Первая", "inn": "6000000001"}, {"name": "Вторая", "inn": "6000000001"}]})
    assert [r["status"] for r in answer.json()["rows"]] == [201, 200]
    assert [c["name"] for c in http.get("/api/company").json()["items"]] == ["Вторая"]


def test_keys_of_the_wrong_type_are_row_errors(http: TestClient) -> None:
    answer = bulk(http, "company", {"mode": "per_row", "upsert_by": "inn", "rows": [
        {"name": "a", "inn": [1, 2]}, {"name": "b", "inn": None}, {"name": "c", "inn": "12"},
        {"name": "d", "parent": {"inn": {"x": 1}}}, {"name": "e", "parent": {"city": "x"}},
        {"name": "f", "parent": {"inn": "1655000001", "extra": 1}},
        {"name": "g", "inn": "7000000001", "version": 2}, {"id": True, "name": "h"}]})
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    # g: a version for a key no record has is a precondition on nothing, as If-Match is
    assert [r["status"] for r in rows] == [422] * 6 + [412, 422], rows
    assert rows[0]["error"]["details"][0]["field"] == "inn"
    assert "unique key of company: inn, email" in rows[4]["error"]["details"][0]["problem"]
    assert rows[6]["error"]["code"] == "stale_version"
    assert "leave version out to create it" in rows[6]["error"]["message"]
