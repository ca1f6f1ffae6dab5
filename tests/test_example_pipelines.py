"""The logistics and printing examples, walked through their pipelines over HTTP.

tests/test_examples.py exercises every example generically (one record per entity, every
field filled); this file follows the business stories the two examples were written for,
on SQLite and PostgreSQL:

- logistics: a sea and an air shipment each go through their own pipeline, chosen by
  `mode`; each stage's `required_in_stages` fields are refused while empty (422 naming
  them) and accepted once filled; an air shipment cannot enter a sea-only stage; the stage
  history, the board and the funnel follow; the service checklist of a cargo is listed
  through the way back `services` and deleted with its shipment (cascade);
- printing: an order goes through prepress and a proof the customer sends back once,
  cannot be printed before the proof is approved (explicit `transitions` map), is
  scheduled as a job on a press, printed, finished and delivered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api import create_app
from engine import Kartoteka, check_setup
from tests.conftest import EXAMPLES

LOGISTICS = EXAMPLES / "logistics"
PRINTING = EXAMPLES / "printing"

SEA = ["request_received", "commercial_offer", "terms_agreed", "in_work", "booked", "loaded",
       "at_sea", "arrived_port", "customs_cleared", "delivered", "lost", "cancelled"]
AIR = ["request_received", "commercial_offer", "terms_agreed", "in_work", "booked", "departed",
       "arrived", "customs_cleared", "delivered", "lost", "cancelled"]
ORDER = ["received", "prepress", "proof_sent", "proof_approved", "printing", "finishing",
         "ready", "delivered", "cancelled"]

#: (stage, the fields it newly requires with the values that fill them)
SEA_WALK: list[tuple[str, dict[str, Any]]] = [
    ("commercial_offer", {"quoted_price": "5200.00"}),
    ("terms_agreed", {"incoterms": "FOB"}),
    ("in_work", {}),
    ("booked", {"booking_no": "SHA0412345"}),
    ("loaded", {"container_no": "MSCU1234567"}),
    ("at_sea", {"vessel": "MSC Anna", "transport_doc_no": "MEDUSH123456"}),
    ("arrived_port", {}),
    ("customs_cleared", {}),
    ("delivered", {"delivered_on": "2024-05-20"}),
]
AIR_WALK: list[tuple[str, dict[str, Any]]] = [
    ("commercial_offer", {"quoted_price": "3100.50"}),
    ("terms_agreed", {"incoterms": "CPT"}),
    ("in_work", {}),
    ("booked", {"booking_no": "SU-77120"}),
    ("departed", {"flight_no": "SU205", "transport_doc_no": "555-12345675"}),
    ("arrived", {}),
    ("customs_cleared", {}),
    ("delivered", {"delivered_on": "2024-04-03"}),
]
SERVICES = ["delivery", "customs", "certificates", "insurance", "warehousing"]


# -- helpers --------------------------------------------------------------------------------

@pytest.fixture
def logistics(make_kt: Callable[..., Kartoteka]) -> Iterator[TestClient]:
    with TestClient(create_app(make_kt(LOGISTICS)), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def printing(make_kt: Callable[..., Kartoteka]) -> Iterator[TestClient]:
    with TestClient(create_app(make_kt(PRINTING)), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as client:
        yield client


def create(client: TestClient, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/api/{entity}", json=body)
    assert answer.status_code == 201, (entity, body, answer.text)
    record: dict[str, Any] = answer.json()
    return record


def patch(client: TestClient, entity: str, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.patch(f"/api/{entity}/{record_id}", json=body)
    assert answer.status_code == 200, (entity, record_id, body, answer.text)
    record: dict[str, Any] = answer.json()
    return record


def read(client: TestClient, entity: str, record_id: int) -> dict[str, Any]:
    answer = client.get(f"/api/{entity}/{record_id}")
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


def move(client: TestClient, entity: str, record_id: int, to: str) -> dict[str, Any]:
    answer = client.post(f"/api/{entity}/{record_id}/stage", json={"to": to})
    assert answer.status_code == 200, (entity, record_id, to, answer.text)
    record: dict[str, Any] = answer.json()
    assert record["stage"] == to
    assert answer.headers["etag"] == f'"{record["version"]}"'
    return record


def refused_move(client: TestClient, entity: str, record_id: int, to: str,
                 code: str) -> dict[str, Any]:
    """A move answered 422 with `code`, which changes nothing; returns the error."""
    before = read(client, entity, record_id)
    answer = client.post(f"/api/{entity}/{record_id}/stage", json={"to": to})
    assert answer.status_code == 422, (entity, record_id, before["stage"], to, answer.text)
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    assert read(client, entity, record_id) == before, "a refused move changed the record"
    return error


def refused_fields(error: dict[str, Any]) -> set[str]:
    return {detail["field"] for detail in error["details"]}


def walk(client: TestClient, entity: str, record: dict[str, Any],
         steps: list[tuple[str, dict[str, Any]]]) -> list[tuple[str | None, str]]:
    """Moves a record along `steps`: where a stage requires fields, the move is refused
    first, naming exactly those fields; they are filled, and the move then succeeds.
    Returns the moves made, (from, to)."""
    moves: list[tuple[str | None, str]] = []
    current = record
    for stage, needed in steps:
        if needed:
            error = refused_move(client, entity, current["id"], stage, "stage_requirements")
            assert refused_fields(error) == set(needed), (stage, error)
            for detail in error["details"]:
                assert detail["problem"] == f"is required in stage {stage!r}", detail
            patch(client, entity, current["id"], needed)
        moved = move(client, entity, current["id"], stage)
        moves.append((current["stage"], stage))
        current = moved
    for values in (v for _, v in steps):
        for name, value in values.items():
            assert current[name] == value, (name, current[name], value)
    return moves


def timeline(client: TestClient, entity: str, record_id: int) -> list[dict[str, Any]]:
    answer = client.get(f"/api/{entity}/{record_id}/timeline", params={"limit": "200"})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["next"] is None
    items: list[dict[str, Any]] = page["items"]
    times = [dt.datetime.fromisoformat(item["at"]) for item in items]
    assert times == sorted(times, reverse=True), "the timeline is not newest first"
    return items


def assert_stage_history(client: TestClient, entity: str, record_id: int, initial: str,
                         moves: list[tuple[str | None, str]], pipeline: str) -> None:
    """One `stage` item per move, newest first, after the one made on creation."""
    stages = [item for item in timeline(client, entity, record_id) if item["type"] == "stage"]
    expected = [(None, initial), *moves]
    assert [(item["from"], item["to"]) for item in stages] == list(reversed(expected))
    assert {item["pipeline"] for item in stages} == {pipeline}
    assert stages[-1]["seconds_in_previous"] is None
    assert all(isinstance(item["seconds_in_previous"], int) and item["seconds_in_previous"] >= 0
               for item in stages[:-1]), stages


def board(client: TestClient, entity: str, pipeline: str | None = None) -> dict[str, Any]:
    params = {"pipeline": pipeline} if pipeline else {}
    answer = client.get(f"/api/{entity}/board", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def funnel(client: TestClient, entity: str, pipeline: str | None = None) -> dict[str, Any]:
    params = {"pipeline": pipeline} if pipeline else {}
    answer = client.get(f"/api/{entity}/funnel", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def columns(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {column["stage"]: column for column in report["columns"]}


def comment(client: TestClient, entity: str, record_id: int, text: str) -> None:
    answer = client.post(f"/api/{entity}/{record_id}/comments", json={"text": text})
    assert answer.status_code == 201, answer.text
    assert answer.json()["type"] == "comment"
    first = timeline(client, entity, record_id)[0]
    assert (first["type"], first["text"]) == ("comment", text)


# -- loading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", [LOGISTICS, PRINTING], ids=["logistics", "printing"])
def test_example_loads_without_problems(folder: Path) -> None:
    result = check_setup(folder)
    assert result.diagnostics == [], "\n".join(str(d) for d in result.diagnostics)
    assert result.setup is not None


def test_logistics_declares_a_pipeline_per_mode() -> None:
    setup = check_setup(LOGISTICS).setup
    assert setup is not None
    pipelines = setup.entities["shipment"].pipeline
    assert pipelines is not None
    assert pipelines.pipeline_by == "mode"
    assert {name: list(p.stage_names) for name, p in pipelines.pipelines.items()} == {
        "sea": SEA, "air": AIR}
    for pipeline in pipelines.pipelines.values():
        assert pipeline.final == {"delivered", "lost", "cancelled"}
        probability = {s.name: s.probability for s in pipeline.stages}
        assert [probability[s] for s in SEA[:3]] == [10, 40, 75]
    service = setup.entities["shipment_service"]
    assert list(service.fields["kind"].options or ()) == SERVICES
    link = service.links["shipment"]
    assert (link.target, link.required, link.on_delete, link.reverse) == (
        "shipment", True, "cascade", "services")


def test_printing_declares_its_funnel() -> None:
    setup = check_setup(PRINTING).setup
    assert setup is not None
    pipelines = setup.entities["order"].pipeline
    assert pipelines is not None
    (pipeline,) = pipelines.pipelines.values()
    assert list(pipeline.stage_names) == ORDER
    assert pipeline.final == {"delivered", "cancelled"}
    transitions = pipeline.transitions
    assert not isinstance(transitions, str), "an explicit transitions map"
    assert [to for to, targets in transitions.items() if "printing" in targets] == ["proof_approved"]
    assert "prepress" in transitions["proof_sent"]


# -- logistics --------------------------------------------------------------------------------

def _client_and_carrier(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    company = create(client, "client", {
        "name": "ООО «Балтийский импорт»", "inn": "7801234567", "kpp": "780101001",
        "city": "Санкт-Петербург", "email": "import@baltimport.ru", "phone": "+7 812 555-01-02"})
    carrier = create(client, "carrier", {"name": "Mediterranean Shipping Company",
                                         "kind": "shipping_line", "code": "MSCU"})
    return company, carrier


def _shipment(client: TestClient, company: dict[str, Any], number: str, mode: str,
              **extra: Any) -> dict[str, Any]:
    return create(client, "shipment", {
        "number": number, "mode": mode, "cargo": "Станки токарные / 车床", "client": company["id"],
        "origin": "Шанхай" if mode == "sea" else "Шэньчжэнь", "destination": "Санкт-Петербург",
        "weight_kg": "18250.5", "volume_m3": 54.2, **extra})


def test_sea_and_air_shipments_follow_their_own_pipelines(logistics: TestClient) -> None:
    client = logistics
    company, carrier = _client_and_carrier(client)
    contact = create(client, "contact", {"full_name": "Иванова Анна", "client": company["id"]})
    sea = _shipment(client, company, "FR-2024-0001", "sea", carrier=carrier["id"],
                    contact=contact["id"], container_type="40HC", cost="4100.00")
    air = _shipment(client, company, "FR-2024-0002", "air", cost="2400")
    assert (sea["stage"], air["stage"]) == ("request_received", "request_received")
    assert (sea["weight_kg"], sea["volume_m3"], air["cost"]) == ("18250.500", "54.200", "2400.00")
    assert client.get(f"/api/client/{company['id']}/shipments").json()["total"] == 2

    # a stage of the other pipeline, or of none, is refused naming the stages there are
    for to in ("loaded", "at_sea", "arrived_port", "departed_port"):
        error = refused_move(client, "shipment", air["id"], to, "unknown_stage")
        assert refused_fields(error) == {"to"}
    for to in ("departed", "arrived"):
        refused_move(client, "shipment", sea["id"], to, "unknown_stage")
    # the sea shipment first
    sea_moves = walk(client, "shipment", sea, SEA_WALK)
    # forward only: no way back, and a final stage moves no more
    refused_move(client, "shipment", sea["id"], "request_received", "transition_refused")
    refused_move(client, "shipment", sea["id"], "cancelled", "transition_refused")
    # the air shipment goes part way, cannot enter a sea-only stage there either, then on
    air_moves = walk(client, "shipment", air, AIR_WALK[:5])
    refused_move(client, "shipment", air["id"], "at_sea", "unknown_stage")
    refused_move(client, "shipment", air["id"], "in_work", "transition_refused")
    air_moves += walk(client, "shipment", read(client, "shipment", air["id"]), AIR_WALK[5:])

    # a field required in the current stage cannot be emptied
    answer = client.patch(f"/api/shipment/{sea['id']}", json={"delivered_on": None})
    assert answer.status_code == 422, answer.text
    assert refused_fields(answer.json()["error"]) == {"delivered_on"}

    assert_stage_history(client, "shipment", sea["id"], "request_received", sea_moves, "sea")
    assert_stage_history(client, "shipment", air["id"], "request_received", air_moves, "air")
    assert len(sea_moves) == len(SEA_WALK) and len(air_moves) == len(AIR_WALK)

    # a sea request that the client declined: it needs its reason
    lost = _shipment(client, company, "FR-2024-0003", "sea")
    lost_moves = walk(client, "shipment", lost, [
        ("commercial_offer", {"quoted_price": "6000.00"}),
        ("lost", {"lost_reason": "Клиент выбрал ж/д через Казахстан"})])
    assert lost_moves[-1] == ("commercial_offer", "lost")

    # the board: one column per stage of the pipeline asked for, empty ones too
    sea_board = board(client, "shipment", "sea")
    assert sea_board["pipeline"] == "sea"
    assert [c["stage"] for c in sea_board["columns"]] == SEA
    by_stage = columns(sea_board)
    assert {s: c["count"] for s, c in by_stage.items() if c["count"]} == {"delivered": 1, "lost": 1}
    assert [r["id"] for r in by_stage["delivered"]["items"]] == [sea["id"]]
    assert by_stage["delivered"]["sums"] == {"quoted_price": "5200.00", "cost": "4100.00"}
    assert by_stage["delivered"]["category"] == "won"
    assert by_stage["lost"]["category"] == "lost"
    assert by_stage["in_work"]["sums"] == {"quoted_price": "0.00", "cost": "0.00"}
    assert board(client, "shipment") == sea_board  # sea is the first pipeline
    air_board = columns(board(client, "shipment", "air"))
    assert list(air_board) == AIR
    assert {s: c["count"] for s, c in air_board.items() if c["count"]} == {"delivered": 1}
    assert [r["id"] for r in air_board["delivered"]["items"]] == [air["id"]]
    assert air_board["delivered"]["sums"] == {"quoted_price": "3100.50", "cost": "2400.00"}

    # the funnel: every stage on the path reached; the declined request counts up to the offer
    sea_funnel = funnel(client, "shipment", "sea")
    assert sea_funnel["records"] == 2
    reached = {s["stage"]: s["reached"] for s in sea_funnel["stages"]}
    assert reached == {"request_received": 2, "commercial_offer": 2, **dict.fromkeys(SEA[2:10], 1),
                       "lost": 1, "cancelled": 0}
    stages = {s["stage"]: s for s in sea_funnel["stages"]}
    assert stages["terms_agreed"]["conversion"] == 0.5
    assert stages["terms_agreed"]["drop_off"] == 1
    assert stages["commercial_offer"]["time_in_stage"]["exits"] == 2
    assert stages["delivered"]["current"]["count"] == 1
    assert stages["request_received"]["probability"] == 10
    air_funnel = funnel(client, "shipment", "air")
    assert air_funnel["records"] == 1
    assert {s["stage"]: s["reached"] for s in air_funnel["stages"]} == {
        **dict.fromkeys(AIR[:9], 1), "lost": 0, "cancelled": 0}

    # a comment on the card comes first in its timeline
    comment(client, "shipment", sea["id"], "Клиент подтвердил получение груза, акт подписан.")
    comment(client, "shipment", air["id"], "货物已签收")


def test_changing_mode_switches_the_pipeline(logistics: TestClient) -> None:
    client = logistics
    company, _ = _client_and_carrier(client)
    shipment = _shipment(client, company, "FR-2024-0010", "sea")
    walk(client, "shipment", shipment, SEA_WALK[:2])
    # terms_agreed exists in the air pipeline too: the stage is kept
    switched = patch(client, "shipment", shipment["id"], {"mode": "air"})
    assert switched["stage"] == "terms_agreed"
    assert columns(board(client, "shipment", "air"))["terms_agreed"]["count"] == 1
    assert columns(board(client, "shipment", "sea"))["terms_agreed"]["count"] == 0
    refused_move(client, "shipment", shipment["id"], "loaded", "unknown_stage")
    # a sea shipment already loaded has no such stage by air: it starts the air pipeline
    loaded = _shipment(client, company, "FR-2024-0011", "sea")
    walk(client, "shipment", loaded, SEA_WALK[:5])
    restarted = patch(client, "shipment", loaded["id"], {"mode": "air"})
    assert restarted["stage"] == "request_received"
    newest = next(i for i in timeline(client, "shipment", loaded["id"]) if i["type"] == "stage")
    assert (newest["pipeline"], newest["from"], newest["to"]) == ("air", "loaded", "request_received")


def test_a_switched_shipment_counts_in_its_new_pipelines_funnel(logistics: TestClient) -> None:
    """The funnel's `reached` counts the records that were ever in a stage or beyond, so a
    record now in a stage has reached it, also when it came there by changing pipeline."""
    client = logistics
    company, _ = _client_and_carrier(client)
    shipment = _shipment(client, company, "FR-2024-0012", "sea")
    walk(client, "shipment", shipment, SEA_WALK[:2])
    assert patch(client, "shipment", shipment["id"], {"mode": "air"})["stage"] == "terms_agreed"
    report = funnel(client, "shipment", "air")
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["terms_agreed"]["current"]["count"] == 1
    assert report["records"] == 1, report
    assert {s: stages[s]["reached"] for s in AIR[:4]} == {
        "request_received": 1, "commercial_offer": 1, "terms_agreed": 1, "in_work": 0}


def test_service_checklist_is_listed_and_deleted_with_its_shipment(logistics: TestClient) -> None:
    client = logistics
    company, carrier = _client_and_carrier(client)
    broker = create(client, "carrier", {"name": "Таможенный брокер Север", "kind": "customs_broker"})
    shipment = _shipment(client, company, "FR-2024-0020", "sea")
    other = _shipment(client, company, "FR-2024-0021", "air")
    prices = {"delivery": "850.00", "customs": "420.00", "certificates": "150.00",
              "insurance": "95.50", "warehousing": "0.00"}
    services = {}
    for kind in SERVICES:
        services[kind] = create(client, "shipment_service", {
            "shipment": shipment["id"], "kind": kind, "price": prices[kind],
            "provider": broker["id"] if kind == "customs" else None})
        assert services[kind]["status"] == "needed"
    kept = create(client, "shipment_service", {"shipment": other["id"], "kind": "insurance"})
    patch(client, "shipment_service", services["warehousing"]["id"], {"status": "not_needed"})
    patch(client, "shipment_service", services["delivery"]["id"],
          {"status": "ordered", "provider": carrier["id"]})

    listed = client.get(f"/api/shipment/{shipment['id']}/services", params={"sort": "id"})
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 5
    assert [s["kind"] for s in page["items"]] == SERVICES
    assert {s["kind"]: s["price"] for s in page["items"]} == prices
    open_items = client.get(f"/api/shipment/{shipment['id']}/services",
                            params={"status": "needed"}).json()
    assert {s["kind"] for s in open_items["items"]} == {"customs", "certificates", "insurance"}
    assert client.get(f"/api/carrier/{broker['id']}/services").json()["total"] == 1
    # documents and tasks about the cargo are on its card too, and go with it
    document = create(client, "document", {"title": "Коносамент", "kind": "bill_of_lading",
                                            "about": {"entity": "shipment", "id": shipment["id"]}})
    task = create(client, "task", {"subject": "Застраховать груз", "priority": "high",
                                   "due_at": "2024-04-01T18:00:00+03:00",
                                   "about": {"entity": "shipment_service",
                                             "id": services["insurance"]["id"]}})
    assert task["due_at"] == "2024-04-01T15:00:00Z"
    assert client.get(f"/api/shipment/{shipment['id']}/documents").json()["total"] == 1
    records = [item for item in timeline(client, "shipment", shipment["id"])
               if item["type"] == "record"]
    assert [(r["entity"], r["record"]["id"]) for r in records] == [("document", document["id"])]

    # the client cannot go while it has shipments (restrict) ...
    assert client.delete(f"/api/client/{company['id']}").status_code == 409
    # ... the shipment takes its checklist, its documents and the checklist's tasks with it
    assert client.delete(f"/api/shipment/{shipment['id']}").status_code == 204
    for entity, record in [*(("shipment_service", s) for s in services.values()),
                           ("document", document), ("task", task)]:
        assert client.get(f"/api/{entity}/{record['id']}").status_code == 404, (entity, record)
    assert client.get(f"/api/shipment/{shipment['id']}/services").status_code == 404
    remaining = client.get("/api/shipment_service").json()
    assert [s["id"] for s in remaining["items"]] == [kept["id"]]
    # the carriers that provided services stay
    assert client.get(f"/api/carrier/{broker['id']}").status_code == 200
    assert client.get(f"/api/carrier/{carrier['id']}/services").json()["total"] == 0


# -- printing ---------------------------------------------------------------------------------

def test_printing_order_goes_through_proof_and_press(printing: TestClient) -> None:
    client = printing
    customer = create(client, "customer", {"name": "Кофейня «Зерно»", "kind": "company",
                                           "email": "hello@zerno.cafe"})
    press = create(client, "press", {"name": "Heidelberg SM 52", "kind": "offset",
                                     "colour_units": 4, "max_format": "SRA3"})
    order = create(client, "order", {"number": "ORD-00042", "title": "Меню и листовки",
                                     "product": "flyers", "customer": customer["id"],
                                     "due_on": "2024-06-01", "artwork_url": "https://zerno.cafe/menu.pdf"})
    assert order["stage"] == "received"

    # printing cannot start before the proof is approved; nor can a proof be skipped
    for to in ("printing", "proof_sent", "proof_approved", "ready", "delivered"):
        error = refused_move(client, "order", order["id"], to, "transition_refused")
        assert refused_fields(error) == {"to"}
    moves = walk(client, "order", order, [
        ("prepress", {}),
        ("proof_sent", {"proof_url": "https://print.example/proofs/42-v1.pdf"}),
    ])
    refused_move(client, "order", order["id"], "printing", "transition_refused")
    # the customer wants corrections: back to prepress, and a new proof
    moves += walk(client, "order", read(client, "order", order["id"]), [("prepress", {})])
    patch(client, "order", order["id"], {"proof_url": "https://print.example/proofs/42-v2.pdf"})
    moves += walk(client, "order", read(client, "order", order["id"]), [
        ("proof_sent", {}),
        ("proof_approved", {"proof_approved_by": "Мария, управляющая"}),
    ])
    # printing needs the job's specification and its price
    spec = {"quantity": 5000, "paper": "coated_gloss", "paper_gsm": 170, "format": "A5",
            "colours": "4+4", "price": "18400.00"}
    moves += walk(client, "order", read(client, "order", order["id"]), [("printing", spec)])
    answer = client.patch(f"/api/order/{order['id']}", json={"paper": None})
    assert answer.status_code == 422
    assert refused_fields(answer.json()["error"]) == {"paper"}

    # the run is scheduled on the press
    job = create(client, "job", {"order": order["id"], "press": press["id"], "sheets": 1300,
                                 "scheduled_start": "2024-05-28T09:00:00+03:00"})
    assert job["status"] == "planned"
    assert client.get(f"/api/order/{order['id']}/jobs").json()["total"] == 1
    assert [j["id"] for j in client.get(f"/api/press/{press['id']}/jobs").json()["items"]] == [job["id"]]
    patch(client, "job", job["id"], {"status": "done", "spoilage": 40})

    # once printing, no way back to prepress and no cancelling
    refused_move(client, "order", order["id"], "prepress", "transition_refused")
    refused_move(client, "order", order["id"], "cancelled", "transition_refused")
    moves += walk(client, "order", read(client, "order", order["id"]), [
        ("finishing", {}), ("ready", {}), ("delivered", {"delivered_on": "2024-05-30"})])
    refused_move(client, "order", order["id"], "ready", "transition_refused")  # final
    assert_stage_history(client, "order", order["id"], "received", moves, "default")
    assert [to for _, to in moves] == ["prepress", "proof_sent", "prepress", "proof_sent",
                                      "proof_approved", "printing", "finishing", "ready",
                                      "delivered"]

    # a second order, cancelled before prepress: the reason is required
    dropped = create(client, "order", {"number": "ORD-00043", "title": "Визитки",
                                       "product": "business_cards", "customer": customer["id"]})
    walk(client, "order", dropped, [("cancelled", {"cancel_reason": "Заказчик передумал"})])

    by_stage = columns(board(client, "order"))
    assert list(by_stage) == ORDER
    assert {s: c["count"] for s, c in by_stage.items() if c["count"]} == {
        "delivered": 1, "cancelled": 1}
    assert [r["id"] for r in by_stage["delivered"]["items"]] == [order["id"]]
    assert by_stage["delivered"]["sums"] == {"price": "18400.00", "cost": "0.00"}
    assert [r["id"] for r in by_stage["cancelled"]["items"]] == [dropped["id"]]

    report = funnel(client, "order")
    assert report["records"] == 2
    stages = {s["stage"]: s for s in report["stages"]}
    assert {s: v["reached"] for s, v in stages.items()} == {
        "received": 2, **dict.fromkeys(ORDER[1:8], 1), "cancelled": 1}
    assert stages["prepress"]["conversion"] == 0.5
    assert stages["proof_sent"]["conversion"] == 1.0
    # the proof went back once: prepress and proof_sent were each left twice
    assert stages["prepress"]["time_in_stage"]["exits"] == 2
    assert stages["proof_sent"]["time_in_stage"]["exits"] == 2
    assert stages["delivered"]["current"]["count"] == 1

    comment(client, "order", order["id"], "Тираж забрали, заказчик доволен цветом.")

    # the press stays while it has jobs; the order takes its jobs with it
    assert client.delete(f"/api/press/{press['id']}").status_code == 409
    assert client.delete(f"/api/order/{order['id']}").status_code == 204
    assert client.get(f"/api/job/{job['id']}").status_code == 404
    assert client.delete(f"/api/press/{press['id']}").status_code == 204
