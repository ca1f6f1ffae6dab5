"""Values in notification texts as each recipient's language writes them (issue 11), on
both databases: money and numbers grouped with the language's separators, dates and times
in its order (times in the setup's time zone), yes/no, a choice by its label, a link by its
target's title (as the recipient may read it); Persian digits for Persian, as the web app
writes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.automations.localized import Localizer
from tests.callers import Caller, made

SETUP = {
    "setup.yaml": """
        name: Values
        languages: [en, ru, fa, zh]
        timezone: Europe/Moscow
        roles:
          manager:
            deal: {create: all, read: all, update: all}
            client: {create: all, read: all}
          outsider:
            deal: {read: all}
        automations:
          deal_made:
            entity: deal
            on: created
            do:
              - notify:
                  to: [{role: manager}, {role: outsider}]
                  subject: {en: "Deal {amount}", ru: "Сделка {amount}", fa: "معامله {amount}"}
                  text: "{qty}|{due}|{signed_at}|{urgent}|{priority}|{client}|{client.name}|{note}"
    """,
    "client.yaml": """
        title: "{name}"
        fields:
          name: {type: string, required: true}
    """,
    "deal.yaml": """
        fields:
          amount: money
          qty: integer
          due: date
          signed_at: datetime
          urgent: boolean
          priority:
            type: choice
            options: {high: {en: High, ru: Высокий, fa: بالا}, low: {en: Low}}
          note: string
        links:
          client: {to: client}
    """,
}


@pytest.fixture
def kt(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Kartoteka:
    return make_kt(write_setup(SETUP))


def test_each_recipient_reads_the_values_in_their_language(kt: Kartoteka) -> None:
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        callers = {}
        for language, role in (("en", "manager"), ("ru", "manager"), ("fa", "manager"),
                               ("zh", "manager"), ("ru", "outsider")):
            _, token = kt.users.add(f"{language}-{role}@example.com", [role],
                                    language=language)
            callers[language, role] = Caller(http, token)
        writer = callers["en", "manager"]
        client = made(writer.post("/api/client", json={"name": "ООО Ромашка"}))
        made(writer.post("/api/deal", json={
            "amount": "1234567.5", "qty": 12000, "due": "2026-12-31",
            "signed_at": "2026-12-31T21:30:00Z", "urgent": True, "priority": "high",
            "client": client["id"], "note": "1234.5 as written"}))
        kt.automations.run_pending()

        def got(language: str, role: str = "manager") -> tuple[str, str]:
            item = made(callers[language, role].get("/api/me/notifications"), 200)["items"][0]
            return item["subject"], item["text"]

        nb = "\u00a0"
        # 21:30 UTC on 31 December is 00:30 on 1 January in Moscow
        assert got("en") == ("Deal 1,234,567.50", "12,000|2026-12-31|2027-01-01 00:30|yes|High|"
                             "ООО Ромашка|ООО Ромашка|1234.5 as written")
        assert got("ru") == (f"Сделка 1{nb}234{nb}567,50", f"12{nb}000|31.12.2026|"
                             "01.01.2027 00:30|да|Высокий|ООО Ромашка|ООО Ромашка|"
                             "1234.5 as written")
        assert got("fa") == ("معامله ۱٬۲۳۴٬۵۶۷٫۵۰", "۱۲٬۰۰۰|۲۰۲۶/۱۲/۳۱|۲۰۲۷/۰۱/۰۱ ۰۰:۳۰|بله|بالا|"
                             "ООО Ромашка|ООО Ромашка|1234.5 as written")
        # Chinese: no subject of its own (the first language's), values as Chinese writes
        assert got("zh") == ("Deal 1,234,567.50", "12,000|2026/12/31|2027/01/01 00:30|是|High|"
                             "ООО Ромашка|ООО Ромашка|1234.5 as written")
        # who may not read clients learns no client's name from a title either
        assert got("ru", "outsider")[1].endswith("|Высокий|||1234.5 as written")


def test_values_at_the_edges() -> None:
    def titles(entity: str, ids: Any) -> dict[int, str]:
        return {}

    ru = Localizer("ru", ZoneInfo("UTC"), titles, lambda entity: True)
    en = Localizer("en-GB", ZoneInfo("UTC"), titles, lambda entity: True)
    other = Localizer("sw", ZoneInfo("UTC"), titles, lambda entity: True)
    nb = "\u00a0"
    assert ru.number("-9223372036854775807") == f"-9{nb}223{nb}372{nb}036{nb}854{nb}775{nb}807"
    assert ru.number("0.10") == "0,10" and ru.number("-999.99") == "-999,99"
    assert en.number("1000") == "1,000" and en.number("100") == "100"
    assert other.number("1234567.50") == "1234567.50"  # no format of its own: ISO-like
    assert ru.number("не число") == "не число" and ru.number("1e5") == "1e5"
