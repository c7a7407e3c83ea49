"""bot.broker against a real RabbitMQ, in a vhost of this test session's own (fixtures/amqp.py)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os

import aio_pika
import pytest

from bot.broker import (
    DEAD_QUEUE,
    EXCHANGE,
    SYNC_QUEUE,
    OutboxMessage,
    OutboxRelay,
    customer_partition_key,
    declare_topology,
    dlq_list,
    dlq_replay,
    publish_event,
)
from bot.lib import metrics
from tests.fixtures.amqp import TEST_RETRY_DELAYS, depth, eventually, rabbitmqctl
from tests.fixtures.services import IN_CI


class PermanentError(Exception):
    pass


def event(n: int, customer: str = "C-1", type_: str = "customer.upserted") -> dict:
    return {
        "spec": "crm.sync/1",
        "id": f"ev-{n}",
        "type": type_,
        "occurred_at": "2024-05-01T10:00:00Z",
        "source": "test",
        "customer": {"external_id": customer},
    }


def outcome(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("crm_sync_events_total", {"outcome": name}) or 0.0


async def publish_many(url: str, bodies: list[bytes], routing_key: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=routing_key,
                )
                for body in bodies
            )
        )
    finally:
        await connection.close()


async def test_topology_declared_twice_routes_inbound_types_only(amqp_url):
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, retry_delays=TEST_RETRY_DELAYS)
        topology = await declare_topology(channel, retry_delays=TEST_RETRY_DELAYS)
        assert len(topology.retry_queues) == len(TEST_RETRY_DELAYS)
        await publish_event(channel, event(1, type_="ticket.opened"))
        await publish_event(channel, event(2, type_="handoff.requested"))  # outbound: not ours
    finally:
        await connection.close()
    await eventually(lambda: depth(amqp_url, SYNC_QUEUE))
    assert await depth(amqp_url, SYNC_QUEUE) == 1
    assert await depth(amqp_url, DEAD_QUEUE) == 0


async def test_good_message_is_handled_and_acked_once(amqp_url, make_consumer):
    handled: list[tuple[str, int]] = []

    async def handle(data: dict, attempt: int) -> None:
        handled.append((data["id"], attempt))

    consumer = await make_consumer(handle)
    assert consumer.connected
    await publish_event(amqp_url, event(1))
    await eventually(lambda: handled)
    await consumer.stop()  # anything unacked would be back in the queue now
    assert handled == [("ev-1", 1)]
    assert await depth(amqp_url, SYNC_QUEUE) == 0
    assert await depth(amqp_url, DEAD_QUEUE) == 0


async def test_permanent_error_goes_to_the_dead_letter_queue_with_its_reason(
    amqp_url, make_consumer
):
    calls = []

    async def handle(data: dict, attempt: int) -> None:
        calls.append(attempt)
        raise PermanentError("unknown customer")

    before = outcome("dead_lettered")
    await make_consumer(handle, permanent_errors=(PermanentError,))
    await publish_event(amqp_url, event(1, type_="invoice.overdue"))
    await eventually(lambda: depth(amqp_url, DEAD_QUEUE))
    [letter] = await dlq_list(amqp_url)
    assert (letter.event_id, letter.type, letter.routing_key) == (
        "ev-1",
        "invoice.overdue",
        "invoice.overdue",
    )
    assert letter.reason == "unknown customer"
    assert letter.attempts == 1
    assert calls == [1]
    assert outcome("dead_lettered") - before == 1


async def test_transient_errors_are_retried_then_handled(amqp_url, make_consumer):
    attempts: list[int] = []

    async def handle(data: dict, attempt: int) -> None:
        attempts.append(attempt)
        if attempt <= 2:
            raise ConnectionError("database unavailable")

    retried = outcome("retried")
    await make_consumer(handle, permanent_errors=(PermanentError,))
    await publish_event(amqp_url, event(1))
    await eventually(lambda: attempts == [1, 2, 3])
    assert outcome("retried") - retried == 2
    assert await depth(amqp_url, DEAD_QUEUE) == 0
    for delay in TEST_RETRY_DELAYS:
        assert await depth(amqp_url, f"{SYNC_QUEUE}.retry.{round(delay * 1000)}ms") == 0


async def test_a_failure_while_the_health_check_answers_is_an_ordinary_retry(
    amqp_url, make_consumer
):
    attempts: list[int] = []
    checks: list[bool] = []

    async def healthy() -> bool:
        checks.append(True)
        return True

    async def handle(data: dict, attempt: int) -> None:
        attempts.append(attempt)
        if attempt == 1:
            raise LookupError("its customer is not here yet")

    consumer = await make_consumer(handle, healthy=healthy)
    await publish_event(amqp_url, event(1))
    await eventually(lambda: attempts == [1, 2])
    assert checks == [True]  # asked once, after the failure
    assert not consumer.paused


async def test_while_the_health_check_fails_nothing_is_consumed_and_nothing_dead_lettered(
    amqp_url, make_consumer
):
    """An outage outlasting the whole retry schedule (one attempt here): the event it hit goes
    through the retry path without its attempt counted, then the consumer takes nothing until
    the health check answers; then every event is handled, none dead-lettered."""
    up = False
    handled: list[tuple[str, int]] = []

    async def healthy() -> bool:
        return up

    async def handle(data: dict, attempt: int) -> None:
        if not up:
            raise ConnectionError("database unavailable")
        handled.append((data["id"], attempt))

    consumer = await make_consumer(handle, max_attempts=1, healthy=healthy, probe_interval=0.05)
    await publish_event(amqp_url, event(1))
    await eventually(lambda: consumer.paused)
    assert metrics.REGISTRY.get_sample_value("crm_sync_paused") == 1
    for n in range(2, 6):
        await publish_event(amqp_url, event(n, customer=f"C-{n}"))
    # The four new events, and ev-1's retry copy once its delay passed, wait in the queue.
    await eventually(lambda: _is(depth(amqp_url, SYNC_QUEUE), 5))
    assert handled == []
    up = True
    await eventually(lambda: len(handled) == 5)
    assert sorted(handled) == [("ev-1", 1), ("ev-2", 1), ("ev-3", 1), ("ev-4", 1), ("ev-5", 1)]
    assert not consumer.paused
    assert metrics.REGISTRY.get_sample_value("crm_sync_paused") == 0
    assert await depth(amqp_url, DEAD_QUEUE) == 0


async def test_an_event_failing_with_an_outage_every_time_counts_after_max_outages(
    amqp_url, make_consumer
):
    """An event that breaks the database each time it is applied: the check fails after each
    failure and answers again before the consumer resumes. Its first `max_outages` failures
    are not counted; then they are, and it is dead-lettered instead of looping for ever."""
    checks = 0
    calls: list[int] = []

    async def healthy() -> bool:
        nonlocal checks
        checks += 1
        return checks % 2 == 0  # down right after a failure, back when asked again

    async def handle(data: dict, attempt: int) -> None:
        calls.append(attempt)
        raise ConnectionError("database unavailable")

    await make_consumer(handle, max_attempts=1, max_outages=2, healthy=healthy, probe_interval=0.05)
    await publish_event(amqp_url, event(1))
    await eventually(lambda: depth(amqp_url, DEAD_QUEUE))
    [letter] = await dlq_list(amqp_url)
    assert letter.reason == "gave up after 1 attempts: ConnectionError: database unavailable"
    assert calls == [1, 1, 1]


async def test_a_stop_while_paused_ends_the_pause(amqp_url, make_consumer):
    async def healthy() -> bool:
        return False

    async def handle(data: dict, attempt: int) -> None:
        raise ConnectionError("database unavailable")

    consumer = await make_consumer(handle, healthy=healthy, probe_interval=0.05)
    await publish_event(amqp_url, event(1))
    await eventually(lambda: consumer.paused)
    await asyncio.wait_for(consumer.stop(), timeout=5)
    assert not consumer.paused
    assert metrics.REGISTRY.get_sample_value("crm_sync_paused") == 0
    assert await depth(amqp_url, DEAD_QUEUE) == 0
    # The event is kept, back in the queue once its retry copy's delay is over. Waiting for it
    # there also leaves nothing moving between queues for the next test's purge to miss (a
    # copy in flight came back after the purge and was handled by the next test's consumer).
    await eventually(lambda: _is(depth(amqp_url, SYNC_QUEUE), 1))


async def test_always_failing_message_is_dead_lettered_after_max_attempts(amqp_url, make_consumer):
    attempts: list[int] = []

    async def handle(data: dict, attempt: int) -> None:
        attempts.append(attempt)
        raise TimeoutError("slack unavailable")

    await make_consumer(handle, max_attempts=4)
    await publish_event(amqp_url, event(1, type_="deal.stage_changed"))
    await eventually(lambda: depth(amqp_url, DEAD_QUEUE))
    [letter] = await dlq_list(amqp_url)
    assert letter.reason == "gave up after 4 attempts: TimeoutError: slack unavailable"
    assert letter.attempts == 4
    assert letter.routing_key == "deal.stage_changed"  # not the retry path's crm-bot.sync
    assert attempts == [1, 2, 3, 4]


async def test_malformed_messages_are_dead_lettered_among_good_ones(amqp_url, make_consumer):
    handled: set[str] = set()

    async def handle(data: dict, attempt: int) -> None:
        handled.add(data["id"])

    consumer = await make_consumer(handle)
    good = [json.dumps(event(n, customer=f"C-{n % 50}")).encode() for n in range(1000)]
    kinds = [b"not json %d", b"\xff\xfe%d", b"[%d]"]  # not JSON, not UTF-8, not an object
    bad = [kinds[n % 3] % n for n in range(100)]
    mixed = [m for pair in zip(good[:100], bad, strict=True) for m in pair] + good[100:]
    await publish_many(amqp_url, mixed, "customer.upserted")
    await eventually(lambda: len(handled) == 1000, within=30)
    await eventually(lambda: _is(depth(amqp_url, DEAD_QUEUE), 100), within=10)
    letters = await dlq_list(amqp_url, limit=200)
    assert len(letters) == 100
    assert {letter.reason for letter in letters} == {"body is not a UTF-8 JSON object"}
    assert consumer.connected


async def _is(value, expected) -> bool:
    return await value == expected


async def test_same_partition_in_order_different_partitions_concurrently(amqp_url, make_consumer):
    seen: dict[str, list[int]] = collections.defaultdict(list)
    active: collections.Counter[str] = collections.Counter()
    overlap_within_partition = []
    b_started = asyncio.Event()

    async def handle(data: dict, attempt: int) -> None:
        key, n = data["customer"]["external_id"], int(data["id"].split("-")[1])
        if active[key]:
            overlap_within_partition.append(key)
        active[key] += 1
        try:
            if key == "B":
                b_started.set()
            if key == "A" and not seen["A"]:
                # Holds partition A until B runs: B must not wait behind A.
                await asyncio.wait_for(b_started.wait(), timeout=5)
            await asyncio.sleep(0)  # let other partitions interleave
            seen[key].append(n)
        finally:
            active[key] -= 1

    await make_consumer(handle, partition_key=customer_partition_key, prefetch=32)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for n in range(60):
            await publish_event(channel, event(n, customer="A" if n % 2 == 0 else "B"))
    finally:
        await connection.close()
    await eventually(lambda: len(seen["A"]) + len(seen["B"]) == 60)
    assert seen["A"] == list(range(0, 60, 2))
    assert seen["B"] == list(range(1, 60, 2))
    assert overlap_within_partition == []


async def test_partition_key_errors_mean_no_partition(amqp_url, make_consumer):
    handled = []

    async def handle(data: dict, attempt: int) -> None:
        handled.append(data["id"])

    def broken_key(data: dict) -> str:
        raise KeyError("customer")

    await make_consumer(handle, partition_key=broken_key)
    await publish_event(amqp_url, event(1))
    await eventually(lambda: handled == ["ev-1"])


def _my_connections(vhost: str) -> list[str]:
    out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "vhost")
    return [line.split()[0] for line in out.splitlines() if line.split()[1:] == [vhost]]


async def _survives(amqp_url, make_consumer, interrupt, resume) -> None:
    handled: collections.Counter[str] = collections.Counter()

    async def handle(data: dict, attempt: int) -> None:
        await asyncio.sleep(0.002)  # a little work, so the stream is mid-way when we interrupt
        if data["id"] == "ev-250" and attempt == 1:
            raise ConnectionError("retry path after the interruption")
        handled[data["id"]] += 1

    consumer = await make_consumer(handle, prefetch=16)
    bodies = [json.dumps(event(n, customer=f"C-{n % 7}")).encode() for n in range(300)]
    await publish_many(amqp_url, bodies[:200], "customer.upserted")
    await eventually(lambda: len(handled) >= 30)
    await asyncio.to_thread(interrupt)
    await asyncio.to_thread(resume)
    await eventually(lambda: consumer.reconnects >= 1 and consumer.connected, within=30)
    await publish_many(amqp_url, bodies[200:], "customer.upserted")  # after the restart
    expected = {f"ev-{n}" for n in range(300)}
    await eventually(lambda: set(handled) == expected, within=30)
    # None lost and none dead; a message whose ack was lost with the connection may run twice.
    assert await depth(amqp_url, DEAD_QUEUE) == 0
    assert await depth(amqp_url, SYNC_QUEUE) == 0


async def test_stopping_the_consumer_is_not_reported_as_a_lost_connection(
    amqp_url, make_consumer, caplog
):
    """An admin reading the log of a clean shutdown must not be told the broker went away."""

    async def handle(data: dict, attempt: int) -> None:
        return None

    consumer = await make_consumer(handle)
    assert consumer.connected
    with caplog.at_level(logging.INFO, logger="bot.broker.consumer"):
        await consumer.stop()
    assert not consumer.connected
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_consumer_survives_a_dropped_connection(amqp_url, amqp_vhost, make_consumer):
    """The network drops this session's connections only (other test runs are not touched)."""

    def drop() -> None:
        for pid in _my_connections(amqp_vhost):
            rabbitmqctl("close_connection", pid, "test: connection dropped")

    await _survives(amqp_url, make_consumer, drop, lambda: None)


@pytest.mark.slow
@pytest.mark.skipif(
    not (IN_CI or os.environ.get("CRM_TEST_RESTART_BROKER") == "1"),
    reason="restarts the shared broker: runs under CI=true or CRM_TEST_RESTART_BROKER=1",
)
async def test_consumer_survives_a_broker_restart(amqp_url, make_consumer):
    """rabbitmqctl stop_app/start_app: restarts the whole broker (every vhost, every test run)."""
    await _survives(
        amqp_url,
        make_consumer,
        lambda: rabbitmqctl("stop_app"),
        lambda: rabbitmqctl("start_app"),
    )


async def test_relay_publishes_pending_rows_once_and_marks_them(amqp_url):
    rows = [
        OutboxMessage(
            id=f"row-{n}",
            routing_key="handoff.requested",
            body=json.dumps(event(n, type_="handoff.requested")).encode(),
            message_id=f"ev-{n}",
        )
        for n in range(5)
    ]
    marked: list[str] = []
    fetches = 0

    async def fetch_batch() -> list[OutboxMessage]:
        nonlocal fetches
        fetches += 1
        if fetches == 1:
            raise ConnectionError("database busy")  # a failed round is retried later
        return [row for row in rows if row.id not in marked][:3]

    async def mark_published(ids: list[str]) -> None:
        marked.extend(ids)

    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
    tap = await channel.declare_queue(exclusive=True)
    await tap.bind(exchange, "handoff.#")
    before = metrics.REGISTRY.get_sample_value("crm_outbox_published_total") or 0.0
    relay = OutboxRelay(amqp_url, fetch_batch, mark_published, poll_interval=60)
    await relay.start()
    try:
        relay.wake()  # the first round failed; wake instead of waiting 60 s
        await eventually(lambda: sorted(marked) == [row.id for row in rows])
        assert relay.connected
        calls = fetches
        relay.wake()
        await eventually(lambda: fetches > calls)  # one more round, nothing left to publish
    finally:
        await relay.stop()
    got = []
    while (message := await tap.get(fail=False, no_ack=True)) is not None:
        got.append((message.message_id, message.routing_key, message.content_type))
    await connection.close()
    assert sorted(got) == [(f"ev-{n}", "handoff.requested", "application/json") for n in range(5)]
    after = metrics.REGISTRY.get_sample_value("crm_outbox_published_total") or 0.0
    assert after - before == 5


async def test_dlq_list_shows_reasons_without_removing(amqp_url, make_consumer):
    async def handle(data: dict, attempt: int) -> None:
        raise PermanentError(f"bad event {data['id']}")

    await make_consumer(handle, permanent_errors=(PermanentError,))
    for n in range(3):
        await publish_event(amqp_url, event(n, type_="ticket.escalated"))
    await eventually(lambda: _is(depth(amqp_url, DEAD_QUEUE), 3))
    first = await dlq_list(amqp_url)
    second = await dlq_list(amqp_url, limit=2)
    assert sorted(d.reason for d in first) == ["bad event ev-0", "bad event ev-1", "bad event ev-2"]
    assert all(d.size == len(d.body) > 0 and d.type == "ticket.escalated" for d in first)
    assert len(second) == 2
    assert await depth(amqp_url, DEAD_QUEUE) == 3


async def test_dlq_replay_redrives_into_the_sync_queue(amqp_url, make_consumer):
    broken = True
    handled: list[tuple[str, int]] = []

    async def handle(data: dict, attempt: int) -> None:
        if broken:
            raise PermanentError("unknown customer")
        handled.append((data["id"], attempt))

    await make_consumer(handle, permanent_errors=(PermanentError,))
    for n in range(3):
        await publish_event(amqp_url, event(n))
    await eventually(lambda: _is(depth(amqp_url, DEAD_QUEUE), 3))
    broken = False  # the cause is fixed

    assert await dlq_replay(amqp_url, ["ev-1", "ev-unknown"]) == 1
    await eventually(lambda: handled == [("ev-1", 1)])
    assert sorted(d.event_id for d in await dlq_list(amqp_url)) == ["ev-0", "ev-2"]

    assert await dlq_replay(amqp_url, None) == 2
    await eventually(lambda: len(handled) == 3)
    assert sorted(handled) == [("ev-0", 1), ("ev-1", 1), ("ev-2", 1)]
    assert await depth(amqp_url, DEAD_QUEUE) == 0


async def test_a_relay_failing_round_after_round_warns_once_and_publishes_when_it_can(
    amqp_url, caplog
):
    """The database away for a while: one warning for the whole streak (the rounds back off),
    one line when it works again, and the rows are published then."""
    row = OutboxMessage("row-1", "handoff.requested", b"{}", "ev-1")
    marked: list[str] = []
    fetches = 0

    async def fetch_batch() -> list[OutboxMessage]:
        nonlocal fetches
        fetches += 1
        if fetches <= 4:
            raise ConnectionError("database unavailable")
        return [row] if not marked else []

    async def mark_published(ids: list[str]) -> None:
        marked.extend(ids)

    caplog.set_level(logging.INFO, logger="bot.broker.relay")
    relay = OutboxRelay(amqp_url, fetch_batch, mark_published, poll_interval=0.01)
    await relay.start()
    try:
        await eventually(lambda: marked == ["row-1"])
    finally:
        await relay.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.broker.relay"]
    assert lines == [
        "outbox relay round failed (ConnectionError); retrying, less often while it fails",
        "outbox: published 1 events",
        "outbox relay works again after 4 failed rounds",
    ]


async def test_relay_survives_a_dropped_connection(amqp_url, amqp_vhost):
    rows: list[OutboxMessage] = []
    marked: list[str] = []

    async def fetch_batch() -> list[OutboxMessage]:
        return [row for row in rows if row.id not in marked]

    async def mark_published(ids: list[str]) -> None:
        marked.extend(ids)

    def add(n: int) -> None:
        body = json.dumps(event(n, type_="approval.requested")).encode()
        rows.append(OutboxMessage(f"row-{n}", "approval.requested", body, f"ev-{n}"))

    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
    tap = await channel.declare_queue("test.relay-tap", durable=True)  # outlives the drop
    await tap.bind(exchange, "approval.#")
    await connection.close()
    relay = OutboxRelay(
        amqp_url, fetch_batch, mark_published, poll_interval=0.05, reconnect_interval=0.3
    )
    await relay.start()
    try:
        add(1)
        await eventually(lambda: marked == ["row-1"])
        for pid in await asyncio.to_thread(_my_connections, amqp_vhost):
            await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "test: dropped")
        add(2)
        relay.wake()
        await eventually(lambda: marked == ["row-1", "row-2"], within=15)
    finally:
        await relay.stop()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        tap = await channel.declare_queue("test.relay-tap", passive=True)
        ids = set()
        while (message := await tap.get(fail=False, no_ack=True)) is not None:
            ids.add(message.message_id)
        await tap.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    assert ids == {"ev-1", "ev-2"}  # at least once: a duplicate would be the same id
