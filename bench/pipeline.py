"""The pipeline reports at scale: funnel and board over 1,000,000 sales and their stage history.

    .venv/bin/python bench/pipeline.py                      # 1,000,000 sales, SQLite + PostgreSQL
    .venv/bin/python bench/pipeline.py --quick              # 50,000 sales
    .venv/bin/python bench/pipeline.py --db sqlite --keep bench/results/pipeline-1m.db

Steps: seed a fresh database created by the engine (`Kartoteka.open("schemas", url).migrate()`)
with clients, sales and each sale's stage history — a create row (NULL → lead), then moves
along lead → proposal → negotiation → contract → invoiced → won, with skips, losses and
deals that stall, timestamps spread over one year and `seconds` = the time spent in the
stage left — by SQLAlchemy Core executemany into `kt.storage["sale"].table` and
`kt.storage.stage_history` (rows per second are reported, generation excluded). Then call
`kt.reports.funnel("sale", ...)` and `kt.reports.board("sale", ...)` in-process (no HTTP)
after warm-ups, unfiltered and filtered, and print p50/p95 milliseconds per call and
database. `--try-index` also times the reports with candidate indexes created by hand in
the benchmark database (not by the engine), then drops them. Results go to
bench/results/pipeline-*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/pipeline.py
    sys.path.insert(0, str(ROOT))


from bench.run import machine_facts  # noqa: E402
from bench.seed import (  # noqa: E402
    CURRENCIES,
    LOST_REASONS,
    NOTES,
    SETUP,
    _client,
    _search,
    insert_rows,
)
from engine import Kartoteka  # noqa: E402
from engine.storage.journal import rebuild_stage_time  # noqa: E402
from engine.storage.progress import REACHED_COLUMN, mask  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGETS_MS = {"funnel": 200.0, "board": 100.0}  # p95 on SQLite, from the issue
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
YEAR_S = 365 * 86400
END = START + dt.timedelta(seconds=YEAR_S)
OWNERS = 25

# the sale pipeline's open stages in order; from each: mean days spent there, the chance
# a deal that leaves it is lost, and the chance it stalls there for good (stays open)
OPEN = ["lead", "proposal", "negotiation", "contract", "invoiced"]
MEAN_DAYS = {"lead": 10, "proposal": 14, "negotiation": 21, "contract": 10, "invoiced": 14}
LOST_CHANCE = {"lead": 0.16, "proposal": 0.15, "negotiation": 0.14, "contract": 0.06,
               "invoiced": 0.03}
STALL_CHANCE = {"lead": 0.20, "proposal": 0.12, "negotiation": 0.10, "contract": 0.07,
                "invoiced": 0.07}
SKIP_CHANCE = 0.12  # an advancing deal jumps over the next stage (twice: 0.12²)
REACHED_CONTRACT = {"contract", "invoiced", "won"}

#: rows per INSERT statement while seeding
BATCH = 100_000


@dataclass(frozen=True)
class Case:
    report: str  # funnel | board
    title: str
    params: tuple[tuple[str, str], ...]


CASES = [
    Case("funnel", "funnel, all", ()),
    Case("funnel", "funnel, client.city=Казань", (("client.city", "Казань"),)),
    Case("board", "board, all", ()),
    Case("board", "board, client.city=Казань", (("client.city", "Казань"),)),
    Case("board", "board, owner=7", (("owner", "7"),)),
]


# -- seeding ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PipelineSeedStats:
    url: str
    clients: int
    sales: int
    history: int
    migrate_s: float
    generate_s: float
    insert_s: float
    rows_per_s: float
    sales_per_s: float
    history_per_s: float
    stages: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def seed_pipeline(url: str, records: int = 1_000_000, clients: int | None = None, *,
                  seed_value: int = 7, batch: int = 20_000,
                  progress: Callable[[str], None] | None = None) -> PipelineSeedStats:
    """Create the schema at `url` (an empty database) and fill it with `records` sales, the
    clients they link to (default one per 50 sales) and the sales' stage history."""
    clients = clients if clients is not None else max(10, records // 50)
    started = time.perf_counter()
    kt = Kartoteka.open(SETUP, url)
    try:
        kt.migrate()
        migrated = time.perf_counter()
        rng = random.Random(seed_value)
        client_table, sale_table = kt.storage["client"], kt.storage["sale"]
        history = kt.storage.stage_history
        pipeline = sale_table.spec.pipeline.for_record(None)  # type: ignore[union-attr]
        assert [s.name for s in pipeline.stages] == [*OPEN, "won", "lost"], pipeline.stages
        probability = {s.name: s.probability for s in pipeline.stages}
        bits = dict(sale_table.stage_bits or {})
        generate_s = insert_s = client_s = sale_s = history_s = 0.0
        history_rows = 0
        stages: dict[str, int] = {}

        mark = time.perf_counter()
        client_rows = [{"id": i, **_client(rng, i, clients, client_table.spec.search)}
                       for i in range(1, clients + 1)]
        generate_s += time.perf_counter() - mark
        with kt.db.write(system="bench") as conn:
            client_s = insert_rows(conn, client_table.table, client_rows, BATCH)
        insert_s += client_s
        del client_rows

        for first in range(1, records + 1, batch):
            mark = time.perf_counter()
            sales: list[dict[str, Any]] = []
            moves: list[dict[str, Any]] = []
            for i in range(first, min(first + batch, records + 1)):
                sale, path = _sale(rng, i, clients, probability, sale_table.spec.search)
                # as the engine keeps it: the stages entered, as bits (engine/progress.py)
                sale[REACHED_COLUMN] = mask(bits, (name for name, _ in path))
                sales.append(sale)
                moves.extend(_history(i, pipeline.name, sale["owner"], path))
                stages[sale["stage"]] = stages.get(sale["stage"], 0) + 1
            generate_s += time.perf_counter() - mark
            with kt.db.write(system="bench") as conn:
                sale_s += insert_rows(conn, sale_table.table, sales, BATCH)
                history_s += insert_rows(conn, history, moves, BATCH)
            history_rows += len(moves)
            if progress is not None:
                done = first + len(sales) - 1
                progress(f"  {done:>9,} sales, {history_rows:>10,} history rows, "
                         f"{(client_s + sale_s + history_s):7.1f} s inserting")
        insert_s = client_s + sale_s + history_s
        # the time-in-stage counters, as `kartoteka migrate` users rebuild them
        mark = time.perf_counter()
        with kt.db.write(system="bench") as conn:
            rebuild_stage_time(conn, kt.storage)
        rebuild_s = time.perf_counter() - mark
        if progress is not None:
            progress(f"  kt_stage_time rebuilt from the history in {rebuild_s:.1f} s")

        with kt.db.engine.connect() as conn:
            if kt.db.dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:  # explicit ids were inserted: move the sequences past them
                conn.execution_options(isolation_level="AUTOCOMMIT")
                for name in ("client", "sale"):
                    conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                         f"(SELECT max(id) FROM {name}))")
                conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        kt.close()
    total_rows = clients + records + history_rows
    return PipelineSeedStats(
        url=url, clients=clients, sales=records, history=history_rows,
        migrate_s=round(migrated - started, 3), generate_s=round(generate_s, 3),
        insert_s=round(insert_s, 3), rows_per_s=round(total_rows / insert_s),
        sales_per_s=round(records / sale_s) if sale_s else 0,
        history_per_s=round(history_rows / history_s) if history_s else 0,
        stages=dict(sorted(stages.items(), key=lambda kv: [*OPEN, "won", "lost"].index(kv[0]))),
    )


def _path(rng: random.Random, created: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """The stages a deal entered, with when: lead at creation, then moves until it closes,
    stalls, or the year ends first."""
    path = [("lead", created)]
    index, at = 0, created
    while True:
        stage = OPEN[index]
        if rng.random() < STALL_CHANCE[stage]:
            return path
        at = at + dt.timedelta(seconds=rng.expovariate(1 / (MEAN_DAYS[stage] * 86400)))
        if at >= END:
            return path
        if rng.random() < LOST_CHANCE[stage]:
            path.append(("lost", at))
            return path
        step = 1
        while step < 3 and rng.random() < SKIP_CHANCE:
            step += 1
        index += step
        if index >= len(OPEN):
            path.append(("won", at))
            return path
        path.append((OPEN[index], at))


def _sale(rng: random.Random, i: int, clients: int, probability: dict[str, int | None],
          search: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, dt.datetime]]]:
    # creation dates spread over the year, a little denser towards its end (growth)
    created = START + dt.timedelta(seconds=YEAR_S * math.sqrt(rng.random()))
    path = _path(rng, created)
    stage, last = path[-1]
    amount = None
    if rng.random() >= 0.08:
        amount = Decimal(max(100, int(rng.lognormvariate(11.5, 1.3) * 100))).scaleb(-2)
    expected = created.date() + dt.timedelta(days=rng.randint(7, 120))
    entered = {name for name, _ in path}
    values: dict[str, Any] = {
        "id": i,
        "created_at": created,
        "updated_at": last + dt.timedelta(seconds=rng.randint(0, 3600)),
        "version": len(path) + rng.randint(0, 2),
        "owner": rng.randint(1, OWNERS),
        "stage": stage,
        "number": f"P-{i:07d}",
        "amount": amount,
        "currency": rng.choice(CURRENCIES),
        "probability": probability.get(stage),
        "expected_on": expected if rng.random() < 0.7 else None,
        "closed_on": last.date() if stage in ("won", "lost") else None,
        "contract_no": f"Д-{created.year}/{i:07d}" if entered & REACHED_CONTRACT else None,
        "lost_reason": rng.choice(LOST_REASONS) if stage == "lost" else None,
        "notes": rng.choice(NOTES) if rng.random() < 0.15 else None,
        "client_id": rng.randint(1, clients),
        "supplier_id": None,
    }
    values["kt_search"] = _search(values, search)
    return values, path


def _history(record_id: int, pipeline: str, by: int, path: list[tuple[str, dt.datetime]]
             ) -> Iterator[dict[str, Any]]:
    """Rows as the engine writes them: the create row (from NULL, no seconds), then one per
    move with the whole seconds spent in the stage left."""
    previous: tuple[str, dt.datetime] | None = None
    for stage, at in path:
        yield {"entity": "sale", "record_id": record_id, "at": at, "by": by,
               "pipeline": pipeline, "from_stage": previous[0] if previous else None,
               "to_stage": stage,
               "seconds": int((at - previous[1]).total_seconds()) if previous else None}
        previous = (stage, at)


# -- measuring ------------------------------------------------------------------------------

def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (p95 of 30 calls is the 29th fastest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def time_case(kt: Kartoteka, case: Case, calls: int, warmup: int) -> dict[str, Any]:
    call = kt.reports.funnel if case.report == "funnel" else kt.reports.board
    answer: dict[str, Any] = {}
    for _ in range(warmup):
        answer = call("sale", list(case.params))
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = call("sale", list(case.params))
        times.append((time.perf_counter() - started) * 1000)
    if case.report == "funnel":
        size = answer["records"]
    else:
        size = sum(column["count"] for column in answer["columns"])
    return {"report": case.report, "title": case.title, "params": list(case.params),
            "calls": calls, "warmup": warmup, "records": size,
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)}


def check_answers(kt: Kartoteka, records: int) -> list[str]:
    """The reports must count every seeded sale, or the timings mean nothing."""
    problems = []
    funnel = kt.reports.funnel("sale", [])
    if funnel["records"] != records:
        problems.append(f"funnel counts {funnel['records']:,} records, not {records:,}")
    if funnel["stages"][0]["reached"] != records:
        problems.append(f"funnel: lead reached by {funnel['stages'][0]['reached']:,}, not {records:,}")
    board = kt.reports.board("sale", [])
    counted = sum(column["count"] for column in board["columns"])
    if counted != records:
        problems.append(f"board columns count {counted:,} records, not {records:,}")
    return problems


# candidate indexes, created by hand with --try-index (the engine does not create them): the
# board's filtered totals (count, sum(amount) per stage) answered from an index alone
CANDIDATES = {
    "ix_cand_sale_client_id_stage_amount":
        "CREATE INDEX ix_cand_sale_client_id_stage_amount ON sale (client_id, stage, amount)",
    "ix_cand_sale_owner_stage_amount":
        "CREATE INDEX ix_cand_sale_owner_stage_amount ON sale (owner, stage, amount)",
}


@contextmanager
def candidate_indexes(kt: Kartoteka) -> Iterator[list[str]]:
    # kt.db.write(): on SQLite the engine issues BEGIN itself, so an AUTOCOMMIT connection
    # would still run the DDL in a transaction that is never committed
    with kt.db.write(system="bench") as conn:
        for sql in CANDIDATES.values():
            conn.exec_driver_sql(sql)
        if kt.db.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE sale")
    try:
        yield list(CANDIDATES)
    finally:
        with kt.db.write(system="bench") as conn:
            for name in CANDIDATES:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def measure(url: str, records: int, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    kt = Kartoteka.open(SETUP, url)
    try:
        problems = check_answers(kt, records)
        for problem in problems:
            print(f"  WARNING: {problem}", flush=True)
        runs = []
        variants: list[tuple[str, Callable[[], Any]]] = [("engine", _nothing)]
        if args.try_index:
            variants.append(("+candidate indexes", lambda: candidate_indexes(kt)))
        for variant, context in variants:
            with context():
                for case in CASES:
                    if args.only and case.report != args.only:
                        continue
                    if variant != "engine" and case.report != "board":
                        continue  # the candidates are for the board's totals
                    result = time_case(kt, case, args.calls, args.warmup)
                    result["variant"] = variant
                    runs.append(result)
                    _print_row(kind, result)
    finally:
        kt.close()
    return {"database": kind, "url": url.split("@")[-1], "problems": problems, "runs": runs}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _print_row(kind: str, row: dict[str, Any]) -> None:
    target = TARGETS_MS[row["report"]]
    flag = "  > target" if kind == "sqlite" and row["p95_ms"] > target else ""
    variant = "" if row["variant"] == "engine" else f" [{row['variant']}]"
    print(f"  {kind:<10} {row['title'] + variant:<50} {row['records']:>9,} "
          f"{row['p50_ms']:>9,.1f} {row['p95_ms']:>9,.1f}{flag}", flush=True)


# -- the run --------------------------------------------------------------------------------

def sqlite_target(args: argparse.Namespace) -> tuple[str, PipelineSeedStats | None]:
    """The SQLite database to measure: the kept one when it holds this seed, else a new one."""
    if args.keep:
        path = Path(args.keep).resolve()
        meta = path.with_name(path.name + ".json")
        wanted = {"records": args.records, "clients": args.clients, "schema": schema_fingerprint()}
        if path.exists() and meta.exists():
            saved = json.loads(meta.read_text())
            if saved.get("seed") == wanted:
                print(f"sqlite: reusing {path} ({args.records:,} sales, seeded "
                      f"{saved['stats']['rows_per_s']:,} rows/s then)", flush=True)
                return f"sqlite:///{path}", PipelineSeedStats(**saved["stats"])
        for suffix in ("", "-wal", "-shm", ".json"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"pipeline-tmp-{os.getpid()}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    stats = run_seed(url, args, "sqlite")
    if args.keep:
        meta = path.with_name(path.name + ".json")
        meta.write_text(json.dumps({"seed": {"records": args.records, "clients": args.clients,
                                             "schema": schema_fingerprint()},
                                    "stats": stats.as_json()}, ensure_ascii=False, indent=2))
    return url, stats


def schema_fingerprint() -> str:
    """What the kept file must match: the engine's columns and indexes of the tables seeded."""
    kt = Kartoteka.open(SETUP, "sqlite:///" + str(RESULTS / "pipeline-fingerprint.db"))
    try:
        storage = kt.storage
        tables = [storage["client"].table, storage["sale"].table, storage.stage_history,
                  storage.stage_time]
        text = repr([(t.name, [(c.name, str(c.type)) for c in t.columns],
                      sorted(sorted((i.name, tuple(c.name for c in i.columns)) for i in t.indexes)))
                     for t in tables])
    finally:
        kt.close()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_seed(url: str, args: argparse.Namespace, kind: str) -> PipelineSeedStats:
    print(f"{kind}: seeding {args.records:,} sales with their stage history ...", flush=True)
    stats = seed_pipeline(url, args.records, args.clients,
                          progress=(lambda line: print(line, flush=True)) if args.verbose else None)
    print(f"  {stats.clients:,} clients + {stats.sales:,} sales + {stats.history:,} history rows "
          f"in {stats.insert_s:.1f} s: {stats.rows_per_s:,} rows/s (sales {stats.sales_per_s:,}/s, "
          f"history {stats.history_per_s:,}/s; generating took {stats.generate_s:.1f} s)",
          flush=True)
    print("  stages now: " + ", ".join(f"{k} {v:,}" for k, v in stats.stages.items()), flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    databases: list[dict[str, Any]] = []
    header = (f"  {'database':<10} {'call':<50} {'records':>9} {'p50 ms':>9} {'p95 ms':>9}")
    for kind in kinds:
        if kind == "sqlite":
            url, stats = sqlite_target(args)
            print(f"sqlite: {args.warmup} warm-up + {args.calls} calls per report\n{header}",
                  flush=True)
            result = measure(url, args.records, args, kind)
            result["seed"] = stats.as_json() if stats else None
            databases.append(result)
            if not args.keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{url[len('sqlite:///'):]}{suffix}").unlink(missing_ok=True)
        else:
            with _postgres() as server:
                if server is None:
                    print("postgresql: no server can be started here (no /usr/lib/postgresql/*/bin); "
                          "skipped", flush=True)
                    continue
                from tests.pg import fresh_database
                url, drop = fresh_database(server)
                try:
                    stats = run_seed(url, args, kind)
                    print(f"postgresql: {args.warmup} warm-up + {args.calls} calls per report\n"
                          f"{header}", flush=True)
                    result = measure(url, args.records, args, kind)
                    result["seed"] = stats.as_json()
                    databases.append(result)
                finally:
                    drop()  # type: ignore[misc]  # tests/pg.py types it loosely
    facts["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {"started": started.isoformat(), "finished": dt.datetime.now(dt.UTC).isoformat(),
              "machine": facts, "records": args.records, "clients": args.clients,
              "calls": args.calls, "warmup": args.warmup, "targets_ms_p95_sqlite": TARGETS_MS,
              "databases": databases}
    print_summary(report)
    name = started.strftime("%Y%m%d-%H%M%S") + f"-pipeline-{args.records}"
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    print(f"\nsaved {path.relative_to(ROOT)}")
    return 1 if any(db["problems"] for db in databases) else 0


@contextmanager
def _postgres() -> Iterator[str | None]:
    from tests.pg import postgres_server
    with postgres_server() as server:
        yield server


def print_summary(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"\nKartoteka pipeline reports — {report['started'][:16]} UTC, {report['records']:,} sales, "
          f"nproc {machine['nproc']}, load {machine['loadavg_before'][0]} → "
          f"{machine['loadavg_after'][0]}; {report['warmup']} warm-up + {report['calls']} calls each")
    for db in report["databases"]:
        seed = db["seed"]
        if seed:
            print(f"{db['database']}: seeding {seed['rows_per_s']:,} rows/s "
                  f"({seed['clients'] + seed['sales'] + seed['history']:,} rows in "
                  f"{seed['insert_s']:.0f} s)")
    print(f"\n  {'database':<10} {'call':<50} {'records':>9} {'p50 ms':>9} {'p95 ms':>9}")
    for db in report["databases"]:
        for row in db["runs"]:
            _print_row(db["database"], row)
    print(f"\ntargets (SQLite p95): funnel < {TARGETS_MS['funnel']:.0f} ms, "
          f"board < {TARGETS_MS['board']:.0f} ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="p50/p95 of the funnel and board reports over a large seeded pipeline.")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default=None,
                        help="default: both when a PostgreSQL server can be started, else sqlite")
    parser.add_argument("--records", type=int, default=None, help="sales (default 1,000,000)")
    parser.add_argument("--clients", type=int, default=None, help="clients (default records ÷ 50)")
    parser.add_argument("--quick", action="store_true", help="50,000 sales")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per report (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up calls (default 3)")
    parser.add_argument("--keep", metavar="PATH", default=None,
                        help="SQLite file to seed once and reuse while it holds the same seed "
                             "(e.g. bench/results/pipeline-1m.db; a .json beside it says what)")
    parser.add_argument("--only", choices=["funnel", "board"], default=None,
                        help="time one report only")
    parser.add_argument("--try-index", action="store_true",
                        help="also time the reports with candidate indexes created by hand")
    parser.add_argument("-v", "--verbose", action="store_true", help="seeding progress")
    args = parser.parse_args(argv)
    if args.records is None:
        args.records = 50_000 if args.quick else 1_000_000
    if args.clients is None:
        args.clients = max(10, args.records // 50)
    if args.records < 1 or args.calls < 1 or args.warmup < 0:
        parser.error("--records and --calls must be positive, --warmup at least 0")
    if args.db is None:
        from tests.pg import ENV, _binaries
        args.db = "both" if (os.environ.get(ENV) or _binaries()) else "sqlite"
    return args


if __name__ == "__main__":
    sys.exit(main())
