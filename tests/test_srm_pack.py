"""The purchasing example (examples/purchasing) performed over HTTP, as its README walks a
purchasing manager through it: order lines compute their totals, the order's totals and
received quantities are roll-ups nobody writes, receipts and evaluations keep the supplier's
scorecard, the three-way match decides whether an invoice may be paid, a blocked or badly
scored supplier gets no new order, and the refusals speak Russian and Chinese."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.callers import made
from tests.conftest import EXAMPLES

PURCHASING = EXAMPLES / "purchasing"
RU = {"Accept-Language": "ru"}
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


@pytest.fixture
def srm(make_kt: Callable[..., Kartoteka]) -> Iterator[TestClient]:
    with TestClient(create_app(make_kt(PURCHASING)), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


def refused(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    return error


def supplier(client: TestClient, name: str, *scores: tuple[int, int, int],
             **fields: Any) -> dict[str, Any]:
    """A supplier with one evaluation (quality, delivery, cost) per quarter of 2024."""
    made_supplier = made(client.post("/api/supplier", json={"name": name, **fields}))
    for quarter, score in enumerate(scores, start=1):
        evaluate(client, made_supplier["id"], f"2024-Q{quarter}", *score)
    return made(client.get(f"/api/supplier/{made_supplier['id']}"), 200)


def evaluate(client: TestClient, supplier_id: int, period: str, quality: int, delivery: int,
             cost: int) -> dict[str, Any]:
    return made(client.post("/api/supplier_evaluation", json={
        "supplier": supplier_id, "period": period, "evaluated_on": "2025-01-15",
        "quality_score": quality, "delivery_score": delivery, "cost_score": cost}))


def order(client: TestClient, supplier_id: int, number: str, **headers: str) -> Any:
    return client.post("/api/purchase_order", headers=headers, json={
        "number": number, "order_date": "2025-03-03", "expected_delivery": "2025-03-10",
        "supplier": supplier_id})


def ordered_and_received(client: TestClient) -> dict[str, Any]:
    """README steps 1–4: a supplier, an item, an order with two lines, a receipt on time
    with a rejected part. Nobody writes the order's totals or received quantities."""
    hua = supplier(client, "上海华东机电有限公司", (90, 80, 70), status="approved")
    item = made(client.post("/api/item", json={"sku": "BRG-6204", "name": "Подшипник 6204 轴承",
                                                "standard_price": "12.00"}))
    po = made(order(client, hua["id"], "PO-2025-0001"))
    line1 = made(client.post("/api/po_line", json={
        "purchase_order": po["id"], "item": item["id"], "line_no": 1, "quantity": "100",
        "unit_price": "12.50", "discount_percent": "4", "tax_rate": "13"}))
    line2 = made(client.post("/api/po_line", json={
        "purchase_order": po["id"], "item": item["id"], "line_no": 2, "quantity": 10,
        "unit_price": "33.33", "tax_rate": 13}))
    receipt = made(client.post("/api/goods_receipt", json={
        "number": "GR-2025-0001", "purchase_order": po["id"], "delivery_note_no": "ТН-17",
        "received_at": "2025-03-08T09:30:00Z"}))
    made(client.post("/api/goods_receipt_line", json={
        "goods_receipt": receipt["id"], "po_line": line1["id"], "quantity_received": "100"}))
    made(client.post("/api/goods_receipt_line", json={
        "goods_receipt": receipt["id"], "po_line": line2["id"],
        "quantity_received": "10", "quantity_rejected": "2"}))
    po = made(client.get(f"/api/purchase_order/{po['id']}"), 200)
    return {"supplier": hua, "item": item, "po": po, "lines": [line1, line2], "receipt": receipt}


def test_the_scorecard_is_computed_and_levelled(srm: TestClient) -> None:
    good = supplier(srm, "ООО «Ромашка»", (90, 80, 70))
    assert (good["quality_score"], good["evaluation_count"]) == ("90.00", 1)
    assert good["overall_score"] == "81.50"  # 36 + 28 + 17.5
    assert (good["score_level"], good["below_threshold"]) == ("ok", False)
    assert good["last_evaluated_on"] == "2025-01-15"
    evaluate(srm, good["id"], "2024-Q2", 10, 60, 70)  # averages 50, 70, 70
    warn = made(srm.get(f"/api/supplier/{good['id']}"), 200)
    assert (warn["overall_score"], warn["score_level"], warn["below_threshold"]) == \
        ("62.00", "warn", True)
    third = evaluate(srm, good["id"], "2024-Q3", 20, 10, 10)  # averages 40, 50, 50
    block = made(srm.get(f"/api/supplier/{good['id']}"), 200)
    assert (block["overall_score"], block["score_level"]) == ("46.00", "block")
    assert srm.delete(f"/api/supplier_evaluation/{third['id']}").status_code == 204
    assert made(srm.get(f"/api/supplier/{good['id']}"), 200)["score_level"] == "warn"
    unscored = supplier(srm, "شرکت پارس‌نگار")
    assert (unscored["overall_score"], unscored["score_level"]) == (None, "unscored")
    assert (unscored["evaluation_count"], unscored["on_time_percent"]) == (0, None)
    for field in ("overall_score", "quality_score", "deliveries", "on_time_percent"):
        refused(srm.post("/api/supplier", json={"name": "X", field: 99}), 422, "field_computed")
    refused(srm.patch(f"/api/supplier/{good['id']}", json={"quality_score": 100}),
            422, "field_computed")


def test_the_orders_totals_and_received_quantities_appear_by_themselves(
        srm: TestClient) -> None:
    done = ordered_and_received(srm)
    po, url = done["po"], f"/api/purchase_order/{done['po']['id']}"
    assert (po["net_amount"], po["tax_amount"], po["total_amount"]) == \
        ("1533.30", "199.33", "1732.63")
    assert (po["line_count"], po["quantity_ordered"], po["quantity_delivered"],
            po["quantity_rejected"], po["quantity_received"], po["value_received"]) == \
        (2, "110.000", "110.000", "2.000", "108.000", "1466.64")
    line2 = made(srm.get(f"/api/po_line/{done['lines'][1]['id']}"), 200)
    assert (line2["quantity_received"], line2["quantity_open"], line2["value_received"]) == \
        ("8.000", "2.000", "266.64")
    # the rest of line 2 arrives late: the order is complete, one receipt of two on time
    late = made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0002", "purchase_order": po["id"],
        "received_at": "2025-03-20T08:00:00Z"}))
    assert late["on_time"] is False
    rest = made(srm.post("/api/goods_receipt_line", json={
        "goods_receipt": late["id"], "po_line": line2["id"], "quantity_received": "2"}))
    po = made(srm.get(url), 200)
    assert (po["quantity_received"], po["value_received"], po["receipt_count"],
            po["receipts_on_time"]) == ("110.000", "1533.30", 2, 1)
    # a correction of a receipt line, then its deletion, are followed too
    made(srm.patch(f"/api/goods_receipt_line/{rest['id']}", json={"quantity_rejected": "1"}), 200)
    assert made(srm.get(url), 200)["quantity_received"] == "109.000"
    assert srm.delete(f"/api/goods_receipt/{late['id']}").status_code == 204  # cascades its line
    po = made(srm.get(url), 200)
    assert (po["quantity_received"], po["receipt_count"]) == ("108.000", 1)
    # a line's price change reaches the order's totals
    made(srm.patch(f"/api/po_line/{line2['id']}", json={"discount_percent": "10"}), 200)
    po = made(srm.get(url), 200)
    assert (po["net_amount"], po["value_received"]) == ("1499.97", "1440.00")  # 8 × 30.00
    # nobody sends a roll-up, not even the right value
    refused(srm.patch(url, json={"net_amount": po["net_amount"]}), 422, "field_computed")
    refused(srm.post("/api/purchase_order", json={
        "number": "PO-2025-0099", "order_date": "2025-03-03", "supplier": done["supplier"]["id"],
        "quantity_received": "1"}), 422, "field_computed")
    refused(srm.patch(f"/api/po_line/{line2['id']}", json={"quantity_received": "10"}),
            422, "field_computed")
    assert made(srm.get(url), 200)["net_amount"] == "1499.97"


def test_no_more_accepted_than_ordered(srm: TestClient) -> None:
    """A rule on the order line reads its roll-up: a receipt line that would accept more than
    was ordered is refused, and nothing of it is written; so is ordering less than accepted."""
    done = ordered_and_received(srm)
    line1 = done["lines"][0]
    receipt = made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0002", "purchase_order": done["po"]["id"]}))
    error = refused(srm.post("/api/goods_receipt_line", headers=ZH, json={
        "goods_receipt": receipt["id"], "po_line": line1["id"], "quantity_received": "1"}),
        422, "rule_failed")
    assert "合格数量将超过订购数量" in error["message"]
    assert made(srm.get(f"/api/goods_receipt/{receipt['id']}/lines"), 200)["items"] == []
    po = made(srm.get(f"/api/purchase_order/{done['po']['id']}"), 200)
    assert (po["quantity_delivered"], po["quantity_received"]) == ("110.000", "108.000")
    # the surplus piece arrives and is rejected: delivered, not accepted
    made(srm.post("/api/goods_receipt_line", json={
        "goods_receipt": receipt["id"], "po_line": line1["id"], "quantity_received": "1",
        "quantity_rejected": "1"}))
    po = made(srm.get(f"/api/purchase_order/{done['po']['id']}"), 200)
    assert (po["quantity_delivered"], po["quantity_received"]) == ("111.000", "108.000")
    error = refused(srm.patch(f"/api/po_line/{line1['id']}", headers=RU,
                              json={"quantity": "99"}), 422, "rule_failed")
    assert "оприходовано больше, чем заказано" in error["message"]


def test_a_receipt_with_lines_stays_with_its_order(srm: TestClient) -> None:
    """Moving a receipt to another order would leave its lines on the first order's lines:
    the receipt's rule, over a roll-up of its lines' same_order, refuses it."""
    done = ordered_and_received(srm)
    other = made(order(srm, done["supplier"]["id"], "PO-2025-0002"))
    url = f"/api/goods_receipt/{done['receipt']['id']}"
    error = refused(srm.patch(url, headers=RU, json={"purchase_order": other["id"]}),
                    422, "rule_failed")
    assert "перенести приёмку со строками в другой заказ" in error["message"]
    assert made(srm.get(url), 200)["purchase_order"] == done["po"]["id"]
    assert made(srm.get(f"/api/purchase_order/{other['id']}"), 200)["receipt_count"] == 0
    empty = made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0002", "purchase_order": done["po"]["id"]}))
    moved = made(srm.patch(f"/api/goods_receipt/{empty['id']}",
                           json={"purchase_order": other["id"]}), 200)  # no lines yet: fine
    assert moved["lines_of_other_orders"] == 0
    assert made(srm.get(f"/api/purchase_order/{other['id']}"), 200)["receipt_count"] == 1


def test_receipts_and_invoices_keep_the_suppliers_scorecard(srm: TestClient) -> None:
    done = ordered_and_received(srm)
    hua = f"/api/supplier/{done['supplier']['id']}"
    card = made(srm.get(hua), 200)
    assert (card["deliveries"], card["deliveries_on_time"], card["on_time_percent"]) == \
        (1, 1, "100.00")
    assert (card["quantity_delivered"], card["quantity_rejected"], card["reject_percent"]) == \
        ("110.000", "2.000", "1.82")  # 2 of 110
    assert (card["invoiced_net"], card["price_variance_percent"]) == ("0.00", None)
    made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0002", "purchase_order": done["po"]["id"],
        "received_at": "2025-03-11T00:00:00Z"}))  # a day late
    assert made(srm.get(hua), 200)["on_time_percent"] == "50.00"
    # moving the expected day makes the late receipt on time: formulas and roll-ups follow
    made(srm.patch(f"/api/purchase_order/{done['po']['id']}",
                   json={"expected_delivery": "2025-03-12"}), 200)
    assert made(srm.get(hua), 200)["on_time_percent"] == "100.00"
    made(srm.post("/api/supplier_invoice", json={
        "invoice_no": "INV-778", "supplier": done["supplier"]["id"],
        "purchase_order": done["po"]["id"], "net_amount": "1480.00", "quantity_invoiced": "108"}))
    card = made(srm.get(hua), 200)
    assert (card["invoiced_net"], card["invoiced_expected"], card["price_variance_percent"]) == \
        ("1480.00", "1466.64", "0.91")  # 13.36 over 1466.64


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
    # a line of another order cannot be booked on this receipt: the receipt's rule over its
    # lines answers (the line's own rule line_of_the_same_order says the same)
    other = made(order(srm, done["supplier"]["id"], "PO-2025-0002"))
    stray = made(srm.post("/api/po_line", json={
        "purchase_order": other["id"], "item": done["item"]["id"], "line_no": 1,
        "quantity": 5, "unit_price": "1.00"}))
    error = refused(srm.post("/api/goods_receipt_line", headers=ZH, json={
        **body, "po_line": stray["id"]}), 422, "rule_failed")
    assert "不能登记其他订单的行" in error["message"], error
    assert error["details"][0]["rule"] == "lines_stay_with_their_order"


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


def test_the_match_follows_the_receipts_without_touching_the_invoice(srm: TestClient) -> None:
    """An invoice for the whole order arrives before the rejected pieces are replaced: its
    approval is refused; the replacement's receipt alone makes it match."""
    done = ordered_and_received(srm)
    invoice = made(srm.post("/api/supplier_invoice", json={
        "invoice_no": "СФ-2025/17", "supplier": done["supplier"]["id"],
        "purchase_order": done["po"]["id"], "net_amount": "1533.30", "tax_amount": "199.33",
        "quantity_invoiced": "110"}))
    assert (invoice["po_net_amount"], invoice["po_quantity_received"],
            invoice["expected_amount"], invoice["match_status"]) == \
        ("1533.30", "108.000", "1466.64", "quantity_variance")
    url = f"/api/supplier_invoice/{invoice['id']}"
    made(srm.post(f"{url}/stage", json={"to": "matching"}), 200)
    error = refused(srm.post(f"{url}/stage", json={"to": "approved_for_payment"}),
                    422, "rule_failed")
    assert "The three-way match failed" in str(error)
    receipt = made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0002", "purchase_order": done["po"]["id"]}))
    made(srm.post("/api/goods_receipt_line", json={
        "goods_receipt": receipt["id"], "po_line": done["lines"][1]["id"],
        "quantity_received": "2"}))
    now = made(srm.get(url), 200)
    assert (now["po_quantity_received"], now["expected_amount"], now["variance_amount"],
            now["match_status"], now["version"]) == \
        ("110.000", "1533.30", "0.00", "matched", invoice["version"] + 1)  # + the stage move
    made(srm.post(f"{url}/stage", json={"to": "approved_for_payment"}), 200)
    # the matched invoice cannot be sent its order's side
    refused(srm.patch(url, json={"expected_amount": "1.00"}), 422, "field_computed")


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

    poor = supplier(srm, "Low Score Ltd", (40, 40, 40), status="approved")
    error = refused(order(srm, poor["id"], "PO-2025-0011", **RU), 422, "rule_failed")
    assert "ниже 50" in str(error)
    error = refused(order(srm, poor["id"], "PO-2025-0011", **ZH), 422, "rule_failed")
    assert "低于50分" in str(error)
    evaluate(srm, poor["id"], "2024-Q2", 80, 80, 80)  # averages 60: a warning, not a block
    assert made(order(srm, poor["id"], "PO-2025-0011"))["supplier"] == poor["id"]
    new = supplier(srm, "New Prospect")  # no scores yet: not blocked
    made(order(srm, new["id"], "PO-2025-0012"))


def test_contract_dates(srm: TestClient) -> None:
    hua = supplier(srm, "上海华东机电有限公司")["id"]
    body = {"number": "C-2025-01", "title": "Рамочный договор 框架协议", "supplier": hua,
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
    low = supplier(srm, "Low", (60, 60, 60))
    made(srm.post("/api/contract", json={
        "number": "C-1", "title": "t", "supplier": low["id"], "status": "active",
        "valid_from": "2020-01-01", "valid_to": "2021-01-01", "renewal_notice_days": 30}))

    def ids(path: str, params: dict[str, str]) -> list[int]:
        return [x["id"] for x in made(srm.get(path, params=params), 200)["items"]]

    assert ids("/api/supplier", {"below_threshold": "true", "sort": "overall_score"}) == [low["id"]]
    assert len(ids("/api/supplier_invoice", {"match_status": "price_variance"})) == 1
    assert ids("/api/po_line", {"quantity_open[gt]": "0"}) == [done["lines"][1]["id"]]  # 2 rejected
    assert len(ids("/api/contract", {"renewal_decision_by[lte]": "today+30d",
                                     "status": "active"})) == 1


def test_the_readmes_story(srm: TestClient) -> None:
    """README, "Walkthrough": request → order → partial receipt with a rejected part →
    invoice refused → the rest arrives → approved; the scorecard follows; a supplier scored
    below 50, then one blocked, gets no new order."""
    hua = made(srm.post("/api/supplier", json={"name": "上海华东机电有限公司", "country": "CN",
                                                "status": "approved"}))
    assert (hua["overall_score"], hua["score_level"]) == (None, "unscored")
    evaluate(srm, hua["id"], "2024-Q4", 90, 80, 70)
    card = made(srm.get(f"/api/supplier/{hua['id']}"), 200)
    assert (card["quality_score"], card["overall_score"], card["score_level"]) == \
        ("90.00", "81.50", "ok")
    request = made(srm.post("/api/purchase_request", json={
        "number": "PR-2025-0001", "title": "Подшипники 6204 轴承", "department": "maintenance",
        "suggested_supplier": hua["id"]}))
    pr = f"/api/purchase_request/{request['id']}"
    for stage in ("submitted", "under_review"):
        made(srm.post(f"{pr}/stage", json={"to": stage}), 200)
    made(srm.patch(pr, json={"approved_by": "Ли Вэй 李伟", "approved_at": "2025-03-02T10:00:00Z"}),
         200)
    made(srm.post(f"{pr}/stage", json={"to": "approved"}), 200)
    item = made(srm.post("/api/item", json={"sku": "BRG-6204", "name": "Подшипник 6204 轴承"}))
    po = made(srm.post("/api/purchase_order", json={
        "number": "PO-2025-0001", "order_date": "2025-03-03", "expected_delivery": "2025-03-10",
        "supplier": hua["id"], "request": request["id"]}))
    assert (po["net_amount"], po["total_amount"], po["quantity_ordered"]) == \
        ("0.00", "0.00", "0.000")
    made(srm.post(f"{pr}/stage", json={"to": "ordered"}), 200)
    lines = [made(srm.post("/api/po_line", json={
        "purchase_order": po["id"], "item": item["id"], "line_no": no, "quantity": quantity,
        "unit_price": price, "discount_percent": discount, "tax_rate": "13"}))
        for no, quantity, price, discount in ((1, "100", "12.50", "4"), (2, "10", "33.33", None))]
    url = f"/api/purchase_order/{po['id']}"
    po = made(srm.get(url), 200)
    assert (po["net_amount"], po["tax_amount"], po["total_amount"], po["quantity_ordered"],
            po["quantity_received"]) == ("1533.30", "199.33", "1732.63", "110.000", "0.000")

    receipt = made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0001", "purchase_order": po["id"], "received_at": "2025-03-08T09:30:00Z",
        "condition": "partial"}))
    for line, received, rejected in ((lines[0], "100", None), (lines[1], "10", "2")):
        made(srm.post("/api/goods_receipt_line", json={
            "goods_receipt": receipt["id"], "po_line": line["id"], "quantity_received": received,
            "quantity_rejected": rejected}))
    po = made(srm.get(url), 200)
    assert (po["quantity_received"], po["quantity_rejected"], po["value_received"]) == \
        ("108.000", "2.000", "1466.64")
    assert made(srm.get(f"/api/po_line/{lines[1]['id']}"), 200)["quantity_open"] == "2.000"
    refused(srm.patch(url, json={"quantity_received": "110"}), 422, "field_computed")

    invoice = made(srm.post("/api/supplier_invoice", json={
        "invoice_no": "INV-778", "invoice_date": "2025-03-12", "supplier": hua["id"],
        "purchase_order": po["id"], "net_amount": "1533.30", "tax_amount": "199.33",
        "quantity_invoiced": "110"}))
    assert (invoice["expected_amount"], invoice["variance_amount"], invoice["match_status"]) == \
        ("1466.64", "66.66", "quantity_variance")
    inv = f"/api/supplier_invoice/{invoice['id']}"
    made(srm.post(f"{inv}/stage", json={"to": "matching"}), 200)
    error = refused(srm.post(f"{inv}/stage", headers=RU, json={"to": "approved_for_payment"}),
                    422, "rule_failed")
    assert error["message"].startswith("Сверка заказ–приёмка–счёт не пройдена")
    assert error["details"][0]["rule"] == "pay_only_matched"

    late = made(srm.post("/api/goods_receipt", json={
        "number": "GR-2025-0002", "purchase_order": po["id"], "received_at": "2025-03-14T14:00:00Z"}))
    made(srm.post("/api/goods_receipt_line", json={
        "goods_receipt": late["id"], "po_line": lines[1]["id"], "quantity_received": "2"}))
    invoice = made(srm.get(inv), 200)
    assert (invoice["po_quantity_received"], invoice["expected_amount"],
            invoice["variance_amount"], invoice["match_status"]) == \
        ("110.000", "1533.30", "0.00", "matched")
    assert made(srm.post(f"{inv}/stage", json={"to": "approved_for_payment"}), 200)["stage"] \
        == "approved_for_payment"

    card = made(srm.get(f"/api/supplier/{hua['id']}"), 200)
    assert (card["deliveries"], card["deliveries_on_time"], card["on_time_percent"],
            card["quantity_delivered"], card["quantity_rejected"], card["reject_percent"],
            card["invoiced_net"], card["invoiced_expected"], card["price_variance_percent"]) == \
        (2, 1, "50.00", "112.000", "2.000", "1.79", "1533.30", "1533.30", "0.00")
    evaluate(srm, hua["id"], "2025-Q1", 30, 40, 50)
    card = made(srm.get(f"/api/supplier/{hua['id']}"), 200)
    assert (card["quality_score"], card["overall_score"], card["score_level"],
            card["below_threshold"]) == ("60.00", "60.00", "warn", True)
    evaluate(srm, hua["id"], "2025-Q2", 0, 10, 10)
    card = made(srm.get(f"/api/supplier/{hua['id']}"), 200)
    assert (card["overall_score"], card["score_level"]) == ("42.00", "block")
    error = refused(order(srm, hua["id"], "PO-2025-0002", **ZH), 422, "rule_failed")
    assert error["details"][0]["rule"] == "supplier_score_above_block"
    made(srm.patch(f"/api/supplier/{hua['id']}", json={"status": "blocked"}), 200)
    error = refused(order(srm, hua["id"], "PO-2025-0002", **RU), 422, "rule_failed")
    assert "Поставщик заблокирован: новые заказы ему размещать нельзя" in str(error)
