"""The purchasing example (examples/purchasing) performed over HTTP, as its README walks a
purchasing manager through it: order lines compute their totals, receipts count per line,
the three-way match decides whether an invoice may be paid, a blocked or badly scored
supplier gets no new order, and the refusals speak Russian and Chinese."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.conftest import EXAMPLES

PURCHASING = EXAMPLES / "purchasing"
RU = {"Accept-Language": "ru"}
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


@pytest.fixture
def srm(make_kt: Callable[..., Kartoteka]) -> Iterator[TestClient]:
    with TestClient(create_app(make_kt(PURCHASING)), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


def made(answer: Any, status: int = 201) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


def refused(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    return error


def supplier(client: TestClient, name: str, **fields: Any) -> dict[str, Any]:
    return made(client.post("/api/supplier", json={"name": name, **fields}))


def order(client: TestClient, supplier_id: int, number: str, **headers: str) -> Any:
    return client.post("/api/purchase_order", headers=headers, json={
        "number": number, "order_date": "2025-03-03", "supplier": supplier_id})


def ordered_and_received(client: TestClient) -> dict[str, Any]:
    """README steps 1–4: a supplier, an item, an order with two lines, a receipt."""
    hua = supplier(client, "上海华东机电有限公司", status="approved",
                   quality_score=90, delivery_score=80, cost_score=70)
    item = made(client.post("/api/item", json={"sku": "BRG-6204", "name": "Подшипник 6204 轴承",
                                                "standard_price": "12.00"}))
    po = made(order(client, hua["id"], "PO-2025-0001"))
    line1 = made(client.post("/api/po_line", json={
        "purchase_order": po["id"], "item": item["id"], "line_no": 1, "quantity": "100",
        "unit_price": "12.50", "discount_percent": "4", "tax_rate": "13"}))
    line2 = made(client.post("/api/po_line", json={
        "purchase_order": po["id"], "item": item["id"], "line_no": 2, "quantity": 10,
        "unit_price": "33.33", "tax_rate": 13}))
    po = made(client.patch(f"/api/purchase_order/{po['id']}", json={
        "net_amount": "1533.30", "tax_amount": "199.33", "quantity_ordered": "110"}), 200)
    receipt = made(client.post("/api/goods_receipt", json={
        "number": "GR-2025-0001", "purchase_order": po["id"], "delivery_note_no": "ТН-17"}))
    made(client.post("/api/goods_receipt_line", json={
        "goods_receipt": receipt["id"], "po_line": line1["id"], "quantity_received": "100"}))
    made(client.post("/api/goods_receipt_line", json={
        "goods_receipt": receipt["id"], "po_line": line2["id"],
        "quantity_received": "10", "quantity_rejected": "2"}))
    po = made(client.patch(f"/api/purchase_order/{po['id']}", json={
        "quantity_received": "108", "value_received": "1466.64"}), 200)
    return {"supplier": hua, "item": item, "po": po, "lines": [line1, line2], "receipt": receipt}


def test_the_scorecard_is_computed_and_levelled(srm: TestClient) -> None:
    good = supplier(srm, "ООО «Ромашка»", quality_score=90, delivery_score=80, cost_score=70)
    assert good["overall_score"] == "81.50"  # 36 + 28 + 17.5
    assert (good["score_level"], good["below_threshold"]) == ("ok", False)
    warn = made(srm.patch(f"/api/supplier/{good['id']}", json={"quality_score": 50}), 200)
    assert (warn["overall_score"], warn["score_level"], warn["below_threshold"]) == \
        ("65.50", "warn", True)
    block = made(srm.patch(f"/api/supplier/{good['id']}", json={"delivery_score": 20}), 200)
    assert (block["overall_score"], block["score_level"]) == ("44.50", "block")
    unscored = supplier(srm, "شرکت پارس‌نگار", quality_score=90)
    assert (unscored["overall_score"], unscored["score_level"]) == (None, "unscored")
    refused(srm.post("/api/supplier", json={"name": "X", "overall_score": 99}),
            422, "field_computed")


def test_order_lines_compute_their_totals(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    line1, line2 = (made(srm.get(f"/api/po_line/{line['id']}"), 200) for line in done["lines"])
    assert (line1["net_unit_price"], line1["line_total"], line1["line_tax"], line1["line_gross"]) \
        == ("12.00", "1200.00", "156.00", "1356.00")
    assert (line2["line_total"], line2["line_tax"]) == ("333.30", "43.33")  # 43.329 half up
    assert done["po"]["total_amount"] == "1732.63"
    changed = made(srm.patch(f"/api/po_line/{line2['id']}", json={"discount_percent": "10"}), 200)
    assert (changed["net_unit_price"], changed["line_total"]) == ("30.00", "299.97")
    refused(srm.post("/api/po_line", json={
        "purchase_order": done["po"]["id"], "item": done["item"]["id"], "line_no": 1,
        "quantity": 1, "unit_price": "1"}), 409, "unique_violation")


def test_receipt_lines_count_received_and_rejected(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    lines = made(srm.get(f"/api/goods_receipt/{done['receipt']['id']}/lines"), 200)["items"]
    assert [(x["quantity_accepted"], x["value_accepted"]) for x in lines] == \
        [("100.000", "1200.00"), ("8.000", "266.64")]
    body = {"goods_receipt": done["receipt"]["id"], "po_line": done["lines"][0]["id"],
            "quantity_received": "1"}
    refused(srm.post("/api/goods_receipt_line", json=body), 409, "unique_violation")
    error = refused(srm.patch(f"/api/goods_receipt_line/{lines[1]['id']}", headers=RU,
                              json={"quantity_rejected": "11"}), 422, "rule_failed")
    assert "Отклонено больше, чем принято" in str(error)
    assert made(srm.get(f"/api/goods_receipt_line/{lines[1]['id']}"), 200)["quantity_rejected"] \
        == "2.000"
    # a line of another order cannot be booked on this receipt
    other = made(order(srm, done["supplier"]["id"], "PO-2025-0002"))
    stray = made(srm.post("/api/po_line", json={
        "purchase_order": other["id"], "item": done["item"]["id"], "line_no": 1,
        "quantity": 5, "unit_price": "1.00"}))
    error = refused(srm.post("/api/goods_receipt_line", headers=ZH, json={
        **body, "po_line": stray["id"]}), 422, "rule_failed")
    assert "不属于本收货单" in str(error)


def test_an_invoice_is_paid_only_after_the_three_way_match(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    invoice = made(srm.post("/api/supplier_invoice", json={
        "invoice_no": "INV-778", "invoice_date": "2025-03-20", "supplier": done["supplier"]["id"],
        "purchase_order": done["po"]["id"], "goods_receipt": done["receipt"]["id"],
        "net_amount": "1540.00", "tax_amount": "200.20", "quantity_invoiced": "108"}))
    assert invoice["total_amount"] == "1740.20"
    assert (invoice["expected_amount"], invoice["variance_amount"]) == ("1466.64", "73.36")
    assert (invoice["match_status"], invoice["matched"]) == ("price_variance", False)
    url = f"/api/supplier_invoice/{invoice['id']}"
    made(srm.post(f"{url}/stage", json={"to": "matching"}), 200)
    error = refused(srm.post(f"{url}/stage", headers=RU, json={"to": "approved_for_payment"}),
                    422, "rule_failed")
    assert "Сверка заказ–приёмка–счёт не пройдена" in str(error)
    error = refused(srm.post(f"{url}/stage", headers=ZH, json={"to": "approved_for_payment"}),
                    422, "rule_failed")
    assert "三单匹配未通过" in str(error)
    assert made(srm.get(url), 200)["stage"] == "matching"

    wrong_qty = made(srm.patch(url, json={"net_amount": "1480.00", "quantity_invoiced": "110"}),
                     200)
    assert wrong_qty["match_status"] == "quantity_variance"  # no tolerance on quantity
    fixed = made(srm.patch(url, json={"quantity_invoiced": "108"}), 200)
    assert (fixed["variance_amount"], fixed["match_status"], fixed["matched"]) == \
        ("13.36", "matched", True)  # 0.9 %: within the 2 % tolerance
    made(srm.post(f"{url}/stage", json={"to": "approved_for_payment"}), 200)
    refused(srm.post(f"{url}/stage", json={"to": "paid"}), 422, "stage_requirements")
    made(srm.patch(url, json={"paid_on": "2025-04-01", "payment_reference": "ПП-0042"}), 200)
    paid = made(srm.post(f"{url}/stage", json={"to": "paid"}), 200)
    assert paid["stage"] == "paid"
    refused(srm.patch(url, json={"net_amount": "1.00"}), 422, "field_locked")

    refused(srm.post("/api/supplier_invoice", json={
        "invoice_no": "INV-778", "supplier": done["supplier"]["id"],
        "purchase_order": done["po"]["id"], "net_amount": "1.00"}), 409, "unique_violation")


def test_an_invoice_without_receipt_or_from_another_supplier(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    other = supplier(srm, "АО «Север»")
    error = refused(srm.post("/api/supplier_invoice", headers=RU, json={
        "invoice_no": "1", "supplier": other["id"], "purchase_order": done["po"]["id"],
        "net_amount": "1466.64", "quantity_invoiced": "108"}), 422, "rule_failed")
    assert "не совпадает с поставщиком заказа" in str(error)
    empty_po = made(order(srm, done["supplier"]["id"], "PO-2025-0003"))
    invoice = made(srm.post("/api/supplier_invoice", json={
        "invoice_no": "2", "supplier": done["supplier"]["id"], "purchase_order": empty_po["id"],
        "net_amount": "10.00"}))
    assert invoice["match_status"] == "missing_receipt"
    assert invoice["invoice_date"]  # default: today


def test_no_new_order_to_a_blocked_or_low_scored_supplier(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    hua = done["supplier"]["id"]
    made(srm.patch(f"/api/supplier/{hua}", json={"status": "blocked"}), 200)
    error = refused(order(srm, hua, "PO-2025-0010", **RU), 422, "rule_failed")
    assert "Поставщик заблокирован" in str(error)
    error = refused(order(srm, hua, "PO-2025-0010", **ZH), 422, "rule_failed")
    assert "该供应商已被禁用" in str(error)
    # the order already confirmed goes on
    po = f"/api/purchase_order/{done['po']['id']}"
    made(srm.post(f"{po}/stage", json={"to": "confirmed"}), 200)

    poor = supplier(srm, "Low Score Ltd", status="approved",
                    quality_score=40, delivery_score=40, cost_score=40)
    error = refused(order(srm, poor["id"], "PO-2025-0011", **RU), 422, "rule_failed")
    assert "ниже 50" in str(error)
    made(srm.patch(f"/api/supplier/{poor['id']}", json={"quality_score": 90}), 200)  # 60: warn
    assert made(order(srm, poor["id"], "PO-2025-0011"))["supplier"] == poor["id"]
    new = supplier(srm, "New Prospect")  # no scores yet: not blocked
    made(order(srm, new["id"], "PO-2025-0012"))


def test_contract_dates(srm: TestClient) -> None:
    hua = supplier(srm, "上海华东机电有限公司")
    body = {"number": "C-2025-01", "title": "Рамочный договор 框架协议", "supplier": hua["id"],
            "valid_from": "2025-01-01", "valid_to": "2025-12-31", "renewal_notice_days": 60}
    contract = made(srm.post("/api/contract", json=body))
    assert contract["renewal_decision_by"] == "2025-11-01"
    assert isinstance(contract["days_to_expiry"], int)
    error = refused(srm.patch(f"/api/contract/{contract['id']}", headers=RU,
                              json={"valid_to": "2024-12-31"}), 422, "rule_failed")
    assert "Договор должен заканчиваться после начала" in str(error)
    same_day = refused(srm.post("/api/contract", json={**body, "number": "C-2", "valid_to":
                                                       "2025-01-01"}), 422, "rule_failed")
    assert same_day["details"]


def test_options_are_labelled_in_three_languages(srm: TestClient) -> None:
    schema = made(srm.get("/api/schema"), 200)
    text = str(schema)
    for label in ("Заблокирован", "已禁用", "Рамочный договор", "Неполная поставка"):
        assert label in text


def test_the_readmes_lists_answer(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    made(srm.post("/api/supplier_invoice", json={
        "invoice_no": "INV-1", "supplier": done["supplier"]["id"],
        "purchase_order": done["po"]["id"], "net_amount": "1540.00", "quantity_invoiced": "108"}))
    low = supplier(srm, "Low", quality_score=60, delivery_score=60, cost_score=60)
    made(srm.post("/api/contract", json={
        "number": "C-1", "title": "t", "supplier": low["id"], "status": "active",
        "valid_from": "2020-01-01", "valid_to": "2021-01-01", "renewal_notice_days": 30}))

    def ids(path: str, params: dict[str, str]) -> list[int]:
        return [x["id"] for x in made(srm.get(path, params=params), 200)["items"]]

    assert ids("/api/supplier", {"below_threshold": "true", "sort": "overall_score"}) == [low["id"]]
    assert len(ids("/api/supplier_invoice", {"match_status": "price_variance"})) == 1
    assert len(ids("/api/po_line", {"quantity_open[gt]": "0"})) == 2
    assert len(ids("/api/contract", {"renewal_decision_by[lte]": "today+30d",
                                     "status": "active"})) == 1
