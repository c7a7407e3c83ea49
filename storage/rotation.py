"""Key rotation: re-wrap every data key under the active master key, and rebuild the blind
indexes under a new index key. Both go in batches, each batch its own transaction, so an
interrupted run resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, func, select

from .customers import Customers
from .db import Database
from .models import AuditKey, BlindIndex, Customer, IndexKey
from .vault import Vault, audit_key_context, index_key_context

Progress = Callable[[int], object]  # told how many more are done; what it returns is ignored


async def count_to_rewrap(db: Database, vault: Vault) -> int:
    async with db.transaction() as s:
        stmt = select(func.count()).select_from(Customer)
        stmt = stmt.where(Customer.key_id.is_not(None), Customer.key_id != vault.ring.active_id)
        return (await s.execute(stmt)).scalar_one()


async def rewrap(db: Database, vault: Vault, batch: int = 500, progress: Progress | None = None):
    """Re-wrap data keys, index keys and the audit key under the active master key. Returns how
    many data keys."""
    done = 0
    async with db.transaction() as s:
        wrapped: list[tuple[IndexKey | AuditKey, str]] = [
            *((r, index_key_context(r.generation)) for r in (await s.scalars(select(IndexKey)))),
            *((r, audit_key_context(r.keyed_from)) for r in (await s.scalars(select(AuditKey)))),
        ]
        for row, context in wrapped:
            if row.key_id != vault.ring.active_id:
                key = vault.ring.unwrap(row.key_id, row.wrapped_key, context)
                row.key_id, row.wrapped_key = vault.ring.wrap(key, context)
    while True:
        async with db.transaction() as s:
            stmt = (
                select(Customer)
                .where(Customer.key_id.is_not(None), Customer.key_id != vault.ring.active_id)
                .limit(batch)
            )
            rows = (await s.execute(stmt)).scalars().all()
            for c in rows:
                key = vault.key_of(c)
                c.key_id, c.wrapped_key = vault.ring.wrap(key, f"customers:{c.id}")
        if not rows:
            return done
        done += len(rows)
        if progress:
            progress(len(rows))


async def count_customers(db: Database) -> int:
    async with db.transaction() as s:
        stmt = select(func.count()).select_from(Customer).where(Customer.erased_at.is_(None))
        return (await s.execute(stmt)).scalar_one()


async def reindex(db: Database, vault: Vault, batch: int = 500, progress: Progress | None = None):
    """Rebuild every blind index under a new index key; resumes an interrupted run."""
    async with db.transaction() as s:
        await vault.load(s)
        gens = sorted(vault.indexers)
        target = gens[-1] if len(gens) > 1 else gens[-1] + 1
        if target not in vault.indexers:
            await vault.add_index_key(s, target)
    done = 0
    while True:
        async with db.transaction() as s:
            stale = (
                select(BlindIndex.customer_id)
                .where(BlindIndex.generation < target)
                .distinct()
                .limit(batch)
            )
            ids = list((await s.execute(stale)).scalars())
            repo = Customers(s, vault)
            for cid in ids:
                customer = await repo.get(cid)
                if customer is not None:  # deleted meanwhile: its index rows went with it
                    await repo.reindex(customer)
        if not ids:
            break
        done += len(ids)
        if progress:
            progress(len(ids))
    async with db.transaction() as s:
        await s.execute(delete(IndexKey).where(IndexKey.generation < target))
        await vault.load(s)
    return done
