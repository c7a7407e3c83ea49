"""The bot killed with SIGKILL and restarted three times while events and commands flow.

Nothing is lost: an event is acked only after its effects are committed, so a killed bot's
unacked deliveries come back to the restarted one, which finds them processed (or not) by id.
A kill between Slack accepting an alert and the commit that marks it posted leaves the post
unrecorded; the restarted bot finds it by the key in its metadata (handlers/sync/delivery.py)
instead of posting it again: the test allows no double.
"""

from __future__ import annotations

import time

import pytest

from storage.db import Database
from tests.poll import eventually

from .books import check_books, settled
from .users import Traffic

KILLS = 3


@pytest.mark.slow
async def test_sigkill_three_times_loses_nothing(stack, stream):
    bot = await stack.start_bot()
    customers = await stream.seed(6)
    db = Database(stack.db_url)
    downtime = []
    try:
        await settled(db, stream, stack.amqp_url, within=30)
        traffic = Traffic.start(
            stream, [stack.sim_for(bot)], stack.sandbox, customers, rate=10, people=3
        )
        users = traffic.users
        for k in range(KILLS):
            await eventually(lambda k=k: len(stream.published) >= 6 + 30 * (k + 1), 30)
            await bot.kill()
            t = time.monotonic()
            await bot.start()
            downtime.append(time.monotonic() - t)
        await eventually(lambda: len(stream.published) >= 6 + 30 * (KILLS + 1), 30)
        await traffic.end()
        await settled(db, stream, stack.amqp_url, within=60)
    finally:
        await db.close()
    books = await check_books(stack.db_url, stack.amqp_url, stream, stack.sandbox)
    print(f"restarts took {[round(d, 1) for d in downtime]}s;", books.summary())
    print("commands:", dict(users.tally.ok), "unreachable:", dict(users.tally.unreachable))
    assert bot.starts == KILLS + 1
    assert users.tally.error_count == 0, users.tally.errors
    books.assert_clean(dead_allowed=set())
    assert len(books.applied) == books.published
