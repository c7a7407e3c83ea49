"""RabbitMQ names and the idempotent declaration of the bot's topology.

::

    crm.events (topic) --inbound types--> crm-bot.sync (quorum) --consumer--> handle()
                                              |   ^   \\
          permanent error / gave up /         |   |    \\ transient error: copy with
          x-delivery-limit exceeded           |   |     \\ x-crm-attempt = n + 1
                                              v   |      v
    crm.events.dlx (topic) --#--> crm-bot.sync.dead   crm-bot.sync.retry.<delay>ms (quorum, TTL)
                                                          | expires back via the default
                                                          | exchange, routing key crm-bot.sync
                                                          +--> crm-bot.sync

Every quorum queue here dead-letters ``at-least-once``, which RabbitMQ only honours together with
``x-overflow: reject-publish``. Retry queues are named after their delay, so changing the delays
declares new queues instead of failing with PRECONDITION_FAILED on the old ones (old, empty retry
queues can be deleted by hand).
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, FieldValue

EXCHANGE = "crm.events"
DLX = "crm.events.dlx"
SYNC_QUEUE = "crm-bot.sync"
DEAD_QUEUE = "crm-bot.sync.dead"
RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 30.0)
DELIVERY_LIMIT = 10

# Types published by the systems of record, which the bot consumes.
INBOUND_TYPES: tuple[str, ...] = (
    "customer.upserted",
    "customer.deleted",
    "lead.qualified",
    "deal.stage_changed",
    "ticket.opened",
    "ticket.escalated",
    "ticket.resolved",
    "invoice.overdue",
    "payment.received",
)
# Types the bot publishes itself (source "crm-bot"), through the outbox relay.
OUTBOUND_TYPES: tuple[str, ...] = (
    "handoff.requested",
    "handoff.accepted",
    "handoff.declined",
    "handoff.completed",
    "approval.requested",
    "approval.approved",
    "approval.rejected",
)

# Headers the bot sets on copies it moves between queues.
H_ATTEMPT = "x-crm-attempt"  # attempt number of the next delivery (first delivery: absent = 1)
H_ROUTING_KEY = "x-crm-routing-key"  # the event's original routing key (retries re-route)
H_LAST_ERROR = "x-crm-last-error"  # why the previous attempt failed (retry copies)
H_ERROR = "x-crm-error"  # why the message is dead (dead-letter copies)
H_ATTEMPTS = "x-crm-attempts"  # attempts made before dead-lettering
H_OUTAGES = "x-crm-outages"  # failures during outages, not counted as attempts
CRM_HEADERS = (H_ATTEMPT, H_ROUTING_KEY, H_LAST_ERROR, H_ERROR, H_ATTEMPTS, H_OUTAGES)


def retry_queue_name(delay: float) -> str:
    return f"{SYNC_QUEUE}.retry.{round(delay * 1000)}ms"


@dataclass(frozen=True)
class Topology:
    exchange: AbstractExchange
    dlx: AbstractExchange
    queue: AbstractQueue
    dead_queue: AbstractQueue
    retry_queues: tuple[AbstractQueue, ...]


def _quorum(extra: dict[str, FieldValue]) -> dict[str, FieldValue]:
    return {
        "x-queue-type": "quorum",
        "x-overflow": "reject-publish",
        "x-dead-letter-strategy": "at-least-once",
        **extra,
    }


async def declare_topology(
    channel: AbstractChannel,
    *,
    retry_delays: tuple[float, ...] = RETRY_DELAYS,
    delivery_limit: int = DELIVERY_LIMIT,
) -> Topology:
    """Declare exchanges, queues and bindings; safe to call any number of times.

    Declared on a robust channel, everything is declared again after a reconnect.
    """
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.TOPIC, durable=True)
    # No x-delivery-limit on the dead queue: without a dead-letter exchange of its own, a message
    # over the limit would be dropped, and dlq_list requeues what it looks at.
    dead_queue = await channel.declare_queue(
        DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dlx, "#")
    queue = await channel.declare_queue(
        SYNC_QUEUE,
        durable=True,
        arguments=_quorum({"x-dead-letter-exchange": DLX, "x-delivery-limit": delivery_limit}),
    )
    for routing_key in INBOUND_TYPES:
        await queue.bind(exchange, routing_key)
    retry_queues = []
    for delay in dict.fromkeys(retry_delays):  # unique, in order
        retry_queues.append(
            await channel.declare_queue(
                retry_queue_name(delay),
                durable=True,
                arguments=_quorum(
                    {
                        "x-message-ttl": round(delay * 1000),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": SYNC_QUEUE,
                    }
                ),
            )
        )
    return Topology(exchange, dlx, queue, dead_queue, tuple(retry_queues))


def topology_queue_names(retry_delays: tuple[float, ...] = RETRY_DELAYS) -> list[str]:
    return [SYNC_QUEUE, DEAD_QUEUE, *(retry_queue_name(d) for d in retry_delays)]
