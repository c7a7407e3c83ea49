"""A stream of sync events published to RabbitMQ the way a system of record would, each one
identifiable in the alerts it causes.

Alerting events carry their own id as the deal/ticket/invoice id, and the bot's alert line
shows that id in brackets (`Deal [evab12cdx000042] moved to closed won`), so counting posts per
(event id, channel) needs nothing but the sandbox's messages. `occurred_at` (and
`data.published_at`, epoch seconds) is the moment of publishing: alert delay = message ts - that.

Publishing is confirmed; while the broker is away `publish` retries until it is back, and an
event counts as published only once RabbitMQ confirmed it (so "lost" means lost by the bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika

from bot.broker import declare_topology
from bot.broker.messages import event_message
from bot.broker.topology import EXCHANGE
from tests.fixtures.bot import FINANCE, SALES, SERVICE

log = logging.getLogger(__name__)

SOURCE = "faults-sim"
# Who hears about what, under the default alert rules (handlers/sync/alerts.py DEFAULT_RULES),
# written out here independently so a routing bug fails the books.
ALERT_CHANNELS: dict[str, frozenset[str]] = {
    "deal.stage_changed": frozenset({FINANCE, SERVICE}),  # closed_won
    "ticket.escalated": frozenset({SALES, SERVICE}),
    "invoice.overdue": frozenset({SALES, FINANCE}),
}
QUIET_TYPES = ("customer.upserted", "payment.received", "ticket.opened")
TOKEN = re.compile(r"\[(ev[0-9a-f]{6}x\d{6})\]")


@dataclass(frozen=True)
class Published:
    id: str
    type: str
    customer: str
    at: float  # time.time() when publishing started
    channels: frozenset[str]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def customer_ref(run: str, i: int) -> str:
    return f"FC-{run}-{i:05d}"


class EventStream:
    def __init__(self, amqp_url: str, *, run: str | None = None, seed: int = 11) -> None:
        self.amqp_url = amqp_url
        self.run = run or secrets.token_hex(3)
        self.rnd = random.Random(seed)
        self.seq = itertools.count(1)
        self.published: dict[str, Published] = {}
        self.publish_retries = 0
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._lock = asyncio.Lock()

    # --- connection ---------------------------------------------------------------------------

    async def connect(self, declare: bool = True) -> None:
        """Connect (robust) and declare the bot's topology, so nothing published before the bot
        first starts is unroutable."""
        self._connection = await aio_pika.connect_robust(self.amqp_url, reconnect_interval=0.5)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        if declare:
            await declare_topology(channel)
        self._exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    # --- events -------------------------------------------------------------------------------

    def next_id(self) -> str:
        return f"ev{self.run}x{next(self.seq):06d}"

    def event(self, kind: str, customer: str, **customer_fields: object) -> dict:
        eid = self.next_id()
        now = time.time()
        data: dict[str, object] = {"published_at": now}
        if kind == "deal.stage_changed":
            data.update(deal_id=eid, stage="closed_won", amount=12000, currency="EUR")
        elif kind in ("ticket.escalated", "ticket.opened"):
            data.update(ticket_id=eid, subject="Cannot log in", priority="high")
        elif kind == "invoice.overdue":
            data.update(invoice_id=eid, amount=900, currency="EUR", days_overdue=12)
        elif kind == "payment.received":
            data.update(invoice_id=eid, amount=900, currency="EUR")
        return {
            "spec": "crm.sync/1",
            "id": eid,
            "type": kind,
            "occurred_at": iso(now),
            "source": SOURCE,
            "customer": {"external_id": customer, **customer_fields},
            "data": data,
        }

    def new_customer(self, i: int) -> dict:
        ref = customer_ref(self.run, i)
        return self.event(
            "customer.upserted",
            ref,
            name=f"Fault Customer {i}",
            email=f"fc{i}.{self.run}@example.com",
            company=f"Faultline {i % 7} Ltd",
            tier="enterprise",
            lifecycle_stage="customer",
            annual_value=50000,
        )

    async def publish(self, event: dict, *, give_up_after: float = 60.0) -> Published:
        """Publish with confirms, retrying while the broker is away."""
        started = time.time()
        end = time.monotonic() + give_up_after
        message = event_message(event)
        while True:
            try:
                assert self._exchange is not None, "connect() first"
                await asyncio.wait_for(
                    self._exchange.publish(message, routing_key=event["type"]), timeout=5
                )
                break
            except Exception as exc:
                if time.monotonic() > end:
                    raise
                self.publish_retries += 1
                log.info("publish of %s failed (%s); retrying", event["id"], type(exc).__name__)
                await asyncio.sleep(0.2)
        channels = ALERT_CHANNELS.get(event["type"], frozenset())
        record = Published(
            event["id"], event["type"], event["customer"]["external_id"], started, channels
        )
        self.published[record.id] = record
        return record

    async def seed(self, n: int) -> list[str]:
        """Publish `n` new customers; returns their external ids."""
        refs = []
        for i in range(n):
            event = self.new_customer(i)
            await self.publish(event)
            refs.append(event["customer"]["external_id"])
        return refs

    def pick(
        self, customers: Sequence[str], alert_share: float, hot: Sequence[str] | None = None
    ) -> dict:
        """One event: alerting with probability `alert_share` (on a `hot` customer when given),
        else a quiet one."""
        if self.rnd.random() < alert_share:
            kind = self.rnd.choice(sorted(ALERT_CHANNELS))
            return self.event(kind, self.rnd.choice(hot or customers))
        kind = self.rnd.choice(QUIET_TYPES)
        if kind == "customer.upserted":
            return self.event(
                kind,
                self.rnd.choice(customers),
                tier=self.rnd.choice(["strategic", "enterprise", "mid_market", "smb"]),
            )
        return self.event(kind, self.rnd.choice(customers))

    async def flow(
        self,
        customers: Sequence[str],
        rate: float,
        stop: asyncio.Event,
        *,
        alert_share: float = 0.5,
        hot: Sequence[str] | None = None,
        extra: Sequence[dict] = (),
    ) -> int:
        """Publish at `rate` events/s until `stop` is set (catching up in a burst after the
        broker was away); `extra` events (e.g. malformed ones) are mixed in at the start."""
        for event in extra:
            await self.publish(event)
        start = time.monotonic()
        sent = 0
        in_flight: set[asyncio.Task] = set()
        gate = asyncio.Semaphore(64)  # confirms are pipelined, as a busy producer's would be

        async def one(event: dict) -> None:
            try:
                await self.publish(event)
            finally:
                gate.release()

        while not stop.is_set():
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            await gate.acquire()
            task = asyncio.create_task(one(self.pick(customers, alert_share, hot)))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        if in_flight:
            await asyncio.gather(*in_flight)
        return sent

    @property
    def alerting(self) -> list[Published]:
        return [p for p in self.published.values() if p.channels]


def bad_events(stream: EventStream, customer: str) -> list[dict]:
    """Events that can never apply: each must end in the dead-letter queue, not vanish. (An
    unknown customer's event now applies, alerted by external id; one about an erased customer
    cannot: the erasure leaves a tombstone first.)"""
    erased = stream.event("customer.deleted", "FC-nobody-00000")
    unknown = stream.event("ticket.escalated", "FC-nobody-00000")
    no_type_fields = stream.event("invoice.overdue", customer)
    no_type_fields["data"] = {"published_at": time.time()}  # fails the schema
    return [erased, unknown, no_type_fields]


# The block of a thread's top-level message that sums the thread up (it repeats the latest
# alert, which is posted in the thread): bot/lib/blocks/alerts.LATEST_BLOCK, written out here.
SUMMARY_BLOCK = "crm_latest"


def tokens_in(message: dict) -> set[str]:
    """Event ids a posted message is about (its text and every block but a thread's summary)."""
    blocks = [b for b in message.get("blocks") or [] if b.get("block_id") != SUMMARY_BLOCK]
    text = str(message.get("text") or "") + json.dumps(blocks)
    return set(TOKEN.findall(text))
