"""The real bot answers Slack: help, unknown subcommands, forged signatures, operator endpoints."""

import aiohttp

from tests.fixtures.bot import ALICE, SALES, bot_settings, start_bot
from tests.fixtures.slack import eventually


async def test_help_and_unknown_subcommand(bot):
    reply = await bot.sim.command(ALICE, SALES, "/crm", "help")
    assert reply.status == 200
    seen = await eventually(lambda: bot.store.ephemerals(ALICE))
    assert "work on the same customers" in seen[-1].text
    await bot.sim.command(ALICE, SALES, "/crm", "frobnicate now")
    seen = await eventually(
        lambda: len(bot.store.ephemerals(ALICE)) == 2 and bot.store.ephemerals(ALICE)
    )
    assert "Unknown subcommand `frobnicate`" in seen[-1].text


async def test_forged_and_stale_requests_get_401(bot):
    for options in ({"signing": "none"}, {"signing": "wrong"}, {"signing": "stale"}):
        reply = await bot.sim.command(ALICE, SALES, "/crm", "help", **options)
        assert reply.status == 401, options
    assert bot.store.ephemerals(ALICE) == []


async def test_operator_endpoints(bot):
    async with aiohttp.ClientSession() as http:
        async with http.get(bot.service.url + "/healthz") as r:
            assert r.status == 200
        async with http.get(bot.service.url + "/readyz") as r:
            assert r.status == 200 and (await r.json())["database"] is True
        await bot.sim.command(ALICE, SALES, "/crm", "help")
        async with http.get(bot.service.url + "/metrics") as r:
            text = await r.text()
    assert 'crm_slack_requests_total{kind="command",outcome="ok"}' in text


async def test_stopping_lets_acknowledged_answers_finish(db, db_url, sandbox):
    """SIGTERM drains: a command acknowledged just before the stop still gets its answer."""
    harness = await start_bot(bot_settings(db_url, sandbox), sandbox)
    try:
        reply = await harness.sim.command(ALICE, SALES, "/crm", "find zebra")
        assert reply.status == 200
    finally:
        await harness.service.stop()  # at once, while the answer is being worked out
        await harness.sim.close()
    answers = [e.text for e in sandbox.store.ephemerals(ALICE)]
    assert any("No customers match" in a for a in answers), answers
