"""PostgreSQL unreachable for a few seconds, twice, while events and commands flow.

The outage hits only this test's bot: its DATABASE_URL goes through a TCP proxy in the test
process that drops every connection and refuses new ones for OUTAGE seconds. Events whose
transaction fails go through the retry queues (1 s, then 5 s), the bot takes no new ones until
the database answers again, and then applies them all; commands during the outage get the
one-line "did not work, try again".

An alert Slack accepted just before the cut cannot be marked posted (that commit fails): the
bot keeps it in memory and records it first once the database answers, and a round that finds
it still pending looks for its post by key before posting; the test allows no double.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from storage.db import Database
from tests.poll import eventually

from .books import check_books, settled
from .harness import hold_for
from .proxy import TcpProxy
from .users import Traffic

OUTAGE = 4.0
CUTS = 2


@pytest.mark.slow
async def test_database_unreachable_for_seconds_loses_nothing(stack, stream):
    url = make_url(stack.db_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    bot = await stack.start_bot(database_url=proxied)
    customers = await stream.seed(6)
    db = Database(stack.db_url)  # the checks go straight to the server
    try:
        await settled(db, stream, stack.amqp_url, within=30)
        traffic = Traffic.start(
            stream, [stack.sim_for(bot)], stack.sandbox, customers, rate=10, people=3
        )
        users = traffic.users
        for k in range(CUTS):
            await eventually(lambda k=k: len(stream.published) >= 6 + 30 * (k + 1), 30)
            proxy.cut()
            await hold_for(OUTAGE)
            proxy.restore()
        await eventually(lambda: len(stream.published) >= 6 + 30 * (CUTS + 1), 30)
        await traffic.end()
        await settled(db, stream, stack.amqp_url, within=60)
        await bot.wait_ready(10)  # and it says so again
    finally:
        await db.close()
        await proxy.stop()
    books = await check_books(stack.db_url, stack.amqp_url, stream, stack.sandbox)
    print(books.summary())
    print("commands:", dict(users.tally.ok), "errors:", dict(users.tally.errors))
    assert bot.running and bot.starts == 1, "the bot rode out the outage without a restart"
    assert users.tally.error_count == 0, users.tally.errors
    books.assert_clean(dead_allowed=set())
    assert len(books.applied) == books.published
