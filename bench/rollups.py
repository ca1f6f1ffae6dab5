"""Roll-ups on the write path: what three roll-ups on a parent cost a child's create and patch.

    .venv/bin/python bench/rollups.py                          # SQLite, 3,000 writes each
    .venv/bin/python bench/rollups.py --writes 1000 --url postgresql+psycopg://...

Two setups over the same tables: orders and their lines (a quantity, a price, an amount,
a link to the order), once plain and once with three roll-ups on the order (`total`: the
sum of the lines' amounts, `lines`: their count, `largest`: the largest quantity). Each
database is made by the engine and seeded with 500 orders of 40 lines (SQLAlchemy Core,
not timed); then, through the engine's Records API (no HTTP, so the figure is the
roll-ups' own cost), a run of child creates — each adding a line to an order — and a run
of child patches — each changing a line's amount — one transaction per write as the API
does them, with the acting user absent (open mode). Timed by the clock and by the
process's CPU time. The target (issue 10): each write with roll-ups at most 1.3× the same
write without. Figures go to stdout and bench/results/rollups-*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/rollups.py
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine import Kartoteka  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ORDER = "entity: order\nfields:\n  number: {type: string}\n"
ROLLUPS = """\
  total: {type: money, rollup: {sum: lines.amount}}
  lines_count: {type: integer, rollup: {count: lines}}
  largest: {type: integer, rollup: {max: lines.quantity}}
"""
LINE = """
    entity: line
    fields:
      quantity: {type: integer}
      amount: {type: money}
    links:
      order: {to: order, reverse: lines}
"""
TARGET = 1.3
ORDERS, LINES_EACH = 500, 40


def write_setup(folder: Path, rolled: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "order.yaml").write_text(ORDER + (ROLLUPS if rolled else ""), encoding="utf-8")
    (folder / "line.yaml").write_text(textwrap.dedent(LINE).lstrip(), encoding="utf-8")
    return folder


def seed(kt: Kartoteka, rolled: bool) -> None:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    common = {"created_at": now, "updated_at": now, "version": 1}
    with kt.db.write(system="bench: seed") as conn:
        orders = [{**common, "number": f"N-{i}"} for i in range(ORDERS)]
        if rolled:  # the values the roll-ups would hold: quantity 1..5, amount 10.00 each
            for order in orders:
                order.update(total=Decimal(10 * LINES_EACH), lines_count=LINES_EACH, largest=5)
        conn.execute(sa.insert(kt.storage["order"].table), orders)
        conn.execute(sa.insert(kt.storage["line"].table), [
            {**common, "quantity": 1 + i % 5, "amount": Decimal(10), "order_id": 1 + i % ORDERS}
            for i in range(ORDERS * LINES_EACH)])


def measure(url: str, writes: int, folder: Path, rolled: bool) -> dict[str, Any]:
    kt = Kartoteka.open(write_setup(folder, rolled), url)
    try:
        kt.migrate()
        seed(kt, rolled)
        records = kt.records
        result: dict[str, Any] = {}
        created: list[int] = []
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(writes):
            created.append(records.create("line", {
                "quantity": 1 + i % 7, "amount": f"{i % 100}.25", "order": 1 + i % ORDERS})["id"])
        result["create"] = _timing(writes, started, cpu)
        started, cpu = time.perf_counter(), time.process_time()
        for i, line in enumerate(created):
            records.update("line", line, {"amount": f"{i % 50}.75"})
        result["patch"] = _timing(writes, started, cpu)
        if rolled:  # the roll-ups were kept, not skipped
            order = records.get("order", 1)
            assert order["lines_count"] == LINES_EACH + len(range(0, writes, ORDERS)), order
        return result
    finally:
        kt.close()


def _timing(writes: int, started: float, cpu: float) -> dict[str, float]:
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": round(seconds, 3), "writes_per_s": round(writes / seconds),
            "cpu_ms_per_write": round(1000 * cpu / writes, 3)}


def compare(url: str | None, writes: int, tmp: Path) -> dict[str, Any]:
    """Both setups on fresh databases (SQLite files in `tmp`, or fresh PostgreSQL
    databases are not made here: give an empty database URL for each run)."""
    runs = {}
    for rolled in (False, True):
        name = "rollups" if rolled else "plain"
        target = url or f"sqlite:///{tmp / f'{name}.db'}"
        if url is not None:
            _reset(url)
        runs[name] = measure(target, writes, tmp / name, rolled)
    ratios = {kind: round(runs["rollups"][kind]["cpu_ms_per_write"]
                          / runs["plain"][kind]["cpu_ms_per_write"], 2)
              for kind in ("create", "patch")}
    return {"database": "postgresql" if url else "sqlite", "writes": writes, "runs": runs,
            "cpu_ratio": ratios}


def _reset(url: str) -> None:
    """An empty public schema in the database of `url` (PostgreSQL runs)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--url", help="a PostgreSQL database to use (its public schema is "
                                      "emptied); SQLite files in a temporary folder if absent")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kartoteka-rollups-") as tmp:
        result = compare(args.url, args.writes, Path(tmp))
    for kind in ("create", "patch"):
        plain, rolled = result["runs"]["plain"][kind], result["runs"]["rollups"][kind]
        ratio = result["cpu_ratio"][kind]
        verdict = "meets" if ratio <= TARGET else "misses"
        print(f"{result['database']} {kind:6} of a line: plain {plain['cpu_ms_per_write']} ms "
              f"CPU ({plain['writes_per_s']:,}/s), with 3 roll-ups {rolled['cpu_ms_per_write']} ms "
              f"({rolled['writes_per_s']:,}/s): {ratio}× ({verdict} the target of ≤ {TARGET}×)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"rollups-{stamp}.json").write_text(json.dumps(
        {"machine": platform.platform(), "result": result}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
