"""Handoffs through the real bot and the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import select, update

from bot.sandbox.store import dm_channel_id
from handlers.handoffs import flow as handoff_flow
from handlers.handoffs.listeners import home_section
from storage import audit
from storage.customers import Customers
from storage.models import AuditEntry, Handoff, OutboxEvent
from tests.fixtures.bot import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    FINANCE,
    FRANK,
    GRACE,
    SALES,
    SERVICE,
    bot_settings,
    start_bot,
)
from tests.fixtures.slack import block_texts, eventually, filled_views

SCHEMA = json.loads(Path("bot/contracts/sync-event.schema.json").read_text())
NOTE = "Needs a credit check before Friday"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------
async def seed(deps, external_id="C-ADA", email="ada@example.com", name="Ada Lovelace"):
    async with deps.db.transaction() as session:
        result = await Customers(session, deps.vault).upsert(
            external_id,
            {"name": name, "email": email, "phone": "+44 20 7946 0000", "tier": "enterprise"},
            source="crm",
            occurred_at=T0,
        )
        return result.customer.id


async def rows(deps) -> list[Handoff]:
    async with deps.db.transaction() as session:
        return list((await session.execute(select(Handoff).order_by(Handoff.created_at))).scalars())


async def settled(deps) -> list[Handoff]:
    """The handoffs once both their messages are posted and recorded."""

    async def check():
        found = await rows(deps)
        return found if found and all(h.message_ts and h.requester_ts for h in found) else None

    return await eventually(check)


async def events(deps) -> list[dict]:
    async with deps.db.transaction() as session:
        found = (await session.execute(select(OutboxEvent))).scalars().all()
    return [json.loads(r.body) for r in found]


async def audit_actions(deps) -> list[str]:
    async with deps.db.transaction() as session:
        found = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars()
        return [e.action for e in found if e.entity_type == "handoff"]


def texts(message) -> str:
    return (message.get("text") or "") + "\n" + block_texts(message.get("blocks") or [])


def action_ids(message) -> list[str]:
    return [
        e["action_id"]
        for b in message.get("blocks") or []
        if b["type"] == "actions"
        for e in b["elements"]
    ]


async def handoff_via_command(bot, text="ada@example.com finance " + NOTE, user=ALICE, chan=SALES):
    before = len(bot.store.ephemerals(user, chan))
    await bot.sim.command(user, chan, "/crm", "handoff " + text)
    await eventually(lambda: len(bot.store.ephemerals(user, chan)) > before)
    return bot.store.ephemerals(user, chan)[-1].text


async def open_handoff(bot):
    """Alice (sales) hands Ada off to finance; returns (handoff row, parent, requester msg)."""
    await seed(bot.deps)
    answer = await handoff_via_command(bot)
    assert "Handed *Ada Lovelace* off to Finance" in answer, answer
    (h,) = await rows(bot.deps)
    parent = await eventually(lambda: h.message_ts and bot.store.message(FINANCE, h.message_ts))
    mine = bot.store.message(SALES, h.requester_ts)
    assert mine is not None
    return h, parent, mine


async def click(bot, user, h, action_id, value=None, *, requester_side=False, **options):
    channel, ts = (
        (h.requester_channel_id, h.requester_ts) if requester_side else (FINANCE, h.message_ts)
    )
    return await bot.sim.click(
        user, channel, ts, action_id, str(h.id) if value is None else value, **options
    )


async def status(bot, h) -> str:
    async with bot.deps.db.transaction() as session:
        return (await session.get(Handoff, h.id, populate_existing=True)).status


async def refusal(bot, user, channel, count_before, contains):
    seen = await eventually(
        lambda: (
            len(bot.store.ephemerals(user, channel)) > count_before
            and bot.store.ephemerals(user, channel)
        )
    )
    assert contains in seen[-1].text, seen[-1].text
    return seen[-1].text


# -- the whole path ----------------------------------------------------------------------
async def test_sales_to_finance_whole_path(bot):
    h, parent, mine = await open_handoff(bot)
    # the handoff message in finance: who, the customer (no contact data), why, since, status
    shown = texts(parent)
    assert f"<@{ALICE}> (Sales)" in shown and "Ada Lovelace" in shown and NOTE in shown
    assert "ada@example.com" not in shown and "7946" not in shown
    assert "Waiting for Finance to accept" in shown and "<!date^" in shown
    assert action_ids(parent) == ["handoff_accept", "handoff_decline"]
    assert {
        e["value"] for b in parent["blocks"] if b["type"] == "actions" for e in b["elements"]
    } == {str(h.id)}
    # the requester's side links to it
    link = f"/archives/{FINANCE}/p{h.message_ts.replace('.', '')}"
    assert link in texts(mine) and action_ids(mine) == ["handoff_cancel"]
    # the note is stored encrypted
    assert NOTE.encode() not in h.note_ct

    await click(bot, FRANK, h, "handoff_accept")
    accepted = await eventually(
        lambda: (
            len(bot.store.thread(FINANCE, h.message_ts)) == 2
            and bot.store.thread(FINANCE, h.message_ts)
        )
    )
    assert f"<@{FRANK}> accepted" in accepted[-1]["text"]
    mine_thread = await eventually(
        lambda: (
            len(bot.store.thread(SALES, h.requester_ts)) == 2
            and bot.store.thread(SALES, h.requester_ts)
        )
    )
    assert f"<@{FRANK}> accepted" in mine_thread[-1]["text"]
    parent = bot.store.message(FINANCE, h.message_ts)
    assert action_ids(parent) == ["handoff_complete"] and f"Accepted by <@{FRANK}>" in texts(parent)
    assert action_ids(bot.store.message(SALES, h.requester_ts)) == []  # no cancel once accepted

    await click(bot, FRANK, h, "handoff_complete")
    await eventually(lambda: len(bot.store.thread(FINANCE, h.message_ts)) == 3)
    await eventually(lambda: len(bot.store.thread(SALES, h.requester_ts)) == 3)
    parent = bot.store.message(FINANCE, h.message_ts)
    assert action_ids(parent) == [] and f"Completed by <@{FRANK}>" in texts(parent)
    assert len(bot.store.history(FINANCE, h.message_ts)) == 2  # one chat.update per step
    assert "completed this handoff" in bot.store.thread(SALES, h.requester_ts)[-1]["text"]

    (done,) = await rows(bot.deps)
    assert (done.status, done.assignee, done.closed_by) == ("completed", FRANK, FRANK)
    bodies = await events(bot.deps)
    assert Counter(b["type"] for b in bodies) == Counter(
        ["handoff.requested", "handoff.accepted", "handoff.completed"]
    )
    for body in bodies:
        jsonschema.validate(body, SCHEMA)
        assert body["customer"] == {"external_id": "C-ADA"}
        assert body["data"]["handoff_id"] == str(h.id)
        assert (body["data"]["from_department"], body["data"]["to_department"]) == (
            "sales",
            "finance",
        )
        assert NOTE not in json.dumps(body)
    assert await audit_actions(bot.deps) == [
        "handoff.requested",
        "handoff.accepted",
        "handoff.completed",
    ]
    async with bot.deps.db.transaction() as session:
        assert (await audit.verify(session, bot.deps.vault)).ok


async def test_decline_asks_for_a_reason(bot):
    h, _, _ = await open_handoff(bot)
    await click(bot, GRACE, h, "handoff_decline")
    (view,) = await eventually(lambda: bot.store.views(GRACE))
    assert view["callback_id"] == "handoff_decline_reason"
    # an empty reason is refused in the modal and changes nothing
    reply = await bot.sim.submit_view(GRACE, view["id"], {"reason": {"reason": {"value": "  "}}})
    assert reply.json()["response_action"] == "errors"
    assert await status(bot, h) == "requested"
    reason = "We only take this after the contract is signed"
    await bot.sim.submit_view(GRACE, view["id"], {"reason": {"reason": {"value": reason}}})
    thread = await eventually(
        lambda: (
            len(bot.store.thread(SALES, h.requester_ts)) == 2
            and bot.store.thread(SALES, h.requester_ts)
        )
    )
    assert reason in thread[-1]["text"] and f"<@{GRACE}> declined" in thread[-1]["text"]
    assert len(bot.store.thread(FINANCE, h.message_ts)) == 2
    assert f"Declined by <@{GRACE}>" in texts(bot.store.message(FINANCE, h.message_ts))
    (row,) = await rows(bot.deps)
    assert row.status == "declined" and reason.encode() not in row.reason_ct
    declined = [b for b in await events(bot.deps) if b["type"] == "handoff.declined"]
    assert len(declined) == 1 and reason not in json.dumps(declined[0])
    jsonschema.validate(declined[0], SCHEMA)


async def test_cancel_by_the_requester_only(bot):
    h, _, _ = await open_handoff(bot)
    n = len(bot.store.ephemerals(BOB, SALES))
    await click(bot, BOB, h, "handoff_cancel", requester_side=True)
    await refusal(bot, BOB, SALES, n, f"Only <@{ALICE}>, who asked, can cancel it.")
    assert await status(bot, h) == "requested"
    await click(bot, ALICE, h, "handoff_cancel", requester_side=True)
    await eventually(lambda: len(bot.store.thread(FINANCE, h.message_ts)) == 2)
    assert await status(bot, h) == "cancelled"
    assert action_ids(bot.store.message(FINANCE, h.message_ts)) == []
    cancelled = [b for b in await events(bot.deps) if b["type"] == "handoff.declined"]
    assert len(cancelled) == 1 and cancelled[0]["data"]["cancelled"] is True
    jsonschema.validate(cancelled[0], SCHEMA)
    assert (await audit_actions(bot.deps))[-1] == "handoff.cancelled"
    n = len(bot.store.ephemerals(FRANK, FINANCE))
    await click(bot, FRANK, h, "handoff_accept")
    await refusal(bot, FRANK, FINANCE, n, f"already cancelled by <@{ALICE}>")


# -- who may click -----------------------------------------------------------------------
async def test_only_the_receiving_department(bot):
    h, _, _ = await open_handoff(bot)
    for user, action_id in (
        (ALICE, "handoff_accept"),
        (CAROL, "handoff_decline"),
        (DAVE, "handoff_accept"),
    ):
        n = len(bot.store.ephemerals(user, FINANCE))
        await click(bot, user, h, action_id)
        await refusal(bot, user, FINANCE, n, "Only members of Finance can")
    assert bot.store.views(CAROL) == []  # no reason modal for an outsider
    n = len(bot.store.ephemerals(FRANK, FINANCE))
    await click(bot, FRANK, h, "handoff_complete")
    await refusal(bot, FRANK, FINANCE, n, "Accept it first")
    await click(bot, FRANK, h, "handoff_accept")
    await eventually(lambda: len(bot.store.thread(FINANCE, h.message_ts)) == 2)
    n = len(bot.store.ephemerals(ALICE, FINANCE))
    await click(bot, ALICE, h, "handoff_complete")
    await refusal(bot, ALICE, FINANCE, n, "Only members of Finance can complete")
    assert await status(bot, h) == "accepted"
    assert len(bot.store.thread(FINANCE, h.message_ts)) == 2
    assert Counter(b["type"] for b in await events(bot.deps)) == Counter(
        ["handoff.requested", "handoff.accepted"]
    )


async def test_forged_values_change_nothing(bot):
    h, _, _ = await open_handoff(bot)
    await seed(bot.deps, "C-BOB", "bob@example.org", "Bob Builder")
    await handoff_via_command(bot, "C-BOB service angry about invoice")
    other = (await rows(bot.deps))[-1]
    assert other.to_department == "service"
    cases = [
        (FRANK, str(other.id), "does not belong to this handoff's message"),  # another dept's id
        (DAVE, str(other.id), "does not belong to this handoff's message"),  # even for its members
        (FRANK, str(uuid.uuid4()), "I know no such handoff"),
        (FRANK, "'; DROP TABLE handoffs; --", "does not name a handoff"),
        (FRANK, "", "does not name a handoff"),
    ]
    for user, value, says in cases:
        n = len(bot.store.ephemerals(user, FINANCE))
        await click(bot, user, h, "handoff_accept", value=value)
        await refusal(bot, user, FINANCE, n, says)
    assert [r.status for r in await rows(bot.deps)] == ["requested", "requested"]
    assert bot.store.calls("chat.update") == []
    assert len(bot.store.thread(FINANCE, h.message_ts)) == 1


async def test_double_clicks_and_retries_have_one_effect(bot):
    h, _, _ = await open_handoff(bot)
    await asyncio.gather(
        click(bot, FRANK, h, "handoff_accept"),
        click(bot, FRANK, h, "handoff_accept"),
        click(bot, FRANK, h, "handoff_accept", retry_num=1, retry_reason="http_timeout"),
    )
    await eventually(lambda: len(bot.store.ephemerals(FRANK, FINANCE)) == 2)
    await eventually(lambda: len(bot.store.thread(SALES, h.requester_ts)) == 2)
    told = bot.store.ephemerals(FRANK, FINANCE)
    assert [e.text for e in told] == ["Already accepted by you."] * 2
    assert len(bot.store.thread(FINANCE, h.message_ts)) == 2
    accepted = [b for b in await events(bot.deps) if b["type"] == "handoff.accepted"]
    assert len(accepted) == 1
    assert (await audit_actions(bot.deps)).count("handoff.accepted") == 1


async def test_two_people_accept_at_once(bot):
    h, _, _ = await open_handoff(bot)
    await asyncio.gather(
        click(bot, FRANK, h, "handoff_accept"), click(bot, GRACE, h, "handoff_accept")
    )
    told = await eventually(
        lambda: bot.store.ephemerals(FRANK, FINANCE) + bot.store.ephemerals(GRACE, FINANCE)
    )
    await eventually(lambda: len(bot.store.thread(SALES, h.requester_ts)) == 2)
    (row,) = await rows(bot.deps)
    assert row.status == "accepted" and row.assignee in (FRANK, GRACE)
    loser = GRACE if row.assignee == FRANK else FRANK
    told = bot.store.ephemerals(FRANK, FINANCE) + bot.store.ephemerals(GRACE, FINANCE)
    assert [(e.user, e.text) for e in told] == [(loser, f"Already accepted by <@{row.assignee}>.")]
    assert len(bot.store.thread(FINANCE, h.message_ts)) == 2
    assert len([b for b in await events(bot.deps) if b["type"] == "handoff.accepted"]) == 1


# -- claim timing ------------------------------------------------------------------------
async def past_deadline(db, h):
    async with db.transaction() as session:
        await session.execute(
            update(Handoff)
            .where(Handoff.id == h.id)
            .values(claim_deadline=datetime.now(UTC) - timedelta(seconds=1))
        )


def bot_replies(bot, h, word):
    return [m for m in bot.store.thread(FINANCE, h.message_ts)[1:] if word in m["text"]]


async def test_reminder_once_then_the_leads(bot):
    h, _, _ = await open_handoff(bot)
    assert await handoff_flow.remind_unclaimed(bot.deps) == 0  # not yet due
    await past_deadline(bot.deps.db, h)
    assert await handoff_flow.remind_unclaimed(bot.deps) == 1
    assert await handoff_flow.remind_unclaimed(bot.deps) == 0  # once
    await eventually(lambda: bot_replies(bot, h, "Reminder"))
    assert len(bot_replies(bot, h, "Reminder")) == 1
    assert bot_replies(bot, h, "Reminder")[0]["thread_ts"] == h.message_ts
    await past_deadline(bot.deps.db, h)  # another period passes
    assert await handoff_flow.remind_unclaimed(bot.deps) == 1
    assert await handoff_flow.remind_unclaimed(bot.deps) == 0
    (lead,) = await eventually(lambda: bot_replies(bot, h, "nobody has accepted"))
    assert f"<@{GRACE}>" in lead["text"] and f"<@{FRANK}>" not in lead["text"]
    await past_deadline(bot.deps.db, h)
    assert await handoff_flow.remind_unclaimed(bot.deps) == 0  # and then nothing more
    assert len(bot.store.thread(FINANCE, h.message_ts)) == 3
    assert bot.store.thread(SALES, h.requester_ts)[1:] == []  # reminders stay in finance


async def test_accepted_handoffs_get_no_reminder(bot):
    h, _, _ = await open_handoff(bot)
    await click(bot, FRANK, h, "handoff_accept")
    await eventually(lambda: len(bot.store.thread(FINANCE, h.message_ts)) == 2)
    await past_deadline(bot.deps.db, h)
    assert await handoff_flow.remind_unclaimed(bot.deps) == 0


async def test_reminder_survives_a_restart(db, db_url, sandbox):
    first = await start_bot(bot_settings(db_url, sandbox), sandbox)
    try:
        h, _, _ = await open_handoff(first)
    finally:
        await first.sim.close()
        await first.service.stop()
    await past_deadline(db, h)  # the deadline passes while the bot is down
    second = await start_bot(bot_settings(db_url, sandbox), sandbox)
    try:
        # the new process's periodic job finds it on its first run
        await eventually(lambda: bot_replies(second, h, "Reminder"))
        assert await handoff_flow.remind_unclaimed(second.deps) == 0
        assert len(bot_replies(second, h, "Reminder")) == 1
        async with db.transaction() as session:
            assert (await session.get(Handoff, h.id)).reminders_sent == 1
    finally:
        await second.sim.close()
        await second.service.stop()


# -- the modal paths ---------------------------------------------------------------------
def modal_values(dept, note=None):
    values = {
        "department": {"department": {"type": "static_select", "selected_option": {"value": dept}}}
    }
    values["note"] = {"note": {"type": "plain_text_input", "value": note}}
    return values


async def test_card_button_opens_the_modal(bot):
    cid = await seed(bot.deps)
    await bot.sim.click(ALICE, SALES, None, "customer_handoff", str(cid))
    (view,) = await eventually(lambda: filled_views(bot.store, ALICE))
    assert view["callback_id"] == "handoff_create"
    assert json.loads(view["private_metadata"])["customer_id"] == str(cid)
    options = [
        o["value"]
        for b in view["blocks"]
        if b["type"] == "input" and b["block_id"] == "department"
        for o in b["element"]["options"]
    ]
    assert "sales" not in options and "finance" in options
    # her own department is refused in the modal
    reply = await bot.sim.submit_view(ALICE, view["id"], modal_values("sales"))
    assert reply.json()["response_action"] == "errors"
    await bot.sim.submit_view(
        ALICE, view["id"], modal_values("finance", "From the card"), retry_num=1
    )
    await bot.sim.submit_view(ALICE, view["id"], modal_values("finance", "From the card"))
    parent = await eventually(lambda: bot.store.messages(FINANCE))
    mine = await eventually(lambda: bot.store.messages(SALES))  # her department's channel
    (h,) = await settled(bot.deps)
    assert "From the card" in texts(parent[0]) and h.requester_ts == mine[0]["ts"]
    assert len(bot.store.messages(FINANCE)) == 1


async def test_message_shortcut_keeps_the_context(bot):
    await seed(bot.deps)
    ts = bot.store.next_ts()
    bot.store.add_message(
        SERVICE, {"type": "message", "user": ERIN, "text": "C-ADA is upset about pricing", "ts": ts}
    )
    await bot.sim.message_shortcut(ERIN, SERVICE, ts, "handoff_from_message")
    (view,) = await eventually(lambda: filled_views(bot.store, ERIN))
    link = json.loads(view["private_metadata"])["context"]
    assert link.endswith(f"/archives/{SERVICE}/p{ts.replace('.', '')}")
    await bot.sim.submit_view(ERIN, view["id"], modal_values("sales"))
    parent = await eventually(lambda: bot.store.messages(SALES))
    assert link in texts(parent[0]) and "no note given" in texts(parent[0])
    (h,) = await settled(bot.deps)
    assert (h.from_department, h.to_department, h.context_permalink) == ("service", "sales", link)
    assert h.requester_channel_id == SERVICE
    # a message that names no customer
    ts = bot.store.next_ts()
    bot.store.add_message(
        SERVICE, {"type": "message", "user": ERIN, "text": "lunch anyone?", "ts": ts}
    )
    n = len(bot.store.ephemerals(ERIN, SERVICE))
    await bot.sim.message_shortcut(ERIN, SERVICE, ts, "handoff_from_message")
    await refusal(bot, ERIN, SERVICE, n, "I found no customer in that message")
    assert len(bot.store.views(ERIN)) == 0 or bot.store.views(ERIN)[-1]["id"] == view["id"]


# -- commands: bad input and lists -------------------------------------------------------
@pytest.mark.parametrize(
    "text, says",
    [
        ("ada@example.com", "Usage: `/crm handoff <customer> <department> [note]`"),
        ("nobody@example.com finance", "I know no customer `nobody@example.com`"),
        ("ada@example.com legal", "No department `legal`"),
        ("ada@example.com sales hi", "That is your own department"),
        ("ada@example.com finance " + "x" * 2100, "too long"),
    ],
)
async def test_bad_handoff_commands(bot, text, says):
    await seed(bot.deps)
    answer = await handoff_via_command(bot, text)
    assert says in answer, answer
    assert await rows(bot.deps) == [] and await events(bot.deps) == []


async def test_no_second_open_handoff_to_the_same_department(bot):
    await open_handoff(bot)
    answer = await handoff_via_command(bot, "C-ADA finance again", user=BOB)
    assert "already an open handoff" in answer
    assert len(await rows(bot.deps)) == 1


async def ask(bot, user, chan, text) -> str:
    """Type `/crm <text>`; the answer the person sees (text and blocks)."""
    n = len(bot.store.ephemerals(user, chan))
    await bot.sim.command(user, chan, "/crm", text)
    seen = await eventually(
        lambda: len(bot.store.ephemerals(user, chan)) > n and bot.store.ephemerals(user, chan)
    )
    return seen[-1].text + "\n" + block_texts(seen[-1].blocks)


async def test_handoffs_lists(bot):
    await bot.sim.home_opened(GRACE)  # she has her App Home open: it is kept current
    await eventually(lambda: bot.store.home(GRACE))
    h, _, _ = await open_handoff(bot)
    link = f"/archives/{FINANCE}/p{h.message_ts.replace('.', '')}"
    for user, chan, args, says in [
        (ALICE, SALES, "", "Open handoffs to or from your departments"),
        (ALICE, SALES, "open", "Open handoffs to or from your departments"),
        (ALICE, SALES, "mine", "Your open handoffs"),
        (FRANK, FINANCE, "finance", "Open handoffs to Finance"),
        (FRANK, FINANCE, "Finance", "Open handoffs to Finance"),
    ]:
        shown = await ask(bot, user, chan, f"handoffs {args}")
        assert says in shown and "Ada Lovelace" in shown and link in shown, shown
    assert "Your open handoffs: none" in await ask(bot, CAROL, SALES, "handoffs mine")
    assert "Open handoffs to Customer Service from your departments: none" in await ask(
        bot, CAROL, SALES, "handoffs service"
    )
    # another department's list shows only what one's own sent it (handlers/access.py)
    assert "Ada Lovelace" not in await ask(bot, CAROL, SALES, "handoffs finance")
    assert "No department `legal`" in await ask(bot, CAROL, SALES, "handoffs legal")
    # the App Home section: waiting for Frank's department; nothing for Carol
    assert link in block_texts(await home_section(bot.deps, FRANK))
    assert link in block_texts(await home_section(bot.deps, ALICE))  # she asked
    assert await home_section(bot.deps, CAROL) == []
    # and the App Home of the receiving department was refreshed when it was asked
    await eventually(lambda: link in block_texts(bot.store.home(GRACE)["blocks"]))


# -- recovery: the message's ts was never saved ------------------------------------------
async def forget_the_post(db, h, *, remove_from_slack=None):
    """As if the process died between the commit and saving the posted message's ts."""
    async with db.transaction() as session:
        await session.execute(
            update(Handoff)
            .where(Handoff.id == h.id)
            .values(
                message_ts=None,
                channel_id=None,
                requester_ts=None,
                requester_channel_id=None,
                created_at=datetime.now(UTC) - handoff_flow.REPOST_AFTER - timedelta(seconds=1),
            )
        )
    if remove_from_slack:
        remove_from_slack.store.delete_message(FINANCE, h.message_ts)


async def test_a_post_that_went_out_is_adopted_not_repeated(bot):
    h, parent, mine = await open_handoff(bot)
    await forget_the_post(bot.deps.db, h)
    assert await handoff_flow.repost_unposted(bot.deps) == 1
    assert await handoff_flow.repost_unposted(bot.deps) == 0
    async with bot.deps.db.transaction() as session:
        again = await session.get(Handoff, h.id)
    assert again.message_ts == parent["ts"]  # the earlier message, found by its key
    assert [m for m in bot.store.messages(FINANCE) if "Handoff" in m["text"]] == [
        bot.store.message(FINANCE, parent["ts"])
    ]
    # and on the requester's side, the link message that went out too
    assert (again.requester_channel_id, again.requester_ts) == (SALES, mine["ts"])
    assert [m["ts"] for m in bot.store.messages(SALES)] == [mine["ts"]]
    await click(bot, FRANK, again, "handoff_accept")  # and its buttons work
    await eventually(lambda: len(bot.store.thread(FINANCE, again.message_ts)) == 2)


async def test_a_requester_dm_that_went_out_is_adopted_not_repeated(bot):
    """#sales refused the requester's link (archived), so it went to Alice as a DM; the
    repost after a crash finds it there instead of sending a second DM."""
    await seed(bot.deps)
    bot.sandbox.store.channels[SALES]["is_archived"] = True
    assert "off to Finance" in await handoff_via_command(bot)
    (h,) = await rows(bot.deps)
    [dm] = await eventually(lambda: h.requester_ts and bot.store.dms(ALICE))
    assert (h.requester_channel_id, h.requester_ts) == (dm_channel_id(ALICE), dm["ts"])
    await forget_the_post(bot.deps.db, h)
    assert await handoff_flow.repost_unposted(bot.deps) == 1
    async with bot.deps.db.transaction() as session:
        again = await session.get(Handoff, h.id)
    assert (again.requester_channel_id, again.requester_ts) == (dm_channel_id(ALICE), dm["ts"])
    assert [m["ts"] for m in bot.store.dms(ALICE)] == [dm["ts"]]


async def test_a_post_that_never_went_out_is_posted_by_the_job(bot):
    h, _, _ = await open_handoff(bot)
    await forget_the_post(bot.deps.db, h, remove_from_slack=bot)
    assert not [m for m in bot.store.messages(FINANCE) if "Handoff" in m["text"]]
    assert await handoff_flow.remind_unclaimed(bot.deps) == 0  # the job reposts first
    (posted,) = await eventually(
        lambda: [m for m in bot.store.messages(FINANCE) if "Handoff" in m["text"]]
    )
    async with bot.deps.db.transaction() as session:
        again = await session.get(Handoff, h.id)
    assert again.message_ts == posted["ts"] and again.requester_ts is not None
