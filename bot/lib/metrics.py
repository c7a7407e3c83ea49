"""Prometheus metrics, served at GET /metrics. One registry per process."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

requests_total = Counter(
    "crm_slack_requests_total",
    "Requests from Slack by kind and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)
request_seconds = Histogram(
    "crm_slack_request_seconds",
    "Time to acknowledge a request from Slack",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
slack_api_calls_total = Counter(
    "crm_slack_api_calls_total",
    "Web API calls made by the bot",
    ["method", "outcome"],
    registry=REGISTRY,
)
slack_ratelimited_total = Counter(
    "crm_slack_ratelimited_total",
    "Answers 429 (rate limited) from Slack, by Web API method",
    ["method"],
    registry=REGISTRY,
)
alert_backlog = Gauge(
    "crm_alert_backlog",
    "Alerts waiting to be posted, per channel (as the channel's owner last saw them)",
    ["channel"],
    registry=REGISTRY,
)
alerts_rolled_up_total = Counter(
    "crm_alerts_rolled_up_total",
    "Sync alerts delivered in a channel's storm roll-up instead of the customer's thread",
    registry=REGISTRY,
)
events_total = Counter(
    "crm_sync_events_total",
    "Sync events by outcome: consumed, applied, stale, duplicate, retried, dead_lettered",
    ["outcome"],
    registry=REGISTRY,
)
alerts_posted_total = Counter(
    "crm_alerts_posted_total",
    "Sync alerts posted to channels",
    registry=REGISTRY,
)
alerts_failed_total = Counter(
    "crm_alerts_failed_total",
    "Sync alerts Slack refused for good, by reason (`crm-bot alerts failed` lists them)",
    ["kind"],
    registry=REGISTRY,
)
outbox_published_total = Counter(
    "crm_outbox_published_total",
    "Outbox events published to RabbitMQ",
    registry=REGISTRY,
)
sync_paused = Gauge(
    "crm_sync_paused",
    "1 while the sync consumer takes no events because the database does not answer",
    registry=REGISTRY,
)
broker_connected = Gauge(
    "crm_broker_connected",
    "1 while the RabbitMQ connection is open",
    registry=REGISTRY,
)
