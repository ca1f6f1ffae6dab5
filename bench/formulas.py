"""Formula fields at scale: recompute one formula over 1,000,000 rows on SQLite.

    .venv/bin/python bench/formulas.py                 # 1,000,000 sales
    .venv/bin/python bench/formulas.py --rows 50000

A setup of clients (a discount) and sales (an amount, a link to a client, and
`net: {type: money, formula: "amount * (1 - coalesce(client.discount, 0) / 100)"}`), a
fresh SQLite database made by the engine and filled by SQLAlchemy Core executemany (not
timed), then `EntityFormulas.recompute_all` — what a migration adding the formula runs:
batches of 5,000 rows read with their client's discount (one joined SELECT), evaluated
in Python with Decimal, written back with one executemany UPDATE — in one transaction,
timed by the clock and by the process's CPU time (on a busy machine the wall clock
measures the neighbours). The target (issue 10): at least 100,000 rows/s. Figures go to stdout and
bench/results/formulas-*.json.
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
if str(ROOT) not in sys.path:  # run as a script: bench/formulas.py
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine import Kartoteka  # noqa: E402
from engine.storage.formulas import EntityFormulas  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLIENT = """
    entity: client
    fields:
      name: {type: string}
      discount: {type: decimal, places: 2}
"""
SALE = """
    entity: sale
    fields:
      number: {type: string}
      amount: {type: money}
      net: {type: money, formula: "amount * (1 - coalesce(client.discount, 0) / 100)"}
    links:
      client: {to: client}
"""
TARGET = 100_000


def write_setup(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "client.yaml").write_text(textwrap.dedent(CLIENT).lstrip(), encoding="utf-8")
    (folder / "sale.yaml").write_text(textwrap.dedent(SALE).lstrip(), encoding="utf-8")
    return folder


def seed(kt: Kartoteka, rows: int, clients: int = 1000, batch: int = 20_000) -> None:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    common = {"created_at": now, "updated_at": now, "version": 1}
    with kt.db.write(system="bench: seed") as conn:
        conn.execute(sa.insert(kt.storage["client"].table), [
            {**common, "name": f"Клиент {i}", "discount": None if i % 10 == 0 else
             Decimal(i % 40) / 2} for i in range(clients)])
        for start in range(0, rows, batch):
            conn.execute(sa.insert(kt.storage["sale"].table), [
                {**common, "number": f"S-{i}", "amount": Decimal(i % 100_000) / 100,
                 "client_id": None if i % 17 == 0 else 1 + i % clients}
                for i in range(start, min(rows, start + batch))])


def measure(url: str, rows: int, folder: Path) -> dict[str, Any]:
    kt = Kartoteka.open(write_setup(folder), url)
    try:
        kt.migrate()
        seed(kt, rows)
        formulas = EntityFormulas(kt.setup, kt.storage, kt.setup.entity("sale"))
        started, cpu = time.perf_counter(), time.process_time()
        with kt.db.write(system="bench: recompute") as conn:
            done = formulas.recompute_all(conn)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        with kt.db.read(system="bench: check") as conn:
            empty = conn.execute(sa.text(
                "SELECT count(*) FROM sale WHERE amount IS NOT NULL AND net IS NULL")).scalar()
        assert done == rows and empty == 0, (done, empty)
        return {"database": kt.db.dialect, "rows": rows, "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds), "cpu_seconds": round(cpu, 2),
                "rows_per_cpu_s": round(rows / max(cpu, 1e-9))}
    finally:
        kt.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kartoteka-formulas-") as tmp:
        result = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.rows, Path(tmp) / "setup")
    verdict = "meets" if result["rows_per_s"] >= TARGET else "misses"
    print(f"sqlite {result['rows']:>9,} rows: net recomputed in {result['seconds']} s, "
          f"{result['rows_per_s']:,} rows/s ({verdict} the target of {TARGET:,}/s); "
          f"{result['cpu_seconds']} s of CPU, {result['rows_per_cpu_s']:,} rows per CPU "
          "second (the figure to read on a shared machine)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"formulas-{stamp}.json").write_text(json.dumps(
        {"machine": platform.platform(), "result": result}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
