"""The sync-event consumer: bounded concurrency, per-partition order, retry and dead letters.

Each delivery from crm-bot.sync ends in exactly one of:

- handled: ``handle(event, attempt)`` (the body parsed, once, as a JSON object) returned, the
  message is acked;
- dead: the body is not a UTF-8 JSON object within the size and depth limits (the reason
  says which; bot/lib/bounded_json), ``handle`` raised one of ``permanent_errors``, or
  the last of ``max_attempts`` failed: a copy goes to crm.events.dlx (confirmed) with the reason
  in ``x-crm-error``, then the original is acked;
- retried: ``handle`` raised anything else: a copy with ``x-crm-attempt`` = n + 1 (n during an
  outage, below) goes to the retry queue for that attempt (confirmed), then the original is
  acked;
- left for redelivery: when the copy cannot be published (broker gone) the original is not
  acked; RabbitMQ delivers it again, and ``x-delivery-limit`` dead-letters it on the broker side
  if that keeps happening.

A copy may be published and the ack then lost with the connection, so a message can be handled
twice: the handler is idempotent by event id. Message bodies never reach a log line.

Outages: when ``handle`` fails for a passing reason, ``healthy()`` (what the handler needs,
e.g. the database) is asked; when it does not answer, the failure is not the event's: its copy
goes to the retry queue with the same attempt number, and the consumer stops taking deliveries
(basic.cancel: the broker keeps them, and the retry copies come back to the queue and wait
there) and asks again, from ``probe_interval`` doubling up to PROBE_MAX, until it answers; then
it consumes again. An outage, however long, costs no event an attempt or puts it in the dead
letters, where consuming on would run the whole stream through every retry into them. After
``max_outages`` such failures (``x-crm-outages``) an event's failures count again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from bot.broker.messages import (
    copy_message,
    header_int,
    original_routing_key,
    parse_event,
    short_reason,
)
from bot.broker.topology import (
    DLX,
    H_ATTEMPT,
    H_ATTEMPTS,
    H_ERROR,
    H_LAST_ERROR,
    H_OUTAGES,
    H_ROUTING_KEY,
    RETRY_DELAYS,
    Topology,
    declare_topology,
    retry_queue_name,
)
from bot.lib import metrics

log = logging.getLogger(__name__)

Event = dict[str, Any]  # a message body parsed as a JSON object
Handle = Callable[[Event, int], Awaitable[None]]
PartitionKey = Callable[[Event], str | None]
Delivered = tuple[AbstractIncomingMessage, Event | str]  # str: why the body is refused
Healthy = Callable[[], Awaitable[bool]]
PROBE_MAX = 5.0  # seconds between health probes while paused, at most (the lag after an outage)
PROBE_TIMEOUT = 5.0  # a probe that takes longer counts as not answering
# Failures during outages an event may have before they count: an event that itself brought
# the database down again and again would otherwise never end.
MAX_OUTAGES = 20


class Consumer:
    def __init__(
        self,
        amqp_url: str,
        handle: Handle,
        *,
        permanent_errors: tuple[type[Exception], ...] = (),
        prefetch: int = 256,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        max_attempts: int = 5,
        partition_key: PartitionKey | None = None,
        healthy: Healthy | None = None,
        probe_interval: float = 1.0,
        max_outages: int = MAX_OUTAGES,
        reconnect_interval: float = 2.0,
        publish_timeout: float = 10.0,
        drain_timeout: float = 30.0,
    ) -> None:
        if not retry_delays or max_attempts < 1 or prefetch < 1:
            raise ValueError("need retry_delays, max_attempts >= 1 and prefetch >= 1")
        self._url = amqp_url
        self._handle = handle
        self._permanent = permanent_errors
        self._prefetch = prefetch
        self._delays = tuple(retry_delays)
        self._max_attempts = max_attempts
        self._partition_key = partition_key
        self._healthy = healthy
        self._probe_interval = probe_interval
        self._max_outages = max_outages
        self._probe: asyncio.Task[bool] | None = None  # the health check under way
        self._resumer: asyncio.Task[None] | None = None  # set while paused
        self._reconnect_interval = reconnect_interval
        self._publish_timeout = publish_timeout
        self._drain_timeout = drain_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._topology: Topology | None = None
        self._dlx: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._partitions: dict[str, deque[Delivered]] = {}
        self.reconnects = 0  # how many times the connection was restored

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def paused(self) -> bool:
        """Not taking deliveries because `healthy()` does not answer."""
        return self._resumer is not None and not self._resumer.done()

    async def start(self) -> None:
        """Connect, declare the topology and start consuming; raises if the broker is down."""
        self._connection = await aio_pika.connect_robust(
            self._url, reconnect_interval=self._reconnect_interval
        )
        self._connection.close_callbacks.add(self._on_disconnect)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        # Copies are published on their own channel: a failed publish must not close the channel
        # that holds the deliveries. on_return_raises: an unroutable copy is an error, not a loss.
        self._publish_channel = await self._connection.channel(on_return_raises=True)
        consume_channel = await self._connection.channel()
        await consume_channel.set_qos(prefetch_count=self._prefetch)
        # Declared on the robust consume channel, so a reconnect declares it all again before
        # the consumer is restored.
        self._topology = await declare_topology(consume_channel, retry_delays=self._delays)
        self._queue = self._topology.queue
        self._dlx = await self._publish_channel.get_exchange(DLX, ensure=False)
        self._consumer_tag = await self._queue.consume(self._on_message)
        metrics.broker_connected.set(1)
        log.info("consuming %s (prefetch %d)", self._queue.name, self._prefetch)

    async def stop(self) -> None:
        """Stop taking deliveries, finish those in hand (up to drain_timeout), then close."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), timeout=5)
        self._consumer_tag = None
        outage: list[asyncio.Task[Any]] = [t for t in (self._resumer, self._probe) if t is not None]
        for task in outage:
            task.cancel()
        await asyncio.gather(*outage, return_exceptions=True)
        self._resumer = self._probe = None
        metrics.sync_paused.set(0)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("stop: %d deliveries left for redelivery", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        if self._connection is not None:
            self._connection.close_callbacks.discard(self._on_disconnect)  # not a loss: a stop
            await self._connection.close()
            self._connection = None
        metrics.broker_connected.set(0)

    def _on_disconnect(self, *_: Any) -> None:
        metrics.broker_connected.set(0)
        log.warning("broker connection lost; the robust connection reconnects")

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        metrics.broker_connected.set(1)
        log.info("broker connection restored")

    # Deliveries -------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # No await before the message is queued: deliveries are queued in arrival order.
        # The body is parsed here, once, for the partition key and the handler.
        event = parse_event(message.body)
        key = self._key(event)
        if key is None:
            self._spawn(self._process((message, event)))
            return
        backlog = self._partitions.get(key)
        if backlog is not None:
            backlog.append((message, event))
            return
        self._partitions[key] = deque([(message, event)])
        self._spawn(self._run_partition(key))

    def _key(self, event: Event | str) -> str | None:
        if self._partition_key is None or isinstance(event, str):
            return None
        try:
            return self._partition_key(event)
        except Exception:
            return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_partition(self, key: str) -> None:
        backlog = self._partitions[key]
        try:
            while backlog:
                await self._process(backlog[0])
                backlog.popleft()
        finally:
            del self._partitions[key]

    async def _process(self, delivered: Delivered) -> None:
        message, event = delivered
        metrics.events_total.labels("consumed").inc()
        headers = message.headers or {}
        attempt = header_int(headers.get(H_ATTEMPT), 1)
        if isinstance(event, str):
            await self._dead_letter(message, event, attempt)
            return
        try:
            await self._handle(event, attempt)
        except self._permanent as exc:
            await self._dead_letter(message, short_reason(str(exc) or type(exc).__name__), attempt)
        except Exception as exc:
            reason = short_reason(f"{type(exc).__name__}: {exc}")
            outages = header_int(headers.get(H_OUTAGES), 0)
            if outages < self._max_outages and await self._outage():  # not the event's fault
                await self._retry(message, attempt, reason, outages=outages + 1)
                await self._pause()
            elif attempt >= self._max_attempts:
                await self._dead_letter(
                    message, short_reason(f"gave up after {attempt} attempts: {reason}"), attempt
                )
            else:
                await self._retry(message, attempt, reason)
        else:
            await self._settle(message)

    # Outages ----------------------------------------------------------------------------------

    async def _outage(self) -> bool:
        """What the handler needs is down: paused for it already, or `healthy()` fails now."""
        if self._healthy is None:
            return False
        return self.paused or not await self._answers()

    async def _pause(self) -> None:
        if self._consumer_tag is None:  # paused by another failure meanwhile, or stopping
            return
        tag, self._consumer_tag = self._consumer_tag, None
        assert self._queue is not None
        with contextlib.suppress(Exception):  # a channel gone takes its consumer with it
            await asyncio.wait_for(self._queue.cancel(tag), timeout=5)
        metrics.sync_paused.set(1)
        log.warning(
            "paused consuming %s: an event failed and the health check does not answer; asking "
            "again every %.0f-%.0f s",
            self._queue.name,
            self._probe_interval,
            PROBE_MAX,
        )
        self._resumer = asyncio.get_running_loop().create_task(self._resume_when_healthy())

    async def _answers(self) -> bool:
        """One health check at a time; failures arriving together share its answer."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._check())
        return await asyncio.shield(self._probe)

    async def _check(self) -> bool:
        assert self._healthy is not None
        try:
            return bool(await asyncio.wait_for(self._healthy(), PROBE_TIMEOUT))
        except Exception:
            return False

    async def _resume_when_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        paused_at, delay = loop.time(), self._probe_interval
        assert self._queue is not None
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX)
            if not await self._answers():
                continue
            try:
                self._consumer_tag = await self._queue.consume(self._on_message)
            except Exception as exc:  # the broker is away too: its reconnect comes first
                log.info("could not consume again yet (%s)", type(exc).__name__)
                continue
            metrics.sync_paused.set(0)
            log.info("consuming %s again after %.0f s", self._queue.name, loop.time() - paused_at)
            return

    async def _retry(
        self, message: AbstractIncomingMessage, attempt: int, reason: str, outages: int = 0
    ) -> None:
        """A copy to the retry queue: the next attempt, or the same one again when the failure
        came with an outage (`outages`: how many so far)."""
        delay = self._delays[min(attempt - 1, len(self._delays) - 1)]
        headers = {
            H_ATTEMPT: attempt if outages else attempt + 1,
            H_ROUTING_KEY: original_routing_key(message),
            H_LAST_ERROR: reason,
        }
        if outages:
            headers[H_OUTAGES] = outages
        copy = copy_message(message, set_headers=headers)
        assert self._publish_channel is not None
        exchange = self._publish_channel.default_exchange
        if await self._publish_copy(message, exchange.publish(copy, retry_queue_name(delay))):
            metrics.events_total.labels("retried").inc()
            log.info(
                "retrying message %s (attempt %d failed%s, next in %.1fs): %s",
                message.message_id,
                attempt,
                ", not counted: an outage" if outages else "",
                delay,
                reason.split(":", 1)[0],
            )
            await self._settle(message)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, reason: str, attempt: int
    ) -> None:
        routing_key = original_routing_key(message)
        copy = copy_message(
            message,
            set_headers={
                H_ERROR: reason,
                H_ATTEMPTS: attempt,
                H_ROUTING_KEY: routing_key,
            },
            drop=(H_ATTEMPT, H_LAST_ERROR),
        )
        assert self._dlx is not None
        if await self._publish_copy(message, self._dlx.publish(copy, routing_key)):
            metrics.events_total.labels("dead_lettered").inc()
            log.warning(
                "dead-lettered message %s (%s, attempt %d)",
                message.message_id,
                routing_key,
                attempt,
            )
            await self._settle(message)

    async def _publish_copy(
        self, message: AbstractIncomingMessage, publish: Coroutine[Any, Any, Any]
    ) -> bool:
        """Publish a copy with confirms; False leaves the original for redelivery."""
        if _channel_lost(message):
            # The delivery belongs to a lost channel: RabbitMQ delivers it again anyway.
            publish.close()
            return False
        try:
            await asyncio.wait_for(publish, timeout=self._publish_timeout)
        except Exception as exc:
            log.warning(
                "could not publish a copy of message %s (%s); left for redelivery",
                message.message_id,
                type(exc).__name__,
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return False
        return True

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
        except Exception as exc:
            log.info(
                "ack of message %s lost (%s); it will be redelivered",
                message.message_id,
                type(exc).__name__,
            )


def _channel_lost(message: AbstractIncomingMessage) -> bool:
    try:
        return message.channel.is_closed
    except Exception:  # aio-pika raises ChannelInvalidStateError for a closed channel
        return True
