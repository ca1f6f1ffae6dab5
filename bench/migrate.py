"""Migrations at scale: plan and apply "add a field and an index" on a 1,000,000-row table.

    .venv/bin/python bench/migrate.py                  # 1,000,000 rows, SQLite + PostgreSQL
    .venv/bin/python bench/migrate.py --rows 50000 --db sqlite

Steps, per database: create a fresh database from a one-entity setup (`sale`: number,
amount, notes, a client name) with the engine, fill it by SQLAlchemy Core executemany
(not timed as migration), then change the setup to add `discount: {type: decimal,
index: true}` and time `engine.storage.migrations.plan` (the counts it makes) and
`engine.storage.migrations.apply` (one transaction: ALTER TABLE ADD COLUMN, CREATE INDEX, the
setup history row). The plan is timed three times, the apply once (it changes the
database). Figures go to stdout and bench/results/migrate-*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/migrate.py
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine import Kartoteka  # noqa: E402
from engine.storage.migrations import apply, plan  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SALE = """
    entity: sale
    fields:
      number: {type: string, required: true}
      amount: {type: money}
      client_name: {type: string}
      notes: {type: text}
"""
ADDED = "  discount: {type: decimal, places: 2, index: true}\n"


def write_setup(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sale.yaml").write_text(textwrap.dedent(SALE).lstrip() + extra, encoding="utf-8")
    return folder


def seed(url: str, folder: Path, rows: int, batch: int = 20_000) -> float:
    kt = Kartoteka.open(write_setup(folder), url)
    try:
        kt.migrate()
        table = kt.storage["sale"].table
        now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        started = time.perf_counter()
        for start in range(0, rows, batch):
            chunk = [{"created_at": now, "updated_at": now, "version": 1, "number": f"S-{i}",
                      "amount": Decimal(i % 100_000) / 100, "client_name": f"Client {i % 5000}",
                      "notes": None if i % 3 else f"note {i}"}
                     for i in range(start, min(rows, start + batch))]
            with kt.db.write(system="bench") as conn:
                conn.execute(sa.insert(table), chunk)
        return time.perf_counter() - started
    finally:
        kt.close()


def measure(url: str, rows: int, workdir: Path) -> dict[str, Any]:
    folder = workdir / "setup"
    seed_s = seed(url, folder, rows)
    write_setup(folder, ADDED)
    kt = Kartoteka.open(folder, url)
    try:
        plan_s = []
        planned = None
        for _ in range(3):
            started = time.perf_counter()
            planned = plan(kt.storage, kt.db)
            plan_s.append(time.perf_counter() - started)
        assert planned is not None
        started = time.perf_counter()
        applied = apply(kt.storage, kt.db)
        apply_s = time.perf_counter() - started
        assert plan(kt.storage, kt.db).up_to_date
        return {"database": kt.db.dialect, "rows": rows, "seed_s": round(seed_s, 1),
                "plan": [str(step) for step in planned.steps],
                "plan_s_median": round(statistics.median(plan_s), 3),
                "apply_s": round(apply_s, 3), "applied_steps": len(applied.plan.steps)}
    finally:
        kt.close()


@contextmanager
def _postgres() -> Iterator[str | None]:
    from tests.pg import fresh_database, postgres_server
    with postgres_server() as server:
        if server is None:
            yield None
            return
        url, drop = fresh_database(server)
        try:
            yield url
        finally:
            drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="kartoteka-migrate-") as tmp:
        if args.db in ("sqlite", "both"):
            work = Path(tmp) / "sqlite"
            results.append(measure(f"sqlite:///{work / 'bench.db'}", args.rows, work))
        if args.db in ("postgresql", "both"):
            with _postgres() as url:
                if url is None:
                    print("postgresql: no server can be started here; skipped")
                else:
                    results.append(measure(url, args.rows, Path(tmp) / "postgresql"))
    for result in results:
        print(f"{result['database']:<10} {result['rows']:>9,} rows: plan "
              f"{result['plan_s_median'] * 1000:,.0f} ms (median of 3), apply "
              f"{result['apply_s'] * 1000:,.0f} ms; seeded in {result['seed_s']} s")
        for line in result["plan"]:
            print(f"    + {line}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"migrate-{stamp}.json").write_text(json.dumps(
        {"machine": platform.platform(), "results": results}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
