"""Duplicate control (`duplicates:`) on SQLite and PostgreSQL, through real HTTP: warn,
confirm and block on create, patch, bulk (both modes) and import; Russian, Persian and
Chinese names; the caller's scope (a candidate they cannot read is never named);
`GET .../duplicates`; merges that keep every link, pair, history and comment, and merges
refused with nothing changed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from engine import Kartoteka
from engine.records.duplicates import DuplicateFound
from engine.setup.duplicates import blocking_keys, normal_text, normaliser
from engine.types.fields import PhoneType
from tests.callers import Caller, made
from tests.counting import rows_per_table

CONFIRM = {"X-Confirm-Duplicate": "true"}

SETUP = {
    "setup.yaml": """
        name: Duplicates test
        languages: [en, ru]
        roles:
          manager:
            client: {create: all, read: own, update: own, delete: own}
            deal: {create: all, read: all, update: all, delete: all}
            task: {create: all, read: all, update: all}
            product: {read: all}
            tag: {read: all}
          viewer:
            client: {create: all, read: all}
    """,
    "client.yaml": """
        owner: true
        title: "{name} ({city})"
        fields:
          name: {type: string, required: true, max_length: 200}
          email: email
          phone: phone
          city: string
          inn: string
          notes: text
        links:
          products: {to: product, many: true, through: {price: money}, reverse: clients}
          tags: {to: tag, many: true}
          merge: {to: tag}
        duplicates:
          rules:
            same_email: {exact: email}
            same_phone: {exact: phone}
            similar_name: {similar: name, within: [city], threshold: 85}
            same_inn: {exact: inn, mode: block}
    """,
    "deal.yaml": """
        fields:
          number: {type: string, required: true}
        links:
          client: {to: client, required: true, reverse: deals}
    """,
    "task.yaml": """
        fields:
          subject: {type: string, required: true}
        links:
          about: {to: [client, deal]}
    """,
    "product.yaml": """
        fields:
          name: {type: string, required: true}
    """,
    "tag.yaml": """
        fields:
          name: {type: string, required: true}
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


def refused(answer: Any, code: str = "possible_duplicate") -> dict[str, Any]:
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    return dict(error)


def clients(kt: Kartoteka) -> int:
    with kt.db.read(system="test: counting") as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM client")).scalar_one())


# -- warn, confirm, block ---------------------------------------------------------------------
def test_a_possible_duplicate_is_refused_until_confirmed(kt: Kartoteka, http: TestClient) -> None:
    first = made(http.post("/api/client", json={"name": "ООО «Ромашка»", "city": "Казань"}))
    before = rows_per_table(kt)
    error = refused(http.post("/api/client", json={"name": "Ромашка ООО", "city": "Казань"}))
    assert rows_per_table(kt) == before  # nothing written, not even history
    [candidate] = error["details"]
    assert candidate["id"] == first["id"] and candidate["rule"] == "similar_name"
    assert candidate["title"] == "ООО «Ромашка» (Казань)" and candidate["score"] == 100
    assert candidate["field"] == "name" and candidate["mode"] == "warn"
    assert "X-Confirm-Duplicate: true" in error["message"]
    # another city is another client; a confirmed duplicate is written
    made(http.post("/api/client", json={"name": "Ромашка ООО", "city": "Москва"}))
    made(http.post("/api/client", json={"name": "Ромашка ООО", "city": "Казань"},
                   headers=CONFIRM))
    made(http.post("/api/client", json={"name": "Ромашка ООО"}))  # no city: not compared
    assert http.post("/api/client", json={"name": "x"},
                     headers={"X-Confirm-Duplicate": "perhaps"}).status_code == 400


def test_exact_rules_ignore_case_spaces_and_how_a_phone_is_written(kt: Kartoteka,
                                                                   http: TestClient) -> None:
    made(http.post("/api/client", json={"name": "Anna", "email": "Anna@Example.com",
                                        "phone": "+98 912 123 4567"}))
    email = refused(http.post("/api/client", json={"name": "B", "email": "anna@example.COM"}))
    assert [d["rule"] for d in email["details"]] == ["same_email"]
    phone = refused(http.post("/api/client", json={"name": "C", "phone": "+98 (912) 123-45-67"}))
    assert [d["rule"] for d in phone["details"]] == ["same_phone"]
    made(http.post("/api/client", json={"name": "D", "phone": "+98 912 123 4568"}))


def test_a_blocking_rule_refuses_even_when_confirmed(kt: Kartoteka, http: TestClient) -> None:
    made(http.post("/api/client", json={"name": "Альфа", "inn": "7701 234-567"}))
    error = refused(http.post("/api/client", json={"name": "Бета", "inn": "7701234567"},
                              headers=CONFIRM), "duplicate")
    assert error["details"][0]["rule"] == "same_inn" and error["details"][0]["mode"] == "block"
    assert clients(kt) == 1


def test_a_patch_is_checked_when_it_changes_what_a_rule_compares(kt: Kartoteka,
                                                                  http: TestClient) -> None:
    made(http.post("/api/client", json={"name": "Anna", "email": "anna@example.com"}))
    other = made(http.post("/api/client", json={"name": "Boris"}))
    path = f"/api/client/{other['id']}"
    made(http.patch(path, json={"notes": "unrelated"}), 200)
    refused(http.patch(path, json={"email": "ANNA@example.com"}))
    assert made(http.get(path), 200)["email"] is None
    patched = made(http.patch(path, json={"email": "anna@example.com"}, headers=CONFIRM), 200)
    assert patched["email"] == "anna@example.com"
    # the record never matches itself
    made(http.patch(path, json={"name": "Boris Petrov"}), 200)


# -- bulk and import -------------------------------------------------------------------------
def test_bulk_all_or_none_writes_nothing_and_per_row_the_others(kt: Kartoteka,
                                                                 http: TestClient) -> None:
    made(http.post("/api/client", json={"name": "Anna", "email": "anna@example.com"}))
    rows = [{"name": "Boris"}, {"name": "Dup", "email": "ANNA@example.com"},
            {"name": "Vera", "email": "vera@example.com"},
            {"name": "Vera again", "email": "vera@example.com"}]  # a duplicate of row 2
    answer = http.post("/api/client/bulk", json={"mode": "all_or_none", "rows": rows})
    assert answer.status_code == 422, answer.text
    failed = answer.json()["rows"]
    assert [(r["index"], r["status"], r["error"]["code"]) for r in failed] == [
        (1, 409, "possible_duplicate"), (3, 409, "possible_duplicate")]
    assert clients(kt) == 1
    per_row = made(http.post("/api/client/bulk", json={"mode": "per_row", "rows": rows}), 200)
    assert (per_row["created"], per_row["failed"]) == (2, 2)
    assert clients(kt) == 3
    confirmed = made(http.post("/api/client/bulk", headers=CONFIRM, json={
        "mode": "all_or_none", "rows": [rows[1], rows[3]]}), 200)
    assert confirmed["created"] == 2 and clients(kt) == 5
    blocked = http.post("/api/client/bulk", headers=CONFIRM, json={
        "mode": "per_row", "rows": [{"name": "X", "inn": "1"}, {"name": "Y", "inn": "1"}]})
    assert [r["status"] for r in made(blocked, 200)["rows"]] == [201, 409]


def test_an_import_reports_duplicates_and_writes_them_when_confirmed(kt: Kartoteka,
                                                                     http: TestClient) -> None:
    made(http.post("/api/client", json={"name": "Anna", "email": "anna@example.com"}))
    data = b"name,email\nBoris,boris@example.com\nDup,anna@example.com\n"

    def run(**headers: str) -> dict[str, Any]:
        answer = http.post("/api/client/import", files={"file": ("c.csv", data)},
                           data={"mode": "good"}, headers=headers)
        assert answer.status_code == 202, answer.text
        for _ in range(200):
            job = http.get(answer.headers["location"]).json()
            if job["status"] not in ("queued", "running"):
                return dict(job)
            time.sleep(0.05)
        raise AssertionError(job)

    job = run()
    assert (job["created"], job["failed"]) == (1, 1)
    assert [(e["row"], e["code"]) for e in job["errors"]] == [(3, "possible_duplicate")]
    again = run(**CONFIRM)
    assert (again["created"], again["failed"]) == (2, 0)  # Boris's second time too
    assert clients(kt) == 4


# -- languages -----------------------------------------------------------------------------
@pytest.mark.parametrize(("first", "second"), [
    ("ООО «Ёлка и Ко»", "елка и ко ооо"),               # ё is е, order and punctuation
    ("شركت كيان", "شرکت کیان"),                        # Arabic yeh and kaf are Persian
    ("北京科技有限公司", "北京科技有限公司 "),
    ("北京星辰科技有限公司", "北京星晨科技有限公司"),       # one character off
    ("Ромашка", "Ромашко"),                              # a typo in the only word
])
def test_names_in_russian_persian_and_chinese_are_found(kt: Kartoteka, http: TestClient,
                                                        first: str, second: str) -> None:
    made(http.post("/api/client", json={"name": first, "city": "X"}))
    refused(http.post("/api/client", json={"name": second, "city": "X"}))


def test_different_names_are_not_duplicates(kt: Kartoteka, http: TestClient) -> None:
    for name in ("ООО Ромашка", "ООО Лютик", "北京科技有限公司", "上海贸易有限公司", "شرکت کیان",
                 "شرکت آریا", "Client 1", "Client 2", "Client 12", "Филиал №1", "Филиал №2"):
        made(http.post("/api/client", json={"name": name, "city": "X"}))


def test_normalised_text_and_blocking_keys() -> None:
    assert normal_text("  ООО «Ёлка»,\u200cКо ") == "ооо елка ко"
    keys = blocking_keys("北京科技")
    assert {"t:北京", "t:京科", "t:科技"} <= set(keys) and keys[0] == "s:北京科技"
    assert blocking_keys("!!!") == []
    phone = normaliser(PhoneType())
    assert phone is not None and phone("+۹۸ (۹۱۲) ۱۲۳-۴۵-۶۷") == "989121234567"  # Persian digits


# -- the caller's scope --------------------------------------------------------------------
@pytest.fixture
def managers(kt: Kartoteka, http: TestClient) -> tuple[Caller, Caller, Caller]:
    callers = []
    for name, roles in (("anna", ["manager"]), ("boris", ["manager"]), ("root", ["admin"])):
        user, token = kt.users.add(f"{name}@example.com", roles)
        callers.append(Caller(http, token, user.id))
    return callers[0], callers[1], callers[2]


def test_a_manager_never_sees_another_managers_candidate(
        kt: Kartoteka, managers: tuple[Caller, Caller, Caller]) -> None:
    anna, boris, _ = managers
    hers = made(anna.post("/api/client", json={"name": "Ромашка", "city": "Казань",
                                               "email": "info@romashka.ru"}))
    error = refused(boris.post("/api/client", json={"name": "Ромашка", "city": "Казань"}))
    assert "cannot see" in error["message"]
    assert all("id" not in d and "title" not in d for d in error["details"])
    assert "Ромашка" not in str(error) and str(hers["id"]) not in str(error["details"])
    his = made(boris.post("/api/client", json={"name": "Ромашка", "city": "Казань"},
                          headers=CONFIRM))
    listed = made(boris.get(f"/api/client/{his['id']}/duplicates"), 200)
    assert listed == {"items": [], "hidden": True}
    mine = made(anna.get(f"/api/client/{hers['id']}/duplicates"), 200)
    assert listed["items"] == [] and mine["hidden"] is True  # his, which she cannot see
    assert boris.get(f"/api/client/{hers['id']}/duplicates").status_code == 404


# -- merge ---------------------------------------------------------------------------------
def test_a_merge_keeps_every_link_pair_history_and_comment(kt: Kartoteka,
                                                          http: TestClient) -> None:
    p1, p2, p3 = (made(http.post("/api/product", json={"name": n}))["id"] for n in "abc")
    t1, t2 = (made(http.post("/api/tag", json={"name": n}))["id"] for n in "xy")
    keep = made(http.post("/api/client", json={
        "name": "ООО Ромашка", "city": "Казань", "products": [{"id": p1, "price": "10.00"}],
        "tags": [t1]}))
    other = made(http.post("/api/client", headers=CONFIRM, json={
        "name": "Ромашка ООО", "city": "Казань", "email": "info@romashka.ru",
        "phone": "+7 843 000 00 00", "products": [{"id": p1, "price": "99.00"},
                                                   {"id": p2, "price": "20.00"}],
        "tags": [t1, t2], "merge": t2}))
    third = made(http.post("/api/client", headers=CONFIRM, json={
        "name": "Ромашка, ООО", "city": "Казань", "email": "other@romashka.ru",
        "products": [p3]}))
    deal = made(http.post("/api/deal", json={"number": "D-1", "client": other["id"]}))
    task = made(http.post("/api/task", json={"subject": "call",
                                             "about": {"entity": "client", "id": third["id"]}}))
    made(http.post(f"/api/client/{other['id']}/comments", json={"text": "Звонил"}))
    listed = made(http.get(f"/api/client/{keep['id']}/duplicates"), 200)
    assert {c["id"] for c in listed["items"]} == {other["id"], third["id"]}

    merged = made(http.post(f"/api/client/{keep['id']}/merge",
                            json={"others": [other["id"], third["id"]]},
                            headers={"If-Match": f'"{keep["version"]}"'}), 200)
    assert merged["id"] == keep["id"] and merged["version"] > keep["version"]
    assert (merged["email"], merged["phone"], merged["merge"]) == (
        "info@romashka.ru", "+7 843 000 00 00", t2)  # empty fields filled, first other wins
    assert merged["name"] == "ООО Ромашка"  # its own values kept
    assert merged["products"] == [{"id": p1, "price": "10.00"}, {"id": p2, "price": "20.00"},
                                  {"id": p3, "price": None}]
    assert merged["tags"] == [t1, t2]
    assert made(http.get(f"/api/deal/{deal['id']}"), 200)["client"] == keep["id"]
    assert made(http.get(f"/api/task/{task['id']}"), 200)["about"] == {
        "entity": "client", "id": keep["id"]}
    for gone in (other, third):
        assert http.get(f"/api/client/{gone['id']}").status_code == 404
    timeline = made(http.get(f"/api/client/{keep['id']}/timeline"), 200)["items"]
    assert any(i["type"] == "comment" and i["text"] == "Звонил" for i in timeline)
    merges = [i for i in timeline if i["type"] == "change" and i["action"] == "merge"]
    assert merges[0]["changes"]["merged"] == [other["id"], third["id"]]
    creates = [i for i in timeline if i["type"] == "change" and i["action"] == "create"]
    assert len(creates) == 3  # the others' history moved here
    # the merged record's keys answer the next check
    refused(http.post("/api/client", json={"name": "x", "email": "info@romashka.ru"}))
    assert made(http.get(f"/api/client/{keep['id']}/duplicates"), 200) == {
        "items": [], "hidden": False}


def test_a_merge_is_refused_with_nothing_changed(
        kt: Kartoteka, http: TestClient, managers: tuple[Caller, Caller, Caller]) -> None:
    anna, boris, root = managers
    hers = made(anna.post("/api/client", json={"name": "Anna's"}))
    his = made(boris.post("/api/client", json={"name": "Boris's"}))
    deal = made(boris.post("/api/deal", json={"number": "D-1", "client": his["id"]}))
    _, token = kt.users.add("viewer@example.com", ["viewer"])
    viewer = Caller(http, token)
    before = rows_per_table(kt)
    # another manager's record: out of her scope, as if it did not exist
    assert anna.post(f"/api/client/{hers['id']}/merge",
                     json={"others": [his["id"]]}).status_code == 404
    assert anna.post(f"/api/client/{his['id']}/merge",
                     json={"others": [hers["id"]]}).status_code == 404
    assert viewer.post(f"/api/client/{hers['id']}/merge",
                       json={"others": [his["id"]]}).status_code == 403
    for body in ({"others": []}, {"others": [hers["id"]]}, {"others": [his["id"], his["id"]]},
                 {"others": ["1"]}, {"others": [his["id"]], "extra": 1}, [his["id"]]):
        answer = root.post(f"/api/client/{hers['id']}/merge", json=body)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_merge"
    assert root.post(f"/api/client/{hers['id']}/merge", json={"others": [his["id"]]},
                     headers={"If-Match": '"7"'}).status_code == 412
    assert root.post(f"/api/client/{hers['id']}/merge",
                     json={"others": [his["id"], 10**6]}).status_code == 404
    assert rows_per_table(kt) == before
    assert made(root.get(f"/api/deal/{deal['id']}"), 200)["client"] == his["id"]


def test_a_link_named_merge_is_served_under_links(kt: Kartoteka, http: TestClient) -> None:
    tag = made(http.post("/api/tag", json={"name": "t"}))
    record = made(http.post("/api/client", json={"name": "A", "merge": tag["id"]}))
    linked = made(http.get(f"/api/client/{record['id']}/links/merge"), 200)
    assert [i["id"] for i in linked["items"]] == [tag["id"]]
    assert http.get(f"/api/client/{record['id']}/merge").status_code == 405
    spec = http.get("/openapi.json").json()
    operation = spec["paths"]["/api/client"]["post"]
    assert any(p["name"] == "X-Confirm-Duplicate" for p in operation["parameters"])
    assert "409" in operation["responses"]
    assert "X-Confirm-Duplicate: true" in spec["paths"]["/api/client/bulk"]["post"]["description"]
    assert "/api/client/{id}/merge" in spec["paths"] and "/api/deal/{id}/merge" not in spec["paths"]


# -- a rule added to a database with records -------------------------------------------------
def test_a_rule_added_later_fills_its_keys(make_kt: Callable[..., Kartoteka],
                                           open_kt: Callable[..., Kartoteka], db_url: str,
                                           write_setup: Callable[..., Path]) -> None:
    plain = {**SETUP, "client.yaml": SETUP["client.yaml"].split("        duplicates:")[0]}
    old = make_kt(write_setup(plain, "before"))
    old.records.create("client", {"name": "ООО Ромашка", "city": "Казань",
                                  "email": "a@example.com"})
    old.close()
    new = open_kt(write_setup(SETUP, "after"), db_url)
    try:
        described = [step.describe() for step in new.plan().steps]
        assert sum("normalised copy a duplicates rule compares" in d for d in described) == 4, \
            described
        assert any("kt_duplicate_key" in d for d in described), described
        new.migrate()
        for body in ({"name": "Ромашка ООО", "city": "Казань"},
                     {"name": "Z", "email": "A@example.com"}):
            with pytest.raises(DuplicateFound):
                new.records.create("client", body)
        with new.records.duplicates.confirmed():
            new.records.create("client", {"name": "Ромашка ООО", "city": "Казань"})
    finally:
        new.close()


def test_concurrent_writes_of_one_tax_number_leave_exactly_one(
        make_kt: Callable[..., Kartoteka]) -> None:
    """Eight suppliers with one tax number written eight ways, created at once: the
    `block` rule's check runs after each write, so on PostgreSQL (READ COMMITTED) two
    writers would each miss the other's uncommitted row without the lock it takes per
    value — exactly one is created, every other refused."""
    from collections import Counter
    from functools import partial

    from tests.races import together

    kt = make_kt()  # the default setup: suppliers are duplicates by tax number (block)

    def create(inn: str) -> str:
        try:
            kt.records.create("supplier", {"name": f"Поставщик {inn}", "inn": inn})
        except DuplicateFound as error:
            return error.code
        return "created"

    spellings = ["7701234567", "7701 234 567", "7701-234-567", " 7701234567 ",
                 "77-01-23-45-67", "7701 234567", "770 123 4567", "7701-234567"]
    assert Counter(together([partial(create, inn) for inn in spellings])) == {
        "created": 1, "duplicate": 7}
    assert kt.records.list_page("supplier", []).total == 1


def test_a_merge_of_records_that_link_to_each_other(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """Companies with a parent company: merging others that name each other (or the
    survivor) as parent leaves no link to a merged record, no company its own parent, and
    a version that only goes up."""
    kt = make_kt(write_setup({
        "setup.yaml": "name: Groups\nlanguages: [ru]\n",
        "company.yaml": ("title: '{name}'\nfields:\n  name: {type: string, required: true}\n"
                         "links:\n  parent: {to: company, reverse: branches}\n"
                         "duplicates:\n  rules:\n    same_name: {exact: name}\n"),
    }))
    create = kt.records.create
    survivor = create("company", {"name": "Альфа"})
    holding = create("company", {"name": "Альфа Холдинг"})
    branch = create("company", {"name": "Альфа Филиал", "parent": holding["id"]})
    merged = kt.merger.merge("company", survivor["id"], {"others": [branch["id"], holding["id"]]})
    assert merged["parent"] is None and merged["version"] > survivor["version"]
    assert kt.records.list_page("company", []).total == 1
    second = create("company", {"name": "Бета"})
    child = create("company", {"name": "Бета Дочь", "parent": second["id"]})
    kt.records.update("company", second["id"], {"parent": child["id"]})
    before = kt.records.get("company", second["id"])
    merged = kt.merger.merge("company", second["id"], {"others": [child["id"]]})
    assert merged["parent"] is None  # its parent was the other: now itself, so none
    assert merged["version"] > before["version"]
    assert kt.records.get("company", second["id"]) == merged
