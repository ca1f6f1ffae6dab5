"""The web app's pages at scale: server time of the list, board and card pages over
1,000,000 sales, and the weight of a first page load.

    .venv/bin/python bench/web.py                          # 1,000,000 sales on SQLite
    .venv/bin/python bench/web.py --records 50000          # a quick run
    .venv/bin/python bench/web.py --keep bench/results/web-1m.db   # reuse the seeded file

The database is seeded as bench/pipeline.py seeds it (the engine's own tables, filled by
executemany). Each page is then fetched through the ASGI app in-process (TestClient: the
whole server path — routing, the engine's calls, templates — without a network) after
warm-ups, and p50/p95 milliseconds are printed per page: the list, the card, the funnel,
and the board unfiltered and filtered as issue 13 names it (by owner, by one client, by
the clients' city, over a month of creation), plus a manager's board (role `manager`,
read: own) timed at the engine. The first load is the list page's
HTML plus its script and style sheet, in bytes as served (no compression). The target
from issue 13: p95 under 100 ms for the list and board pages on SQLite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/web.py
    sys.path.insert(0, str(ROOT))

from starlette.testclient import TestClient  # noqa: E402

from api import create_app  # noqa: E402
from bench.pipeline import SETUP, seed_pipeline  # noqa: E402
from engine import Kartoteka  # noqa: E402
from engine.access.users import User  # noqa: E402

TARGET_MS = 100.0
#: the engine's own call behind a page (p50 printed beside the page's, to show what the
#: page adds: titles, templates, HTTP)
ENGINE = {
    "list": lambda kt: kt.records.list_page("sale", [("limit", "50"), ("total", "false")]),
    "board": lambda kt: kt.reports.board("sale", [("limit", "10")]),
    "board, owner=7": lambda kt: kt.reports.board("sale", [("owner", "7"), ("limit", "10")]),
    "card": lambda kt: kt.records.get("sale", 500),
    "funnel": lambda kt: kt.reports.funnel("sale", []),
}
PAGES = {
    "list": "/app/sale",
    "list, sorted by amount": "/app/sale?sort=-amount",
    "list, filtered": "/app/sale?currency[eq]=EUR&amount[gte]=1000",
    "list, searched": "/app/sale?q=S-00012",
    "list, page 2": None,  # the first page's next link
    "board": "/app/sale/board",
    # the filtered boards issue 13 names (engine/storage/stage_counts.py says why each is fast)
    "board, owner=7": "/app/sale/board?owner=7",
    "board, one client": "/app/sale/board?client=123",
    "board, client.city": "/app/sale/board?client.city=%D0%9A%D0%B0%D0%B7%D0%B0%D0%BD%D1%8C",
    "board, created in March": "/app/sale/board?created_at%5Bgte%5D=2025-03-01T00:00:00Z"
                               "&created_at%5Blt%5D=2025-04-01T00:00:00Z",
    "card": "/app/sale/500",
    "funnel": "/app/sale/funnel",
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="the SQLite file to seed (kept; reused if there)")
    args = parser.parse_args(argv)
    path = args.keep or ROOT / "bench" / "results" / f"web-{args.records}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    if not path.exists():
        started = time.perf_counter()
        seed_pipeline(url, args.records, progress=lambda line: print(line, flush=True))
        print(f"seeded {args.records:,} sales in {time.perf_counter() - started:.0f} s")
    kt = Kartoteka.open(SETUP, url)
    # a file seeded by an older version: its indexes and the board's counters brought up
    # to date (engine/storage/stage_counts.py), as `kartoteka migrate` would
    for step in kt.migrate().steps:
        print(f"migrated: {step}")
    client = TestClient(create_app(kt), base_url="http://127.0.0.1")
    first = client.get("/app/sale")
    weight = len(first.content) + sum(len(client.get(f"/app/static/{name}").content)
                                      for name in ("app.js", "app.css"))
    next_link = first.text.split('rel="next" href="', 1)[-1].split('"', 1)[0]
    print(f"{'page':<26}{'p50 ms':>9}{'p95 ms':>9}{'engine p50':>12}")
    for name, path_ in PAGES.items():
        target = path_ or "/app/sale" + next_link.replace("&amp;", "&")
        times = []
        for call in range(args.calls + 3):
            started = time.perf_counter()
            response = client.get(target)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                print(f"{name}: {response.status_code}", response.text[:300])
                return 1
            if call >= 3:  # warm-ups
                times.append(elapsed)
        p95 = percentile(times, 0.95)
        flag = " ! above target" if (name == "list" or name.startswith("board")) \
            and p95 > TARGET_MS \
            else ""
        engine = ""
        if name in ENGINE:
            calls = []
            for _ in range(args.calls):
                started = time.perf_counter()
                ENGINE[name](kt)
                calls.append((time.perf_counter() - started) * 1000)
            engine = f"{statistics.median(calls):.1f}"
        print(f"{name:<26}{statistics.median(times):>9.1f}{p95:>9.1f}{engine:>12}{flag}")
    manager = User(7, "manager7@bench.example", None, ("manager",), None, True)
    calls = []
    for call in range(args.calls + 3):
        started = time.perf_counter()
        with kt.acting.as_user(manager):  # read: own — the owner=7 records, by scope
            kt.reports.board("sale", [("limit", "10")])
        if call >= 3:
            calls.append((time.perf_counter() - started) * 1000)
    print(f"{'board of a manager (engine)':<26}{statistics.median(calls):>9.1f}"
          f"{percentile(calls, 0.95):>9.1f}")
    print(f"first load of the list page: {weight:,} bytes (HTML, app.js, app.css)")
    kt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
