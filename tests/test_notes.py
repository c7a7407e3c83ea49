"""Notes from Slack onto the shared record, the three ways (`/crm note`, the card's `Add note`
button, the "Add to customer record" message shortcut), as people and other systems see them,
through the sandbox and the real bot, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from sqlalchemy import func, select, text

from handlers.notes import parse_command
from handlers.sync.apply import syncer
from storage.customers import Customers
from storage.models import AuditEntry, Base, OutboxEvent, TimelineEntry, utcnow
from tests.fixtures.bot import ALICE, DAVE, ERIN, SALES, SERVICE
from tests.fixtures.slack import block_texts, eventually

SCHEMA = json.loads(Path("bot/contracts/sync-event.schema.json").read_text())
SECRETS = ("plans-to-leave-1", "plans-to-leave-2", "plans-to-leave-3", "plans-to-leave-4")


async def seed(bot) -> None:
    async with bot.deps.db.transaction() as session:
        await Customers(session, bot.deps.vault).upsert(
            "C-ADA",
            {"name": "Ada Lovelace", "email": "ada@example.com", "owner_department": "sales"},
            source="crm",
            occurred_at=utcnow(),
        )


async def said(bot, user, channel, n_before, contains):
    seen = await eventually(
        lambda: (
            len(bot.store.ephemerals(user, channel)) > n_before
            and bot.store.ephemerals(user, channel)
        )
    )
    last = seen[-1]
    assert contains in last.text + block_texts(last.blocks), last.text
    return last


def note_values(note: str, customer: str | None = None) -> dict:
    values = {"note_text": {"text": {"type": "plain_text_input", "value": note}}}
    if customer is not None:
        values["note_customer"] = {"customer": {"type": "plain_text_input", "value": customer}}
    return values


async def open_view(bot, user, n_before):
    """The modal opened after the first `n_before`, once filled (it opens "Loading…")."""

    def opened():
        views = bot.store.views(user)
        return len(views) > n_before and views[-1].get("callback_id") == "note_add" and views

    return (await eventually(opened))[-1]


async def card(bot, user=ALICE) -> str:
    n = len(bot.store.ephemerals(user, SALES))
    await bot.sim.command(user, SALES, "/crm", "show C-ADA")
    answer = await said(bot, user, SALES, n, "")
    return answer.text + "\n" + block_texts(answer.blocks)


async def dump_database(bot) -> str:
    """Every row of every table, as the database holds it (ciphertext as bytes)."""
    out = []
    async with bot.deps.db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(text(f"SELECT * FROM {table.name}"))).all()
            out.append(repr(rows))
    return "\n".join(out)


def test_the_command_is_parsed():
    assert parse_command(" ada@example.com  wants a call ") == ("ada@example.com", "wants a call")
    for bad in ("", "ada@example.com", "   "):
        try:
            parse_command(bad)
        except Exception as exc:
            assert "Usage: `/crm note <customer> <text>`" in str(exc)
        else:
            raise AssertionError(bad)


async def test_a_note_each_way_is_on_the_card_sealed_published_alerted_and_erased(bot):
    await seed(bot)
    # 1. the command, by Erin of customer service
    n = len(bot.store.ephemerals(ERIN, SERVICE))
    await bot.sim.command(ERIN, SERVICE, "/crm", f"note ada@example.com {SECRETS[0]}")
    await said(bot, ERIN, SERVICE, n, "Added your note to Ada Lovelace's record")

    # 2. the card's `Add note` button
    async with bot.deps.db.transaction() as session:
        ada = await Customers(session, bot.deps.vault).by_external_id("C-ADA")
    n_views = len(bot.store.views(DAVE))
    await bot.sim.click(DAVE, SERVICE, None, "customer_note", str(ada.id))
    view = await open_view(bot, DAVE, n_views)
    assert "Ada Lovelace" in block_texts(view["blocks"])
    reply = await bot.sim.submit_view(DAVE, view["id"], note_values(""))
    assert reply.json()["response_action"] == "errors"  # an empty note changes nothing
    n = len(bot.store.ephemerals(DAVE, SERVICE))
    await bot.sim.submit_view(DAVE, view["id"], note_values(SECRETS[1]), retry_num=1)
    await bot.sim.submit_view(DAVE, view["id"], note_values(SECRETS[1]))  # Slack's retry
    await said(bot, DAVE, SERVICE, n, "Added your note")

    # 3. the message shortcut: a message naming the customer preselects it ...
    ts = bot.store.next_ts()
    bot.store.add_message(
        SERVICE, {"type": "message", "user": ERIN, "text": f"C-ADA says {SECRETS[2]}", "ts": ts}
    )
    n_views = len(bot.store.views(ERIN))
    await bot.sim.message_shortcut(ERIN, SERVICE, ts, "add_to_customer_record")
    view = await open_view(bot, ERIN, n_views)
    inputs = {b["block_id"]: b["element"].get("initial_value") for b in view["blocks"]}
    assert inputs["note_customer"] == "C-ADA" and SECRETS[2] in inputs["note_text"]
    n = len(bot.store.ephemerals(ERIN, SERVICE))
    await bot.sim.submit_view(ERIN, view["id"], note_values(inputs["note_text"], "C-ADA"))
    await said(bot, ERIN, SERVICE, n, "Added your note")
    link = json.loads(view["private_metadata"])["permalink"]
    assert link.endswith(f"/archives/{SERVICE}/p{ts.replace('.', '')}")
    # ... and one naming none leaves the choice to the person
    ts = bot.store.next_ts()
    bot.store.add_message(
        SERVICE, {"type": "message", "user": ERIN, "text": f"she {SECRETS[3]}", "ts": ts}
    )
    n_views = len(bot.store.views(ERIN))
    await bot.sim.message_shortcut(ERIN, SERVICE, ts, "add_to_customer_record")
    view = await open_view(bot, ERIN, n_views)
    inputs = {b["block_id"]: b["element"].get("initial_value") for b in view["blocks"]}
    assert inputs["note_customer"] is None
    reply = await bot.sim.submit_view(ERIN, view["id"], note_values("x", ""))
    assert reply.json()["errors"] == {
        "note_customer": "Name the customer: an email address or external id."
    }
    n = len(bot.store.ephemerals(ERIN, SERVICE))
    await bot.sim.submit_view(ERIN, view["id"], note_values("x", "nobody@example.com"))
    await said(bot, ERIN, SERVICE, n, "I know no customer `nobody@example.com`")
    n_views = len(bot.store.views(ERIN))
    await bot.sim.message_shortcut(ERIN, SERVICE, ts, "add_to_customer_record")
    view = await open_view(bot, ERIN, n_views)
    n = len(bot.store.ephemerals(ERIN, SERVICE))
    await bot.sim.submit_view(ERIN, view["id"], note_values(f"she {SECRETS[3]}", "ada@example.com"))
    await said(bot, ERIN, SERVICE, n, "Added your note")

    # on the card, newest first, with author, department and the link to the message
    shown = await card(bot)
    at = [shown.index(s) for s in reversed(SECRETS)]
    assert at == sorted(at), shown
    assert f"<@{ERIN}> (Customer Service)" in shown and f"<@{DAVE}> (Customer Service)" in shown
    assert f"<{link}|message>" in shown

    # sealed: no note text anywhere in the database's raw rows
    raw = await dump_database(bot)
    assert not any(s in raw for s in SECRETS)

    # audited, and published as note.added without its text
    async with bot.deps.db.transaction() as session:
        audits = (
            await session.execute(select(func.count()).where(AuditEntry.action == "note.added"))
        ).scalar_one()
        bodies = [
            json.loads(b)
            for b in (
                await session.execute(
                    select(OutboxEvent.body).where(OutboxEvent.routing_key == "note.added")
                )
            ).scalars()
        ]
    assert audits == 4 and len(bodies) == 4
    for body in bodies:
        jsonschema.validate(body, SCHEMA)
        assert body["customer"] == {"external_id": "C-ADA"} and body["source"] == "crm-bot"
        assert set(body["data"]) == {"note_id", "actor", "department"}

    # alerted once each in the owning department's (sales) thread for Ada, nowhere else
    def alerted():
        texts = [
            (m.get("text") or "") + block_texts(m.get("blocks") or [])
            for m in bot.store.all_messages(SALES)
        ]
        return all(any(s in t for t in texts) for s in SECRETS) and texts

    texts = await eventually(alerted, within=20)
    for secret in SECRETS:
        assert sum(secret in t for t in texts) == 1, secret
    bots = [m for m in bot.store.all_messages(SERVICE) if m.get("user") != ERIN]
    assert not any(s in json.dumps(bots) for s in SECRETS)

    # erased with the rest
    await syncer(bot.deps).handle(
        {
            "spec": "crm.sync/1",
            "id": "erase-ada",
            "type": "customer.deleted",
            "occurred_at": utcnow().isoformat(),
            "source": "crm",
            "customer": {"external_id": "C-ADA"},
        },
        1,
    )
    async with bot.deps.db.transaction() as session:
        left = (
            await session.execute(select(func.count()).where(TimelineEntry.kind == "note"))
        ).scalar_one()
    assert left == 0
    assert "No customer `C-ADA`" in await card(bot)


async def test_bad_notes_get_a_short_answer_and_change_nothing(bot):
    await seed(bot)
    for args, says in [
        ("note ada@example.com", "Usage: `/crm note <customer> <text>`"),
        ("note nobody@example.com hello", "I know no customer `nobody@example.com`"),
        ("note ada@example.com " + "x" * 3100, "too long"),
    ]:
        n = len(bot.store.ephemerals(ALICE, SALES))
        await bot.sim.command(ALICE, SALES, "/crm", args)
        await said(bot, ALICE, SALES, n, says)
    async with bot.deps.db.transaction() as session:
        count = (
            await session.execute(select(func.count()).where(TimelineEntry.kind == "note"))
        ).scalar_one()
    assert count == 0
