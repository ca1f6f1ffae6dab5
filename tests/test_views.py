"""Saved views (`/api/views`, the web app's list tabs), on both databases: two real users
with real tokens each see and change only their own views; every query is checked as the
list would check it for that user before it is kept; bad input is a 4xx in the API's error
shape with nothing written; a view a later setup change broke is shown with its problem,
never a 500; a browser session changes views only with the CSRF token.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.records.saved_views import MAX_VIEWS
from tests.callers import Caller
from tests.test_web import assert_page, browse

SETUP = {
    "setup.yaml": """
        name: Views
        languages: [en, ru, fa]
        roles:
          manager:
            deal: {create: all, read: all, update: all, hidden: [margin]}
            memo: {read: all}
          clerk:
            deal: {read: all}
    """,
    "deal.yaml": """
        entity: deal
        title: "{title}"
        search: [title]
        fields:
          title: {type: string, required: true}
          kind: {type: choice, options: [retail, wholesale]}
          margin: {type: money}
          due_at: {type: datetime}
        pipeline:
          stages: [new, won, lost]
    """,
    "memo.yaml": """
        entity: memo
        fields:
          text: {type: string}
    """,
}


@pytest.fixture
def setup_dir(write_setup: Callable[..., Path]) -> Path:
    return write_setup(SETUP)


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], setup_dir: Path) -> Kartoteka:
    return make_kt(setup_dir)


@pytest.fixture
def people(kt: Kartoteka) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as http:
        anna, anna_token = kt.users.add("anna@example.com", ["manager"])
        boris, boris_token = kt.users.add("boris@example.com", ["manager"])
        clara, clara_token = kt.users.add("clara@example.com", ["clerk"])
        yield {"http": http, "anna": Caller(http, anna_token, anna.id),
               "boris": Caller(http, boris_token, boris.id),
               "clara": Caller(http, clara_token, clara.id)}


def answer(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def refused(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = answer(response, status)["error"]
    assert error["code"] == code, error
    if field is not None:
        assert field in [d["field"] for d in error.get("details", [])], error
    return error


def rows(kt: Kartoteka) -> list[dict[str, Any]]:
    with kt.db.read() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(kt.storage.views).order_by(kt.storage.views.c.id)).mappings()]


def test_each_user_sees_and_changes_only_their_own_views(kt: Kartoteka,
                                                         people: dict[str, Any]) -> None:
    anna, boris = people["anna"], people["boris"]
    won = answer(anna.post("/api/views", json={
        "entity": "deal", "name": "Выигранные", "query": "stage[eq]=won&sort=-title",
        "is_default": True}), 201)
    assert won["query"] == "stage[eq]=won&sort=-title" and won["problem"] is None
    assert won["is_default"] is True
    assert answer(anna.get(f"/api/views/{won['id']}"), 200) == won
    # the same name is Boris's to take too: names are per user
    his = answer(boris.post("/api/views", json={"entity": "deal", "name": "Выигранные",
                                                "query": "q=acme"}), 201)
    assert [v["id"] for v in answer(anna.get("/api/views?entity=deal"), 200)["items"]] \
        == [won["id"]]
    assert [v["id"] for v in answer(boris.get("/api/views?entity=deal"), 200)["items"]] \
        == [his["id"]]
    # Boris cannot read, change or delete Anna's view: to him it does not exist
    path = f"/api/views/{won['id']}"
    refused(boris.get(path), 404, "not_found")
    refused(boris.patch(path, json={"name": "mine now"}), 404, "not_found")
    refused(boris.patch(path, json={"is_default": False}), 404, "not_found")
    refused(boris.delete(path), 404, "not_found")
    assert answer(anna.get(path), 200) == won
    # nor does making his own default touch hers
    answer(boris.patch(f"/api/views/{his['id']}", json={"is_default": True}), 200)
    assert answer(anna.get(path), 200)["is_default"] is True
    assert people["http"].get("/api/views?entity=deal").status_code == 401  # no token
    memo = answer(anna.post("/api/views", json={"entity": "memo", "name": "Memos",
                                                "query": ""}), 201)
    assert [v["id"] for v in answer(anna.get("/api/views"), 200)["items"]] == [won["id"], memo["id"]]
    assert [v["id"] for v in answer(boris.get("/api/views"), 200)["items"]] == [his["id"]]
    answer(anna.delete(f"/api/views/{memo['id']}"), 204)
    answer(anna.delete(path), 204)
    refused(anna.get(path), 404, "not_found")
    assert [r["id"] for r in rows(kt)] == [his["id"]]


def test_rename_update_and_one_default_per_user_and_entity(people: dict[str, Any]) -> None:
    anna = people["anna"]
    first = answer(anna.post("/api/views", json={"entity": "deal", "name": "新的",
                                                 "query": "stage[eq]=new", "is_default": True}), 201)
    second = answer(anna.post("/api/views", json={"entity": "deal", "name": "فروش‌های عمده",
                                                  "query": "kind[eq]=wholesale"}), 201)
    assert second["name"] == "فروش‌های عمده"  # a Persian name, its zero-width non-joiner kept
    changed = answer(anna.patch(f"/api/views/{second['id']}", json={
        "name": "  Оптовые  ", "query": "?kind[eq]=wholesale&sort=title&title[contains]=",
        "is_default": True}), 200)
    assert changed["name"] == "Оптовые"
    assert changed["query"] == "kind[eq]=wholesale&sort=title"  # the "?" and empty inputs out
    assert changed["updated_at"] >= second["updated_at"]
    views = answer(anna.get("/api/views?entity=deal"), 200)["items"]
    assert {v["id"]: v["is_default"] for v in views} == {first["id"]: False, second["id"]: True}
    assert [v["name"] for v in views] == sorted(v["name"] for v in views)
    answer(anna.patch(f"/api/views/{second['id']}", json={"is_default": False}), 200)
    assert not any(v["is_default"] for v in answer(anna.get("/api/views?entity=deal"), 200)["items"])
    # an empty query is the whole list; a date typed in a datetime range is the whole day
    answer(anna.post("/api/views", json={"entity": "deal", "name": "Всё", "query": ""}), 201)
    answer(anna.post("/api/views", json={"entity": "deal", "name": "Due",
                                         "query": "due_at[gte]=2026-01-01&due_at[lte]=2026-01-31"}),
           201)


def test_bad_views_are_refused_and_nothing_is_written(kt: Kartoteka,
                                                      people: dict[str, Any]) -> None:
    anna, clara = people["anna"], people["clara"]
    kept = answer(anna.post("/api/views", json={"entity": "deal", "name": "Won",
                                                "query": "stage[eq]=won"}), 201)
    before = rows(kt)

    def post(body: Any) -> Any:
        return anna.post("/api/views", json=body)

    refused(post({"entity": "deals", "name": "x", "query": ""}), 422, "validation_failed", "entity")
    refused(post({"entity": 7, "name": "x", "query": ""}), 422, "validation_failed", "entity")
    refused(post({"name": "x", "query": ""}), 422, "validation_failed", "entity")
    refused(post({"entity": "deal", "query": ""}), 422, "validation_failed", "name")
    refused(post({"entity": "deal", "name": "x"}), 422, "validation_failed", "query")
    refused(post({"entity": "deal", "name": "x", "query": "", "colour": "red"}), 422,
            "validation_failed", "colour")
    refused(post([1, 2]), 422, "validation_failed")
    for name in ("", "   ", "x" * 101, 5, None, "two\nlines", "nul\x00"):
        refused(post({"entity": "deal", "name": name, "query": ""}), 422, "validation_failed",
                "name")
    assert answer(post({"entity": "deal", "name": "я" * 100, "query": ""}), 201)  # at the edge
    refused(post({"entity": "deal", "name": " won ", "query": ""}), 409, "view_name_taken", "name")
    refused(post({"entity": "deal", "name": "x", "query": "is_default=true"}), 422,
            "validation_failed", "query.is_default")
    # what the list refuses, a view refuses, with the list's own words
    for query, field in (("colour[eq]=red", "query.colour[eq]"),
                         ("stage[eq]=sold", "query.stage[eq]"),
                         ("kind[eq]=gift", "query.kind[eq]"),
                         ("due_at[gte]=soon", "query.due_at[gte]"),
                         ("sort=-colour", "query.sort"),
                         ("limit=100000", "query.limit"),
                         ("cursor=abc", "query.cursor"),
                         ("offset=10", "query.offset"),
                         ("margin[gte]=5", "query.margin[gte]"),  # hidden from a manager
                         ("sort=margin", "query.sort")):
        error = refused(post({"entity": "deal", "name": "x", "query": query}), 422,
                        "validation_failed", field)
        assert error["details"][0]["problem"], error
    for query in (5, None, "q=" + "x" * 4000, "title[contains]=" + "ж" * 1000):
        refused(post({"entity": "deal", "name": "x", "query": query}), 422,
                "validation_failed", "query")
    refused(post({"entity": "deal", "name": "x", "query": "", "is_default": "yes"}), 422,
            "validation_failed", "is_default")
    refused(anna.post("/api/views", content=b"{", headers={"Content-Type": "application/json"}),
            400, "malformed_request")
    refused(anna.post("/api/views", content=b"name=x",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}),
            415, "unsupported_media_type")
    # a role that may not read an entity keeps no view of it, nor lists one
    refused(clara.post("/api/views", json={"entity": "memo", "name": "x", "query": ""}), 403,
            "operation_forbidden")
    refused(clara.get("/api/views?entity=memo"), 403, "operation_forbidden")
    # the list's parameters, checked too
    refused(anna.get("/api/views?entity=deal&entity=memo"), 400, "invalid_query", "entity")
    refused(anna.get("/api/views?entity=nope"), 400, "invalid_query", "entity")
    refused(anna.get("/api/views?entity=deal&sort=name"), 400, "invalid_query", "sort")
    path = f"/api/views/{kept['id']}"
    refused(anna.patch(path, json={"entity": "memo"}), 422, "validation_failed", "entity")
    refused(anna.patch(path, json={"query": "stage[eq]=sold"}), 422, "validation_failed",
            "query.stage[eq]")
    refused(anna.patch(path, json={"name": "я" * 100}), 409, "view_name_taken")
    refused(anna.patch(path, json={"name": ""}), 422, "validation_failed", "name")
    refused(anna.patch(path, json="name"), 422, "validation_failed")
    for bad in ("0", "-1", "abc", "99999999999999999999", "1.5", "٣"):
        refused(anna.get(f"/api/views/{bad}"), 404, "not_found")
        refused(anna.delete(f"/api/views/{bad}"), 404, "not_found")
    refused(anna.get(f"{path}?x=1"), 400, "invalid_query")
    after = rows(kt)
    assert [r for r in after if r["id"] == kept["id"]] == [r for r in before]
    assert answer(anna.get(path), 200) == kept


def test_views_per_user_and_entity_are_capped(kt: Kartoteka, people: dict[str, Any]) -> None:
    anna, boris = people["anna"], people["boris"]
    now = dt.datetime.now(dt.UTC)
    with kt.db.write() as conn:
        conn.execute(sa.insert(kt.storage.views), [
            {"user_id": anna.id, "entity": "deal", "name": f"view {n}", "query": "",
             "is_default": False, "created_at": now, "updated_at": now}
            for n in range(MAX_VIEWS - 1)])
    answer(anna.post("/api/views", json={"entity": "deal", "name": "last", "query": ""}), 201)
    error = refused(anna.post("/api/views", json={"entity": "deal", "name": "one more",
                                                  "query": ""}), 409, "too_many_views")
    assert str(MAX_VIEWS) in error["message"]
    # others, and other entities, are not counted against Anna's
    answer(boris.post("/api/views", json={"entity": "deal", "name": "one more", "query": ""}), 201)
    answer(anna.post("/api/views", json={"entity": "memo", "name": "one more", "query": ""}), 201)
    assert len(rows(kt)) == MAX_VIEWS + 2


def test_a_view_a_setup_change_broke_is_shown_with_its_problem(
        db_url: str, kt: Kartoteka, open_kt: Callable[..., Kartoteka],
        write_setup: Callable[..., Path]) -> None:
    anna, token = kt.users.add("anna@example.com", ["manager"])
    with kt.acting.as_user(anna):
        broken = kt.views.create({"entity": "deal", "name": "Retail",
                                  "query": "kind[eq]=retail", "is_default": True})
        fine = kt.views.create({"entity": "deal", "name": "Won", "query": "stage[eq]=won"})
    changed = write_setup({**SETUP, "deal.yaml": SETUP["deal.yaml"].replace(
        "options: [retail, wholesale]", "options: [wholesale, online]")})
    later = open_kt(changed, db_url)
    later.migrate()
    try:
        with TestClient(create_app(later), base_url="http://127.0.0.1",
                        headers={"Authorization": f"Bearer {token}"}) as http:
            views = {v["id"]: v for v in answer(http.get("/api/views?entity=deal"), 200)["items"]}
            assert views[fine["id"]]["problem"] is None
            assert "retail" in views[broken["id"]]["problem"]
            assert "kind[eq]" in views[broken["id"]]["problem"]
            # the list opened by default is that view: its problem shown, not an error page
            page = http.get("/app/deal")
            assert page.status_code == 200, page.text
            assert 'class="broken"' in page.text and "no longer fits the setup" in page.text
            assert http.get(f"/app/deal?kind[eq]=retail&view={broken['id']}").status_code == 200
            # and it can be mended
            mended = answer(http.patch(f"/api/views/{broken['id']}",
                                       json={"query": "kind[eq]=online"}), 200)
            assert mended["problem"] is None
    finally:
        later.close()


def test_a_browser_session_changes_views_only_with_the_csrf_token(kt: Kartoteka) -> None:
    user, _ = kt.users.add("anna@example.com", ["manager"])
    kt.sessions.set_password(user.id, {"password": "correct horse battery"})
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as browser:
        assert browser.get("/app/sign-in").status_code == 200
        signed = browser.post("/app/sign-in", json={"email": "anna@example.com",
                                                     "password": "correct horse battery"},
                              headers={"X-CSRF-Token": browser.cookies.get("kt_csrf") or ""})
        assert signed.status_code == 200, signed.text
        body = {"entity": "deal", "name": "Mine", "query": ""}
        refused(browser.post("/api/views", json=body), 403, "csrf_failed")
        assert rows(kt) == []
        csrf = {"X-CSRF-Token": browser.cookies.get("kt_csrf") or ""}
        made = answer(browser.post("/api/views", json=body, headers=csrf), 201)
        refused(browser.delete(f"/api/views/{made['id']}"), 403, "csrf_failed")
        answer(browser.delete(f"/api/views/{made['id']}", headers=csrf), 204)


def test_open_mode_keeps_its_own_views(kt: Kartoteka) -> None:
    """While a database has no users, views are the open mode's; a user made later does
    not see them."""
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        made = answer(http.post("/api/views", json={"entity": "deal", "name": "Open",
                                                    "query": "q=x"}), 201)
        assert [v["id"] for v in answer(http.get("/api/views?entity=deal"), 200)["items"]] \
            == [made["id"]]
        assert rows(kt)[0]["user_id"] is None
        _, token = kt.users.add("anna@example.com", ["manager"])
        mine = Caller(http, token)
        assert answer(mine.get("/api/views?entity=deal"), 200)["items"] == []
        refused(mine.get(f"/api/views/{made['id']}"), 404, "not_found")


def test_deleting_a_user_deletes_their_views(kt: Kartoteka, people: dict[str, Any]) -> None:
    answer(people["boris"].post("/api/views", json={"entity": "deal", "name": "B",
                                                    "query": ""}), 201)
    with kt.db.write() as conn:
        conn.execute(sa.delete(kt.storage.users).where(kt.storage.users.c.id == people["boris"].id))
    assert rows(kt) == []


# -- the list page's tabs ------------------------------------------------------------------------
def test_a_list_page_shows_the_users_views_and_opens_the_default(
        kt: Kartoteka, people: dict[str, Any]) -> None:
    anna, boris = people["anna"], people["boris"]
    for title, stage in (("Won deal", "won"), ("New deal", "new")):
        made = kt.records.create("deal", {"title": title})
        if stage != "new":
            kt.stages.move("deal", made["id"], {"to": stage})
    won = answer(anna.post("/api/views", json={
        "entity": "deal", "name": "<b>Выигранные</b>", "query": "stage[eq]=won",
        "is_default": True}), 201)
    answer(boris.post("/api/views", json={"entity": "deal", "name": "Boris's own",
                                          "query": "q=new"}), 201)
    page = browse(kt, anna.headers["Authorization"].removeprefix("Bearer "))
    default = assert_page(page.get("/app/deal"))
    assert "Won deal" in default and "New deal" not in default  # her default, applied
    assert "&lt;b&gt;Выигранные&lt;/b&gt; ★" in default and "<b>Выигранные" not in default
    assert f'href="/app/deal?stage[eq]=won&amp;view={won["id"]}"' in default
    assert re.search(rf'data-view="{won["id"]}" aria-current="page"', default)
    assert 'name="view" value="' + str(won["id"]) + '"' in default  # the filters keep it open
    assert "Boris" not in default
    everything = assert_page(page.get("/app/deal?view=all"))
    assert "Won deal" in everything and "New deal" in everything
    assert re.search(r'href="/app/deal\?view=all" aria-current="page"', everything)
    assert 'data-query=""' in everything
    # a list filtered further than the open view: saving it keeps the filters, not the page
    further = assert_page(page.get(f"/app/deal?stage[eq]=won&q=deal&cursor=&view={won['id']}"))
    assert 'data-query="stage[eq]=won&amp;q=deal"' in further
    assert ": changed</em>" in further
    persian = assert_page(page.get("/app/deal?lang=fa&view=all"))
    assert "ذخیرهٔ این فهرست به‌عنوان نما" in persian and 'dir="rtl"' in persian
    # Boris's page: his view only, and no default of his applies
    his = assert_page(browse(kt, boris.headers["Authorization"].removeprefix("Bearer "))
                      .get("/app/deal"))
    assert "Boris&#39;s own" in his and "Выигранные" not in his and "New deal" in his

