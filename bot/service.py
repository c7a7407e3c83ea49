"""The running bot: storage, the bolt app behind the HTTP server (or Socket Mode), the RabbitMQ
consumer and outbox relay, and the handlers' periodic jobs. Started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_bolt_app, drain, jobs, startup, sync_handler
from bot.lib.config import ConfigError, CrmConfig, Settings
from bot.lib.metrics import broker_connected
from bot.lib.slack_out import SlackOut, make_client
from bot.runtime import open_storage
from bot.web import create_web_app
from handlers.deps import Deps
from storage.departments import sync_from_config

log = logging.getLogger(__name__)


# Slack's answers to apps.connections.open that no retry can change.
REFUSED_APP_TOKEN = {
    "invalid_auth",
    "not_authed",
    "not_allowed_token_type",
    "token_revoked",
    "account_inactive",
}
DRAIN_SECONDS = 10.0  # on stop, how long the alerts being posted may take to finish
JOB_STOP_SECONDS = 5.0  # on stop, how long a job's run under way may take to finish


@dataclass
class Tuning:
    per_channel_interval: float = 1.0
    prefetch: int = 256
    job_interval: float | None = None  # overrides every job's interval (tests)
    outbox_poll: float = 1.0


async def check_app_token(client: AsyncWebClient, app_token: str) -> None:
    """Slack refusing SLACK_APP_TOKEN, as a one-line ConfigError: the Socket Mode client would
    retry it forever, logging a traceback each time, and the bot would never be ready."""
    try:
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in REFUSED_APP_TOKEN:
            raise ConfigError(f"SLACK_APP_TOKEN was refused by Slack: {error}") from None
        raise


async def run_every(name: str, interval: float, fn, stopping: asyncio.Event) -> None:
    """Run a periodic job until `stopping` is set; a run under way then finishes first (one
    cancelled mid-transaction left its connection to be reset by the pool's finalizer, which
    logged a traceback). A failing run is logged with its traceback once per streak (a
    database outage would otherwise log one every interval), and the first run that works
    again says so."""
    failed = 0
    while not stopping.is_set():
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            failed += 1
            if failed == 1:
                log.exception("job %s failed; it runs again every %ss", name, interval)
        else:
            if failed:
                log.info("job %s works again after %d failed runs", name, failed)
            failed = 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval)


class BotService:
    def __init__(self, settings: Settings, config: CrmConfig, tuning: Tuning | None = None):
        self.settings = settings
        self.config = config
        self.tuning = tuning or Tuning()
        self.deps: Deps | None = None
        self.consumer = None
        self.relay = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._socket = None
        self._tasks: list[asyncio.Task] = []  # the periodic jobs
        self._stopping = asyncio.Event()  # set on stop: the jobs end after the run under way
        self._lazy = None
        self._http: aiohttp.ClientSession | None = None  # Slack Web API calls, kept alive

    async def start(self, *, migrate: bool = False, port: int | None = None) -> None:
        s = self.settings
        s.require("slack_bot_token", "slack_signing_secret", "crm_master_keys")
        db, vault = await open_storage(s, migrate=migrate)
        async with db.transaction() as session:
            await sync_from_config(session, self.config.departments)
        self._http = aiohttp.ClientSession()
        client = make_client(s.slack_bot_token, s.slack_api_url, session=self._http)
        slack = SlackOut(client, per_channel_interval=self.tuning.per_channel_interval)
        self.deps = deps = Deps(db=db, vault=vault, config=self.config, slack=slack)
        await startup(deps)
        bolt = build_bolt_app(s, deps)
        self._lazy = bolt.listener_runner.lazy_listener_runner
        if s.amqp_url:
            await self._start_broker(deps)
        else:
            log.info("AMQP_URL is not set: the sync consumer and outbox relay are off")
        for name, interval, fn in jobs(deps):
            every = self.tuning.job_interval or interval
            job = run_every(name, every, fn, self._stopping)
            self._tasks.append(asyncio.create_task(job, name=name))
        if s.slack_app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            await check_app_token(bolt.client, s.slack_app_token)
            self._socket = AsyncSocketModeHandler(bolt, s.slack_app_token)
            await self._socket.connect_async()
            log.info("connected to Slack over Socket Mode")
        web_app = create_web_app(bolt, self.readiness)
        self._runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            "0.0.0.0" if port is None else "127.0.0.1",
            s.port if port is None else port,
        )
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{bound}"
        log.info("crm-bot listening on port %s", bound)

    async def _start_broker(self, deps: Deps) -> None:
        from bot.broker import Consumer, OutboxMessage, OutboxRelay, customer_partition_key
        from storage import outbox

        handle, permanent = sync_handler(deps)
        t = self.tuning
        self.consumer = Consumer(
            self.settings.amqp_url,
            handle,
            permanent_errors=permanent,
            prefetch=t.prefetch,
            retry_delays=self.config.sync.retry_delays,
            max_attempts=self.config.sync.max_attempts,
            partition_key=customer_partition_key,
            healthy=deps.db.ping,
        )

        async def fetch():
            async with deps.db.transaction() as session:
                rows = await outbox.pending(session, 100)
            return [
                OutboxMessage(
                    id=str(r.id),
                    routing_key=r.routing_key,
                    body=r.body.encode(),
                    message_id=str(r.id),
                )
                for r in rows
            ]

        async def mark(ids):
            async with deps.db.transaction() as session:
                await outbox.mark_published(session, [uuid.UUID(i) for i in ids])

        self.relay = OutboxRelay(self.settings.amqp_url, fetch, mark, poll_interval=t.outbox_poll)
        deps.wake_outbox = self.relay.wake
        await self.consumer.start()
        await self.relay.start()

    async def readiness(self) -> dict[str, bool]:
        checks = {"database": bool(self.deps) and await self.deps.db.ping()}
        if self.consumer is not None:
            checks["broker"] = bool(self.consumer.connected)
            broker_connected.set(1 if checks["broker"] else 0)
        if self._socket is not None:  # Socket Mode: requests only arrive on this connection
            checks["slack"] = await self._socket.client.is_connected()
        return checks

    async def stop(self) -> None:
        """Drain: stop taking new work, let in-flight work finish, close everything."""
        if self._runner is not None:
            await self._runner.shutdown()
        if self._lazy is not None:  # answers already acknowledged to Slack
            await self._lazy.drain(within=10)
        if self.consumer is not None:
            await self.consumer.stop()
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=JOB_STOP_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.deps is not None:  # what the consumer and the jobs started: alerts being posted
            await drain(self.deps, within=DRAIN_SECONDS)
        if self.relay is not None:
            await self.relay.stop()
        if self._socket is not None:
            await self._socket.close_async()
        # give lazy listeners still running a moment to finish their answers
        pending = [
            t
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and "lazy" in (t.get_name() or "")
        ]
        if pending:
            await asyncio.wait(pending, timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
        if self.deps is not None:
            await self.deps.db.close()
