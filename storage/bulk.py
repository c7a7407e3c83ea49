"""Bulk upsert of customers (imports): new customers go in with multi-row inserts, existing ones
through the ordinary per-record upsert, so both follow the same rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .blind_index import index_rows, insert_index_rows
from .crypto import encrypt_field
from .customers import PERSONAL, PLAIN, CustomerRecord, Customers, clean_changes
from .models import Customer, utcnow
from .vault import Vault


async def upsert_many(
    session: AsyncSession,
    vault: Vault,
    rows: list[dict[str, Any]],
    *,
    source: str,
    occurred_at: datetime,
) -> tuple[int, int]:
    """Upsert validated customer dicts (each with external_id). Returns (created, updated)."""
    by_ext: dict[str, dict[str, Any]] = {}
    for row in rows:  # the last row for an external id wins, as it would one by one
        by_ext[row["external_id"]] = {**by_ext.get(row["external_id"], {}), **row}
    existing = set(
        (
            await session.execute(
                select(Customer.external_id).where(Customer.external_id.in_(list(by_ext)))
            )
        ).scalars()
    )
    repo = Customers(session, vault)
    updated = 0
    for ext in existing:
        result = await repo.upsert(ext, by_ext[ext], source=source, occurred_at=occurred_at)
        updated += bool(result.changed)
    new_customers, new_index = [], []
    now, stamp = utcnow(), {source: occurred_at.isoformat()}
    for ext, raw in by_ext.items():
        if ext in existing:
            continue
        values = clean_changes(raw)
        customer = Customer(id=uuid.uuid4(), external_id=ext)
        key = vault.new_customer_key(customer)
        row = {
            "id": customer.id,
            "external_id": ext,
            "key_id": customer.key_id,
            "wrapped_key": customer.wrapped_key,
            "source_clock": stamp,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for name in PERSONAL:
            row[f"{name}_ct"] = encrypt_field(key, "customers", name, customer.id, values.get(name))
        for name in PLAIN:
            row[name] = values.get(name)
        new_customers.append(row)
        record = CustomerRecord(id=customer.id, external_id=ext, **values)
        new_index += index_rows(vault, customer.id, record)
    if new_customers:
        await session.execute(Customer.__table__.insert(), new_customers)
        await insert_index_rows(session, new_index)
    return len(new_customers), updated
