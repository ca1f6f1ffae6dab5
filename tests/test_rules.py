"""Rules and stage locks over HTTP, on SQLite and PostgreSQL: a record that breaks a rule
is refused with 422 `rule_failed` naming the rule and its fields, in the caller's language,
on create, patch and stage move alike, and nothing is written; a field read-only in a
stage is refused with 422 `field_locked`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from tests.callers import Caller

SETUP = {
    "setup.yaml": """
        name: Rules
        languages: [en, ru, fa, zh]
        roles:
          director:
            "*": {create: all, read: all, update: all, delete: all}
          manager:
            "*": {create: all, read: all, update: all, delete: all}
    """,
    "contract.yaml": """
        entity: contract
        fields:
          number: {type: string, required: true}
          valid_from: {type: date}
          valid_to: {type: date}
          discount: {type: integer}
          amount: {type: money, readonly_in_stages: [signed, closed]}
          paid: {type: money}
          matched: {type: boolean, default: false}
          notes: {type: text}
        pipeline:
          stages: [draft, approved, signed, closed]
          final: [closed]
        rules:
          period_ordered:
            require: {valid_to: {gt: $record.valid_from}}
            message:
              en: "The contract must end after it starts"
              ru: "Договор должен заканчиваться после начала"
              fa: "قرارداد باید پس از شروع پایان یابد"
              zh: "合同的结束日期必须晚于开始日期"
          small_discount:
            unless_role: [director]
            require: {discount: {lte: 10}}
            message: {en: "A discount above 10 needs a director", ru: "Скидка больше 10 — только директор",
                      fa: "تخفیف بیش از ۱۰ فقط با مدیر", zh: "超过10的折扣需要总监"}
          approve_only_matched:
            when: {stage: {in: [approved, signed]}}
            require: {matched: true}
            message: {en: "Approve only after the three-way match", ru: "Только после сверки",
                      fa: "فقط پس از تطبیق سه‌طرفه", zh: "三方匹配后才能批准"}
          paid_within_amount:
            require: {paid: {lte: $record.amount}}
            fields: [paid]
            message: {en: "Paid exceeds the amount", ru: "Оплачено больше суммы",
                      fa: "پرداخت بیش از مبلغ", zh: "付款超过金额"}
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka],
       write_setup: Callable[[dict[str, str]], Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


@pytest.fixture
def people(kt: Kartoteka) -> Iterator[dict[str, Caller]]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http:
        callers = {}
        for name in ("director", "manager"):
            _, token = kt.users.add(f"{name}@example.com", [name])
            callers[name] = Caller(http, token)
        yield callers


def refused(response: Any, code: str = "rule_failed") -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_a_field_compared_with_another_field(people: dict[str, Caller]) -> None:
    anna = people["manager"]
    error = refused(anna.post("/api/contract", json={
        "number": "C-1", "valid_from": "2026-05-01", "valid_to": "2026-04-30"}))
    assert error["message"] == "The contract must end after it starts"
    assert {(d["field"], d["rule"]) for d in error["details"]} == {
        ("valid_to", "period_ordered"), ("valid_from", "period_ordered")}
    # equal dates do not end after the start either
    refused(anna.post("/api/contract", json={
        "number": "C-1", "valid_from": "2026-05-01", "valid_to": "2026-05-01"}))
    assert anna.get("/api/contract").json()["total"] == 0  # nothing written
    made = anna.post("/api/contract", json={
        "number": "C-1", "valid_from": "2026-05-01", "valid_to": "2026-05-02"})
    assert made.status_code == 201, made.text
    # a patch that moves one side past the other is refused, and the record stays as it was
    record = made.json()
    refused(anna.patch(f"/api/contract/{record['id']}", json={"valid_from": "2027-01-01"}))
    after = anna.get(f"/api/contract/{record['id']}").json()
    assert (after["valid_from"], after["version"]) == ("2026-05-01", record["version"])


def test_money_compared_with_money_and_the_fields_named(people: dict[str, Caller]) -> None:
    anna = people["manager"]
    error = refused(anna.post("/api/contract", json={
        "number": "C-2", "amount": "100.00", "paid": "100.01"}))
    assert [(d["field"], d["rule"]) for d in error["details"]] == [("paid", "paid_within_amount")]
    assert anna.post("/api/contract", json={
        "number": "C-2", "amount": "100.00", "paid": "100.00"}).status_code == 201


def test_empty_fields_leave_a_rule_unknown_and_unknown_passes(people: dict[str, Caller]) -> None:
    anna = people["manager"]
    # no dates, no discount, no amounts: nothing to compare, so nothing breaks
    made = anna.post("/api/contract", json={"number": "C-3", "valid_to": "2026-01-01"})
    assert made.status_code == 201, made.text
    record = made.json()
    cleared = anna.patch(f"/api/contract/{record['id']}", json={"valid_to": None, "paid": "5"})
    assert cleared.status_code == 200, cleared.text


def test_unless_role_exempts_the_director_only(people: dict[str, Caller]) -> None:
    manager, director = people["manager"], people["director"]
    error = refused(manager.post("/api/contract", json={"number": "D-1", "discount": 11}))
    assert error["details"] == [{"field": "discount", "problem":
                                 "A discount above 10 needs a director", "rule": "small_discount"}]
    assert manager.post("/api/contract", json={"number": "D-1", "discount": 10}).status_code == 201
    big = director.post("/api/contract", json={"number": "D-2", "discount": 25})
    assert big.status_code == 201, big.text
    # the rule binds the writer: a manager's later patch of that record is checked again
    refused(manager.patch(f"/api/contract/{big.json()['id']}", json={"notes": "x"}))
    assert director.patch(f"/api/contract/{big.json()['id']}",
                          json={"notes": "x"}).status_code == 200


@pytest.mark.parametrize(("header", "expected"), [
    ("ru", "Скидка больше 10 — только директор"),
    ("ru-RU,ru;q=0.9,en;q=0.8", "Скидка больше 10 — только директор"),
    ("fa-IR", "تخفیف بیش از ۱۰ فقط با مدیر"),
    ("zh-CN,zh;q=0.9", "超过10的折扣需要总监"),
    ("de, en;q=0.1", "A discount above 10 needs a director"),
    ("de", "A discount above 10 needs a director"),
    ("en;q=0.2, fa;q=0.8", "تخفیف بیش از ۱۰ فقط با مدیر"),
    ("", "A discount above 10 needs a director"),
    ("*", "A discount above 10 needs a director"),
    (";;q=x,,", "A discount above 10 needs a director"),
])
def test_the_message_is_in_the_callers_language(people: dict[str, Caller], header: str,
                                                 expected: str) -> None:
    error = refused(people["manager"].post(
        "/api/contract", json={"number": "L-1", "discount": 50},
        headers={"Accept-Language": header}))
    assert error["message"] == expected
    assert error["details"][0]["problem"] == expected


def test_several_broken_rules_are_named_together(people: dict[str, Caller]) -> None:
    error = refused(people["manager"].post("/api/contract", json={
        "number": "M-1", "discount": 50, "valid_from": "2026-02-02", "valid_to": "2026-01-01"},
        headers={"Accept-Language": "ru"}))
    assert {d["rule"] for d in error["details"]} == {"period_ordered", "small_discount"}
    assert "Договор должен заканчиваться после начала" in error["message"]


def test_a_stage_rule_binds_the_stage_move_and_later_patches(people: dict[str, Caller]) -> None:
    anna = people["manager"]
    record = anna.post("/api/contract", json={"number": "S-1"}).json()
    error = refused(anna.post(f"/api/contract/{record['id']}/stage", json={"to": "approved"},
                              headers={"Accept-Language": "zh"}))
    assert error["message"] == "三方匹配后才能批准"
    assert error["details"] == [{"field": "matched", "problem": "三方匹配后才能批准",
                                 "rule": "approve_only_matched"}]
    after = anna.get(f"/api/contract/{record['id']}").json()
    assert (after["stage"], after["version"]) == ("draft", record["version"])
    timeline = anna.get(f"/api/contract/{record['id']}/timeline").json()["items"]
    assert not [e for e in timeline if e.get("to") == "approved"]
    assert anna.patch(f"/api/contract/{record['id']}", json={"matched": True}).status_code == 200
    moved = anna.post(f"/api/contract/{record['id']}/stage", json={"to": "approved"})
    assert moved.status_code == 200, moved.text
    # in the stage, un-matching it is refused
    refused(anna.patch(f"/api/contract/{record['id']}", json={"matched": False}))
    assert anna.get(f"/api/contract/{record['id']}").json()["matched"] is True


def test_a_field_read_only_in_a_stage(people: dict[str, Caller]) -> None:
    anna = people["director"]
    record = anna.post("/api/contract", json={"number": "R-1", "amount": "10.00",
                                              "matched": True}).json()
    assert anna.patch(f"/api/contract/{record['id']}",
                      json={"amount": "20.00"}).status_code == 200
    assert anna.post(f"/api/contract/{record['id']}/stage",
                     json={"to": "signed"}).status_code == 200
    error = refused(anna.patch(f"/api/contract/{record['id']}", json={"amount": "30.00"}),
                    "field_locked")
    assert error["details"] == [{"field": "amount", "problem": "is read-only in stage 'signed'"}]
    # the same value is no change; other fields stay writable
    assert anna.patch(f"/api/contract/{record['id']}",
                      json={"amount": "20.00", "notes": "подписан"}).status_code == 200
    after = anna.get(f"/api/contract/{record['id']}").json()
    assert (after["amount"], after["notes"]) == ("20.00", "подписан")
    described = anna.get("/api/schema").json()
    assert "signed" in str(described)
    fields = _schema_fields(described, "contract")
    assert fields["amount"]["readonly_in_stages"] == ["closed", "signed"]
    rules = _schema_entity(described, "contract")["rules"]
    assert {r["name"] for r in rules} >= {"period_ordered", "small_discount"}


def _schema_entity(described: dict[str, Any], name: str) -> dict[str, Any]:
    entities = described["entities"]
    if isinstance(entities, dict):
        found: dict[str, Any] = entities[name]
        return found
    return next(e for e in entities if e["name"] == name)


def _schema_fields(described: dict[str, Any], name: str) -> dict[str, Any]:
    fields = _schema_entity(described, name)["fields"]
    if isinstance(fields, dict):
        return fields
    return {f["name"]: f for f in fields}


def test_a_rule_through_a_link(make_kt: Callable[..., Kartoteka],
                               write_setup: Callable[[dict[str, str]], Path]) -> None:
    kt = make_kt(write_setup({
        "client.yaml": "entity: client\nfields: {name: string, blocked: boolean}\n",
        "sale.yaml": """
            entity: sale
            fields: {number: string}
            links: {client: {to: client}}
            rules:
              no_blocked_clients:
                require: {client.blocked: false}
                fields: [client]
                message: "The client is blocked"
        """,
    }))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        ok = http.post("/api/client", json={"name": "Ok", "blocked": False}).json()["id"]
        blocked = http.post("/api/client", json={"name": "No", "blocked": True}).json()["id"]
        assert http.post("/api/sale", json={"number": "1", "client": ok}).status_code == 201
        error = refused(http.post("/api/sale", json={"number": "2", "client": blocked}))
        assert error["details"][0]["field"] == "client"
        assert http.get("/api/sale").json()["total"] == 1


BROKEN_RULES = [
    ({"require": {"valid_to": {"gt": "$record.valid_fro"}}, "message": "m"},
     "rule.field", "no field 'valid_fro'"),
    ({"require": {"valid_to": {"gt": "$record.discount"}}, "message": "m"},
     "rule.field_type", "do not compare"),
    ({"require": {"matched": {"gt": "$record.matched"}}, "message": "m"},
     "rule.operator", "cannot compare"),
    ({"require": {"discount": {"lte": 10}}, "message": "m", "unless_role": ["directr"]},
     "rule.roles", "no role 'directr'"),
    ({"when": {"stage": "aproved"}, "require": {"discount": {"lte": 10}}, "message": "m"},
     "rule.condition", "stage"),
    ({"require": {"discount": {"contains": 10}}, "message": "m"},
     "rule.condition", "does not apply"),
    ({"require": {"discount": {"lte": 10}}, "mesage": "m"}, "rule.key", "unknown key 'mesage'"),
    ({"require": {"discount": {"lte": "$user"}}, "message": "m"}, "rule.user", "$user"),
    ({"require": {"discount": {"lte": 10}}, "message": {"en": "m", "de": "x"}},
     "rule.message_language", "'de'"),
    ({"require": {"discount": {"lte": 10}}, "message": "m", "fields": ["discont"]},
     "rule.fields", "no field 'discont'"),
    ({"message": "m"}, "rule.require", "'require' is missing"),
    ({"require": {"discount": {"lte": 10}}, "message": "m", "roles": ["manager"],
      "unless_role": ["director"]}, "rule.roles", "not both"),
    ({"when": {"discount": {"gt": 1}}, "require": {"discount": {"lte": 10}},
      "message": {"en": ""}}, "rule.message", "a text per language"),
]


@pytest.mark.parametrize(("rule", "code", "message"), BROKEN_RULES,
                         ids=[case[1] + "-" + str(i) for i, case in enumerate(BROKEN_RULES)])
def test_a_broken_rule_is_located(write_setup: Callable[..., Path], rule: dict[str, Any],
                                  code: str, message: str) -> None:
    import yaml
    files = dict(SETUP)
    contract = yaml.safe_load(_dedent(SETUP["contract.yaml"]))
    contract["rules"] = {"the_rule": rule}
    files["contract.yaml"] = yaml.safe_dump(contract, allow_unicode=True, sort_keys=False)
    result = check_setup(write_setup(files))
    assert result.setup is None
    found = [d for d in result.errors if d.code == code]
    assert found, [str(d) for d in result.errors]
    assert message in found[0].message, str(found[0])
    assert found[0].file == "contract.yaml" and found[0].line > 0
    assert found[0].key.startswith("rules.the_rule") and found[0].hint


def test_a_rule_name_is_an_identifier(write_setup: Callable[..., Path]) -> None:
    files = {**SETUP, "contract.yaml": SETUP["contract.yaml"].replace(
        "small_discount:", "Small Discount:")}
    result = check_setup(write_setup(files))
    assert [d.code for d in result.errors] == ["rule.name"]
    assert result.errors[0].key == "rules.Small Discount" and result.errors[0].line > 0


def test_a_message_missing_a_language_is_a_warning(write_setup: Callable[..., Path]) -> None:
    files = {**SETUP, "contract.yaml": SETUP["contract.yaml"].replace(
        'ru: "Договор должен заканчиваться после начала"', "")}
    result = check_setup(write_setup(files))
    assert result.setup is not None, [str(d) for d in result.errors]
    warned = [d for d in result.warnings if d.code == "rule.message_missing"]
    assert warned and "ru" in warned[0].message and warned[0].line > 0


def _dedent(text: str) -> str:
    import textwrap
    return textwrap.dedent(text).lstrip("\n")


def test_the_patch_schema_says_which_stages_lock_a_field(kt: Kartoteka) -> None:
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        document = http.get("/openapi.json").json()
    amount = document["components"]["schemas"]["ContractPatch"]["properties"]["amount"]
    assert amount["x-readonly-in-stages"] == ["closed", "signed"]
    assert "Read-only while the record is in stage closed, signed" in amount["description"]


PLAIN_CONTRACT = """
    entity: contract
    fields:
      number: {type: string, required: true}
      discount: {type: integer}
      valid_from: {type: date}
      valid_to: {type: date}
"""
DISCOUNT_RULE = """
    rules:
      small_discount:
        require: {discount: {lte: 10}}
        message: "At most 10"
"""


def test_a_new_rule_is_a_planned_step_listing_the_records_that_break_it(
        db_url: str, write_setup: Callable[..., Path]) -> None:
    from engine.storage.migrations import apply, plan

    folder = write_setup({"contract.yaml": PLAIN_CONTRACT})
    kt = Kartoteka.open(folder, db_url)
    kt.migrate()
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        ids = [http.post("/api/contract", json={"number": f"N-{d}", "discount": d}).json()["id"]
               for d in (5, 11, None, 40, 10)]
    kt.close()

    write_setup({"contract.yaml": PLAIN_CONTRACT + DISCOUNT_RULE})
    kt = Kartoteka.open(folder, db_url)
    try:
        planned = plan(kt.storage, kt.db)
        [step] = [s for s in planned.as_json()["steps"] if s["step"] == "RuleStep"]
        assert (step["change"], step["breaking"], step["ids"]) == ("add", 2, [ids[1], ids[3]])
        assert step["kind"] == "safe"
        assert f"2 records break it now: #{ids[1]}, #{ids[3]}" in step["text"]
        apply(kt.storage, kt.db)
        assert plan(kt.storage, kt.db).up_to_date
        with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
            # a breaking record is refused its next write until it satisfies the rule
            refused(http.patch(f"/api/contract/{ids[1]}", json={"number": "x"}))
            assert http.patch(f"/api/contract/{ids[1]}", json={"discount": 9}).status_code == 200
    finally:
        kt.close()

    # changing what the rule checks is a step again; changing only its message is not
    write_setup({"contract.yaml": PLAIN_CONTRACT + DISCOUNT_RULE.replace("At most 10", "≤ 10")})
    kt = Kartoteka.open(folder, db_url)
    try:
        assert plan(kt.storage, kt.db).up_to_date
    finally:
        kt.close()
    write_setup({"contract.yaml": PLAIN_CONTRACT + DISCOUNT_RULE.replace("lte: 10", "lte: 4")})
    kt = Kartoteka.open(folder, db_url)
    try:
        [step] = [s for s in plan(kt.storage, kt.db).as_json()["steps"]]
        assert (step["change"], step["breaking"]) == ("change", 4)  # 5, 9 (was 11), 40, 10
        assert step["ids"] == [ids[0], ids[1], ids[3], ids[4]]
        apply(kt.storage, kt.db)
    finally:
        kt.close()
    write_setup({"contract.yaml": PLAIN_CONTRACT})
    kt = Kartoteka.open(folder, db_url)
    try:
        [step] = plan(kt.storage, kt.db).steps
        assert str(step) == "remove rule contract.small_discount"
        apply(kt.storage, kt.db)
        assert plan(kt.storage, kt.db).up_to_date
    finally:
        kt.close()


def test_a_rule_on_a_field_the_same_migration_adds(db_url: str,
                                                   write_setup: Callable[..., Path]) -> None:
    from engine.storage.migrations import apply, plan

    folder = write_setup({"contract.yaml": PLAIN_CONTRACT})
    kt = Kartoteka.open(folder, db_url)
    kt.migrate()
    kt.close()
    write_setup({"contract.yaml": PLAIN_CONTRACT + "      paid: {type: money}\n" + """
    rules:
      paid_small:
        require: {paid: {lte: 100}}
        message: "x"
    """})
    kt = Kartoteka.open(folder, db_url)
    try:
        steps = plan(kt.storage, kt.db).steps
        assert "add rule contract.paid_small (records are checked against it from their next " \
               "write)" in [str(s) for s in steps]
        apply(kt.storage, kt.db)
        assert plan(kt.storage, kt.db).up_to_date
    finally:
        kt.close()


def test_a_rule_on_a_many_to_many_link_binds_adding_and_removing_one(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[[dict[str, str]], Path]) -> None:
    kt = make_kt(write_setup({
        "product.yaml": "entity: product\nfields: {name: string}\n",
        "order.yaml": """
            entity: order
            fields: {number: string}
            links: {products: {to: product, many: true}}
            rules:
              not_empty:
                require: {products: {isnull: false}}
                message: "An order lists at least one product"
        """,
    }))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        product = http.post("/api/product", json={"name": "Чай"}).json()["id"]
        refused(http.post("/api/order", json={"number": "1"}))
        order = http.post("/api/order", json={"number": "1", "products": [product]}).json()
        refused(http.delete(f"/api/order/{order['id']}/products/{product}"))
        assert http.get(f"/api/order/{order['id']}").json()["products"] == [product]


def test_whom_a_rule_binds() -> None:
    from types import MappingProxyType

    from engine.setup.rules import RuleSpec
    message = MappingProxyType({"en": "m"})
    everyone = RuleSpec("r", "e", (), message)
    only = RuleSpec("r", "e", (), message, roles=frozenset({"manager"}))
    unless = RuleSpec("r", "e", (), message, unless_roles=frozenset({"director"}))
    for roles, expected in (((), (True, False, True)), (("manager",), (True, True, True)),
                            (("director",), (True, False, False)),
                            (("manager", "director"), (True, True, False)),
                            (("admin",), (True, False, True))):
        assert (everyone.applies_to(roles), only.applies_to(roles),
                unless.applies_to(roles)) == expected, roles
