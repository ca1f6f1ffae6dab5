"""What automations cost a write, and how fast the worker delivers, on SQLite (and PostgreSQL
with `--pg-url`): issue 11's targets — a create that triggers one automation at most 1.2×
a create without, and at least 500 events per second through one worker.

    .venv/bin/python bench/automations.py [--creates 2000] [--pg-url postgresql+psycopg://...]
                                          [--workers 4] [--events 4000]

1. the same `lead` entity twice, in two setups that differ only in one automation
   (`on: created`, `set: {status: new}`): N creates through `Records.create` each, on a
   fresh database, best of three rounds (the setups alternate, so that a shared machine's
   load weighs on both alike); the ratio is the cost of writing the event, by the clock
   and by this process's CPU time;
2. the N events so written processed by `run_pending`: events per second (each one a
   transaction that runs the automation's `set`, an update of the lead);
3. on PostgreSQL, `--events` pending events (a fresh database each time) shared by 1, 2,
   4 ... up to `--workers` worker processes, as `kartoteka worker` runs them (SKIP
   LOCKED): each process opens its engine first, then all start together; the rate is
   the events over the time from that start until the last one is done.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import DatabaseSettings, Kartoteka, Settings
from engine.setup.loader import load_setup

ENTITY = """
    entity: lead
    fields:
      name: {type: string, required: true}
      email: {type: email}
      status: {type: choice, options: [new, contacted]}
      score: {type: integer}
"""
AUTOMATION = """
    automations:
      mark_new:
        entity: lead
        on: created
        do: [{set: {status: new}}]
"""


def setup(folder: Path, with_automation: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "setup.yaml").write_text(
        "name: Bench\n" + (textwrap.dedent(AUTOMATION) if with_automation else ""))
    (folder / "lead.yaml").write_text(textwrap.dedent(ENTITY))
    return folder


def engine(folder: Path, url: str) -> Kartoteka:
    kt = Kartoteka(load_setup(folder), Settings(DatabaseSettings(url=url)))
    if url.startswith("postgresql"):
        with sa.create_engine(url).begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    kt.migrate()
    return kt


def creates(kt: Kartoteka, count: int) -> float:
    return timed_creates(kt, count)[0]


def timed_creates(kt: Kartoteka, count: int) -> tuple[float, float]:
    """`count` creates: their seconds by the clock and by this process's CPU time."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        kt.records.create("lead", {"name": f"Лид {i} 线索", "email": f"l{i}@example.com",
                                   "score": i % 100})
    return time.perf_counter() - start, time.process_time() - cpu


def _work(folder: Path, url: str, ready: Any, start: Any, results: Any) -> None:
    """One worker process: open the engine, say so, wait for the start, run what is
    pending; reports how many events it processed."""
    kt = Kartoteka(load_setup(folder), Settings(DatabaseSettings(url=url)))
    with kt.db.read() as conn:  # connected before the clock starts
        conn.execute(sa.text("SELECT 1"))
    ready.put(True)
    start.wait()
    results.put(kt.automations.run_pending(limit=10**9))
    kt.close()


def shared(folder: Path, url: str, events: int, counts: list[int]) -> None:
    """`events` pending events, each time on a fresh database, processed by each count of
    worker processes (threads would share one GIL)."""
    context = multiprocessing.get_context("spawn")
    for count in counts:
        kt = engine(folder, url)
        creates(kt, events)
        kt.close()
        ready, start, results = context.Queue(), context.Event(), context.Queue()
        processes = [context.Process(target=_work, args=(folder, url, ready, start, results))
                     for _ in range(count)]
        for process in processes:
            process.start()
        for _ in processes:
            ready.get()
        began = time.perf_counter()
        start.set()
        done = [results.get() for _ in processes]
        took = time.perf_counter() - began
        for process in processes:
            process.join()
        print(f"PostgreSQL: {sum(done)} events through {count} worker process(es) in "
              f"{took:.2f} s: {sum(done) / took:,.0f} events/s (each took "
              f"{', '.join(str(n) for n in done)})")


def worker_counts(most: int) -> list[int]:
    """1, 2, 4 ... up to `most` (and `most` itself)."""
    counts = [1]
    while counts[-1] * 2 <= most:
        counts.append(counts[-1] * 2)
    return counts if counts[-1] == most else [*counts, most]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--workers", type=int, default=2,
                        help="on PostgreSQL: share the events among 1, 2, 4 ... up to this "
                             "many worker processes")
    parser.add_argument("--events", type=int, default=None,
                        help="the pending events the worker processes share (default: "
                             "--creates)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kartoteka-bench-automations-"))
    plain, automated = setup(work / "plain", False), setup(work / "automated", True)
    for name, url_of in (("SQLite", lambda tag: f"sqlite:///{work / tag}.db"),
                         *((("PostgreSQL", lambda tag: args.pg_url),) if args.pg_url else ())):
        seconds: dict[str, float] = {}
        cpu: dict[str, float] = {}
        both = [(plain, "plain"), (automated, "automated")]
        for round_ in range(3):  # the two alternate, so that the machine's load weighs alike
            for folder, tag in both if round_ % 2 == 0 else both[::-1]:
                kt = engine(folder, url_of(f"{tag}{round_}"))
                took, used = timed_creates(kt, args.creates)
                seconds[tag] = min(seconds.get(tag, took), took)
                cpu[tag] = min(cpu.get(tag, used), used)
                if tag == "automated" and round_ == 2:
                    keep = kt
                else:
                    kt.close()
        ratio = seconds["automated"] / seconds["plain"]
        print(f"{name}: {args.creates} creates {seconds['plain']:.2f} s without, "
              f"{seconds['automated']:.2f} s with one automation: {ratio:.2f}x "
              f"(target at most 1.2x: {'met' if ratio <= 1.2 else 'MISSED'}); CPU "
              f"{1000 * cpu['plain'] / args.creates:.3f} ms and "
              f"{1000 * cpu['automated'] / args.creates:.3f} ms a create: "
              f"{cpu['automated'] / cpu['plain']:.2f}x")
        started = time.perf_counter()
        done = keep.automations.run_pending(limit=10**9)
        took = time.perf_counter() - started
        rate = done / took
        print(f"{name}: {done} events through one worker in this process in {took:.2f} s: "
              f"{rate:,.0f} events/s (target at least 500: "
              f"{'met' if rate >= 500 else 'MISSED'})")
        keep.close()
        if name == "PostgreSQL":
            shared(automated, url_of("shared"), args.events or args.creates,
                   worker_counts(args.workers))


if __name__ == "__main__":
    main()
