"""The generated API, as `kartoteka serve` builds it, for uvicorn's `--factory`.

    KARTOTEKA_BENCH_DB=sqlite:///bench.db .venv/bin/python -m uvicorn \
        bench.generated:app_from_env --factory --port 8002

For experiments only (run.py sets them only when asked): KARTOTEKA_BENCH_INLINE=get,create
chooses which operations run inline on the event loop (`ApiSettings.inline`; empty: none);
KARTOTEKA_BENCH_POOL=32 sets the connection pool size (`DatabaseSettings.pool_size`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from api.app import ApiSettings, create_app
from engine import DatabaseSettings, Kartoteka, Settings, load_setup

ENV = "KARTOTEKA_BENCH_DB"
INLINE_ENV = "KARTOTEKA_BENCH_INLINE"
POOL_ENV = "KARTOTEKA_BENCH_POOL"
SETUP = Path(__file__).resolve().parent.parent / "schemas"


def app_from_env() -> FastAPI:
    if POOL_ENV in os.environ:
        database = DatabaseSettings(url=os.environ[ENV], pool_size=int(os.environ[POOL_ENV]))
        kt = Kartoteka(load_setup(SETUP), Settings(database=database))
    else:
        kt = Kartoteka.open(SETUP, os.environ[ENV])
    kt.verify_database()
    settings = None
    if INLINE_ENV in os.environ:
        inline = frozenset(p.strip() for p in os.environ[INLINE_ENV].split(",") if p.strip())
        settings = ApiSettings(inline=inline)
    return create_app(kt, settings)
