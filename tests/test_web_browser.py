"""The web app in a real browser (Chromium through Playwright) against a real server, on
SQLite and on PostgreSQL: a form's inline 422, creating with a link picker, dragging a
sale across the board (a refused move shows the server's reason), a comment on the card,
filtering and sorting a list and saving it as a view, a stale edit shown and not
overwritten, Persian right to left, a manager signed in through the sign-in page seeing
only what their role may; and `kartoteka screenshots`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine import Kartoteka
from kartoteka.cli import main
from tests.browser import CHROMIUM, CHROMIUM_ARGS, MISSING, serve
from tests.conftest import DEFAULT_SETUP, EXAMPLES

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")

TIMEOUT_MS = 5000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(MISSING)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def site(make_kt: Callable[..., Kartoteka]) -> Iterator[tuple[str, Kartoteka]]:
    kt = make_kt()
    with serve(kt) as url:
        yield url, kt


def expect(locator: Any) -> Any:
    return sync_api.expect(locator)


def test_create_fix_inline_error_drag_and_comment(site: tuple[str, Kartoteka], page: Any) -> None:
    url, kt = site
    # a client with an invalid e-mail: the server's 422 next to the field, nothing written
    page.goto(f"{url}/app/client/new")
    page.fill("#f-name", "Ромашка LLC")
    page.fill("#f-email", "not-an-e-mail")
    page.click("button[type=submit]")
    error = page.locator('.error[data-error-for="email"]')
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(page.locator("#f-email")).to_have_attribute("aria-invalid", "true")
    assert kt.records.list_page("client", []).items == []
    page.fill("#f-email", "office@romashka.example")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/app/client/\d+$"))
    expect(page.locator("h1")).to_have_text("Ромашка LLC")

    # a sale, its client chosen in the picker by typing part of the title
    page.goto(f"{url}/app/sale/new")
    expect(page.locator('.input[data-name="contract_no"] .stage-req')).to_contain_text("Contract")
    page.fill("#f-number", "S-100")
    picker = page.locator('.input[data-name="client"] .picker-text')
    picker.fill("Ром")
    expect(page.locator('.input[data-name="client"] .picker-list li')).to_have_text(["Ромашка LLC"])
    picker.press("ArrowDown")  # picked with the keyboard
    picker.press("Enter")
    expect(picker).to_have_value("Ромашка LLC")
    page.fill("#f-amount", "1 500,5")  # as people write it
    page.locator("#f-amount").blur()
    expect(page.locator("#f-amount")).to_have_value("1500.50")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/app/sale/\d+$"))
    sale = kt.records.list_page("sale", [])
    assert [(s["number"], s["amount"], s["stage"]) for s in sale.items] == [("S-100", "1500.50", "lead")]

    # the board: a move the server refuses shows why; an allowed one moves the card
    page.goto(f"{url}/app/sale/board")
    card = page.locator(".kcard", has_text="S-100")
    expect(page.locator('.column[data-stage="lead"] .count')).to_have_text("1")
    card.drag_to(page.locator('.column[data-stage="contract"]'))
    refusal = page.locator("#board-refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("Contract number: is required in stage 'contract'")
    assert kt.records.list_page("sale", []).items[0]["stage"] == "lead"
    expect(refusal.locator("a")).to_have_attribute("href", re.compile(r"/app/sale/\d+/edit\?stage=contract$"))
    page.goto(url + refusal.locator("a").get_attribute("href"))  # the form marks what it needs
    expect(page.locator('.input[data-name="contract_no"] .req')).to_be_visible()
    expect(page.locator('.input[data-name="closed_on"] .req')).to_have_count(0)
    page.go_back()
    card.drag_to(page.locator('.column[data-stage="proposal"]'))
    expect(page.locator('.column[data-stage="proposal"] .kcard', has_text="S-100")).to_be_visible()
    expect(page.locator('.column[data-stage="proposal"] .count')).to_have_text("1")
    assert kt.records.list_page("sale", []).items[0]["stage"] == "proposal"

    # the card: a comment joins the timeline; the client's card lists the sale with its sum
    page.locator(".kcard a", has_text="S-100").click()
    page.fill("form.comment textarea", "Ждут доставку по железной дороге")
    page.click("form.comment button")
    expect(page.locator("ol.items li.t-comment")).to_contain_text("Ждут доставку")
    expect(page.locator("ol.items li.t-stage").first).to_contain_text("Proposal")
    page.click("details.activity summary")
    page.select_option("form.activity select[name=kind]", "call")
    page.fill("form.activity input[name=subject]", "Terms agreed")
    page.click("form.activity button")
    expect(page.locator("ol.items li.t-call")).to_contain_text("Terms agreed")
    page.locator('dd[data-field="client"] a').click()
    sales = page.locator('section.linked[data-way="sales"]')
    expect(sales).to_contain_text("S-100")
    expect(sales.locator("tfoot")).to_contain_text("1,500.50")


def test_filter_sort_and_page_a_list(site: tuple[str, Kartoteka], page: Any) -> None:
    url, kt = site
    client = kt.records.create("client", {"name": "Kiosk"})
    for number, amount, currency in (("S-1", "10", "RUB"), ("S-2", "250", "EUR"),
                                     ("S-3", "99.99", "EUR"), ("S-4", None, "USD")):
        kt.records.create("sale", {"number": number, "amount": amount, "currency": currency,
                                   "client": client["id"]})
    page.goto(f"{url}/app/sale")
    expect(page.locator("table.list tbody tr")).to_have_count(4)
    page.click("form.filters summary")  # the filters fold away until one is used
    page.select_option('select[name="currency[eq]"]', label="EUR")
    page.fill('input[name="amount[gte]"]', "100")
    page.click("form.filters button[type=submit]")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody")).to_contain_text("S-2")
    assert "amount%5Blte%5D" not in page.url  # empty inputs are not sent
    # sort by clicking a column, twice for descending; the filters stay
    page.goto(f"{url}/app/sale?currency[eq]=EUR")
    page.locator("th a", has_text="Amount").click()
    expect(page.locator("table.list tbody tr").first).to_contain_text("S-3")
    page.locator("th a", has_text="Amount").click()
    expect(page.locator("table.list tbody tr").first).to_contain_text("S-2")
    expect(page.locator("table.list tbody tr")).to_have_count(2)
    # cursor paging
    page.goto(f"{url}/app/sale?limit=3&sort=number")
    expect(page.locator("table.list tbody tr")).to_have_count(3)
    page.click("a[rel=next]")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody")).to_contain_text("S-4")
    # a filter by link title, through the picker
    page.goto(f"{url}/app/sale")
    page.click("form.filters summary")
    page.locator("form.filters .picker-text").first.fill("Kio")
    page.locator("form.filters .picker-list li", has_text="Kiosk").click()
    page.click("form.filters button[type=submit]")
    assert f"client%5Beq%5D={client['id']}" in page.url
    expect(page.locator("table.list tbody tr")).to_have_count(4)
    # saved as a view, the user's default: after a reload, All shows every sale, and the
    # view's tab (or the list opened with no query) the filtered one
    page.goto(f"{url}/app/sale?currency[eq]=EUR&amount[gte]=100")
    page.click("details.view-tools summary")
    page.fill('form.view-save input[name="name"]', "Евро от 100")
    page.check('form.view-save input[name="is_default"]')
    page.click("form.view-save button[type=submit]")
    page.wait_for_url(re.compile(r"view=\d+$"))
    page.reload()
    page.click("nav.views a >> text=All")
    expect(page.locator("table.list tbody tr")).to_have_count(4)
    page.click("nav.views a >> text=Евро от 100")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody")).to_contain_text("S-2")
    page.goto(f"{url}/app/sale")
    expect(page.locator("nav.views a[aria-current]")).to_contain_text("Евро от 100")
    expect(page.locator("table.list tbody tr")).to_have_count(1)


def test_a_stale_edit_is_shown_not_saved(site: tuple[str, Kartoteka], page: Any) -> None:
    url, kt = site
    client = kt.records.create("client", {"name": "Old name", "city": "Kazan"})
    page.goto(f"{url}/app/client/{client['id']}/edit")
    kt.records.update("client", client["id"], {"city": "Samara"})  # someone else, meanwhile
    page.fill("#f-city", "Moscow")
    page.click("button[type=submit]")
    stale = page.locator(".stale")
    expect(stale).to_be_visible()
    expect(stale).to_contain_text("Samara")
    assert kt.records.get("client", client["id"])["city"] == "Samara"
    # the current version loads; then the card's Delete (after its confirmation) deletes it
    stale.locator("a").click()
    expect(page.locator("#f-city")).to_have_value("Samara")
    page.goto(f"{url}/app/client/{client['id']}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button[data-delete]")
    page.wait_for_url(re.compile(r"/app/client$"))
    assert kt.records.list_page("client", []).items == []
    # a delete the server refuses (a sale holds the client: on_delete restrict) says why
    held = kt.records.create("client", {"name": "Held"})
    kt.records.create("sale", {"number": "S-1", "client": held["id"]})
    page.goto(f"{url}/app/client/{held['id']}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button[data-delete]")
    expect(page.locator("#card-refusal")).to_be_visible()
    expect(page.locator("#card-refusal")).to_contain_text("sale")
    assert kt.records.get("client", held["id"])["name"] == "Held"


def test_a_manager_signs_in_sees_only_theirs_and_signs_out(
        site: tuple[str, Kartoteka], page: Any) -> None:
    """Signed in through the sign-in page (a session cookie, not a token), a manager sees
    their own client and not a colleague's, no hidden field, no action their role lacks;
    their changes carry the session's CSRF token; signing out ends it."""
    url, kt = site
    anna, _ = kt.users.create({"email": "anna@example.com", "roles": ["manager"]})
    boss, _ = kt.users.create({"email": "boss@example.com", "roles": ["director"]})
    kt.sessions.set_password_of("anna@example.com", "Пароль-Анны-2026")
    with kt.acting.as_user(boss):
        kt.records.create("client", {"name": "Клиент директора"}, owner=boss.id)
        product = kt.records.create("product", {"sku": "A4", "name": "Бумага",
                                                "purchase_price": "7.77"})["id"]
    with kt.acting.as_user(anna):
        mine = kt.records.create("client", {"name": "Клиент Анны"}, owner=anna.id)["id"]

    page.goto(f"{url}/app/client")
    page.wait_for_url(re.compile(r"/app/sign-in\?next="))
    page.fill("input[name=email]", "anna@example.com")
    page.fill("input[name=password]", "wrong password!")
    page.click("form#f button")
    expect(page.locator("#error")).to_be_visible()
    page.fill("input[name=password]", "Пароль-Анны-2026")
    page.click("form#f button")
    page.wait_for_url(f"{url}/app/client")
    expect(page.locator("table")).to_contain_text("Клиент Анны")
    expect(page.locator("body")).not_to_contain_text("Клиент директора")
    expect(page.locator("header")).to_contain_text("anna@example.com")

    page.goto(f"{url}/app/product/{product}")
    expect(page.locator("h1")).to_contain_text("Бумага")
    expect(page.locator("body")).not_to_contain_text("7.77")
    expect(page.locator("body")).not_to_contain_text("Purchase price")
    expect(page.locator(f'a[href="/app/product/{product}/edit"]')).to_have_count(0)

    page.goto(f"{url}/app/client/{mine}")  # a change: sent with the session's CSRF token
    page.fill("form.comment textarea", "Позвонить в понедельник")
    page.click("form.comment button")
    expect(page.locator("ol.items li.t-comment")).to_contain_text("Позвонить в понедельник")

    page.click("form.signout button")
    page.wait_for_url(re.compile(r"/app/sign-in"))
    page.goto(f"{url}/app/client")
    page.wait_for_url(re.compile(r"/app/sign-in\?next="))


def test_persian_pages_are_right_to_left(make_kt: Callable[..., Kartoteka], page: Any) -> None:
    kt = make_kt(EXAMPLES / "printing")
    entity = next(iter(kt.setup.entities))
    with serve(kt) as url:
        page.goto(f"{url}/app?lang=fa")
        expect(page.locator("html")).to_have_attribute("dir", "rtl")
        expect(page.locator("html")).to_have_attribute("lang", "fa")
        page.goto(f"{url}/app/{entity}")  # the choice is remembered
        expect(page.locator("html")).to_have_attribute("dir", "rtl")
        label = kt.setup.entities[entity].plural.get("fa")
        if label:
            expect(page.locator("h1")).to_have_text(label)
        page.goto(f"{url}/app/{entity}?lang=en")
        expect(page.locator("html")).to_have_attribute("dir", "ltr")


def test_a_links_pairs_are_edited_on_the_card(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path], page: Any) -> None:
    """A pair's refused value shown next to its field, fixed and saved; a pair added by
    the procedure's title; a pair removed."""
    from tests.test_web import CLINIC
    kt = make_kt(write_setup(CLINIC))
    crown = kt.records.create("procedure", {"name": "Коронка"})["id"]
    kt.records.create("procedure", {"name": "种植牙"})
    plan = kt.records.create("plan", {"title": "Upper jaw", "procedures": [
        {"id": crown, "tooth": 12, "price": "100.00"}]})["id"]
    with serve(kt) as url:
        page.goto(f"{url}/app/plan/{plan}")
        row = page.locator(f'tr.pair[data-other="{crown}"]')
        row.locator('[data-name="tooth"] input').fill("49")
        row.locator("button.pair-save").click()
        expect(row.locator('.error[data-error-for="tooth"]')).to_contain_text("48")
        row.locator('[data-name="tooth"] input').fill("48")
        row.locator('[data-name="quantity"] input').fill("3")
        row.locator("button.pair-save").click()
        expect(page.locator(f'tr.pair[data-other="{crown}"] [data-name="amount"] input')
               ).to_have_value("300.00")
        new = page.locator("tr.pair-new")
        new.locator(".picker-text").fill("种植")
        page.locator('.picker-list li:has-text("种植牙")').click()
        new.locator('[data-name="price"] input').fill("7,5")
        new.locator("button.pair-save").click()
        expect(page.locator("section.pairs tr.pair[data-other]")).to_have_count(2)
        assert [p["price"] for p in kt.records.get("plan", plan)["procedures"]] == [
            "100.00", "7.50"]
        page.locator(f'tr.pair[data-other="{crown}"] button.pair-remove').click()
        expect(page.locator("section.pairs tr.pair[data-other]")).to_have_count(1)
        assert [p["tooth"] for p in kt.records.get("plan", plan)["procedures"]] == [None]


def in_thread(args: list[str]) -> Any:
    """The command in a thread of its own: this one runs the session's Playwright, and
    Playwright's sync API runs one instance per thread."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(CliRunner().invoke(main, args)))
    thread.start()
    thread.join(120)
    return results[0]


def test_screenshots_command(make_kt: Callable[..., Kartoteka], db_url: str,
                             tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(MISSING)
    kt = make_kt()
    client = kt.records.create("client", {"name": "Kiosk"})
    kt.records.create("sale", {"number": "S-1", "amount": "5", "client": client["id"]})
    result = in_thread(["screenshots", str(DEFAULT_SETUP), "--db", db_url,
                        "--out", str(tmp_path / "shots"), "--language", "ru"])
    assert result.exit_code == 0, result.output
    widths = {}
    for path in sorted((tmp_path / "shots").iterdir()):
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n", path
        widths[path.name] = int.from_bytes(header[16:20], "big")
    assert widths == {f"sale-{page}-{size}.png": width
                      for page in ("list", "card", "board", "funnel")
                      for size, width in (("wide", 1280), ("phone", 390))}
    refused = in_thread(["screenshots", str(DEFAULT_SETUP), "--db", db_url,
                         "--out", str(tmp_path / "x"), "--entity", "nope"])
    assert refused.exit_code != 0 and "no entity 'nope'" in refused.output
