"""RabbitMQ: the topology, the sync-event consumer, the outbox relay and dead-letter tools.

bot/ must not import handlers/: the consumer takes the handler as a callback (wired in
bot/app.py).
"""

from bot.broker.consumer import Consumer
from bot.broker.dlq import DeadLetter, dlq_list, dlq_replay
from bot.broker.messages import customer_partition_key, publish_event
from bot.broker.relay import OutboxMessage, OutboxRelay
from bot.broker.topology import (
    DEAD_QUEUE,
    DELIVERY_LIMIT,
    DLX,
    EXCHANGE,
    INBOUND_TYPES,
    OUTBOUND_TYPES,
    RETRY_DELAYS,
    SYNC_QUEUE,
    Topology,
    declare_topology,
    retry_queue_name,
    topology_queue_names,
)

__all__ = [
    "DEAD_QUEUE",
    "DELIVERY_LIMIT",
    "DLX",
    "EXCHANGE",
    "INBOUND_TYPES",
    "OUTBOUND_TYPES",
    "RETRY_DELAYS",
    "SYNC_QUEUE",
    "Consumer",
    "DeadLetter",
    "OutboxMessage",
    "OutboxRelay",
    "Topology",
    "customer_partition_key",
    "declare_topology",
    "dlq_list",
    "dlq_replay",
    "publish_event",
    "retry_queue_name",
    "topology_queue_names",
]
