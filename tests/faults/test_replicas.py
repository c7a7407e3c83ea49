"""Two `crm-bot serve` processes on the same PostgreSQL database and the same queue share the
work (RabbitMQ competing consumers on crm-bot.sync; Slack's requests spread over both, as a load
balancer would): every event applied once, no alert posted twice, none lost."""

from __future__ import annotations

import re

import aiohttp
import pytest

from storage.db import Database
from tests.poll import eventually

from .books import check_books, settled
from .harness import BotProcess
from .users import Traffic

CONSUMED = re.compile(r'^crm_sync_events_total\{outcome="consumed"\} ([0-9.e+]+)$', re.M)


async def consumed(bot: BotProcess) -> float:
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/metrics") as resp:
        found = CONSUMED.search(await resp.text())
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
async def test_two_replicas_share_the_load_without_doubles(stack, stream):
    one = await stack.start_bot(name="replica1")
    two = await stack.start_bot(name="replica2")
    customers = await stream.seed(12)
    db = Database(stack.db_url)
    try:
        await settled(db, stream, stack.amqp_url, within=30)
        traffic = Traffic.start(
            stream,
            [stack.sim_for(one), stack.sim_for(two)],
            stack.sandbox,
            customers,
            rate=15,
            people=4,
        )
        users = traffic.users
        await eventually(lambda: len(stream.published) >= 12 + 120, 30)
        await traffic.end()
        await settled(db, stream, stack.amqp_url, within=60)
    finally:
        await db.close()
    books = await check_books(stack.db_url, stack.amqp_url, stream, stack.sandbox)
    shares = [await consumed(one), await consumed(two)]
    print(books.summary(), "consumed per replica:", shares)
    assert all(share > 0 for share in shares), f"one replica did all the work: {shares}"
    assert users.tally.error_count == 0, users.tally.errors
    books.assert_clean(dead_allowed=set())
    assert len(books.applied) == books.published
