"""Delivery leases: with several replicas, one posts a customer's alerts at a time."""

from datetime import UTC, datetime, timedelta

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
