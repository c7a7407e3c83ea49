"""Key rotation: re-wrap every data key under the active master key, and rebuild the blind
indexes under a new index key. Both go in batches, each batch its own transaction, so an
interrupted run resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import bindparam, delete, func, select, update

from .blind_index import index_rows, insert_index_rows
from .customers import read_record
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
        keys: list[tuple[IndexKey | AuditKey, str]] = [
            *((r, index_key_context(r.generation)) for r in (await s.scalars(select(IndexKey)))),
            *((r, audit_key_context(r.keyed_from)) for r in (await s.scalars(select(AuditKey)))),
        ]
        for row, context in keys:
            if row.key_id != vault.ring.active_id:
                key = vault.ring.unwrap(row.key_id, row.wrapped_key, context)
                row.key_id, row.wrapped_key = vault.ring.wrap(key, context)
    table = Customer.__table__
    # Core statements, not the ORM: the ORM sent one UPDATE per customer (its version check
    # needs each row's count); one executemany per batch writes them all. A row changed by
    # someone else meanwhile (erased, re-created, rotated) keeps its new wrap: the UPDATE
    # matches the old wrap only. The version stays: the record's content did not change.
    rewrite = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.wrapped_key == bindparam("b_old"))
        .values(key_id=bindparam("b_key_id"), wrapped_key=bindparam("b_wrapped"))
    )
    after = None  # keyset paging by id: rows that failed to unwrap are not read again
    while True:
        async with db.transaction() as s:
            stmt = (
                select(table.c.id, table.c.key_id, table.c.wrapped_key)
                .where(table.c.key_id.is_not(None), table.c.key_id != vault.ring.active_id)
                .order_by(table.c.id)
                .limit(batch)
            )
            if after is not None:
                stmt = stmt.where(table.c.id > after)
            rows = (await s.execute(stmt)).all()
            params = []
            for cid, key_id, wrapped in rows:
                key = vault.data_key(cid, key_id, wrapped)
                new_id, new_wrapped = vault.ring.wrap(key, f"customers:{cid}")
                params.append(
                    {"b_id": cid, "b_old": wrapped, "b_key_id": new_id, "b_wrapped": new_wrapped}
                )
            if params:
                await s.execute(rewrite, params)
        if not rows:
            return done
        after = rows[-1][0]
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
            if ids:  # one read, one DELETE and one bulk insert per batch
                found = await s.execute(select(Customer).where(Customer.id.in_(ids)))
                rows = [
                    row
                    for c in found.scalars()
                    if c.erased_at is None
                    for row in index_rows(vault, c.id, read_record(vault, c))
                ]
                await s.execute(delete(BlindIndex).where(BlindIndex.customer_id.in_(ids)))
                if rows:
                    await insert_index_rows(s, rows)
        if not ids:
            break
        done += len(ids)
        if progress:
            progress(len(ids))
    async with db.transaction() as s:
        await s.execute(delete(IndexKey).where(IndexKey.generation < target))
        await vault.load(s)
    return done
