"""Links over HTTP on both databases: setting and clearing them, the many-to-many link
calls in both directions, linked-record lists, include=, and the delete rules
(restrict, cascade, set_null) of the default setup.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

Record = dict[str, Any]


def _post(client: TestClient, entity: str, body: dict[str, Any]) -> Record:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _get(client: TestClient, entity: str, record_id: int, **params: str) -> Record:
    response = client.get(f"/api/{entity}/{record_id}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _gone(client: TestClient, entity: str, record_id: int) -> bool:
    return client.get(f"/api/{entity}/{record_id}").status_code == 404


def _ids(client: TestClient, path: str, **params: str) -> list[int]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"items", "total", "next"}
    ids = [item["id"] for item in page["items"]]
    if page["next"] is None:
        assert page["total"] == len(ids)
    return ids


def _client(client: TestClient, name: str = "Acme", **fields: Any) -> Record:
    return _post(client, "client", {"name": name, **fields})


def _product(client: TestClient, sku: str, **fields: Any) -> Record:
    return _post(client, "product", {"sku": sku, "name": f"Product {sku}", **fields})


def _sale(client: TestClient, number: str, buyer: int, **fields: Any) -> Record:
    return _post(client, "sale", {"number": number, "client": buyer, **fields})


# -- many-to-one --------------------------------------------------------------------------------

def test_many_to_one_set_change_and_clear(client: TestClient) -> None:
    c1, c2 = _client(client, "C1"), _client(client, "C2")
    supplier = _post(client, "supplier", {"name": "Supplier"})
    sale = _sale(client, "S-1", c1["id"])
    path = f"/api/sale/{sale['id']}"
    assert sale["client"] == c1["id"] and sale["supplier"] is None and sale["version"] == 1

    changed = client.patch(path, json={"supplier": supplier["id"]})
    assert changed.status_code == 200
    assert changed.json()["supplier"] == supplier["id"] and changed.json()["version"] == 2
    assert _ids(client, f"{path}/supplier") == [supplier["id"]]
    assert _ids(client, f"/api/supplier/{supplier['id']}/sales") == [sale["id"]]

    moved = client.patch(path, json={"client": c2["id"]})
    assert moved.status_code == 200 and moved.json()["client"] == c2["id"]
    assert moved.json()["version"] == 3
    assert _ids(client, f"/api/client/{c1['id']}/sales") == []
    assert _ids(client, f"/api/client/{c2['id']}/sales") == [sale["id"]]

    cleared = client.patch(path, json={"supplier": None})
    assert cleared.status_code == 200
    assert cleared.json()["supplier"] is None and cleared.json()["version"] == 4
    assert _ids(client, f"{path}/supplier") == []
    assert _ids(client, f"/api/supplier/{supplier['id']}/sales") == []


def test_many_to_one_refusals_change_nothing(client: TestClient) -> None:
    buyer = _client(client)
    sale = _sale(client, "S-1", buyer["id"])
    path = f"/api/sale/{sale['id']}"
    required = client.patch(path, json={"client": None})
    assert required.status_code == 422
    missing = client.patch(path, json={"supplier": 999})
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "link_not_found"
    assert missing.json()["error"]["details"][0]["field"] == "supplier"
    create_missing = client.post("/api/sale", json={"number": "S-2", "client": 999})
    assert create_missing.status_code == 422
    assert _get(client, "sale", sale["id"]) == sale
    assert _ids(client, "/api/sale") == [sale["id"]]


# -- many-to-many -------------------------------------------------------------------------------

def test_many_to_many_through_the_body(client: TestClient) -> None:
    buyer = _client(client)
    p1, p2, p3 = (_product(client, sku)["id"] for sku in ("P1", "P2", "P3"))
    sale = _sale(client, "S-1", buyer["id"], products=[p3, p1])
    assert sale["products"] == [p1, p3]
    path = f"/api/sale/{sale['id']}"
    assert _get(client, "sale", sale["id"])["products"] == [p1, p3]
    assert _ids(client, f"/api/product/{p3}/sales") == [sale["id"]]

    replaced = client.patch(path, json={"products": [p2]}).json()
    assert replaced["products"] == [p2] and replaced["version"] == 2
    assert _ids(client, f"/api/product/{p1}/sales") == []
    same = client.patch(path, json={"products": [p2]}).json()
    assert same["products"] == [p2] and same["version"] == 2, "no change, no new version"
    emptied = client.patch(path, json={"products": []}).json()
    assert emptied["products"] == [] and emptied["version"] == 3

    for bad in ([p1, 999], [p1, p1], [0], ["x"]):
        response = client.patch(path, json={"products": bad})
        assert response.status_code == 422, bad
    assert _get(client, "sale", sale["id"])["products"] == []
    assert _get(client, "sale", sale["id"])["version"] == 3


def test_put_and_delete_a_link_from_the_declaring_side(client: TestClient) -> None:
    buyer = _client(client)
    sale = _sale(client, "S-1", buyer["id"])
    product = _product(client, "P1")
    link = f"/api/sale/{sale['id']}/products/{product['id']}"

    assert client.put(link).status_code == 204
    record = _get(client, "sale", sale["id"])
    assert record["products"] == [product["id"]] and record["version"] == 2
    assert client.put(link).status_code == 204, "PUT is idempotent"
    record = _get(client, "sale", sale["id"])
    assert record["products"] == [product["id"]] and record["version"] == 2
    assert _ids(client, f"/api/product/{product['id']}/sales") == [sale["id"]]

    assert client.delete(link).status_code == 204
    record = _get(client, "sale", sale["id"])
    assert record["products"] == [] and record["version"] == 3
    again = client.delete(link)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"
    assert _get(client, "sale", sale["id"])["version"] == 3


def test_put_and_delete_a_link_from_the_reverse_side(client: TestClient) -> None:
    buyer = _client(client)
    s1, s2 = _sale(client, "S-1", buyer["id"]), _sale(client, "S-2", buyer["id"])
    _product(client, "P1"), _product(client, "P2")
    product = _product(client, "P3")
    assert product["id"] == 3 and s1["id"] == 1
    assert client.put("/api/product/3/sales/1").status_code == 204
    assert client.put(f"/api/product/3/sales/{s2['id']}").status_code == 204
    assert client.put("/api/product/3/sales/1").status_code == 204
    one = _get(client, "sale", 1)
    assert one["products"] == [3] and one["version"] == 2, "the declaring record changed"
    assert _ids(client, "/api/product/3/sales") == [1, s2["id"]]
    assert _ids(client, "/api/sale/1/products") == [3]

    assert client.delete("/api/product/3/sales/1").status_code == 204
    assert _get(client, "sale", 1)["products"] == []
    assert _get(client, "sale", 1)["version"] == 3
    assert client.delete("/api/product/3/sales/1").status_code == 404
    assert _ids(client, "/api/product/3/sales") == [s2["id"]]


def test_link_calls_with_missing_records(client: TestClient) -> None:
    buyer = _client(client)
    sale = _sale(client, "S-1", buyer["id"])
    product = _product(client, "P1")
    for path in (f"/api/sale/{sale['id']}/products/999", f"/api/sale/999/products/{product['id']}",
                 f"/api/product/999/sales/{sale['id']}", f"/api/product/{product['id']}/sales/999",
                 f"/api/sale/{sale['id']}/products/0", f"/api/sale/{sale['id']}/products/abc"):
        for method in ("PUT", "DELETE"):
            response = client.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
    assert _get(client, "sale", sale["id"]) == sale
    # a link that is not many-to-many has no such call
    response = client.put(f"/api/sale/{sale['id']}/client/{buyer['id']}")
    assert response.status_code in (404, 405)


# -- linked records, answered like a list ------------------------------------------------------

@pytest.fixture
def trade(client: TestClient) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    ids["C1"] = _client(client, "C1", city="Kazan")["id"]
    ids["C2"] = _client(client, "C2")["id"]
    for sku in ("P1", "P2", "P3"):
        ids[sku] = _product(client, sku)["id"]
    ids["L1"] = _post(client, "logistics", {"name": "Carrier"})["id"]
    for number, owner, amount, products in (("S1", "C1", "300", ["P1", "P2"]),
                                            ("S2", "C1", None, ["P2"]),
                                            ("S3", "C1", "100", []),
                                            ("S4", "C2", "50", ["P2", "P3"])):
        ids[number] = _sale(client, number, ids[owner], amount=amount,
                            products=[ids[p] for p in products], carriers=[ids["L1"]])["id"]
    assert ids["C1"] == ids["S1"]  # tasks about client 1 must not show as tasks of sale 1
    for name, about, parent in (("T1", ("sale", "S1"), None), ("T2", ("sale", "S1"), None),
                                ("T3", ("client", "C1"), None), ("T4", None, "T1"),
                                ("T5", None, "T4")):
        ids[name] = _post(client, "task", {
            "subject": name, "about": None if about is None else {"entity": about[0], "id": ids[about[1]]},
            "parent": None if parent is None else ids[parent]})["id"]
    ids["D1"] = _post(client, "document", {"kind": "contract", "number": "D1",
                                           "about": {"entity": "sale", "id": ids["S1"]}})["id"]
    ids["T6"] = _post(client, "task", {"subject": "T6",
                                       "about": {"entity": "document", "id": ids["D1"]}})["id"]
    return ids


def test_linked_records_every_direction(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    assert _ids(client, f"/api/sale/{t['S1']}/client") == [t["C1"]]
    assert _ids(client, f"/api/client/{t['C1']}/sales") == [t["S1"], t["S2"], t["S3"]]
    assert _ids(client, f"/api/client/{t['C2']}/sales") == [t["S4"]]
    assert _ids(client, f"/api/sale/{t['S1']}/products") == [t["P1"], t["P2"]]
    assert _ids(client, f"/api/sale/{t['S3']}/products") == []
    assert _ids(client, f"/api/product/{t['P2']}/sales") == [t["S1"], t["S2"], t["S4"]]
    assert _ids(client, f"/api/logistics/{t['L1']}/sales") == [t["S1"], t["S2"], t["S3"], t["S4"]]
    assert _ids(client, f"/api/sale/{t['S2']}/supplier") == []
    # polymorphic: forward to whatever entity the task is about, and back per entity
    assert _ids(client, f"/api/task/{t['T1']}/about") == [t["S1"]]
    about_client = client.get(f"/api/task/{t['T3']}/about").json()
    assert [(i["id"], i["name"]) for i in about_client["items"]] == [(t["C1"], "C1")]
    assert _ids(client, f"/api/task/{t['T4']}/about") == []
    assert _ids(client, f"/api/sale/{t['S1']}/tasks") == [t["T1"], t["T2"]]
    assert _ids(client, f"/api/client/{t['C1']}/tasks") == [t["T3"]]
    assert _ids(client, f"/api/sale/{t['S1']}/documents") == [t["D1"]]
    assert _ids(client, f"/api/document/{t['D1']}/tasks") == [t["T6"]]
    # self link
    assert _ids(client, f"/api/task/{t['T1']}/subtasks") == [t["T4"]]
    assert _ids(client, f"/api/task/{t['T4']}/parent") == [t["T1"]]
    assert _ids(client, f"/api/task/{t['T5']}/subtasks") == []


def test_linked_records_take_list_parameters(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    sales = f"/api/client/{t['C1']}/sales"
    assert _ids(client, sales, sort="-amount") == [t["S1"], t["S3"], t["S2"]]
    assert _ids(client, sales, sort="amount") == [t["S2"], t["S3"], t["S1"]]
    assert _ids(client, sales, **{"amount[gt]": "100"}) == [t["S1"]]
    assert _ids(client, sales, **{"amount[isnull]": "true"}) == [t["S2"]]
    assert _ids(client, sales, **{"products.sku": "P2"}) == [t["S1"], t["S2"]]
    assert _ids(client, sales, q="s3") == [t["S3"]]
    page = client.get(sales, params={"limit": "2", "sort": "number"}).json()
    assert [i["id"] for i in page["items"]] == [t["S1"], t["S2"]] and page["total"] == 3
    rest = client.get(sales, params={"limit": "2", "sort": "number", "cursor": page["next"]}).json()
    assert [i["id"] for i in rest["items"]] == [t["S3"]] and rest["next"] is None
    offset = client.get(sales, params={"limit": "2", "offset": "2"}).json()
    assert [i["id"] for i in offset["items"]] == [t["S3"]]
    no_total = client.get(sales, params={"total": "false"}).json()
    assert no_total["total"] is None and len(no_total["items"]) == 3
    included = client.get(sales, params={"include": "client", "limit": "1"}).json()
    assert included["items"][0]["client"]["name"] == "C1"
    tasks = client.get(f"/api/sale/{t['S1']}/tasks", params={"subject": "T2"}).json()
    assert [i["id"] for i in tasks["items"]] == [t["T2"]] and tasks["total"] == 1


def test_linked_records_refusals(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    for path in ("/api/client/999/sales", "/api/sale/999/products", "/api/task/999/about",
                 "/api/sale/999/tasks", "/api/client/abc/sales"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    for params in ({"nosuch": "1"}, {"sort": "nosuch"}, {"amount[contains]": "1"},
                   {"include": "nosuch"}, {"cursor": "garbage"}, {"limit": "501"}):
        response = client.get(f"/api/client/{t['C1']}/sales", params=params)
        assert response.status_code == 400, params
    assert client.get(f"/api/client/{t['C1']}/nosuch").status_code == 404


# -- include ------------------------------------------------------------------------------------

def test_include_many_to_one_and_many_to_many(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    full = {name: _get(client, "product", t[name]) for name in ("P1", "P2", "P3")}
    c1 = _get(client, "client", t["C1"])
    carrier = _get(client, "logistics", t["L1"])
    page = client.get("/api/sale", params={"include": "client,products,carriers,supplier",
                                           "sort": "number"}).json()
    by_number = {item["number"]: item for item in page["items"]}
    assert by_number["S1"]["client"] == c1
    assert by_number["S1"]["products"] == [full["P1"], full["P2"]]
    assert by_number["S3"]["products"] == []
    assert by_number["S4"]["products"] == [full["P2"], full["P3"]]
    assert by_number["S2"]["carriers"] == [carrier]
    assert by_number["S1"]["supplier"] is None
    one = _get(client, "sale", t["S1"], include="client,products")
    assert one["client"] == c1 and one["products"] == [full["P1"], full["P2"]]
    assert one == by_number["S1"] | {"carriers": [t["L1"]]}
    plain = _get(client, "sale", t["S1"])
    assert plain["client"] == t["C1"] and plain["products"] == [t["P1"], t["P2"]]


def test_include_polymorphic_embeds_complete_records(client: TestClient,
                                                     trade: dict[str, Any]) -> None:
    t = trade
    s1 = _get(client, "sale", t["S1"])
    assert s1["products"] == [t["P1"], t["P2"]] and s1["carriers"] == [t["L1"]]
    c1 = _get(client, "client", t["C1"])
    page = client.get("/api/task", params={"include": "about,parent"}).json()
    by_subject = {item["subject"]: item for item in page["items"]}
    assert by_subject["T1"]["about"] == {"entity": "sale", "id": t["S1"], "record": s1}
    assert by_subject["T3"]["about"] == {"entity": "client", "id": t["C1"], "record": c1}
    assert by_subject["T4"]["about"] is None
    assert by_subject["T4"]["parent"] == _get(client, "task", t["T1"])
    assert by_subject["T1"]["parent"] is None
    one = _get(client, "task", t["T6"], include="about")
    assert one["about"] == {"entity": "document", "id": t["D1"],
                            "record": _get(client, "document", t["D1"])}
    document = _get(client, "document", t["D1"], include="about")
    assert document["about"]["record"] == s1


def test_include_unknown_link_is_refused(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    for path in ("/api/sale", f"/api/sale/{t['S1']}"):
        for include in ("nosuch", "client,nosuch", "tasks", "number"):
            response = client.get(path, params={"include": include})
            assert response.status_code == 400, (path, include, response.text)
            assert "include" in [d["field"] for d in response.json()["error"]["details"]]


# -- delete rules -------------------------------------------------------------------------------

def test_restrict_refuses_and_deletes_nothing(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    response = client.delete(f"/api/client/{t['C1']}")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "delete_restricted"
    assert "sale" in error["message"] and "3" in error["message"]
    assert error["details"] == [{"field": "sale.client", "problem": "3 record(s) link here"}]
    # the task about the client (cascade) was not deleted either
    assert not _gone(client, "client", t["C1"]) and not _gone(client, "task", t["T3"])
    assert _ids(client, f"/api/client/{t['C1']}/sales") == [t["S1"], t["S2"], t["S3"]]


def test_restrict_through_many_to_many(client: TestClient, trade: dict[str, Any]) -> None:
    t = trade
    document = _post(client, "document", {"kind": "certificate",
                                          "about": {"entity": "product", "id": t["P2"]}})
    response = client.delete(f"/api/product/{t['P2']}")
    assert response.status_code == 409
    error = response.json()["error"]
    assert "sale" in error["message"] and "3" in error["message"]
    assert error["details"][0]["field"] == "sale.products"
    assert not _gone(client, "product", t["P2"]) and not _gone(client, "document", document["id"])
    assert _ids(client, f"/api/product/{t['P2']}/sales") == [t["S1"], t["S2"], t["S4"]]
    carrier = client.delete(f"/api/logistics/{t['L1']}")
    assert carrier.status_code == 409 and "4" in carrier.json()["error"]["message"]


def test_cascade_deletes_tasks_and_documents_in_one_go(client: TestClient,
                                                       trade: dict[str, Any]) -> None:
    t = trade
    before = _get(client, "client", t["C1"])
    assert client.delete(f"/api/sale/{t['S1']}").status_code == 204
    for entity, name in (("sale", "S1"), ("task", "T1"), ("task", "T2"), ("document", "D1"),
                         ("task", "T6"), ("task", "T4"), ("task", "T5")):
        assert _gone(client, entity, t[name]), name
    # about client 1 (same id as sale 1): untouched; and the client itself is unchanged
    assert not _gone(client, "task", t["T3"])
    assert _get(client, "client", t["C1"]) == before
    assert _ids(client, "/api/task") == [t["T3"]]
    assert _ids(client, "/api/document") == []
    # its many-to-many rows went with it: the products and carrier are free of it
    assert _ids(client, f"/api/product/{t['P1']}/sales") == []
    assert _ids(client, f"/api/product/{t['P2']}/sales") == [t["S2"], t["S4"]]
    assert client.delete(f"/api/product/{t['P1']}").status_code == 204
    assert client.delete(f"/api/sale/{t['S1']}").status_code == 404


def test_deleting_a_record_removes_its_many_to_many_rows(client: TestClient,
                                                         trade: dict[str, Any]) -> None:
    t = trade
    for sale in ("S1", "S2", "S4"):
        assert client.delete(f"/api/sale/{t[sale]}").status_code == 204
    assert _ids(client, f"/api/product/{t['P2']}/sales") == []
    assert _ids(client, f"/api/logistics/{t['L1']}/sales") == [t["S3"]]
    assert client.delete(f"/api/product/{t['P2']}").status_code == 204
    assert client.delete(f"/api/sale/{t['S3']}").status_code == 204
    assert client.delete(f"/api/logistics/{t['L1']}").status_code == 204


def test_set_null_empties_the_link_and_bumps_versions(client: TestClient) -> None:
    supplier = _post(client, "supplier", {"name": "Supplier"})
    other = _post(client, "supplier", {"name": "Other"})
    products = [_product(client, sku, supplier=supplier["id"]) for sku in ("P1", "P2")]
    kept = _product(client, "P3", supplier=other["id"])
    buyer = _client(client)
    sale = _sale(client, "S-1", buyer["id"], supplier=supplier["id"])
    task = _post(client, "task", {"subject": "Audit",
                                  "about": {"entity": "supplier", "id": supplier["id"]}})
    assert client.delete(f"/api/supplier/{supplier['id']}").status_code == 204
    for before in [*products, sale]:
        entity = "sale" if "number" in before else "product"
        after = _get(client, entity, before["id"])
        assert after["supplier"] is None
        assert after["version"] == before["version"] + 1
        assert after["updated_at"] > before["updated_at"]
        assert {k: v for k, v in after.items() if k not in ("supplier", "version", "updated_at")} \
            == {k: v for k, v in before.items() if k not in ("supplier", "version", "updated_at")}
    assert _get(client, "product", kept["id"]) == kept
    assert _gone(client, "task", task["id"])  # task.about cascades
    assert _ids(client, "/api/product", **{"supplier[isnull]": "true"}) == [p["id"] for p in products]


def test_self_link_cascade(client: TestClient) -> None:
    def task(subject: str, parent: int | None = None) -> int:
        return int(_post(client, "task", {"subject": subject, "parent": parent})["id"])

    root = task("root")
    child = task("child", root)
    grandchild = task("grandchild", child)
    sibling = task("sibling", root)
    other = task("other")
    other_child = task("other child", other)
    assert client.delete(f"/api/task/{child}").status_code == 204
    assert _ids(client, "/api/task") == [root, sibling, other, other_child]
    assert client.delete(f"/api/task/{root}").status_code == 204
    assert _ids(client, "/api/task") == [other, other_child]
    assert _gone(client, "task", grandchild)


def test_delete_missing_record(client: TestClient) -> None:
    for path in ("/api/client/999", "/api/client/0", "/api/client/abc"):
        response = client.delete(path)
        assert response.status_code == 404, path
