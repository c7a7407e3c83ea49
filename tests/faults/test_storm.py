"""Alert storms with three replicas: Slack enforcing one message per second per channel (with
a short burst, as Slack allows), 100 urgent escalations about 100 customers in 20 s, each
alerting #sales and #service. Every escalation is visible exactly once in each channel (in a
roll-up or in the customer's thread), no answer 429 comes back, and nothing is posted twice,
also when the replica holding a channel is killed in the middle of the storm."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from storage.db import Database
from tests.fixtures.bot import SALES, SERVICE
from tests.poll import eventually

from .books import check_books, settled
from .harness import BotProcess, Stack
from .stream import EventStream

STORM = 100  # escalations
STORM_SECONDS = 20.0


def ratelimited(stack: Stack) -> int:
    return sum(1 for c in stack.sandbox.store.calls("chat.postMessage") if c.status == 429)


async def escalate(stream: EventStream, customers: list[str], per_second: float) -> None:
    """One urgent escalation per customer, at `per_second`."""
    start = time.monotonic()
    for i, customer in enumerate(customers):
        delay = start + i / per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the pace of the load itself, not a wait for a result
        event = stream.event("ticket.escalated", customer)
        event["data"]["priority"] = "urgent"
        await stream.publish(event)


async def holder(db: Database, channel: str) -> int | None:
    """The pid of the process holding the channel's delivery lease."""
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT owner FROM channel_leases WHERE channel_id = :c"), {"c": channel}
            )
        ).first()
    return int(row[0].split("-", 1)[0]) if row else None


async def run_storm(stack: Stack, stream: EventStream, *, kill: bool) -> None:
    bots = [await stack.start_bot(name=f"replica{i + 1}") for i in range(3)]
    customers = await stream.seed(STORM)
    db = Database(stack.db_url)
    try:
        await settled(db, stream, stack.amqp_url, within=90)
        stack.sandbox.rate_limit(per_channel_per_second=1.0, burst=2)
        # Normal load first: an escalation every 2 s, each posted at once in its own thread.
        await escalate(stream, customers[:5], per_second=0.5)
        await settled(db, stream, stack.amqp_url, within=60)
        assert ratelimited(stack) == 0, "429s under normal load"
        normal = {m["ts"] for c in (SALES, SERVICE) for m in stack.sandbox.store.messages(c)}
        assert len(normal) == 10  # each escalation its own top-level message, per channel

        storm = asyncio.create_task(
            escalate(stream, customers[5:], per_second=(STORM - 5) / STORM_SECONDS)
        )
        if kill:
            await eventually(lambda: len(stream.published) >= STORM + 5 + 45, 60)
            pid = await holder(db, SALES)
            victim: BotProcess = next(b for b in bots if b.pid == pid)
            await victim.kill()
            assert not victim.running
        await storm
        await settled(db, stream, stack.amqp_url, within=120)
    finally:
        await db.close()
    books = await check_books(stack.db_url, stack.amqp_url, stream, stack.sandbox)
    print(books.summary(), "429s:", ratelimited(stack))
    books.assert_clean(dead_allowed=set())
    for channel in (SALES, SERVICE):
        posts = [m for m in stack.sandbox.store.messages(channel) if m["ts"] not in normal]
        rollups = [m for m in posts if "since" in m.get("text", "") and " alerts" in m["text"]]
        assert rollups, f"no roll-up in {channel}"
        assert len(posts) <= STORM_SECONDS, [m["text"][:60] for m in posts]
    assert ratelimited(stack) == 0


@pytest.mark.slow
async def test_a_storm_with_three_replicas_is_rolled_up_once_each_without_429s(stack, stream):
    await run_storm(stack, stream, kill=False)


@pytest.mark.slow
async def test_a_storm_survives_the_replica_holding_a_channel_being_killed(stack, stream):
    await run_storm(stack, stream, kill=True)
