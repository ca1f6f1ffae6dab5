"""1,000 creates in one bulk call against 1,000 single POSTs, on SQLite, through the ASGI
app (in-process HTTP, no network), the default setup's `client` entity.

    .venv/bin/python bench/bulk.py [--rows 1000] [--synchronous FULL]

Each way runs on its own fresh database file; printed: seconds and rows per second of each,
and the ratio. A single POST is its own transaction and commit; the bulk call is one
transaction with a savepoint per row (engine/records/bulk.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from api import create_app
from engine import DatabaseSettings, Kartoteka, Settings
from engine.setup.loader import load_setup

ROOT = Path(__file__).resolve().parent.parent


def rows(count: int) -> list[dict[str, Any]]:
    """Clients that are no one's duplicates by the default setup's rules (e-mail, phone
    digits, a similar name in the same city): each its own phone and city."""
    return [{"name": f"Компания {i} 公司", "inn": f"{7700000000 + i}", "city": f"Город {i}",
             "email": f"c{i}@example.com",
             "phone": f"+7 999 {i // 10000 % 1000:03d} {i // 100 % 100:02d} {i % 100:02d}"}
            for i in range(count)]


def timed(folder: Path, synchronous: str, work: Callable[[TestClient], None]) -> float:
    settings = Settings(DatabaseSettings(url=f"sqlite:///{folder / 'bench.db'}",
                                         sqlite_synchronous=synchronous))
    kt = Kartoteka(load_setup(ROOT / "schemas"), settings)
    kt.migrate()
    try:
        with TestClient(create_app(kt), base_url="http://127.0.0.1") as http:
            start = time.perf_counter()
            work(http)
            return time.perf_counter() - start
    finally:
        kt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()
    body = rows(args.rows)

    def singles(http: TestClient) -> None:
        for row in body:
            assert http.post("/api/client", json=row).status_code == 201

    def bulk(http: TestClient) -> None:
        answer = http.post("/api/client/bulk", json={"rows": body})
        assert answer.status_code == 200 and answer.json()["created"] == args.rows

    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        single = timed(Path(one), args.synchronous, singles)
        many = timed(Path(two), args.synchronous, bulk)
    print(f"{args.rows} single POSTs: {single:.2f} s ({args.rows / single:,.0f} rows/s)")
    print(f"one bulk call:    {many:.2f} s ({args.rows / many:,.0f} rows/s)")
    print(f"bulk is {single / many:.1f}x faster (SQLite synchronous={args.synchronous})")


if __name__ == "__main__":
    main()
