"""Building and reading AMQP messages: copies between queues, header parsing, publish_event."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bot.broker.topology import CRM_HEADERS, EXCHANGE, H_ROUTING_KEY
from bot.lib import bounded_json

# Headers RabbitMQ adds when it dead-letters or redelivers; dropped from copies we publish.
BROKER_HEADERS = (
    "x-death",
    "x-delivery-count",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
MAX_REASON = 500


def short_reason(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def header_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def header_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The routing key the event was first published with (retries travel as crm-bot.sync)."""
    headers = message.headers or {}
    return header_str(headers.get(H_ROUTING_KEY)) or message.routing_key or ""


def copy_message(
    message: AbstractIncomingMessage,
    *,
    set_headers: dict[str, Any] | None = None,
    strip_crm: bool = False,
    drop: tuple[str, ...] = (),
) -> aio_pika.Message:
    """A persistent copy of an incoming message, without the broker's dead-letter headers."""
    dropped = BROKER_HEADERS + (CRM_HEADERS if strip_crm else ()) + drop
    headers = {k: v for k, v in (message.headers or {}).items() if k not in dropped}
    headers.update(set_headers or {})
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type or "application/json",
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def parse_event(body: bytes) -> dict[str, Any] | str:
    """The body as a JSON object, or the reason it is not one within the limits of
    bot/lib/bounded_json (size, depth, UTF-8): such a body is dead-lettered with that reason."""
    try:
        return bounded_json.loads_object(body)
    except bounded_json.JsonRefused as exc:
        return f"body refused: {exc}"


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one within the limits."""
    event = parse_event(body)
    return event if isinstance(event, dict) else None


def customer_partition_key(event: dict[str, Any]) -> str | None:
    """Partition key for Consumer: the customer's external_id, so one customer's events apply
    in arrival order."""
    customer = event.get("customer")
    key = customer.get("external_id") if isinstance(customer, dict) else None
    return key if isinstance(key, str) else None


def event_message(body: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        message_id=str(body.get("id") or "") or None,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def publish_event(amqp_url_or_channel: str | AbstractChannel, body: dict[str, Any]) -> None:
    """Publish one event to crm.events with routing key body["type"], confirmed (tests, demo)."""
    if isinstance(amqp_url_or_channel, str):
        connection = await aio_pika.connect(amqp_url_or_channel)
        try:
            channel = await connection.channel()
            await _publish(channel, body)
        finally:
            await connection.close()
    else:
        await _publish(amqp_url_or_channel, body)


async def _publish(channel: AbstractChannel, body: dict[str, Any]) -> None:
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await exchange.publish(event_message(body), routing_key=body["type"])
