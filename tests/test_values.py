"""Every field type at its edges, through HTTP: what is sent comes back the same from the
create answer, from GET and from the list, on SQLite and PostgreSQL alike. Also defaults,
clearing with null, partial PATCH, and how `version`/`updated_at` move.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

ITEM = """
entity: item
title: "{s}"
search: [s, t]
fields:
  s:     {type: string, max_length: 10}
  t:     {type: text}
  i:     {type: integer}
  d:     {type: decimal, digits: 18, places: 6}
  m:     {type: money}
  b:     {type: boolean}
  day:   {type: date}
  at:    {type: datetime}
  mail:  {type: email}
  tel:   {type: phone}
  web:   {type: url}
  color: {type: choice, options: [red, green, blue]}
  tags:  {type: multichoice, options: [alpha, beta, gamma]}
  data:  {type: json}
"""

PRESET = """
entity: preset
fields:
  name:  {type: string, required: true, default: unnamed}
  count: {type: integer, default: 7}
  price: {type: money, default: "9.9"}
  ratio: {type: decimal, digits: 10, places: 3, default: 0.5}
  flag:  {type: boolean, default: true}
  color: {type: choice, options: [red, green, blue], default: green}
  tags:  {type: multichoice, options: [a, b, c], default: [c, a]}
  day:   {type: date, default: 2024-02-29}
  at:    {type: datetime, default: "2024-03-20T12:00:00+03:30"}
  note:  {type: text}
"""

FIELDS = ("s", "t", "i", "d", "m", "b", "day", "at", "mail", "tel", "web", "color", "tags", "data")


@pytest.fixture
def kt_items(make_kt: Callable[..., Kartoteka],
             write_setup: Callable[[dict[str, str]], Path]) -> Kartoteka:
    return make_kt(write_setup({"item.yaml": ITEM, "preset.yaml": PRESET}))


@pytest.fixture
def http(kt_items: Kartoteka) -> Iterator[TestClient]:
    with TestClient(create_app(kt_items), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def post_raw(http: TestClient, path: str, text: str) -> Any:
    """POST JSON text as is (so numbers keep every digit, which Python floats would not)."""
    return http.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


def read_back(http: TestClient, record_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record by GET and as the list shows it."""
    got = http.get(f"/api/item/{record_id}")
    assert got.status_code == 200, got.text
    assert got.headers["etag"] == f'"{got.json()["version"]}"'
    listed = http.get("/api/item", params={"id": str(record_id)})
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert len(items) == 1, items
    return got.json(), items[0]


def round_trip(http: TestClient, field: str, cases: list[tuple[Any, Any]], *,
               raw: bool = False) -> None:
    """Create one record per (sent, expected) case; check create, GET and list agree."""
    wrong: list[str] = []
    for sent, expected in cases:
        if raw:
            created = post_raw(http, "/api/item", f'{{"{field}": {sent}}}')
        else:
            created = http.post("/api/item", json={field: sent})
        if created.status_code != 201:
            wrong.append(f"{sent!r}: create answered {created.status_code} {created.text[:200]}")
            continue
        record = created.json()
        got, listed = read_back(http, record["id"])
        for where, value in (("create", record[field]), ("get", got[field]),
                             ("list", listed[field])):
            if value != expected or type(value) is not type(expected):
                wrong.append(f"{sent!r}: {where} gave {value!r}, expected {expected!r}")
        if got != record or listed != record:
            wrong.append(f"{sent!r}: create, get and list disagree: {record} {got} {listed}")
    assert not wrong, "\n".join(wrong)


# -- text ----------------------------------------------------------------------------------

def test_string_edges(http: TestClient) -> None:
    round_trip(http, "s", [
        ("a" * 10, "a" * 10),                          # exactly max_length
        ("😀" * 10, "😀" * 10),                         # 4-byte UTF-8, counted as characters
        ("𠀀𠀁𪛖", "𠀀𠀁𪛖"),                              # rare CJK (supplementary plane)
        ("سلام دنیا", "سلام دنیا"),                    # Persian, right to left
        ("می\u200cخواهم", "می\u200cخواهم"),              # Persian half-space (ZWNJ)
        ("你好", "你好"),
        ("Ёжик", "Ёжик"),
        ("👩\u200d👩\u200d👧", "👩\u200d👩\u200d👧"),          # one emoji, five code points
        ("  x  ", "  x  "),                            # whitespace kept
        ("", ""),                                      # empty is not null
        ("e\u0301", "e\u0301"),                        # not normalised on the way in
    ])


def test_string_search_finds_every_script(http: TestClient) -> None:
    for text in ("سلام دنیا", "你好", "Ёжик", "😀 ok"):
        assert http.post("/api/item", json={"s": text}).status_code == 201
    for query, expected in (("سلام", "سلام دنیا"), ("你", "你好"), ("ёжик", "Ёжик"),
                            ("ЕЖИК", "Ёжик"), ("😀", "😀 ok")):
        items = http.get("/api/item", params={"q": query}).json()["items"]
        assert [r["s"] for r in items] == [expected], query


def test_text_long_and_multiline(http: TestClient) -> None:
    long = "".join(f"line {n}: Ёжик 你好 سلام 😀\n" for n in range(20_000))
    assert len(long.encode()) < 1024 * 1024
    round_trip(http, "t", [
        (long, long),
        ("first\nsecond\r\nthird\ttabbed\n\n", "first\nsecond\r\nthird\ttabbed\n\n"),
        ("x" * 100_000, "x" * 100_000),
    ])


# -- numbers -------------------------------------------------------------------------------

def test_integer_edges(http: TestClient) -> None:
    round_trip(http, "i", [(INT64_MIN, INT64_MIN), (INT64_MAX, INT64_MAX), (0, 0), (-1, -1),
                           (42, 42)])
    for value in (INT64_MIN, INT64_MAX, -1):
        items = http.get("/api/item", params={"i": str(value)}).json()["items"]
        assert [r["i"] for r in items] == [value]
    ordered = http.get("/api/item", params={"sort": "i", "i[isnull]": "false"}).json()["items"]
    assert [r["i"] for r in ordered] == [INT64_MIN, -1, 0, 42, INT64_MAX]


def test_decimal_keeps_every_digit(http: TestClient) -> None:
    cases = [
        ("123456789012.123456", "123456789012.123456"),
        ("-123456789012.123456", "-123456789012.123456"),
        ("999999999999.999999", "999999999999.999999"),
        ("0.000001", "0.000001"),
        ("0", "0.000000"),
        ("1.5", "1.500000"),
        ("1.5000000", "1.500000"),          # more places, all zeros: the same number
        ("-0.5", "-0.500000"),
    ]
    # as JSON strings
    round_trip(http, "d", cases)
    # as JSON numbers, sent as text so no float ever touches them
    round_trip(http, "d", cases, raw=True)
    # a plain integer number
    round_trip(http, "d", [(7, "7.000000")])
    found = http.get("/api/item", params={"d": "123456789012.123456"}).json()["items"]
    assert [r["d"] for r in found] == ["123456789012.123456", "123456789012.123456"]
    biggest = http.get("/api/item", params={"sort": "-d", "limit": "1"}).json()["items"]
    assert biggest[0]["d"] == "999999999999.999999"


def test_money_to_the_cent(http: TestClient) -> None:
    cases = [("0.01", "0.01"), ("1234.50", "1234.50"), ("1234.5", "1234.50"),
             ("0", "0.00"), ("-0.01", "-0.01"), ("9999999999999999.99", "9999999999999999.99")]
    round_trip(http, "m", cases)
    round_trip(http, "m", cases, raw=True)
    round_trip(http, "m", [(1234, "1234.00")])


def test_money_sums_exactly(http: TestClient, kt_items: Kartoteka) -> None:
    ids = [http.post("/api/item", json={"m": text, "s": text}).json()["id"]
           for text in ("0.1", "0.2", "0.3")]
    amounts = [http.get(f"/api/item/{i}").json()["m"] for i in ids]
    assert amounts == ["0.10", "0.20", "0.30"]
    assert Decimal(amounts[0]) + Decimal(amounts[1]) == Decimal(amounts[2])
    # the database sums exactly too: 0.1 + 0.2 is 0.30, not 0.30000000000000004
    table = kt_items.storage["item"].table
    with kt_items.db.read(system="test") as conn:
        total = conn.execute(sa.select(sa.func.sum(table.c.m)).where(
            table.c.id.in_(ids[:2]))).scalar_one()
    assert Decimal(str(total)) == Decimal("0.30")
    # and compares exactly: 0.3 equals the sum, nothing else does
    matched = http.get("/api/item", params={"m": "0.3"}).json()["items"]
    assert [r["id"] for r in matched] == [ids[2]]
    below = http.get("/api/item", params={"m[lt]": "0.3", "sort": "m"}).json()["items"]
    assert [r["m"] for r in below] == ["0.10", "0.20"]


# -- others --------------------------------------------------------------------------------

def test_boolean(http: TestClient) -> None:
    round_trip(http, "b", [(True, True), (False, False)])
    falses = http.get("/api/item", params={"b": "false"}).json()["items"]
    assert [r["b"] for r in falses] == [False]


def test_date_edges(http: TestClient) -> None:
    round_trip(http, "day", [("2024-02-29", "2024-02-29"), ("2000-02-29", "2000-02-29"),
                             ("1900-01-01", "1900-01-01"), ("0001-01-01", "0001-01-01"),
                             ("9999-12-31", "9999-12-31")])
    found = http.get("/api/item", params={"day": "2024-02-29"}).json()["items"]
    assert [r["day"] for r in found] == ["2024-02-29"]


def test_datetime_offsets_normalised_to_utc(http: TestClient) -> None:
    round_trip(http, "at", [
        ("2024-03-20T12:00:00+03:30", "2024-03-20T08:30:00Z"),      # Tehran
        ("2024-01-01T00:00:00+08:00", "2023-12-31T16:00:00Z"),      # Beijing: the day before
        ("2024-06-30T23:59:59-05:00", "2024-07-01T04:59:59Z"),      # the day after
        ("2024-02-29T10:00:00Z", "2024-02-29T10:00:00Z"),
        ("2024-02-29T10:00:00z", "2024-02-29T10:00:00Z"),
        ("2024-05-01T10:00:00.123456+03:00", "2024-05-01T07:00:00.123456Z"),  # microseconds
        ("2024-05-01T10:00:00.000001Z", "2024-05-01T10:00:00.000001Z"),
        ("2024-05-01 10:00:00+00:00", "2024-05-01T10:00:00Z"),
    ])
    # the same moment written in another zone finds the record
    found = http.get("/api/item", params={"at": "2024-03-20T17:00:00+08:30"}).json()["items"]
    assert [r["at"] for r in found] == ["2024-03-20T08:30:00Z"]


def test_contact_fields(http: TestClient) -> None:
    round_trip(http, "mail", [("user.name+tag@example.co.uk", "user.name+tag@example.co.uk"),
                              ("почта@пример.рф", "почта@пример.рф")])
    round_trip(http, "tel", [("+98 21 1234 5678", "+98 21 1234 5678"),
                             ("+7 (495) 123-45-67 ext. 12", "+7 (495) 123-45-67 ext. 12")])
    round_trip(http, "web", [("https://example.com/a?b=c&d=%20#top", "https://example.com/a?b=c&d=%20#top"),
                             ("https://例子.测试/路径?q=你好", "https://例子.测试/路径?q=你好"),
                             ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/")])


def test_choice_and_multichoice(http: TestClient) -> None:
    round_trip(http, "color", [("red", "red"), ("blue", "blue")])
    round_trip(http, "tags", [
        (["gamma", "alpha"], ["alpha", "gamma"]),          # option order, not sent order
        (["beta", "gamma", "alpha"], ["alpha", "beta", "gamma"]),
        (["beta"], ["beta"]),
        ([], []),
    ])
    with_gamma = http.get("/api/item", params={"tags[contains]": "gamma"}).json()["items"]
    assert [r["tags"] for r in with_gamma] == [["alpha", "gamma"], ["alpha", "beta", "gamma"]]


def test_json_values(http: TestClient) -> None:
    nested = {"ключ": {"وَ": [1, 2.5, "你好", None, True, {"😀": "𠀀"}]},
              "deep": {"a": {"b": {"c": [[], {}]}}}, "": 0, "int64": [2**63 - 1, -(2**63)]}
    round_trip(http, "data", [
        (nested, nested),
        ([1, "two", {"три": 3}], [1, "two", {"три": 3}]),
        ("just text", "just text"),
        (True, True),
        (0, 0),
        ({}, {}),
        ([], []),
    ])


@pytest.mark.parametrize("text, value", [
    ("18446744073709551616", 2**64),
    ('{"n": 18446744073709551616}', {"n": 2**64}),
    ("[-12345678901234567890123]", [-12345678901234567890123]),
], ids=["top-level", "in-object", "in-list"])
def test_json_number_past_64_bits_kept_or_refused(http: TestClient, text: str, value: Any) -> None:
    """A JSON integer past 64 bits either keeps every digit or is refused with 422 —
    never a 500, never silently rounded."""
    created = post_raw(http, "/api/item", f'{{"data": {text}}}')
    assert created.status_code in (201, 422), created.text
    if created.status_code == 422:
        assert created.json()["error"]["details"][0]["field"].startswith("data")
        assert http.get("/api/item").json()["total"] == 0
        return
    assert created.json()["data"] == value
    got, listed = read_back(http, created.json()["id"])
    assert got["data"] == listed["data"] == value


# -- defaults, null, partial update, version -------------------------------------------------

def test_defaults_applied_on_create(http: TestClient) -> None:
    created = http.post("/api/preset", json={"note": "only this"})
    assert created.status_code == 201, created.text
    record = created.json()
    expected = {"name": "unnamed", "count": 7, "price": "9.90", "ratio": "0.500", "flag": True,
                "color": "green", "tags": ["a", "c"], "day": "2024-02-29",
                "at": "2024-03-20T08:30:00Z", "note": "only this"}
    assert {k: record[k] for k in expected} == expected
    got = http.get(f"/api/preset/{record['id']}").json()
    assert got == record
    # a value given wins over the default
    given = http.post("/api/preset", json={"name": "mine", "count": 0, "flag": False,
                                           "tags": ["b"]}).json()
    assert (given["name"], given["count"], given["flag"], given["tags"]) == ("mine", 0, False, ["b"])
    assert given["price"] == "9.90"


FULL = {"s": "Ёжик", "t": "multi\nline", "i": 5, "d": "1.5", "m": "2.50", "b": True,
        "day": "2024-02-29", "at": "2024-03-20T12:00:00+03:30", "mail": "a@example.com",
        "tel": "+7 495 123 45 67", "web": "https://example.com", "color": "red",
        "tags": ["beta"], "data": {"k": [1, 2]}}


def test_null_clears_every_type(http: TestClient) -> None:
    created = http.post("/api/item", json=FULL)
    assert created.status_code == 201, created.text
    record = created.json()
    assert all(record[f] is not None for f in FIELDS)
    patched = http.patch(f"/api/item/{record['id']}", json=dict.fromkeys(FIELDS))
    assert patched.status_code == 200, patched.text
    assert all(patched.json()[f] is None for f in FIELDS), patched.json()
    assert patched.json()["version"] == 2
    got, listed = read_back(http, record["id"])
    assert got == listed == patched.json()
    # created with explicit nulls: the same as cleared
    empty = http.post("/api/item", json=dict.fromkeys(FIELDS))
    assert empty.status_code == 201, empty.text
    assert all(empty.json()[f] is None for f in FIELDS)
    # a cleared value is no value: isnull finds it, for every type
    missed = [field for field in FIELDS
              if [r["id"] for r in http.get("/api/item", params={f"{field}[isnull]": "true"})
                  .json()["items"]] != [record["id"], empty.json()["id"]]]
    assert not missed, f"[isnull]=true does not find the cleared record by: {missed}"


def test_patch_changes_only_what_is_sent(http: TestClient) -> None:
    other = http.post("/api/item", json={**FULL, "mail": "other@example.com"}).json()
    record = http.post("/api/item", json=FULL).json()
    patched = http.patch(f"/api/item/{record['id']}", json={"i": -7, "tags": ["gamma", "alpha"]})
    assert patched.status_code == 200, patched.text
    expected = {**record, "i": -7, "tags": ["alpha", "gamma"], "version": 2,
                "updated_at": patched.json()["updated_at"]}
    assert patched.json() == expected
    got, listed = read_back(http, record["id"])
    assert got == listed == expected
    assert http.get(f"/api/item/{other['id']}").json() == other


def test_version_and_timestamps(http: TestClient) -> None:
    created = http.post("/api/item", json=FULL)
    record = created.json()
    assert record["version"] == 1 and created.headers["etag"] == '"1"'
    assert record["created_at"] == record["updated_at"]
    assert record["created_at"].endswith("Z")
    url = f"/api/item/{record['id']}"

    first = http.patch(url, json={"i": 6})
    assert first.status_code == 200 and first.json()["version"] == 2
    assert first.headers["etag"] == '"2"'
    assert first.json()["created_at"] == record["created_at"]
    assert first.json()["updated_at"] > record["updated_at"]

    # no-op patches: nothing changes, not even the version or updated_at
    same_values = [
        {},
        {"i": 6},
        {"s": "Ёжик", "color": "red"},
        {"d": "1.500000"},                                   # the same number written longer
        {"m": 2.5},                                          # as a number
        {"at": "2024-03-20T08:30:00Z"},                      # the same moment in UTC
        {"at": "2024-03-20T15:30:00+07:00"},                 # ... and in another zone
        {"tags": ["beta"]},
        {"data": {"k": [1, 2]}},
    ]
    for body in same_values:
        again = http.patch(url, json=body)
        assert again.status_code == 200, again.text
        assert again.json() == first.json(), body
        assert again.headers["etag"] == '"2"'

    second = http.patch(url, json={"i": 7, "s": "Ёж"})
    assert second.json()["version"] == 3                   # one change, one step
    assert second.json()["updated_at"] > first.json()["updated_at"]
    assert second.json()["created_at"] == record["created_at"]
    third = http.patch(url, json={"s": None})
    assert third.json()["version"] == 4
    got, listed = read_back(http, record["id"])
    assert got == listed == third.json()


def test_decimal_number_body_is_never_a_float(http: TestClient) -> None:
    """A JSON number with many digits reaches the database without passing through float."""
    text = json.dumps({"d": "placeholder"}).replace('"placeholder"', "0.100000")
    created = post_raw(http, "/api/item", text)
    assert created.json()["d"] == "0.100000"
    created = post_raw(http, "/api/item", '{"d": 100000000000.000001, "m": 0.07}')
    assert created.status_code == 201, created.text
    assert (created.json()["d"], created.json()["m"]) == ("100000000000.000001", "0.07")
