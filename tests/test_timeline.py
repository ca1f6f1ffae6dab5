"""A card's timeline over HTTP on both databases: `GET /api/{e}/{id}/timeline`, newest
first, merging comments, activities (call, e-mail, meeting), the change history, stage
moves and the records that belong to the card through a polymorphic link (tasks,
documents); adding comments and activities and their validation; cursor paging, also
across many items sharing one instant; refused writes leave no trace.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from engine import Kartoteka
from engine.setup.names import link_column

Record = dict[str, Any]

WORLD = {
    "fa": "سلام دنیا؛ قرارداد شماره ۱۲۳ امضا شد",
    "zh": "你好，世界。合同已签署：第一二三号",
    "ru": "Привет, мир! Договор № 123 подписан; ёлка — Ёж",
    "mixed": "😀 𝕏 e\u0301 \u200d Σίσυφος ﷺ",
}


# -- helpers ------------------------------------------------------------------------------------

def _post(client: TestClient, path: str, body: Any) -> Record:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _client(client: TestClient, name: str = "Acme", **fields: Any) -> Record:
    return _post(client, "/api/client", {"name": name, **fields})


def _sale(api: TestClient, number: str = "S-1", **fields: Any) -> Record:
    if "client" not in fields:
        fields["client"] = _client(api, f"Client of {number}")["id"]
    return _post(api, "/api/sale", {"number": number, **fields})


def _page(client: TestClient, entity: str, record_id: int, **params: str) -> Record:
    response = client.get(f"/api/{entity}/{record_id}/timeline", params=params)
    assert response.status_code == 200, response.text
    page = dict(response.json())
    assert set(page) == {"items", "next"}
    return page


def _items(client: TestClient, entity: str, record_id: int) -> list[Record]:
    page = _page(client, entity, record_id, limit="200")
    assert page["next"] is None
    return list(page["items"])


def _walk(client: TestClient, entity: str, record_id: int, limit: int) -> list[Record]:
    """Every item, following `next` at the given page size."""
    items: list[Record] = []
    cursor: str | None = None
    for _ in range(1000):
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        page = _page(client, entity, record_id, **params)
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit
    raise AssertionError("the cursor never ends")


def _keys(items: list[Record]) -> list[tuple[str, int]]:
    return [(item.get("entity", item["type"]) if item["type"] == "record" else item["type"],
             item["id"]) for item in items]


def _of(items: list[Record], *types: str) -> list[Record]:
    return [item for item in items if item["type"] in types]


def _changes(client: TestClient, entity: str, record_id: int) -> list[Record]:
    return _of(_items(client, entity, record_id), "change")


def _error(response: httpx.Response, status: int) -> Record:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json()["error"])


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# -- what a timeline holds ------------------------------------------------------------------------

def test_a_new_record_has_its_create_and_first_stage(client: TestClient) -> None:
    buyer = _client(client)
    sale = _sale(client, "S-1", client=buyer["id"], amount="1234.5", notes="first call")
    stage, change = _items(client, "sale", sale["id"])
    assert change == {"type": "change", "id": change["id"], "at": sale["created_at"], "by": None,
                      "action": "create", "changes": {
                          "stage": "lead", "number": "S-1", "amount": "1234.50", "currency": "RUB",
                          "notes": "first call", "client": buyer["id"]}}
    assert stage == {"type": "stage", "id": stage["id"], "at": sale["created_at"], "by": None,
                     "pipeline": "default", "from": None, "to": "lead", "seconds_in_previous": None}
    # an entity without pipeline has its create only
    [created] = _items(client, "client", buyer["id"])
    assert created["action"] == "create"
    assert created["changes"] == {"name": "Acme", "kind": "company"}


def test_patch_lists_only_the_changed_fields_old_and_new(client: TestClient) -> None:
    sale = _sale(client, "S-1", amount="10", notes="a")
    url = f"/api/sale/{sale['id']}"
    assert client.patch(url, json={"amount": "12.5", "notes": "a", "probability": 40}).status_code == 200
    assert client.patch(url, json={"notes": None, "currency": "USD"}).status_code == 200
    # a PATCH that changes nothing writes nothing
    assert client.patch(url, json={"notes": None, "amount": 12.5}).status_code == 200
    assert client.patch(url, json={}).status_code == 200
    changes = _changes(client, "sale", sale["id"])
    assert [c["action"] for c in changes] == ["update", "update", "create"]
    assert changes[1]["changes"] == {"amount": ["10.00", "12.50"], "probability": [None, 40]}
    assert changes[0]["changes"] == {"notes": ["a", None], "currency": ["RUB", "USD"]}
    assert changes[0]["at"] >= changes[1]["at"] >= changes[2]["at"]


def test_many_to_many_changes_show_added_and_removed(client: TestClient) -> None:
    p1, p2, p3 = (_post(client, "/api/product", {"sku": s, "name": s}) for s in ("P1", "P2", "P3"))
    sale = _sale(client, "S-1", products=[p1["id"]])
    url = f"/api/sale/{sale['id']}"
    assert client.put(f"{url}/products/{p2['id']}").status_code == 204
    assert client.put(f"{url}/products/{p2['id']}").status_code == 204  # already there: nothing
    assert client.delete(f"{url}/products/{p1['id']}").status_code == 204
    # from the other side: still the sale's link, so the sale's timeline
    assert client.put(f"/api/product/{p3['id']}/sales/{sale['id']}").status_code == 204
    assert client.patch(url, json={"products": [p1["id"], p3["id"]]}).status_code == 200
    changes = _changes(client, "sale", sale["id"])
    assert [c["changes"] for c in changes] == [
        {"products": {"added": [p1["id"]], "removed": [p2["id"]]}},
        {"products": {"added": [p3["id"]], "removed": []}},
        {"products": {"added": [], "removed": [p1["id"]]}},
        {"products": {"added": [p2["id"]], "removed": []}},
        {"stage": "lead", "number": "S-1", "currency": "RUB", "client": sale["client"],
         "products": [p1["id"]]},
    ]
    assert [c["action"] for c in changes] == ["update"] * 4 + ["create"]
    # the sale's version follows every one of them
    assert client.get(url).json()["version"] == 5


def test_set_null_by_a_delete_shows_on_the_affected_record(client: TestClient) -> None:
    supplier = _post(client, "/api/supplier", {"name": "Supplier"})
    sale = _sale(client, "S-1", supplier=supplier["id"])
    product = _post(client, "/api/product", {"sku": "P1", "name": "P1", "supplier": supplier["id"]})
    assert client.delete(f"/api/supplier/{supplier['id']}").status_code == 204
    for entity, record in (("sale", sale), ("product", product)):
        latest = _changes(client, entity, record["id"])[0]
        assert latest["action"] == "update"
        assert latest["changes"] == {"supplier": [supplier["id"], None]}
        assert client.get(f"/api/{entity}/{record['id']}").json()["supplier"] is None
    assert client.get(f"/api/supplier/{supplier['id']}/timeline").status_code == 404


def test_stage_moves_are_on_the_timeline(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    client.post(f"/api/sale/{sale['id']}/stage", json={"to": "negotiation"})
    client.post(f"/api/sale/{sale['id']}/stage", json={"to": "lost"})
    stages = _of(_items(client, "sale", sale["id"]), "stage")
    assert [(s["from"], s["to"]) for s in stages] == [
        ("negotiation", "lost"), ("lead", "negotiation"), (None, "lead")]
    assert all(s["seconds_in_previous"] >= 0 for s in stages[:2])


def test_tasks_and_documents_about_the_record_are_embedded(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    other = _sale(client, "S-2")
    about = {"entity": "sale", "id": sale["id"]}
    task = _post(client, "/api/task", {"subject": "Call back", "about": about})
    document = _post(client, "/api/document", {"kind": "contract", "number": "D-1", "about": about})
    _post(client, "/api/task", {"subject": "Not this one", "about": {"entity": "sale", "id": other["id"]}})
    _post(client, "/api/task", {"subject": "About the client",
                                "about": {"entity": "client", "id": sale["client"]}})
    records = _of(_items(client, "sale", sale["id"]), "record")
    assert records == [
        {"type": "record", "entity": "document", "link": "about", "id": document["id"],
         "at": document["created_at"], "record": document},
        {"type": "record", "entity": "task", "link": "about", "id": task["id"],
         "at": task["created_at"], "record": task},
    ]
    # the embedded record is the current one
    client.patch(f"/api/task/{task['id']}", json={"status": "done"})
    embedded = _of(_items(client, "sale", sale["id"]), "record")[1]["record"]
    assert embedded == client.get(f"/api/task/{task['id']}").json()
    assert embedded["status"] == "done"
    # pointing it elsewhere or deleting it takes it off the card
    moved = client.patch(f"/api/task/{task['id']}", json={"about": {"entity": "sale", "id": other["id"]}})
    assert moved.status_code == 200, moved.text
    assert client.delete(f"/api/document/{document['id']}").status_code == 204
    assert _of(_items(client, "sale", sale["id"]), "record") == []
    assert [r["id"] for r in _of(_items(client, "sale", other["id"]), "record")] == \
        sorted([r["id"] for r in _of(_items(client, "sale", other["id"]), "record")], reverse=True)
    # a task's own timeline works too (a task may be about a document, or have subtasks)
    assert _items(client, "task", task["id"])[0]["type"] == "change"


def test_a_task_pointed_at_a_missing_record_stays_on_its_card(client: TestClient) -> None:
    sale = _sale(client)
    task = _post(client, "/api/task", {"subject": "Call", "about": {"entity": "sale", "id": sale["id"]}})
    before = _items(client, "sale", sale["id"])
    # the same entity with a missing id; another entity with no record of that id
    for about in ({"entity": "sale", "id": 999}, {"entity": "product", "id": sale["id"]}):
        response = client.patch(f"/api/task/{task['id']}", json={"about": about})
        error = _error(response, 422)
        assert error["details"][0]["field"] == "about"
    assert client.get(f"/api/task/{task['id']}").json() == task
    assert _items(client, "sale", sale["id"]) == before


def test_the_timeline_merges_every_source_newest_first(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    sid = sale["id"]
    _post(client, f"/api/sale/{sid}/comments", {"text": "first"})
    client.patch(f"/api/sale/{sid}", json={"amount": "5"})
    client.post(f"/api/sale/{sid}/stage", json={"to": "proposal"})
    _post(client, f"/api/sale/{sid}/activities", {"kind": "call", "direction": "out"})
    _post(client, "/api/task", {"subject": "Follow up", "about": {"entity": "sale", "id": sid}})
    _post(client, f"/api/sale/{sid}/comments", {"text": "last"})
    items = _items(client, "sale", sid)
    assert [i["type"] for i in items] == [
        "comment", "record", "call", "stage", "change", "comment", "stage", "change"]
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    assert (items[0]["text"], items[5]["text"]) == ("last", "first")


# -- comments -----------------------------------------------------------------------------------

def test_a_comment_is_added_and_listed(client: TestClient) -> None:
    sale = _sale(client)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    response = client.post(f"/api/sale/{sale['id']}/comments", json={"text": "  Call after lunch\n"})
    assert response.status_code == 201, response.text
    comment = response.json()
    assert comment == {"type": "comment", "id": comment["id"], "at": comment["at"], "by": None,
                       "text": "  Call after lunch\n"}
    assert comment["at"].endswith("Z")
    assert dt.datetime.fromisoformat(comment["at"]) >= before
    assert _items(client, "sale", sale["id"])[0] == comment
    # comments do not change the record
    assert client.get(f"/api/sale/{sale['id']}").json() == sale


@pytest.mark.parametrize("body", [
    {}, {"text": ""}, {"text": "   \n\t"}, {"text": None}, {"text": 5}, {"text": ["a"]},
    {"text": {"a": 1}}, {"text": True}, {"text": "ok", "author": "me"}, {"txt": "typo"},
    {"text": "a\x00b"}, {"text": "x" * 20_001}, ["text"], "text", 3,
])
def test_bad_comments_are_refused(client: TestClient, body: Any) -> None:
    sale = _sale(client)
    before = _items(client, "sale", sale["id"])
    response = client.post(f"/api/sale/{sale['id']}/comments", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    error = _error(response, 422)
    assert error["code"] == "validation_failed"
    assert error["details"]
    if isinstance(body, dict):
        named = {d["field"] for d in error["details"]}
        assert named == (set(body) - {"text"} or {"text"})
    assert _items(client, "sale", sale["id"]) == before


def test_comments_on_missing_records_are_404(client: TestClient) -> None:
    for path in ("/api/sale/999/comments", "/api/sale/0/comments", "/api/sale/x/comments",
                 "/api/sale/99999999999999999999/comments", "/api/nothing/1/comments"):
        response = client.post(path, json={"text": "hello"})
        assert response.status_code == 404, (path, response.text)
        assert "error" in response.json()


@pytest.mark.parametrize("language", sorted(WORLD))
def test_text_in_every_script_round_trips(client: TestClient, language: str) -> None:
    text = WORLD[language]
    sale = _sale(client, notes=text)
    comment = _post(client, f"/api/sale/{sale['id']}/comments", {"text": text})
    activity = _post(client, f"/api/sale/{sale['id']}/activities", {
        "kind": "meeting", "subject": text[:20], "text": text, "result": text[::-1]})
    assert comment["text"] == text
    assert (activity["subject"], activity["text"], activity["result"]) == (text[:20], text, text[::-1])
    response = client.get(f"/api/sale/{sale['id']}/timeline")
    assert response.headers["content-type"].startswith("application/json")
    items = json.loads(response.content.decode("utf-8"))["items"]
    assert items[0] == activity and items[1] == comment
    assert items[-1]["changes"]["notes"] == text
    client.patch(f"/api/sale/{sale['id']}", json={"notes": text + "!"})
    assert _changes(client, "sale", sale["id"])[0]["changes"] == {"notes": [text, text + "!"]}


# -- activities ---------------------------------------------------------------------------------

def test_activities_of_each_kind(client: TestClient) -> None:
    sale = _sale(client)
    url = f"/api/sale/{sale['id']}/activities"
    call = _post(client, url, {"kind": "call", "direction": "out", "duration_seconds": 300,
                               "subject": "Price", "text": "Discussed discounts",
                               "result": "Send a proposal"})
    assert call == {"type": "call", "id": call["id"], "at": call["at"], "by": None,
                    "direction": "out", "duration_seconds": 300, "subject": "Price",
                    "text": "Discussed discounts", "result": "Send a proposal"}
    email = _post(client, url, {"kind": "email", "direction": "in", "subject": "Re: price"})
    meeting = _post(client, url, {"kind": "meeting"})
    assert (email["type"], email["direction"], email["duration_seconds"]) == ("email", "in", None)
    assert meeting == {"type": "meeting", "id": meeting["id"], "at": meeting["at"], "by": None,
                       "direction": None, "duration_seconds": None, "subject": None,
                       "text": None, "result": None}
    zero = _post(client, url, {"kind": "call", "duration_seconds": 0})
    assert zero["duration_seconds"] == 0
    assert _of(_items(client, "sale", sale["id"]), "call", "email", "meeting") == [
        zero, meeting, email, call]


def test_an_activity_in_the_past_is_ordered_by_its_time(client: TestClient) -> None:
    sale = _sale(client)
    url = f"/api/sale/{sale['id']}/activities"
    old = _post(client, url, {"kind": "meeting", "at": "2024-03-01T12:00:00+03:00"})
    assert old["at"] == "2024-03-01T09:00:00Z"
    older = _post(client, url, {"kind": "call", "at": "2023-12-31T23:59:59.5Z"})
    assert older["at"] == "2023-12-31T23:59:59.500000Z"
    _post(client, f"/api/sale/{sale['id']}/comments", {"text": "now"})
    items = _items(client, "sale", sale["id"])
    assert [i["type"] for i in items] == ["comment", "stage", "change", "meeting", "call"]
    assert items[-2:] == [old, older]


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"kind"}),
    ({"kind": "sms"}, {"kind"}),
    ({"kind": "Call"}, {"kind"}),
    ({"kind": None}, {"kind"}),
    ({"kind": ["call"]}, {"kind"}),
    ({"kind": "call", "direction": "both"}, {"direction"}),
    ({"kind": "call", "direction": 1}, {"direction"}),
    ({"kind": "call", "duration_seconds": -1}, {"duration_seconds"}),
    ({"kind": "call", "duration_seconds": 1.5}, {"duration_seconds"}),
    ({"kind": "call", "duration_seconds": "60"}, {"duration_seconds"}),
    ({"kind": "call", "duration_seconds": True}, {"duration_seconds"}),
    ({"kind": "call", "duration_seconds": 10**7 + 1}, {"duration_seconds"}),
    ({"kind": "call", "duration_seconds": 2**70}, {"duration_seconds"}),
    ({"kind": "call", "subject": "x" * 301}, {"subject"}),
    ({"kind": "call", "subject": 5}, {"subject"}),
    ({"kind": "call", "text": "a\x00"}, {"text"}),
    ({"kind": "call", "text": "x" * 20_001}, {"text"}),
    ({"kind": "call", "result": {"ok": True}}, {"result"}),
    ({"kind": "call", "at": "yesterday"}, {"at"}),
    ({"kind": "call", "at": "2024-01-01T10:00:00"}, {"at"}),
    ({"kind": "call", "at": "2024-02-30T10:00:00Z"}, {"at"}),
    ({"kind": "call", "at": 1700000000}, {"at"}),
    ({"kind": "call", "at": "0001-01-01T00:00:00+01:00"}, {"at"}),
    ({"kind": "call", "by": 3}, {"by"}),
    ({"kind": "call", "type": "call"}, {"type"}),
    ({"kind": "sms", "direction": "up", "duration_seconds": -5}, {"kind", "direction", "duration_seconds"}),
])
def test_bad_activities_are_refused(client: TestClient, body: Any, fields: set[str]) -> None:
    sale = _sale(client)
    before = _items(client, "sale", sale["id"])
    error = _error(client.post(f"/api/sale/{sale['id']}/activities", json=body), 422)
    assert {d["field"] for d in error["details"]} == fields
    assert _items(client, "sale", sale["id"]) == before


@pytest.mark.parametrize("body", [["call"], "call", None, 1])
def test_an_activity_body_must_be_an_object(client: TestClient, body: Any) -> None:
    sale = _sale(client)
    response = client.post(f"/api/sale/{sale['id']}/activities", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    _error(response, 422)
    assert len(_items(client, "sale", sale["id"])) == 2


# -- paging -------------------------------------------------------------------------------------

def _busy_card(client: TestClient) -> int:
    """A sale with items of every source: comments, activities, changes, moves, tasks."""
    sale = _sale(client)
    sid = sale["id"]
    for n in range(3):
        _post(client, f"/api/sale/{sid}/comments", {"text": f"comment {n}"})
        _post(client, f"/api/sale/{sid}/activities", {"kind": "call", "subject": f"call {n}"})
        client.patch(f"/api/sale/{sid}", json={"probability": n * 10})
        _post(client, "/api/task", {"subject": f"task {n}", "about": {"entity": "sale", "id": sid}})
    _post(client, "/api/document", {"kind": "invoice", "about": {"entity": "sale", "id": sid}})
    client.post(f"/api/sale/{sid}/stage", json={"to": "proposal"})
    client.post(f"/api/sale/{sid}/stage", json={"to": "negotiation"})
    _post(client, f"/api/sale/{sid}/activities", {"kind": "email", "at": "2020-01-01T00:00:00Z"})
    return int(sid)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_cursor_paging_walks_everything_once(client: TestClient, limit: int) -> None:
    sid = _busy_card(client)
    everything = _items(client, "sale", sid)
    assert len(everything) == 2 + 3 * 4 + 1 + 2 + 1
    walked = _walk(client, "sale", sid, limit)
    assert _keys(walked) == _keys(everything)
    assert len(set(_keys(walked))) == len(walked)
    assert walked == everything


def test_the_default_page_and_next(client: TestClient) -> None:
    sale = _sale(client)
    for n in range(55):
        _post(client, f"/api/sale/{sale['id']}/comments", {"text": str(n)})
    first = _page(client, "sale", sale["id"])
    assert len(first["items"]) == 50 and first["next"]
    assert [i["text"] for i in first["items"][:3]] == ["54", "53", "52"]
    rest = _page(client, "sale", sale["id"], cursor=first["next"])
    assert [i["type"] for i in rest["items"]] == ["comment"] * 5 + ["stage", "change"]
    assert rest["next"] is None
    # an empty cursor is the first page
    assert _page(client, "sale", sale["id"], cursor="", limit="50") == first
    # new items do not disturb a walk in progress
    _post(client, f"/api/sale/{sale['id']}/comments", {"text": "newer"})
    assert _page(client, "sale", sale["id"], cursor=first["next"]) == rest


def _same_instant(kt: Kartoteka, sale_id: int, moment: dt.datetime) -> None:
    """Put every journal row and linked task/document of the sale at one instant."""
    storage = kt.storage
    with kt.db.write(system="test") as conn:
        for table in (storage.changes, storage.stage_history, storage.activities):
            conn.execute(sa.update(table).where(table.c.entity == "sale", table.c.record_id == sale_id)
                         .values(at=moment))
        for entity in ("task", "document"):
            table = storage[entity].table
            conn.execute(sa.update(table).where(table.c.about_entity == "sale",
                                                table.c[link_column("about")] == sale_id)
                         .values(created_at=moment))


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_items_that_share_one_instant(kt: Kartoteka, client: TestClient, limit: int) -> None:
    sale = _sale(client)
    sid = sale["id"]
    for n in range(7):
        _post(client, f"/api/sale/{sid}/activities", {"kind": "call", "subject": str(n),
                                                      "at": "2024-05-05T10:00:00Z"})
        _post(client, f"/api/sale/{sid}/comments", {"text": str(n)})
    for n in range(3):
        client.patch(f"/api/sale/{sid}", json={"probability": n})
        client.post(f"/api/sale/{sid}/stage", json={"to": ("proposal", "lead")[n % 2]})
        _post(client, "/api/task", {"subject": str(n), "about": {"entity": "sale", "id": sid}})
    _same_instant(kt, sid, dt.datetime(2024, 5, 5, 10, 0, tzinfo=dt.UTC))
    everything = _items(client, "sale", sid)
    assert len(everything) == 14 + 4 + 4 + 3
    assert {i["at"] for i in everything} == {"2024-05-05T10:00:00Z"}
    walked = _walk(client, "sale", sid, limit)
    assert len(set(_keys(walked))) == len(walked)
    assert walked == everything
    # within one instant: newest source row first (highest id), a stable order
    comments = [int(i["text"]) for i in _of(walked, "comment")]
    assert comments == sorted(comments, reverse=True)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_tasks_and_documents_with_equal_ids_at_one_instant(
        kt: Kartoteka, client: TestClient, limit: int) -> None:
    """A task and a document may have the same id; at one instant neither may be lost."""
    sale = _sale(client)
    sid = sale["id"]
    about = {"entity": "sale", "id": sid}
    for n in range(3):
        _post(client, "/api/task", {"subject": str(n), "about": about})
        _post(client, "/api/document", {"kind": "act", "about": about})
    _same_instant(kt, sid, dt.datetime(2024, 5, 5, 10, 0, tzinfo=dt.UTC))
    everything = _items(client, "sale", sid)
    assert sorted(_keys(_of(everything, "record"))) == [
        ("document", 1), ("document", 2), ("document", 3), ("task", 1), ("task", 2), ("task", 3)]
    walked = _walk(client, "sale", sid, limit)
    assert sorted(_keys(walked)) == sorted(_keys(everything))
    assert walked == everything


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "201"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "1.5"},
    {"limit": ""}, {"limit": "99999999999999999999"}, {"cursor": "garbage!"},
    {"cursor": "eyJhIjoxfQ"}, {"cursor": "W10"}, {"cursor": "WyIyMDI0LTAxLTAxIiwxLDFd"},
    {"cursor": "WyJ4IiwxLDFd"}, {"cursor": "WyIyMDI0LTAxLTAxVDAwOjAwOjAwWiIsOTksMV0"},
    {"sort": "-at"}, {"offset": "1"}, {"type": "comment"}, {"include": "client"}, {"q": "x"},
])
def test_bad_timeline_parameters_are_400(client: TestClient, params: dict[str, str]) -> None:
    sale = _sale(client)
    response = client.get(f"/api/sale/{sale['id']}/timeline", params=params)
    error = _error(response, 400)
    assert error["code"] == "invalid_query"
    assert [d["field"] for d in error["details"]] == list(params)


def test_a_valid_cursor_from_another_card_is_harmless(client: TestClient) -> None:
    a, b = _sale(client, "S-1"), _sale(client, "S-2")
    _post(client, f"/api/sale/{a['id']}/comments", {"text": "x"})
    cursor = _page(client, "sale", a["id"], limit="1")["next"]
    assert cursor
    assert _page(client, "sale", b["id"], cursor=cursor)["next"] is None


def test_the_timeline_of_a_missing_record_is_404(client: TestClient) -> None:
    sale = _sale(client)
    for path in ("/api/sale/999/timeline", "/api/sale/0/timeline", "/api/sale/-1/timeline",
                 "/api/sale/abc/timeline", "/api/nothing/1/timeline"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert "error" in response.json()
    assert client.delete(f"/api/sale/{sale['id']}").status_code == 204
    assert client.get(f"/api/sale/{sale['id']}/timeline").status_code == 404


# -- refused writes leave nothing ---------------------------------------------------------------

def test_a_refused_write_leaves_no_timeline_entry(client: TestClient) -> None:
    p1 = _post(client, "/api/product", {"sku": "P1", "name": "P1"})
    sale = _sale(client, products=[p1["id"]])
    sid = sale["id"]
    url = f"/api/sale/{sid}"
    before = _items(client, "sale", sid)
    refused = [
        client.patch(url, json={"amount": "-1"}),
        client.patch(url, json={"amount": "1", "amout": 2}),
        client.patch(url, json={"client": 999}),
        client.patch(url, json={"products": [p1["id"], 999]}),
        client.patch(url, json={"notes": "x"}, headers={"If-Match": '"7"'}),
        client.patch(url, json={"number": _sale(client, "S-2")["number"]}),
        client.post(f"{url}/stage", json={"to": "contract"}),
        client.post(f"{url}/stage", json={"to": "nowhere"}),
        client.post(f"{url}/stage", json={"to": "lead"}),
        client.post(f"{url}/comments", json={"text": ""}),
        client.post(f"{url}/activities", json={"kind": "fax"}),
        client.put(f"{url}/products/999"),
        client.delete(f"{url}/products/{p1['id'] + 100}"),
        client.post("/api/task", json={"subject": "x", "about": {"entity": "sale", "id": sid},
                                       "priority": "whenever"}),
        client.post("/api/task", json={"subject": "x", "about": {"entity": "sale", "id": 999}}),
        client.post("/api/task", json={"subject": "x", "about": {"entity": "supplier", "id": sid}}),
        client.delete(f"/api/client/{sale['client']}"),
    ]
    assert [r.status_code for r in refused] == [
        422, 422, 422, 422, 412, 409, 422, 422, 409, 422, 422, 404, 404, 422, 422, 422, 409]
    assert _items(client, "sale", sid) == before
    assert client.get(url).json() == sale
