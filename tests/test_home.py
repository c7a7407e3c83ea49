"""The App Home tab: published when opened, composed from the handoff and approval sections."""

from __future__ import annotations

import pytest

from bot.lib.blocks import section
from bot.lib.blocks.home import home_view
from handlers.home import publish_home
from tests.fixtures.bot import ALICE, GRACE
from tests.fixtures.slack import block_texts, eventually


async def test_opening_the_home_tab_publishes_it(bot):
    reply = await bot.sim.home_opened(ALICE)
    assert reply.status == 200
    home = await eventually(lambda: bot.store.home(ALICE))
    assert home["type"] == "home"
    texts = block_texts(home["blocks"])
    for expected in (
        "Your departments: Sales",
        "Your open handoffs",
        "_No open handoffs._",
        "Your pending approvals",
        "_No pending approvals._",
        "How to use",
        "`/crm find <text>`",
    ):
        assert expected in texts, expected
    assert bot.store.home(GRACE) is None  # only the person who opened it


async def test_publish_home_composes_the_sections_of_handoffs_and_approvals(bot, monkeypatch):
    async def my_handoffs(deps, user):
        return [section(f"handoff for <@{user}>")]

    async def broken_approvals(deps, user):
        raise RuntimeError("approvals are down")

    monkeypatch.setitem(bot.deps.home_sections, "handoffs", my_handoffs)
    monkeypatch.setitem(bot.deps.home_sections, "approvals", broken_approvals)
    await publish_home(bot.deps, GRACE)
    texts = block_texts(bot.store.home(GRACE)["blocks"])
    assert f"handoff for <@{GRACE}>" in texts
    assert "_No open handoffs._" not in texts
    assert "Could not load: approvals" in texts
    assert "Your departments: Finance" in texts

    # published again (another module refreshing it), the same tab is updated in place
    first_id = bot.store.home(GRACE)["id"]
    monkeypatch.setitem(bot.deps.home_sections, "approvals", my_handoffs)
    await publish_home(bot.deps, GRACE)
    assert bot.store.home(GRACE)["id"] == first_id
    assert "Could not load" not in block_texts(bot.store.home(GRACE)["blocks"])


@pytest.mark.parametrize("count", [0, 1, 200])
def test_home_view_stays_within_slack_limits(count):
    many = [section(f"item {i}") for i in range(count)]
    view = home_view(["Sales"], many, many)
    assert view["type"] == "home" and len(view["blocks"]) <= 100


async def test_homes_are_republished_only_for_people_who_opened_them(bot):
    """A handoff to finance changes the homes of Alice (who asked) and of finance's people;
    only those who opened theirs are republished, in the background, each with the link
    saved when the handoff was posted (no chat.getPermalink per home)."""
    from tests.test_handoffs import handoff_via_command, seed

    await bot.sim.home_opened(ALICE)
    await bot.sim.home_opened(GRACE)
    await eventually(lambda: bot.store.home(ALICE) and bot.store.home(GRACE))
    await seed(bot.deps)
    mark = len(bot.store.calls())
    assert "off to Finance" in await handoff_via_command(bot)
    publishes = await eventually(
        lambda: len(bot.store.calls("views.publish")) >= 4 and bot.store.calls()[mark:]
    )
    published_for = {c.body["user_id"] for c in publishes if c.method == "views.publish"}
    assert published_for == {ALICE, GRACE}  # Frank (finance) never opened his
    assert "Ada Lovelace" in block_texts(bot.store.home(GRACE)["blocks"])
    assert [c.method for c in publishes].count("chat.getPermalink") == 1  # once, at the post
