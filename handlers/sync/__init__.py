"""Sync: events from RabbitMQ applied to the shared records (`apply`), the alert rules that pick
channels (`alerts`), and the delivery of alerts and live cards to Slack (`delivery`)."""
