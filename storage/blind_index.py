"""Blind-index rows: what a customer is findable by, as keyed digests in their own table."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from .db import driver_connection
from .models import BlindIndex
from .vault import Vault

if TYPE_CHECKING:
    from .customers import CustomerRecord


def index_rows(vault: Vault, customer_id: uuid.UUID, record: CustomerRecord) -> list[dict]:
    digests = vault.indexer.customer_digests(
        email=record.email,
        phone=record.phone,
        external_id=record.external_id,
        texts=[record.name, record.company],
    )
    gen = vault.active_generation
    return [
        {"customer_id": customer_id, "generation": gen, "kind": kind, "digest": digest}
        for digest, kind in digests.items()
    ]


INDEX_COLUMNS = ("customer_id", "generation", "kind", "digest")


async def insert_index_rows(session: AsyncSession, rows: list[dict]) -> None:
    """Blind-index rows straight through the driver (COPY on PostgreSQL, executemany on
    SQLite): an import writes ~20 of them per customer, and SQLAlchemy's per-row parameter
    handling would cost more than the encryption."""
    # In digest order: consecutive inserts go to neighbouring pages of the digest index.
    rows = sorted(rows, key=lambda r: r["digest"])
    conn = await session.connection()
    raw = await driver_connection(session)
    if conn.dialect.name == "postgresql":
        records = [tuple(r[c] for c in INDEX_COLUMNS) for r in rows]
        await raw.copy_records_to_table("blind_index", records=records, columns=INDEX_COLUMNS)
    elif conn.dialect.name == "sqlite":
        records = [(r["customer_id"].hex, r["generation"], r["kind"], r["digest"]) for r in rows]
        sql = "INSERT INTO blind_index (customer_id, generation, kind, digest) VALUES (?, ?, ?, ?)"
        await raw.executemany(sql, records)
    else:
        await session.execute(BlindIndex.__table__.insert(), rows)
