"""Arbitrary `/crm` text never breaks the bot: each command gets a 200 and exactly one short
ephemeral answer (never the 'it was logged' apology), and the bot keeps serving."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.bot import ALICE, SALES
from tests.fixtures.slack import eventually

SUBCOMMANDS = ["", "find", "show", "dept", "dept link", "help", "FIND", "show   "]
texts = st.one_of(
    st.text(max_size=300),
    st.tuples(st.sampled_from(SUBCOMMANDS), st.text(max_size=200)).map(" ".join),
    st.tuples(
        st.sampled_from(SUBCOMMANDS),
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=100),
    ).map(" ".join),
    st.text(alphabet="<>&|@:#!\x00\x01\x1b\x7f \t\n", max_size=50).map(lambda t: "find " + t),
)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_arbitrary_command_text(bot):
    seen = {"count": 0}
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(text=texts)
    def one_command(text: str) -> None:
        # hypothesis drives from a worker thread; the bot and the sandbox live on this loop
        asyncio.run_coroutine_threadsafe(check(text), loop).result(timeout=30)

    async def check(text: str) -> None:
        reply = await bot.sim.command(ALICE, SALES, "/crm", text)
        assert reply.status == 200, (text, reply.status, reply.body[:200])
        seen["count"] += 1
        answers = await eventually(
            lambda: len(bot.store.ephemerals(ALICE)) >= seen["count"] and True
        )
        assert answers
        ephemerals = bot.store.ephemerals(ALICE)
        assert len(ephemerals) == seen["count"], text
        answer = ephemerals[-1].text
        assert answer and "it was logged" not in answer, (text, answer)
        assert len(answer) < 1000, (text, answer)

    await asyncio.to_thread(one_command)
    assert seen["count"] >= 30  # hypothesis really ran its examples
    assert (await bot.sim.command(ALICE, SALES, "/crm", "help")).status == 200
