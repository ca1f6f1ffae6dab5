"""The benchmark's code does not rot: the seeder fills a small SQLite database through the
engine's tables, the hand-written baseline (bench/handwritten.py) answers its four calls
there with the generated API's JSON, the minimal baseline (bench/minimal.py) answers them
over its copy of the same records, and bench/run.py runs end to end (three real servers, every
operation's wrk script against each, paced and at once: --smoke) when wrk is installed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api import create_app
from bench import run
from bench.handwritten import create_app as create_handwritten
from bench.minimal import build as build_minimal
from bench.minimal import create_app as create_minimal
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


@pytest.fixture
def low(seeded: Path, tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'minimal.db'}"
    assert build_minimal(f"sqlite:///{seeded}", url) == 430
    app = create_minimal(url)
    with TestClient(app) as client:
        yield client
    app.state.db.engine.dispose()


def test_the_minimal_app_answers_the_same_records(low: TestClient, gen: TestClient) -> None:
    one = low.get("/api/client/5")
    assert one.status_code == 200 and one.json()["name"] == gen.get("/api/client/5").json()["name"]
    low_page, gen_page = low.get(LIST).json(), gen.get(LIST).json()
    assert [(i["id"], i["amount"]) for i in low_page["items"]] == \
        [(i["id"], i["amount"]) for i in gen_page["items"]]
    assert low_page["total"] == gen_page["total"]

    created = low.post("/api/sale", json={"number": "Т-1 договор", "client": 3, "amount": "5"})
    assert created.status_code == 201, created.text
    sale = created.json()
    assert (sale["amount"], sale["stage"], sale["version"]) == ("5.00", "lead", 1)
    patched = low.patch(f"/api/sale/{sale['id']}", json={"amount": "0.1"})
    assert patched.status_code == 200 and patched.json()["amount"] == "0.10"
    assert patched.json()["version"] == 2 and patched.headers["etag"] == '"2"'


def test_the_minimal_app_refuses_like_the_others(low: TestClient) -> None:
    assert low.get("/api/client/999999").status_code == 404
    assert low.patch("/api/sale/999999", json={"amount": "1"}).status_code == 404
    assert low.post("/api/sale", json={"number": "T-2", "client": 999999}).status_code == 422
    assert low.post("/api/sale", json={"number": "S-0000001", "client": 1}).status_code == 409
    assert low.post("/api/sale", json={"number": "T-3", "client": 1, "amount": "-1"}).status_code == 422
    assert low.get("/api/sale?sort=notes").status_code == 400


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_run_measures_the_three_apps_end_to_end(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = run.main(["--clients", "40", "--sales", "400", "--seconds", "1", "--smoke",
                     "--connections", "1", "--threads", "1", "--results", str(tmp_path)])
    report = json.loads((tmp_path / "latest.json").read_text())
    assert code == 0, report["warnings"]
    assert [row["operation"] for row in report["summary"]] == [op.key for op in run.OPERATIONS]
    for row in report["summary"]:
        assert row["gen_rps"] > 0 and row["hand_rps"] > 0 and row["min_rps"] > 0
        assert row["ratio_hand"] > 0 and row["ratio_min"] > 0 and row["non_2xx"] == 0
    assert report["smoke"] and report["settings"]["warmup_seconds"] == 0
    # every server ran on the fast event loop and HTTP parser (dependencies of the project)
    served = report["rounds"][0]["served"]
    assert served == {app: {"loop": "uvloop", "http": "httptools"} for app in run.APPS}
    printed = capsys.readouterr().out
    assert "gen÷min" in printed and "these figures measure nothing" in printed
