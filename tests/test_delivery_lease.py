"""Delivery leases: with several replicas, one posts a customer's alerts at a time."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from storage import sync_ledger
from storage.customers import Customers

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def test_one_owner_at_a_time_and_takeover_after_expiry(db, vault):
    async with db.transaction() as s:
        repo = Customers(s, vault)
        a = (await repo.upsert("A", {"name": "Ada"}, source="crm", occurred_at=T0)).customer.id
        b = (await repo.upsert("B", {"name": "Bob"}, source="crm", occurred_at=T0)).customer.id
    now, ttl = T0, timedelta(seconds=30)
    async with db.transaction() as s:
        assert await sync_ledger.claim(s, [a], "one", now, now + ttl) == [a]
    async with db.transaction() as s:  # the other replica: a is taken, b is free
        assert await sync_ledger.claim(s, [a, b], "two", now, now + ttl) == [b]
    later = now + timedelta(seconds=10)
    async with db.transaction() as s:  # the holder renews
        assert await sync_ledger.claim(s, [a], "one", later, later + ttl) == [a]
    expired = later + ttl + timedelta(seconds=1)
    async with db.transaction() as s:  # "one" stopped renewing: "two" takes over
        assert sorted(await sync_ledger.claim(s, [a, b], "two", expired, expired + ttl)) == sorted(
            [a, b]
        )
    async with db.transaction() as s:
        assert await sync_ledger.claim(s, [a], "one", expired, expired + ttl) == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no row locks
async def test_a_sync_batch_holding_its_customers_does_not_hold_up_their_delivery(db, vault):
    """A sync batch locks its customers' rows while it applies; posting their alerts meanwhile
    writes rows that point at them (a lease, a new thread), and must not wait for the batch.
    With the batch taking FOR UPDATE, the two waited on each other, and PostgreSQL broke the
    cycle after a second as a deadlock, failing one of them (seen in the bench's runs)."""
    async with db.transaction() as s:
        repo = Customers(s, vault)
        a = (await repo.upsert("A", {"name": "Ada"}, source="crm", occurred_at=T0)).customer.id

    async def deliver() -> list:
        async with db.transaction() as s:
            mine = await sync_ledger.claim(s, [a], "one", T0, T0 + timedelta(seconds=30))
            sync_ledger.start_thread(s, a, "C0SALES01", "1700000000.000100")
        return mine

    async with db.transaction() as s:
        batch = Customers(s, vault, batch=True)
        await batch.preload(["A"])
        assert batch.preloaded()[0].id == a
        assert await asyncio.wait_for(deliver(), timeout=10) == [a]  # not blocked by the batch
    async with db.transaction() as s:
        threads = await sync_ledger.threads_of_many(s, [a])
    assert threads == {a: {"C0SALES01": "1700000000.000100"}}
