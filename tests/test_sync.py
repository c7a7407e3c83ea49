"""RabbitMQ sync through the real bot: events published to RabbitMQ, effects read from the
database and the sandbox Slack. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import aio_pika
import aiohttp
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url

from bot.broker import EXCHANGE, SYNC_QUEUE, dlq_list
from bot.broker.messages import event_message
from bot.lib import metrics
from bot.lib.blocks.alerts import LATEST_BLOCK
from bot.lib.config import parse_config
from bot.lib.slack_out import make_client
from bot.service import Tuning
from storage import outbox, shared_cards
from storage.customers import Customers
from storage.models import (
    AlertDelivery,
    ChannelLease,
    Customer,
    ProcessedEvent,
    TimelineEntry,
)
from tests.faults.proxy import TcpProxy
from tests.fixtures.amqp import depth, rabbitmqctl
from tests.fixtures.bot import (
    FINANCE,
    GENERAL,
    MARKETING,
    SALES,
    SERVICE,
    TEST_CONFIG,
    Harness,
    bot_settings,
    start_bot,
)
from tests.fixtures.cli import run_cli
from tests.fixtures.db import KEY_LINE
from tests.fixtures.slack import BOT_TOKEN, block_texts, eventually

_ids = itertools.count(1)


def ev(type_: str, ext: str = "C-1", data=None, at="2026-03-01T10:00:00Z", src="crm", **cust):
    body = {
        "spec": "crm.sync/1",
        "id": f"ev-{next(_ids)}",
        "type": type_,
        "occurred_at": at,
        "source": src,
        "customer": {"external_id": ext, **cust},
    }
    if data is not None:
        body["data"] = data
    return body


def won(ext="C-1", deal="D-1", **kw):
    data = {"deal_id": deal, "name": "Renewal", "stage": "closed_won", "amount": 12000}
    return ev("deal.stage_changed", ext, {**data, "currency": "EUR"}, **kw)


def ticket(kind="ticket.escalated", ext="C-1", tid="T-1", priority="urgent", subject="Login down"):
    data = {"ticket_id": tid, "subject": subject, "priority": priority}
    return ev(kind, ext, data)


def overdue(ext="C-1", amount=25000, inv="I-1"):
    data = {"invoice_id": inv, "amount": amount, "currency": "EUR", "days_overdue": 12}
    return ev("invoice.overdue", ext, data)


def lead(ext="C-1", score=80):
    return ev("lead.qualified", ext, {"campaign": "spring", "score": score})


def outcome(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("crm_sync_events_total", {"outcome": name}) or 0.0


def posted_total() -> float:
    return metrics.REGISTRY.get_sample_value("crm_alerts_posted_total") or 0.0


class Publisher:
    def __init__(self, url: str):
        self.url = url
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def send(self, *bodies: dict | bytes) -> None:
        if self.connection is None or self.connection.is_closed:
            self.connection = await aio_pika.connect(self.url)
            self.channel = await self.connection.channel()
            self.exchange = await self.channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
        for i in range(0, len(bodies), 200):
            await asyncio.gather(*(self._one(b) for b in bodies[i : i + 200]))

    async def _one(self, body: dict | bytes) -> None:
        if isinstance(body, bytes):
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await self.exchange.publish(message, routing_key="ticket.opened")
        else:
            await self.exchange.publish(event_message(body), routing_key=body["type"])

    async def close(self) -> None:
        if self.connection is not None and not self.connection.is_closed:
            await self.connection.close()


SyncBot = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def sync_bot(db, db_url, sandbox, amqp_url) -> AsyncIterator[SyncBot]:
    """`bot = await sync_bot(extra_toml)`: the real bot consuming from RabbitMQ; `bot.publish`
    sends events; Slack retries are quick (the sandbox's 5xx would otherwise take seconds)."""
    started: list[Harness] = []
    publisher = Publisher(amqp_url)

    async def start(extra: str = "[sync]\ncoalesce_seconds = 0\n") -> Harness:
        harness = await start_bot(
            bot_settings(db_url, sandbox, amqp_url=amqp_url),
            sandbox,
            config=parse_config(TEST_CONFIG + extra),
            tuning=Tuning(per_channel_interval=0, outbox_poll=0.1),
        )
        harness.deps.slack.client = make_client(BOT_TOKEN, sandbox.api_url, backoff=0.01)
        harness.publish = publisher.send  # type: ignore[attr-defined]
        harness.publisher = publisher  # type: ignore[attr-defined]
        started.append(harness)
        return harness

    yield start
    await publisher.close()
    for harness in started:
        await harness.sim.close()
        await harness.service.stop()


async def count(bot: Harness, model, *where) -> int:
    async with bot.deps.db.transaction() as session:
        stmt = select(func.count()).select_from(model).where(*where)
        return (await session.execute(stmt)).scalar_one()


async def processed(bot: Harness, n: int, within: float = 10) -> None:
    await eventually(lambda: _at_least(bot, ProcessedEvent, n), within=within)


async def _at_least(bot, model, n) -> bool:
    return await count(bot, model) >= n


async def record(bot: Harness, ext: str):
    async with bot.deps.db.transaction() as session:
        customers = Customers(session, bot.deps.vault)
        customer = await customers.by_external_id(ext)
        return customers.read(customer) if customer else None


def thread_about(bot: Harness, channel: str, name: str) -> list[dict]:
    """The thread whose header names this customer."""
    for message in bot.store.messages(channel):
        if message.get("subtype") != "thread_broadcast" and name in block_texts(
            message.get("blocks") or []
        ):
            return bot.store.thread(channel, message["ts"])
    raise AssertionError(f"no thread about {name} in {channel}")


def replies(bot: Harness, channel: str) -> list[str]:
    """Every alert text in a channel, each thread's top-level message first (without the
    summary of the thread it keeps current, which repeats the latest alert)."""
    return [
        block_texts([b for b in m.get("blocks") or [] if b.get("block_id") != LATEST_BLOCK])
        for m in bot.store.all_messages(channel)
    ]


async def test_each_type_is_applied_and_alerted_in_the_right_threads(sync_bot):
    bot = await sync_bot()
    ada = ev("customer.upserted", name="Ada Lovelace", email="ada@example.com", tier="strategic")
    await bot.publish(ada, ev("customer.upserted", "C-2", name="Grace Hopper"))
    await processed(bot, 2)
    stream = [
        lead(),
        won(),
        ticket(),  # urgent: broadcast
        overdue(),  # over 10,000: broadcast
        ev("payment.received", data={"invoice_id": "I-1", "amount": 5, "currency": "EUR"}),
        ticket("ticket.opened", tid="T-2", priority="low"),
        ticket("ticket.resolved"),
        won("C-2", "D-9"),
        ev("customer.upserted", tier="enterprise"),
    ]
    await bot.publish(*stream)
    await processed(bot, 11)
    await eventually(lambda: _none_pending(bot))

    # sales: Ada's thread (the lead on top, then escalated ticket, overdue invoice); nothing
    # about C-2. The first alert is the top-level message and names her and her tier.
    sales = bot.store.messages(SALES)
    headers = [m for m in sales if m.get("subtype") != "thread_broadcast"]
    assert len(headers) == 1
    top = block_texts(headers[0]["blocks"])
    assert "Ada Lovelace" in top and "Lead qualified" in top
    assert "(strategic)" in top or "(enterprise)" in top  # her tier as the message was last shown
    assert "ada@example.com" not in json.dumps(sales)
    thread = bot.store.thread(SALES, headers[0]["ts"])
    assert [m["text"].split(":")[0] for m in thread[1:]] == [
        "Ticket [T-1] escalated (urgent priority)",
        "Invoice [I-1] overdue by 12 days",
    ]
    broadcast = [m["text"] for m in sales if m.get("subtype") == "thread_broadcast"]
    assert len(broadcast) == 2 and broadcast[0].startswith("Ticket [T-1]")
    # finance: deal won and invoice, for Ada; deal won for Grace in a thread of her own
    assert len([m for m in bot.store.messages(FINANCE) if m.get("subtype") is None]) == 2
    ada_thread = thread_about(bot, FINANCE, "Ada Lovelace")
    assert "Deal Renewal [D-1]" in ada_thread[0]["text"]
    assert [m["text"][:12] for m in ada_thread[1:]] == ["Invoice [I-1"]
    grace_thread = thread_about(bot, FINANCE, "Grace Hopper")
    assert len(grace_thread) == 1 and grace_thread[0]["text"] == (
        "Grace Hopper: Deal Renewal [D-9] moved to closed won, 12,000.00 EUR"
    )
    # service: deal won and escalated ticket for Ada, deal won for Grace: one message each
    assert len(bot.store.all_messages(SERVICE)) == 3
    assert bot.store.all_messages(MARKETING) == []
    # the record and its (encrypted) timeline
    got = await record(bot, "C-1")
    assert got.tier == "enterprise" and got.name == "Ada Lovelace"
    async with bot.deps.db.transaction() as session:
        customer = await Customers(session, bot.deps.vault).by_external_id("C-1")
        entries = (
            (
                await session.execute(
                    select(TimelineEntry).where(TimelineEntry.customer_id == customer.id)
                )
            )
            .scalars()
            .all()
        )
        texts = [
            bot.deps.vault.open(customer, "timeline", "summary", e.id, e.summary_ct)
            for e in entries
        ]
        assert all(b"Login down" not in (e.summary_ct or b"") for e in entries)
    assert len(entries) == 9
    assert "Ticket [T-2] opened (low priority): Login down" in texts


async def _none_pending(bot: Harness) -> bool:
    return await count(bot, AlertDelivery, AlertDelivery.status == "pending") == 0


async def test_a_stop_lets_the_alerts_being_posted_finish_and_records_them(sync_bot):
    """SIGTERM while alerts go out at Slack's pace: the stop waits for the posting under way,
    so when it returns nothing of this bot is still posting, and every alert Slack shows is
    recorded `posted` (none would be posted again after the restart)."""
    bot = await sync_bot()
    await bot.publish(ev("customer.upserted", name="Ada"))
    await processed(bot, 1)
    bot.deps.slack.per_channel_interval, bot.deps.slack.burst = 0.1, 1
    await bot.publish(*(ticket(tid=f"T-{n}") for n in range(10)))
    await processed(bot, 11)
    await eventually(lambda: len(bot.store.all_messages(SALES)) >= 3)  # posting is under way
    await bot.service.stop()
    delivering = [
        t for t in asyncio.all_tasks() if "Delivery." in t.get_coro().__qualname__ and not t.done()
    ]
    assert delivering == []
    async with bot.deps.db.transaction() as session:
        rows = (
            await session.execute(
                select(AlertDelivery.channel_id, AlertDelivery.ts, AlertDelivery.status)
            )
        ).all()
    for channel in (SALES, SERVICE):
        shown = [m["ts"] for m in bot.store.all_messages(channel)]
        recorded = [ts for ch, ts, status in rows if ch == channel and status == "posted"]
        assert sorted(shown) == sorted(recorded), channel
    assert len(rows) == 20


async def test_out_of_order_events_keep_the_newer_value(sync_bot):
    bot = await sync_bot()
    stale_before = outcome("stale")
    await bot.publish(
        ev("customer.upserted", name="Newer", tier="smb", at="2026-03-01T12:00:00Z"),
        ev("customer.upserted", name="Older", tier="strategic", at="2026-03-01T11:00:00Z"),
        # another source is ordered on its own clock
        ev("customer.upserted", src="billing", at="2026-01-01T00:00:00Z", phone="+49 30 1"),
        # null clears, absent leaves
        ev("customer.upserted", company=None, at="2026-03-01T12:30:00Z"),
    )
    await processed(bot, 4)
    got = await record(bot, "C-1")
    assert (got.name, got.tier, got.phone, got.company) == ("Newer", "smb", "+49 30 1", None)
    assert outcome("stale") == stale_before + 1
    # a deletion ahead of an older upsert: the tombstone keeps the customer erased
    await bot.publish(
        ev("customer.deleted", "C-9", at="2026-03-02T00:00:00Z"),
        ev("customer.upserted", "C-9", name="Late", at="2026-03-01T00:00:00Z"),
    )
    await processed(bot, 6)
    erased = await record(bot, "C-9")
    assert erased.erased and erased.name is None


async def test_the_same_event_twice_has_one_effect_and_one_post(sync_bot):
    bot = await sync_bot()
    await bot.publish(ev("customer.upserted", name="Ada"))
    await processed(bot, 1)
    dup_before = outcome("duplicate")
    twice = ticket()
    await bot.publish(twice, twice)
    await eventually(lambda: outcome("duplicate") == dup_before + 1)
    await eventually(lambda: _none_pending(bot))
    assert await count(bot, TimelineEntry, TimelineEntry.event_id == twice["id"]) == 1
    for channel in (SALES, SERVICE):
        texts = [t for t in replies(bot, channel) if "Ticket [T-1]" in t]
        assert len(texts) == 1, channel


async def test_an_unknown_customer_is_alerted_by_external_id_and_filled_in_when_it_arrives(
    sync_bot, amqp_url
):
    """An escalation about a customer nobody sent yet, with neither name nor email: alerted by
    its external id at once (not retried and dead-lettered); the record, when it comes, is the
    one the event was applied to. It fails when unknown customers go back to being retried."""
    bot = await sync_bot()
    await bot.publish(ticket(ext="C-404"), lead("C-NEW"))
    await processed(bot, 2)
    await eventually(lambda: _none_pending(bot))
    for channel in (SALES, SERVICE):
        texts = [t for t in replies(bot, channel) if "Ticket [T-1]" in t]
        assert len(texts) == 1 and "C-404: a customer not in the shared records yet" in texts[0]
    assert await dlq_list(amqp_url) == []
    # its own record arrives, with an older time from the same source: still applied
    await bot.publish(ev("customer.upserted", "C-404", at="2026-01-01T00:00:00Z", name="Late Lu"))
    await processed(bot, 3)
    got = await record(bot, "C-404")
    assert got.name == "Late Lu" and (await record(bot, "C-NEW")) is not None
    async with bot.deps.db.transaction() as session:
        customer = await Customers(session, bot.deps.vault).by_external_id("C-404")
        kinds = (
            await session.execute(
                select(TimelineEntry.kind).where(TimelineEntry.customer_id == customer.id)
            )
        ).scalars()
        assert sorted(kinds) == ["customer.upserted", "ticket.escalated"]


async def test_an_escalation_about_a_customer_first_seen_in_it_reaches_sales_and_service(
    sync_bot,
):
    """The helpdesk knows the customer first: the event's name and email create the record,
    and its alert reaches both channels within seconds (it was dead-lettered before)."""
    bot = await sync_bot()
    data = {"ticket_id": "T-9", "subject": "Outage", "priority": "urgent"}
    await bot.publish(
        ev("ticket.escalated", "C-FIRST", data, src="helpdesk", name="Nia New", email="n@x.io")
    )
    for channel in (SALES, SERVICE):
        await eventually(
            lambda ch=channel: any("Nia New" in t and "T-9" in t for t in _threads(bot, ch)),
            within=5,
        )
    got = await record(bot, "C-FIRST")
    assert (got.name, got.email) == ("Nia New", "n@x.io")
    assert not any("not in the shared records" in t for t in replies(bot, SALES))


def _threads(bot: Harness, channel: str) -> list[str]:
    """Each top-level message with its replies, as one text."""
    out = []
    for m in bot.store.messages(channel):
        thread = bot.store.thread(channel, m["ts"]) or [m]
        out.append(
            "\n".join(block_texts(x.get("blocks") or []) + (x.get("text") or "") for x in thread)
        )
    return out


async def test_the_retry_schedule_is_the_configs(sync_bot, amqp_url):
    """`[sync] retry_delays` and `max_attempts` decide how long an event is retried."""
    bot = await sync_bot(
        "[sync]\ncoalesce_seconds = 0\nretry_delays = [0.1, 0.3]\nmax_attempts = 3\n"
    )
    retried = outcome("retried")
    # a passing failure: the table an escalation writes to is away (as in a botched deploy)
    async with bot.deps.db.transaction() as session:
        await session.execute(text("ALTER TABLE open_items RENAME TO open_items_away"))
    try:
        await bot.publish(ticket(ext="C-404"))
        letters = await eventually(lambda: dlq_list(amqp_url))
        assert [(d.reason.split(":")[0], d.attempts) for d in letters] == [
            ("gave up after 3 attempts", 3)
        ]
        assert outcome("retried") == retried + 2
    finally:  # the database is shared by the tests that follow
        async with bot.deps.db.transaction() as session:
            await session.execute(text("ALTER TABLE open_items_away RENAME TO open_items"))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a server a proxy can cut
async def test_a_database_outage_outlasting_the_retries_dead_letters_nothing(
    db, db_url, sandbox, amqp_url
):
    """PostgreSQL unreachable for longer than the whole retry schedule (one attempt): the bot
    stops taking events until the database answers again, then applies every one and posts its
    alerts; none is dead-lettered. Consuming on, each event would have gone to the dead letters
    at its first failure."""
    url = make_url(db_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    schedule = "[sync]\ncoalesce_seconds = 0\nretry_delays = [0.1]\nmax_attempts = 1\n"
    bot = await start_bot(
        bot_settings(proxied, sandbox, amqp_url=amqp_url),
        sandbox,
        config=parse_config(TEST_CONFIG + schedule),
    )
    publisher = Publisher(amqp_url)
    try:
        await publisher.send(ev("customer.upserted", name="Ada"))
        await processed(bot, 1)
        proxy.cut()
        await publisher.send(*(ticket(tid=f"T-{n}") for n in range(10)))
        await eventually(lambda: bot.service.consumer.paused)
        # All ten wait in the queue, back from their 0.1 s retry delay (failures not counted).
        await eventually(lambda: _is(depth(amqp_url, SYNC_QUEUE), 10))
        proxy.restore()
        await processed(bot, 11, within=30)
        await eventually(lambda: _none_pending(bot), within=30)
        assert await count(bot, AlertDelivery, AlertDelivery.status == "posted") == 20
        assert len(thread_about(bot, SERVICE, "Ada")) == 10  # the first on top, nine replies
        assert await dlq_list(amqp_url) == []
        assert not bot.service.consumer.paused
    finally:
        await publisher.close()
        await bot.sim.close()
        await bot.service.stop()
        await proxy.stop()


async def _is(value, expected) -> bool:
    return await value == expected


async def test_an_event_arriving_before_its_customer_is_applied_once_the_customer_is(
    sync_bot, amqp_url
):
    """Sent out of order: the event is applied at once to a bare record (not retried), and
    the record's creating event fills it in; nothing is dead-lettered."""
    bot = await sync_bot()
    retried = outcome("retried")
    await bot.publish(ticket(ext="C-LATE"))
    await processed(bot, 1)
    await bot.publish(lead("C-LATE"))
    await processed(bot, 2)
    customer = await record(bot, "C-LATE")
    async with bot.deps.db.transaction() as session:
        stmt = select(TimelineEntry.kind).where(TimelineEntry.customer_id == customer.id)
        kinds = set((await session.execute(stmt)).scalars())
    assert kinds == {"lead.qualified", "ticket.escalated"}
    assert await dlq_list(amqp_url) == [] and outcome("retried") == retried


async def test_own_events_are_ignored(sync_bot):
    bot = await sync_bot()
    before = outcome("ignored")
    await bot.publish(ev("customer.upserted", "C-OWN", src="crm-bot", name="Loop"))
    await eventually(lambda: outcome("ignored") == before + 1)
    assert await record(bot, "C-OWN") is None


def malformed(i: int) -> bytes | dict:
    kinds = [
        b"{not json",
        b'"a string"',
        ev("ticket.opened", data={"ticket_id": "T"}),  # subject and priority missing
        ev("invoice.overdue", at="last tuesday", data={}),
        {**ev("lead.qualified", data={"campaign": "x", "score": 5}), "spec": "crm.sync/0"},
    ]
    return kinds[i % len(kinds)]


async def test_malformed_among_good_ones_are_dead_lettered_and_the_rest_applied(sync_bot, amqp_url):
    bot = await sync_bot()
    good = [
        ev("customer.upserted", f"C-{i % 250}", at=f"2026-03-01T10:{i // 250:02d}:00Z", tier="smb")
        for i in range(1000)
    ]
    bad = [malformed(i) for i in range(100)]
    mixed = list(itertools.chain.from_iterable(zip(good[::10], bad, strict=True)))
    mixed += [g for i, g in enumerate(good) if i % 10]
    await bot.publish(*mixed)
    await processed(bot, 1000, within=60)
    letters = await eventually(lambda: _letters(amqp_url, 100), within=20)
    reasons = Counter(d.reason.split(":")[0] for d in letters)
    assert sum(reasons.values()) == 100 and set(reasons) <= {
        "invalid JSON",
        "body refused",
        "schema",
    }
    assert await count(bot, Customer) == 250
    assert bot.service.consumer.connected
    await bot.publish(ev("customer.upserted", "C-AFTER", name="Still here"))
    await processed(bot, 1001)


async def _letters(url: str, n: int):
    letters = await dlq_list(url, limit=n + 10)
    return letters if len(letters) >= n else None


async def test_slack_failing_for_a_while_then_every_alert_posted_once(sync_bot, sandbox):
    # Rate limits off: the subject is recovery from 5xx; 24 posts a channel would otherwise
    # take 20 s at Slack's one a second (test_calls_per_action checks the bot under them).
    sandbox.rate_limits_off()
    bot = await sync_bot()
    customers = [f"C-{i}" for i in range(4)]
    await bot.publish(*(ev("customer.upserted", c, name=f"Cust {c}") for c in customers))
    await processed(bot, 4)
    sandbox.fail("chat.postMessage", status=503, times=40)
    stream = [ticket(ext=c, tid=f"T-{c}-{n}") for n in range(5) for c in customers]
    await bot.publish(*stream)
    await processed(bot, 24, within=20)
    await eventually(lambda: _none_pending(bot), within=20)
    assert sandbox.faults.scripted[0].times == 0  # the failures did happen
    await _each_alert_once_where_recorded(bot, stream, threads=4)


async def test_alerts_whose_answers_slack_lost_are_posted_once(sync_bot, sandbox):
    """Slack posts, and its answer is lost (a 5xx, a dropped connection): the bot finds each
    such post by its key instead of posting it again (slack_sdk's own retries would)."""
    bot = await sync_bot()
    customers = [f"C-{i}" for i in range(3)]
    await bot.publish(*(ev("customer.upserted", c, name=f"Cust {c}") for c in customers))
    await processed(bot, 3)
    sandbox.fail("chat.postMessage", status=503, times=10, applied=True)
    sandbox.fail("chat.postMessage", disconnect=True, times=6, applied=True)
    stream = [ticket(ext=c, tid=f"T-{c}-{n}") for n in range(3) for c in customers]
    await bot.publish(*stream)
    await processed(bot, 12, within=20)
    await eventually(lambda: _none_pending(bot), within=20)
    assert [f.times for f in sandbox.faults.scripted] == [0, 0]  # 16 answers were lost
    await _each_alert_once_where_recorded(bot, stream, threads=3)


@pytest.mark.parametrize("window", [0, 1], ids=["one-per-alert", "coalesced"])
async def test_posts_a_crashed_process_left_unrecorded_are_found_by_the_next_one(
    sync_bot, sandbox, window
):
    """What a crash between Slack's answer and the record leaves: posts in Slack, their rows
    still pending. Here Slack's answers are lost and so are the lookups, until the bot stops;
    a new process, once the dead one's lease ran out, finds those posts by their keys (a
    customer's first alert, the top-level message of its thread, among them) and posts only
    the rest."""
    config = f"[sync]\ncoalesce_seconds = {window}\nstorm_threshold = 100\n"  # no roll-up
    bot = await sync_bot(config)
    await bot.publish(ev("customer.upserted", "C-1", name="Ada"), ticket(ext="C-1", tid="T-0"))
    await bot.publish(ev("customer.upserted", "C-2", name="Bea"))
    await processed(bot, 3)
    await eventually(lambda: _none_pending(bot))  # Ada has threads; Bea has none yet
    for method in ("conversations.history", "conversations.replies"):
        sandbox.fail(method, status=503, times=10_000)
    sandbox.fail("chat.postMessage", status=503, times=10_000, applied=True)
    stream = [ticket(ext=c, tid=f"T-{c}-{n}") for n in range(3) for c in ("C-1", "C-2")]
    await bot.publish(*stream)
    await processed(bot, 9)
    # In Slack, unrecorded: Ada's first new alert (a reply) and Bea's first alert (top-level).
    try:
        await eventually(lambda: all(len(bot.store.all_messages(c)) == 3 for c in (SALES, SERVICE)))
    except AssertionError:
        print(
            "DBG",
            [
                [(m["ts"], m.get("thread_ts"), m["text"][:30]) for m in bot.store.all_messages(c)]
                for c in (SALES, SERVICE)
            ],
        )
        raise
    await bot.service.stop()
    sandbox.clear_faults()
    async with bot.deps.db.transaction() as session:
        assert await count(bot, AlertDelivery, AlertDelivery.status == "pending") == 12
        await session.execute(update(ChannelLease).values(until=datetime(2000, 1, 1, tzinfo=UTC)))

    after = await sync_bot(config)
    await eventually(lambda: _none_pending(after), within=20)
    await _each_alert_once_where_recorded(after, [ticket(ext="C-1", tid="T-0"), *stream], threads=2)


async def test_alerts_slack_refused_are_listed_counted_and_posted_again_on_retry(
    sync_bot, sandbox, db_url, tmp_path
):
    """#finance archived: its alert fails for good (the other channel's goes out), is counted
    and listed by `crm-bot alerts failed` (without its text); once the channel is back,
    `crm-bot alerts retry --channel` hands it back to the running bot, which posts it."""
    bot = await sync_bot()
    await bot.publish(ev("customer.upserted", name="Ada Lovelace"))
    await processed(bot, 1)
    sandbox.store.channels[FINANCE]["is_archived"] = True
    refused_before = _failed_total("is_archived")
    deal = won()
    await bot.publish(deal)
    await processed(bot, 2)
    await eventually(lambda: _none_pending(bot))
    assert _failed_total("is_archived") == refused_before + 1
    assert "Deal Renewal [D-1] moved to closed won" in "\n".join(replies(bot, SERVICE))
    assert bot.store.all_messages(FINANCE) == []

    def crm_bot(*args: str) -> subprocess.CompletedProcess:
        env = {"DATABASE_URL": db_url, "CRM_MASTER_KEYS": KEY_LINE}
        done = run_cli(*args, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    listed = crm_bot("alerts", "failed").stdout.splitlines()
    assert listed[-1] == "1 failed alerts"
    assert listed[0].split("\t")[1:] == [deal["id"], FINANCE, "is_archived"]
    assert "Ada" not in "\n".join(listed) and "Renewal" not in "\n".join(listed)

    sandbox.store.channels[FINANCE]["is_archived"] = False
    none = crm_bot("alerts", "retry", "--channel", "C0NOSUCH1").stdout
    assert none.startswith("0 failed alerts are pending again")
    again = crm_bot("alerts", "retry", "--channel", FINANCE).stdout
    assert again.startswith("1 failed alerts are pending again")
    thread = await eventually(lambda: bot.store.all_messages(FINANCE), within=10)
    await eventually(lambda: _none_pending(bot))
    texts = [block_texts(m.get("blocks") or []) for m in bot.store.all_messages(FINANCE)]
    assert len(texts) == 1, thread  # the first alert: the top-level message
    assert "Ada Lovelace" in texts[0] and "moved to closed won" in texts[0], thread
    assert crm_bot("alerts", "failed").stdout.strip() == "0 failed alerts"


def _failed_total(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("crm_alerts_failed_total", {"kind": kind}) or 0.0


async def _each_alert_once_where_recorded(bot: Harness, stream: list[dict], threads: int) -> None:
    """Every ticket of the stream shows once in SALES and in SERVICE, in one thread per
    customer, and its ledger row is `posted` with the ts of the message that shows it."""
    tickets = {e["id"]: f"Ticket [{e['data']['ticket_id']}] escalated" for e in stream}
    for channel in (SALES, SERVICE):
        texts = "\n".join(replies(bot, channel))
        for line in tickets.values():
            assert texts.count(line) == 1, (channel, line)
        headers = [m for m in bot.store.messages(channel) if m.get("subtype") != "thread_broadcast"]
        assert len(headers) == threads  # one thread per customer, however often posting failed
    async with bot.deps.db.transaction() as session:
        rows = (
            await session.execute(
                select(AlertDelivery).where(AlertDelivery.event_id.in_(list(tickets)))
            )
        ).scalars()
        for row in rows:
            assert row.status == "posted"
            shown = bot.store.message(row.channel_id, row.ts)
            assert shown is not None and tickets[row.event_id] in block_texts(shown["blocks"])


async def test_a_burst_is_coalesced_and_its_top_level_message_updated_a_few_times(sync_bot):
    """60 alerts about one customer at once: the first is the top-level message (what
    happened, for whom), the rest reply in its thread in a few bunches (one per coalescing
    window), and the top-level message is kept current (count, latest) with a few updates,
    not one per alert."""
    bot = await sync_bot("[sync]\ncoalesce_seconds = 1\n")
    await bot.publish(ev("customer.upserted", name="Busy", tier="enterprise"))
    await processed(bot, 1)
    posted_before = posted_total()
    burst = [ticket(tid=f"T-{n}", priority="normal") for n in range(60)]
    await bot.publish(*burst)
    await processed(bot, 61)
    await eventually(lambda: _none_pending(bot), within=10)
    assert posted_total() == posted_before + 2 * 60
    for channel in (SALES, SERVICE):
        top, *later = bot.store.all_messages(channel)
        assert top.get("thread_ts") in (None, top["ts"])
        what = block_texts(top["blocks"])
        assert "Busy" in what and "(enterprise)" in what and "Ticket [T-0] escalated" in what
        assert all(m.get("thread_ts") == top["ts"] for m in later)
        gaps = [float(b["ts"]) - float(a["ts"]) for a, b in zip([top, *later], later, strict=False)]
        assert 1 <= len(later) <= 12 and min(gaps) >= 0.9, gaps  # one bunch per window
        body = "\n".join(replies(bot, channel))
        assert all(body.count(f"Ticket [T-{n}] escalated") == 1 for n in range(60))
        assert any(m["text"].endswith(" updates") for m in later)
        in_thread = sum(
            1
            for n in range(60)
            if f"Ticket [T-{n}] escalated" in "".join(replies(bot, channel)[1:])
        )

        def current(top_ts=top["ts"], channel=channel, n=in_thread) -> bool:
            shown = block_texts(bot.store.message(channel, top_ts)["blocks"])
            return f"{n} updates in the thread" in shown and "latest: Ticket [T-" in shown

        await eventually(current, within=10)
        updates = [c for c in bot.store.calls("chat.update") if c.body.get("ts") == top["ts"]]
        assert 1 <= len(updates) <= 5, len(updates)


async def share_card(bot: Harness):
    """Ada (C-1, tier smb) with a card shared to #general: (her id, the card's ts)."""
    await bot.publish(ev("customer.upserted", name="Ada", tier="smb"))
    await processed(bot, 1)
    posted = await bot.deps.slack.post(GENERAL, "Ada: tier smb")
    async with bot.deps.db.transaction() as session:
        customer = await Customers(session, bot.deps.vault).by_external_id("C-1")
        shared_cards.remember(session, customer.id, GENERAL, posted["ts"], "U0ALICE01")
    return customer.id, posted["ts"]


def card_shows(bot: Harness, ts: str, text: str) -> dict | None:
    card = bot.store.message(GENERAL, ts)
    return card if text in block_texts(card.get("blocks") or []) else None


async def test_shared_cards_are_updated_in_place(sync_bot):
    bot = await sync_bot()
    _, ts = await share_card(bot)
    await bot.publish(ev("customer.upserted", tier="strategic", email="new@example.com"))
    card = await eventually(lambda: card_shows(bot, ts, "strategic"))
    assert "new@example.com" not in json.dumps(card)
    # an event that changes nothing a card shows leaves it alone
    edits = len(bot.store.history(GENERAL, ts))
    await bot.publish(ev("customer.upserted", notes="private"))
    await processed(bot, 3)
    assert len(bot.store.history(GENERAL, ts)) == edits


async def test_a_card_change_outlasting_slacks_failures_is_shown_and_dead_letters_nothing(
    sync_bot, sandbox, amqp_url
):
    """chat.update failing for longer than the event's whole retry schedule (two attempts): the
    event is applied and acknowledged, its card stays marked stale, and the flush job updates
    it once Slack answers again; nothing is dead-lettered."""
    bot = await sync_bot("[sync]\ncoalesce_seconds = 0\nretry_delays = [0.1]\nmax_attempts = 2\n")
    customer_id, ts = await share_card(bot)
    sandbox.fail("chat.update", status=503, times=12)  # three calls, with slack_sdk's retries
    await bot.publish(ev("customer.upserted", tier="strategic"))
    await processed(bot, 2)
    await eventually(lambda: card_shows(bot, ts, "strategic"), within=20)
    assert sandbox.faults.scripted[0].times == 0  # the failures did happen
    await eventually(lambda: _card_marked_shown(bot, customer_id))
    assert await dlq_list(amqp_url) == []


async def _card_marked_shown(bot: Harness, customer_id) -> bool:
    async with bot.deps.db.transaction() as session:
        [card] = await shared_cards.for_customer(session, customer_id)
    return card.stale == 0


async def test_outbox_rows_reach_a_handoff_queue_once_each(sync_bot, amqp_url):
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, "handoff.#")
    bot = await sync_bot()
    async with bot.deps.db.transaction() as session:
        rows = [
            outbox.add(session, "handoff.requested", "C-1", {"handoff_id": f"h-{i}"})
            for i in range(5)
        ]
        outbox.add(session, "approval.requested", "C-1", {"approval_id": "a-1"})
    bot.deps.wake_outbox()
    got: list[str] = []

    async def drain():
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(json.loads(message.body)["id"])
        return len(got) >= 5

    await eventually(drain)
    await eventually(lambda: _relay_idle(bot))
    assert await queue.get(no_ack=True, fail=False) is None
    assert sorted(got) == sorted(str(r.id) for r in rows)
    await connection.close()


async def _relay_idle(bot: Harness) -> bool:
    async with bot.deps.db.transaction() as session:
        return not await outbox.pending(session)


async def test_readyz_reports_the_broker(sync_bot):
    bot = await sync_bot()
    async with aiohttp.ClientSession() as http, http.get(bot.service.url + "/readyz") as r:
        assert r.status == 200
        assert (await r.json())["broker"] is True


def _drop_connections(vhost: str) -> None:
    """The network drops this session's connections only (other test runs are not touched)."""
    out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "vhost")
    for line in out.splitlines():
        if line.split()[1:] == [vhost]:
            rabbitmqctl("close_connection", line.split()[0], "test: connection dropped")


async def test_dropped_connections_mid_stream_lose_nothing(sync_bot, amqp_vhost, sandbox):
    # Rate limits off: the subject is the broker. The bot still paces itself at about a post a
    # second per channel (its shared budget), so the stream is 100 tickets, not minutes of posts.
    sandbox.rate_limits_off()
    bot = await sync_bot()
    people = [ev("customer.upserted", f"C-{i}", name=f"P {i}") for i in range(40)]
    stream = [ticket(ext=f"C-{i % 40}", tid=f"T-{i}", priority="low") for i in range(100)]
    await bot.publish(*people)
    await processed(bot, 40)
    await bot.publish(*stream[:75])
    await processed(bot, 80)
    await bot.publisher.close()  # ours would be dropped too
    bot.publisher.connection = None
    await asyncio.to_thread(_drop_connections, amqp_vhost)
    await bot.publish(*stream[75:])
    try:
        await processed(bot, 140, within=40)
        await eventually(
            lambda: _none_pending(bot), within=90
        )  # the bot paces itself at about a post a second per channel
    except AssertionError:
        for task in asyncio.all_tasks():
            task.print_stack(limit=6)
        raise
    assert bot.service.consumer.reconnects >= 1
    for channel in (SALES, SERVICE):
        texts = "\n".join(replies(bot, channel))
        assert all(texts.count(f"Ticket [T-{i}] escalated") == 1 for i in range(100)), channel
