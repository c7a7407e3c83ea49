"""Deals as rows, `/crm pipeline`, and the scheduled digests with their charts, through the
real sync path, the real bolt app and the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from bot.lib.config import ConfigError, parse_config
from handlers import digests
from handlers.sync.apply import syncer
from storage.deals import month_start, rebuild_totals
from storage.models import Base, Deal, DealTotal, DigestRun
from tests.fixtures.bot import (
    ALICE,
    CAROL,
    FINANCE,
    MARKETING,
    SALES,
    TEST_CONFIG,
    bot_settings,
    start_bot,
)
from tests.fixtures.slack import block_texts, eventually

VALUES = '\n[pipeline]\nvalues = ["sales", "finance"]\n'
DIGESTS = """
[[digests]]
department = "finance"
schedule = "mon 08:00"
timezone = "Europe/Berlin"

[[digests]]
department = "marketing"
schedule = "daily 07:30"
"""
_n = iter(range(1, 10**6))


def event(type_, ext, data=None, at=None, src="crm", id_=None, **customer):
    body = {
        "spec": "crm.sync/1",
        "id": id_ or f"pl-{next(_n)}",
        "type": type_,
        "occurred_at": (at or datetime.now(UTC)).isoformat(),
        "source": src,
        "customer": {"external_id": ext, **customer},
    }
    if data is not None:
        body["data"] = data
    return body


def deal(ext, deal_id, stage, amount, at, name="Renewal 2027", id_=None):
    data = {"deal_id": deal_id, "name": name, "stage": stage, "amount": amount, "currency": "EUR"}
    return event("deal.stage_changed", ext, data, at=at, id_=id_)


@pytest.fixture
async def start(db, db_url, sandbox) -> AsyncIterator:
    started = []

    async def go(extra: str = VALUES):
        harness = await start_bot(
            bot_settings(db_url, sandbox), sandbox, config=parse_config(TEST_CONFIG + extra)
        )
        started.append(harness)
        return harness

    yield go
    for harness in started:
        await harness.sim.close()
        await harness.service.stop()


async def apply(bot, *events) -> None:
    for e in events:
        await syncer(bot.deps).handle(e, 1)


async def seed_deals(bot) -> None:
    now = datetime.now(UTC)
    last_month = month_start(now) - timedelta(days=3)
    await apply(
        bot,
        event("customer.upserted", "C-1", name="Ada Lovelace", owner_department="sales"),
        event("customer.upserted", "C-2", name="Grace Hopper", owner_department="service"),
    )
    newest = deal("C-1", "D-1", "negotiation", 3000, now - timedelta(hours=1), id_="d1-newest")
    await apply(
        bot,
        deal("C-1", "D-1", "qualification", 1000, now - timedelta(hours=3)),
        newest,
        deal("C-1", "D-1", "proposal", 2000, now - timedelta(hours=2)),  # late: stale
        newest,  # twice
        deal("C-2", "D-2", "closed_won", 5000, now - timedelta(minutes=5), name="Big win"),
        deal("C-2", "D-3", "closed_lost", 700, last_month, name="Lost one"),
        deal("C-2", "D-4", "proposal", 900, now - timedelta(minutes=1), name="Side deal"),
    )


async def ask(bot, user, channel, args="") -> str:
    n = len(bot.store.ephemerals(user, channel))
    await bot.sim.command(user, channel, "/crm", f"pipeline {args}".strip())
    seen = await eventually(
        lambda: len(bot.store.ephemerals(user, channel)) > n and bot.store.ephemerals(user, channel)
    )
    return seen[-1].text + "\n" + block_texts(seen[-1].blocks)


async def test_deal_events_out_of_order_and_twice_give_the_newest_totals_once(start):
    bot = await start()
    await seed_deals(bot)
    shown = await ask(bot, ALICE, SALES)
    assert "*Negotiation*: 1 deal · 3,000 EUR" in shown
    assert "*Qualification*: 0 deals" in shown
    assert "*Proposal*: 1 deal · 900 EUR" in shown  # D-4 only: D-1's late proposal changed nothing
    assert "*Won this month*: 1 deal · 5,000 EUR" in shown
    assert "*Lost last month*: 1 deal · 700 EUR" in shown
    largest = shown[shown.index("Largest open deals") :]
    assert largest.index("Renewal 2027 · Ada Lovelace") < largest.index("Side deal · Grace Hopper")
    async with bot.deps.db.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(Deal))).scalar_one() == 4
        d1 = await session.get(Deal, "D-1")
        assert (d1.stage, d1.amount) == ("negotiation", 3000)
        raw = [
            repr((await session.execute(text(f"SELECT * FROM {t.name}"))).all())
            for t in Base.metadata.sorted_tables
        ]
    assert not any("Renewal 2027" in r or "Side deal" in r for r in raw)  # names are sealed
    # by department and by owner
    service = await ask(bot, ALICE, SALES, "service")
    assert "*Proposal*: 1 deal · 900 EUR" in service and "Negotiation*: 0 deals" in service
    assert "Usage: `/crm pipeline [department|owner]`" in await ask(bot, ALICE, SALES, "a b")
    # the customer moves to sales: its deals follow, and the kept totals are the recomputed ones
    await apply(bot, event("customer.upserted", "C-2", owner_department="sales"))
    sales = await ask(bot, ALICE, SALES, "sales")
    assert "*Proposal*: 1 deal · 900 EUR" in sales and "*Negotiation*: 1 deal · 3,000 EUR" in sales
    assert "*Proposal*: 0 deals" in await ask(bot, ALICE, SALES, "service")
    kept = await totals(bot)
    async with bot.deps.db.transaction() as session:
        await rebuild_totals(session)
    assert await totals(bot) == kept


async def totals(bot) -> dict:
    async with bot.deps.db.transaction() as session:
        rows = (await session.execute(select(DealTotal))).scalars().all()
    return {
        (r.owner_department, r.owner_slack_user, r.stage, r.currency, r.month): (r.count, r.amount)
        for r in rows
        if r.count
    }


async def test_a_department_without_access_to_values_sees_counts_only(start):
    bot = await start()
    await seed_deals(bot)
    shown = await ask(bot, CAROL, MARKETING)
    assert "*Negotiation*: 1 deal" in shown and "Counts only" in shown
    assert "EUR" not in shown and "Renewal" not in shown and "Ada" not in shown


def digest_messages(bot, channel):
    return [m for m in bot.store.messages(channel) if "Digest for" in (m.get("text") or "")]


def chart_of(bot, channel, ts):
    (reply,) = [m for m in bot.store.thread(channel, ts) if m.get("files")]
    (meta,) = reply["files"]
    return meta, bot.sandbox.store.files[meta["id"]]


async def test_a_digest_due_while_down_is_posted_once_with_its_chart(start):
    bot = await start(VALUES + DIGESTS)  # the Monday 08:00 digest is past due as it starts
    await seed_deals(bot)
    (posted,) = await eventually(lambda: digest_messages(bot, FINANCE), within=30)
    meta, stored = await eventually(lambda: _chart(bot, FINANCE, posted["ts"]), within=30)
    assert stored.data[:8] == b"\x89PNG\r\n\x1a\n" and len(stored.data) == meta["size"]
    assert stored.length == len(stored.data)  # the size declared to getUploadURLExternal
    assert "Overdue invoices" in block_texts(posted["blocks"])
    # marketing may not see values: its digest has none, in text or chart
    (theirs,) = await eventually(lambda: digest_messages(bot, MARKETING), within=30)
    assert "EUR" not in block_texts(theirs["blocks"]) and "Counts only" in block_texts(
        theirs["blocks"]
    )
    meta, _ = await eventually(lambda: _chart(bot, MARKETING, theirs["ts"]), within=30)
    # restarted: the period is not posted again
    await bot.sim.close()
    await bot.service.stop()
    again = await start(VALUES + DIGESTS)
    assert await digests.post_due(again.deps) == 0
    assert len(digest_messages(again, FINANCE)) == 1
    async with again.deps.db.transaction() as session:
        rows = (await session.execute(select(DigestRun))).scalars().all()
    assert len(rows) == 2 and all(r.posted_at and r.file_id for r in rows)


def _chart(bot, channel, ts):
    try:
        return chart_of(bot, channel, ts)
    except ValueError:
        return None


async def test_two_replicas_post_a_digest_once(start):
    one = await start(VALUES + DIGESTS)  # its job claims at once: the two race from here
    two = await start(VALUES + DIGESTS)
    await asyncio.gather(digests.post_due(one.deps), digests.post_due(two.deps))
    await eventually(lambda: digest_messages(one, FINANCE), within=30)

    async def all_posted():
        async with one.deps.db.transaction() as session:
            rows = (await session.execute(select(DigestRun))).scalars().all()
        return len(rows) == 2 and all(r.posted_at for r in rows)

    await eventually(all_posted, within=30)
    await asyncio.gather(digests.post_due(one.deps), digests.post_due(two.deps))
    assert len(digest_messages(one, FINANCE)) == 1
    assert len(digest_messages(one, MARKETING)) == 1
    assert len([m for m in one.store.all_messages(FINANCE) if m.get("files")]) == 1


def test_the_schedule_gives_the_latest_period():
    digest = parse_config(TEST_CONFIG + DIGESTS).digests[0]
    # Wednesday 2026-12-02 10:00 UTC: the Monday before, 08:00 in Berlin (07:00 UTC)
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert digests.latest_due(digest, now) == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    monday = datetime(2026, 11, 30, 6, 59, tzinfo=UTC)  # a minute before it: the week before
    assert digests.latest_due(digest, monday) == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    daily = parse_config(TEST_CONFIG + DIGESTS).digests[1]
    assert digests.latest_due(daily, now) == datetime(2026, 12, 2, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "toml, says",
    [
        ('[[digests]]\nschedule = "mon 08:00"\n', "give a department or a channel"),
        ('[[digests]]\ndepartment = "legal"\nschedule = "mon 08:00"\n', "unknown department"),
        ('[[digests]]\nchannel = "C0X1"\nschedule = "someday"\n', "is not a schedule"),
        (
            '[[digests]]\nchannel = "C0X1"\nschedule = "daily 08:00"\ntimezone = "Mars/Base"\n',
            "is not a time zone",
        ),
        ('[pipeline]\nvalues = ["legal"]\n', "pipeline.values: unknown department"),
    ],
)
def test_bad_digest_config_is_one_line_naming_it(toml, says):
    with pytest.raises(ConfigError) as err:
        parse_config(TEST_CONFIG + toml)
    assert says in str(err.value) and "\n" not in str(err.value)
