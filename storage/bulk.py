"""Bulk upsert of customers (imports): new customers go in set-based, existing ones through the
ordinary per-record upsert, so both follow the same rules.

Split in two so an import can overlap them: `prepare` is CPU only (data keys, wraps, field
encryption, blind-index digests; no database) and may run in a worker thread while the previous
batch is being written; `write` is the database part. `upsert_many` is both, one after the other.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateIndex, DropIndex

from .blind_index import index_rows, insert_index_rows
from .crypto import encrypt_field, new_data_key
from .customers import PERSONAL, PLAIN, CustomerRecord, Customers, clean_changes
from .db import Database, driver_connection
from .models import BlindIndex, Customer, utcnow
from .vault import Vault

CUSTOMER_COLUMNS = (
    "id",
    "external_id",
    "key_id",
    "wrapped_key",
    *(f"{name}_ct" for name in PERSONAL),
    *PLAIN,
    "source_clock",
    "version",
    "created_at",
    "updated_at",
)


@dataclass
class Prepared:
    """A batch made ready to write: each external id's merged row, and for each the customer
    row and blind-index rows it gets if it is new (unused when it turns out to exist)."""

    source: str
    occurred_at: datetime
    by_ext: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    index: dict[str, list[dict]] = field(default_factory=dict)


def prepare(
    vault: Vault, rows: list[dict[str, Any]], *, source: str, occurred_at: datetime
) -> Prepared:
    """Encrypt and index validated customer dicts (each with external_id) as new customers.
    No database: safe in a worker thread (the vault's keys are only read)."""
    out = Prepared(source, occurred_at)
    for row in rows:  # the last row for an external id wins, as it would one by one
        out.by_ext[row["external_id"]] = {**out.by_ext.get(row["external_id"], {}), **row}
    now, stamp = utcnow(), {source: occurred_at.isoformat()}
    for ext, raw in out.by_ext.items():
        values = clean_changes(raw)
        cid = uuid.uuid4()
        key = new_data_key()  # as Vault.new_customer_key, without an ORM object per row
        key_id, wrapped = vault.ring.wrap(key, f"customers:{cid}")
        row = {
            "id": cid,
            "external_id": ext,
            "key_id": key_id,
            "wrapped_key": wrapped,
            "source_clock": stamp,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for name in PERSONAL:
            row[f"{name}_ct"] = encrypt_field(key, "customers", name, cid, values.get(name))
        for name in PLAIN:
            row[name] = values.get(name)
        out.customers[ext] = row
        record = CustomerRecord(id=cid, external_id=ext, **values)
        out.index[ext] = index_rows(vault, cid, record)
    return out


async def write(session: AsyncSession, vault: Vault, batch: Prepared) -> tuple[int, int]:
    """Write a prepared batch: the external ids already stored go through `Customers.upsert`
    (its ordering and change rules), the others are inserted. Returns (created, updated)."""
    wanted = list(batch.by_ext)
    stmt = select(Customer.external_id).where(Customer.external_id.in_(wanted))
    existing = set((await session.execute(stmt)).scalars())
    repo = Customers(session, vault)
    updated = 0
    for ext in existing:
        result = await repo.upsert(
            ext, batch.by_ext[ext], source=batch.source, occurred_at=batch.occurred_at
        )
        updated += bool(result.changed)
    new = [ext for ext in wanted if ext not in existing]
    if new:
        await insert_customers(session, [batch.customers[ext] for ext in new])
        await insert_index_rows(session, [row for ext in new for row in batch.index[ext]])
    return len(new), updated


async def insert_customers(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """New customer rows: COPY on PostgreSQL (asyncpg's binary copy; SQLAlchemy's multi-row
    INSERT cost more than the COPY of twenty times as many index rows), SQLAlchemy's
    executemany elsewhere (on SQLite it is one sqlite3 executemany)."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        await session.execute(Customer.__table__.insert(), rows)
        return
    raw = await driver_connection(session)
    records = [
        tuple(json.dumps(r[c]) if c == "source_clock" else r[c] for c in CUSTOMER_COLUMNS)
        for r in rows
    ]
    await raw.copy_records_to_table("customers", records=records, columns=CUSTOMER_COLUMNS)


BLIND_INDEXES = sorted(BlindIndex.__table__.indexes, key=lambda i: str(i.name))
BULK_CACHE_KIB = 65536


async def bulk_settings(session: AsyncSession) -> None:
    """For a bulk load on SQLite: a 64 MiB page cache on this connection (the default 2 MiB
    holds a small part of the blind index's B-trees, whose inserts land on random pages, so
    every batch read and wrote most of its pages again: the import slowed down as the table
    grew). `synchronous` stays NORMAL, as always in WAL mode: a commit is not synced, a power
    cut may lose the last batches but never corrupts the file, and a re-run resumes."""
    conn = await session.connection()
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")


def _index_names(sync_conn) -> set[str]:
    return {i["name"] for i in sa_inspect(sync_conn).get_indexes("blind_index")}


async def begin_bulk_load(db: Database) -> bool:
    """A first load goes in without the blind index's two B-tree indexes, built once at the
    end (`finish_bulk_load`): ~21 index entries per customer inserted one by one land on
    random pages, and once the indexes outgrow the page cache each batch cost more than the
    last (SQLite, 100,000 customers: 3.6x the CPU of a load and a build after it, and slowing
    down 3x on the way). Only when the table is empty, so a large live index is never
    dropped; searches meanwhile scan. Returns whether this load runs so: also when an earlier
    one was interrupted before its build (its indexes are still missing), which it finishes."""
    async with db.transaction() as s:
        conn = await s.connection()
        present = await conn.run_sync(_index_names)
        if any(i.name not in present for i in BLIND_INDEXES):
            return True
        if (await s.execute(select(BlindIndex.customer_id).limit(1))).first() is not None:
            return False
        for index in BLIND_INDEXES:
            await conn.execute(DropIndex(index))
    return True


async def finish_bulk_load(db: Database) -> None:
    """Build the blind index's indexes (sorting once beats millions of random inserts)."""
    async with db.transaction() as s:
        conn = await s.connection()
        if conn.dialect.name == "postgresql":  # the sort's memory, for this build only
            await conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        present = await conn.run_sync(_index_names)
        for index in BLIND_INDEXES:
            if index.name not in present:
                await conn.execute(CreateIndex(index))


async def upsert_many(
    session: AsyncSession,
    vault: Vault,
    rows: list[dict[str, Any]],
    *,
    source: str,
    occurred_at: datetime,
) -> tuple[int, int]:
    """Upsert validated customer dicts (each with external_id). Returns (created, updated)."""
    batch = prepare(vault, rows, source=source, occurred_at=occurred_at)
    return await write(session, vault, batch)
