"""Wiring: the bolt app with every handler registered, from explicit settings and dependencies.

This is the one module of `bot/` that imports `handlers/`.
"""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp

import handlers
from bot.lib import interaction
from bot.lib.config import Settings
from bot.lib.slack_out import make_client
from handlers.deps import Deps

log = logging.getLogger(__name__)


def build_bolt_app(settings: Settings, deps: Deps) -> AsyncApp:
    app = AsyncApp(
        signing_secret=settings.slack_signing_secret,
        # A client of its own, without the shared keep-alive session: bolt deep-copies each
        # request (with its client) for lazy listeners, and a live session cannot be copied.
        client=make_client(settings.require("slack_bot_token")[0], settings.slack_api_url),
        # Answer Slack within 3 s: ack first, the work runs after as lazy listeners.
        process_before_response=False,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("slack_bolt.AsyncApp"),
    )
    # Every listener failure, of an ack or of lazy work, is answered by the toolkit's one
    # error mapping; the lazy listeners' tasks are kept for the drain on stop.
    interaction.install(app, deps.slack)
    handlers.register_listeners(app, deps)
    return app


async def startup(deps: Deps) -> None:
    """What the handlers do once at start (join the department channels)."""
    await handlers.startup(deps)


def jobs(deps: Deps):
    """Periodic work of the handlers (reminders, expiries), as (name, seconds, coroutine fn)."""
    return handlers.background_jobs(deps)


async def drain(deps: Deps, within: float) -> None:
    """On stop, after the consumer and the jobs: let the work they started finish."""
    await handlers.drain(deps, within)


def sync_handler(deps: Deps):
    """The consumer's callback and the errors that mean 'never retry this message'."""
    return handlers.sync_handler(deps)
