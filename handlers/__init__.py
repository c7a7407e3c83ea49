"""What the bot does, one module per capability. `register_listeners` is the one place that
shows everything the app answers to."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from .commands import CommandRouter
from .deps import Deps


def register_listeners(app: AsyncApp, deps: Deps) -> CommandRouter:
    from . import customers, departments

    router = CommandRouter()
    customers.register(app, deps, router)
    departments.register(app, deps, router)
    router.register(app, deps)
    return router


def background_jobs(deps: Deps) -> list:
    """(name, interval in seconds, async fn()) for each periodic job."""
    return []


def sync_handler(deps: Deps):
    """(handle(body, attempt), permanent error types) for the RabbitMQ consumer."""
    raise NotImplementedError
