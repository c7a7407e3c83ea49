"""Approvals end to end through the real bot and the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import func, select, update

from handlers.approvals import listeners as approvals_handler
from storage import audit
from storage.customers import Customers
from storage.models import Approval, AuditEntry, OutboxEvent, utcnow
from tests.fixtures.bot import (
    ALICE,
    BOB,
    CAROL,
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

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "bot/contracts/sync-event.schema.json").read_text()
)


async def seed(bot, external_id="C-100", email="ada@example.com", annual_value=50000):
    async with bot.deps.db.transaction() as session:
        result = await Customers(session, bot.deps.vault).upsert(
            external_id,
            {
                "name": "Ada Lovelace",
                "email": email,
                "company": "Analytical Engines",
                "annual_value": annual_value,
            },
            source="test",
            occurred_at=utcnow(),
        )
        return result.customer.id


async def rows(bot) -> list[Approval]:
    async with bot.deps.db.transaction() as session:
        return list((await session.execute(select(Approval))).scalars())


async def state(bot, approval_id) -> tuple:
    """What must not move when a click is refused."""
    async with bot.deps.db.transaction() as session:
        row = await session.get(Approval, approval_id)
        audits = await audit.count(session)
        events = (await session.execute(select(func.count()).select_from(OutboxEvent))).scalar_one()
    return row.status, row.decided_by, row.version, audits, events


async def events(bot, type_: str) -> list[dict]:
    async with bot.deps.db.transaction() as session:
        stmt = select(OutboxEvent).where(OutboxEvent.routing_key == type_)
        found = [json.loads(r.body) for r in (await session.execute(stmt)).scalars()]
    for body in found:
        jsonschema.validate(body, SCHEMA)
    return found


async def audit_actions(bot) -> list[str]:
    async with bot.deps.db.transaction() as session:
        entries = (await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars()
        return [e.action for e in entries]


async def ask(bot, user, channel, text) -> Approval:
    """`/crm approval <text>` and wait until its message is in #finance and recorded."""
    before = {r.id for r in await rows(bot)}
    await bot.sim.command(user, channel, "/crm", "approval " + text)

    async def posted():
        fresh = [r for r in await rows(bot) if r.id not in before and r.message_ts]
        return fresh[0] if fresh else None

    return await eventually(posted)


def ephemeral_texts(bot, user) -> list[str]:
    return [e.text for e in bot.store.ephemerals(user)]


async def refused(bot, user, phrase):
    return await eventually(lambda: any(phrase in t for t in ephemeral_texts(bot, user)))


async def test_request_then_approve(bot):
    await seed(bot)
    row = await ask(bot, BOB, SALES, "C-100 discount 15% closing a big deal")
    assert (row.kind, row.amount, row.unit, row.status) == (
        "discount",
        Decimal("15.00"),
        "%",
        "pending",
    )
    assert (row.requested_by, row.requester_department, row.department) == (BOB, "sales", "finance")
    assert b"closing a big deal" not in row.reason_ct
    message = bot.store.message(FINANCE, row.message_ts)
    text = block_texts(message["blocks"])
    assert "Ada Lovelace" in text and "15%" in text and "closing a big deal" in text
    buttons = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {(b["action_id"], b["value"]) for b in buttons} == {
        ("approval_approve", str(row.id)),
        ("approval_reject", str(row.id)),
    }
    confirmation = await eventually(lambda: ephemeral_texts(bot, BOB))
    assert "Asked Finance" in confirmation[-1] and "/archives/C0FINANCE/p" in confirmation[-1]
    [requested] = await events(bot, "approval.requested")
    assert requested["customer"] == {"external_id": "C-100"}
    assert requested["data"]["approval_id"] == str(row.id)
    assert (requested["data"]["actor"], requested["data"]["amount"]) == (BOB, 15.0)

    # 15% of 50,000 is 7,500: within the limit, so Frank (a member, not a lead) may approve
    await bot.sim.click(FRANK, FINANCE, row.message_ts, "approval_approve", str(row.id))
    updated = await eventually(
        lambda: (
            "Approved" in block_texts(bot.store.message(FINANCE, row.message_ts)["blocks"])
            and bot.store.message(FINANCE, row.message_ts)
        )
    )
    assert not [b for b in updated["blocks"] if b["type"] == "actions"]
    assert f"<@{FRANK}>" in block_texts(updated["blocks"])
    thread = await eventually(
        lambda: (
            len(bot.store.thread(FINANCE, row.message_ts)) == 2
            and bot.store.thread(FINANCE, row.message_ts)
        )
    )
    assert f"<@{BOB}>" in thread[1]["text"] and "approved" in thread[1]["text"]
    dm = await eventually(lambda: bot.store.dms(BOB))
    assert "approved" in dm[-1]["text"]
    [done] = await rows(bot)
    assert (done.status, done.decided_by) == ("approved", FRANK) and done.decided_at
    [approved] = await events(bot, "approval.approved")
    assert approved["data"]["actor"] == FRANK and approved["data"]["status"] == "approved"
    assert await audit_actions(bot) == ["approval.requested", "approval.approved"]
    async with bot.deps.db.transaction() as session:
        assert (await audit.verify(session, bot.deps.vault)).ok


async def test_request_then_reject_with_reason(bot):
    await seed(bot)
    row = await ask(bot, ERIN, SERVICE, "ada@example.com refund 1,200.50 USD damaged goods")
    assert (row.amount, row.unit, row.requester_department) == (
        Decimal("1200.50"),
        "USD",
        "service",
    )
    await bot.sim.click(GRACE, FINANCE, row.message_ts, "approval_reject", str(row.id))
    modal = (await eventually(lambda: bot.store.views(GRACE)))[-1]
    assert modal["callback_id"] == "approval_reject_reason"
    # a reason is required
    reply = await bot.sim.submit_view(GRACE, modal["id"], {"reason": {"reason": {"value": "  "}}})
    assert reply.json()["response_action"] == "errors" and "reason" in reply.json()["errors"]
    assert (await rows(bot))[0].status == "pending"

    values = {"reason": {"reason": {"value": "Outside our refund policy"}}}
    reply = await bot.sim.submit_view(GRACE, modal["id"], values)
    assert reply.status == 200 and not reply.body
    updated = await eventually(
        lambda: (
            "Rejected" in block_texts(bot.store.message(FINANCE, row.message_ts)["blocks"])
            and bot.store.message(FINANCE, row.message_ts)
        )
    )
    assert "Outside our refund policy" in block_texts(updated["blocks"])
    assert not [b for b in updated["blocks"] if b["type"] == "actions"]
    dm = await eventually(lambda: bot.store.dms(ERIN))
    assert "rejected" in dm[-1]["text"] and "Outside our refund policy" in dm[-1]["text"]
    await eventually(lambda: len(bot.store.thread(FINANCE, row.message_ts)) == 2)
    retried = await bot.sim.submit_view(GRACE, modal["id"], values, retry_num=1)  # Slack retry
    assert retried.status == 200 and not retried.body
    [done] = await rows(bot)
    assert (done.status, done.decided_by) == ("rejected", GRACE)
    assert b"Outside" not in done.decision_reason_ct
    [rejected] = await events(bot, "approval.rejected")
    assert rejected["data"]["actor"] == GRACE and rejected["data"]["unit"] == "USD"
    assert await audit_actions(bot) == ["approval.requested", "approval.rejected"]


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        ("C-100 discount 150%", "A discount amount is a percentage"),
        ("C-100 bribe 100", "The kind must be one of"),
        ("C-100 refund lots", "A refund amount is money"),
        ("C-100 exception 12", "An exception"),
        ("C-100", "Tell me the customer, the kind and the amount"),
        ("nobody@example.com refund 10", "No customer"),
    ],
)
async def test_bad_requests_change_nothing(bot, args, answer):
    await seed(bot)
    await bot.sim.command(BOB, SALES, "/crm", "approval " + args)
    seen = await eventually(lambda: ephemeral_texts(bot, BOB))
    assert answer.lower() in seen[-1].lower() and "\n" not in seen[-1]
    assert await rows(bot) == [] and bot.store.messages(FINANCE) == []
    assert await audit_actions(bot) == []


async def test_refusals_leave_state_unchanged(bot):
    await seed(bot)
    big = await ask(bot, BOB, SALES, "C-100 refund 20000 EUR")
    own = await ask(bot, FRANK, FINANCE, "C-100 credit 100")

    async def click_refused(user, row, action, phrase, value=None):
        before = await state(bot, row.id)
        await bot.sim.click(user, FINANCE, row.message_ts, action, value or str(row.id))
        await refused(bot, user, phrase)
        assert await state(bot, row.id) == before

    await click_refused(FRANK, own, "approval_approve", "cannot decide your own request")
    await click_refused(CAROL, big, "approval_approve", "Only members of Finance")
    await click_refused(ALICE, big, "approval_reject", "Only members of Finance")
    await click_refused(FRANK, big, "approval_approve", "above Finance's approval limit")
    await click_refused(FRANK, big, "approval_reject", "above Finance's approval limit")
    assert bot.store.views(FRANK) == []  # no reject modal for someone who may not decide
    await click_refused(FRANK, big, "approval_approve", "do not know", "not-an-id")
    await click_refused(FRANK, big, "approval_approve", "do not know", str(uuid.uuid4()))

    # a lead may decide above the limit; then the request is decided for everyone
    await bot.sim.click(GRACE, FINANCE, big.message_ts, "approval_approve", str(big.id))
    await eventually(lambda: bot.store.dms(BOB))
    await click_refused(FRANK, own, "approval_approve", "cannot decide")  # still own
    await click_refused(GRACE, big, "approval_reject", f"already approved by <@{GRACE}>")
    await click_refused(FRANK, big, "approval_reject", f"already approved by <@{GRACE}>")


async def test_expired_requests_refuse_and_show_expired(bot):
    await seed(bot)
    row = await ask(bot, BOB, SALES, "C-100 credit 100 goodwill")
    assert row.expires_at - row.created_at == timedelta(hours=72)
    bot.deps.clock = lambda: utcnow() + timedelta(hours=73)
    before = await state(bot, row.id)
    await bot.sim.click(FRANK, FINANCE, row.message_ts, "approval_approve", str(row.id))
    await refused(bot, FRANK, "expired")
    await bot.sim.click(GRACE, FINANCE, row.message_ts, "approval_reject", str(row.id))
    await refused(bot, GRACE, "expired")
    assert await state(bot, row.id) == before

    [(name, _, expire)] = approvals_handler.jobs(bot.deps)
    assert name == "approvals.expire"
    await expire()
    message = bot.store.message(FINANCE, row.message_ts)
    assert "Expired" in block_texts(message["blocks"])
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    assert "expired" in bot.store.dms(BOB)[-1]["text"]
    [done] = await rows(bot)
    assert done.status == "expired" and done.decided_by is None
    assert await audit_actions(bot) == ["approval.requested", "approval.expired"]
    await expire()  # nothing left to expire
    assert await audit_actions(bot) == ["approval.requested", "approval.expired"]


async def assert_one_decision(bot, row, status="approved"):
    await eventually(lambda: bot.store.dms(BOB))
    [done] = await rows(bot)
    assert done.status == status
    assert await audit_actions(bot) == ["approval.requested", f"approval.{status}"]
    assert len(await events(bot, f"approval.{status}")) == 1
    await eventually(lambda: len(bot.store.thread(FINANCE, row.message_ts)) == 2)
    return done


async def test_double_clicks_and_retries_have_one_effect(bot):
    await seed(bot)
    row = await ask(bot, BOB, SALES, "C-100 credit 100")
    click = lambda **o: bot.sim.click(  # noqa: E731
        FRANK, FINANCE, row.message_ts, "approval_approve", str(row.id), **o
    )
    await asyncio.gather(click(), click())
    await click(retry_num=1, retry_reason="http_timeout")
    done = await assert_one_decision(bot, row)
    assert done.decided_by == FRANK
    assert len(bot.store.dms(BOB)) == 1
    assert len(bot.store.thread(FINANCE, row.message_ts)) == 2


async def test_concurrent_approvers_one_decision(bot):
    await seed(bot)
    row = await ask(bot, BOB, SALES, "C-100 credit 100")
    await asyncio.gather(
        bot.sim.click(FRANK, FINANCE, row.message_ts, "approval_approve", str(row.id)),
        bot.sim.click(GRACE, FINANCE, row.message_ts, "approval_approve", str(row.id)),
    )
    done = await assert_one_decision(bot, row)
    loser = FRANK if done.decided_by == GRACE else GRACE
    await refused(bot, loser, "already approved")


async def test_request_from_the_card_modal(bot):
    customer_id = await seed(bot)
    await bot.sim.click(BOB, SALES, None, "customer_approval", str(customer_id))
    modal = (await eventually(lambda: filled_views(bot.store, BOB)))[-1]
    assert modal["callback_id"] == "approval_create"
    assert json.loads(modal["private_metadata"]) == {
        "customer_id": str(customer_id),
        "channel_id": SALES,
    }
    bad = {
        "kind": {"kind": {"selected_option": {"value": "discount"}}},
        "amount": {"amount": {"value": "250%"}},
    }
    reply = await bot.sim.submit_view(BOB, modal["id"], bad)
    assert "amount" in reply.json()["errors"] and await rows(bot) == []
    good = {
        "kind": {"kind": {"selected_option": {"value": "credit"}}},
        "amount": {"amount": {"value": "500 EUR"}},
        "reason": {"reason": {"value": "late delivery"}},
    }
    await bot.sim.submit_view(BOB, modal["id"], good)
    row = await eventually(lambda: _posted(bot))
    assert (row.kind, row.amount, row.unit, row.requested_by) == (
        "credit",
        Decimal("500.00"),
        "EUR",
        BOB,
    )
    await eventually(lambda: any("Asked Finance" in t for t in ephemeral_texts(bot, BOB)))
    # submitting the same modal again (a retry) asks nothing twice
    await bot.sim.submit_view(BOB, modal["id"], good, retry_num=1)
    await bot.sim.command(BOB, SALES, "/crm", "approvals mine")
    await eventually(lambda: "Your approval requests" in ephemeral_texts(bot, BOB)[-1])
    assert len(await rows(bot)) == 1 and len(bot.store.messages(FINANCE)) == 1
    # an unknown customer id on the card's button
    await bot.sim.click(BOB, SALES, None, "customer_approval", str(uuid.uuid4()))
    await refused(bot, BOB, "do not know that customer")


async def _posted(bot):
    found = [r for r in await rows(bot) if r.message_ts]
    return found[0] if found else None


async def test_lists_and_home(bot):
    await seed(bot)
    # Grace has her App Home open: the bot republishes it when an approval of hers changes
    await bot.sim.home_opened(GRACE)
    first = await eventually(lambda: bot.store.home(GRACE))
    row = await ask(bot, BOB, SALES, "C-100 refund 20000")
    await bot.sim.command(FRANK, FINANCE, "/crm", "approvals")
    pending = await eventually(lambda: [e for e in bot.store.ephemerals(FRANK) if e.blocks])
    assert "refund of 20,000.00" in block_texts(pending[-1].blocks)
    await bot.sim.command(BOB, SALES, "/crm", "approvals mine")
    mine = await eventually(lambda: [e for e in bot.store.ephemerals(BOB) if e.blocks])
    assert "Ada Lovelace" in block_texts(mine[-1].blocks)
    await bot.sim.command(BOB, SALES, "/crm", "approvals everything")
    await refused(bot, BOB, "Usage: `/crm approvals [pending|mine]`")

    # Grace (a lead) may decide it, Frank (above the limit) and Bob (the requester) may not
    grace = block_texts(await approvals_handler.home_section(bot.deps, GRACE))
    assert "Waiting for your decision" in grace and "Approve" in grace
    frank = await approvals_handler.home_section(bot.deps, FRANK)
    assert "Waiting for your decision" not in block_texts(frank)
    bob = block_texts(await approvals_handler.home_section(bot.deps, BOB))
    assert "Your requests waiting" in bob and "Approve" not in bob
    home = await eventually(lambda: str(row.id) in json.dumps(bot.store.home(GRACE)["blocks"]))
    home = bot.store.home(GRACE)
    assert home["id"] == first["id"]

    # deciding from the App Home: the channel message is updated all the same; a refusal
    # there (no channel) comes as a direct message
    await bot.sim.click(
        FRANK, None, None, "approval_approve", str(row.id),
        container={"type": "view", "view_id": home["id"]},
    )  # fmt: skip
    await eventually(lambda: any("approval limit" in m["text"] for m in bot.store.dms(FRANK)))
    await bot.sim.click(
        GRACE, None, None, "approval_approve", str(row.id),
        container={"type": "view", "view_id": home["id"]},
    )  # fmt: skip
    await eventually(
        lambda: "Approved" in block_texts(bot.store.message(FINANCE, row.message_ts)["blocks"])
    )
    assert (await rows(bot))[0].decided_by == GRACE


async def test_request_posted_later_when_slack_failed(bot):
    await seed(bot)
    bot.sandbox.fail("chat.postMessage", error="channel_not_found")
    await bot.sim.command(BOB, SALES, "/crm", "approval C-100 credit 100")
    seen = await eventually(lambda: ephemeral_texts(bot, BOB))
    assert "Asked Finance" in seen[-1] and "its channel" in seen[-1]
    [row] = await rows(bot)
    assert row.status == "pending" and row.message_ts is None
    assert bot.store.messages(FINANCE) == []
    bot.deps.clock = lambda: utcnow() + timedelta(minutes=3)
    [(_, _, job)] = approvals_handler.jobs(bot.deps)
    await job()
    [row] = await rows(bot)
    assert row.message_ts and bot.store.message(FINANCE, row.message_ts) is not None
    await job()  # posted once
    assert len(bot.store.messages(FINANCE)) == 1


async def test_a_request_that_went_out_before_a_crash_is_adopted_not_posted_again(bot):
    """As if the process died between Slack's answer and saving the message's ts: the job's
    repost finds the message by its key instead of posting a second request."""
    await seed(bot)
    row = await ask(bot, BOB, SALES, "C-100 credit 100")
    first_ts = row.message_ts
    async with bot.deps.db.transaction() as session:
        await session.execute(
            update(Approval).where(Approval.id == row.id).values(message_ts=None, channel_id=None)
        )
    bot.deps.clock = lambda: utcnow() + timedelta(minutes=3)
    [(_, _, job)] = approvals_handler.jobs(bot.deps)
    await job()
    [row] = await rows(bot)
    assert row.message_ts == first_ts
    assert [m["ts"] for m in bot.store.messages(FINANCE)] == [first_ts]


async def test_a_stop_during_an_approval_click_finishes_the_click(db, db_url, sandbox):
    """The click's work runs after its ack (a bolt lazy listener); stopping the bot (as on
    SIGTERM) right after the ack waits for it: the decision, the message and the DM all land."""
    harness = await start_bot(bot_settings(db_url, sandbox), sandbox)
    try:
        await seed(harness)
        row = await ask(harness, BOB, SALES, "C-100 credit 100")
        # Slack answers the message update with a 429 (Retry-After 1 s): the click's work is
        # still under way when the stop begins
        sandbox.fail("chat.update", status=429, times=1, retry_after=1)
        reply = await harness.sim.click(
            FRANK, FINANCE, row.message_ts, "approval_approve", str(row.id)
        )
        assert reply.status == 200
    finally:
        await harness.sim.close()
        await harness.service.stop()
    message = sandbox.store.message(FINANCE, row.message_ts)
    assert "Approved" in block_texts(message["blocks"])
    assert any("approved" in m["text"] for m in sandbox.store.dms(BOB))
