"""Roll-ups on the write path: what three roll-ups on a parent cost a child's create and patch.

    .venv/bin/python bench/rollups.py                          # SQLite, 3,000 writes each
    .venv/bin/python bench/rollups.py --writes 1000 --url postgresql+psycopg://.../kt_bench
    # PostgreSQL: the database of --url and kt_bench_rolled beside it (made when missing)

Two setups over the same tables: orders and their lines (a quantity, a price, an amount,
a link to the order), once plain and once with three roll-ups on the order (`total`: the
sum of the lines' amounts, `lines`: their count, `largest`: the largest quantity). Each
database is made by the engine and seeded with 500 orders of 40 lines (SQLAlchemy Core,
not timed); then, through the engine's Records API (no HTTP, so the figure is the
roll-ups' own cost), a run of child creates — each adding a line to an order — and a run
of child patches — each changing a line's amount — one transaction per write as the API
does them, with the acting user absent (open mode). Both setups are open at once and
their writes run in alternating batches (`--rounds`, default 10; who goes first alternates),
so that a shared machine's load, which changes by the minute, weighs on both alike. Timed by
the clock and by the process's CPU time. The target (issue 10): each write with roll-ups at most 1.3× the same
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


def _open(url: str, folder: Path, rolled: bool) -> Kartoteka:
    kt = Kartoteka.open(write_setup(folder, rolled), url)
    kt.migrate()
    seed(kt, rolled)
    return kt


def _batch(kt: Kartoteka, writes: int, offset: int, rolled: bool,
           totals: dict[str, list[float]]) -> dict[str, Any]:
    """`writes` line creates, then a patch of each line made; their clock and CPU seconds
    added to `totals` ({kind: [writes, seconds, cpu]})."""
    records = kt.records
    created: list[int] = []
    started, cpu = time.perf_counter(), time.process_time()
    for j in range(writes):
        i = offset + j
        created.append(records.create("line", {
            "quantity": 1 + i % 7, "amount": f"{i % 100}.25", "order": 1 + i % ORDERS})["id"])
    _add(totals, "create", writes, started, cpu)
    started, cpu = time.perf_counter(), time.process_time()
    for j, line in enumerate(created):
        records.update("line", line, {"amount": f"{(offset + j) % 50}.75"})
    _add(totals, "patch", writes, started, cpu)
    if rolled:  # the roll-ups were kept, not skipped
        order = records.get("order", 1)
        made = offset + writes
        assert order["lines_count"] == LINES_EACH + len(range(0, made, ORDERS)), order
    return {kind: _timing(*totals[kind]) for kind in totals}


def _add(totals: dict[str, list[float]], kind: str, writes: int, started: float,
         cpu: float) -> None:
    total = totals.setdefault(kind, [0, 0.0, 0.0])
    total[0] += writes
    total[1] += time.perf_counter() - started
    total[2] += time.process_time() - cpu


def _timing(writes: float, seconds: float, cpu: float) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "writes_per_s": round(writes / seconds),
            "cpu_ms_per_write": round(1000 * cpu / writes, 3)}


def compare(url: str | None, writes: int, tmp: Path, rounds: int = 10) -> dict[str, Any]:
    """Both setups, each on its own fresh database (SQLite files in `tmp`; on PostgreSQL
    the database of `url` and a second one beside it, `<name>_rolled`, both emptied), both
    open at once: their writes run in `rounds` alternating batches (who goes first
    alternates too), so that the machine's load, which changes by the minute on a shared
    machine, weighs on both alike."""
    engines = {}
    for rolled in (False, True):
        name = "rollups" if rolled else "plain"
        target = f"sqlite:///{tmp / f'{name}.db'}"
        if url is not None:
            target = _beside(url, "_rolled") if rolled else url
            _reset(target)
        engines[name] = _open(target, tmp / name, rolled)
    totals: dict[str, dict[str, list[float]]] = {name: {} for name in engines}
    runs: dict[str, Any] = {}
    try:
        size = max(1, writes // rounds)
        for r, offset in enumerate(range(0, writes, size)):
            order = list(engines) if r % 2 == 0 else list(engines)[::-1]
            for name in order:
                runs[name] = _batch(engines[name], min(size, writes - offset), offset,
                                    name == "rollups", totals[name])
    finally:
        for kt in engines.values():
            kt.close()
    ratios = {kind: round(runs["rollups"][kind]["cpu_ms_per_write"]
                          / runs["plain"][kind]["cpu_ms_per_write"], 2)
              for kind in ("create", "patch")}
    return {"database": "postgresql" if url else "sqlite", "writes": writes, "rounds": rounds,
            "runs": runs, "cpu_ratio": ratios}


def _beside(url: str, suffix: str) -> str:
    """A database next to the one of `url` (created when missing), for the second setup."""
    made = sa.engine.make_url(url)
    name = f"{made.database}{suffix}"
    engine = sa.create_engine(made.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                            {"n": name}).first():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return made.set(database=name).render_as_string(hide_password=False)


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
    parser.add_argument("--rounds", type=int, default=10,
                        help="alternating batches of the two setups (default 10)")
    parser.add_argument("--url", help="a PostgreSQL database to use (its public schema is "
                                      "emptied); SQLite files in a temporary folder if absent")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kartoteka-rollups-") as tmp:
        result = compare(args.url, args.writes, Path(tmp), args.rounds)
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
