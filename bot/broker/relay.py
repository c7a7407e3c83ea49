"""The outbox relay: publishes the bot's own events, written to the outbox table in the same
transaction as the change they describe, to crm.events with publisher confirms.

Delivery is at least once: rows are marked only after every publish in the batch is confirmed,
so a crash (or a lost broker) between the confirm and the mark publishes those rows again on the
next round. Consumers dedupe by event id (``message_id`` is the event id). Nothing is lost: a
row that was not confirmed stays unmarked and is fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from bot.broker.topology import EXCHANGE
from bot.lib import metrics

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0  # seconds between rounds at most while they fail


@dataclass(frozen=True)
class OutboxMessage:
    id: str  # the outbox row's id
    routing_key: str  # the event type
    body: bytes  # the event, JSON
    message_id: str  # the event id


FetchBatch = Callable[[], Awaitable[list[OutboxMessage]]]
MarkPublished = Callable[[list[str]], Awaitable[None]]


class OutboxRelay:
    def __init__(
        self,
        amqp_url: str,
        fetch_batch: FetchBatch,
        mark_published: MarkPublished,
        *,
        poll_interval: float = 1.0,
        reconnect_interval: float = 2.0,
        publish_timeout: float = 10.0,
    ) -> None:
        self._url = amqp_url
        self._fetch_batch = fetch_batch
        self._mark_published = mark_published
        self._poll_interval = poll_interval
        self._reconnect_interval = reconnect_interval
        self._publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def start(self) -> None:
        """Connect and start relaying; raises if the broker is down at start."""
        self._connection = await aio_pika.connect_robust(
            self._url, reconnect_interval=self._reconnect_interval
        )
        channel = await self._connection.channel()  # publisher confirms on
        self._exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Publish now (e.g. right after a transaction that wrote outbox rows committed)."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the round in progress, then close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def relay_once(self) -> int:
        """Publish one batch and mark it; returns how many rows were published."""
        batch = await self._fetch_batch()
        if not batch:
            return 0
        assert self._exchange is not None
        exchange = self._exchange
        # Not mandatory: an event type nobody is bound to yet is not an error.
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body=row.body,
                            content_type="application/json",
                            message_id=row.message_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=row.routing_key,
                        mandatory=False,
                    )
                    for row in batch
                )
            ),
            timeout=self._publish_timeout,
        )
        await self._mark_published([row.id for row in batch])
        metrics.outbox_published_total.inc(len(batch))
        log.info("outbox: published %d events", len(batch))
        return len(batch)

    async def _run(self) -> None:
        failed = 0  # rounds failed in a row: the wait doubles (up to MAX_BACKOFF), one warning
        while not self._stopping:
            try:
                published = await self.relay_once()
            except Exception as exc:
                failed += 1
                if failed == 1:
                    log.warning(
                        "outbox relay round failed (%s); retrying, less often while it fails",
                        type(exc).__name__,
                    )
                published = 0
            else:
                if failed:
                    log.info("outbox relay works again after %d failed rounds", failed)
                failed = 0
            if published:
                continue  # there may be more rows: fetch again at once
            if self._stopping:
                break
            wait = min(
                self._poll_interval * 2 ** min(failed, 16), max(MAX_BACKOFF, self._poll_interval)
            )
            # A wake() during the round above is still set: the next round starts at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()
