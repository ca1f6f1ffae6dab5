"""bench/access.py does not rot: a --smoke run (small seed, paced wrk calls at once) seeds, hands
the records to owners, starts the three servers, checks that the manager, the director
and the open API all answer the list and a get with 200 before loading, and writes a
report of the expected shape. Skipped without wrk; the figures themselves are not judged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import access

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def test_quick_run_reports_three_callers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(access, "RESULTS", tmp_path)
    code = access.main(["--quick", "--clients", "200", "--sales", "2000", "--seconds", "1",
                        "--smoke", "--connections", "1", "--threads", "1"])
    saved = list(tmp_path.glob("*-access-quick-sqlite.json"))
    assert len(saved) == 1
    report = json.loads(saved[0].read_text())
    assert report["warnings"] == [] and code == 0 and report["smoke"]

    # every caller answered before loading: list and own get 200; someone else's client
    # is 404 for the manager only; no token on a database with users is 401
    statuses = report["checks"]["statuses"]
    for caller in ("off", "manager", "director"):
        assert statuses[caller]["list"] == 200 and statuses[caller]["get"] == 200
    assert statuses["manager"]["get_other"] == 404
    assert statuses["director"]["get_other"] == statuses["off"]["get_other"] == 200
    assert statuses["no token, database with users"]["list"] == 401
    assert report["checks"]["problems"] == []
    totals = report["expected_totals"]
    assert 0 < totals["own"] < totals["all"]

    rows = {row["operation"]: row for row in report["summary"]}
    assert set(rows) == {"list_sales", "get_client", "get_other"}
    for key in ("list_sales", "get_client"):
        row = rows[key]
        for caller in ("off", "manager", "director"):
            assert row[caller]["rps"] > 0 and row[caller]["p99_ms"] >= row[caller]["p50_ms"] > 0
            assert row[caller]["non_2xx"] == 0 and row[caller]["socket_errors"] == 0
        for ratio in ("manager_vs_off", "director_vs_off", "manager_vs_director"):
            assert row[ratio] > 0
    assert set(rows["get_other"]) >= {"manager"} and "off" not in rows["get_other"]
    assert rows["get_other"]["manager"]["non_2xx"] > 0  # all 404, as it should be
    target = report["target"]
    assert target["ratio"] == access.TARGET
    assert target["manager_list_vs_off"] == rows["list_sales"]["manager_vs_off"]
    assert isinstance(target["met"], bool)
    assert report["plans"]["before"] and all(p["plan"] for p in report["plans"]["before"])
