"""Duplicate check speed: how long a create's duplicate check takes on a large client base.

    .venv/bin/python bench/duplicates.py [--rows 1000000] [--db-url URL] [--probes 500]

A fresh database (SQLite file, or a new database on the PostgreSQL server `--db-url`
names, dropped afterwards) gets `--rows` clients with Russian, Chinese and Persian
company names in 60 cities, e-mails and phones, written in bulk with their duplicate keys
exactly as the engine computes them (not timed). Then `--probes` checks are timed, as a
create runs them (`Duplicates.matches`: every rule of the default setup's clients — e-mail,
phone digits, a similar name in the same city): half of them names close to existing
ones (a typo, the words reordered), half new. Printed: rows, key rows, and the checks'
median, 95th percentile and worst times. Not a timed test: the target (issue 12) is a
check under 50 ms on 1,000,000 clients.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from engine import Kartoteka
from engine.setup.duplicates import rule_keys
from engine.storage.duplicates import rules_of, shadow_values

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["Ромашка", "Лютик", "Василёк", "Север", "Восток", "Сибирь", "Торг", "Снаб", "Строй",
         "Маркет", "Альфа", "Вектор", "Гранит", "Омега", "Меридиан", "Инвест", "Техно",
         "Логистик", "Агро", "Сервис", "星辰", "科技", "贸易", "华夏", "长城", "آریا", "کیان",
         "پارس", "سپهر", "Капитал", "Престиж", "Континент", "Орион", "Квант", "Радуга"]
FORMS = ["ООО", "АО", "ИП", "ПАО", "", "有限公司", "شرکت"]
CITIES = [f"Город {chr(0x410 + i % 32)}{i}" for i in range(57)] + ["Казань", "北京", "تهران"]


def name(rng: random.Random) -> str:
    words = rng.sample(WORDS, rng.choice((1, 2, 2, 3)))
    suffix = "".join(rng.choices("абвгдежзиклмнопрст", k=rng.randint(2, 6)))
    return " ".join(w for w in (rng.choice(FORMS), *words, suffix.capitalize()) if w)


def seed(kt: Kartoteka, rows: int, rng: random.Random) -> list[dict[str, object]]:
    """`rows` clients and their keys, in batches; returns a sample of them for the probes."""
    table = kt.storage["client"]
    spec = table.spec
    keys_table = kt.storage.duplicate_keys
    assert keys_table is not None
    sample: list[dict[str, object]] = []
    now = time.time()
    stamp = dt.datetime.now(dt.UTC)
    batch = 20_000
    for start in range(0, rows, batch):
        records, keys = [], []
        for i in range(start, min(rows, start + batch)):
            values: dict[str, object] = {
                "id": i + 1, "name": name(rng), "city": rng.choice(CITIES),
                "email": f"c{i}@example.com", "phone": f"+7 9{i:09d}", "kind": "company",
                "version": 1, "created_at": stamp, "updated_at": stamp}
            shadows = shadow_values(spec, values)
            values.update(shadows)
            records.append(values)
            for rule in rules_of(spec):
                stored = shadows.get(rule.column)
                if rule.similar and stored is not None:
                    keys += [{"entity": "client", "rule": rule.column, "key": key,
                              "record_id": i + 1} for key in rule_keys(stored)]
            if rng.random() < 0.001 and len(sample) < 5000:
                sample.append(values)
        with kt.db.write(system="bench: seeding") as conn:
            conn.execute(sa.insert(table.table), records)
            conn.execute(sa.insert(keys_table), keys)
        print(f"  seeded {min(rows, start + batch):,} ({time.time() - now:.0f} s)",
              file=sys.stderr)
    return sample


def probe(rng: random.Random, sample: list[dict[str, object]]) -> dict[str, object]:
    if rng.random() < 0.5 and sample:
        base = rng.choice(sample)
        words = str(base["name"]).split()
        rng.shuffle(words)
        text = " ".join(words)
        if len(text) > 4 and rng.random() < 0.5:
            at = rng.randrange(len(text))
            text = text[:at] + "о" + text[at + 1:]
        return {"name": text, "city": base["city"], "email": str(base["email"]).upper(),
                "phone": "8" + str(base["phone"])[2:]}
    return {"name": name(rng), "city": rng.choice(CITIES), "email": f"new{rng.random()}@x.ru",
            "phone": f"+1 555 {rng.randrange(10**7):07d}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--db-url", default=None,
                        help="a PostgreSQL server (a database is made and dropped)")
    args = parser.parse_args()
    rng = random.Random(12)
    made: str | None = None
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/duplicates.db"
        if args.db_url:
            made = f"kt_bench_dups_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(args.db_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{made}"'))
            url = str(sa.make_url(args.db_url).set(database=made).render_as_string(
                hide_password=False))
        kt = Kartoteka.open(ROOT / "schemas", url)
        try:
            kt.migrate()
            sample = seed(kt, args.rows, rng)
            spec = kt.storage["client"].spec
            with kt.db.read(system="bench: counting") as conn:
                keys = conn.execute(sa.text("SELECT count(*) FROM kt_duplicate_key")).scalar()
            timings, found = [], 0
            for _ in range(args.probes):
                values = probe(rng, sample)
                start = time.perf_counter()
                with kt.db.read() as conn:
                    matches = kt.records.duplicates.matches(conn, spec,
                                                            shadow_values(spec, values), None)
                timings.append((time.perf_counter() - start) * 1000)
                found += bool(matches)
            timings.sort()
            print(f"{kt.db.dialect}: {args.rows:,} clients, {keys:,} similar-name keys; "
                  f"{args.probes} checks ({found} found candidates): median "
                  f"{statistics.median(timings):.1f} ms, p95 "
                  f"{timings[int(len(timings) * 0.95) - 1]:.1f} ms, worst {timings[-1]:.1f} ms")
        finally:
            kt.close()
            if made is not None:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE "{made}"'))


if __name__ == "__main__":
    main()
