"""Slack posted, its answer was lost, and the bot looks for the post before posting again:
in a channel it joined at start the look-up finds it; where it cannot look (not in the
channel, a private channel it is no longer in) the outcome stays unknown, so nothing is
posted twice, no alert is marked failed and no handoff is cancelled, until it can look."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bot.lib.config import parse_config
from handlers.handoffs import flow as handoff_flow
from storage.models import AlertDelivery, Handoff
from tests.fixtures.bot import (
    FINANCE,
    FRANK,
    GRACE,
    SALES,
    SERVICE,
    TEST_CONFIG,
    bot_settings,
    start_bot,
)
from tests.fixtures.slack import eventually
from tests.test_handoffs import handoff_via_command, rows, seed
from tests.test_sync import (  # noqa: F401  (sync_bot is a fixture)
    _each_alert_once_where_recorded,
    _none_pending,
    ev,
    processed,
    sync_bot,
    ticket,
)

PRIVATE_FINANCE = "G0FINANCE"


def handoff_posts(store, channel: str) -> list[dict]:
    return [m for m in store.messages(channel) if "Handoff" in m["text"]]


async def handoff_row(bot) -> Handoff:
    (h,) = await rows(bot.deps)
    return h


async def make_due(bot, h: Handoff) -> None:
    """The repost job takes handoffs unposted for REPOST_AFTER."""
    async with bot.deps.db.transaction() as session:
        await session.execute(
            update(Handoff)
            .where(Handoff.id == h.id)
            .values(created_at=datetime.now(UTC) - handoff_flow.REPOST_AFTER - timedelta(seconds=1))
        )


async def test_the_bot_joins_the_public_department_channels_at_start(bot):
    for channel in (SALES, FINANCE, SERVICE):
        assert bot.store.channels[channel]["is_member"], channel
    assert len(bot.sandbox.store.calls("conversations.join")) == 4  # one per department


async def test_a_lost_answer_in_a_joined_channel_is_found_not_posted_again(bot):
    await seed(bot.deps)
    bot.sandbox.fail("chat.postMessage", status=503, times=1, applied=True)
    answer = await handoff_via_command(bot)
    assert "Handed *Ada Lovelace* off to Finance" in answer, answer
    (posted,) = handoff_posts(bot.store, FINANCE)
    h = await handoff_row(bot)
    assert (h.status, h.message_ts) == ("requested", posted["ts"])


async def test_a_lost_answer_where_the_bot_is_not_in_the_channel_cancels_nothing(bot):
    """Removed from #finance after start, the bot still posts there (chat:write.public) but
    cannot read it back: the handoff stays requested, unposted on record, and is adopted by
    the repost job once the bot is back in the channel."""
    await seed(bot.deps)
    bot.sandbox.kick(FINANCE)
    bot.sandbox.fail("chat.postMessage", status=503, times=1, applied=True)
    answer = await handoff_via_command(bot)
    assert "did not confirm" in answer and "cancelled" not in answer, answer
    (posted,) = handoff_posts(bot.store, FINANCE)
    h = await handoff_row(bot)
    assert (h.status, h.message_ts) == ("requested", None)
    await make_due(bot, h)
    assert await handoff_flow.repost_unposted(bot.deps) == 0  # still cannot look: no repost
    assert handoff_posts(bot.store, FINANCE) == [posted]
    bot.sandbox.invite(FINANCE)
    assert await handoff_flow.repost_unposted(bot.deps) == 1
    h = await handoff_row(bot)
    assert (h.status, h.message_ts) == ("requested", posted["ts"])
    assert handoff_posts(bot.store, FINANCE) == [posted]


async def test_a_lost_answer_in_a_private_channel_the_bot_left_cancels_nothing(db, db_url, sandbox):
    """Finance works in a private channel the bot was invited to; the handoff goes out, the
    answer is lost, and the bot is removed before it can look: no second post, no cancel."""
    sandbox.store.add_channel(PRIVATE_FINANCE, name="finance-private", members=[FRANK, GRACE])
    sandbox.invite(PRIVATE_FINANCE)
    config = parse_config(
        TEST_CONFIG.replace(f'channel = "{FINANCE}"', f'channel = "{PRIVATE_FINANCE}"')
    )
    bot = await start_bot(bot_settings(db_url, sandbox), sandbox, config=config)
    changes = sandbox.subscribe()

    async def remove_the_bot_once_posted() -> None:
        while True:
            change = await changes.get()
            if change["type"] == "message" and change["channel"] == PRIVATE_FINANCE:
                sandbox.kick(PRIVATE_FINANCE)
                return

    kicker = asyncio.create_task(remove_the_bot_once_posted())
    try:
        await seed(bot.deps)
        sandbox.fail("chat.postMessage", status=503, times=1, applied=True)
        answer = await handoff_via_command(bot)
        assert "did not confirm" in answer and "cancelled" not in answer, answer
        await kicker
        (posted,) = handoff_posts(bot.store, PRIVATE_FINANCE)
        h = await handoff_row(bot)
        assert (h.status, h.message_ts) == ("requested", None)
        await make_due(bot, h)
        assert await handoff_flow.repost_unposted(bot.deps) == 0
        sandbox.invite(PRIVATE_FINANCE)  # a lead invites the bot back
        assert await handoff_flow.repost_unposted(bot.deps) == 1
        h = await handoff_row(bot)
        assert (h.status, h.message_ts) == ("requested", posted["ts"])
        assert handoff_posts(bot.store, PRIVATE_FINANCE) == [posted]
    finally:
        kicker.cancel()
        sandbox.store.unsubscribe(changes)
        await bot.sim.close()
        await bot.service.stop()


async def _statuses(bot) -> list[str]:
    async with bot.deps.db.transaction() as session:
        return list((await session.execute(select(AlertDelivery.status))).scalars())


async def test_an_alert_whose_answer_was_lost_where_the_bot_cannot_look_is_never_failed(
    sync_bot,  # noqa: F811  (the fixture imported above)
    sandbox,
):
    """The bot was removed from #customer-service: its alert there goes out, the answer is
    lost, the look-up answers not_in_channel. The row stays pending (never failed, so
    `alerts retry` cannot post it twice); back in the channel, the post is found and
    recorded, and nothing is posted twice."""
    bot = await sync_bot()
    await bot.publish(ev("customer.upserted", "C-1", name="Ada"))
    await processed(bot, 1)
    sandbox.kick(SERVICE)
    sandbox.fail("chat.postMessage", status=503, times=2, applied=True)
    before = len(bot.store.all_messages(SERVICE))
    stream = ticket(ext="C-1", tid="T-1")
    await bot.publish(stream)
    await processed(bot, 2)
    await eventually(lambda: len(bot.store.all_messages(SERVICE)) > before)
    # looked for more than once (the flush job tries again), never marked failed
    await eventually(lambda: len(bot.store.calls("conversations.history")) >= 2)
    assert "failed" not in await _statuses(bot) and "pending" in await _statuses(bot)
    sandbox.invite(SERVICE)
    await eventually(lambda: _none_pending(bot), within=20)
    assert "failed" not in await _statuses(bot)
    # the header Slack had is adopted (one thread), the alert shows once, rows `posted`
    await _each_alert_once_where_recorded(bot, [stream], threads=1)
