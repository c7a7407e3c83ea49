"""Wiring: the bolt app with every handler registered, from explicit settings and dependencies.

This is the one module of `bot/` that imports `handlers/`.
"""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.lazy_listener.async_internals import to_runnable_function
from slack_bolt.lazy_listener.asyncio_runner import AsyncioLazyListenerRunner

import handlers
from bot.lib.config import Settings
from bot.lib.slack_out import make_client
from handlers.deps import Deps

log = logging.getLogger(__name__)


class DrainableLazyRunner(AsyncioLazyListenerRunner):
    """bolt's asyncio runner of lazy listeners, keeping their tasks, so that a shutdown lets
    the work acknowledged to Slack finish before the database closes."""

    def __init__(self, logger: logging.Logger):
        super().__init__(logger)
        self.tasks: set[asyncio.Task] = set()

    def start(self, function, request) -> None:
        task = asyncio.get_running_loop().create_task(
            to_runnable_function(internal_func=function, logger=self.logger, request=request)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, within: float) -> None:
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=within)
            if late:
                log.warning("%d lazy listeners still running at shutdown", len(late))


def build_bolt_app(settings: Settings, deps: Deps) -> AsyncApp:
    app = AsyncApp(
        signing_secret=settings.slack_signing_secret,
        # A client of its own, without the shared keep-alive session: bolt deep-copies each
        # request (with its client) for lazy listeners, and a live session cannot be copied.
        client=make_client(settings.slack_bot_token, settings.slack_api_url),
        # Answer Slack within 3 s: ack first, the work runs after as lazy listeners.
        process_before_response=False,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("slack_bolt.AsyncApp"),
    )
    app.listener_runner.lazy_listener_runner = DrainableLazyRunner(app.logger)
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
