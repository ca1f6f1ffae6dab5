"""Phones compared as a country writes them (setup.yaml `region:`), on SQLite and
PostgreSQL: `8 999 123-45-67` is `+7 999 123-45-67` in Russia, `0912 345 6789` is
`+98 912 345 6789` in Iran — through a single create, bulk and import alike; without a
region, phones compare by their digits as before; a region added or changed later is a
planned migration that refreshes the kept keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.records.duplicates import DuplicateFound
from engine.setup.phones import e164
from tests.callers import made

CONFIRM = {"X-Confirm-Duplicate": "true"}


def setup(region: str | None) -> dict[str, str]:
    return {
        "setup.yaml": "name: Phones\nlanguages: [en, ru, fa]\n"
                      + (f"region: {region}\n" if region else ""),
        "client.yaml": """
            fields:
              name: {type: string, required: true}
              phone: phone
            duplicates:
              rules:
                same_phone: {exact: phone}
        """,
    }


def refused(answer: Any) -> None:
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "possible_duplicate"


@pytest.mark.parametrize(("region", "first", "second"), [
    ("RU", "+7 999 123-45-67", "8 (999) 123-45-67"),
    ("ru", "+7 999 123 45 67", "89991234567"),              # the code in any case
    ("IR", "+98 912 345 6789", "0912 345 6789"),            # trunk 0
    ("CN", "+86 138 0013 8000", "138-0013-8000"),
])
def test_one_number_written_two_ways_is_a_duplicate(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
        region: str, first: str, second: str) -> None:
    kt = make_kt(write_setup(setup(region)))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
        made(http.post("/api/client", json={"name": "Первый", "phone": first}))
        refused(http.post("/api/client", json={"name": "Второй", "phone": second}))
        answer = made(http.post("/api/client/bulk", json={
            "mode": "per_row", "rows": [{"name": "Третий", "phone": second}]}), 200)
        assert [r["status"] for r in answer["rows"]] == [409]
        job = _import(http, f"name,phone\nЧетвёртый,{second}\n".encode())
        assert [e["code"] for e in job["errors"]] == ["possible_duplicate"]
        # the stored phone is as written: only the compared key is E.164
        made(http.post("/api/client", json={"name": "Пятый", "phone": second}, headers=CONFIRM))
        phones = {r["phone"] for r in made(http.get("/api/client"), 200)["items"]}
        assert phones == {first, second}


def test_other_numbers_and_what_is_no_number(make_kt: Callable[..., Kartoteka],
                                             write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup(setup("RU")))
    kt.records.create("client", {"name": "A", "phone": "+7 999 123-45-67"})
    kt.records.create("client", {"name": "B", "phone": "+7 999 123-45-68"})  # another
    kt.records.create("client", {"name": "C", "phone": "+98 912 345 6789"})  # Iran's
    kt.records.create("client", {"name": "D", "phone": "123"})  # no number: its digits
    with pytest.raises(DuplicateFound):
        kt.records.create("client", {"name": "E", "phone": "1-2-3"})
    with pytest.raises(DuplicateFound):  # an Iranian number written with + anywhere
        kt.records.create("client", {"name": "F", "phone": "+98 (912) 3456789"})
    assert e164("0912 345 6789", "RU") is None  # not a Russian number: its digits then
    # a phone field takes ASCII digits; the key is made the same from Persian ones
    assert e164("۰۹۱۲ ۳۴۵ ۶۷۸۹", "IR") == e164("+98 912 345 6789", "RU") == "+989123456789"


def test_without_a_region_phones_compare_by_their_digits(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup(setup(None)))
    kt.records.create("client", {"name": "A", "phone": "+7 999 123-45-67"})
    kt.records.create("client", {"name": "B", "phone": "8 999 123-45-67"})  # not the same
    with pytest.raises(DuplicateFound):
        kt.records.create("client", {"name": "C", "phone": "7 (999) 1234567"})


def test_a_region_set_or_changed_later_refreshes_the_kept_keys(
        make_kt: Callable[..., Kartoteka], open_kt: Callable[..., Kartoteka], db_url: str,
        write_setup: Callable[..., Path]) -> None:
    old = make_kt(write_setup(setup(None), "digits"))
    old.records.create("client", {"name": "Ромашка", "phone": "8 999 123-45-67"})
    old.close()
    for region, folder in (("RU", "russia"), ("KZ", "kazakhstan")):
        new = open_kt(write_setup(setup(region), folder), db_url)
        try:
            described = [step.describe() for step in new.plan().steps]
            assert sum("normalised copy a duplicates rule compares" in d
                       for d in described) == 1, described
            assert sum("normalised copy an old duplicates rule compared" in d
                       for d in described) == 1, described
            new.migrate()
            assert not new.plan().steps
            with pytest.raises(DuplicateFound) as found:
                new.records.create("client", {"name": "Другая", "phone": "+7 999 1234567"})
            assert found.value is not None
        finally:
            new.close()


def _import(http: TestClient, data: bytes) -> dict[str, Any]:
    answer = http.post("/api/client/import", files={"file": ("c.csv", data)},
                       data={"mode": "good"})
    assert answer.status_code == 202, answer.text
    for _ in range(200):
        job = dict(http.get(answer.headers["location"]).json())
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(job)
