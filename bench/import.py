"""Import speed: rows per second of `kartoteka import` for a 10-field entity with its
generated indexes (a unique code, an indexed city, the search text), validation included.

    .venv/bin/python bench/import.py [--rows 100000] [--db-url URL] [--mode all|good]
                                     [--format csv|xlsx] [--profile [--sort tottime]]

A CSV (or XLSX) of `--rows` rows is written first (not timed), in Russian and Chinese with
dates as 31.12.2026 and decimal commas; then imported into a fresh, migrated database
(SQLite file, or a new database on the PostgreSQL server `--db-url` names, dropped
afterwards) through `Kartoteka.imports`, exactly as the CLI does. Printed: rows, seconds,
rows per second and the process's peak memory. Not a timed test: the target (issue 12) is
≥ 50,000 rows/s on SQLite.
"""

from __future__ import annotations

import argparse
import csv
import gc
import resource
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from engine import DatabaseSettings, Kartoteka, Settings
from engine.exchange.files import open_table
from engine.exchange.imports import ImportOptions
from engine.setup.loader import load_setup

SETUP = {
    "setup.yaml": "name: Import bench\nlanguages: [ru, en]\n",
    "item.yaml": """
        label: {ru: Товар, en: Item}
        title: "{name}"
        search: [name, code]
        fields:
          code:   {type: string, required: true, unique: true, max_length: 20, label: {ru: Код}}
          name:   {type: string, required: true, max_length: 200, label: {ru: Название}}
          city:   {type: string, max_length: 100, index: true, label: {ru: Город}}
          price:  {type: money, min: 0, label: {ru: Цена}}
          qty:    {type: integer, min: 0, label: {ru: Количество}}
          active: {type: boolean, label: {ru: Активен}}
          since:  {type: date, label: {ru: С даты}}
          kind:   {type: choice, options: {goods: {ru: Товар}, service: {ru: Услуга}}, label: {ru: Вид}}
          email:  {type: email, label: {ru: Почта}}
          note:   {type: text, label: {ru: Примечание}}
    """,
}
HEADER = ["Код", "Название", "Город", "Цена", "Количество", "Активен", "С даты", "Вид", "Почта",
          "Примечание"]
CITIES = ["Казань", "Москва", "北京", "Тегеран"]


def row(i: int) -> list[object]:
    return [f"A-{i:08d}", f"Товар {i} 商品", CITIES[i % 4], f"{i % 10000} {i % 1000:03d},50",
            i % 500, "да" if i % 2 else "нет", f"{1 + i % 28}.{1 + i % 12}.2026",
            "Услуга" if i % 3 else "Товар", f"x{i}@example.com", "примечание" if i % 5 else ""]


def write_file(folder: Path, rows: int, fmt: str) -> Path:
    if fmt == "xlsx":
        import openpyxl

        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet("items")
        sheet.append(HEADER)
        for i in range(rows):
            sheet.append(row(i))
        path = folder / "items.xlsx"
        book.save(path)
        return path
    path = folder / "items.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow(row(i))
    return path


def database(folder: Path, url: str | None) -> tuple[str, str | None]:
    """The URL to import into, and the PostgreSQL database to drop afterwards."""
    if url is None:
        return f"sqlite:///{folder / 'bench.db'}", None
    name = "kt_import_bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop(url: str, name: str) -> None:
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def main() -> None:
    # bench/profile.py would shadow the standard library's `profile` cProfile imports
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    import cProfile
    import pstats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--mode", default="all", choices=["all", "good"])
    parser.add_argument("--format", default="csv", choices=["csv", "xlsx"])
    parser.add_argument("--profile", action="store_true", help="print the top of cProfile")
    parser.add_argument("--sort", default="cumulative",
                        help="the profile's order: cumulative, tottime (own time)...")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        setup_dir = folder / "setup"
        setup_dir.mkdir()
        for name, text in SETUP.items():
            (setup_dir / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        source = write_file(folder, args.rows, args.format)
        url, scratch = database(folder, args.db_url)
        kt = Kartoteka(load_setup(setup_dir), Settings(DatabaseSettings(url=url)))
        try:
            kt.migrate()
            profiler = cProfile.Profile() if args.profile else None
            start, cpu = time.perf_counter(), time.process_time()
            with source.open("rb") as data:
                table = open_table(data, source.name)
                gc.freeze()  # as `kartoteka import` does
                if profiler is not None:
                    profiler.enable()
                result = kt.imports.run("item", table, ImportOptions(mode=args.mode))
                if profiler is not None:
                    profiler.disable()
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
            assert result.progress.failed == 0, result.errors[:3]
            assert result.progress.created == args.rows
        finally:
            kt.close()
            if scratch is not None and args.db_url is not None:
                drop(args.db_url, scratch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    where = "PostgreSQL" if args.db_url else "SQLite"
    print(f"{args.rows:,} rows ({args.format}, mode {args.mode}) into {where}: {seconds:.2f} s, "
          f"{args.rows / seconds:,.0f} rows/s; CPU {cpu:.2f} s ({args.rows / cpu:,.0f} rows per "
          f"CPU second: this process's own, steadier on a busy machine); "
          f"peak memory {peak:,.0f} MiB; "
          + (f"the fast path ({result.slow_batches} batches the slower way)"
             if result.slow_path is None else f"the slower way, as {result.slow_path}"))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(35)


if __name__ == "__main__":
    main()
