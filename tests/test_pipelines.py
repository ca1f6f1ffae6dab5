"""Stage moves over HTTP on both databases: `POST /api/{e}/{id}/stage {"to": ...}`.

Free, forward and mapped transitions; final stages; unknown stages (did-you-mean); the
current stage (409); `required_in_stages` of the target; the body's shape; `stage` refused
in create and PATCH; If-Match and the ETag; several pipelines chosen by a field, and
changing that field; the stage history (read through the timeline); two clients moving
one record at once; tasks that are overdue or still open on a record.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka
from tests.races import together

Record = dict[str, Any]
ROUNDS = 20

DEAL_FORWARD = """
    entity: deal
    fields:
      title: {type: string, required: true}
    pipeline:
      stages: [new, qualified, offer, won, lost]
      final: [won, lost]
      transitions: forward
"""

DEAL_MAP = """
    entity: deal
    fields:
      title:       {type: string, required: true}
      contract_no: {type: string, required_in_stages: [contract, won]}
    pipeline:
      stages: [lead, offer, contract, won, lost]
      final: [won, lost]
      transitions: {lead: [offer, lost], offer: [contract, lost], contract: [won, lost]}
"""

SHIPMENT = """
    entity: shipment
    fields:
      number: {type: string, required: true, unique: true}
      mode:   {type: choice, options: [sea, air]}
      booking_ref: {type: string, required_in_stages: [loaded]}
    pipelines:
      sea:
        stages: [booked, loaded, at_sea, arrived, {name: cancelled, category: lost}]
        final: [arrived, cancelled]
        transitions: forward
      air:
        stages: [request, booked, in_flight, landed]
        final: [landed]
    pipeline_by: mode
"""


# -- helpers ------------------------------------------------------------------------------------

def _post(client: TestClient, entity: str, body: dict[str, Any]) -> Record:
    response = client.post(f"/api/{entity}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _get(client: TestClient, entity: str, record_id: int) -> Record:
    response = client.get(f"/api/{entity}/{record_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _sale(client: TestClient, number: str, **fields: Any) -> Record:
    buyer = _post(client, "client", {"name": f"Client of {number}"})
    return _post(client, "sale", {"number": number, "client": buyer["id"], **fields})


def _move(client: TestClient, entity: str, record_id: int, to: Any,
          if_match: str | None = None) -> httpx.Response:
    headers = {"If-Match": if_match} if if_match is not None else {}
    return client.post(f"/api/{entity}/{record_id}/stage", json={"to": to}, headers=headers)


def _moved(client: TestClient, entity: str, record_id: int, to: str) -> Record:
    response = _move(client, entity, record_id, to)
    assert response.status_code == 200, response.text
    record = dict(response.json())
    assert record["stage"] == to
    assert response.headers["ETag"] == f'"{record["version"]}"'
    return record


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json()["error"])


def _history(client: TestClient, entity: str, record_id: int) -> list[Record]:
    """The record's stage history from its timeline, oldest first."""
    response = client.get(f"/api/{entity}/{record_id}/timeline", params={"limit": "200"})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next"] is None
    rows = [item for item in page["items"] if item["type"] == "stage"]
    return rows[::-1]


def _path(rows: list[Record]) -> list[tuple[str | None, str]]:
    return [(row["from"], row["to"]) for row in rows]


def _app(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path],
         files: dict[str, str]) -> Iterator[TestClient]:
    kt = make_kt(write_setup(files))
    with TestClient(create_app(kt), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def forward(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Iterator[TestClient]:
    yield from _app(make_kt, write_setup, {"deal.yaml": DEAL_FORWARD})


@pytest.fixture
def mapped(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Iterator[TestClient]:
    yield from _app(make_kt, write_setup, {"deal.yaml": DEAL_MAP})


@pytest.fixture
def freight(make_kt: Callable[..., Kartoteka], write_setup: Callable[..., Path]) -> Iterator[TestClient]:
    yield from _app(make_kt, write_setup, {"shipment.yaml": SHIPMENT})


# -- free transitions ---------------------------------------------------------------------------

def test_a_new_sale_starts_in_the_first_stage_with_one_history_row(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    assert sale["stage"] == "lead"
    [row] = _history(client, "sale", sale["id"])
    assert (row["from"], row["to"], row["pipeline"]) == (None, "lead", "default")
    assert row["seconds_in_previous"] is None


def test_free_transitions_move_anywhere_skip_stages_and_go_back(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    moved = _moved(client, "sale", sale["id"], "negotiation")  # skips proposal
    assert moved["version"] == 2
    assert {k: v for k, v in moved.items() if k not in ("stage", "version", "updated_at")} == \
        {k: v for k, v in sale.items() if k not in ("stage", "version", "updated_at")}
    assert moved["updated_at"] >= sale["updated_at"]
    assert _moved(client, "sale", sale["id"], "lead")["version"] == 3  # and back
    assert _moved(client, "sale", sale["id"], "proposal")["version"] == 4
    assert _get(client, "sale", sale["id"])["stage"] == "proposal"
    assert _path(_history(client, "sale", sale["id"])) == [
        (None, "lead"), ("lead", "negotiation"), ("negotiation", "lead"), ("lead", "proposal")]


def test_each_move_writes_one_history_row_with_seconds(client: TestClient) -> None:
    sale = _sale(client, "S-1", contract_no="C-1")
    for stage in ("proposal", "contract", "invoiced", "won"):
        _moved(client, "sale", sale["id"], stage)
    rows = _history(client, "sale", sale["id"])
    assert _path(rows) == [(None, "lead"), ("lead", "proposal"), ("proposal", "contract"),
                           ("contract", "invoiced"), ("invoiced", "won")]
    for row in rows[1:]:
        assert isinstance(row["seconds_in_previous"], int) and row["seconds_in_previous"] >= 0
        assert row["pipeline"] == "default"
        assert row["at"].endswith("Z")
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    assert _get(client, "sale", sale["id"])["version"] == 5


def test_the_stage_filters_and_sorts_the_list_after_moves(client: TestClient) -> None:
    a, b, c = (_sale(client, f"S-{n}") for n in (1, 2, 3))
    _moved(client, "sale", a["id"], "proposal")
    _moved(client, "sale", c["id"], "proposal")
    page = client.get("/api/sale", params={"stage": "proposal", "sort": "number"}).json()
    assert [s["number"] for s in page["items"]] == ["S-1", "S-3"]
    page = client.get("/api/sale", params={"stage[in]": "lead,negotiation"}).json()
    assert [s["id"] for s in page["items"]] == [b["id"]]


# -- refused moves ------------------------------------------------------------------------------

def test_forward_transitions_refuse_going_back(forward: TestClient) -> None:
    deal = _post(forward, "deal", {"title": "Roof"})
    assert deal["stage"] == "new"
    _moved(forward, "deal", deal["id"], "offer")  # skipping forward is fine
    error = _error(_move(forward, "deal", deal["id"], "qualified"), 422)
    assert error["code"] == "transition_refused"
    assert "forward" in error["message"]
    [detail] = error["details"]
    assert detail["field"] == "to"
    assert "won, lost" in detail["problem"] and "qualified" not in detail["problem"]
    _error(_move(forward, "deal", deal["id"], "new"), 422)
    after = _get(forward, "deal", deal["id"])
    assert (after["stage"], after["version"]) == ("offer", 2)
    assert _path(_history(forward, "deal", deal["id"])) == [(None, "new"), ("new", "offer")]
    _moved(forward, "deal", deal["id"], "lost")


def test_a_transition_map_allows_only_its_moves_and_names_where_to_go(mapped: TestClient) -> None:
    deal = _post(mapped, "deal", {"title": "Roof"})
    assert deal["stage"] == "lead"
    for refused in ("contract", "won"):
        error = _error(_move(mapped, "deal", deal["id"], refused), 422)
        assert error["code"] == "transition_refused"
        [detail] = error["details"]
        assert detail["field"] == "to"
        assert "'lead'" in detail["problem"] and "offer, lost" in detail["problem"]
    _moved(mapped, "deal", deal["id"], "offer")
    error = _error(_move(mapped, "deal", deal["id"], "lead"), 422)  # no way back in the map
    assert "contract, lost" in error["details"][0]["problem"]
    assert _get(mapped, "deal", deal["id"])["stage"] == "offer"
    assert _path(_history(mapped, "deal", deal["id"])) == [(None, "lead"), ("lead", "offer")]


def test_a_final_stage_cannot_be_left(client: TestClient) -> None:
    sale = _sale(client, "S-1", contract_no="C-1")
    _moved(client, "sale", sale["id"], "lost")
    for target in ("lead", "won", "negotiation"):
        error = _error(_move(client, "sale", sale["id"], target), 422)
        assert error["code"] == "transition_refused"
        assert "lost" in error["details"][0]["problem"]
    other = _sale(client, "S-2", contract_no="C-2")
    _moved(client, "sale", other["id"], "won")
    _error(_move(client, "sale", other["id"], "lost"), 422)
    assert [_get(client, "sale", s["id"])["stage"] for s in (sale, other)] == ["lost", "won"]
    assert len(_history(client, "sale", sale["id"])) == 2


def test_an_unknown_stage_is_refused_with_did_you_mean(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    error = _error(_move(client, "sale", sale["id"], "proposl"), 422)
    assert error["code"] == "unknown_stage"
    [detail] = error["details"]
    assert detail["field"] == "to"
    assert "did you mean 'proposal'?" in detail["problem"]
    assert "lead, proposal, negotiation" in detail["problem"]
    for target in ("LEAD", "stage", " proposal", "x" * 1000, "прогноз"):
        assert _error(_move(client, "sale", sale["id"], target), 422)["code"] == "unknown_stage"
    assert _get(client, "sale", sale["id"])["version"] == 1


def test_moving_to_the_current_stage_is_a_conflict(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    error = _error(_move(client, "sale", sale["id"], "lead"), 409)
    assert error["code"] == "already_in_stage"
    _moved(client, "sale", sale["id"], "proposal")
    _error(_move(client, "sale", sale["id"], "proposal"), 409)
    assert _get(client, "sale", sale["id"])["version"] == 2
    assert len(_history(client, "sale", sale["id"])) == 2


def test_required_in_stages_of_the_target_refuse_the_move_and_change_nothing(
        client: TestClient) -> None:
    sale = _sale(client, "S-1", amount="10.00")
    _moved(client, "sale", sale["id"], "negotiation")
    before = _get(client, "sale", sale["id"])
    history = _history(client, "sale", sale["id"])
    for target in ("contract", "invoiced", "won"):
        error = _error(_move(client, "sale", sale["id"], target), 422)
        assert error["code"] == "stage_requirements"
        assert error["details"] == [{"field": "contract_no",
                                     "problem": f"is required in stage '{target}'"}]
    assert _get(client, "sale", sale["id"]) == before
    assert _history(client, "sale", sale["id"]) == history
    assert client.get(f"/api/sale/{sale['id']}").headers["ETag"] == '"2"'
    # an empty string is no value either
    patched = client.patch(f"/api/sale/{sale['id']}", json={"contract_no": ""})
    assert patched.status_code == 200, patched.text
    _error(_move(client, "sale", sale["id"], "contract"), 422)
    # once filled, the move goes through; and then the field cannot be emptied
    assert client.patch(f"/api/sale/{sale['id']}", json={"contract_no": "C-7"}).status_code == 200
    _moved(client, "sale", sale["id"], "contract")
    emptied = client.patch(f"/api/sale/{sale['id']}", json={"contract_no": None})
    assert _error(emptied, 422)["details"][0]["field"] == "contract_no"
    # a stage that does not require it takes the record without it
    lost = _sale(client, "S-2")
    _moved(client, "sale", lost["id"], "lost")


@pytest.mark.parametrize("body", [
    {}, {"stage": "proposal"}, {"to": "proposal", "from": "lead"}, {"to": None}, {"to": ""},
    {"to": 3}, {"to": ["proposal"]}, {"to": {"name": "proposal"}}, ["proposal"], "proposal",
    None, 7,
])
def test_a_move_body_other_than_to_a_stage_is_refused(client: TestClient, body: Any) -> None:
    sale = _sale(client, "S-1")
    response = client.post(f"/api/sale/{sale['id']}/stage", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    error = _error(response, 422)
    assert error["details"], error
    if isinstance(body, dict) and set(body) - {"to"}:
        named = {d["field"] for d in error["details"]}
        assert named == set(body) - {"to"}
    after = _get(client, "sale", sale["id"])
    assert (after["stage"], after["version"]) == ("lead", 1)
    assert len(_history(client, "sale", sale["id"])) == 1


def test_a_move_with_no_body_or_bad_json_is_refused(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    url = f"/api/sale/{sale['id']}/stage"
    assert _error(client.post(url), 400)["code"] == "malformed_request"
    assert _error(client.post(url, content=b'{"to": ', headers={"Content-Type": "application/json"}),
                  400)
    assert _get(client, "sale", sale["id"])["version"] == 1


def test_moves_of_missing_records_and_entities_without_pipeline_are_404(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})
    for path in ("/api/sale/999/stage", "/api/sale/0/stage", "/api/sale/abc/stage",
                 f"/api/client/{buyer['id']}/stage", "/api/nothing/1/stage"):
        response = client.post(path, json={"to": "proposal"})
        assert _error(response, 404)["code"] == "not_found"


def test_stage_is_refused_in_create_and_patch(client: TestClient) -> None:
    buyer = _post(client, "client", {"name": "Acme"})
    error = _error(client.post("/api/sale", json={"number": "S-1", "client": buyer["id"],
                                                  "stage": "won"}), 422)
    assert [d["field"] for d in error["details"]] == ["stage"]
    assert client.get("/api/sale").json()["total"] == 0
    sale = _sale(client, "S-1")
    for stage in ("proposal", "lead"):
        error = _error(client.patch(f"/api/sale/{sale['id']}", json={"stage": stage}), 422)
        assert [d["field"] for d in error["details"]] == ["stage"]
    assert _get(client, "sale", sale["id"]) == sale


# -- versions -----------------------------------------------------------------------------------

def test_if_match_on_a_move(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    etag = client.get(f"/api/sale/{sale['id']}").headers["ETag"]
    assert etag == '"1"'
    client.patch(f"/api/sale/{sale['id']}", json={"notes": "changed"})
    error = _error(_move(client, "sale", sale["id"], "proposal", if_match=etag), 412)
    assert error["code"] == "stale_version"
    assert _get(client, "sale", sale["id"])["stage"] == "lead"
    assert len(_history(client, "sale", sale["id"])) == 1
    for bad in ('"x"', '"garbage"', '"99"'):
        _error(_move(client, "sale", sale["id"], "proposal", if_match=bad), 412)
    fresh = client.get(f"/api/sale/{sale['id']}").headers["ETag"]
    response = _move(client, "sale", sale["id"], "proposal", if_match=fresh)
    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == '"3"' != fresh
    assert response.json()["version"] == 3
    # the new ETag fits the next PATCH; the old one no longer does
    assert client.patch(f"/api/sale/{sale['id']}", json={"notes": "x"},
                        headers={"If-Match": fresh}).status_code == 412
    assert client.patch(f"/api/sale/{sale['id']}", json={"notes": "x"},
                        headers={"If-Match": '"3"'}).status_code == 200
    assert _move(client, "sale", sale["id"], "negotiation", if_match="*").status_code == 200


def test_a_move_changes_version_etag_and_updated_at(client: TestClient) -> None:
    sale = _sale(client, "S-1")
    response = _move(client, "sale", sale["id"], "proposal")
    assert response.status_code == 200
    moved = response.json()
    assert moved["version"] == sale["version"] + 1
    assert moved["updated_at"] >= sale["updated_at"]
    assert moved["created_at"] == sale["created_at"]
    read = client.get(f"/api/sale/{sale['id']}")
    assert read.json() == moved
    assert read.headers["ETag"] == response.headers["ETag"] == '"2"'
    assert client.get(f"/api/sale/{sale['id']}", headers={"If-None-Match": '"1"'}).status_code == 200


# -- several pipelines --------------------------------------------------------------------------

def test_each_record_starts_in_its_pipelines_first_stage(freight: TestClient) -> None:
    sea = _post(freight, "shipment", {"number": "SEA-1", "mode": "sea"})
    air = _post(freight, "shipment", {"number": "AIR-1", "mode": "air"})
    none = _post(freight, "shipment", {"number": "ANY-1"})
    assert (sea["stage"], air["stage"], none["stage"]) == ("booked", "request", "booked")
    assert [r["pipeline"] for r in _history(freight, "shipment", sea["id"])] == ["sea"]
    assert [r["pipeline"] for r in _history(freight, "shipment", air["id"])] == ["air"]
    assert [r["pipeline"] for r in _history(freight, "shipment", none["id"])] == ["sea"]


def test_records_move_only_within_their_pipeline(freight: TestClient) -> None:
    sea = _post(freight, "shipment", {"number": "SEA-1", "mode": "sea"})
    air = _post(freight, "shipment", {"number": "AIR-1", "mode": "air"})
    for target in ("in_flight", "landed", "request"):
        error = _error(_move(freight, "shipment", sea["id"], target), 422)
        assert error["code"] == "unknown_stage"
        assert "sea" in error["message"]
    for target in ("at_sea", "loaded", "cancelled"):
        assert _error(_move(freight, "shipment", air["id"], target), 422)["code"] == "unknown_stage"
    # each pipeline keeps its own rules: sea moves forward only, air is free
    _moved(freight, "shipment", air["id"], "in_flight")
    _moved(freight, "shipment", air["id"], "booked")
    error = _error(_move(freight, "shipment", sea["id"], "loaded"), 422)  # needs booking_ref
    assert error["details"][0]["field"] == "booking_ref"
    freight.patch(f"/api/shipment/{sea['id']}", json={"booking_ref": "B-1"})
    _moved(freight, "shipment", sea["id"], "at_sea")
    assert _error(_move(freight, "shipment", sea["id"], "booked"), 422)["code"] == "transition_refused"
    rows = _history(freight, "shipment", air["id"])
    assert [(r["pipeline"], r["from"], r["to"]) for r in rows] == [
        ("air", None, "request"), ("air", "request", "in_flight"), ("air", "in_flight", "booked")]


def test_changing_the_pipeline_field_to_one_without_the_stage_restarts_it(freight: TestClient) -> None:
    sea = _post(freight, "shipment", {"number": "SEA-1", "mode": "sea", "booking_ref": "B-1"})
    _moved(freight, "shipment", sea["id"], "loaded")
    response = freight.patch(f"/api/shipment/{sea['id']}", json={"mode": "air"})
    assert response.status_code == 200, response.text
    switched = response.json()
    assert (switched["mode"], switched["stage"], switched["version"]) == ("air", "request", 3)
    rows = _history(freight, "shipment", sea["id"])
    assert [(r["pipeline"], r["from"], r["to"]) for r in rows] == [
        ("sea", None, "booked"), ("sea", "booked", "loaded"), ("air", "loaded", "request")]
    assert rows[-1]["seconds_in_previous"] >= 0
    # the change history says so too
    timeline = freight.get(f"/api/shipment/{sea['id']}/timeline").json()["items"]
    last_change = next(item for item in timeline if item["type"] == "change")
    assert last_change["changes"] == {"mode": ["sea", "air"], "stage": ["loaded", "request"]}
    # and it now moves within the air pipeline
    _moved(freight, "shipment", sea["id"], "in_flight")
    assert _error(_move(freight, "shipment", sea["id"], "at_sea"), 422)["code"] == "unknown_stage"
    # back to sea: in_flight is not a sea stage, so it starts at booked
    back = freight.patch(f"/api/shipment/{sea['id']}", json={"mode": "sea"}).json()
    assert back["stage"] == "booked"
    assert _path(_history(freight, "shipment", sea["id"]))[-1] == ("in_flight", "booked")


def test_changing_the_pipeline_field_keeps_a_stage_the_new_pipeline_has(freight: TestClient) -> None:
    sea = _post(freight, "shipment", {"number": "SEA-1", "mode": "sea"})
    response = freight.patch(f"/api/shipment/{sea['id']}", json={"mode": "air"})
    assert response.status_code == 200, response.text
    assert (response.json()["stage"], response.json()["version"]) == ("booked", 2)
    assert _path(_history(freight, "shipment", sea["id"]))[0] == (None, "booked")
    # it is now free to move within air: back to request (sea moves forward only)
    _moved(freight, "shipment", sea["id"], "request")
    assert _history(freight, "shipment", sea["id"])[-1]["pipeline"] == "air"


# -- races --------------------------------------------------------------------------------------

@pytest.fixture
def pair(kt: Kartoteka) -> Iterator[list[TestClient]]:
    with ExitStack() as stack:
        yield [stack.enter_context(TestClient(create_app(kt), base_url="http://127.0.0.1",
                                              raise_server_exceptions=False))
               for _ in range(2)]


def _statuses(responses: list[httpx.Response]) -> list[int]:
    for response in responses:
        assert response.status_code < 500, response.text
    return sorted(r.status_code for r in responses)


def test_two_clients_making_the_same_move_at_once(pair: list[TestClient]) -> None:
    a, b = pair
    for round_ in range(ROUNDS):
        sale = _sale(a, f"S-{round_}")
        responses = together([partial(_move, c, "sale", sale["id"], "proposal") for c in pair])
        assert _statuses(responses) == [200, 409], [r.text for r in responses]
        [conflict] = [r for r in responses if r.status_code == 409]
        assert conflict.json()["error"]["code"] == "already_in_stage"
        assert _path(_history(b, "sale", sale["id"])) == [(None, "lead"), ("lead", "proposal")]
        assert _get(a, "sale", sale["id"])["version"] == 2


def test_two_clients_moving_with_the_same_if_match_at_once(pair: list[TestClient]) -> None:
    a, b = pair
    for round_ in range(ROUNDS):
        sale = _sale(a, f"S-{round_}")
        responses = together([partial(_move, a, "sale", sale["id"], "proposal", '"1"'),
                               partial(_move, b, "sale", sale["id"], "negotiation", '"1"')])
        assert _statuses(responses) == [200, 412], [r.text for r in responses]
        [winner] = [r for r in responses if r.status_code == 200]
        stage = winner.json()["stage"]
        assert _get(b, "sale", sale["id"]) == winner.json()
        assert _path(_history(a, "sale", sale["id"])) == [(None, "lead"), ("lead", stage)]


def test_two_clients_making_different_moves_at_once_both_land_in_history(
        pair: list[TestClient]) -> None:
    a, b = pair
    for round_ in range(ROUNDS // 2):
        sale = _sale(a, f"S-{round_}")
        responses = together([partial(_move, a, "sale", sale["id"], "proposal"),
                               partial(_move, b, "sale", sale["id"], "negotiation")])
        statuses = _statuses(responses)
        ok = [r.json() for r in responses if r.status_code == 200]
        assert statuses in ([200, 200], [200, 409], [200, 412]), [r.text for r in responses]
        rows = _history(a, "sale", sale["id"])
        assert len(rows) == 1 + len(ok)
        final = _get(b, "sale", sale["id"])
        assert final["stage"] == rows[-1]["to"]
        assert final["version"] == 1 + len(ok)
        # the history is a chain: each row leaves the stage the previous one entered
        assert all(rows[i]["from"] == rows[i - 1]["to"] for i in range(1, len(rows)))


# -- tasks on records ---------------------------------------------------------------------------

def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def test_overdue_tasks_and_a_records_open_tasks(client: TestClient) -> None:
    now = dt.datetime.now(dt.UTC)
    sale = _sale(client, "S-1")
    other = _sale(client, "S-2")
    about = {"entity": "sale", "id": sale["id"]}

    def task(subject: str, due: dt.timedelta | None, status: str, on: Any = about) -> Record:
        body: dict[str, Any] = {"subject": subject, "status": status, "about": on}
        if due is not None:
            body["due_at"] = _iso(now + due)
        return _post(client, "task", body)

    late_open = task("late open", dt.timedelta(days=-2), "open")
    late_busy = task("late busy", dt.timedelta(hours=-1), "in_progress")
    task("late done", dt.timedelta(days=-3), "done")
    task("late cancelled", dt.timedelta(days=-3), "cancelled")
    future_open = task("future open", dt.timedelta(days=3), "open")
    undated = task("undated", None, "open")
    elsewhere = task("late elsewhere", dt.timedelta(days=-1), "open",
                     {"entity": "sale", "id": other["id"]})
    unattached = task("late alone", dt.timedelta(days=-1), "in_progress", None)

    response = client.get("/api/task", params={"due_at[lt]": "now",
                                               "status[in]": "open,in_progress", "sort": "due_at"})
    assert response.status_code == 200, response.text
    page = response.json()
    assert [t["subject"] for t in page["items"]] == [
        "late open", "late elsewhere", "late alone", "late busy"]
    assert page["total"] == 4

    response = client.get(f"/api/sale/{sale['id']}/tasks",
                          params={"status[in]": "open,in_progress", "sort": "id"})
    assert response.status_code == 200, response.text
    page = response.json()
    assert [t["id"] for t in page["items"]] == [late_open["id"], late_busy["id"],
                                                future_open["id"], undated["id"]]
    assert all(t["about"] == about for t in page["items"])
    overdue_here = client.get(f"/api/sale/{sale['id']}/tasks",
                              params={"status[in]": "open,in_progress", "due_at[lt]": "now"}).json()
    assert {t["id"] for t in overdue_here["items"]} == {late_open["id"], late_busy["id"]}
    assert elsewhere["id"] not in {t["id"] for t in overdue_here["items"]}
    assert unattached["about"] is None
    # closing a task takes it off both lists
    client.patch(f"/api/task/{late_open['id']}", json={"status": "done", "done_at": _iso(now)})
    assert client.get("/api/task", params={"due_at[lt]": "now", "status[in]": "open,in_progress"}
                      ).json()["total"] == 3
    assert client.get(f"/api/sale/{sale['id']}/tasks", params={"status[in]": "open,in_progress"}
                      ).json()["total"] == 3
    # a bad status in the list is refused, not ignored
    assert client.get("/api/task", params={"status[in]": "open,later"}).status_code == 400
