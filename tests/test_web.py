"""The web app's pages over real HTTP (TestClient), on both databases: every setup — the
default, every example, a consultant's — gets every page; what a role may not see is not
on the page and what it may not do is not offered; values are escaped; assets are served
by Kartoteka itself and nothing comes from elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.conftest import DEFAULT_SETUP, EXAMPLES

SETUPS = [DEFAULT_SETUP, *sorted(p for p in EXAMPLES.iterdir() if (p / "setup.yaml").exists())]


def browse(kt: Kartoteka, token: str | None = None) -> TestClient:
    """A client of the app; with a user's `token`, every page is asked for as that user
    (the Authentication middleware takes a Bearer token on /app as on /api, as it takes a
    browser's session cookie)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(create_app(kt), base_url="http://127.0.0.1", headers=headers,
                      raise_server_exceptions=True)


def assert_page(response: Any, status: int = 200) -> str:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    html: str = response.text
    assert 'dir="' in html and "</html>" in html
    # every script and style sheet is the app's own, nothing from a CDN
    for src in re.findall(r'(?:src|href)="([^"]+\.(?:js|css)[^"]*)"', html):
        assert src.startswith("/app/static/"), src
    return html


@pytest.mark.parametrize("setup", SETUPS, ids=[p.name for p in SETUPS])
def test_every_setup_gets_every_page(setup: Path, make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt(setup)
    client = browse(kt)
    assert client.get("/", follow_redirects=False).headers["location"] == "/app"
    home = assert_page(client.get("/app"))
    for name, spec in kt.setup.entities.items():
        assert f'href="/app/{name}"' in home
        assert_page(client.get(f"/app/{name}"))
        assert_page(client.get(f"/app/{name}/new"))
        assert_page(client.get(f"/app/{name}/999999"), 404)
        if spec.pipeline:
            assert_page(client.get(f"/app/{name}/board"))
            assert_page(client.get(f"/app/{name}/funnel"))
        else:
            assert client.get(f"/app/{name}/board").status_code == 404
        for language in kt.setup.languages:
            html = assert_page(client.get(f"/app/{name}?lang={language}"))
            assert f'lang="{language}"' in html


def test_pages_of_records(kt: Kartoteka) -> None:
    app = browse(kt)
    client_id = kt.records.create("client", {"name": "<script>alert(1)</script>",
                                             "segments": ["vip"], "email": "a@b.example"})["id"]
    sale = kt.records.create("sale", {"number": "S-1", "amount": "1234.5", "client": client_id,
                                      "expected_on": "2026-12-31"})
    kt.timeline.comment("sale", sale["id"], {"text": "<img src=x onerror=alert(2)>"})
    kt.records.create("task", {"subject": "Call", "about": {"entity": "sale", "id": sale["id"]}})

    listing = assert_page(app.get("/app/sale"))
    assert "/app/sign-out" not in listing  # open mode: nobody to sign out
    assert "&lt;script&gt;" in listing and "<script>alert" not in listing
    assert '<data class="num" value="1234.50" data-places="2">' in listing
    assert '<time class="date" datetime="2026-12-31">' in listing

    card = assert_page(app.get(f"/app/sale/{sale['id']}"))
    assert "&lt;img src=x" in card and "<img src=x" not in card
    assert f'href="/app/client/{client_id}"' in card  # the link, by its title
    assert 'data-to="proposal"' in card and 'aria-current="step"' in card
    assert 'section class="linked" data-way="tasks"' in card and ">Call<" in card
    client_card = assert_page(app.get(f"/app/client/{client_id}"))
    assert 'data-way="sales"' in client_card and "S-1" in client_card
    assert "/app/sale?client%5Beq%5D=" in client_card  # all of the client's sales
    assert f'href="/app/sale/new?client={client_id}"' in client_card  # a new one for them
    prefilled = assert_page(app.get(f"/app/sale/new?client={client_id}"))
    assert f'class="picker-value" name="" value="{client_id}"' in prefilled
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in prefilled  # its title
    task_form = assert_page(app.get(f"/app/task/new?about=sale:{sale['id']}"))
    assert f'name="" value="{sale["id"]}"' in task_form
    assert_page(app.get("/app/sale/new?client=abc&about=x:1"))  # not ids: left empty

    form = assert_page(app.get(f"/app/sale/{sale['id']}/edit"))
    assert f'data-version="{sale["version"]}"' in form
    assert 'data-kind="decimal" data-places="2"' in form
    assert "required in:" in form

    board = assert_page(app.get("/app/sale/board"))
    assert 'data-stage="lead"' in board and "S-1" in board
    more = app.get("/app/sale/board/cards?stage[eq]=lead&limit=1")
    assert more.status_code == 200 and 'class="kcard"' in more.text
    assert_page(app.get("/app/sale/funnel?from=2020-01-01"))
    for page in ("/app/sale", "/app/sale/board", "/app/sale/funnel"):  # a link filter's title
        html = assert_page(app.get(f"{page}?client[eq]={client_id}"))
        assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in html, page

    found = app.get("/app/client/lookup?q=script").json()
    assert found == {"items": [{"id": client_id, "title": "<script>alert(1)</script>"}]}


def test_a_card_shows_what_automations_did(kt: Kartoteka) -> None:
    client = kt.records.create("client", {"name": "Kiosk"})
    sale = kt.records.create("sale", {"number": "S-9", "client": client["id"],
                                      "contract_no": "D-1"})
    kt.stages.move("sale", sale["id"], {"to": "contract"})  # the contract approval runs
    kt.automations.run_pending()
    task = kt.records.list_page("task", []).items[0]
    card = assert_page(browse(kt).get(f"/app/sale/{sale['id']}?lang=ru"))
    run = re.search(r'<li class="t-automation">.*?</ul></li>', card, re.S)
    assert run is not None, card
    assert "Согласование договора: done" in run.group(0)
    assert f'create Задача <a href="/app/task/{task["id"]}">#{task["id"]}</a>' in run.group(0)


def test_a_cards_timeline_names_who_did_what(kt: Kartoteka) -> None:
    """A user's name (or e-mail when they have none), never their id; nobody for what the
    system did."""
    named, token = kt.users.add("anna@example.com", ["director"], name="Анна <Петрова>")
    unnamed, _ = kt.users.add("boris@example.com", ["director"])
    with kt.acting.as_user(named):
        client = kt.records.create("client", {"name": "Поставщик"}, actor=named.id)
        kt.timeline.comment("client", client["id"], {"text": "first"}, actor=named.id)
    with kt.acting.as_user(unnamed):
        kt.timeline.comment("client", client["id"], {"text": "second"}, actor=unnamed.id)
    kt.timeline.comment("client", client["id"], {"text": "by the system"})
    card = assert_page(browse(kt, token).get(f"/app/client/{client['id']}"))
    assert card.count('<span class="by">Анна &lt;Петрова&gt;</span>') == 2  # made, commented
    assert card.count('<span class="by">boris@example.com</span>') == 1
    assert card.count('<span class="by">') == 3

def test_a_long_timeline_pages(kt: Kartoteka) -> None:
    client = kt.records.create("client", {"name": "Talkative"})
    for number in range(55):
        kt.timeline.comment("client", client["id"], {"text": f"note {number}"})
    app = browse(kt)
    first = assert_page(app.get(f"/app/client/{client['id']}"))
    assert "note 54" in first and "note 4<" not in first
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    rest = assert_page(app.get(f"/app/client/{client['id']}" + older.group(1).replace("&amp;", "&")))
    assert "note 0<" in rest and "note 54" not in rest and 'rel="next"' not in rest
    assert_page(app.get(f"/app/client/{client['id']}?cursor=garbage"), 400)


def test_a_bad_filter_is_shown_not_ignored(kt: Kartoteka) -> None:
    app = browse(kt)
    html = assert_page(app.get("/app/sale?amount[gte]=lots"))
    assert 'class="refusal"' in html and "amount[gte]" in html
    html = assert_page(app.get("/app/sale/funnel?from=yesterday-ish"))
    assert 'class="refusal"' in html
    assert_page(app.get("/app/sale/abc"), 404)
    assert_page(app.get("/app/sale/99999999999999999999"), 404)
    # an empty input is no filter; a bare date bounds a datetime field by whole days
    assert_page(app.get("/app/sale?amount[gte]=&q="))
    kt.records.create("task", {"subject": "In January", "due_at": "2026-01-31T23:00:00Z"})
    kt.records.create("task", {"subject": "In February", "due_at": "2026-02-01T00:00:00Z"})
    html = assert_page(app.get("/app/task?due_at[gte]=2026-01-01&due_at[lte]=2026-01-31"))
    assert "In January" in html and "In February" not in html
    assert 'name="due_at[lte]" value="2026-01-31"' in html  # the input keeps the day typed


def test_persian_is_right_to_left(make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt(EXAMPLES / "printing")
    app = browse(kt)
    html = assert_page(app.get("/app?lang=fa"))
    assert '<html lang="fa" dir="rtl">' in html
    assert '<html lang="fa" dir="rtl">' in app.get("/app").text  # remembered (cookie)
    assert '<html lang="en" dir="ltr">' in app.get("/app?lang=en").text
    assert '<html lang="en" dir="ltr">' in app.get("/app?lang=xx").text  # unknown: as before
    other = browse(kt)
    assert 'lang="fa"' in other.get("/app", headers={"Accept-Language": "fa-IR"}).text


def test_a_role_sees_and_is_offered_what_it_may(kt: Kartoteka) -> None:
    manager, token = kt.users.create({"email": "anna@example.com", "roles": ["manager"]})
    director, _ = kt.users.create({"email": "boss@example.com", "roles": ["director"]})
    with kt.acting.as_user(director):
        theirs = kt.records.create("client", {"name": "Director client"},
                                   owner=director.id)["id"]
        product = kt.records.create("product", {"sku": "A-1", "name": "Paper",
                                                "purchase_price": "7.77"})["id"]
    with kt.acting.as_user(manager):
        mine = kt.records.create("client", {"name": "Anna client"}, owner=manager.id)["id"]
    app = browse(kt, token)
    clients = assert_page(app.get("/app/client"))
    assert "Anna client" in clients and "Director client" not in clients
    assert 'action="/app/sign-out"' in clients and "anna@example.com" in clients
    assert_page(app.get(f"/app/client/{theirs}"), 404)
    card = assert_page(app.get(f"/app/client/{mine}"))
    assert "data-delete" not in card  # a manager deletes no client
    products = assert_page(app.get("/app/product"))
    assert "Purchase price" not in products and "purchase_price" not in products
    assert 'href="/app/product/new"' not in products
    product_card = assert_page(app.get(f"/app/product/{product}"))
    assert "7.77" not in product_card and "Purchase price" not in product_card
    assert 'href="/app/product/' + str(product) + '/edit"' not in product_card
    assert_page(app.get("/app/product/new"), 403)
    assert_page(app.get(f"/app/product/{product}/edit"), 403)
    lookup = app.get("/app/client/lookup").json()["items"]
    assert [item["id"] for item in lookup] == [mine]


def test_readonly_fields_are_shown_not_editable(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    setup = write_setup({
        "setup.yaml": "name: Notes\nlanguages: [en]\nroles:\n  clerk:\n"
                      "    note: {create: all, read: all, update: all, hidden: [secret], "
                      "readonly: [locked]}\n",
        "note.yaml": "title: '{subject}'\nfields:\n  subject: {type: string, required: true}\n"
                     "  secret: string\n  locked: string\n",
    })
    kt = make_kt(setup)
    _, token = kt.users.create({"email": "c@example.com", "roles": ["clerk"]})
    note = kt.records.create("note", {"subject": "Hello", "secret": "s3cr3t", "locked": "L"})
    app = browse(kt, token)
    form = assert_page(app.get(f"/app/note/{note['id']}/edit"))
    assert 'data-name="secret"' not in form and "s3cr3t" not in form
    assert re.search(r'data-name="locked"[^>]*data-readonly', form)
    assert re.search(r'id="f-locked"[^>]*disabled', form)
    assert not re.search(r'id="f-subject"[^>]*disabled', form)


def test_pages_need_a_user_once_users_exist(kt: Kartoteka) -> None:
    kt.users.create({"email": "x@example.com", "roles": ["director"]})
    app = browse(kt)
    response = app.get("/app/client", follow_redirects=False)
    assert response.status_code in (302, 303, 307, 401)
    assert "/app/sign-in" in response.headers.get("location", "/app/sign-in")
    assert app.get("/app/client/lookup?q=a", headers={"Accept": "application/json"}
                   ).status_code == 401  # a page's script asking: JSON, not the sign-in page


def test_assets_are_served_and_kept(kt: Kartoteka) -> None:
    app = browse(kt)
    for name, media in (("app.js", "text/javascript"), ("app.css", "text/css")):
        response = app.get(f"/app/static/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert "immutable" in response.headers["cache-control"]
        assert "http://" not in response.text and "https://" not in response.text
    assert app.get("/app/static/nope.js").status_code == 404
    # the pages are no part of the API's description
    paths = app.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/app")]



@pytest.mark.parametrize("example", ["law_firm", "logistics"])
def test_a_board_and_funnel_per_pipeline(example: str, make_kt: Callable[..., Kartoteka]) -> None:
    kt = make_kt(EXAMPLES / example)
    app = browse(kt)
    name, spec = next((n, s) for n, s in kt.setup.entities.items()
                      if s.pipeline and len(s.pipeline.pipelines) > 1)
    assert spec.pipeline is not None
    for pipeline in spec.pipeline.pipelines.values():
        for page in ("board", "funnel"):
            html = assert_page(app.get(f"/app/{name}/{page}?pipeline={pipeline.name}"))
            assert f'href="?pipeline={pipeline.name}" aria-current="page"' in html
        board = app.get(f"/app/{name}/board?pipeline={pipeline.name}").text
        assert re.findall(r'class="column c-\w+" data-stage="([^"]+)"', board) == \
            list(pipeline.stage_names)


def test_users_fields_are_chosen_by_name_and_shown_by_name(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    setup = write_setup({
        "setup.yaml": "name: Desk\nlanguages: [en]\n",
        "ticket.yaml": "title: '{subject}'\nfields:\n  subject: {type: string, required: true}\n"
                       "  assignee: user\n  observers: users\n",
    })
    kt = make_kt(setup)
    anna, token = kt.users.add("anna@example.com", ["admin"], name="Анна")
    boris, _ = kt.users.add("boris@example.com", ["admin"])
    gone, _ = kt.users.add("gone@example.com", ["admin"], name="Ушедший")
    ticket = kt.records.create("ticket", {"subject": "Printer", "assignee": boris.id,
                                          "observers": [anna.id, gone.id]})
    kt.users.disable("gone@example.com")
    app = browse(kt, token)
    new = assert_page(app.get("/app/ticket/new"))
    assert re.search(r'data-kind="user".*?<option value="">—</option>'
                     rf'<option value="{anna.id}">Анна</option>'
                     rf'<option value="{boris.id}">boris@example.com</option></select>', new, re.S)
    assert "Ушедший" not in new  # no longer active: not offered
    assert f'<input type="checkbox" value="{anna.id}"> Анна' in new
    edit = assert_page(app.get(f"/app/ticket/{ticket['id']}/edit"))
    assert f'<option value="{boris.id}" selected>boris@example.com</option>' in edit
    assert f'<input type="checkbox" value="{anna.id}" checked> Анна' in edit
    assert f'<input type="checkbox" value="{gone.id}" checked> Ушедший' in edit  # kept
    card = assert_page(app.get(f"/app/ticket/{ticket['id']}"))
    assert "Анна, Ушедший" in card and "boris@example.com" in card
    # the timeline's create: the values as they were, not read as an old → new pair
    assert "Observers: Анна, Ушедший</li>" in card
    listing = assert_page(app.get("/app/ticket"))
    assert "<td>boris@example.com</td>" in listing


LEDGER = {
    "setup.yaml": "name: Ledger\nlanguages: [en]\nroles:\n"
                  "  boss:\n    '*': {create: all, read: all, update: all, delete: all}\n"
                  "  clerk:\n"
                  "    client: {read: all}\n"
                  "    sale: {create: all, read: own, hidden: [cost]}\n",
    "client.yaml": "title: '{name}'\nfields:\n  name: {type: string, required: true}\n",
    "sale.yaml": "title: '{number}'\nowner: true\nfields:\n  number: {type: string, required: true}\n"
                 "  amount: money\n  cost: {type: money, places: 3}\n"
                 "  units: {type: money, digits: 18, places: 0}\n"
                 "links:\n  client: {to: client, reverse: sales}\n",
}


def _way(card: str, name: str) -> str:
    found = re.search(rf'<section class="linked" data-way="{name}">.*?</section>', card, re.S)
    assert found, card
    return found.group(0)


def test_a_cards_ways_back_count_and_sum_all_linked_records(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """The count and sums under a card's way back are over every linked record the user
    may read — past the LINKED_SIZE listed, in the user's scope, never of a hidden field —
    in one aggregate per way back."""
    from api.web.pages import LINKED_SIZE
    kt = make_kt(write_setup(LEDGER))
    clerk, token = kt.users.create({"email": "clerk@example.com", "roles": ["clerk"]})
    _, boss = kt.users.create({"email": "boss@example.com", "roles": ["boss"]})
    names = ["Дом книги", "شرکت پارس", "北京书店"]  # Russian, Persian, Chinese titles
    ids = [kt.records.create("client", {"name": n})["id"] for n in names]
    empty = kt.records.create("client", {"name": "Nobody"})["id"]
    many = LINKED_SIZE + 5
    for index in range(many):
        kt.records.create("sale", {"number": f"Ш-{index}", "amount": "0.01",
                                   "cost": "1.005", "units": "999999999999999999",
                                   "client": ids[0]})
    kt.records.create("sale", {"number": "波斯-1", "amount": "999999999999999.99",
                               "client": ids[1]})
    kt.records.create("sale", {"number": "波斯-2", "amount": "-0.99", "client": ids[1]})
    with kt.acting.as_user(clerk):
        kt.records.create("sale", {"number": "mine", "amount": "5.00", "client": ids[0]},
                          owner=clerk.id)
    app = browse(kt, boss)

    first = _way(assert_page(app.get(f"/app/client/{ids[0]}")), "sales")
    assert '<span class="count" title="Records">26</span>' in first
    assert first.count('<tr><td><a href="/app/sale/') == LINKED_SIZE  # only N listed
    assert f'href="/app/sale?client%5Beq%5D={ids[0]}">All 26<' in first  # the rest
    assert 'value="5.25" data-places="2"' in first  # 25 × 0.01 + 5.00, not the first 20
    assert 'value="25.125" data-places="3"' in first  # places of the field
    assert f'value="{many * 999999999999999999}" data-places="0"' in first  # past 2**63, exact
    second = _way(assert_page(app.get(f"/app/client/{ids[1]}")), "sales")
    assert '<span class="count" title="Records">2</span>' in second
    assert 'value="999999999999999.00" data-places="2"' in second
    assert "All 2" not in second  # all of them are listed
    third = _way(assert_page(app.get(f"/app/client/{ids[2]}?lang=en")), "sales")
    assert '<span class="count" title="Records">0</span>' in third
    assert '<p class="empty">' in third
    assert_page(app.get(f"/app/client/{empty}"))

    # the clerk reads only their own sale, and never the cost
    mine = _way(assert_page(browse(kt, token).get(f"/app/client/{ids[0]}")), "sales")
    assert '<span class="count" title="Records">1</span>' in mine
    assert 'value="5.00" data-places="2"' in mine
    assert "data-places=\"3\"" not in mine and "Cost" not in mine
    assert "Ш-" not in mine and "All " not in mine


def test_a_cards_totals_are_one_statement_per_way_back(kt: Kartoteka) -> None:
    """The totals do not load the linked records: one aggregate per way back."""
    import sqlalchemy as sa

    from engine.records.totals import linked_totals
    client = kt.records.create("client", {"name": "Counted"})["id"]
    for index in range(30):
        kt.records.create("sale", {"number": f"C-{index}", "amount": "1.10", "client": client})
    ways = list(kt.setup.reverse_links["client"])
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)
    sa.event.listen(kt.db.engine, "before_cursor_execute", count)
    try:
        totals = linked_totals(kt.records, "client", client, ways)
    finally:
        sa.event.remove(kt.db.engine, "before_cursor_execute", count)
    assert totals["sales"].count == 30 and totals["sales"].sums["amount"] == "33.00"
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 1 + len(ways)


CLINIC = {
    "setup.yaml": "name: Clinic\nlanguages: [en, fa]\nroles:\n"
                  "  boss:\n    '*': {create: all, read: all, update: all, delete: all}\n"
                  "  nurse:\n    procedure: {read: all}\n"
                  "    plan: {read: all, update: all, readonly: [procedures]}\n"
                  "  guest:\n    procedure: {read: all}\n"
                  "    plan: {read: all, update: all, hidden: [procedures]}\n",
    "procedure.yaml": "title: '{name}'\nsearch: [name]\nfields:\n  name: {type: string, required: true}\n",
    "plan.yaml": "title: '{title}'\nfields:\n  title: string\n"
                 "links:\n  procedures:\n    to: procedure\n    many: true\n    reverse: plans\n"
                 "    through:\n"
                 "      tooth: {type: integer, min: 11, max: 48, label: {en: Tooth, fa: دندان}}\n"
                 "      price: {type: money, required: true}\n"
                 "      quantity: {type: integer, default: 1}\n"
                 "      side: {type: choice, options: [left, right]}\n"
                 "      amount: {type: money, formula: 'price * quantity'}\n",
}


def _pairs(card: str) -> str:
    found = re.search(r'<section class="pairs" data-link="procedures".*?</section>', card, re.S)
    assert found, card
    return found.group(0)


def test_a_links_pairs_are_edited_on_the_card(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """A link that carries data is a table on the owning record's card: each pair's values
    as inputs saved with PUT /api/plan/{id}/procedures/{other} and removed with DELETE,
    a row to add a pair by the procedure's title; the API's 422 names the field the page
    shows it next to; a read-only link is shown, not editable, a hidden one is absent."""
    kt = make_kt(write_setup(CLINIC))
    _, boss = kt.users.create({"email": "boss@example.com", "roles": ["boss"]})
    _, nurse = kt.users.create({"email": "nurse@example.com", "roles": ["nurse"]})
    _, guest = kt.users.create({"email": "guest@example.com", "roles": ["guest"]})
    crown = kt.records.create("procedure", {"name": "Коронка"})["id"]
    filling = kt.records.create("procedure", {"name": "پرکردن"})["id"]
    implant = kt.records.create("procedure", {"name": "种植牙"})["id"]
    plan = kt.records.create("plan", {"title": "Upper jaw", "procedures": [
        {"id": crown, "tooth": 12, "price": "100.00", "quantity": 2, "side": "left"},
        {"id": filling, "price": "40.00"}]})["id"]
    app = browse(kt, boss)

    pairs = _pairs(assert_page(app.get(f"/app/plan/{plan}")))
    assert f'data-base="/api/plan/{plan}/procedures" data-target="procedure"' in pairs
    assert pairs.count('<tr class="pair" data-other=') == 2
    assert ">Коронка</a>" in pairs and ">پرکردن</a>" in pairs
    assert re.search(r'data-name="tooth" data-kind="number"><input[^>]*value="12"', pairs)
    assert re.search(r'data-name="price" data-kind="decimal" data-places="2"><input[^>]*'
                     r'value="100.00"', pairs)
    assert '<option value="left" selected>' in pairs
    # the formula is shown, never sent
    assert re.search(r'data-name="amount"[^>]*data-readonly><input[^>]*value="200.00"[^>]*'
                     r'disabled', pairs)
    assert 'class="pair-save"' in pairs and 'class="pair-remove danger"' in pairs
    new_row = pairs[pairs.index('class="pair pair-new"'):]
    assert 'class="picker" data-target="procedure"' in new_row
    assert re.search(r'data-name="quantity" data-kind="number"><input[^>]*value="1"', new_row)
    fa = _pairs(assert_page(app.get(f"/app/plan/{plan}?lang=fa")))
    assert "دندان" in fa
    assert app.get("/app/procedure/lookup?q=种植").json()["items"] == [  # the picker's search
        {"id": implant, "title": "种植牙"}]

    # the calls the script makes: a change, a refusal named by field, a new pair, a removal
    base = f"/api/plan/{plan}/procedures"
    assert app.put(f"{base}/{crown}", json={"tooth": 48, "price": "120.50", "quantity": 3,
                                            "side": "right"}).status_code == 204
    refused = app.put(f"{base}/{filling}", json={"tooth": 49, "price": None, "quantity": "x",
                                                  "side": "up"})
    assert refused.status_code == 422
    named = {d["field"] for d in refused.json()["error"]["details"]}
    assert {"tooth", "quantity", "side"} <= named, named
    missing = app.put(f"{base}/{filling}", json={"price": None})
    assert missing.status_code == 422, missing.text
    assert [d["field"] for d in missing.json()["error"]["details"]] == ["price"]
    assert app.put(f"{base}/{crown}", json={"amount": "1.00", "price": "1.00"}).status_code == 422
    assert app.put(f"{base}/{implant}", json={"price": "7.00"}).status_code == 204
    assert app.delete(f"{base}/{filling}").status_code == 204
    pairs = _pairs(assert_page(app.get(f"/app/plan/{plan}")))
    assert "پرکردن" not in pairs and ">种植牙</a>" in pairs
    assert re.search(r'data-name="amount"[^>]*><input[^>]*value="361.50"', pairs)
    assert re.search(r'data-name="quantity"[^>]*><input[^>]*value="1"', pairs)  # default
    record = kt.records.get("plan", plan)
    assert [(p["id"], p["price"]) for p in record["procedures"]] == [
        (crown, "120.50"), (implant, "7.00")]

    # a read-only link: shown, not editable; a hidden one: not on the card at all
    readonly = _pairs(assert_page(browse(kt, nurse).get(f"/app/plan/{plan}")))
    assert "pair-save" not in readonly and "pair-new" not in readonly
    assert re.search(r'data-name="price"[^>]*data-readonly><input[^>]*disabled', readonly)
    hidden = assert_page(browse(kt, guest).get(f"/app/plan/{plan}"))
    assert 'class="pairs"' not in hidden and "Коронка" not in hidden
    # and the API refuses them the pair routes too, from either end, writing nothing
    for token in (nurse, guest):
        api = browse(kt, token)
        for call in (api.put(f"{base}/{crown}", json={"price": "1.00"}),
                     api.delete(f"{base}/{crown}"),
                     api.put(f"/api/procedure/{filling}/plans/{plan}"),
                     api.delete(f"/api/procedure/{implant}/plans/{plan}")):
            assert call.status_code == 403, call.text
            assert call.json()["error"]["code"] == "fields_forbidden"
            assert call.json()["error"]["details"] == [
                {"field": "procedures", "problem": "is not writable by your role"}]
    assert kt.records.get("plan", plan)["procedures"] == record["procedures"]
