"""What automations cost a write, and how fast the worker delivers, on SQLite (and PostgreSQL
with `--pg-url`): issue 11's targets — a create that triggers one automation at most 1.2×
a create without, and at least 500 events per second through one worker.

    .venv/bin/python bench/automations.py [--creates 2000] [--pg-url postgresql+psycopg://...]

1. the same `lead` entity twice, in two setups that differ only in one automation
   (`on: created`, `set: {status: new}`): N creates through `Records.create` each, on a
   fresh database, best of three rounds; the ratio is the cost of writing the event;
2. the N events so written processed by `run_pending`: events per second (each one a
   transaction that runs the automation's `set`, an update of the lead);
3. on PostgreSQL, the same events shared by 1 and then 2 worker processes (SKIP LOCKED).
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
    start = time.perf_counter()
    for i in range(count):
        kt.records.create("lead", {"name": f"Лид {i} 线索", "email": f"l{i}@example.com",
                                   "score": i % 100})
    return time.perf_counter() - start


def _work(folder: Path, url: str, results: Any) -> None:
    """One worker process: open the engine (timed apart), then run what is pending."""
    start = time.perf_counter()
    kt = Kartoteka(load_setup(folder), Settings(DatabaseSettings(url=url)))
    opened = time.perf_counter() - start
    results.put((kt.automations.run_pending(limit=10**9), opened))
    kt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--pg-url", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kartoteka-bench-automations-"))
    plain, automated = setup(work / "plain", False), setup(work / "automated", True)
    for name, url_of in (("SQLite", lambda tag: f"sqlite:///{work / tag}.db"),
                         *((("PostgreSQL", lambda tag: args.pg_url),) if args.pg_url else ())):
        seconds = {}
        for folder, tag in ((plain, "plain"), (automated, "automated")):
            best = None
            for round_ in range(3):
                kt = engine(folder, url_of(f"{tag}{round_}"))
                took = creates(kt, args.creates)
                best = took if best is None else min(best, took)
                if tag == "automated" and round_ == 2:
                    keep = kt
                else:
                    kt.close()
            seconds[tag] = best or 0.0
        ratio = seconds["automated"] / seconds["plain"]
        print(f"{name}: {args.creates} creates {seconds['plain']:.2f} s without, "
              f"{seconds['automated']:.2f} s with one automation: {ratio:.2f}x "
              f"(target at most 1.2x: {'met' if ratio <= 1.2 else 'MISSED'})")
        workers = (1, 2) if name == "PostgreSQL" else (1,)
        for count in workers:
            if count > 1:  # the same events again, pending, for the next run
                keep.close()
                keep = engine(automated, url_of("automated-again"))
                creates(keep, args.creates)
            if count == 1:
                start = time.perf_counter()
                done = [keep.automations.run_pending(limit=10**9)]
                took = time.perf_counter() - start
            else:  # processes, as `kartoteka worker` runs: threads would share one GIL
                context = multiprocessing.get_context("spawn")
                results = context.Queue()
                processes = [context.Process(target=_work, args=(automated, url_of(
                    "automated-again"), results)) for _ in range(count)]
                start = time.perf_counter()
                for process in processes:
                    process.start()
                done = [results.get() for _ in processes]
                took = time.perf_counter() - start - max(opened for _, opened in done)
                done = [n for n, _ in done]
                for process in processes:
                    process.join()
            rate = sum(done) / took
            print(f"{name}: {sum(done)} events through {count} worker(s) in {took:.2f} s: "
                  f"{rate:,.0f} events/s" + (f" (target at least 500: "
                                             f"{'met' if rate >= 500 else 'MISSED'})"
                                             if count == 1 else ""))
        keep.close()


if __name__ == "__main__":
    main()
