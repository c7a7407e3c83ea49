"""The running bot: storage, the bolt app behind the HTTP server (or Socket Mode), the RabbitMQ
consumer and outbox relay, and the handlers' periodic jobs. Started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_bolt_app, drain, jobs, startup, sync_handler
from bot.doctor import Check, check_channel
from bot.http_guard import ConnectionGuard, GuardedSite, close_after_response, raise_fd_limit
from bot.lib.config import ConfigError, CrmConfig, Settings
from bot.lib.interaction import DrainableLazyRunner
from bot.lib.metrics import broker_connected
from bot.lib.pacing import SharedBudget
from bot.lib.slack_out import SlackOut, make_client
from bot.runtime import open_storage
from bot.web import create_metrics_app, create_web_app
from handlers.deps import Deps
from storage.crypto import CryptoError
from storage.departments import sync_from_config

if TYPE_CHECKING:  # imported where used: only a bot with AMQP_URL / SLACK_APP_TOKEN needs them
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.broker import Consumer, OutboxRelay

log = logging.getLogger(__name__)


# Slack's answers to apps.connections.open that no retry can change.
REFUSED_APP_TOKEN = {
    "invalid_auth",
    "not_authed",
    "not_allowed_token_type",
    "token_revoked",
    "account_inactive",
}
CHANNEL_CHECK_TIMEOUT = 15.0  # the check at start waits no longer for Slack; the job retries
DRAIN_SECONDS = 10.0  # on stop, how long acknowledged work and alerts being posted may take
JOB_STOP_SECONDS = 5.0  # on stop, how long a job's run under way may take to finish


@dataclass
class Tuning:
    per_channel_interval: float = 1.0
    prefetch: int = 256
    job_interval: float | None = None  # overrides every job's interval (tests)
    outbox_poll: float = 1.0
    # GuardedSite's max_connections / header_timeout (tests make them small)
    http_guard: dict = field(default_factory=dict)
    channel_check: float = 300.0  # seconds between checks of the department channels


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
        self.consumer: Consumer | None = None
        self.relay: OutboxRelay | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_url = ""  # set when METRICS_PORT serves /metrics apart
        self.guard: ConnectionGuard | None = None  # the HTTP server's
        self._socket: AsyncSocketModeHandler | None = None
        self._tasks: list[asyncio.Task] = []  # the periodic jobs
        self._stopping = asyncio.Event()  # set on stop: the jobs end after the run under way
        self._lazy: DrainableLazyRunner | None = None  # the listeners' work after their ack
        self._http: aiohttp.ClientSession | None = None  # Slack Web API calls, kept alive
        self.channel_problems: dict[str, Check] = {}  # channel -> what is wrong (see readiness)

    async def start(self, *, migrate: bool = False, port: int | None = None) -> None:
        s = self.settings
        token, secret, _ = s.require("slack_bot_token", "slack_signing_secret", "crm_master_keys")
        db, vault = await open_storage(s, migrate=migrate)
        if vault.audit_key_missing:  # every audited change would fail: say why, once
            await db.close()
            raise CryptoError(f"{vault.audit_key_missing} (`crm-bot audit verify` names it)")
        async with db.transaction() as session:
            await sync_from_config(session, self.config.departments)
        self._http = aiohttp.ClientSession()
        client = make_client(token, s.slack_api_url, session=self._http)
        interval = self.tuning.per_channel_interval
        # Replicas share a database only on PostgreSQL: there they share each channel's budget.
        shared = db.engine.dialect.name == "postgresql"
        budget = SharedBudget(db, interval, 1) if shared else None
        slack = SlackOut(client, per_channel_interval=interval, budget=budget)
        self.deps = deps = Deps(db=db, vault=vault, config=self.config, slack=slack)
        await startup(deps)  # joins the public department channels: before the channel check
        bolt = build_bolt_app(s, deps)
        lazy = bolt.listener_runner.lazy_listener_runner
        self._lazy = lazy if isinstance(lazy, DrainableLazyRunner) else None
        if s.amqp_url:
            await self._start_broker(deps, s.amqp_url)
        else:
            log.info("AMQP_URL is not set: the sync consumer and outbox relay are off")
        for name, interval, fn in jobs(deps):
            every = self.tuning.job_interval or interval
            job = run_every(name, every, fn, self._stopping)
            self._tasks.append(asyncio.create_task(job, name=name))
        await self._first_channel_check(client)
        watch = self._watch_channels(client)
        self._tasks.append(asyncio.create_task(watch, name="channel_check"))
        if s.slack_app_token:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            await check_app_token(bolt.client, s.slack_app_token)
            socket = self._socket = AsyncSocketModeHandler(bolt, s.slack_app_token)
            await socket.connect_async()
            log.info("connected to Slack over Socket Mode")
        raise_fd_limit()
        web_app = create_web_app(
            bolt,
            self.readiness,
            signing_secret=secret,
            metrics_token=s.metrics_token,
            serve_metrics=s.metrics_port is None,
        )
        close_after_response(web_app)
        host = "0.0.0.0" if port is None else "127.0.0.1"
        self._runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = GuardedSite(
            self._runner, host, s.port if port is None else port, **self.tuning.http_guard
        )
        await site.start()
        self.guard = site.guard
        bound = self._runner.addresses[0][1]  # (host, port, ...) of the listening socket
        self.url = f"http://127.0.0.1:{bound}"
        log.info("crm-bot listening on port %s", bound)
        if s.metrics_port is not None:
            self._metrics_runner = web.AppRunner(
                create_metrics_app(s.metrics_token), access_log=None, handle_signals=False
            )
            await self._metrics_runner.setup()
            metrics_port = s.metrics_port if port is None else 0
            msite = GuardedSite(self._metrics_runner, host, metrics_port, max_connections=64)
            await msite.start()
            mbound = self._metrics_runner.addresses[0][1]
            self.metrics_url = f"http://127.0.0.1:{mbound}"
            log.info("metrics on port %s", mbound)

    async def _start_broker(self, deps: Deps, amqp_url: str) -> None:
        from bot.broker import Consumer, OutboxMessage, OutboxRelay, customer_partition_key
        from storage import outbox

        handle, permanent = sync_handler(deps)
        t = self.tuning
        consumer = self.consumer = Consumer(
            amqp_url,
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

        relay = self.relay = OutboxRelay(amqp_url, fetch, mark, poll_interval=t.outbox_poll)
        deps.wake_outbox = relay.wake
        await consumer.start()
        await relay.start()

    # -- department channels --------------------------------------------------------------
    async def check_channels(self, client: AsyncWebClient) -> None:
        """Look at every department channel (bot.doctor.check_channel) and log what changed:
        a new problem as a warning (at start: every problem), a solved one as info."""
        found: dict[str, Check] = {}
        for dept in self.config.departments.values():
            check = await check_channel(client, dept)
            if check.status != "ok":
                found[dept.channel] = check
        for channel, check in found.items():
            if self.channel_problems.get(channel) != check:
                log.warning("department channel: %s", check.line())
        for channel, check in self.channel_problems.items():
            if channel not in found:
                log.info("department channel: %s is fine now", check.subject)
        self.channel_problems = found

    async def _first_channel_check(self, client: AsyncWebClient) -> None:
        try:
            await asyncio.wait_for(self.check_channels(client), CHANNEL_CHECK_TIMEOUT)
        except Exception as exc:  # Slack slow or away: the bot works anyway; the job retries
            log.warning(
                "could not check the department channels (%s); trying again in %ss",
                type(exc).__name__,
                self.tuning.channel_check,
            )

    async def _watch_channels(self, client: AsyncWebClient) -> None:
        """Every `Tuning.channel_check` seconds: an admin's /invite or unarchive shows up on
        /readyz without a restart (no membership events are subscribed)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.tuning.channel_check)
            if self._stopping.is_set():
                return
            try:
                await self.check_channels(client)
            except Exception as exc:
                log.warning("could not check the department channels (%s)", type(exc).__name__)

    async def readiness(self) -> dict[str, object]:
        """The database (and the broker, and in Socket Mode the connection to Slack) decide
        readiness. A department channel the bot cannot work in (a private one it was not
        invited to, an archived one, a public one the join at start did not get it into) is
        named under `channels` but does NOT make the bot unready: everything else works, and
        a load balancer taking every replica out for one channel would stop all of it; the
        alerts for that channel wait as failed (`crm-bot alerts failed`/`retry`)."""
        checks: dict[str, object] = {
            "database": self.deps is not None and await self.deps.db.ping()
        }
        if self.consumer is not None:
            checks["broker"] = bool(self.consumer.connected)
            broker_connected.set(1 if checks["broker"] else 0)
        if self._socket is not None:  # Socket Mode: requests only arrive on this connection
            checks["slack"] = await self._socket.client.is_connected()
        if self.channel_problems:
            checks["channels"] = {
                channel: f"{check.status} {check.detail}"
                for channel, check in self.channel_problems.items()
            }
        return checks

    async def stop(self) -> None:
        """Drain: stop taking new work, let in-flight work finish, close everything."""
        if self._runner is not None:
            await self._runner.shutdown()
        if self._socket is not None:  # Socket Mode's requests arrive on it: no new ones either
            await self._socket.close_async()
        if self._lazy is not None:  # work already acknowledged to Slack: clicks, commands
            await self._lazy.drain(within=DRAIN_SECONDS)
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
        if self._runner is not None:
            await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._http is not None:
            await self._http.close()
        if self.deps is not None:
            await self.deps.db.close()
