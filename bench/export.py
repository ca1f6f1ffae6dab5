"""Export in flat memory: rows per second and peak RSS of `kartoteka export` for 100,000 and
1,000,000 sales, as CSV and as XLSX, on SQLite (and PostgreSQL with --pg-url).

    .venv/bin/python bench/export.py                       # 100k and 1M on SQLite
    .venv/bin/python bench/export.py --rows 100000         # one size
    .venv/bin/python bench/export.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

The default setup's `sale` (16 columns, two many-to-many links) is seeded through the
engine's own tables in batches (bench/seed.py's rows, generated and inserted 20,000 at a
time, so the seeding itself stays flat too). Each export runs in a fresh child process
(`--child`): the engine's export (engine/records/export.py) as the system, all sales
sorted by `-amount`, written to a file. The child reports its own peak RSS
(`ru_maxrss`): when it is the same for 100,000 and 1,000,000 rows, memory does not grow
with the rows. Not a timed test: the figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import SETUP, _sale, _stages, insert_rows  # noqa: E402
from engine import Kartoteka  # noqa: E402
from engine.records.export import Exporter  # noqa: E402

BATCH = 20_000
CLIENTS = 1_000


def seed(url: str, rows: int) -> float:
    """`rows` sales (and CLIENTS clients) in batches; the seconds it took."""
    started = time.perf_counter()
    kt = Kartoteka.open(SETUP, url)
    try:
        kt.migrate()
        rng = random.Random(7)
        clients = kt.storage["client"].table
        sales = kt.storage["sale"]
        probabilities = {s.name: s.probability for s in _stages(sales.spec)}
        with kt.db.write(system="bench: seeding") as conn:
            conn.execute(sa.insert(clients), [
                {"name": f"Клиент {i}", "kind": "company", "version": 1,
                 "created_at": kt.clock(), "updated_at": kt.clock()}
                for i in range(1, CLIENTS + 1)])
            for start in range(1, rows + 1, BATCH):
                batch = [_sale(rng, i, CLIENTS, rows, probabilities, sales.spec.search)
                         for i in range(start, min(start + BATCH, rows + 1))]
                insert_rows(conn, sales.table, batch, BATCH)
    finally:
        kt.close()
    return time.perf_counter() - started


def child(url: str, fmt: str, out: Path) -> dict[str, Any]:
    kt = Kartoteka.open(SETUP, url)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        export = Exporter(kt.records, kt.clock).prepare(
            "sale", [("format", fmt), ("sort", "-amount"), ("values", "locale")])
        with out.open("wb") as file:
            count = export.write(file)
        seconds = time.perf_counter() - started
    finally:
        kt.close()
    return {"rows": count, "seconds": round(seconds, 2), "rows_per_s": round(count / seconds),
            "bytes": out.stat().st_size, "rss_before_mb": round(before / 1024, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_mb": round(_rss_kb() / 1024, 1)}


def _rss_kb() -> int:
    """The process's resident memory now (Linux), 0 where /proc is not there."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fresh_url(base: str | None, folder: Path, rows: int) -> str:
    if base is None:
        return f"sqlite:///{folder / f'export-{rows}.db'}"
    name = f"kt_bench_export_{rows}"
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return str(sa.make_url(base).set(database=name).render_as_string(hide_password=False))


def drop(base: str, url: str) -> None:
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}"')
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append",
                        help="sales to export (repeatable; default 100000 and 1000000)")
    parser.add_argument("--pg-url", default=None, help="run on this PostgreSQL server instead")
    parser.add_argument("--formats", default="csv,xlsx")
    parser.add_argument("--child", nargs=3, metavar=("URL", "FORMAT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, fmt, out = args.child
        print(json.dumps(child(url, fmt, Path(out))))
        return
    with tempfile.TemporaryDirectory() as folder:
        for rows in args.rows or [100_000, 1_000_000]:
            url = fresh_url(args.pg_url, Path(folder), rows)
            seeded = seed(url, rows)
            print(f"{rows:,} sales seeded in {seeded:.1f} s ({sa.make_url(url).get_backend_name()})",
                  flush=True)
            for fmt in args.formats.split(","):
                out = Path(folder) / f"sales.{fmt}"
                done = subprocess.run([sys.executable, __file__, "--child", url, fmt, str(out)],
                                      check=True, capture_output=True, text=True)
                result = json.loads(done.stdout)
                print(f"  {fmt:4}  {result['rows']:>9,} rows  {result['seconds']:>7.1f} s  "
                      f"{result['rows_per_s']:>7,} rows/s  {result['bytes'] / 2**20:>7.1f} MB  "
                      f"peak RSS {result['peak_rss_mb']} MB (at the start, the engine loaded: "
                      f"{result['rss_before_mb']} MB; at the end {result['rss_after_mb']} MB)",
                      flush=True)
                out.unlink()
            if args.pg_url:
                drop(args.pg_url, url)


if __name__ == "__main__":
    main()
