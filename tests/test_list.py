"""Lists over HTTP on both databases: sort, paging (offset and cursor), total, q= search in
several scripts, and filters through links (forward, reverse, many-to-many, polymorphic).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.pg import HOW_TO, fresh_database

DEFAULT_SETUP = Path(__file__).resolve().parent.parent / "schemas"
Params = list[tuple[str, str]]
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def _shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            seed: Callable[[TestClient], Any]) -> Iterator[Any]:
    """A read-only data set built once per module and database (like `db_url`, but shared
    by the cases that only read it). Yields what `seed` returns."""
    tmp = tmp_path_factory.mktemp(f"list-{request.param}")
    drop: Callable[[], None] | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'kartoteka.db'}"
    else:
        server = request.getfixturevalue("postgres")
        if server is None:
            pytest.skip(HOW_TO)
        url, drop = fresh_database(server)
    kt = request.getfixturevalue("open_kt")(DEFAULT_SETUP, url)
    try:
        kt.migrate()
        with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as http:
            yield seed(http)
    finally:
        kt.close()
        if drop is not None:
            drop()


def _post(client: TestClient, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _page(client: TestClient, path: str, params: Params) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _walk(client: TestClient, path: str, params: Params, limit: int) -> list[dict[str, Any]]:
    """Every page by following `next`; checks `total` on each page and no duplicates."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    totals = set()
    for _ in range(1000):
        extra = [("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        page = _page(client, path, params + extra)
        assert len(page["items"]) <= limit
        items += page["items"]
        totals.add(page["total"])
        cursor = page["next"]
        if cursor is None:
            break
        assert page["items"], "an empty page must not offer a next one"
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), f"duplicates while paging: {ids}"
    assert totals == {len(items)}, "total must be the full count on every page"
    return items


# -- sort -------------------------------------------------------------------------------------

# number, amount, probability, expected_on, currency — NULLs and ties on purpose
SALES = [
    ("S-01", "300", 50, "2024-03-01", "RUB"),
    ("S-02", None, None, None, "USD"),
    ("S-03", "100", 50, "2024-01-15", "RUB"),
    ("S-04", "300.00", None, "2024-03-01", "EUR"),
    ("S-05", None, 10, None, "RUB"),
    ("S-06", "50", 90, "2024-02-01", "USD"),
    ("S-07", "100.5", 10, None, "CNY"),
]


def _seed_sales(client: TestClient) -> TestClient:
    buyer = _post(client, "client", {"name": "Buyer"})
    for number, amount, probability, expected_on, currency in SALES:
        _post(client, "sale", {"number": number, "amount": amount, "probability": probability,
                               "expected_on": expected_on, "currency": currency,
                               "client": buyer["id"]})
    return client


@pytest.fixture(scope="module", params=DATABASES)
def sales(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _shared(request, tmp_path_factory, _seed_sales) as http:
        yield http


SORTS = [
    ("", "01 02 03 04 05 06 07"),
    ("number", "01 02 03 04 05 06 07"),
    ("-number", "07 06 05 04 03 02 01"),
    ("-id", "07 06 05 04 03 02 01"),
    # NULL is the smallest value: first ascending, last descending
    ("amount,number", "02 05 06 03 07 01 04"),
    ("-amount,number", "01 04 07 03 06 02 05"),
    ("-amount,-number", "04 01 07 03 06 05 02"),
    ("probability,-number", "04 02 07 05 03 01 06"),
    ("-probability,number", "06 01 03 05 07 02 04"),
    ("-expected_on,amount,number", "01 04 06 03 02 05 07"),
    ("expected_on,-amount,number", "07 02 05 03 06 01 04"),
    ("currency,-amount,number", "07 04 01 03 05 06 02"),
    ("-currency,probability,number", "02 06 05 01 03 04 07"),
    ("stage,number", "01 02 03 04 05 06 07"),
    ("client,-number", "07 06 05 04 03 02 01"),
]


def _numbers(items: list[dict[str, Any]]) -> str:
    return " ".join(item["number"].removeprefix("S-") for item in items)


@pytest.mark.parametrize(("sort", "expected"), SORTS, ids=[s or "default" for s, _ in SORTS])
def test_sort(sales: TestClient, sort: str, expected: str) -> None:
    params = [("sort", sort)] if sort else []
    page = _page(sales, "/api/sale", params)
    assert _numbers(page["items"]) == expected
    assert page["total"] == 7 and page["next"] is None


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
@pytest.mark.parametrize(("sort", "expected"), SORTS, ids=[s or "default" for s, _ in SORTS])
def test_cursor_walk_gives_every_record_once_in_sort_order(
        sales: TestClient, sort: str, expected: str, limit: int) -> None:
    params = [("sort", sort)] if sort else []
    assert _numbers(_walk(sales, "/api/sale", params, limit)) == expected


def test_cursor_walk_with_a_filter(sales: TestClient) -> None:
    params = [("sort", "-amount"), ("amount[ne]", "300")]
    assert _numbers(_walk(sales, "/api/sale", params, 2)) == "07 03 06 05 02"


def test_offset_paging(sales: TestClient) -> None:
    pages = [_page(sales, "/api/sale", [("sort", "amount,number"), ("limit", "3"),
                                        ("offset", str(offset))])
             for offset in (0, 3, 6, 9)]
    assert [_numbers(p["items"]) for p in pages] == ["02 05 06", "03 07 01", "04", ""]
    assert [p["total"] for p in pages] == [7, 7, 7, 7]
    assert pages[0]["next"] is not None and pages[2]["next"] is None


def test_cursor_with_an_offset_skips_records_after_the_cursor(sales: TestClient) -> None:
    first = _page(sales, "/api/sale", [("sort", "amount,number"), ("limit", "2")])
    assert _numbers(first["items"]) == "02 05"
    later = _page(sales, "/api/sale", [("sort", "amount,number"), ("limit", "2"),
                                       ("cursor", first["next"]), ("offset", "2")])
    assert _numbers(later["items"]) == "07 01"  # 06 03 skipped
    rest = _page(sales, "/api/sale", [("sort", "amount,number"), ("cursor", later["next"])])
    assert _numbers(rest["items"]) == "04" and rest["next"] is None


def test_default_limit_is_50(kt: Kartoteka, client: TestClient) -> None:
    for i in range(51):
        kt.records.create("client", {"name": f"Client {i:02}"})
    page = _page(client, "/api/client", [])
    assert len(page["items"]) == 50 and page["total"] == 51 and page["next"] is not None
    rest = _page(client, "/api/client", [("cursor", page["next"])])
    assert [i["name"] for i in rest["items"]] == ["Client 50"] and rest["next"] is None
    assert len(_page(client, "/api/client", [("limit", "500")])["items"]) == 51


def test_cursor_survives_an_insert_before_it(client: TestClient) -> None:
    sales = _seed_sales(client)
    params = [("sort", "amount,number"), ("limit", "3")]
    first = _page(sales, "/api/sale", params)
    assert _numbers(first["items"]) == "02 05 06"
    buyer = first["items"][0]["client"]
    _post(sales, "sale", {"number": "S-00", "client": buyer})  # NULL amount: sorts first
    rest = _page(sales, "/api/sale", [*params, ("cursor", first["next"])])
    assert _numbers(rest["items"]) == "03 07 01"


def test_total(sales: TestClient) -> None:
    assert _page(sales, "/api/sale", [])["total"] == 7
    assert _page(sales, "/api/sale", [("amount[isnull]", "true")])["total"] == 2
    page = _page(sales, "/api/sale", [("limit", "2"), ("total", "true")])
    assert page["total"] == 7 and len(page["items"]) == 2
    page = _page(sales, "/api/sale", [("limit", "2"), ("total", "false")])
    assert page["total"] is None and len(page["items"]) == 2 and page["next"] is not None
    page = _page(sales, "/api/sale", [("total", "false"), ("number", "nope")])
    assert page == {"items": [], "total": None, "next": None}


def _cursor(data: object) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_PARAMS: list[tuple[str, Params]] = [
    ("garbage cursor", [("cursor", "garbage")]),
    ("punctuation cursor", [("cursor", "!!!!")]),
    ("non-ascii cursor", [("cursor", "курсор")]),
    ("cursor not json", [("cursor", base64.urlsafe_b64encode(b"foo").decode())]),
    ("cursor a list", [("cursor", _cursor([1]))]),
    ("cursor wrong key type", [("cursor", _cursor({"s": "id", "k": ["x"]}))]),
    ("cursor key too large", [("cursor", _cursor({"s": "id", "k": [10**30]}))]),
    ("cursor too many keys", [("cursor", _cursor({"s": "id", "k": [1, 2]}))]),
    ("cursor bad money", [("sort", "amount"), ("cursor", _cursor({"s": "amount,id", "k": ["abc", 1]}))]),
    ("cursor object value", [("sort", "amount"),
                             ("cursor", _cursor({"s": "amount,id", "k": [{"a": 1}, 1]}))]),
    ("limit too large", [("limit", "501")]),
    ("limit zero", [("limit", "0")]),
    ("limit not a number", [("limit", "ten")]),
    ("negative offset", [("offset", "-1")]),
    ("total not boolean", [("total", "no")]),
    ("sort twice", [("sort", "amount"), ("sort", "number")]),
    ("sort unknown", [("sort", "nosuch")]),
    ("sort unknown descending", [("sort", "-amount,-nosuch")]),
    ("sort unsortable", [("sort", "carriers")]),
    ("q too long", [("q", "x" * 201)]),
    ("include unknown", [("include", "nosuch")]),
]


@pytest.mark.parametrize(("name", "params"), BAD_PARAMS, ids=[n for n, _ in BAD_PARAMS])
def test_bad_list_parameters_are_refused(sales: TestClient, name: str, params: Params) -> None:
    response = sales.get("/api/sale", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_query"


def test_unsortable_field_is_refused(client: TestClient) -> None:
    response = client.get("/api/client", params={"sort": "segments"})
    assert response.status_code == 400
    assert "segments" in response.json()["error"]["details"][0]["problem"]


def test_cursor_reused_with_another_sort_is_refused(sales: TestClient) -> None:
    page = _page(sales, "/api/sale", [("sort", "amount"), ("limit", "2")])
    for other in ("-amount", "number", "amount,number", ""):
        params = [("cursor", page["next"])] + ([("sort", other)] if other else [])
        response = sales.get("/api/sale", params=params)
        assert response.status_code == 400, other
        [detail] = response.json()["error"]["details"]
        assert detail["field"] == "cursor"
    # the same sort, spelled the same, still works
    again = _page(sales, "/api/sale", [("sort", "amount"), ("limit", "2"), ("cursor", page["next"])])
    assert _numbers(again["items"]) == "06 03"


# -- q= search --------------------------------------------------------------------------------

ZWNJ = "\u200c"
NAMES = [
    "ООО РОМАШКА",
    "ООО Лютик",
    "علی رضایی",                 # Persian yeh (U+06CC)
    f"کتاب{ZWNJ}فروشی",          # Persian keheh (U+06A9), half-space (ZWNJ)
    "北京贸易有限公司",
    "上海贸易",
    "Фёдоров и партнёры",
    "Федорова",
    "100% Cotton",
    "100 Cotton",
    "a_b trade",
    "axb trade",
    "a/b trade",
    "Straße GmbH",
]

SEARCHES = [
    ("ромашка", ["ООО РОМАШКА"]),
    ("РоМаШкА", ["ООО РОМАШКА"]),
    ("  ромашка  ", ["ООО РОМАШКА"]),
    ("ооо", ["ООО РОМАШКА", "ООО Лютик"]),
    ("\u0639\u0644\u064a", ["علی رضایی"]),                      # Arabic yeh
    ("\u0643\u062a\u0627\u0628", [f"کتاب{ZWNJ}فروشی"]),         # Arabic kaf
    ("کتاب فروشی", [f"کتاب{ZWNJ}فروشی"]),                       # space for the half-space
    (f"کتاب{ZWNJ}فروشی", [f"کتاب{ZWNJ}فروشی"]),
    ("北京", ["北京贸易有限公司"]),
    ("有限", ["北京贸易有限公司"]),
    ("贸易", ["北京贸易有限公司", "上海贸易"]),
    ("федоров", ["Фёдоров и партнёры", "Федорова"]),
    ("ФЁДОРОВА", ["Федорова"]),
    ("партнеры", ["Фёдоров и партнёры"]),
    ("100%", ["100% Cotton"]),
    ("%", ["100% Cotton"]),
    ("0 c", ["100 Cotton"]),
    ("a_b", ["a_b trade"]),
    ("_", ["a_b trade"]),
    ("a/b", ["a/b trade"]),
    ("STRASSE", ["Straße GmbH"]),
    ("nothing like it", []),
]


def _seed_names(client: TestClient) -> TestClient:
    for name in NAMES:
        _post(client, "client", {"name": name})
    return client


@pytest.fixture(scope="module", params=DATABASES)
def named(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _shared(request, tmp_path_factory, _seed_names) as http:
        yield http


@pytest.mark.parametrize(("q", "expected"), SEARCHES, ids=[repr(q) for q, _ in SEARCHES])
def test_search(named: TestClient, q: str, expected: list[str]) -> None:
    page = _page(named, "/api/client", [("q", q)])
    assert sorted(item["name"] for item in page["items"]) == sorted(expected)
    assert page["total"] == len(expected)


def test_empty_search_finds_everything(named: TestClient) -> None:
    assert _page(named, "/api/client", [("q", "")])["total"] == len(NAMES)
    assert _page(named, "/api/client", [("q", "   ")])["total"] == len(NAMES)


def test_search_covers_every_search_field(client: TestClient) -> None:
    found = _post(client, "client", {"name": "Acme", "city": "Казань", "inn": "7701234567",
                                     "email": "Sales@Acme.example", "phone": "+7 843 555-01-02"})
    _post(client, "client", {"name": "Other"})
    for q in ("казань", "КАЗАНЬ", "77012345", "sales@acme", "555-01"):
        page = _page(client, "/api/client", [("q", q)])
        assert [item["id"] for item in page["items"]] == [found["id"]], q


def test_search_follows_patch_of_a_search_field(client: TestClient) -> None:
    record = _post(client, "client", {"name": "ООО РОМАШКА", "city": "Пермь"})
    path = f"/api/client/{record['id']}"

    def found(q: str) -> bool:
        return bool(_page(client, "/api/client", [("q", q)])["items"])

    assert found("ромашка") and found("пермь")
    assert client.patch(path, json={"name": "ООО Василёк"}).status_code == 200
    assert not found("ромашка")
    assert found("василек") and found("ВАСИЛЁК") and found("пермь")
    assert client.patch(path, json={"city": "Казань"}).status_code == 200
    assert not found("пермь") and found("казань") and found("василек")
    assert client.patch(path, json={"city": None, "source": "referral"}).status_code == 200
    assert not found("казань") and found("василек")


def test_search_combines_with_filters_and_sort(client: TestClient) -> None:
    a = _post(client, "client", {"name": "Ромашка Юг", "city": "Sochi"})
    b = _post(client, "client", {"name": "Ромашка Север", "city": "Murmansk"})
    _post(client, "client", {"name": "Лютик", "city": "Sochi"})
    page = _page(client, "/api/client", [("q", "ромашка"), ("sort", "-id")])
    assert [i["id"] for i in page["items"]] == [b["id"], a["id"]]
    page = _page(client, "/api/client", [("q", "ромашка"), ("city", "Sochi")])
    assert [i["id"] for i in page["items"]] == [a["id"]]


# -- filters through links --------------------------------------------------------------------

@pytest.fixture(scope="module", params=DATABASES)
def linked(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with _shared(request, tmp_path_factory, _seed_linked) as ids:
        yield ids


def _seed_linked(client: TestClient) -> dict[str, Any]:
    """Clients, sales, products and tasks; ids by name."""
    ids: dict[str, Any] = {"http": client}
    for name, city in (("C1", "Kazan"), ("C2", "Moscow"), ("C3", "Kazan"), ("C4", "Perm")):
        ids[name] = _post(client, "client", {"name": name, "city": city})["id"]
    for sku in ("X", "Y", "Z"):
        ids[sku] = _post(client, "product", {"sku": sku, "name": f"Product {sku}"})["id"]
    for number, owner, amount, products in (
            ("S1", "C1", "150", ["X", "Y"]), ("S2", "C2", "100", ["Y"]),
            ("S3", "C3", "99.99", ["X"]), ("S4", "C1", "500", []), ("S5", "C2", None, ["Z"])):
        ids[number] = _post(client, "sale", {
            "number": number, "client": ids[owner], "amount": amount,
            "products": [ids[p] for p in products]})["id"]
    # client C1 and sale S1 share an id: about=sale:N must not find tasks about client N
    assert ids["C1"] == ids["S1"]
    for subject, entity, target in (("T1", "sale", "S1"), ("T2", "client", "C1"),
                                    ("T3", "sale", "S2"), ("Call", "sale", "S3"),
                                    ("Call", "client", "C2"), ("T6", None, None)):
        about = None if entity is None else {"entity": entity, "id": ids[target]}
        ids[subject if subject not in ids else subject + "b"] = _post(
            client, "task", {"subject": subject, "about": about})["id"]
    return ids


LINK_FILTERS: list[tuple[str, Params, list[str]]] = [
    ("sale", [("client.city", "Kazan")], ["S1", "S3", "S4"]),
    ("sale", [("client.city[ne]", "Kazan")], ["S2", "S5"]),
    ("sale", [("client.city[in]", "Kazan,Perm")], ["S1", "S3", "S4"]),
    ("sale", [("client.name[startswith]", "C")], ["S1", "S2", "S3", "S4", "S5"]),
    ("sale", [("client.city", "Kazan"), ("amount[gt]", "100")], ["S1", "S4"]),
    ("sale", [("client", "{C1}")], ["S1", "S4"]),
    ("sale", [("client[eq]", "{C2}")], ["S2", "S5"]),
    ("sale", [("client[in]", "{C1},{C2}")], ["S1", "S2", "S4", "S5"]),
    ("sale", [("client[ne]", "{C1}")], ["S2", "S3", "S5"]),
    ("sale", [("supplier[isnull]", "true")], ["S1", "S2", "S3", "S4", "S5"]),
    # reverse many-to-one: clients by their sales
    ("client", [("sales.amount[gt]", "100")], ["C1"]),
    ("client", [("sales.amount[gte]", "100")], ["C1", "C2"]),
    ("client", [("sales.amount[isnull]", "true")], ["C2"]),
    ("client", [("sales.number[in]", "S2,S3")], ["C2", "C3"]),
    ("client", [("sales.amount[lt]", "100"), ("city", "Kazan")], ["C3"]),
    # many-to-many, both ways
    ("sale", [("products.sku", "X")], ["S1", "S3"]),
    ("sale", [("products.sku[in]", "Y,Z")], ["S1", "S2", "S5"]),
    ("sale", [("products", "{Y}")], ["S1", "S2"]),
    ("sale", [("products[in]", "{X},{Z}")], ["S1", "S3", "S5"]),
    ("sale", [("products[isnull]", "true")], ["S4"]),
    ("sale", [("products.sku", "X"), ("products.sku", "Y")], ["S1"]),
    ("product", [("sales.number", "S1")], ["X", "Y"]),
    ("product", [("sales.amount[lt]", "100")], ["X"]),
    ("product", [("sales.client.city", "Kazan")], None),  # two hops: refused
    # polymorphic link, forward and back
    ("task", [("about", "sale:{S1}")], ["T1"]),
    ("task", [("about", "client:{C1}")], ["T2"]),
    ("task", [("about[in]", "sale:{S1},sale:{S2}")], ["T1", "T3"]),
    ("task", [("about[isnull]", "true")], ["T6"]),
    ("sale", [("tasks.subject", "Call")], ["S3"]),
    ("client", [("tasks.subject", "Call")], ["C2"]),
    ("client", [("tasks.subject", "T1")], []),
    ("sale", [("tasks.subject[startswith]", "T")], ["S1", "S2"]),
]


@pytest.mark.parametrize(("entity", "params", "expected"), LINK_FILTERS,
                         ids=[f"{e}?" + "&".join(f"{k}={v}" for k, v in p) for e, p, _ in LINK_FILTERS])
def test_filter_through_links(linked: dict[str, Any], entity: str, params: Params,
                              expected: list[str] | None) -> None:
    client: TestClient = linked["http"]
    params = [(k, v.format(**{n: i for n, i in linked.items() if n != "http"})) for k, v in params]
    response = client.get(f"/api/{entity}", params=params)
    if expected is None:
        assert response.status_code == 400, response.text
        return
    assert response.status_code == 200, response.text
    page = response.json()
    title = {"client": "name", "sale": "number", "product": "sku", "task": "subject"}[entity]
    got = sorted(item[title] for item in page["items"])
    assert got == sorted(expected)
    assert page["total"] == len(expected), "a record matched twice was counted twice"
