"""Wiring: the bolt app with every handler registered, from explicit settings and dependencies.

This is the one module of `bot/` that imports `handlers/`.
"""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp

import handlers
from handlers.deps import Deps

from .config import Settings

log = logging.getLogger(__name__)


def build_bolt_app(settings: Settings, deps: Deps) -> AsyncApp:
    app = AsyncApp(
        signing_secret=settings.slack_signing_secret,
        client=deps.slack.client,
        # Answer Slack within 3 s: ack first, the work runs after as lazy listeners.
        process_before_response=False,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("slack_bolt.AsyncApp"),
    )
    handlers.register_listeners(app, deps)
    return app


def jobs(deps: Deps):
    """Periodic work of the handlers (reminders, expiries), as (name, seconds, coroutine fn)."""
    return handlers.background_jobs(deps)


def sync_handler(deps: Deps):
    """The consumer's callback and the errors that mean 'never retry this message'."""
    return handlers.sync_handler(deps)
