"""Seed a fresh database with realistic clients and sales, through the engine's own tables.

The database is created by the engine (`Kartoteka.open("schemas", url).migrate()`), and
rows are inserted with SQLAlchemy Core executemany into `kt.storage[...].table` in one
write transaction, so every value is encoded exactly as the engine writes it: money as
scaled integers on SQLite (ExactDecimal), datetimes as UTC ISO text, `kt_search` as
`fold_text` of the entity's `search:` fields.

    .venv/bin/python -m bench.seed sqlite:////tmp/bench.db --clients 10000 --sales 200000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import Kartoteka
from engine.storage.tables import SEARCH_COLUMN
from engine.types.fields import fold_text

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "schemas"

RU_FORMS = ["ООО", "АО", "ПАО", "ЗАО"]
RU_WORDS = ["Ромашка", "Север", "Вектор", "Альфа", "Техснаб", "Стройторг", "Металлург",
            "Агроресурс", "Волга", "Сибирь", "Урал", "Меридиан", "Гранит", "Зенит", "Байкал",
            "Профиль", "Импульс", "Лидер", "Ёлочка", "Светлый путь", "Полимер", "Энергия"]
RU_SURNAMES = ["Иванов", "Петров", "Смирнов", "Кузнецов", "Соколов", "Попов", "Лебедев",
               "Козлов", "Новиков", "Морозов", "Фёдоров", "Волков"]
RU_NAMES = ["Иван", "Анна", "Сергей", "Ольга", "Дмитрий", "Елена", "Алексей", "Мария"]
LATIN_WORDS = ["Acme", "Nordic", "Blue River", "Silk Road", "Pars", "Atlas", "Orion", "Delta",
               "Evergreen", "Summit", "Baltic", "Caspian", "Harbor", "Vertex"]
LATIN_KINDS = ["Trading", "Supply", "Logistics", "Industrial", "Foods", "Textiles", "Metals"]
LATIN_FORMS = ["LLC", "GmbH", "Ltd", "Inc.", "B.V."]
CITIES = ["Москва", "Санкт-Петербург", "Казань", "Новосибирск", "Екатеринбург",
          "Нижний Новгород", "Самара", "Ростов-на-Дону", "Краснодар", "Владивосток",
          "Almaty", "Tashkent", "Tehran", "Berlin", "Istanbul", "Shanghai"]
DOMAINS = ["example.ru", "example.com", "mail.example.org", "corp.example.net"]
SOURCES = ["website", "referral", "cold_call", "exhibition", "other", None]
SEGMENTS = [None, None, ["wholesale"], ["retail"], ["wholesale", "vip"], ["retail", "vip"]]
NOTES = ["Перезвонить после праздников", "Просили скидку 5%", "Call back next week",
         "Нужна доставка до склада", "Оплата по факту", "Urgent: needs the invoice today",
         "Тендер, ждём решения комиссии"]
LOST_REASONS = ["Выбрали конкурента", "Дорого", "Project cancelled", "Нет бюджета"]
CURRENCIES = ["RUB"] * 14 + ["USD", "EUR", "CNY", "IRR"]
# share of sales per stage (lead .. lost); sums to 1
STAGE_SHARE = {"lead": 0.22, "proposal": 0.18, "negotiation": 0.15, "contract": 0.10,
               "invoiced": 0.08, "won": 0.15, "lost": 0.12}
NULL_AMOUNT_SHARE = 0.08
START = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class SeedStats:
    url: str
    clients: int
    sales: int
    migrate_s: float
    generate_s: float
    insert_s: float
    rows_per_s: float
    clients_per_s: float
    sales_per_s: float
    stages: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def seed(url: str, clients: int = 10_000, sales: int = 200_000, *, seed_value: int = 42,
         batch: int = 20_000) -> SeedStats:
    """Create the schema at `url` (an empty database) and fill it; return the timings."""
    started = time.perf_counter()
    kt = Kartoteka.open(SETUP, url)
    try:
        kt.migrate()
        migrated = time.perf_counter()
        rng = random.Random(seed_value)
        client_table = kt.storage["client"]
        sale_table = kt.storage["sale"]
        stage_names = list(sale_table.spec.pipeline.all_stage_names)  # type: ignore[union-attr]
        assert set(stage_names) == set(STAGE_SHARE), stage_names
        probabilities = {s.name: s.probability for s in _stages(sale_table.spec)}
        client_rows = [_client(rng, i, clients, client_table.spec.search)
                       for i in range(1, clients + 1)]
        sale_rows = [_sale(rng, i, clients, sales, probabilities, sale_table.spec.search)
                     for i in range(1, sales + 1)]
        generated = time.perf_counter()
        with kt.db.write() as conn:
            client_s = insert_rows(conn, client_table.table, client_rows, batch)
            sale_s = insert_rows(conn, sale_table.table, sale_rows, batch)
        inserted = time.perf_counter()
        if kt.db.dialect == "sqlite":
            with kt.db.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with kt.db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("VACUUM ANALYZE")
        stages: dict[str, int] = {}
        for row in sale_rows:
            stages[row["stage"]] = stages.get(row["stage"], 0) + 1
    finally:
        kt.close()
    insert_s = inserted - generated
    return SeedStats(
        url=url, clients=clients, sales=sales,
        migrate_s=round(migrated - started, 3), generate_s=round(generated - migrated, 3),
        insert_s=round(insert_s, 3),
        rows_per_s=round((clients + sales) / insert_s),
        clients_per_s=round(clients / client_s) if client_s else 0,
        sales_per_s=round(sales / sale_s) if sale_s else 0,
        stages=stages,
    )


def _stages(spec: Any) -> list[Any]:
    pipeline = spec.pipeline.for_record(None)
    return list(pipeline.stages)


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
            batch: int) -> float:
    started = time.perf_counter()
    statement = sa.insert(table)
    for start in range(0, len(rows), batch):
        conn.execute(statement, list(rows[start:start + batch]))
    return time.perf_counter() - started


def _search(values: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """`kt_search` as the engine computes it (engine/records.py `_search_text`)."""
    parts = [str(values[name]) for name in fields if values.get(name) not in (None, "")]
    return fold_text("\n".join(parts)) if parts else None


def _moment(rng: random.Random, index: int, total: int) -> dt.datetime:
    # ids grow with time over two years, with some jitter
    seconds = int(index / max(total, 1) * 730 * 86400) + rng.randint(0, 3600)
    return START + dt.timedelta(seconds=seconds, microseconds=rng.randint(0, 999_999))


def _client(rng: random.Random, i: int, total: int, search: Sequence[str]) -> dict[str, Any]:
    style = rng.random()
    if style < 0.5:
        kind = "company"
        name = f"{rng.choice(RU_FORMS)} «{rng.choice(RU_WORDS)}»"
        if rng.random() < 0.4:
            name = f"{name} {rng.choice(['Трейд', 'Групп', 'Плюс', 'М'])}"
        inn = f"{7_700_000_000 + i * 7:010d}" if rng.random() < 0.8 else None
    elif style < 0.75:
        kind = "company"
        name = f"{rng.choice(LATIN_WORDS)} {rng.choice(LATIN_KINDS)} {rng.choice(LATIN_FORMS)}"
        inn = None
    else:
        kind = "person"
        surname = rng.choice(RU_SURNAMES)
        first = rng.choice(RU_NAMES)
        if first in ("Анна", "Ольга", "Елена", "Мария"):
            surname += "а"
        name = f"ИП {surname} {first}" if rng.random() < 0.5 else f"{surname} {first}"
        inn = f"{500_000_000_000 + i * 13:012d}" if rng.random() < 0.6 else None
    created = _moment(rng, i, total)
    values: dict[str, Any] = {
        "created_at": created,
        "updated_at": created + dt.timedelta(days=rng.randint(0, 30)),
        "version": rng.randint(1, 4),
        "owner": None,
        "name": name,
        "kind": kind,
        "inn": inn,
        "email": f"client{i}@{rng.choice(DOMAINS)}" if rng.random() < 0.85 else None,
        "phone": (f"+7 9{rng.randint(10, 99)} {rng.randint(100, 999)}-"
                  f"{rng.randint(10, 99)}-{rng.randint(10, 99)}") if rng.random() < 0.9 else None,
        "city": rng.choice(CITIES) if rng.random() < 0.95 else None,
        "source": rng.choice(SOURCES),
        "segments": rng.choice(SEGMENTS),
        "website": f"https://www.client{i}.example.com" if rng.random() < 0.3 else None,
        "notes": rng.choice(NOTES) if rng.random() < 0.2 else None,
    }
    values[SEARCH_COLUMN] = _search(values, search)
    return values


def _sale(rng: random.Random, i: int, clients: int, total: int, probabilities: Mapping[str, int],
          search: Sequence[str]) -> dict[str, Any]:
    stage = rng.choices(list(STAGE_SHARE), weights=list(STAGE_SHARE.values()))[0]
    created = _moment(rng, i, total)
    amount = None
    if rng.random() >= NULL_AMOUNT_SHARE:
        cents = max(100, int(rng.lognormvariate(11.5, 1.3) * 100))
        amount = Decimal(cents).scaleb(-2)
    expected = created.date() + dt.timedelta(days=rng.randint(7, 120))
    closed = stage in ("won", "lost")
    values: dict[str, Any] = {
        "created_at": created,
        "updated_at": created + dt.timedelta(hours=rng.randint(0, 2000)),
        "version": rng.randint(1, 6),
        "owner": None,
        "stage": stage,
        "number": f"S-{i:07d}",
        "amount": amount,
        "currency": rng.choice(CURRENCIES),
        "probability": probabilities.get(stage),
        "expected_on": expected if rng.random() < 0.7 else None,
        "closed_on": expected + dt.timedelta(days=rng.randint(-5, 20)) if closed else None,
        "contract_no": (f"Д-{created.year}/{i:06d}"
                        if stage in ("contract", "invoiced", "won") else None),
        "lost_reason": rng.choice(LOST_REASONS) if stage == "lost" else None,
        "notes": rng.choice(NOTES) if rng.random() < 0.15 else None,
        "client_id": rng.randint(1, clients),
        "supplier_id": None,
    }
    values[SEARCH_COLUMN] = _search(values, search)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="an empty database: sqlite:///file.db or postgresql+psycopg://...")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--sales", type=int, default=200_000)
    args = parser.parse_args()
    stats = seed(args.url, args.clients, args.sales)
    print(f"seeded {stats.clients:,} clients and {stats.sales:,} sales in {stats.insert_s} s: "
          f"{stats.rows_per_s:,} rows/s (clients {stats.clients_per_s:,}/s, "
          f"sales {stats.sales_per_s:,}/s)")


if __name__ == "__main__":
    main()
