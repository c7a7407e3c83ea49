"""Slack answering 429 and 5xx in bursts (and dropping connections, and losing the answers to
posts it made) while events and commands flow: nothing is lost, nothing is posted twice, every
handoff and approval is consistent."""

from __future__ import annotations

import time

import pytest

from storage.db import Database
from tests.poll import eventually

from .books import check_books, settle_window, settled
from .stream import bad_events
from .users import Traffic


@pytest.mark.slow
async def test_slack_429_and_5xx_bursts_lose_nothing_and_double_nothing(stack, stream):
    bot = await stack.start_bot()
    t0 = time.monotonic()
    customers = await stream.seed(6)
    db = Database(stack.db_url)
    try:
        await settled(db, stream, stack.amqp_url, within=30)
        bad = bad_events(stream, customers[0])
        traffic = Traffic.start(
            stream, [stack.sim_for(bot)], stack.sandbox, customers, rate=10, people=3, extra=bad
        )
        users = traffic.users
        faults = [
            dict(method="chat.postMessage", status=429, times=6, retry_after=1),
            dict(method=None, status=503, times=12),
            dict(method="chat.postMessage", status=500, times=8),
            dict(method=None, status=502, times=4, disconnect=True),
            # Slack posts, and the answer is lost on the way back:
            dict(method="chat.postMessage", status=503, times=6, applied=True),
            dict(method="chat.postMessage", times=4, disconnect=True, applied=True),
        ]
        for i, fault in enumerate(faults):
            await eventually(lambda i=i: len(stream.published) >= 6 + 20 * (i + 1), 30)
            stack.sandbox.fail(**fault)
        await eventually(lambda: len(stream.published) >= 6 + 20 * (len(faults) + 1), 30)
        await traffic.end()
        t1 = time.monotonic()
        await settled(db, stream, stack.amqp_url, within=settle_window(stream, bad))
        print(f"flow {t1 - t0:.1f}s, settle {time.monotonic() - t1:.1f}s")
    finally:
        await db.close()
    books = await check_books(stack.db_url, stack.amqp_url, stream, stack.sandbox)
    print(books.summary(), users.tally.ok, users.tally.errors)
    assert users.tally.error_count == 0, users.tally.errors
    assert stack.sandbox.faults.scripted and all(
        f.times == 0 for f in stack.sandbox.faults.scripted
    )
    books.assert_clean(dead_allowed={e["id"] for e in bad})
    assert len(books.dead) == 2
    assert len(books.applied) == books.published - 2
