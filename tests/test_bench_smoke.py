"""The benchmark's code does not rot: the seeder fills a small SQLite database through the
engine's tables, and the hand-written baseline (bench/handwritten.py) answers its four
calls there with the generated API's JSON. No wrk, no timing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api import create_app
from bench.handwritten import create_app as create_handwritten
from bench.seed import seed
from engine import Kartoteka

LIST = "/api/sale?stage=negotiation&sort=-amount&limit=50"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "seed.db"
    stats = seed(f"sqlite:///{path}", clients=30, sales=400)
    assert stats.clients == 30 and stats.sales == 400 and stats.rows_per_s > 0
    assert sum(stats.stages.values()) == 400 and stats.stages["negotiation"] > 0
    return path


def _copy(seeded: Path, tmp_path: Path, name: str) -> str:
    target = tmp_path / f"{name}.db"
    shutil.copyfile(seeded, target)
    return f"sqlite:///{target}"


@pytest.fixture
def hand(seeded: Path, tmp_path: Path) -> Iterator[TestClient]:
    app = create_handwritten(_copy(seeded, tmp_path, "hand"))
    with TestClient(app) as client:
        yield client
    app.state.db.engine.dispose()


@pytest.fixture
def gen(seeded: Path, tmp_path: Path) -> Iterator[TestClient]:
    kt = Kartoteka.open(Path(__file__).resolve().parent.parent / "schemas",
                        _copy(seeded, tmp_path, "gen"))
    with TestClient(create_app(kt), base_url="http://127.0.0.1") as client:
        yield client
    kt.close()


def test_the_four_calls_answer(hand: TestClient) -> None:
    one = hand.get("/api/client/7")
    assert one.status_code == 200 and one.json()["id"] == 7
    assert one.headers["etag"] == f'"{one.json()["version"]}"'

    page = hand.get(LIST)
    assert page.status_code == 200
    body = page.json()
    amounts = [item["amount"] for item in body["items"]]
    assert body["total"] >= len(amounts) > 0
    assert {item["stage"] for item in body["items"]} == {"negotiation"}
    present = [a for a in amounts if a is not None]
    assert present == sorted(present, key=float, reverse=True)
    assert all(len(a.split(".")[1]) == 2 for a in present)

    created = hand.post("/api/sale", json={"number": "T-1", "client": 3, "amount": "123.4"})
    assert created.status_code == 201, created.text
    sale = created.json()
    assert sale["amount"] == "123.40" and sale["stage"] == "lead" and sale["client"] == 3
    assert created.headers["location"] == f"/api/sale/{sale['id']}"

    patched = hand.patch(f"/api/sale/{sale['id']}", json={"amount": "99.5"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["amount"] == "99.50" and patched.json()["version"] == 2


def test_refusals(hand: TestClient) -> None:
    assert hand.get("/api/client/999999").status_code == 404
    assert hand.patch("/api/sale/999999", json={"amount": "1"}).status_code == 404
    assert hand.post("/api/sale", json={"number": "T-2", "client": 999999}).status_code == 422
    assert hand.post("/api/sale", json={"number": "S-0000001", "client": 1}).status_code == 409
    assert hand.post("/api/sale", json={"number": "T-3", "client": 1, "amount": "1.234"}).status_code == 422


def test_same_json_as_the_generated_api(hand: TestClient, gen: TestClient) -> None:
    # the comparison is only fair while both apps return the same records
    assert hand.get("/api/client/5").json() == gen.get("/api/client/5").json()
    hand_page, gen_page = hand.get(LIST).json(), gen.get(LIST).json()
    assert hand_page["items"] == gen_page["items"]
    assert hand_page["total"] == gen_page["total"]
    body = {"number": "T-9", "client": 2, "amount": "10"}
    created = [_stable(c.post("/api/sale", json=body).json()) for c in (hand, gen)]
    assert created[0] == created[1]
    patched = [_stable(c.patch("/api/sale/3", json={"amount": "7.5"}).json()) for c in (hand, gen)]
    assert patched[0] == patched[1]


def _stable(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k not in ("created_at", "updated_at")}
