"""bench/pipeline.py does not rot: its seeder fills a small SQLite database with sales and
their stage history through the engine's tables, and the engine's funnel and board count
every seeded record. No timing."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from bench.pipeline import CASES, check_answers, seed_pipeline, time_case
from engine import Kartoteka

SETUP = Path(__file__).resolve().parent.parent / "schemas"


def test_seeded_pipeline_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pipeline.db'}"
    stats = seed_pipeline(url, records=200, clients=20, batch=64)
    assert stats.sales == 200 and stats.clients == 20 and stats.rows_per_s > 0
    assert sum(stats.stages.values()) == 200
    assert stats.stages["won"] and stats.stages["lost"] and stats.stages["lead"]

    kt = Kartoteka.open(SETUP, url)
    try:
        with kt.db.read(system="test") as conn:
            history = kt.storage.stage_history
            rows = conn.execute(sa.select(history.c.record_id, history.c.from_stage,
                                          history.c.to_stage, history.c.seconds)
                                .order_by(history.c.record_id, history.c.at)).all()
            current = dict(conn.execute(
                sa.select(kt.storage["sale"].table.c.id, kt.storage["sale"].table.c.stage)).all())
        assert len(rows) == stats.history
        creates = [r for r in rows if r.from_stage is None]
        assert len(creates) == 200 and {r.to_stage for r in creates} == {"lead"}
        assert all(r.seconds is None for r in creates)
        assert all(r.seconds is not None and r.seconds >= 0 for r in rows if r.from_stage)
        last = {r.record_id: r.to_stage for r in rows}
        assert last == current  # the history ends where each sale is now

        assert check_answers(kt, 200) == []
        funnel = kt.reports.funnel("sale", [])
        stages = {s["stage"]: s for s in funnel["stages"]}
        assert sum(s["current"]["count"] for s in stages.values()) == 200
        assert stages["won"]["reached"] == stats.stages["won"]  # won and lost are final
        assert stages["lost"]["reached"] == stats.stages["lost"]
        left_lead = sum(1 for r in rows if r.from_stage == "lead")
        assert stages["lead"]["time_in_stage"]["exits"] == left_lead
        board = kt.reports.board("sale", [])
        assert {c["stage"]: c["count"] for c in board["columns"] if c["count"]} == stats.stages

        for case in CASES:  # the timed calls answer, filtered ones with fewer records
            result = time_case(kt, case, calls=1, warmup=0)
            assert 0 <= result["records"] <= 200
            assert result["p95_ms"] >= result["p50_ms"] >= 0
    finally:
        kt.close()
