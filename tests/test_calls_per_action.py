"""Web API calls per user action, counted by the sandbox, with a 5-person and a 50-person
department and 10 open handoffs to each: the count does not grow with the department, and
Slack refuses nothing with 429 (the sandbox's rate limits are on, as Slack's)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from bot.lib.config import parse_config
from bot.service import Tuning
from handlers.handoffs import flow as handoff_flow
from storage.models import Approval, Handoff
from tests.fixtures.bot import ALICE, SALES, bot_settings, start_bot
from tests.fixtures.slack import eventually
from tests.test_handoffs import seed

SIZES = (5, 50)


def people(size: int) -> list[str]:
    return [f"U0D{size:02d}{i:04d}" for i in range(size)]


def channel_of(size: int) -> str:
    return f"C0DEPT{size:03d}"


def config_text() -> str:
    parts = [
        f"""
[departments.sales]
name = "Sales"
channel = "{SALES}"
members = ["{ALICE}"]
leads = ["{ALICE}"]
"""
    ]
    for size in SIZES:
        members = ", ".join(f'"{u}"' for u in people(size))
        parts.append(
            f"""
[departments.d{size}]
name = "Dept {size}"
channel = "{channel_of(size)}"
members = [{members}]
leads = ["{people(size)[0]}"]
"""
        )
    parts.append('[approvals]\ndepartment = { refund = "d5", credit = "d50" }\n')
    return "\n".join(parts)


async def idle(bot) -> None:
    """The bot is done with the action: lazy listeners and the App Home worker finished."""
    lazy = bot.service._lazy
    homes = bot.deps.homes

    def quiet() -> bool:
        worker = homes._worker
        return not lazy.tasks and (worker is None or worker.done()) and not homes._due

    await eventually(quiet, within=30)


async def measure(bot, action, done, *, home: bool = True) -> Counter[str]:
    """The calls from `action` until `done()` and, with `home`, the requester's App Home
    republished (the last thing a handoff or approval step does), then the bot idle."""
    await idle(bot)
    mark = len(bot.store.calls())
    await action()
    await eventually(done, within=30)
    if home:
        await eventually(lambda: bot.sandbox.call_counts(mark)["views.publish"], within=30)
    await idle(bot)
    import os

    if os.environ.get("DEBUG_CALLS"):
        for c in bot.store.calls()[mark:]:
            print("   ", c.method, c.body.get("channel"), str(c.body.get("text"))[:60])
    return bot.sandbox.call_counts(mark)


async def command(bot, user: str, channel: str, text: str, home: bool = True) -> Counter[str]:
    before = len(bot.store.ephemerals(user, channel))
    return await measure(
        bot,
        lambda: bot.sim.command(user, channel, "/crm", text),
        lambda: len(bot.store.ephemerals(user, channel)) > before,
        home=home,
    )


async def fresh(bot, model, obj):
    async with bot.deps.db.transaction() as session:
        return await session.get(model, obj.id, populate_existing=True)


async def actions(bot, size: int) -> dict[str, Counter[str]]:
    """The calls of each action by people of the department of `size`."""
    member, lead, chan = people(size)[1], people(size)[0], channel_of(size)
    for user in (ALICE, member, lead):  # the people acting opened their App Home
        await bot.sim.home_opened(user)
    out = {
        "/crm find": await command(bot, member, chan, f"find xena {size}", home=False),
        "/crm show": await command(bot, member, chan, f"show x{size}@example.com", home=False),
        "/crm handoff": await command(bot, ALICE, SALES, f"handoff X-{size} d{size} please"),
    }
    async with bot.deps.db.transaction() as session:
        stmt = select(Handoff).where(
            Handoff.to_department == f"d{size}", Handoff.status == "requested"
        )
        h = (await session.execute(stmt.order_by(Handoff.created_at.desc()))).scalars().first()
    h = await fresh(bot, Handoff, h)

    def replies() -> tuple[int, int]:  # in the handoff's thread and on the requester's side
        return (
            len(bot.store.thread(chan, h.message_ts)),
            len(bot.store.thread(h.requester_channel_id, h.requester_ts)),
        )

    before = replies()
    out["Accept"] = await measure(
        bot,
        lambda: bot.sim.click(member, chan, h.message_ts, "handoff_accept", str(h.id)),
        lambda: all(now > then for now, then in zip(replies(), before, strict=True)),
    )
    kind = "refund" if size == 5 else "credit"
    await command(bot, ALICE, SALES, f"approval X-{size} {kind} 100 please")
    async with bot.deps.db.transaction() as session:
        stmt = select(Approval).where(Approval.department == f"d{size}")
        a = (await session.execute(stmt)).scalar_one()
    a = await eventually(lambda: _posted(bot, a))

    told = len(bot.store.dms(ALICE))

    async def decided() -> bool:  # the requester's DM is the last thing it sends
        return (await fresh(bot, Approval, a)).status == "approved" and (
            len(bot.store.dms(ALICE)) > told
        )

    out["Approve"] = await measure(
        bot,
        lambda: bot.sim.click(lead, chan, a.message_ts, "approval_approve", str(a.id)),
        decided,
    )
    return out


async def _posted(bot, a):
    again = await fresh(bot, Approval, a)
    return again if again.message_ts else None


async def test_calls_per_action_do_not_grow_with_the_department(db, db_url, sandbox):
    for size in SIZES:
        for user in people(size):
            sandbox.store.users[user] = {"name": user.lower(), "real_name": f"Person {user}"}
        sandbox.store.add_channel(channel_of(size), name=f"dept-{size}", members=people(size))
    bot = await start_bot(
        bot_settings(db_url, sandbox),
        sandbox,
        config=parse_config(config_text()),
        # Slack's pacing, as in production: one post a second per channel after a burst
        tuning=Tuning(outbox_poll=0.1),
    )
    try:
        table: dict[str, dict[int, Counter[str]]] = {}
        # Setup with the rate limits off: 20 handoffs posted at once would wait ~10 s on
        # Slack's per-channel limit, which is not what is measured here. On again below.
        sandbox.rate_limits_off()
        for size in SIZES:
            for i in range(10):
                await seed(bot.deps, f"C-{size}-{i}", f"c{size}.{i}@example.com", f"Cust {i}")
                await handoff_flow.create(
                    bot.deps,
                    handoff_flow.NewHandoff(
                        user=ALICE, to=f"d{size}", customer_ref=f"C-{size}-{i}", channel=SALES
                    ),
                )
            await seed(bot.deps, f"X-{size}", f"x{size}@example.com", f"Xena {size}")
        sandbox.rate_limit()  # Slack's own limits again
        for size in SIZES:
            for action, counts in (await actions(bot, size)).items():
                table.setdefault(action, {})[size] = counts
        print("\nWeb API calls per action (department of 5 | of 50), by method:")
        for action, counts in table.items():
            small, big = counts[5], counts[50]
            print(f"{action:14} {sum(small.values()):3} | {sum(big.values()):3}   {dict(big)}")
        for action, counts in table.items():
            assert counts[5] == counts[50], (action, counts)
        refused = [(c.method, c.status) for c in bot.store.calls() if c.status == 429]
        assert refused == []
    finally:
        await bot.sim.close()
        await bot.service.stop()
