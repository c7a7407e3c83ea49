"""Socket Mode: a bot started with SLACK_APP_TOKEN takes Slack's requests over the WebSocket
that apps.connections.open hands out, instead of at a public Request URL. Commands, button
clicks and events reach it as envelopes there, and what it acknowledges is what people see."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.lib.config import ConfigError, parse_config
from bot.sandbox import Sandbox
from bot.service import BotService
from storage.customers import Customers
from storage.models import utcnow
from tests.fixtures.bot import ALICE, SALES, TEST_CONFIG, Harness, bot_settings, start_bot
from tests.fixtures.slack import BOT_TOKEN, SCOPES, block_texts, eventually

APP_TOKEN = "xapp-1-A0SANDBOX-1-sandbox"


@pytest.fixture
async def socket_bot(db, db_url) -> AsyncIterator[Harness]:
    sandbox = await Sandbox.start(bot_token=BOT_TOKEN, app_token=APP_TOKEN, scopes=SCOPES)
    bot = await start_bot(bot_settings(db_url, sandbox, slack_app_token=APP_TOKEN), sandbox)
    bot.sim.socket_mode = True  # people's requests go over the bot's WebSocket, not HTTP
    try:
        yield bot
    finally:
        await bot.service.stop()
        await sandbox.stop()


async def test_commands_clicks_and_events_arrive_over_the_socket(socket_bot):
    bot = socket_bot
    assert bot.sandbox.socket_mode.connected.is_set()
    async with bot.deps.db.transaction() as session:
        fields = {"name": "Ada Lovelace", "email": "ada@example.com", "company": "Engines Ltd"}
        ada = (
            await Customers(session, bot.deps.vault).upsert(
                "CUST-1", fields, source="test", occurred_at=utcnow()
            )
        ).customer

    reply = await bot.sim.command(ALICE, SALES, "/crm", "find ada")
    assert reply.status == 200
    results = await eventually(lambda: bot.store.ephemerals(ALICE))
    assert "Ada Lovelace" in block_texts(results[-1].blocks)

    await bot.sim.click(ALICE, SALES, results[-1].ts, "customer_open", str(ada.id))
    await eventually(lambda: len(bot.store.ephemerals(ALICE)) > len(results))
    assert "ada@example.com" in block_texts(bot.store.ephemerals(ALICE)[-1].blocks)

    await bot.sim.home_opened(ALICE)
    home = await eventually(lambda: bot.store.home(ALICE))
    assert "Your departments: Sales" in block_texts(home["blocks"])


async def test_readyz_reports_the_socket(socket_bot):
    """A load balancer or orchestrator sees when Slack's connection is gone."""

    async def ready() -> tuple[int, dict]:
        url = socket_bot.service.url + "/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status, await r.json()

    assert await ready() == (200, {"ok": True, "database": True, "slack": True})
    await socket_bot.sandbox.stop()  # Slack goes away: the connection drops, reconnects fail
    assert await eventually(lambda: _gone(ready)) == (
        503,
        {"ok": False, "database": True, "slack": False},
    )


async def _gone(ready):
    status, body = await ready()
    return (status, body) if status == 503 else None


async def test_an_app_token_slack_refuses_stops_the_start_in_one_line(db, db_url):
    """The Socket Mode client would retry a refused token forever; the admin gets one line."""
    async with await Sandbox.start(
        bot_token=BOT_TOKEN, app_token=APP_TOKEN, scopes=SCOPES
    ) as sandbox:
        settings = bot_settings(db_url, sandbox, slack_app_token="xapp-1-wrong")
        service = BotService(settings, parse_config(TEST_CONFIG))
        try:
            with pytest.raises(ConfigError) as err:
                await service.start(migrate=True, port=0)
        finally:
            await service.stop()
        assert str(err.value) == "SLACK_APP_TOKEN was refused by Slack: invalid_auth"
        assert not sandbox.socket_mode.connected.is_set()
