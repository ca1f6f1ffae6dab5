"""The baseline: a hand-written FastAPI + SQLAlchemy Core app over the engine's tables.

Written the way a competent developer would write these four endpoints by hand, with
no engine code in the request path (only `fold_text`, so `kt_search` stays what the
engine's search expects):

    GET   /api/client/{id}                                      one client (ETag)
    GET   /api/sale?stage=negotiation&sort=-amount&limit=50     list with total
    POST  /api/sale   {"number": "...", "client": 7, "amount": "123.45"}   create → 201
    PATCH /api/sale/{id}   {"amount": "99.50"}                   change, version + 1

Sync `def` endpoints (FastAPI runs them in its thread pool), pydantic models in and out,
the same JSON shape as the generated API (money as strings with 2 places, datetimes as
UTC ISO text). The SQLite connection is set up like engine/database.py: WAL,
synchronous=FULL, foreign keys, busy_timeout, BEGIN for reads and BEGIN IMMEDIATE for
writes behind one process-wide lock, so the comparison measures the code, not settings.

    KARTOTEKA_BENCH_DB=sqlite:///bench.db .venv/bin/python -m uvicorn \
        bench.handwritten:app_from_env --factory --port 8001
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from decimal import Decimal
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator, TypeEngine

from engine.types.fields import fold_text

ENV = "KARTOTEKA_BENCH_DB"
Currency = Literal["RUB", "USD", "EUR", "CNY", "IRR"]
Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
CENT = Decimal("0.01")


# -- tables ------------------------------------------------------------------------------

class Money(TypeDecorator[Decimal]):
    """NUMERIC(18, 2) on PostgreSQL; integer cents on SQLite (as the engine stores money)."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(18, 2))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return int(Decimal(value).scaleb(2))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or dialect.name != "sqlite":
            return value  # type: ignore[no-any-return]
        return Decimal(value).scaleb(-2)


class Timestamp(TypeDecorator[str]):
    """UTC timestamps as the ISO text the API returns (SQLite stores exactly that text)."""

    impl = sa.String(32)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.String(32))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return dt.datetime.fromisoformat(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")  # type: ignore[no-any-return]


metadata = sa.MetaData()


def _system_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.Column("updated_at", Timestamp(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("owner", sa.BigInteger()),
    ]


client = sa.Table(
    "client", metadata, *_system_columns(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(64)),
    sa.Column("inn", sa.String(12)),
    sa.Column("email", sa.String(320)),
    sa.Column("phone", sa.String(64)),
    sa.Column("city", sa.String(100)),
    sa.Column("source", sa.String(64)),
    sa.Column("segments", sa.JSON()),
    sa.Column("website", sa.String(2048)),
    sa.Column("notes", sa.Text()),
    sa.Column("kt_search", sa.Text()),
)

sale = sa.Table(
    "sale", metadata, *_system_columns(),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("number", sa.String(32), nullable=False),
    sa.Column("amount", Money()),
    sa.Column("currency", sa.String(64)),
    sa.Column("probability", sa.Integer()),
    sa.Column("expected_on", sa.Date()),
    sa.Column("closed_on", sa.Date()),
    sa.Column("contract_no", sa.String(64)),
    sa.Column("lost_reason", sa.Text()),
    sa.Column("notes", sa.Text()),
    sa.Column("client_id", sa.BigInteger(), sa.ForeignKey("client.id"), nullable=False),
    sa.Column("supplier_id", sa.BigInteger()),
    sa.Column("kt_search", sa.Text()),
)

sale_carriers = sa.Table("sale__carriers", metadata,
                         sa.Column("source_id", sa.BigInteger(), primary_key=True),
                         sa.Column("target_id", sa.BigInteger(), primary_key=True))
sale_products = sa.Table("sale__products", metadata,
                         sa.Column("source_id", sa.BigInteger(), primary_key=True),
                         sa.Column("target_id", sa.BigInteger(), primary_key=True))

CLIENT_COLUMNS = [c for c in client.columns if c.name != "kt_search"]
SALE_COLUMNS = [c for c in sale.columns if c.name != "kt_search"]
SALE_SORTABLE = {"id", "number", "amount", "probability", "expected_on", "closed_on",
                 "created_at", "updated_at"}


# -- models ------------------------------------------------------------------------------

class ClientOut(BaseModel):
    id: int
    created_at: str
    updated_at: str
    version: int
    owner: int | None
    name: str
    kind: str | None
    inn: str | None
    email: str | None
    phone: str | None
    city: str | None
    source: str | None
    segments: list[str] | None
    website: str | None
    notes: str | None


class SaleOut(BaseModel):
    id: int
    created_at: str
    updated_at: str
    version: int
    owner: int | None
    stage: str
    number: str
    amount: Decimal | None
    currency: str | None
    probability: int | None
    expected_on: dt.date | None
    closed_on: dt.date | None
    contract_no: str | None
    lost_reason: str | None
    notes: str | None
    client: int
    supplier: int | None
    carriers: list[int]
    products: list[int]


class SaleList(BaseModel):
    items: list[SaleOut]
    total: int
    next: str | None


class SaleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str = Field(min_length=1, max_length=32)
    client: int = Field(ge=1)
    amount: Amount | None = None
    currency: Currency = "RUB"
    probability: int | None = Field(default=None, ge=0, le=100)
    expected_on: dt.date | None = None
    notes: str | None = None


class SalePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount | None = None
    currency: Currency | None = None
    probability: int | None = Field(default=None, ge=0, le=100)
    expected_on: dt.date | None = None
    contract_no: str | None = Field(default=None, max_length=64)


# -- database ----------------------------------------------------------------------------

class Database:
    """An engine with the same SQLite settings as engine/database.py, and a write lock."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, pool_size=10, max_overflow=20)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.lock: threading.Lock | None = threading.Lock() if self.sqlite else None
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self.lock or nullcontext(), self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                   "busy_timeout=10000", "case_sensitive_like=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write")
                         else "BEGIN")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sale_links(conn: sa.Connection, ids: Sequence[int]) -> dict[str, dict[int, list[int]]]:
    found: dict[str, dict[int, list[int]]] = {}
    for name, table in (("carriers", sale_carriers), ("products", sale_products)):
        by_id: dict[int, list[int]] = {}
        rows = conn.execute(sa.select(table.c.source_id, table.c.target_id)
                            .where(table.c.source_id.in_(ids))
                            .order_by(table.c.source_id, table.c.target_id))
        for source_id, target_id in rows:
            by_id.setdefault(source_id, []).append(target_id)
        found[name] = by_id
    return found


def _sale_out(row: Any, links: dict[str, dict[int, list[int]]]) -> dict[str, Any]:
    record = dict(row)
    record["client"] = record.pop("client_id")
    record["supplier"] = record.pop("supplier_id")
    record["carriers"] = links["carriers"].get(record["id"], [])
    record["products"] = links["products"].get(record["id"], [])
    return record


def _order(sort: str, postgresql: bool) -> list[Any]:
    """ORDER BY for `-amount,number`; NULL sorts as the smallest value, as on SQLite."""
    order, names, descending = [], set(), False

    def key(column: Any, descending: bool) -> Any:
        if postgresql:
            return column.desc().nulls_last() if descending else column.asc().nulls_first()
        return column.desc() if descending else column.asc()

    for part in sort.split(","):
        descending, name = part.startswith("-"), part.lstrip("-")
        if name not in SALE_SORTABLE:
            raise HTTPException(400, f"cannot sort by {name!r}")
        order.append(key(sale.c[name], descending))
        names.add(name)
    if "id" not in names:  # a stable order for paging
        order.append(key(sale.c.id, descending))
    return order


# -- app ---------------------------------------------------------------------------------

def create_app(url: str) -> FastAPI:
    db = Database(url)
    app = FastAPI(title="Hand-written baseline")
    app.state.db = db

    @app.get("/api/client/{client_id}", response_model=ClientOut)
    def get_client(client_id: int, response: Response) -> Any:
        with db.read() as conn:
            row = conn.execute(sa.select(*CLIENT_COLUMNS).where(client.c.id == client_id)).first()
        if row is None:
            raise HTTPException(404, f"no client with id {client_id}")
        response.headers["ETag"] = f'"{row.version}"'
        return row._asdict()

    @app.get("/api/sale", response_model=SaleList)
    def list_sales(stage: str | None = None, client_id: Annotated[int | None, Query(alias="client")] = None,
                   sort: str = "-id", limit: Annotated[int, Query(ge=1, le=500)] = 50,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Any:
        where = []
        if stage is not None:
            where.append(sale.c.stage == stage)
        if client_id is not None:
            where.append(sale.c.client_id == client_id)
        with db.read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(sale).where(*where)).scalar_one()
            rows = conn.execute(sa.select(*SALE_COLUMNS).where(*where).order_by(*_order(sort, not db.sqlite))
                                .limit(limit + 1).offset(offset)).mappings().all()
            more = len(rows) > limit
            rows = rows[:limit]
            links = _sale_links(conn, [row["id"] for row in rows])
        return {"items": [_sale_out(row, links) for row in rows], "total": total,
                "next": str(offset + limit) if more else None}

    @app.post("/api/sale", response_model=SaleOut, status_code=201)
    def create_sale(body: SaleCreate, response: Response) -> Any:
        now = _now()
        values = body.model_dump()
        values["client_id"] = values.pop("client")
        if body.amount is not None:
            values["amount"] = body.amount.quantize(CENT)
        values.update(created_at=now, updated_at=now, version=1, owner=None, stage="lead",
                      supplier_id=None,
                      kt_search=fold_text("\n".join(
                          str(v) for v in (body.number, body.notes) if v not in (None, ""))))
        try:
            with db.write() as conn:
                values["id"] = conn.execute(
                    sa.insert(sale).values(values).returning(sale.c.id)).scalar_one()
        except IntegrityError as error:
            if "FOREIGN KEY" in str(error.orig) or "foreign key" in str(error.orig):
                raise HTTPException(422, f"no client with id {body.client}") from None
            raise HTTPException(409, "another sale already has this number") from None
        response.headers["Location"] = f"/api/sale/{values['id']}"
        response.headers["ETag"] = '"1"'
        record = {c.name: values.get(c.name) for c in SALE_COLUMNS}
        return _sale_out(record, {"carriers": {}, "products": {}})

    @app.patch("/api/sale/{sale_id}", response_model=SaleOut)
    def patch_sale(sale_id: int, body: SalePatch, response: Response) -> Any:
        changes = body.model_dump(exclude_unset=True)
        with db.write() as conn:
            row = conn.execute(
                sa.update(sale).where(sale.c.id == sale_id)
                .values(**changes, version=sale.c.version + 1, updated_at=_now())
                .returning(*SALE_COLUMNS)).mappings().first()
            if row is None:
                raise HTTPException(404, f"no sale with id {sale_id}")
            links = _sale_links(conn, [sale_id])
        response.headers["ETag"] = f'"{row["version"]}"'
        return _sale_out(row, links)

    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory: the database URL comes from $KARTOTEKA_BENCH_DB."""
    return create_app(os.environ[ENV])
