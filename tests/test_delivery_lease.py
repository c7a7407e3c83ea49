"""Channel leases and the shared posting budget: with several replicas, one posts a channel's
alerts at a time, and all of them together post at Slack's pace in each channel."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from bot.lib.pacing import LocalBudget, SharedBudget
from bot.lib.slack_out import SlackOut, make_client
from storage import channels, sync_ledger
from storage.customers import Customers
from tests.fixtures.bot import SALES
from tests.fixtures.slack import BOT_TOKEN

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def test_one_owner_at_a_time_and_takeover_after_expiry(db):
    now, ttl = T0, timedelta(seconds=20)
    async with db.transaction() as s:
        assert await channels.claim(s, ["C1"], "one", now, now + ttl) == ["C1"]
    async with db.transaction() as s:  # the other replica: C1 is taken, C2 is free
        assert await channels.claim(s, ["C1", "C2"], "two", now, now + ttl) == ["C2"]
    async with db.transaction() as s:  # the holder renews before a post; the other may not
        assert await channels.renew(s, "C1", "one", now + 2 * ttl)
        assert not await channels.renew(s, "C1", "two", now + 2 * ttl)
    expired = now + 2 * ttl + timedelta(seconds=1)
    async with db.transaction() as s:  # "one" stopped renewing: "two" takes over
        assert sorted(await channels.claim(s, ["C1", "C2"], "two", expired, expired + ttl)) == [
            "C1",
            "C2",
        ]
    async with db.transaction() as s:  # and "one", back from a long wait, may not post there
        assert not await channels.renew(s, "C1", "one", expired + ttl)
        assert await channels.claim(s, ["C1"], "one", expired, expired + ttl) == []
    async with db.transaction() as s:  # a stop gives the channels up at once
        await channels.release(s, "two")
    async with db.transaction() as s:
        assert await channels.claim(s, ["C1"], "one", expired, expired + ttl) == ["C1"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # replicas need PostgreSQL
async def test_replicas_share_one_budget_per_channel_and_a_429_holds_them_all(db, sandbox):
    """Three SlackOut (three replicas) post 12 messages into one channel at once, Slack
    allowing one a second after a burst of two: on the shared budget no 429 comes back (on
    budgets of their own, each would post at the full rate: checked once, 429s). After a 429
    seen by one, none of them posts before its Retry-After."""
    sandbox.rate_limit(per_channel_per_second=1.0, burst=2)
    outs = [
        SlackOut(make_client(BOT_TOKEN, sandbox.api_url), 1.0, budget=SharedBudget(db, 1.0, 1))
        for _ in range(3)
    ]
    await asyncio.gather(
        *(out.post(SALES, f"{i}-{n}") for n in range(4) for i, out in enumerate(outs))
    )
    posts = sandbox.store.calls("chat.postMessage")
    assert [c.status for c in posts].count(429) == 0
    assert len(sandbox.store.messages(SALES)) == 12
    times = sorted(c.time for c in posts)
    assert times[-1] - times[0] >= 10  # 12 posts at one a second

    sandbox.fail("chat.postMessage", status=429, times=1, retry_after=3)
    await outs[0].post(SALES, "refused once")  # waits out the Retry-After, then goes
    refused = max(c.time for c in sandbox.store.calls("chat.postMessage") if c.status == 429)
    await outs[1].post(SALES, "after the hold")
    last = max(c.time for c in sandbox.store.calls("chat.postMessage") if c.status == 200)
    assert last - refused >= 3


async def test_a_local_budget_paces_one_process():
    budget = LocalBudget(1.0, 2)
    now = time.time()
    slots = [await budget.reserve("C") for _ in range(4)]
    assert slots[1] <= now + 0.01 and slots[2] - slots[1] >= 0.99  # a burst of two, then 1/s
    await budget.hold("C", slots[3] + 5)
    assert await budget.reserve("C") >= slots[3] + 5


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no row locks
async def test_a_sync_batch_holding_its_customers_does_not_hold_up_their_delivery(db, vault):
    """A sync batch locks its customers' rows while it applies; posting their alerts meanwhile
    writes rows that point at them (a new thread), and must not wait for the batch."""
    async with db.transaction() as s:
        repo = Customers(s, vault)
        a = (await repo.upsert("A", {"name": "Ada"}, source="crm", occurred_at=T0)).customer.id

    async def deliver() -> list:
        async with db.transaction() as s:
            mine = await channels.claim(s, ["C0SALES01"], "one", T0, T0 + timedelta(seconds=20))
            sync_ledger.start_thread(s, a, "C0SALES01", "1700000000.000100", "ev-1")
        return mine

    async with db.transaction() as s:
        batch = Customers(s, vault, batch=True)
        await batch.preload(["A"])
        assert batch.preloaded()[0].id == a
        assert await asyncio.wait_for(deliver(), timeout=10) == ["C0SALES01"]
    async with db.transaction() as s:
        threads = await sync_ledger.threads_of_many(s, [a])
    assert threads == {a: {"C0SALES01": "1700000000.000100"}}
