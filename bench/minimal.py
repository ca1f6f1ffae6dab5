"""The floor: a minimal hand-written FastAPI + SQLAlchemy app over a minimal `sale` table.

What the generated API is measured against besides bench/handwritten.py (which works on
the engine's own, wide tables): the least a developer could write for the same four calls,
on the least schema that answers them —

    client (id, name, city, version, created_at, updated_at)              no index
    sale   (id, number, client_id → client, stage, amount, version,
            created_at, updated_at)           2 indexes: UNIQUE (number), (stage, amount)

— no owner, search text, stage history, journal or many-to-many links, so a create is one
INSERT and a patch one UPDATE … RETURNING. The server, the durability and the style are
bench/handwritten.py's: the same `Database` (WAL, `synchronous=FULL`, foreign keys,
busy_timeout, BEGIN IMMEDIATE writes behind one process-wide lock), sync `def` endpoints
in FastAPI's thread pool, pydantic models in and out, money as strings with 2 places.
bench/run.py serves it with the same uvicorn flags as the other two (uvloop + httptools).

    GET   /api/client/{id}                                        one client (ETag)
    GET   /api/sale?stage=negotiation&sort=-amount&limit=50       list with total
    POST  /api/sale   {"number": "...", "client": 7, "amount": "123.45"}   create → 201
    PATCH /api/sale/{id}   {"amount": "99.50"}                     change, version + 1

Its data: `build(seed_url, url)` copies the clients and sales of a database seeded by
bench/seed.py into these tables (same ids, numbers, stages, amounts).

    KARTOTEKA_BENCH_DB=sqlite:///minimal.db .venv/bin/python -m uvicorn \
        bench.minimal:app_from_env --factory --port 8003
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from bench import handwritten
from bench.handwritten import CENT, Amount, Database, Money, Timestamp

ENV = "KARTOTEKA_BENCH_DB"
BATCH = 5_000

metadata = sa.MetaData()


def _system_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.Column("updated_at", Timestamp(), nullable=False),
    ]


client = sa.Table(
    "client", metadata, *_system_columns(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("city", sa.String(100)),
)

sale = sa.Table(
    "sale", metadata, *_system_columns(),
    sa.Column("number", sa.String(32), nullable=False),
    sa.Column("client_id", sa.BigInteger(), sa.ForeignKey("client.id"), nullable=False),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("amount", Money()),
    sa.UniqueConstraint("number", name="uq_sale_number"),
)
# the list's filter and sort; on PostgreSQL with NULLs first, as the sort reads them (NULL
# is the smallest amount, SQLite's order), so `ORDER BY amount DESC NULLS LAST` walks it back
sa.Index("ix_sale_stage_amount", sale.c.stage, sale.c.amount).ddl_if(dialect="sqlite")
sa.Index("ix_sale_stage_amount", sale.c.stage,
         sale.c.amount.nulls_first()).ddl_if(dialect="postgresql")
SORTABLE = {"id", "number", "amount", "created_at", "updated_at"}


# -- models ------------------------------------------------------------------------------

class ClientOut(BaseModel):
    id: int
    version: int
    created_at: str
    updated_at: str
    name: str
    city: str | None


class SaleOut(BaseModel):
    id: int
    version: int
    created_at: str
    updated_at: str
    number: str
    client: int
    stage: str
    amount: Decimal | None


class SaleList(BaseModel):
    items: list[SaleOut]
    total: int
    next: str | None


class SaleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str = Field(min_length=1, max_length=32)
    client: int = Field(ge=1)
    amount: Amount | None = None


class SalePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount | None = None


SALE_COLUMNS = [*(c for c in sale.columns if c.name != "client_id"),
                sale.c.client_id.label("client")]


# -- the app -----------------------------------------------------------------------------

def create_app(url: str) -> FastAPI:
    db = Database(url)
    app = FastAPI(title="Minimal hand-written baseline")
    app.state.db = db
    postgresql = not db.sqlite

    @app.get("/api/client/{client_id}", response_model=ClientOut)
    def get_client(client_id: int, response: Response) -> Any:
        with db.read() as conn:
            row = conn.execute(sa.select(client).where(client.c.id == client_id)).first()
        if row is None:
            raise HTTPException(404, f"no client with id {client_id}")
        response.headers["ETag"] = f'"{row.version}"'
        return row._asdict()

    @app.get("/api/sale", response_model=SaleList)
    def list_sales(stage: str | None = None, sort: str = "-id",
                   limit: Annotated[int, Query(ge=1, le=500)] = 50,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Any:
        where = [] if stage is None else [sale.c.stage == stage]
        descending, name = sort.startswith("-"), sort.lstrip("-")
        if name not in SORTABLE:
            raise HTTPException(400, f"cannot sort by {name!r}")
        order = []
        for column in (sale.c[name], sale.c.id) if name != "id" else (sale.c.id,):
            if postgresql:  # NULL sorts as the smallest value, as on SQLite
                order.append(column.desc().nulls_last() if descending else column.asc().nulls_first())
            else:
                order.append(column.desc() if descending else column.asc())
        with db.read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(sale).where(*where)).scalar_one()
            rows = conn.execute(sa.select(*SALE_COLUMNS).where(*where).order_by(*order)
                                .limit(limit + 1).offset(offset)).mappings().all()
        more = len(rows) > limit
        return {"items": rows[:limit], "total": total,
                "next": str(offset + limit) if more else None}

    @app.post("/api/sale", response_model=SaleOut, status_code=201)
    def create_sale(body: SaleCreate, response: Response) -> Any:
        now = handwritten._now()
        values = {"number": body.number, "client_id": body.client, "stage": "lead",
                  "amount": None if body.amount is None else body.amount.quantize(CENT),
                  "version": 1, "created_at": now, "updated_at": now}
        try:
            with db.write() as conn:
                new_id = conn.execute(sa.insert(sale).values(values).returning(sale.c.id)).scalar_one()
        except IntegrityError as error:
            if "foreign key" in str(error.orig).lower():
                raise HTTPException(422, f"no client with id {body.client}") from None
            raise HTTPException(409, "another sale already has this number") from None
        response.headers["Location"] = f"/api/sale/{new_id}"
        response.headers["ETag"] = '"1"'
        values["client"] = values.pop("client_id")
        return {**values, "id": new_id}

    @app.patch("/api/sale/{sale_id}", response_model=SaleOut)
    def patch_sale(sale_id: int, body: SalePatch, response: Response) -> Any:
        changes = body.model_dump(exclude_unset=True)
        with db.write() as conn:
            row = conn.execute(
                sa.update(sale).where(sale.c.id == sale_id)
                .values(**changes, version=sale.c.version + 1, updated_at=handwritten._now())
                .returning(*SALE_COLUMNS)).mappings().first()
        if row is None:
            raise HTTPException(404, f"no sale with id {sale_id}")
        response.headers["ETag"] = f'"{row["version"]}"'
        return row

    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory: the database URL comes from $KARTOTEKA_BENCH_DB."""
    return create_app(os.environ[ENV])


# -- its data ----------------------------------------------------------------------------

def build(seed_url: str, url: str) -> int:
    """Create the minimal tables in the empty database `url` and copy into them the
    clients and sales of `seed_url` (a database bench/seed.py filled); the rows copied."""
    source, target = sa.create_engine(seed_url), sa.create_engine(url)
    copied = 0
    try:
        metadata.create_all(target)
        pairs = [(handwritten.client, client, [c.name for c in client.columns]),
                 (handwritten.sale, sale, [c.name for c in sale.columns])]
        with source.connect() as read, target.begin() as write:
            for wide, narrow, names in pairs:
                rows = read.execute(sa.select(*(wide.c[n] for n in names)).order_by(wide.c.id))
                while batch := rows.fetchmany(BATCH):
                    write.execute(sa.insert(narrow), [dict(zip(names, row, strict=True))
                                                      for row in batch])
                    copied += len(batch)
            if target.dialect.name == "postgresql":  # ids were copied: new ones come after
                for table in ("client", "sale"):
                    write.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
        if target.dialect.name == "postgresql":
            with target.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    finally:
        source.dispose()
        target.dispose()
    return copied

