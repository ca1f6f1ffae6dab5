"""Roles over real HTTP, on SQLite and PostgreSQL: managers see only their own clients,
hidden fields stay hidden wherever they could surface, refused writes change nothing,
and owners are reassigned only by roles allowed to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, SetupError, ValidationFailed, load_setup
from tests.callers import Caller, made

MARKER = "СЕКРЕТ 秘密 راز"


@pytest.fixture
def world(kt: Kartoteka) -> Iterator[dict[str, Caller]]:
    people = {"admin": ["admin"], "director": ["director"], "anna": ["manager"],
              "boris": ["manager"], "lena": ["lawyer"], "pavel": ["purchaser"]}
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as http:
        callers = {}
        for name, roles in people.items():
            user, token = kt.users.add(f"{name}@example.com", roles, team="north")
            callers[name] = Caller(http, token, user.id)
        yield callers


def everything(kt: Kartoteka) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read as the system: to prove a refusal changed nothing."""
    with kt.db.read(system="test") as conn:
        return {table.name: sorted(map(tuple, conn.execute(sa.select(table)).all()), key=repr)
                for table in kt.storage.metadata.sorted_tables}


def test_managers_see_and_touch_only_their_own_clients(world: dict[str, Caller]) -> None:
    anna, boris, director = world["anna"], world["boris"], world["director"]
    mine = made(anna.post("/api/client", json={"name": "Ромашка"}))
    theirs = made(boris.post("/api/client", json={"name": "Лютик"}))
    assert mine["owner"] == anna.id and theirs["owner"] == boris.id
    listed = made(anna.get("/api/client"), 200)
    assert [c["id"] for c in listed["items"]] == [mine["id"]] and listed["total"] == 1
    assert made(director.get("/api/client"), 200)["total"] == 2
    # out of scope is as good as missing: 404 on every door, never 403
    for call in (anna.get(f"/api/client/{theirs['id']}"),
                 anna.patch(f"/api/client/{theirs['id']}", json={"name": "x"}),
                 anna.delete(f"/api/client/{theirs['id']}"),
                 anna.get(f"/api/client/{theirs['id']}/sales"),
                 anna.get(f"/api/client/{theirs['id']}/timeline"),
                 anna.post(f"/api/client/{theirs['id']}/comments", json={"text": "hi"})):
        assert call.status_code == 404, call.text
        assert call.json()["error"]["code"] == "not_found"
    missing = anna.get("/api/client/999999").json()
    assert anna.get(f"/api/client/{theirs['id']}").json()["error"]["code"] == missing["error"]["code"]
    # a record she sees but may not delete (managers never delete clients): 403
    refused = anna.delete(f"/api/client/{mine['id']}")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "operation_forbidden"
    assert made(anna.get(f"/api/client/{mine['id']}"), 200)["name"] == "Ромашка"


def test_a_link_to_a_record_out_of_scope_is_a_link_to_nothing(
        kt: Kartoteka, world: dict[str, Caller]) -> None:
    anna, boris = world["anna"], world["boris"]
    theirs = made(boris.post("/api/client", json={"name": "Лютик"}))
    mine = made(anna.post("/api/client", json={"name": "Ромашка"}))
    before = everything(kt)
    refused = anna.post("/api/sale", json={"number": "S-1", "client": theirs["id"]})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "link_not_found"
    sale = made(anna.post("/api/sale", json={"number": "S-2", "client": mine["id"]}))
    before = everything(kt)
    refused = anna.patch(f"/api/sale/{sale['id']}", json={"client": theirs["id"]})
    assert refused.status_code == 422, refused.text
    task = anna.post("/api/task", json={"subject": "call", "about": {"entity": "client",
                                                                      "id": theirs["id"]}})
    assert task.status_code == 422 and task.json()["error"]["code"] == "link_not_found"
    assert everything(kt) == before


def test_hidden_fields_never_surface(kt: Kartoteka, world: dict[str, Caller]) -> None:
    pavel, anna = world["pavel"], world["anna"]
    product = made(pavel.post("/api/product", json={
        "sku": "P-1", "name": "Чай 茶", "purchase_price": "12.50", "sale_price": "20.00"}))
    assert product["purchase_price"] == "12.50"
    seen = made(anna.get(f"/api/product/{product['id']}"), 200)
    assert "purchase_price" not in seen and seen["sale_price"] == "20.00"
    assert all("purchase_price" not in p for p in made(anna.get("/api/product"), 200)["items"])
    client = made(anna.post("/api/client", json={"name": "Ромашка"}))
    sale = made(anna.post("/api/sale", json={"number": "S-1", "client": client["id"],
                                             "products": [product["id"]]}))
    embedded = made(anna.get(f"/api/sale/{sale['id']}", params={"include": "products"}), 200)
    assert embedded["products"][0]["sku"] == "P-1"
    assert "purchase_price" not in embedded["products"][0]
    linked = made(anna.get(f"/api/sale/{sale['id']}/products"), 200)
    assert "purchase_price" not in linked["items"][0]
    # naming it anywhere is refused (400), with the unknown-field answer and no hint of it
    for params in ({"purchase_price": "12.50"}, {"purchase_price[gt]": "0"},
                   {"sort": "-purchase_price"}):
        answer = anna.get("/api/product", params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert "has no field" in answer.text and "hidden" not in answer.text
    for path, params in (("/api/product", {"purchase_pric": "1"}),
                         ("/api/product", {"sort": "purchase_pric"}),
                         ("/api/sale", {"products.purchase_pric": "1"})):
        answer = anna.get(path, params=params)
        assert answer.status_code == 400 and "purchase_price" not in answer.text, answer.text
    answer = anna.get("/api/sale", params={"products.purchase_price[gt]": "0"})
    assert answer.status_code == 400 and "has no field" in answer.text
    # what it was and became is as hidden as the field
    made(pavel.patch(f"/api/product/{product['id']}", json={"purchase_price": "13.00"}), 200)
    timeline = made(anna.get(f"/api/product/{product['id']}/timeline"), 200)
    # (the changes only: a timestamp such as 00:28:13.007 must not make the check flaky)
    changes = str([item.get("changes") for item in timeline["items"]])
    assert "purchase_price" not in str(timeline) and "13.00" not in changes
    theirs = made(pavel.get(f"/api/product/{product['id']}/timeline"), 200)
    assert "13.00" in str([item.get("changes") for item in theirs["items"]])
    # and a manager cannot write it (nor create products at all)
    before = everything(kt)
    assert anna.post("/api/product", json={"sku": "P-2", "name": "x"}).status_code == 403
    refused = anna.patch(f"/api/product/{product['id']}", json={"purchase_price": "1.00"})
    assert refused.status_code == 403
    assert everything(kt) == before


def test_owner_is_the_creator_and_reassigning_is_a_right_of_its_own(
        kt: Kartoteka, world: dict[str, Caller]) -> None:
    anna, boris, director = world["anna"], world["boris"], world["director"]
    before = everything(kt)
    for body in ({"name": "x", "owner": boris.id}, {"name": "x", "id": 5},
                 {"name": "x", "version": 3}, {"name": "x", "created_at": "2020-01-01T00:00:00Z"}):
        answer = anna.post("/api/client", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert next(iter(set(body) - {"name"})) in answer.text
    assert everything(kt) == before
    client = made(anna.post("/api/client", json={"name": "Ромашка", "owner": anna.id}))
    assert client["owner"] == anna.id
    refused = anna.patch(f"/api/client/{client['id']}", json={"owner": boris.id})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "owner_not_writable"
    # the director may: the client moves from Anna's list to Boris's
    moved = made(director.patch(f"/api/client/{client['id']}", json={"owner": boris.id}), 200)
    assert moved["owner"] == boris.id
    assert made(anna.get("/api/client"), 200)["total"] == 0
    assert made(boris.get("/api/client"), 200)["total"] == 1
    # to an active user only
    assert director.patch(f"/api/client/{client['id']}", json={"owner": 999}).status_code == 422
    history = made(director.get(f"/api/client/{client['id']}/timeline"), 200)["items"]
    change = next(i for i in history if i["type"] == "change" and "owner" in i["changes"])
    assert change["by"] == director.id and change["changes"]["owner"] == [anna.id, boris.id]


def test_a_condition_scope_lets_the_lawyer_move_contracts_only(
        kt: Kartoteka, world: dict[str, Caller]) -> None:
    director, lena = world["director"], world["lena"]
    client = made(director.post("/api/client", json={"name": "Ромашка"}))
    lead = made(director.post("/api/sale", json={"number": "S-1", "client": client["id"]}))
    signing = made(director.post("/api/sale", json={"number": "S-2", "client": client["id"],
                                                    "contract_no": "Д-1"}))
    made(director.post(f"/api/sale/{signing['id']}/stage", json={"to": "contract"}), 200)
    assert made(lena.get("/api/sale"), 200)["total"] == 2
    before = everything(kt)
    refused = lena.post(f"/api/sale/{lead['id']}/stage", json={"to": "proposal"})
    assert refused.status_code == 403, refused.text
    assert lena.patch(f"/api/sale/{lead['id']}", json={"notes": "x"}).status_code == 403
    assert lena.delete(f"/api/sale/{signing['id']}").status_code == 403
    assert everything(kt) == before
    moved = made(lena.post(f"/api/sale/{signing['id']}/stage", json={"to": "invoiced"}), 200)
    assert moved["stage"] == "invoiced"
    # once out of the contract stage, it is out of her hands
    assert lena.post(f"/api/sale/{signing['id']}/stage", json={"to": "won"}).status_code == 403


def test_board_funnel_search_and_links_count_only_what_the_user_sees(
        world: dict[str, Caller]) -> None:
    anna, boris = world["anna"], world["boris"]
    for caller, count in ((anna, 3), (boris, 2)):
        client = made(caller.post("/api/client", json={"name": f"{MARKER} {caller.id}"}))
        for n in range(count):
            made(caller.post("/api/sale", json={"number": f"S-{caller.id}-{n}",
                                                "client": client["id"], "amount": "100.00"}))
    board = made(boris.get("/api/sale/board"), 200)
    assert sum(c["count"] for c in board["columns"]) == 2
    assert board["columns"][0]["sums"]["amount"] == "200.00"
    funnel = made(boris.get("/api/sale/funnel"), 200)
    assert funnel["records"] == 2 and funnel["stages"][0]["reached"] == 2
    assert made(boris.get("/api/client", params={"q": "СЕКРЕТ"}), 200)["total"] == 1
    assert made(boris.get("/api/sale", params={"client.name[startswith]": "СЕКРЕТ"}),
                200)["total"] == 2
    assert made(boris.get("/api/client", params={"sales.number[startswith]": "S-"}),
                200)["total"] == 1
    assert made(boris.get("/api/client", params={"sales[isnull]": "false"}), 200)["total"] == 1


def test_users_are_managed_over_http_by_admins_only(
        kt: Kartoteka, world: dict[str, Caller]) -> None:
    admin, anna = world["admin"], world["anna"]
    for call in (anna.get("/api/users"), anna.post("/api/users", json={
            "email": "x@example.com", "roles": ["director"]}), anna.get(f"/api/users/{anna.id}"),
            anna.patch(f"/api/users/{anna.id}", json={"roles": ["director"]}),
            anna.get(f"/api/users/{anna.id}/tokens")):
        assert call.status_code == 403, call.text
    assert made(anna.get("/api/me"), 200)["rights"]["product"]["hidden"] == ["purchase_price"]
    assert made(anna.get("/api/me"), 200)["rights"]["client"]["delete"] is False
    created = made(admin.post("/api/users", json={"email": "Oleg@Example.com",
                                                  "roles": ["manager"], "team": "south"}))
    assert created["user"]["email"] == "oleg@example.com" and created["token"].startswith("kt_")
    oleg = {"Authorization": f"Bearer {created['token']}"}
    assert admin.http.get("/api/client", headers=oleg).status_code == 200
    for body in ({"email": "bad", "roles": ["manager"]}, {"email": "a@example.com"},
                 {"email": "a@example.com", "roles": ["king"]}, {"email": "a@example.com",
                 "roles": ["manager"], "password": "x"}, [1]):
        assert admin.post("/api/users", json=body).status_code == 422, body
    tokens = made(admin.get(f"/api/users/{created['user']['id']}/tokens"), 200)["items"]
    assert len(tokens) == 1 and "token" not in tokens[0] and "hash" not in str(tokens[0])
    revoked = admin.delete(f"/api/users/{created['user']['id']}/tokens/{tokens[0]['id']}")
    assert revoked.status_code == 204
    assert admin.http.get("/api/client", headers=oleg).status_code == 401
    for expires in ("soon", 0, 5000, True, None):
        bad = admin.post(f"/api/users/{created['user']['id']}/tokens",
                         json={"expires_days": expires})
        assert bad.status_code == (201 if expires is None else 422), (expires, bad.text)
    fresh = made(admin.post(f"/api/users/{created['user']['id']}/tokens", json={}))["token"]
    again = {"Authorization": f"Bearer {fresh}"}
    assert admin.http.get("/api/client", headers=again).status_code == 200
    # a token is revoked through its own user only
    newest = made(admin.get(f"/api/users/{created['user']['id']}/tokens"), 200)["items"][-1]
    assert admin.delete(f"/api/users/{anna.id}/tokens/{newest['id']}").status_code == 404
    assert admin.http.get("/api/client", headers=again).status_code == 200
    made(admin.patch(f"/api/users/{created['user']['id']}", json={"active": False}), 200)
    assert admin.http.get("/api/client", headers=again).status_code == 401


def test_team_and_user_conditions(make_kt: Callable[..., Kartoteka],
                                  write_setup: Callable[..., Path]) -> None:
    folder = write_setup({
        "setup.yaml": """
            roles:
              agent:
                ticket: {create: all, read: team, update: {assignee_email: $user.email},
                         delete: none}
            """,
        "ticket.yaml": """
            entity: ticket
            owner: true
            fields:
              subject: {type: string, required: true}
              assignee_email: {type: email}
            """})
    kt = make_kt(folder)
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as http:
        callers = {}
        for name, team in (("ann", "north"), ("bob", "north"), ("cid", "south")):
            user, token = kt.users.add(f"{name}@example.com", ["agent"], team=team)
            callers[name] = Caller(http, token, user.id)
        ann, bob, cid = callers["ann"], callers["bob"], callers["cid"]
        ticket = made(ann.post("/api/ticket", json={"subject": "Принтер",
                                                    "assignee_email": "bob@example.com"}))
        assert made(bob.get("/api/ticket"), 200)["total"] == 1
        assert made(cid.get("/api/ticket"), 200)["total"] == 0
        assert cid.get(f"/api/ticket/{ticket['id']}").status_code == 404
        # the team sees it; only the assignee may change it
        assert ann.patch(f"/api/ticket/{ticket['id']}", json={"subject": "x"}).status_code == 403
        assert made(bob.patch(f"/api/ticket/{ticket['id']}", json={"subject": "打印机"}),
                    200)["subject"] == "打印机"


def test_a_star_scope_by_owner_with_unowned_entities_given_their_own_lines(
        write_setup: Callable[..., Path]) -> None:
    folder = write_setup({
        "setup.yaml": 'roles:\n  manager: {"*": {read: own}, note: {read: all}}\n',
        "client.yaml": "entity: client\nowner: true\nfields:\n  name: {type: string}\n",
        "note.yaml": "entity: note\nfields:\n  text: {type: text}\n"})
    role = load_setup(folder).roles["manager"]
    assert role.grant("client").scope("read").kind == "own"
    assert role.grant("note").scope("read").kind == "all"


def test_the_last_admin_cannot_be_disabled_or_demoted(kt: Kartoteka) -> None:
    admin, _ = kt.users.add("root@example.com", ["admin"])
    for change in ({"active": False}, {"roles": ["director"]}):
        with pytest.raises(ValidationFailed) as refused:
            kt.users.change(admin.id, change)
        assert refused.value.code == "last_admin"
    kt.users.add("second@example.com", ["admin", "director"])
    assert kt.users.change(admin.id, {"roles": ["director"]}).roles == ("director",)


@pytest.mark.parametrize("roles, where, message", [
    ("manager: {client: {read: mine}}", "roles.manager.client.read", "not a scope"),
    ("manager: {clients: {read: all}}", "roles.manager.clients", "no entity 'clients'"),
    ("manager: {client: {raed: all}}", "roles.manager.client.raed", "unknown operation"),
    ("manager: {client: {read: all, hidden: [nmae]}}", "roles.manager.client.hidden",
     "no field or link 'nmae'"),
    ("manager: {note: {read: own}}", "roles.manager.note.read", "no owner"),
    ("manager: {client: {read: {amount: {gte: 1}}}}", "roles.manager.client.read", "amount"),
    ("manager: {client: {read: {name: {near: x}}}}", "roles.manager.client.read", "near"),
    ("admin: {client: {read: all}}", "roles.admin", "built-in"),
    ('manager: {"*": {read: {name: x}}}', "roles.manager.*.read", "one entity"),
    ("manager: [client]", "roles.manager", "must map"),
    # a condition is all filters: `limit` and `q` name fields, here ones client lacks
    ("manager: {client: {read: {limit: 5}}}", "roles.manager.client.read", "no field or link 'limit'"),
    ("manager: {client: {read: {q: x}}}", "roles.manager.client.read", "no field or link 'q'"),
    ("manager: {client: {read: []}}", "roles.manager.client.read", "empty list"),
    ("manager: {client: {read: [own, mine]}}", "roles.manager.client.read.1", "not a scope"),
    ('manager: {"*": {read: own}}', "roles.manager.*.read", "needs an owner"),
    ('manager: {"*": {read: own}, note: {update: all}}', "roles.manager.*.read", "note"),
])
def test_role_mistakes_name_file_line_and_key(write_setup: Callable[..., Path], roles: str,
                                              where: str, message: str) -> None:
    folder = write_setup({
        "setup.yaml": "roles:\n  " + roles + "\n",
        "client.yaml": "entity: client\nowner: true\nfields:\n  name: {type: string}\n",
        "note.yaml": "entity: note\nfields:\n  text: {type: text}\n"})
    with pytest.raises(SetupError) as raised:
        load_setup(folder)
    found = [d for d in raised.value.diagnostics if message in d.message + d.hint]
    assert found, [str(d) for d in raised.value.diagnostics]
    assert found[0].file == "setup.yaml" and found[0].line == 2
    assert ".".join(map(str, found[0].path)).startswith(where), found[0].path


def test_board_and_funnel_do_not_sum_a_hidden_money_field(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    folder = write_setup({
        "setup.yaml": """
            roles:
              clerk: {deal: {create: all, read: all, hidden: [margin]}}
            """,
        "deal.yaml": """
            entity: deal
            owner: true
            fields:
              amount: {type: money}
              margin: {type: money}
            pipeline: {stages: [new, won], final: [won]}
            """})
    kt = make_kt(folder)
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as http:
        _, token = kt.users.add("clerk@example.com", ["clerk"])
        clerk = Caller(http, token, 0)
        made(clerk.post("/api/deal", json={"amount": "100.00"}))
        with kt.db.write(system="test") as conn:
            conn.execute(sa.update(kt.storage["deal"].table).values(margin=kt.storage[
                "deal"].table.c.amount))
        board = made(clerk.get("/api/deal/board"), 200)
        assert board["columns"][0]["sums"] == {"amount": "100.00"}
        funnel = made(clerk.get("/api/deal/funnel"), 200)
        assert "margin" not in str(funnel) and funnel["stages"][0]["current"]["sums"] == {
            "amount": "100.00"}


def test_a_stage_with_roles_is_entered_only_by_them(kt: Kartoteka,
                                                    world: dict[str, Caller]) -> None:
    anna, lena, director = world["anna"], world["lena"], world["director"]
    client = made(anna.post("/api/client", json={"name": "Ромашка"}))
    sale = made(anna.post("/api/sale", json={"number": "S-1", "client": client["id"],
                                             "contract_no": "Д-7"}))
    made(anna.post(f"/api/sale/{sale['id']}/stage", json={"to": "contract"}), 200)
    before = everything(kt)
    # the default setup: only a lawyer or the director invoices a sale
    refused = anna.post(f"/api/sale/{sale['id']}/stage", json={"to": "invoiced"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "stage_forbidden"
    assert "lawyer" in refused.text
    assert everything(kt) == before
    made(lena.post(f"/api/sale/{sale['id']}/stage", json={"to": "invoiced"}), 200)
    assert made(director.get(f"/api/sale/{sale['id']}"), 200)["stage"] == "invoiced"
    made(anna.post(f"/api/sale/{sale['id']}/stage", json={"to": "won"}), 200)


def test_stage_roles_must_be_roles_of_the_setup(write_setup: Callable[..., Path]) -> None:
    folder = write_setup({
        "setup.yaml": "roles:\n  lawyer: {deal: {read: all}}\n",
        "deal.yaml": """
            entity: deal
            fields:
              name: {type: string}
            pipeline:
              stages:
                - new
                - {name: signed, roles: [laywer]}
            """})
    with pytest.raises(SetupError) as raised:
        load_setup(folder)
    [problem] = raised.value.diagnostics
    assert (problem.file, problem.line, problem.code) == ("deal.yaml", 7, "stage.roles")
    assert "did you mean 'lawyer'" in problem.hint


def test_observers_of_a_task_read_it_and_only_users_can_be_observers(
        kt: Kartoteka, world: dict[str, Caller]) -> None:
    anna, boris, lena = world["anna"], world["boris"], world["lena"]
    task = made(anna.post("/api/task", json={"subject": "Позвонить 打电话",
                                             "observers": [lena.id, boris.id]}))
    assert task["observers"] == sorted([lena.id, boris.id])
    # observers read it (the default roles: read: [own, {observers: {contains: $user}}]) ...
    for observer in (boris, lena):
        assert made(observer.get(f"/api/task/{task['id']}"), 200)["subject"] == task["subject"]
        listed = made(observer.get("/api/task", params={"observers[contains]": str(observer.id)}),
                      200)
        assert [t["id"] for t in listed["items"]] == [task["id"]]
        # ... but only the owner changes it
        assert observer.patch(f"/api/task/{task['id']}", json={"status": "done"}).status_code == 403
    made(anna.patch(f"/api/task/{task['id']}", json={"observers": [lena.id]}), 200)
    assert boris.get(f"/api/task/{task['id']}").status_code == 404
    before = everything(kt)
    for observers in ([999], [lena.id, lena.id], ["lena"], [0], [True]):
        refused = anna.patch(f"/api/task/{task['id']}", json={"observers": observers})
        assert refused.status_code == 422, (observers, refused.text)
    assert everything(kt) == before
    assert anna.get("/api/task", params={"observers[contains]": "x"}).status_code == 400


def test_a_new_token_takes_no_body_or_a_small_one(kt: Kartoteka,
                                                  world: dict[str, Caller]) -> None:
    admin, anna = world["admin"], world["anna"]
    path = f"/api/users/{anna.id}/tokens"
    assert admin.post(path).status_code == 201
    huge = admin.post(path, content=b'{"expires_days": 1, "x": "' + b"a" * 2_000_000 + b'"}',
                      headers={"Content-Type": "application/json"})
    assert huge.status_code == 413, huge.text


def test_callers_answered_at_once_each_get_their_own_scope_and_fields(kt: Kartoteka) -> None:
    """Requests of two managers and a purchaser interleaved on one event loop, through the
    ASGI app, their engine calls overlapping in the API's thread pool (api/threads.py):
    each is answered as its own user — its own clients only, the purchase price shown
    only to the purchaser — whoever's call ran before it on the same thread."""
    import asyncio

    import httpx2 as httpx

    people = {name: kt.users.add(f"{name}@example.com", [role], team="north")
              for name, role in (("anna", "manager"), ("boris", "manager"),
                                 ("pavel", "purchaser"))}
    tokens = {name: {"Authorization": f"Bearer {token}"} for name, (_, token) in people.items()}

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_app(kt))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            product = (await http.post("/api/product", headers=tokens["pavel"], json={
                "sku": "P-1", "name": "Чай 茶", "purchase_price": "12.50",
                "sale_price": "20.00"})).json()
            made_by = await asyncio.gather(*(
                http.post("/api/client", headers=tokens[name], json={"name": f"{name} {n}"})
                for n in range(10) for name in ("anna", "boris")))
            assert all(answer.status_code == 201 for answer in made_by)
            calls = [(name, what) for _ in range(8) for name in ("anna", "boris", "pavel")
                     for what in ("clients", "product")
                     if (name, what) != ("pavel", "clients")]  # his role reads no clients
            answers = await asyncio.gather(*(
                http.get("/api/client?limit=100" if what == "clients"
                         else f"/api/product/{product['id']}", headers=tokens[name])
                for name, what in calls))
        for (name, what), answer in zip(calls, answers, strict=True):
            assert answer.status_code == 200, answer.text
            if what == "clients":
                owners = {client["owner"] for client in answer.json()["items"]}
                assert owners == {people[name][0].id}, (name, owners)
                assert answer.json()["total"] == 10
            elif what == "product":
                assert ("purchase_price" in answer.json()) is (name == "pavel"), name
    asyncio.run(main())
