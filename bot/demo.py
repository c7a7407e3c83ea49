"""`crm-bot demo`: the bot's main job on a fresh machine, in a local Slack you can click.

Starts the sandbox (bot/sandbox/, with its web page) on 127.0.0.1:--port, the real bot in HTTP
mode on a free port (signed requests, SQLite in a temporary or --data folder, a generated
master key), seeds the departments and ~50 customers, then plays sample sync events every few
seconds: through RabbitMQ when AMQP_URL answers, otherwise straight into the sync handler.
The sandbox and the bot only ever talk through signed HTTP, as Slack would.

The demo builds its own settings: SLACK_*, DATABASE_URL, CRM_MASTER_KEYS and CRM_CONFIG of the
environment are ignored (only AMQP_URL is used, and only when it answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.demo_data import (
    DEMO_NOTE,
    ERIN,
    SERVICE,
    SampleEvents,
    demo_config,
    demo_customers,
    demo_deals,
    roles,
    topics,
)
from bot.lib.config import Settings
from bot.sandbox import Sandbox
from bot.service import BotService, Tuning
from storage.bulk import upsert_many
from storage.crypto import generate_key_line
from storage.customer_fields import validate_customer

log = logging.getLogger(__name__)

SEED_CLOCK = datetime(2024, 1, 1, tzinfo=UTC)  # older than any sample event
KEY_FILE = "master-key"
DB_FILE = "crm-bot-demo.db"


@dataclass
class DemoOptions:
    port: int = 8080
    data: Path | None = None
    events: bool = True
    customers: int = 50
    interval: float = 4.0  # seconds between sample events
    amqp_url: str | None = None
    tuning: Tuning | None = None
    story: bool | None = None  # a note added from a thread (default: with the events)


class Demo:
    """The sandbox with its page, the bot, the seeded data and the event player, as one."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.sandbox: Sandbox | None = None
        self.service: BotService | None = None
        self.url = ""
        self.folder: Path | None = None
        self.via = "off"  # how sample events travel: "rabbitmq", "direct" or "off"
        self.played = 0
        self._temporary = False
        self._player: asyncio.Task[None] | None = None
        self._events: SampleEvents | None = None
        self._handle: Any = None
        self._amqp: Any = None  # connection used to publish sample events
        self._story: asyncio.Task[None] | None = None

    async def start(self) -> None:
        o = self.options
        self.folder, self._temporary = _data_folder(o.data)
        config = demo_config()
        # As strict as Slack: the scopes manifest.yml requests (the sandbox's default), rate
        # limits, membership.
        sandbox = self.sandbox = Sandbox(bot_token="xoxb-demo-" + secrets.token_hex(12), page=True)
        await sandbox.listen("127.0.0.1", o.port)
        self.url = sandbox.url + "/"
        page = sandbox.page
        page.title = "crm-bot demo"
        page.roles.update(roles(config))
        page.topics.update(topics(config))
        amqp = o.amqp_url if o.amqp_url and await broker_answers(o.amqp_url) else None
        secret = secrets.token_hex(16)
        # _env_file is a parameter of BaseSettings.__init__, which pydantic's
        # dataclass_transform hides from pyright
        settings = Settings(
            _env_file=None,  # pyright: ignore[reportCallIssue]
            slack_bot_token=sandbox.bot_token,
            slack_signing_secret=secret,
            slack_app_token=None,
            slack_api_url=sandbox.api_url,
            database_url=f"sqlite+aiosqlite:///{self.folder / DB_FILE}",
            amqp_url=amqp,
            crm_master_keys=_master_key(self.folder),
            crm_config=None,
            port=3000,  # unused: the bot listens on a free port
        )
        tuning = o.tuning or Tuning(per_channel_interval=0.2, outbox_poll=0.5)
        self.service = BotService(settings, config, tuning)
        await self.service.start(migrate=True, port=0)
        page.connect(self.service.url + "/slack/events", secret)
        await self.seed(o.customers)
        await self.seed_pipeline(o.customers)
        self._events = SampleEvents(demo_customers(o.customers))
        if amqp:
            import aio_pika

            self._amqp = await aio_pika.connect_robust(amqp)
            self.via = "rabbitmq"
        else:
            from bot.app import sync_handler

            self._handle, _ = sync_handler(self.deps)
            self.via = "direct"
        if o.events:
            self._player = asyncio.create_task(self._play(o.interval), name="demo-events")
        if o.events if o.story is None else o.story:
            self._story = asyncio.create_task(self.note_from_thread(), name="demo-note")

    @property
    def deps(self):
        assert self.service is not None and self.service.deps is not None
        return self.service.deps

    async def seed(self, count: int) -> tuple[int, int]:
        rows = [validate_customer(row) for row in demo_customers(count)]
        async with self.deps.db.transaction() as session:
            created, updated = await upsert_many(
                session, self.deps.vault, rows, source="demo-seed", occurred_at=SEED_CLOCK
            )
        log.info("demo customers: %d created, %d updated", created, updated)
        return created, updated

    async def seed_pipeline(self, count: int) -> int:
        """Deals with eight weeks of history, written as the sync would write them (storage
        only: replaying them as events would flood the channels with old alerts)."""
        from sqlalchemy import select

        from storage.deals import Deals
        from storage.models import Customer

        rows = demo_deals(demo_customers(count), datetime.now(UTC))
        async with self.deps.db.transaction() as session:
            ids = {ext for ext, _, _ in rows}
            stmt = select(Customer).where(Customer.external_id.in_(ids))
            customers = {c.external_id: c for c in (await session.execute(stmt)).scalars()}
            deals = Deals(session, self.deps.vault)
            for ext, data, when in rows:
                await deals.apply_deal(customers[ext], data, source="sales-crm", occurred_at=when)
            await deals.write()
        return len(rows)

    async def note_from_thread(self) -> None:
        """Erin, in customer service, puts what a customer said in a thread on the shared
        record with the "Add to customer record" shortcut, as a person on the page would."""
        assert self.sandbox is not None and self.sandbox.page is not None
        store, sim = self.sandbox.store, self.sandbox.page.sim
        try:
            ts = store.next_ts()
            store.add_message(
                SERVICE,
                {
                    "type": "message",
                    "user": ERIN,
                    "text": "Call with the Analytical Engines team just now",
                    "ts": ts,
                },
            )
            reply = store.next_ts()
            store.add_message(
                SERVICE,
                {"type": "message", "user": ERIN, "text": DEMO_NOTE, "ts": reply, "thread_ts": ts},
            )
            before = {v["id"] for v in store.views(ERIN)}
            await sim.message_shortcut(ERIN, SERVICE, reply, "add_to_customer_record")
            for _ in range(200):  # the modal opens within a second or two
                new = [  # once filled: it opens saying "Loading…"
                    v
                    for v in store.views(ERIN)
                    if v["id"] not in before and v.get("callback_id") == "note_add"
                ]
                if new:
                    break
                await asyncio.sleep(0.05)
            else:
                log.warning("demo note: the modal did not open")
                return
            values = {
                "note_customer": {"customer": {"type": "plain_text_input", "value": "CUS-1001"}},
                "note_text": {"text": {"type": "plain_text_input", "value": DEMO_NOTE}},
            }
            await sim.submit_view(ERIN, new[0]["id"], values)
        except Exception:
            log.exception("demo note from a thread failed")

    async def play(self, count: int = 1) -> list[dict[str, Any]]:
        """Send the next `count` sample events (to RabbitMQ, or into the sync handler)."""
        assert self._events is not None
        sent = []
        for _ in range(count):
            event = self._events.next()
            await self.send(event)
            sent.append(event)
        return sent

    async def send(self, event: dict[str, Any]) -> None:
        self.played += 1
        if self._amqp is not None:
            from bot.broker import publish_event

            channel = await self._amqp.channel()
            try:
                await publish_event(channel, event)
            finally:
                await channel.close()
            return
        try:
            await self._handle(event, 1)
        except Exception as exc:  # a demo event the handler refuses must not stop the demo
            log.warning("sample event %s (%s) not applied: %s", event["id"], event["type"], exc)

    async def _play(self, interval: float) -> None:
        await self.play(3)  # something to look at right away
        while True:
            await asyncio.sleep(interval)
            try:
                await self.play()
            except Exception:
                log.exception("could not send a sample event; trying again in %ss", interval)

    async def stop(self) -> None:
        if self._story is not None:
            self._story.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._story
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player
        if self._amqp is not None:
            await self._amqp.close()
        if self.sandbox is not None and self.sandbox.page is not None:
            await self.sandbox.page.close()
        if self.service is not None:
            await self.service.stop()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self._temporary and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


async def broker_answers(url: str, within: float = 3.0) -> bool:
    import aio_pika

    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), within)
    except Exception:
        return False
    await connection.close()
    return True


def _data_folder(data: Path | None) -> tuple[Path, bool]:
    if data is None:
        return Path(tempfile.mkdtemp(prefix="crm-bot-demo-")), True
    data.mkdir(parents=True, exist_ok=True)
    return data.resolve(), False


def _master_key(folder: Path) -> str:
    """The demo's key ring: kept next to its database, so a --data folder can be reopened."""
    path = folder / KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    line = generate_key_line("demo")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(line + "\n")
    return line


def _banner(demo: Demo, options: DemoOptions) -> str:
    where = f"{demo.folder} (deleted on exit)" if demo._temporary else str(demo.folder)
    if not options.events:
        events = "off (--no-events)"
    elif demo.via == "rabbitmq":
        events = f"every {options.interval:g} s, published to RabbitMQ (AMQP_URL)"
    else:
        events = f"every {options.interval:g} s, straight into the sync handler"
        if options.amqp_url:
            events += " (AMQP_URL does not answer)"
    return "\n".join(
        [
            f"crm-bot demo: open {demo.url}",
            "  act as any of the demo people (top right); type /crm help in a channel",
            f"  data: {where}",
            f"  sample events: {events}",
            "  press Ctrl-C to stop",
        ]
    )


async def run_demo(settings: Settings, args: Any) -> int:
    """`crm-bot demo [--port N] [--data DIR] [--no-events] [--customers N]`."""
    options = DemoOptions(
        port=args.port,
        data=args.data,
        events=not args.no_events,
        customers=args.customers,
        amqp_url=settings.amqp_url,
    )
    if options.customers < 1 or options.customers > 5000:
        print("crm-bot demo: --customers must be between 1 and 5000", file=sys.stderr)
        return 2
    for noisy in ("bot.service", "storage", "slack_bolt", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = Demo(options)
    try:
        try:
            await demo.start()
        except OSError as exc:
            print(
                f"crm-bot demo: cannot listen on 127.0.0.1:{options.port}: {exc.strerror or exc}"
                " (choose another --port)",
                file=sys.stderr,
            )
            return 2
        print(_banner(demo, options), flush=True)
        await stop.wait()
        print("crm-bot demo: stopping", flush=True)
    finally:
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
