"""The generated API against two hand-written FastAPI + SQLAlchemy apps, in one run.

    .venv/bin/python bench/run.py             # full: 10,000 clients, 200,000 sales, 8 s per op
    .venv/bin/python bench/run.py --quick     # short: small seed, 3 s per op
    .venv/bin/python bench/run.py --repeat 3  # medians of 3 rounds
    .venv/bin/python bench/run.py --db-url postgresql+psycopg://user@127.0.0.1:5432/postgres

The apps: `gen` (bench/generated.py, what `kartoteka serve` builds), `hand`
(bench/handwritten.py, over the engine's own tables) and `min` (bench/minimal.py, over a
minimal `sale` table with 2 indexes and no journal).

Steps: seed a fresh database through the engine's tables (bench/seed.py) and report rows
per second; copy its clients and sales into the minimal tables (bench/minimal.py); give each
app its own copy per round (an SQLite file copy; on PostgreSQL a database created from the
seeded one as a template); start the three with uvicorn (1 worker, the same flags, each on
a free loopback port) and check which event loop and HTTP parser each process loaded;
check that gen and hand answer the same JSON and min the same records; warm up; then load
each operation with wrk, the apps one after the other (who goes first rotates), and print
req/s, generated ÷ hand-written, generated ÷ minimal and p99 latencies. Results go to
bench/results/*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/run.py
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench import minimal, profile  # noqa: E402
from bench.seed import seed  # noqa: E402
from engine.storage.database import normalise_url  # noqa: E402

BENCH = ROOT / "bench"
LUA = BENCH / "lua"
RESULTS = BENCH / "results"
ENV = "KARTOTEKA_BENCH_DB"
APPS = {"hand": "bench.handwritten:app_from_env", "gen": "bench.generated:app_from_env",
        "min": "bench.minimal:app_from_env"}
#: the generated app's throughput ÷ each baseline's, per operation, that the issue asks for
TARGETS = {
    "hand": {"get_client": 0.8, "list_sales": 1.0, "create_sale": 1.0, "patch_sale": 0.8},
    "min": {"create_sale": 0.8, "patch_sale": 0.8},
}
#: --smoke: milliseconds each connection waits between requests (wrk's Lua `delay`)
SMOKE_PACE_MS = 50
UVICORN_FLAGS = ["--factory", "--host", "127.0.0.1", "--workers", "1", "--no-access-log",
                 "--log-level", "warning"]


@dataclass(frozen=True)
class Operation:
    key: str
    title: str
    call: str


OPERATIONS = [
    Operation("get_client", "get one client", "GET /api/client/{id}"),
    Operation("list_sales", "list sales by stage, -amount, 50, total",
              "GET /api/sale?stage=negotiation&sort=-amount&limit=50"),
    Operation("create_sale", "create sale", "POST /api/sale"),
    Operation("patch_sale", "patch sale (amount)", "PATCH /api/sale/{id}"),
]


# -- databases: one seeded, one copy per app and round --------------------------------------

class Databases:
    """Where the seeded databases live (the engine's tables: `seed`; the minimal app's:
    `minimal`) and how a fresh copy of one is made."""

    def __init__(self, workdir: Path, server_url: str | None):
        self.workdir = workdir
        self.server_url = server_url
        self.created: list[str] = []
        self.kind = "postgresql" if server_url else "sqlite"
        self.prefix = f"ktbench_{uuid.uuid4().hex[:10]}"
        self.urls = {seed: self._url(seed) for seed in ("seed", "minimal")}
        self.seed_url = self.urls["seed"]

    def _url(self, seed: str) -> str:
        if self.server_url is None:
            return f"sqlite:///{self.workdir / seed}.db"
        return self._create(f"{self.prefix}_{seed}")

    def copy(self, name: str, seed: str = "seed") -> str:
        if self.server_url is None:
            target = self.workdir / f"{name}.db"
            shutil.copyfile(self.workdir / f"{seed}.db", target)
            return f"sqlite:///{target}"
        return self._create(f"{self.prefix}_{name}", sa.make_url(self.urls[seed]).database)

    def _admin(self) -> sa.Engine:
        assert self.server_url is not None
        return sa.create_engine(sa.make_url(self.server_url).set(database="postgres"),
                                isolation_level="AUTOCOMMIT")

    def _create(self, name: str, template: str = "template0") -> str:
        admin = self._admin()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}" ENCODING \'UTF8\'')
        admin.dispose()
        self.created.append(name)
        assert self.server_url is not None
        return sa.make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.created:
            return
        admin = self._admin()
        with admin.connect() as conn:
            for name in reversed(self.created):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        self.created.clear()


# -- servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    app: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Launch:
    """One server to start: the app, its database, the name of its log, extra environment,
    and the headers its readiness check sends (a token, when the database has users)."""
    app: str
    db_url: str
    tag: str
    env: dict[str, str] | None = None
    headers: dict[str, str] | None = None


@contextmanager
def serve(app: str, db_url: str, workdir: Path, tag: str,
          extra_env: dict[str, str] | None = None,
          headers: dict[str, str] | None = None) -> Iterator[Server]:
    """Start one app with uvicorn; ready when GET /api/client/1 answers 200."""
    with serve_all({app: Launch(app, db_url, tag, extra_env, headers)}, workdir) as servers:
        yield servers[app]


@contextmanager
def serve_all(launches: dict[str, Launch], workdir: Path) -> Iterator[dict[str, Server]]:
    """Start every server at once, then wait until each answers GET /api/client/1 with 200;
    stop them all on the way out."""
    with ExitStack() as stack:
        servers = {name: stack.enter_context(_started(launch, workdir))
                   for name, launch in launches.items()}
        for name, server in servers.items():
            _wait_ready(server, launches[name].headers or {})
        yield servers


@contextmanager
def _started(launch: Launch, workdir: Path) -> Iterator[Server]:
    port = free_port()
    log = workdir / f"{launch.tag}.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KARTOTEKA_BENCH_INLINE", "KARTOTEKA_BENCH_POOL")}
    env.update({ENV: launch.db_url, "PYTHONPATH": str(ROOT), **(launch.env or {})})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", APPS[launch.app], *UVICORN_FLAGS, "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(launch.app, launch.db_url, port, process, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def served_by(pid: int) -> dict[str, str]:
    """The event loop and HTTP parser a uvicorn process runs on, from the native modules
    it has loaded (Linux): uvicorn's `auto` imports uvloop and httptools only to use them."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {"loop": "unknown", "http": "unknown"}
    return {"loop": "uvloop" if "/uvloop/loop." in maps else "asyncio",
            "http": "httptools" if "/httptools/parser/parser." in maps else "h11"}


def _wait_ready(server: Server, headers: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"the {server.app} server exited:\n{server.log.read_text()[-3000:]}")
        try:
            if http("GET", server.base + "/api/client/1", headers=headers, timeout=2)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the {server.app} server did not answer in {timeout:.0f} s")


def http(method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def check_same_answers(hand: Server, gen: Server, tag: str) -> list[str]:
    """Both apps must answer the four calls alike, or the comparison is meaningless."""
    problems: list[str] = []
    volatile = {"created_at", "updated_at"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("<set>" if k == "next" and v else strip(v)) for k, v in value.items()
                    if k not in volatile}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    calls: list[tuple[str, str, Any, Callable[[Any], Any]]] = [
        ("GET", "/api/client/1", None, strip),
        ("GET", "/api/sale?stage=negotiation&sort=-amount&limit=50", None, strip),
        ("POST", "/api/sale", {"number": f"P{tag}", "client": 1, "amount": "123.4"},
         lambda v: strip({k: x for k, x in v.items() if k != "id"})),
        ("PATCH", "/api/sale/1", {"amount": "99.5"}, lambda v: strip({**v, "version": 0})),
    ]
    for method, path, body, normal in calls:
        answers = [http(method, server.base + path, body) for server in (hand, gen)]
        (hand_status, hand_json), (gen_status, gen_json) = answers
        if hand_status // 100 != 2 or gen_status // 100 != 2:
            problems.append(f"{method} {path}: status {hand_status} (hand) / {gen_status} (gen)")
        elif normal(hand_json) != normal(gen_json):
            problems.append(f"{method} {path}: the JSON differs:\n  hand {str(hand_json)[:300]}"
                            f"\n  gen  {str(gen_json)[:300]}")
    return problems


def check_minimal(gen: Server, low: Server, tag: str) -> list[str]:
    """The minimal app answers the same records in its own, narrower JSON: the same list
    page (ids, amounts, total), a created sale, a patch that adds a version."""
    problems: list[str] = []
    path = "/api/sale?stage=negotiation&sort=-amount&limit=50"
    (gen_status, gen_page), (low_status, low_page) = (http("GET", s.base + path) for s in (gen, low))
    if gen_status != 200 or low_status != 200:
        problems.append(f"GET {path}: status {gen_status} (gen) / {low_status} (min)")
    elif [(i["id"], i["amount"]) for i in gen_page["items"]] != \
            [(i["id"], i["amount"]) for i in low_page["items"]] or \
            gen_page["total"] != low_page["total"]:
        problems.append(f"GET {path}: the minimal app lists other sales than the generated one")
    status, created = http("POST", low.base + "/api/sale",
                           {"number": f"M{tag}", "client": 1, "amount": "123.4"})
    if status != 201 or created.get("amount") != "123.40" or created.get("stage") != "lead":
        problems.append(f"POST /api/sale (min): {status} {str(created)[:200]}")
    before = http("GET", low.base + "/api/sale?sort=id&limit=1")[1]["items"][0]
    status, patched = http("PATCH", low.base + f"/api/sale/{before['id']}", {"amount": "99.5"})
    if status != 200 or patched.get("amount") != "99.50" or \
            patched.get("version") != before["version"] + 1:
        problems.append(f"PATCH /api/sale/{before['id']} (min): {status} {str(patched)[:200]}")
    return problems


# -- wrk ----------------------------------------------------------------------------------

def wrk_script(operation: Operation, workdir: Path) -> Path:
    script = workdir / f"{operation.key}.lua"
    script.write_text((LUA / f"{operation.key}.lua").read_text() + "\n"
                      + (LUA / "common.lua").read_text())
    return script


def run_wrk(server: Server, script: Path, seconds: int, args: argparse.Namespace,
            tag: str) -> dict[str, Any]:
    pace = SMOKE_PACE_MS if args.smoke else 0
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s",
               "--timeout", "10s", "-s", str(script), server.base,
               "--", tag, str(args.clients), str(args.sales), str(pace)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("KTBENCH ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line[len("KTBENCH "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    errors = result["errors"]
    result["non_2xx"] = errors["status"]
    result["socket_errors"] = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    return result


class Job(Protocol):
    """What run_calls needs of an operation: its key and title."""
    @property
    def key(self) -> str: ...
    @property
    def title(self) -> str: ...


def run_calls(jobs: list[tuple[Job, str]], measure: Callable[[Job, str], dict[str, Any]],
              args: argparse.Namespace, pause: float, results: dict[str, dict[str, Any]],
              width: int = 40) -> None:
    """Each job's wrk call (an operation, against the server of a name): one after the
    other, `pause` seconds of quiet before each, or with --smoke all at once (nothing is
    measured then). Each result goes to results[operation key][name] and is printed."""
    if args.smoke:
        with ThreadPoolExecutor(len(jobs) or 1) as pool:
            futures = [pool.submit(measure, op, name) for op, name in jobs]
            done = [future.result() for future in futures]
    else:
        done = []
        for op, name in jobs:
            time.sleep(pause)
            done.append(measure(op, name))
            _print_result(op, name, done[-1], width)
    for (op, name), result in zip(jobs, done, strict=True):
        results[op.key][name] = result
        if args.smoke:
            _print_result(op, name, result, width)


def _print_result(op: Job, name: str, result: dict[str, Any], width: int) -> None:
    print(f"  {op.title:<{width}} {name:<9} {result['rps']:>9,.0f} req/s  "
          f"p99 {result['latency_us']['p99'] / 1000:>7.1f} ms  "
          f"non-2xx {result['non_2xx']}", flush=True)


# -- the run ------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout \
        if shutil.which("wrk") else ""
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "wrk": wrk_version.splitlines()[0] if wrk_version else "",
            "sqlite": sqlite3.sqlite_version, "sqlalchemy": sa.__version__,
            "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts()
    workdir = Path(tempfile.mkdtemp(prefix="kartoteka-bench-"))
    databases = Databases(workdir, args.db_url)
    rounds: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        print(f"seeding {args.clients:,} clients and {args.sales:,} sales ({databases.kind}) ...",
              flush=True)
        stats = seed(databases.seed_url, args.clients, args.sales)
        print(f"  {stats.clients + stats.sales:,} rows in {stats.insert_s:.2f} s: "
              f"{stats.rows_per_s:,} rows/s; copying them into the minimal tables ...",
              flush=True)
        minimal.build(databases.seed_url, databases.urls["minimal"])
        scripts = {op.key: wrk_script(op, workdir) for op in OPERATIONS}
        for index in range(args.repeat):
            rounds.append(run_round(index, args, databases, workdir, scripts, warnings))
    finally:
        databases.drop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    facts["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarise(rounds)
    for row in rounds[-1]["served"].items() if rounds else ():
        app, stack = row
        if stack != {"loop": "uvloop", "http": "httptools"}:
            warnings.append(f"the {app} server ran on {stack['loop']} + {stack['http']}, "
                            "not uvloop + httptools")
    for row in summary:
        if row["non_2xx"] or row["socket_errors"]:
            warnings.append(f"{row['operation']}: {row['non_2xx']} non-2xx responses, "
                            f"{row['socket_errors']} socket errors")
    report = {
        "started": started.isoformat(), "finished": dt.datetime.now(dt.UTC).isoformat(),
        "quick": args.quick, "smoke": args.smoke, "database": databases.kind, "machine": facts,
        "settings": {"clients": args.clients, "sales": args.sales, "seconds": args.seconds,
                     "warmup_seconds": args.warmup, "threads": args.threads,
                     "connections": args.connections, "repeat": args.repeat,
                     "uvicorn": UVICORN_FLAGS, "targets": TARGETS,
                     "gen_inline": args.gen_inline},
        "seed": stats.as_json(), "summary": summary, "rounds": rounds, "warnings": warnings,
    }
    name = started.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "") + f"-{databases.kind}"
    path = args.results / f"{name}.json"
    text = json.dumps(report, ensure_ascii=False, indent=2)
    path.write_text(text)
    (args.results / "latest.json").write_text(text)
    print_report(report)
    print(f"\nsaved {path}")
    return 1 if warnings else 0


def run_round(index: int, args: argparse.Namespace, databases: Databases, workdir: Path,
              scripts: dict[str, Path], warnings: list[str]) -> dict[str, Any]:
    label = f"r{index + 1}"
    print(f"round {index + 1}/{args.repeat}: starting the three servers ...", flush=True)
    urls = {app: databases.copy(f"{label}_{app}", "minimal" if app == "min" else "seed")
            for app in APPS}
    results: dict[str, dict[str, Any]] = {op.key: {} for op in OPERATIONS}
    gen_env = None if args.gen_inline is None else {"KARTOTEKA_BENCH_INLINE": args.gen_inline}
    launches = {"hand": Launch("hand", urls["hand"], f"{label}-hand"),
                "gen": Launch("gen", urls["gen"], f"{label}-gen", gen_env),
                "min": Launch("min", urls["min"], f"{label}-min")}
    with serve_all(launches, workdir) as servers:
        hand, gen, low = servers["hand"], servers["gen"], servers["min"]
        served = {app: served_by(server.process.pid) for app, server in servers.items()}
        print("  " + ", ".join(f"{app} on {s['loop']} + {s['http']}" for app, s in served.items()),
              flush=True)
        tag = uuid.uuid4().hex[:8]
        problems = check_same_answers(hand, gen, tag) + check_minimal(gen, low, tag)
        for problem in problems:
            warnings.append(f"round {index + 1}: {problem}")
            print(f"  WARNING: {problem}", flush=True)
        for app, server in servers.items():
            for op in OPERATIONS if args.warmup else ():
                run_wrk(server, scripts[op.key], args.warmup, args, f"w{index}{app[0]}")
        apps = list(APPS)
        jobs: list[tuple[Job, str]] = []
        for position, op in enumerate(OPERATIONS):
            # rotate who goes first, so a drift in machine load does not favour one app
            shift = (index + position) % len(apps)
            jobs += [(op, app) for app in apps[shift:] + apps[:shift]]

        def measure(op: Job, app: str) -> dict[str, Any]:
            return run_wrk(servers[app], scripts[op.key], args.seconds, args, f"{index}{app[0]}")

        run_calls(jobs, measure, args, min(0.5, args.seconds / 10), results)
        for server in servers.values():
            if server.process.poll() is not None:
                warnings.append(f"round {index + 1}: the {server.app} server died")
        if args.profile and index == args.repeat - 1:
            for app in args.profile:
                profile_app(servers[app], args, scripts, index)
    return {"round": index + 1, "served": served, "results": results}


def profile_app(server: Server, args: argparse.Namespace, scripts: dict[str, Path],
                index: int) -> None:
    """After the measured runs: sample the server with py-spy under each operation's load."""
    folder = args.results / f"profile-{server.app}"
    folder.mkdir(parents=True, exist_ok=True)
    for op in OPERATIONS:
        output = folder / f"{op.key}.txt"
        output.unlink(missing_ok=True)
        sampler = profile.record(server.process.pid, args.seconds, output)
        time.sleep(0.5)
        result = run_wrk(server, scripts[op.key], args.seconds, args, f"p{index}{server.app[0]}")
        code = sampler.wait(args.seconds + 30)
        print(f"\nprofile of {server.app}, {op.title} ({result['rps']:,.0f} req/s under py-spy; "
              f"stacks in {output}):")
        lines = profile.hot_spots(output).lines() if output.exists() else []
        for line in lines or [f"no samples (py-spy exited with {code})"]:
            print("  " + line)


def summarise(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    for op in OPERATIONS:
        runs = [r["results"][op.key] for r in rounds]

        def median(app: str, pick: Callable[[dict[str, Any]], float], runs: Any = runs) -> float:
            return statistics.median(pick(run[app]) for run in runs)

        row: dict[str, Any] = {"operation": op.key, "title": op.title, "call": op.call}
        for app in APPS:
            row[f"{app}_rps"] = round(median(app, lambda r: r["rps"]), 1)
        for base in ("hand", "min"):
            # the median of per-round ratios: each ratio pairs runs made close in time
            ratios = [run["gen"]["rps"] / run[base]["rps"] for run in runs]
            row[f"ratio_{base}"] = round(statistics.median(ratios), 3)
            row[f"ratios_{base}"] = [round(r, 3) for r in ratios]
            row[f"target_{base}"] = TARGETS[base].get(op.key)
        for app in APPS:
            for percentile in ("p50", "p99"):
                row[f"{app}_{percentile}_ms"] = round(
                    median(app, lambda r, p=percentile: r["latency_us"][p]) / 1000, 2)
        summary.append({
            **row,
            "non_2xx": sum(run[app]["non_2xx"] for run in runs for app in APPS),
            "socket_errors": sum(run[app]["socket_errors"] for run in runs for app in APPS),
        })
    return summary


def print_report(report: dict[str, Any]) -> None:
    machine, settings, stats = report["machine"], report["settings"], report["seed"]
    print(f"\nKartoteka bench — {report['started'][:16]} UTC, {report['database']}, "
          f"nproc {machine['nproc']}, load {machine['loadavg_before'][0]} → "
          f"{machine['loadavg_after'][0]}")
    if report["smoke"]:
        print("--smoke: paced requests, all calls at once; these figures measure nothing")
    print(f"{settings['clients']:,} clients, {settings['sales']:,} sales; wrk {settings['threads']} "
          f"threads, {settings['connections']} connections, {settings['seconds']:g} s per op; "
          f"median of {settings['repeat']} round(s)")
    print(f"seeding: {stats['clients'] + stats['sales']:,} rows in {stats['insert_s']:.2f} s = "
          f"{stats['rows_per_s']:,} rows/s (clients {stats['clients_per_s']:,}/s, "
          f"sales {stats['sales_per_s']:,}/s)\n")
    header = (f"{'operation':<40} {'hand/s':>7} {'gen/s':>7} {'min/s':>7} {'gen÷hand':>9} "
              f"{'gen÷min':>8}   p99 hand/gen/min ms {'non-2xx':>8}")
    print(header)
    print("-" * len(header))
    missed = []
    for row in report["summary"]:
        marks = {}
        for base in ("hand", "min"):
            target = row[f"target_{base}"]
            low = target is not None and row[f"ratio_{base}"] < target
            marks[base] = "!" if low else " "
            if low:
                missed.append(f"{row['title']}: gen÷{base} {row[f'ratio_{base}']:.2f}× "
                              f"< {target:g}×")
        p99 = "/".join(f"{row[f'{app}_p99_ms']:.0f}" for app in ("hand", "gen", "min"))
        print(f"{row['title']:<40} {row['hand_rps']:>7,.0f} {row['gen_rps']:>7,.0f} "
              f"{row['min_rps']:>7,.0f} {row['ratio_hand']:>7.2f}×{marks['hand']} "
              f"{row['ratio_min']:>6.2f}×{marks['min']}   {p99:>19} "
              f"{row['non_2xx'] + row['socket_errors']:>8}")
    targets = "; ".join(f"gen÷{base} ≥ " + ", ".join(f"{v:g}× {k.split('_')[0]}"
                                                      for k, v in t.items())
                        for base, t in TARGETS.items())
    print(f"targets: {targets} — ! marks a ratio below its target")
    for line in missed:
        print(f"  below target: {line}")
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare the generated API with two hand-written FastAPI apps (req/s, p99).")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 2,000 clients, 20,000 sales, 3 s per operation")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--db-url", default=None,
                        help="a PostgreSQL server (postgresql+psycopg://user@host:port/db): "
                             "databases ktbench_* are created on it and dropped after")
    parser.add_argument("--clients", type=int, help="clients to seed (default 10,000)")
    parser.add_argument("--sales", type=int, help="sales to seed (default 200,000)")
    parser.add_argument("--seconds", type=int, help="wrk duration per operation (default 8)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds per operation (default 2; 0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the JSON results go (default bench/results)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and server logs")
    parser.add_argument("--profile", nargs="?", const="gen", default=None,
                        choices=["gen", "hand", "min", "all"],
                        help="after the last round, sample the app (default gen) with py-spy "
                             "under each operation and print where the time goes")
    parser.add_argument("--smoke", action="store_true",
                        help="check that the bench runs end to end, cheaply: one request per "
                             f"connection every {SMOKE_PACE_MS} ms, no warm-up, and a round's wrk "
                             "calls all at once (the figures then measure nothing)")
    parser.add_argument("--gen-inline", default=None, metavar="OPS",
                        help="experiment: operations the generated app runs on the event loop "
                             "(e.g. 'get'; '' for none) instead of its own default")
    args = parser.parse_args(argv)
    quick = args.quick
    args.clients = args.clients or (2_000 if quick else 10_000)
    args.sales = args.sales or (20_000 if quick else 200_000)
    args.seconds = args.seconds or (3 if quick else 8)
    args.warmup = 0 if args.smoke else args.warmup if args.warmup is not None else (1 if quick else 2)
    if args.profile:
        args.profile = list(APPS) if args.profile == "all" else [args.profile]
        if profile.py_spy() is None:
            parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.db_url = postgres_url(parser, args.db_url)
    return args


def postgres_url(parser: argparse.ArgumentParser, url: str | None) -> str | None:
    """`--db-url` as the engine takes it; only PostgreSQL (SQLite is the default)."""
    if url and not url.startswith(("postgresql", "postgres://")):
        parser.error("--db-url takes a PostgreSQL URL; SQLite is the default")
    return normalise_url(url) if url else url


if __name__ == "__main__":
    sys.exit(main())
