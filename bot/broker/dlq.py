"""Dead letters for operators (`crm-bot dlq list|replay`).

``dlq_list`` looks without removing: it takes messages with basic.get and no ack, then requeues
them all. ``dlq_replay`` republishes dead letters to crm.events under their original routing key
with the bot's headers stripped (so they start again at attempt 1), confirmed, and only then acks
them; the rest are requeued. It works through at most the messages present when it starts, so
letters that die again while it runs are not replayed twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bot.broker.messages import (
    copy_message,
    header_int,
    header_str,
    original_routing_key,
    parse_object,
)
from bot.broker.topology import DEAD_QUEUE, EXCHANGE, H_ATTEMPTS, H_ERROR


@dataclass(frozen=True)
class DeadLetter:
    event_id: str | None  # the event's id, else the message id
    type: str  # the event type, else the routing key
    routing_key: str  # the original routing key
    reason: str  # x-crm-error, or what the broker said (e.g. "delivery_limit")
    attempts: int | None
    size: int
    body: bytes
    message_id: str | None


def dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    event = parse_object(message.body) or {}
    routing_key = original_routing_key(message)
    event_id = _shown(event.get("id"))
    event_type = _shown(event.get("type"))
    attempts = header_int(headers.get(H_ATTEMPTS), 0) or None
    return DeadLetter(
        event_id=event_id or message.message_id,
        type=event_type or routing_key,
        routing_key=routing_key,
        reason=header_str(headers.get(H_ERROR)) or _broker_reason(headers),
        attempts=attempts,
        size=len(message.body),
        body=message.body,
        message_id=message.message_id,
    )


def _shown(value: Any, limit: int = 128) -> str | None:
    """A string from a dead letter's body, fit for an operator's terminal: printable, at most
    `limit` characters (a letter is dead because its body may be anything)."""
    if not isinstance(value, str) or not value:
        return None
    text = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return text + ("…" if len(value) > limit else "")


def _broker_reason(headers: dict[str, Any]) -> str:
    reason = header_str(headers.get("x-first-death-reason"))
    deaths = headers.get("x-death")
    if not reason and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = header_str(deaths[0].get("reason"))
    return f"broker: {reason}" if reason else "unknown"


async def dlq_list(amqp_url: str, limit: int = 100) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first; the queue is left as it was."""
    connection = await aio_pika.connect(amqp_url)
    taken: list[AbstractIncomingMessage] = []
    try:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.get_queue(DEAD_QUEUE, ensure=True)
        while len(taken) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message)
        letters = [dead_letter(m) for m in taken]
        for message in taken:
            await message.nack(requeue=True)
        return letters
    finally:
        await connection.close()  # anything not yet requeued is requeued by the broker


async def dlq_replay(amqp_url: str, ids: list[str] | None = None) -> int:
    """Re-drive the dead letters whose event id (or message id) is in ``ids``, or all of them
    when ``ids`` is None, into crm.events; returns how many were republished."""
    wanted = None if ids is None else set(ids)
    connection = await aio_pika.connect(amqp_url)
    kept: list[AbstractIncomingMessage] = []
    replayed = 0
    try:
        channel = await connection.channel(on_return_raises=True)
        queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
        present = queue.declaration_result.message_count or 0
        exchange = await channel.get_exchange(EXCHANGE, ensure=True)
        for _ in range(present):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letter = dead_letter(message)
            if wanted is not None and not ({letter.event_id, letter.message_id} & wanted):
                kept.append(message)
                continue
            try:
                await exchange.publish(
                    copy_message(message, strip_crm=True), routing_key=letter.routing_key
                )
            except Exception:
                kept.append(message)  # unroutable or not confirmed: stays dead
                continue
            await message.ack()
            replayed += 1
        for message in kept:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        return replayed
    finally:
        await connection.close()
