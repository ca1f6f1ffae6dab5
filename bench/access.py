"""What access control costs a read: list and get for a manager, a director and with auth off.

    .venv/bin/python bench/access.py                  # full: 10,000 clients, 200,000 sales, 8 s per run
    .venv/bin/python bench/access.py --quick          # short: small seed, 2 s per run
    .venv/bin/python bench/access.py --repeat 3 --try-index
    .venv/bin/python bench/access.py --postgres       # a throwaway PostgreSQL server (tests/pg.py)
    .venv/bin/python bench/access.py --db-url postgresql+psycopg://user@127.0.0.1:5432/postgres

Issue #4's target: **a manager's list ≥ 0.85 × the same list with auth off.**

Steps: seed through the engine's tables (bench/seed.py); give the clients and their sales
to 20 owners (`owner = (client_id - 1) % 20 + 1`, one UPDATE each); copy the database
twice: `off` keeps no users (the API is open, nothing is checked), `users` gets 20
managers (ids 1..20, so they own those records) and a director, with tokens. Three
servers of the generated app (bench/generated.py, as run.py starts it): `off` over its
copy, `manager` and `director` over the `users` copy (the same file: every call is a
read, so neither can change what the other sees, and both need the same tokens), each
hit with its own `Authorization: Bearer` token. Before loading, every caller must answer
the list and a get of a client manager 1 owns with 200 (and the manager's list must hold
only his sales). Then per round, per operation, each caller under wrk (run.py's
`run_wrk`, who goes first rotates); ratios are per round, medians over rounds. With
`--try-index` a second set of rounds loads the list again after creating
`sale (owner, stage, amount)` by hand in the `users` database (not by the engine).
The SQL plans of the manager's list are printed and saved. Results: bench/results/*-access-*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/access.py
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench.run import (  # noqa: E402
    LUA,
    RESULTS,
    SMOKE_PACE_MS,
    UVICORN_FLAGS,
    Databases,
    Job,
    Launch,
    Server,
    http,
    machine_facts,
    postgres_url,
    run_calls,
    run_wrk,
    serve_all,
)
from bench.seed import SETUP, seed  # noqa: E402

TARGET = 0.85
CALLERS = ("off", "manager", "director")
LIST_PATH = "/api/sale?stage=negotiation&sort=-amount&limit=50"
INDEX_NAME = "ix_sale_bench_owner_stage_amount"


@dataclass(frozen=True)
class Operation:
    key: str
    title: str
    callers: tuple[str, ...]


OPERATIONS = [
    Operation("list_sales", "list sales by stage, -amount, 50, total", CALLERS),
    Operation("get_client", "get one client (the manager's own)", CALLERS),
    # the manager asking for someone else's client: 404, measured for the note only
    Operation("get_other", "get a client the manager does not own (404)", ("manager",)),
]

# GET /api/client/{id} over the clients of one owner: owner = (id - 1) % STEP + 1
GET_OWNED_LUA = """
request = function()
   local last = math.floor((clients - FIRST) / STEP)
   return wrk.format("GET", "/api/client/" .. (FIRST + STEP * math.random(0, last)))
end
"""


@dataclass
class Caller:
    name: str
    token: str | None
    user_id: int | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


# -- data --------------------------------------------------------------------------------

def assign_owners(url: str, owners: int) -> dict[str, int]:
    """Client i and its sales go to owner (i - 1) % owners + 1; returns rows updated."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            clients = conn.execute(sa.text("UPDATE client SET owner = ((id - 1) % :n) + 1"),
                                   {"n": owners}).rowcount
            sales = conn.execute(sa.text("UPDATE sale SET owner = ((client_id - 1) % :n) + 1"),
                                 {"n": owners}).rowcount
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:  # the planner must know owner is no longer all NULL
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()
    return {"clients": clients, "sales": sales}


def add_users(url: str, managers: int) -> tuple[Caller, Caller]:
    """Managers 1..`managers` (their ids are the owners above) and a director; their tokens."""
    from engine import Kartoteka

    kt = Kartoteka.open(SETUP, url)
    try:
        first: Caller | None = None
        for number in range(1, managers + 1):
            user, token = kt.users.add(f"manager{number}@bench.example", ["manager"])
            if user.id != number:
                raise SystemExit(f"manager {number} got user id {user.id}: owners would not match")
            if first is None:
                first = Caller("manager", token, user.id)
        director, token = kt.users.add("director@bench.example", ["director"])
    finally:
        kt.close()
    assert first is not None
    return first, Caller("director", token, director.id)


def expected_totals(url: str, owner: int) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            every = conn.exec_driver_sql(
                "SELECT count(*) FROM sale WHERE stage = 'negotiation'").scalar_one()
            own = conn.exec_driver_sql(
                f"SELECT count(*) FROM sale WHERE stage = 'negotiation' AND owner = {owner}"
            ).scalar_one()
    finally:
        engine.dispose()
    return {"all": int(every), "own": int(own)}


# -- servers -----------------------------------------------------------------------------

def check_callers(servers: dict[str, Server], callers: dict[str, Caller], owners: int,
                  totals: dict[str, int]) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Statuses of list / own get / other's get per caller, and what is wrong with them."""
    manager = callers["manager"]
    assert manager.user_id is not None
    owned, other = manager.user_id + owners, manager.user_id % owners + 1 + owners
    statuses: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for name, server in servers.items():
        headers = callers[name].headers
        list_status, page = http("GET", server.base + LIST_PATH, headers=headers)
        get_status, record = http("GET", server.base + f"/api/client/{owned}", headers=headers)
        other_status, _ = http("GET", server.base + f"/api/client/{other}", headers=headers)
        statuses[name] = {"list": list_status, "get": get_status, "get_other": other_status}
        if list_status != 200 or get_status != 200:
            problems.append(f"{name}: list {list_status}, get of client {owned} {get_status}")
            continue
        want_total = totals["own"] if name == "manager" else totals["all"]
        if page.get("total") != want_total or not page["items"]:
            problems.append(f"{name}: the list's total is {page.get('total')}, not {want_total}")
        if name == "manager":
            strangers = [item["id"] for item in page["items"] if item.get("owner") != manager.user_id]
            if strangers:
                problems.append(f"manager: the list shows sales he does not own: {strangers[:5]}")
        if record.get("id") != owned:
            problems.append(f"{name}: get of client {owned} answered {str(record)[:200]}")
        want_other = 404 if name == "manager" else 200
        if other_status != want_other:
            problems.append(f"{name}: get of client {other} (not the manager's) answered "
                            f"{other_status}, not {want_other}")
    unauthenticated = http("GET", servers["director"].base + LIST_PATH)[0]
    statuses["no token, database with users"] = {"list": unauthenticated}
    if unauthenticated != 401:
        problems.append(f"a call without a token answered {unauthenticated}, not 401")
    return statuses, problems


# -- wrk ---------------------------------------------------------------------------------

def wrk_script(op: Operation, caller: Caller, owners: int, workdir: Path) -> Path:
    """The operation's Lua with the caller's token in every request (wrk.headers) and
    run.py's common.lua (the JSON summary run_wrk reads)."""
    head = [f"-- {op.title}, as {caller.name}"]
    if caller.token:
        head.append(f'wrk.headers["Authorization"] = "Bearer {caller.token}"')
    if op.key == "list_sales":
        body = (LUA / "list_sales.lua").read_text()
    else:
        manager_id = 1
        first = manager_id if op.key == "get_client" else manager_id % owners + 1
        head.append(f"local FIRST, STEP = {first}, {owners}")
        body = GET_OWNED_LUA
    script = workdir / f"{op.key}-{caller.name}.lua"
    script.write_text("\n".join(head) + "\n" + body + "\n" + (LUA / "common.lua").read_text())
    return script


# -- plans -------------------------------------------------------------------------------

def list_plans(url: str, manager: Caller | None) -> list[dict[str, Any]]:
    """The statements the engine runs for the manager's list (None: unchecked, as with
    auth off), and the database's plan and time of each."""
    from engine import Kartoteka
    from engine.access.users import User

    kt = Kartoteka.open(SETUP, url)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " sale" in statement:
            statements.append((statement, parameters))

    try:
        user = None if manager is None or manager.user_id is None else \
            User(manager.user_id, "manager1@bench.example", None, ("manager",), None, True)
        params = [("stage", "negotiation"), ("sort", "-amount"), ("limit", "50")]
        sa.event.listen(kt.db.engine, "before_cursor_execute", capture)
        with kt.acting.as_user(user):
            kt.records.list_page("sale", params)
        sa.event.remove(kt.db.engine, "before_cursor_execute", capture)
        plans = []
        sqlite = kt.db.dialect == "sqlite"
        with kt.db.engine.connect() as conn:
            for statement, parameters in statements:
                if sqlite:
                    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
                    plan = [str(row[-1]) for row in rows]
                    started = time.perf_counter()
                    for _ in range(20):
                        conn.exec_driver_sql(statement, parameters).all()
                    ms = (time.perf_counter() - started) / 20 * 1000
                else:
                    rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                                parameters).all()
                    plan = [str(row[0]) for row in rows]
                    ms = next((float(line.split(":")[1].split()[0]) for line in plan
                               if line.startswith("Execution Time")), 0.0)
                plans.append({"sql": " ".join(statement.split()), "plan": plan, "ms": round(ms, 3)})
    finally:
        kt.close()
    return plans


def create_index(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                ddl = f"CREATE INDEX {INDEX_NAME} ON sale (owner, stage, amount)"
            else:
                ddl = (f"CREATE INDEX {INDEX_NAME} ON sale (owner NULLS FIRST, stage NULLS FIRST, "
                       "amount NULLS FIRST)")
            conn.exec_driver_sql(ddl)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("ANALYZE sale")
    finally:
        engine.dispose()
    return ddl


# -- the run -----------------------------------------------------------------------------

def run_round(label: str, urls: dict[str, str], callers: dict[str, Caller],
              scripts: dict[tuple[str, str], Path], operations: list[Operation],
              args: argparse.Namespace, workdir: Path, index: int,
              checks: dict[str, Any] | None = None) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {op.key: {} for op in operations}
    launches = {name: Launch("gen", urls[name], f"{label}-{name}", headers=callers[name].headers)
                for name in CALLERS}
    with serve_all(launches, workdir) as servers:
        if checks is not None:
            statuses, problems = check_callers(servers, callers, args.owners, args.totals)
            checks.update({"statuses": statuses, "problems": problems})
            for problem in problems:
                print(f"  CHECK FAILED: {problem}", flush=True)
            if problems:
                return {"round": label, "results": results}
        for op in operations if args.warmup else ():
            for name in op.callers:
                run_wrk(servers[name], scripts[(op.key, name)], args.warmup, args, f"w{label}")
        jobs: list[tuple[Job, str]] = []
        for position, op in enumerate(operations):
            order = list(op.callers)
            shift = (index + position) % len(order)
            jobs += [(op, name) for name in order[shift:] + order[:shift]]  # who goes first rotates

        def measure(op: Job, name: str) -> dict[str, Any]:
            return run_wrk(servers[name], scripts[(op.key, name)], args.seconds, args,
                           f"{label}{name[0]}")

        run_calls(jobs, measure, args, args.pause, results, width=44)
        for name, server in servers.items():
            if server.process.poll() is not None:
                results.setdefault("died", {})[name] = True
    return {"round": label, "results": results}


def summarise(rounds: list[dict[str, Any]], operations: list[Operation]) -> list[dict[str, Any]]:
    rows = []
    for op in operations:
        runs = [r["results"][op.key] for r in rounds if r["results"].get(op.key)]
        if not runs:
            continue
        row: dict[str, Any] = {"operation": op.key, "title": op.title}
        for name in op.callers:
            row[name] = {
                "rps": round(statistics.median(run[name]["rps"] for run in runs), 1),
                "p50_ms": round(statistics.median(run[name]["latency_us"]["p50"] for run in runs)
                                / 1000, 2),
                "p99_ms": round(statistics.median(run[name]["latency_us"]["p99"] for run in runs)
                                / 1000, 2),
                "non_2xx": sum(run[name]["non_2xx"] for run in runs),
                "socket_errors": sum(run[name]["socket_errors"] for run in runs),
                "per_round_rps": [round(run[name]["rps"], 1) for run in runs],
            }
        if "off" in op.callers:
            for name, base in (("manager", "off"), ("director", "off"), ("manager", "director")):
                # the median of per-round ratios: each pairs runs made close in time
                per_round = [run[name]["rps"] / run[base]["rps"] for run in runs]
                row[f"{name}_vs_{base}"] = round(statistics.median(per_round), 3)
                row[f"{name}_vs_{base}_rounds"] = [round(x, 3) for x in per_round]
        rows.append(row)
    return rows


def print_table(title: str, summary: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    header = (f"{'operation':<44} {'off':>7} {'manager':>8} {'director':>8} {'man÷off':>8} "
              f"{'dir÷off':>8} {'man÷dir':>8}   p99 off / man / dir (ms)")
    print(header)
    print("-" * len(header))
    for row in summary:
        rps = [f"{row[n]['rps']:>{w},.0f}" if n in row else f"{'':>{w}}"
               for n, w in (("off", 7), ("manager", 8), ("director", 8))]
        ratios = [f"{row[k]:>7.2f}×" if k in row else f"{'':>8}"
                  for k in ("manager_vs_off", "director_vs_off", "manager_vs_director")]
        p99 = " / ".join(f"{row[n]['p99_ms']:.1f}" if n in row else "-"
                         for n in ("off", "manager", "director"))
        print(f"{row['title']:<44} {' '.join(rps)} {' '.join(ratios)}   {p99}")


def print_plans(title: str, plans: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for item in plans:
        print(f"  {item['ms']:.2f} ms  {item['sql'][:160]}")
        for line in item["plan"][:12]:
            print(f"      {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        if args.postgres:
            from tests.pg import postgres_server
            server = stack.enter_context(postgres_server())
            if server is None:
                print("no PostgreSQL here (/usr/lib/postgresql/*/bin): apt-get install postgresql",
                      file=sys.stderr)
                return 2
            args.db_url = server + "postgres"
        return run(args)


def run(args: argparse.Namespace) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts()
    workdir = Path(tempfile.mkdtemp(prefix="kartoteka-bench-access-"))
    databases = Databases(workdir, args.db_url)
    warnings: list[str] = []
    checks: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []
    index_rounds: list[dict[str, Any]] = []
    plans: dict[str, Any] = {}
    index_ddl = None
    try:
        print(f"seeding {args.clients:,} clients and {args.sales:,} sales ({databases.kind}) ...",
              flush=True)
        stats = seed(databases.seed_url, args.clients, args.sales)
        owned = assign_owners(databases.seed_url, args.owners)
        print(f"  {stats.clients + stats.sales:,} rows in {stats.insert_s:.2f} s; "
              f"{owned['clients']:,} clients and {owned['sales']:,} sales given to "
              f"{args.owners} owners", flush=True)
        urls = {"off": databases.copy("off")}
        urls["manager"] = urls["director"] = databases.copy("users")
        manager, director = add_users(urls["manager"], args.owners)
        callers = {"off": Caller("off", None, None), "manager": manager, "director": director}
        args.totals = expected_totals(urls["off"], 1)
        scripts = {(op.key, name): wrk_script(op, callers[name], args.owners, workdir)
                   for op in OPERATIONS for name in op.callers}
        plans["off"] = list_plans(urls["off"], None)
        print_plans("the list with auth off, as the database runs it:", plans["off"])
        plans["before"] = list_plans(urls["manager"], manager)
        print_plans("the manager's list, as the database runs it:", plans["before"])
        for index in range(args.repeat):
            print(f"\nround {index + 1}/{args.repeat}: three servers (off, manager, director) ...",
                  flush=True)
            rounds.append(run_round(f"r{index + 1}", urls, callers, scripts, OPERATIONS, args,
                                    workdir, index, checks if index == 0 else None))
            if checks.get("problems"):
                break
        if args.try_index and not checks.get("problems"):
            index_ddl = create_index(urls["manager"])
            print(f"\nby hand, in the users database only: {index_ddl}", flush=True)
            plans["with_index"] = list_plans(urls["manager"], manager)
            print_plans("the manager's list with that index:", plans["with_index"])
            for index in range(args.repeat):
                print(f"\nindex round {index + 1}/{args.repeat}: list only ...", flush=True)
                index_rounds.append(run_round(f"i{index + 1}", urls, callers, scripts,
                                              OPERATIONS[:1], args, workdir, index))
    finally:
        databases.drop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    facts["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarise(rounds, OPERATIONS)
    index_summary = summarise(index_rounds, OPERATIONS[:1])
    warnings += checks.get("problems", [])
    for table in (summary, index_summary):
        for row in table:
            for name in CALLERS:
                if name in row and row["operation"] != "get_other" and \
                        (row[name]["non_2xx"] or row[name]["socket_errors"]):
                    warnings.append(f"{row['operation']} as {name}: {row[name]['non_2xx']} non-2xx, "
                                    f"{row[name]['socket_errors']} socket errors")
    listed = next((row for row in summary if row["operation"] == "list_sales"), None)
    target = {"ratio": TARGET, "manager_list_vs_off": listed["manager_vs_off"] if listed else None}
    target["met"] = bool(listed and listed["manager_vs_off"] >= TARGET)
    if index_summary:
        target["manager_list_vs_off_with_index"] = index_summary[0]["manager_vs_off"]
    report = {
        "started": started.isoformat(), "finished": dt.datetime.now(dt.UTC).isoformat(),
        "quick": args.quick, "smoke": args.smoke, "database": databases.kind, "machine": facts,
        "settings": {"clients": args.clients, "sales": args.sales, "owners": args.owners,
                     "seconds": args.seconds, "warmup_seconds": args.warmup,
                     "threads": args.threads, "connections": args.connections,
                     "repeat": args.repeat, "uvicorn": UVICORN_FLAGS},
        "seed": stats.as_json(), "owners_assigned": owned, "expected_totals": args.totals,
        "checks": checks, "target": target, "summary": summary,
        "index": {"ddl": index_ddl, "summary": index_summary} if index_ddl else None,
        "plans": plans, "rounds": rounds, "index_rounds": index_rounds, "warnings": warnings,
    }
    name = (started.strftime("%Y%m%d-%H%M%S") + "-access" + ("-quick" if args.quick else "")
            + f"-{databases.kind}")
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    print(f"\nKartoteka access bench — {report['started'][:16]} UTC, {databases.kind}, "
          f"nproc {facts['nproc']}, load {facts['loadavg_before'][0]} → {facts['loadavg_after'][0]}; "
          f"{args.clients:,} clients, {args.sales:,} sales, {args.owners} owners; wrk "
          f"{args.threads} threads, {args.connections} connections, {args.seconds} s; "
          f"median of {len(rounds)} round(s)")
    print_table("req/s (median)", summary)
    if index_summary:
        print_table(f"list with {INDEX_NAME} (by hand)", index_summary)
    if listed:
        verdict = "met" if target["met"] else "MISSED"
        print(f"\ntarget: manager's list ÷ auth off ≥ {TARGET}: {listed['manager_vs_off']:.2f} — {verdict}"
              + (f"; with the index {target['manager_list_vs_off_with_index']:.2f}"
                 if index_summary else ""))
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"\nsaved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 1 if warnings else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="req/s of list and get for a manager, a director and with auth off.")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 1,000 clients, 10,000 sales, 2 s per run")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--db-url", default=None,
                        help="a PostgreSQL server (postgresql+psycopg://user@host:port/db): "
                             "databases ktbench_* are created on it and dropped after")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway PostgreSQL server from Debian's binaries (tests/pg.py)")
    parser.add_argument("--clients", type=int, help="clients to seed (default 10,000)")
    parser.add_argument("--sales", type=int, help="sales to seed (default 200,000)")
    parser.add_argument("--owners", type=int, default=20,
                        help="managers owning the clients and their sales (default 20)")
    parser.add_argument("--seconds", type=int, help="wrk duration per run (default 8)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds per run (default 2; 0: none)")
    parser.add_argument("--pause", type=float, default=0.5,
                        help="seconds of quiet before each measured run (default 0.5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--smoke", action="store_true",
                        help="check that the bench runs end to end, cheaply: one request per "
                             f"connection every {SMOKE_PACE_MS} ms, no warm-up, and a round's wrk "
                             "calls all at once (the figures then measure nothing)")
    parser.add_argument("--try-index", action="store_true",
                        help="then load the list again with sale (owner, stage, amount) "
                             "created by hand in the benchmark's users database")
    parser.add_argument("--keep", action="store_true", help="keep the databases and server logs")
    args = parser.parse_args(argv)
    quick = args.quick
    args.clients = args.clients or (1_000 if quick else 10_000)
    args.sales = args.sales or (10_000 if quick else 200_000)
    args.seconds = args.seconds or (2 if quick else 8)
    args.warmup = 0 if args.smoke else (1 if quick else 2) if args.warmup is None else args.warmup
    if args.repeat < 1 or args.owners < 2 or args.clients < 2 * args.owners:
        parser.error("--repeat ≥ 1, --owners ≥ 2, and at least two clients per owner")
    if args.db_url and args.postgres:
        parser.error("--db-url or --postgres, not both")
    args.db_url = postgres_url(parser, args.db_url)
    return args


if __name__ == "__main__":
    sys.exit(main())
