"""Pipeline reports over HTTP on both databases.

Board (`GET /api/{e}/board`): every stage in order, empty ones too, count, exact money
sums and first records per column; limit, sort and list filters; each column's `next`
continues with the list call; `pipeline=` among several.
Funnel (`GET /api/{e}/funnel`): reached (skipped stages count as passed; lost and closed
stages only count records that entered them), conversion, drop-off, time in stage
(durations fixed through the stage history table), current counts and sums, forecast,
the `from`/`to` creation range and list filters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from engine.storage.journal import rebuild_stage_time

Record = dict[str, Any]
STAGES = ["lead", "proposal", "negotiation", "contract", "invoiced", "won", "lost"]

FREIGHT = {
    "shipment.yaml": """
        entity: shipment
        fields:
          number: {type: string, required: true, unique: true}
          mode:   {type: choice, options: [sea, air]}
          cost:   {type: money}
          fee:    {type: money, places: 3}
        pipelines:
          sea:
            stages:
              - {name: booked, probability: 20}
              - {name: loaded, probability: 50}
              - {name: at_sea, probability: 80}
              - {name: arrived, probability: 100, category: won}
              - {name: cancelled, probability: 0, category: lost}
            final: [arrived, cancelled]
          air:
            stages:
              - {name: request, label: {en: Request, ru: Запрос}, probability: 10}
              - {name: booked, probability: 40}
              - {name: in_flight, probability: 90}
              - {name: landed, probability: 100}
              - {name: scrapped}
            final: [landed, scrapped]
        pipeline_by: mode
    """,
}


# -- helpers ------------------------------------------------------------------------------------

def _post(client: TestClient, entity: str, body: dict[str, Any]) -> Record:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _sale(api: TestClient, number: str, buyer: int, amount: Any = None, **fields: Any) -> Record:
    body = {"number": number, "client": buyer, **fields}
    if amount is not None:
        body["amount"] = amount
    return _post(api, "sale", body)


def _move(client: TestClient, entity: str, record_id: int, *stages: str) -> None:
    for stage in stages:
        response = client.post(f"/api/{entity}/{record_id}/stage", json={"to": stage})
        assert response.status_code == 200, response.text


def _get(api: TestClient, path: str, **params: Any) -> Record:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _board(api: TestClient, entity: str = "sale", **params: Any) -> Record:
    return _get(api, f"/api/{entity}/board", **params)


def _funnel(api: TestClient, entity: str = "sale", **params: Any) -> Record:
    return _get(api, f"/api/{entity}/funnel", **params)


def _columns(board: Record) -> dict[str, Record]:
    return {column["stage"]: column for column in board["columns"]}


def _stages(funnel: Record) -> dict[str, Record]:
    return {stage["stage"]: stage for stage in funnel["stages"]}


def _error(response: httpx.Response, status: int) -> Record:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json()["error"])


def _set_seconds(kt: Kartoteka, entity: str, record_id: int, from_stage: str, seconds: int) -> None:
    """Make a time in stage deterministic: the history row leaving `from_stage` — then, as
    after any edit of the history by hand, rebuild the kept time-in-stage counters."""
    history = kt.storage.stage_history
    with kt.db.write(system="test") as conn:
        updated = conn.execute(sa.update(history).where(
            history.c.entity == entity, history.c.record_id == record_id,
            history.c.from_stage == from_stage).values(seconds=seconds)).rowcount
        rebuild_stage_time(conn, kt.storage)
    assert updated == 1


def _set_created(kt: Kartoteka, entity: str, record_id: int, moment: dt.datetime) -> None:
    table = kt.storage[entity].table
    with kt.db.write(system="test") as conn:
        conn.execute(sa.update(table).where(table.c.id == record_id).values(created_at=moment))


def _walk_list(client: TestClient, params: dict[str, Any], cursor: str | None) -> list[int]:
    ids: list[int] = []
    for _ in range(100):
        if cursor is None:
            return ids
        page = _get(client, "/api/sale", **params, cursor=cursor)
        ids.extend(item["id"] for item in page["items"])
        cursor = page["next"]
    raise AssertionError("the cursor never ends")


@pytest.fixture
def freight(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]
            ) -> Iterator[TestClient]:
    kt = make_kt(write_setup(FREIGHT))
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


# -- board --------------------------------------------------------------------------------------

def test_an_empty_board_has_every_stage_in_order(client: TestClient) -> None:
    board = _board(client)
    assert board["pipeline"] == "default"
    assert [c["stage"] for c in board["columns"]] == STAGES
    columns = _columns(board)
    assert columns["lead"] == {"stage": "lead", "label": "Lead", "category": "open", "count": 0,
                               "sums": {"amount": "0.00"}, "items": [], "next": None}
    assert [columns[s]["category"] for s in ("won", "lost")] == ["won", "lost"]
    assert columns["invoiced"]["label"] == "Invoiced"


def test_board_counts_sums_and_first_records(client: TestClient) -> None:
    kazan = _post(client, "client", {"name": "Kazan Co", "city": "Kazan"})["id"]
    sales = [_sale(client, "S-1", kazan, "1234.5"), _sale(client, "S-2", kazan, "0.10"),
             _sale(client, "S-3", kazan, 0.2), _sale(client, "S-4", kazan),
             _sale(client, "S-5", kazan, "99999999.99", contract_no="C-5"),
             _sale(client, "S-6", kazan, "0.01")]
    _move(client, "sale", sales[4]["id"], "invoiced")
    _move(client, "sale", sales[5]["id"], "lost")
    board = _board(client)
    assert [c["stage"] for c in board["columns"]] == STAGES
    columns = _columns(board)
    assert (columns["lead"]["count"], columns["lead"]["sums"]) == (4, {"amount": "1234.80"})
    assert [s["number"] for s in columns["lead"]["items"]] == ["S-1", "S-2", "S-3", "S-4"]
    assert columns["lead"]["items"][0] == client.get(f"/api/sale/{sales[0]['id']}").json()
    assert (columns["invoiced"]["count"], columns["invoiced"]["sums"]) == (1, {"amount": "99999999.99"})
    assert columns["invoiced"]["items"][0]["stage"] == "invoiced"
    assert (columns["lost"]["count"], columns["lost"]["sums"]) == (1, {"amount": "0.01"})
    for stage in ("proposal", "negotiation", "contract", "won"):
        assert columns[stage]["count"] == 0 and columns[stage]["items"] == []
        assert columns[stage]["sums"] == {"amount": "0.00"} and columns[stage]["next"] is None
    assert all(c["next"] is None for c in board["columns"])
    # only null amounts: the sum is zero
    _move(client, "sale", sales[3]["id"], "proposal")
    assert _columns(_board(client))["proposal"]["sums"] == {"amount": "0.00"}


def test_board_limit_and_next_continue_with_the_list(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})["id"]
    sales = [_sale(client, f"S-{n:02}", buyer, n) for n in range(1, 26)]
    for sale in sales[20:]:
        _move(client, "sale", sale["id"], "proposal")
    columns = _columns(_board(client))
    lead = columns["lead"]
    assert lead["count"] == 20 and len(lead["items"]) == 10  # the default limit
    assert lead["sums"] == {"amount": f"{sum(range(1, 21))}.00"}
    assert lead["next"]
    rest = _walk_list(client, {"stage": "lead"}, lead["next"])
    ids = [s["id"] for s in lead["items"]] + rest
    assert ids == [s["id"] for s in sales[:20]]
    assert columns["proposal"]["next"] is None and len(columns["proposal"]["items"]) == 5
    # a smaller limit, and the largest one
    small = _columns(_board(client, limit=3))
    assert [len(small[s]["items"]) for s in ("lead", "proposal")] == [3, 3]
    assert _walk_list(client, {"stage": "proposal", "limit": 3}, small["proposal"]["next"]) == \
        [s["id"] for s in sales[23:]]
    assert len(_columns(_board(client, limit=100))["lead"]["items"]) == 20


def test_board_sort_applies_inside_columns(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})["id"]
    amounts = ["5", "50", None, "7.5", "500", "0.5"]
    sales = [_sale(client, f"S-{n}", buyer, amount) for n, amount in enumerate(amounts)]
    _move(client, "sale", sales[1]["id"], "proposal")
    _move(client, "sale", sales[4]["id"], "proposal")
    columns = _columns(_board(client, sort="-amount", limit=2))
    assert [s["amount"] for s in columns["lead"]["items"]] == ["7.50", "5.00"]
    assert [s["amount"] for s in columns["proposal"]["items"]] == ["500.00", "50.00"]
    # the column continues in the same order through the list call
    rest = _get(client, "/api/sale", stage="lead", sort="-amount", cursor=columns["lead"]["next"])
    assert [s["amount"] for s in rest["items"]] == ["0.50", None]
    ascending = _columns(_board(client, sort="amount,number"))
    assert [s["amount"] for s in ascending["lead"]["items"]] == [None, "0.50", "5.00", "7.50"]
    # a cursor for another order is refused, not misread
    wrong = client.get("/api/sale", params={"stage": "lead", "cursor": columns["lead"]["next"]})
    assert wrong.status_code == 400


def test_board_filters_narrow_counts_sums_and_records(client: TestClient) -> None:
    kazan = _post(client, "client", {"name": "Kazan Co", "city": "Kazan"})["id"]
    moscow = _post(client, "client", {"name": "Moscow Co", "city": "Moscow"})["id"]
    rows = [("K-1", kazan, "100", "red apples"), ("K-2", kazan, "250.25", "green"),
            ("K-3", kazan, "50", "apples"), ("K-4", kazan, "1000", "pears"),
            ("M-1", moscow, "300", "apples"), ("M-2", moscow, "20", "plums")]
    sales = {number: _sale(client, number, buyer, amount, notes=notes)
             for number, buyer, amount, notes in rows}
    _move(client, "sale", sales["K-4"]["id"], "negotiation")
    _move(client, "sale", sales["M-1"]["id"], "negotiation")

    columns = _columns(_board(client, client=kazan))
    assert (columns["lead"]["count"], columns["lead"]["sums"]["amount"]) == (3, "400.25")
    assert (columns["negotiation"]["count"], columns["negotiation"]["sums"]["amount"]) == (1, "1000.00")
    assert {s["client"] for c in columns.values() for s in c["items"]} == {kazan}

    columns = _columns(_board(client, **{"amount[gte]": "100"}))
    assert [s["number"] for s in columns["lead"]["items"]] == ["K-1", "K-2"]
    assert columns["lead"]["sums"]["amount"] == "350.25"
    assert (columns["negotiation"]["count"], columns["negotiation"]["sums"]["amount"]) == (2, "1300.00")

    columns = _columns(_board(client, q="APPLES"))
    assert [s["number"] for s in columns["lead"]["items"]] == ["K-1", "K-3"]
    assert [s["number"] for s in columns["negotiation"]["items"]] == ["M-1"]
    assert columns["lead"]["sums"]["amount"] == "150.00"

    columns = _columns(_board(client, **{"client.city": "Moscow"}))
    assert [c["count"] for c in columns.values()] == [1, 0, 1, 0, 0, 0, 0]
    assert _columns(_board(client, q="nothing like this"))["lead"] == {
        "stage": "lead", "label": "Lead", "category": "open", "count": 0,
        "sums": {"amount": "0.00"}, "items": [], "next": None}


def test_board_next_keeps_the_filters(client: TestClient) -> None:
    kazan = _post(client, "client", {"name": "Kazan Co", "city": "Kazan"})["id"]
    moscow = _post(client, "client", {"name": "Moscow Co", "city": "Moscow"})["id"]
    for n in range(14):
        _sale(client, f"S-{n:02}", (kazan, moscow)[n % 2], n * 10)
    params = {"client": kazan, "amount[gte]": "20", "sort": "-amount"}
    lead = _columns(_board(client, limit=2, **params))["lead"]
    assert lead["count"] == 6
    first = [s["id"] for s in lead["items"]]
    rest = _walk_list(client, {"stage": "lead", "limit": 2, **params}, lead["next"])
    expected = _get(client, "/api/sale", stage="lead", limit=50, **params)
    assert first + rest == [s["id"] for s in expected["items"]]
    assert len(set(first + rest)) == 6
    assert [s["amount"] for s in expected["items"]] == \
        ["120.00", "100.00", "80.00", "60.00", "40.00", "20.00"]


@pytest.mark.parametrize("params", [
    {"limit": "101"}, {"limit": "1000"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "abc"},
    {"offset": "0"}, {"offset": "10"}, {"total": "false"}, {"sort": "amout"}, {"colour": "red"},
    {"amount[gte]": "cheap"}, {"stage": "nowhere"}, {"pipeline": "sea"}, {"from": "2024-01-01"},
])
def test_bad_board_parameters_are_400(client: TestClient, params: dict[str, str]) -> None:
    error = _error(client.get("/api/sale/board", params=params), 400)
    assert error["code"] == "invalid_query"
    assert {d["field"] for d in error["details"]} == set(params)


def test_board_and_funnel_of_an_entity_without_pipeline_are_404(client: TestClient) -> None:
    for path in ("/api/client/board", "/api/client/funnel", "/api/task/board",
                 "/api/nothing/board"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == "not_found"


def test_board_with_several_pipelines(freight: TestClient) -> None:
    sea = [_post(freight, "shipment", {"number": f"SEA-{n}", "mode": "sea", "cost": "10.10",
                                       "fee": "0.001"}) for n in range(3)]
    loose = _post(freight, "shipment", {"number": "ANY-1", "cost": "1"})
    air = [_post(freight, "shipment", {"number": f"AIR-{n}", "mode": "air", "cost": "100"})
           for n in range(2)]
    _move(freight, "shipment", sea[1]["id"], "at_sea")
    _move(freight, "shipment", air[1]["id"], "booked")

    board = _board(freight, "shipment")  # the first pipeline by default, with records of no mode
    assert board["pipeline"] == "sea"
    assert [c["stage"] for c in board["columns"]] == ["booked", "loaded", "at_sea", "arrived",
                                                      "cancelled"]
    columns = _columns(board)
    assert [s["id"] for s in columns["booked"]["items"]] == [sea[0]["id"], sea[2]["id"], loose["id"]]
    assert columns["booked"]["sums"] == {"cost": "21.20", "fee": "0.002"}
    assert (columns["at_sea"]["count"], columns["at_sea"]["sums"]) == (1, {"cost": "10.10",
                                                                          "fee": "0.001"})
    assert columns["cancelled"]["category"] == "lost"

    board = _board(freight, "shipment", pipeline="air")
    assert board["pipeline"] == "air"
    assert [c["stage"] for c in board["columns"]] == ["request", "booked", "in_flight", "landed",
                                                      "scrapped"]
    columns = _columns(board)
    # booked is a stage of both pipelines: each board shows its own records only
    assert [s["id"] for s in columns["booked"]["items"]] == [air[1]["id"]]
    assert (columns["request"]["count"], columns["request"]["sums"]) == (
        1, {"cost": "100.00", "fee": "0.000"})
    assert columns["request"]["label"] == "Request"
    assert columns["scrapped"]["category"] == "closed"
    assert _board(freight, "shipment", pipeline="sea") == _board(freight, "shipment")

    for params in ({"pipeline": "rail"}, {"pipeline": ""}, {"pipeline": "SEA"},
                   [("pipeline", "sea"), ("pipeline", "air")]):
        error = _error(freight.get("/api/shipment/board", params=params), 400)
        assert error["details"][0]["field"] == "pipeline"
        assert "sea, air" in error["details"][0]["problem"]


# -- funnel -------------------------------------------------------------------------------------

@pytest.fixture
def deals(kt: Kartoteka, client: TestClient) -> dict[str, Record]:
    """Eight sales through the pipeline, with fixed times in stage:

    A lead | B →proposal | C →invoiced (skips) | D →proposal→negotiation→lost
    E →contract→won | F →lost | G →contract→lost | H →lost
    """
    kazan = _post(client, "client", {"name": "Kazan Co", "city": "Kazan"})["id"]
    moscow = _post(client, "client", {"name": "Moscow Co", "city": "Moscow"})["id"]
    plan: list[tuple[str, int, Any, tuple[str, ...]]] = [
        ("A", kazan, "100", ()),
        ("B", kazan, "200.20", ("proposal",)),
        ("C", kazan, "1234.50", ("invoiced",)),
        ("D", kazan, "50", ("proposal", "negotiation", "lost")),
        ("E", moscow, "1000", ("contract", "won")),
        ("F", moscow, None, ("lost",)),
        ("G", moscow, "300", ("contract", "lost")),
        ("H", moscow, "0", ("lost",)),
    ]
    made: dict[str, Record] = {}
    for name, buyer, amount, path in plan:
        made[name] = _sale(client, name, buyer, amount, contract_no=f"C-{name}")
        _move(client, "sale", made[name]["id"], *path)
    for name, seconds in (("B", 100), ("C", 300), ("D", 200), ("E", 1000), ("F", 50), ("G", 400),
                          ("H", 10)):
        _set_seconds(kt, "sale", made[name]["id"], "lead", seconds)
    _set_seconds(kt, "sale", made["D"]["id"], "proposal", 40)
    _set_seconds(kt, "sale", made["D"]["id"], "negotiation", 70)
    _set_seconds(kt, "sale", made["E"]["id"], "contract", 100)
    _set_seconds(kt, "sale", made["G"]["id"], "contract", 250)
    return made


def test_funnel_reached_conversion_and_drop_off(client: TestClient, deals: dict[str, Record]) -> None:
    funnel = _funnel(client)
    assert funnel["pipeline"] == "default"
    assert funnel["records"] == 8
    assert [s["stage"] for s in funnel["stages"]] == STAGES
    stages = _stages(funnel)
    assert {s: stages[s]["reached"] for s in STAGES} == {
        "lead": 8, "proposal": 5, "negotiation": 4, "contract": 3, "invoiced": 2, "won": 1,
        "lost": 4}
    assert {s: stages[s]["conversion"] for s in STAGES} == {
        "lead": None, "proposal": 0.625, "negotiation": 0.8, "contract": 0.75,
        "invoiced": 0.6667, "won": 0.5, "lost": None}
    assert {s: stages[s]["drop_off"] for s in STAGES} == {
        "lead": None, "proposal": 3, "negotiation": 1, "contract": 1, "invoiced": 1, "won": 1,
        "lost": None}
    assert {s: (stages[s]["label"], stages[s]["category"], stages[s]["probability"])
            for s in ("lead", "won", "lost")} == {
        "lead": ("Lead", "open", 10), "won": ("Won", "won", 100), "lost": ("Lost", "lost", 0)}


def test_funnel_time_in_stage(client: TestClient, deals: dict[str, Record]) -> None:
    stages = _stages(_funnel(client))
    times = {s: stages[s]["time_in_stage"] for s in STAGES}
    # lead: 10 50 100 200 300 400 1000 (odd count: the middle one)
    assert times["lead"] == {"exits": 7, "average_seconds": 294, "median_seconds": 200}
    assert times["proposal"] == {"exits": 1, "average_seconds": 40, "median_seconds": 40}
    assert times["negotiation"] == {"exits": 1, "average_seconds": 70, "median_seconds": 70}
    # contract: 100 250 (even count: the mean of the middle two)
    assert times["contract"] == {"exits": 2, "average_seconds": 175, "median_seconds": 175}
    for stage in ("invoiced", "won", "lost"):
        assert times[stage] == {"exits": 0, "average_seconds": None, "median_seconds": None}


def test_funnel_median_of_an_even_and_an_odd_count(kt: Kartoteka, client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})["id"]
    sales = [_sale(client, f"S-{n}", buyer) for n in range(5)]
    for sale, seconds in zip(sales[:4], (40, 10, 1001, 20), strict=True):
        _move(client, "sale", sale["id"], "proposal")
        _set_seconds(kt, "sale", sale["id"], "lead", seconds)
    lead = _stages(_funnel(client))["lead"]["time_in_stage"]
    assert lead == {"exits": 4, "average_seconds": 268, "median_seconds": 30}
    _move(client, "sale", sales[4]["id"], "lost")
    _set_seconds(kt, "sale", sales[4]["id"], "lead", 7)
    lead = _stages(_funnel(client))["lead"]["time_in_stage"]
    assert lead == {"exits": 5, "average_seconds": 216, "median_seconds": 20}
    # medians are per stage, not over every stage's rows
    _move(client, "sale", sales[0]["id"], "negotiation")
    _set_seconds(kt, "sale", sales[0]["id"], "proposal", 99999)
    stages = _stages(_funnel(client))
    assert stages["lead"]["time_in_stage"]["median_seconds"] == 20
    assert stages["proposal"]["time_in_stage"] == {"exits": 1, "average_seconds": 99999,
                                                   "median_seconds": 99999}


def test_funnel_current_sums_and_forecast(client: TestClient, deals: dict[str, Record]) -> None:
    stages = _stages(_funnel(client))
    assert {s: stages[s]["current"] for s in STAGES} == {
        "lead": {"count": 1, "sums": {"amount": "100.00"}},
        "proposal": {"count": 1, "sums": {"amount": "200.20"}},
        "negotiation": {"count": 0, "sums": {"amount": "0.00"}},
        "contract": {"count": 0, "sums": {"amount": "0.00"}},
        "invoiced": {"count": 1, "sums": {"amount": "1234.50"}},
        "won": {"count": 1, "sums": {"amount": "1000.00"}},
        "lost": {"count": 4, "sums": {"amount": "350.00"}},
    }
    assert {s: stages[s]["forecast"] for s in STAGES} == {
        "lead": {"amount": "10.00"}, "proposal": {"amount": "50.05"},
        "negotiation": {"amount": "0.00"}, "contract": {"amount": "0.00"},
        "invoiced": {"amount": "1111.05"}, "won": {"amount": "1000.00"}, "lost": {"amount": "0.00"},
    }


def test_funnel_filters_narrow_it(kt: Kartoteka, client: TestClient, deals: dict[str, Record]) -> None:
    stages = _stages(_funnel(client, **{"client.city": "Kazan"}))
    assert {s: stages[s]["reached"] for s in STAGES} == {
        "lead": 4, "proposal": 3, "negotiation": 2, "contract": 1, "invoiced": 1, "won": 0,
        "lost": 1}
    assert [stages[s]["conversion"] for s in STAGES] == [None, 0.75, 0.6667, 0.5, 1.0, 0.0, None]
    assert [stages[s]["drop_off"] for s in STAGES] == [None, 1, 1, 1, 0, 1, None]
    assert stages["lead"]["time_in_stage"] == {"exits": 3, "average_seconds": 200,
                                               "median_seconds": 200}
    assert stages["lost"]["current"] == {"count": 1, "sums": {"amount": "50.00"}}
    assert _funnel(client, **{"client.city": "Kazan"})["records"] == 4

    # owner: records made through the engine for user 7
    buyer = deals["A"]["client"]
    for number in ("O-1", "O-2"):
        record = kt.records.create("sale", {"number": number, "client": buyer, "amount": "5"}, owner=7)
        _move(client, "sale", record["id"], "negotiation")
    funnel = _funnel(client, owner="7")
    assert funnel["records"] == 2
    stages = _stages(funnel)
    assert [stages[s]["reached"] for s in STAGES] == [2, 2, 2, 0, 0, 0, 0]
    assert stages["negotiation"]["current"] == {"count": 2, "sums": {"amount": "10.00"}}
    assert stages["negotiation"]["forecast"] == {"amount": "5.00"}
    assert _funnel(client)["records"] == 10
    assert _funnel(client, **{"owner[isnull]": "true"})["records"] == 8

    stages = _stages(_funnel(client, **{"amount[gte]": "300"}))
    assert [stages[s]["reached"] for s in STAGES] == [3, 3, 3, 3, 2, 1, 1]
    stages = _stages(_funnel(client, q="nobody"))
    assert all(s["reached"] == 0 and s["current"]["count"] == 0 for s in stages.values())
    assert all(s["conversion"] is None for s in stages.values())


def test_funnel_from_and_to_bound_the_creation_dates(
        kt: Kartoteka, client: TestClient, deals: dict[str, Record]) -> None:
    days = {"A": (2024, 1, 10), "B": (2024, 2, 1), "C": (2024, 2, 15), "D": (2024, 2, 29),
            "E": (2024, 3, 1), "F": (2024, 3, 31), "G": (2024, 4, 1), "H": (2023, 12, 31)}
    for name, (year, month, day) in days.items():
        _set_created(kt, "sale", deals[name]["id"],
                     dt.datetime(year, month, day, 23, 59, 59, 999999, tzinfo=dt.UTC))
    february = _funnel(client, **{"from": "2024-02-01", "to": "2024-02-29"})
    assert february["records"] == 3  # B, C, D; the `to` day counts whole
    stages = _stages(february)
    assert [stages[s]["reached"] for s in STAGES] == [3, 3, 2, 1, 1, 0, 1]
    assert stages["lead"]["current"]["count"] == 0
    assert stages["proposal"]["current"] == {"count": 1, "sums": {"amount": "200.20"}}
    assert _funnel(client, **{"from": "2024-03-01"})["records"] == 3  # E, F, G
    assert _funnel(client, to="2024-01-10")["records"] == 2  # H, A
    assert _funnel(client, **{"from": "2024-02-15", "to": "2024-02-15"})["records"] == 1
    assert _funnel(client, **{"from": "2025-01-01", "to": "2024-01-01"})["records"] == 0
    # from/to combine with the list filters
    assert _funnel(client, **{"from": "2024-02-01", "client.city": "Moscow"})["records"] == 3


@pytest.mark.parametrize("params", [
    {"from": "2024-13-01"}, {"from": "yesterday"}, {"to": "2024-02-30"}, {"to": ""},
    {"from": "2024-01-01T00:00:00Z"}, {"to": "01.02.2024"},
])
def test_bad_funnel_dates_are_400(client: TestClient, params: dict[str, str]) -> None:
    error = _error(client.get("/api/sale/funnel", params=params), 400)
    assert error["code"] == "invalid_query"
    assert [d["field"] for d in error["details"]] == list(params)


@pytest.mark.parametrize("params", [
    {"sort": "-amount"}, {"limit": "5"}, {"offset": "0"}, {"cursor": "abc"},
    {"include": "client"}, {"colour": "red"}, {"amount[gte]": "cheap"}, {"pipeline": "air"},
    {"stage": "nowhere"},
])
def test_unknown_funnel_parameters_are_400(client: TestClient, params: dict[str, str]) -> None:
    error = _error(client.get("/api/sale/funnel", params=params), 400)
    assert error["code"] == "invalid_query"
    assert {d["field"] for d in error["details"]} == set(params)


def test_an_empty_funnel(client: TestClient) -> None:
    funnel = _funnel(client)
    assert funnel["records"] == 0
    for stage in funnel["stages"]:
        assert stage["reached"] == 0
        assert stage["conversion"] is None
        assert stage["current"] == {"count": 0, "sums": {"amount": "0.00"}}
        assert stage["forecast"] == {"amount": "0.00"}
        assert stage["time_in_stage"] == {"exits": 0, "average_seconds": None,
                                          "median_seconds": None}
    assert [s["drop_off"] for s in funnel["stages"]] == [None, 0, 0, 0, 0, 0, None]


def test_funnel_with_several_pipelines(freight: TestClient) -> None:
    ship = [_post(freight, "shipment", {"number": f"SEA-{n}", "mode": "sea", "cost": "10",
                                        "fee": "1.005"}) for n in range(3)]
    flights = [_post(freight, "shipment", {"number": f"AIR-{n}", "mode": "air", "cost": "100"})
               for n in range(2)]
    _move(freight, "shipment", ship[0]["id"], "at_sea")
    _move(freight, "shipment", ship[1]["id"], "cancelled")
    _move(freight, "shipment", flights[0]["id"], "in_flight", "landed")
    _move(freight, "shipment", flights[1]["id"], "scrapped")

    sea = _funnel(freight, "shipment")
    assert (sea["pipeline"], sea["records"]) == ("sea", 3)
    stages = _stages(sea)
    assert [stages[s]["reached"] for s in ("booked", "loaded", "at_sea", "arrived", "cancelled")] == \
        [3, 1, 1, 0, 1]
    assert stages["booked"]["current"] == {"count": 1, "sums": {"cost": "10.00", "fee": "1.005"}}
    # a forecast has the places of its field: fee has 3
    assert stages["booked"]["forecast"] == {"cost": "2.00", "fee": "0.201"}
    assert stages["at_sea"]["forecast"] == {"cost": "8.00", "fee": "0.804"}

    air = _funnel(freight, "shipment", pipeline="air")
    assert (air["pipeline"], air["records"]) == ("air", 2)
    stages = _stages(air)
    # scrapped is final with no category: closed, counted only by who entered it
    assert [stages[s]["reached"] for s in ("request", "booked", "in_flight", "landed", "scrapped")] == \
        [2, 1, 1, 1, 1]
    assert stages["scrapped"]["category"] == "closed"
    assert stages["scrapped"]["conversion"] is None and stages["scrapped"]["drop_off"] is None
    assert stages["landed"]["current"] == {"count": 1, "sums": {"cost": "100.00", "fee": "0.000"}}
    assert stages["landed"]["forecast"] == {"cost": "100.00", "fee": "0.000"}
    assert stages["scrapped"]["forecast"] == {"cost": None, "fee": None}  # no probability
    assert _error(freight.get("/api/shipment/funnel", params={"pipeline": "rail"}), 400)


def test_a_record_switched_into_a_pipeline_counts_in_its_funnel(freight: TestClient) -> None:
    """Every record now in a stage of a pipeline has reached that stage there."""
    moved = _post(freight, "shipment", {"number": "SEA-1", "mode": "sea"})  # in booked
    restarted = _post(freight, "shipment", {"number": "SEA-2", "mode": "sea"})
    _move(freight, "shipment", restarted["id"], "loaded")
    for record in (moved, restarted):
        response = freight.patch(f"/api/shipment/{record['id']}", json={"mode": "air"})
        assert response.status_code == 200, response.text
    air = _funnel(freight, "shipment", pipeline="air")
    stages = _stages(air)
    assert stages["booked"]["current"]["count"] == 1
    assert stages["request"]["current"]["count"] == 1
    assert air["records"] == 2
    assert stages["request"]["reached"] == 2
    for stage in stages.values():
        assert stage["reached"] >= stage["current"]["count"], stage
    assert _funnel(freight, "shipment")["records"] == 0


# -- the stage summary on the record row (kt_reached) -------------------------------------------

def _entered(kt: Kartoteka, entity: str, record_id: int) -> set[str]:
    """The stages the record's `kt_reached` bits say it has entered."""
    table = kt.storage[entity]
    with kt.db.read(system="test") as conn:
        bits = conn.execute(sa.select(table.table.c.kt_reached)
                            .where(table.table.c.id == record_id)).scalar_one()
    assert table.stage_bits is not None
    return {name for name, bit in table.stage_bits.items() if bits & bit}


def _backfill(kt: Kartoteka, entity: str) -> None:
    table = kt.storage[entity]
    with kt.db.write(system="test") as conn:
        table.table.c.kt_reached.info["backfill"](conn, kt.storage, table)


def test_the_summary_follows_creates_skips_moves_back_and_deletes(
        kt: Kartoteka, client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})["id"]
    skipper = _sale(client, "S-1", buyer, "10", contract_no="C-1")
    assert _entered(kt, "sale", skipper["id"]) == {"lead"}
    _move(client, "sale", skipper["id"], "invoiced")
    assert _entered(kt, "sale", skipper["id"]) == {"lead", "invoiced"}
    funnel = _stages(_funnel(client))
    # skipped stages count as passed
    assert [funnel[s]["reached"] for s in STAGES] == [1, 1, 1, 1, 1, 0, 0]
    # a move back keeps what was reached
    _move(client, "sale", skipper["id"], "proposal", "lost")
    assert _entered(kt, "sale", skipper["id"]) == {"lead", "invoiced", "proposal", "lost"}
    funnel = _stages(_funnel(client))
    assert [funnel[s]["reached"] for s in STAGES] == [1, 1, 1, 1, 1, 0, 1]
    assert funnel["lost"]["current"] == {"count": 1, "sums": {"amount": "10.00"}}
    assert funnel["proposal"]["time_in_stage"]["exits"] == 1

    winner = _sale(client, "S-2", buyer, "5", contract_no="C-2")
    _move(client, "sale", winner["id"], "won")
    funnel = _stages(_funnel(client))
    assert [funnel[s]["reached"] for s in STAGES] == [2, 2, 2, 2, 2, 1, 1]
    # the bits agree with what the stage history says
    before = {r: _entered(kt, "sale", r) for r in (skipper["id"], winner["id"])}
    _backfill(kt, "sale")
    assert {r: _entered(kt, "sale", r) for r in before} == before

    assert client.delete(f"/api/sale/{winner['id']}").status_code == 204
    after = _funnel(client)
    assert after["records"] == 1
    assert [_stages(after)[s]["reached"] for s in STAGES] == [1, 1, 1, 1, 1, 0, 1]


def test_the_summary_follows_a_pipeline_switch(make_kt: Callable[..., Kartoteka],
                                               write_setup: Callable[..., Path]) -> None:
    kt = make_kt(write_setup(FREIGHT))
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as api:
        stays = _post(api, "shipment", {"number": "SEA-1", "mode": "sea"})
        restarts = _post(api, "shipment", {"number": "SEA-2", "mode": "sea"})
        _move(api, "shipment", restarts["id"], "loaded")
        for record in (stays, restarts):
            response = api.patch(f"/api/shipment/{record['id']}", json={"mode": "air"})
            assert response.status_code == 200, response.text
        # booked is an air stage too: no new stage; loaded is not: air starts at request
        assert _entered(kt, "shipment", stays["id"]) == {"booked"}
        assert _entered(kt, "shipment", restarts["id"]) == {"booked", "loaded", "request"}
        air = _stages(_funnel(api, "shipment", pipeline="air"))
        assert [air[s]["reached"] for s in ("request", "booked", "in_flight", "landed",
                                            "scrapped")] == [2, 2, 0, 0, 0]
        before = _funnel(api, "shipment", pipeline="air")
        _backfill(kt, "shipment")
        assert _funnel(api, "shipment", pipeline="air") == before


def test_the_backfill_rebuilds_the_summary_from_the_history(
        kt: Kartoteka, client: TestClient, deals: dict[str, Record]) -> None:
    """A database where kt_reached is new: after the backfill the funnel answers as before."""
    queries: list[dict[str, str]] = [{}, {"client.city": "Kazan"}, {"to": "2999-01-01"}]
    before = [_funnel(client, **params) for params in queries]
    table = kt.storage["sale"].table
    with kt.db.write(system="test") as conn:
        conn.execute(sa.update(table).values(kt_reached=None))
    assert _funnel(client)["records"] == 0
    _backfill(kt, "sale")
    assert [_funnel(client, **params) for params in queries] == before
    assert _entered(kt, "sale", deals["C"]["id"]) == {"lead", "invoiced"}


def test_sixty_three_stage_names_over_two_pipelines_fit_the_summary(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """The limit the loader enforces (tests/broken_setups/too_many_stages*) is the real one:
    63 distinct names, the last one the sign bit's neighbour, store and count."""
    short = ["new", *(f"a{i:02d}" for i in range(1, 35)), "done"]      # 36 names
    long = ["new", *(f"b{i:02d}" for i in range(1, 28)), "done"]       # 27 more: 63
    kt = make_kt(write_setup({"order.yaml": f"""
        entity: order
        fields:
          kind: {{type: choice, options: [retail, wholesale]}}
        pipeline_by: kind
        pipelines:
          retail: {{stages: [{", ".join(short)}]}}
          wholesale: {{stages: [{", ".join(long)}]}}
    """}))
    assert kt.storage["order"].stage_bits == {
        name: 1 << index for index, name in enumerate(dict.fromkeys([*short, *long]))}
    with TestClient(create_app(kt), raise_server_exceptions=False,
                    base_url="http://127.0.0.1") as api:
        order = _post(api, "order", {"kind": "wholesale"})
        _move(api, "order", order["id"], "b27")
        assert _entered(kt, "order", order["id"]) == {"new", "b27"}
        funnel = _stages(_funnel(api, "order", pipeline="wholesale"))
        assert funnel["b27"]["reached"] == 1 and funnel["done"]["reached"] == 0


def test_the_summary_is_never_shown_nor_accepted(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})["id"]
    sale = _sale(client, "S-1", buyer)
    assert "kt_reached" not in sale
    assert "kt_reached" not in _get(client, f"/api/sale/{sale['id']}")
    assert all("kt_reached" not in item for item in _get(client, "/api/sale")["items"])
    assert client.patch(f"/api/sale/{sale['id']}", json={"kt_reached": 0}).status_code == 422
    assert client.post("/api/sale", json={"number": "S-2", "client": buyer,
                                          "kt_reached": 1}).status_code == 422
    for params in ({"kt_reached": "1"}, {"sort": "kt_reached"}):
        assert client.get("/api/sale", params=params).status_code == 400
        assert client.get("/api/sale/funnel", params=params).status_code == 400


# -- time in stage: kept counters (unfiltered) and the history (filtered) agree ------------------

def _stage_time(kt: Kartoteka) -> dict[tuple[str, str, str, int], tuple[int, int]]:
    """kt_stage_time without rows that came back to zero (the rebuild writes none)."""
    kept = kt.storage.stage_time.c
    with kt.db.read(system="test") as conn:
        return {(e, p, s, shard): (int(exits), int(total)) for e, p, s, shard, exits, total
                in conn.execute(sa.select(kept.entity, kept.pipeline, kept.stage, kept.shard,
                                          kept.exits, kept.total_seconds)) if exits}


def _age_last_entry(kt: Kartoteka, entity: str, record_id: int, seconds: int) -> None:
    """Move the record's last stage entry back in time, so its next move has that many
    seconds in the stage (the counters depend on `seconds` only: they stay exact)."""
    h = kt.storage.stage_history
    with kt.db.write(system="test") as conn:
        last = conn.execute(sa.select(sa.func.max(h.c.id)).where(
            h.c.entity == entity, h.c.record_id == record_id)).scalar_one()
        conn.execute(sa.update(h).where(h.c.id == last).values(
            at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)))


def test_kept_time_in_stage_equals_the_history_after_random_work(
        make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> None:
    """Creates, moves (skips, moves back), pipeline switches and deletes in random order:
    the unfiltered funnel (counters + OFFSET medians) answers as the exact path does (forced
    by a filter that selects every record), and rebuilding the counters changes nothing."""
    import random
    kt = make_kt(write_setup(FREIGHT))
    pipelines = kt.storage["shipment"].spec.pipeline
    assert pipelines is not None
    rng = random.Random(20261124)
    with TestClient(create_app(kt), base_url="http://127.0.0.1", raise_server_exceptions=False) as api:
        alive: dict[int, str] = {}  # id: mode
        deleted: list[int] = []
        for step in range(160):
            action = rng.random()
            if action < 0.25 or len(alive) < 3:
                mode = rng.choice(["sea", "air", None])
                body = {"number": f"N-{step}", **({"mode": mode} if mode else {})}
                made = _post(api, "shipment", body)
                alive[made["id"]] = mode or "sea"
                _age_last_entry(kt, "shipment", made["id"], rng.randint(1, 10**6))
                continue
            record_id = rng.choice(sorted(alive))
            if action < 0.75:  # a move anywhere in its pipeline: forward, skips or back
                stages = pipelines.pipelines[alive[record_id]].stage_names
                response = api.post(f"/api/shipment/{record_id}/stage",
                                    json={"to": rng.choice(stages)})
                assert response.status_code in (200, 409, 422), response.text
                if response.status_code == 200:
                    _age_last_entry(kt, "shipment", record_id, rng.randint(1, 10**6))
            elif action < 0.9:  # a pipeline switch
                mode = "air" if alive[record_id] == "sea" else "sea"
                response = api.patch(f"/api/shipment/{record_id}", json={"mode": mode})
                assert response.status_code in (200, 422), response.text
                if response.status_code == 200:
                    alive[record_id] = mode
                    _age_last_entry(kt, "shipment", record_id, rng.randint(1, 10**6))
            else:
                assert api.delete(f"/api/shipment/{record_id}").status_code == 204
                del alive[record_id]
                deleted.append(record_id)
        assert deleted
        for pipeline in ("sea", "air"):
            fast = _funnel(api, "shipment", pipeline=pipeline)
            exact = _funnel(api, "shipment", pipeline=pipeline, **{"id[gte]": "1"})
            assert fast == exact
            assert any(s["time_in_stage"]["exits"] > 1 for s in fast["stages"]), fast
        h = kt.storage.stage_history
        with kt.db.read(system="test") as conn:  # a deleted record's stage history went with it
            assert not conn.execute(sa.select(h.c.id).where(h.c.record_id.in_(deleted))).all()
        maintained = _stage_time(kt)
        with kt.db.write(system="test") as conn:
            rebuild_stage_time(conn, kt.storage)
        assert _stage_time(kt) == maintained
        assert _funnel(api, "shipment") == _funnel(api, "shipment", **{"id[gte]": "1"})


def test_a_manager_funnel_counts_only_his_records(
        kt: Kartoteka, client: TestClient, deals: dict[str, Record]) -> None:
    """A scoped caller never gets the kept counters of everyone's records."""
    buyer = _post(client, "client", {"name": "Own Co", "city": "Kazan"})["id"]
    mine = [_sale(client, f"M-{n}", buyer, "10", contract_no=f"M-{n}") for n in range(2)]
    _move(client, "sale", mine[0]["id"], "proposal")
    _set_seconds(kt, "sale", mine[0]["id"], "lead", 123456)
    manager, _ = kt.users.add("manager@example.com", ["manager"])  # from now on HTTP needs a token
    sale = kt.storage["sale"].table
    with kt.db.write(system="test") as conn:
        conn.execute(sa.update(sale).where(sale.c.id.in_([m["id"] for m in mine]))
                     .values(owner=manager.id))
    with kt.acting.as_user(manager):
        his = kt.reports.funnel("sale", [])
    everyone = kt.reports.funnel("sale", [])
    assert his["records"] == 2 and everyone["records"] == 10
    assert _stages(his)["lead"]["time_in_stage"] == {"exits": 1, "average_seconds": 123456,
                                                   "median_seconds": 123456}
    assert _stages(everyone)["lead"]["time_in_stage"]["exits"] == 8
    assert his == kt.reports.funnel("sale", [("owner", str(manager.id))])
