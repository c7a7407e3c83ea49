"""`/crm find`, `/crm show`, the card's buttons and mentions, as a person in Slack sees them,
through the sandbox and the real bot, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from bot.lib.blocks.customers import full_card, redacted_card, short_card
from bot.lib.errors import UserError
from bot.sandbox import BOT_USER_ID
from handlers.customers import customer_ref, mention_refs, search_text
from storage.customers import CustomerRecord, Customers
from storage.models import Approval, Handoff, SharedCard, TimelineEntry, utcnow
from tests.fixtures.bot import ALICE, BOB, GENERAL, SALES
from tests.fixtures.slack import block_texts, eventually

ADA = dict(
    name="Ada Lovelace",
    email="ada@example.com",
    phone="+44 20 7946 0001",
    company="Analytical Engines Ltd",
    notes="Prefers calls before noon; secret pricing note",
    tier="gold",
    lifecycle_stage="customer",
    owner_department="sales",
    owner_slack_user=ALICE,
    annual_value="12345.67",
)
PRIVATE = ("ada@example.com", "7946", "12,345", "secret pricing")


async def add_customer(bot, external_id: str, **fields):
    async with bot.deps.db.transaction() as session:
        result = await Customers(session, bot.deps.vault).upsert(
            external_id, fields, source="test", occurred_at=utcnow()
        )
    return result.customer


async def add_history(bot, customer) -> None:
    """A timeline entry, an open handoff and a pending approval for `customer`."""
    vault, now = bot.deps.vault, utcnow()
    async with bot.deps.db.transaction() as session:
        entry = TimelineEntry(
            id=uuid.uuid4(), customer_id=customer.id, occurred_at=now, kind="deal", source="crm"
        )
        entry.summary_ct = vault.seal(customer, "timeline", "summary", entry.id, "Renewal signed")
        session.add(entry)
        session.add(
            Handoff(
                customer_id=customer.id,
                to_department="service",
                requested_by=BOB,
                status="requested",
                claim_deadline=now + timedelta(hours=1),
            )
        )
        session.add(
            Handoff(
                customer_id=customer.id,
                to_department="finance",
                requested_by=BOB,
                status="completed",
                claim_deadline=now,
            )
        )
        session.add(
            Approval(
                customer_id=customer.id,
                kind="discount",
                amount=Decimal("15"),
                unit="%",
                requested_by=BOB,
                department="finance",
                status="pending",
                expires_at=now + timedelta(days=3),
            )
        )


async def ask(bot, user: str, channel: str, text: str):
    """Type `/crm text`; the one new ephemeral answer the person sees."""
    before = len(bot.store.ephemerals(user))
    reply = await bot.sim.command(user, channel, "/crm", text)
    assert reply.status == 200
    seen = await eventually(lambda: len(bot.store.ephemerals(user)) > before and True)
    assert seen
    return bot.store.ephemerals(user)[-1]


async def click(bot, user: str, channel: str, eph, action_id: str, value: str):
    before = len(bot.store.ephemerals(user))
    reply = await bot.sim.click(user, channel, eph.ts, action_id, value)
    assert reply.status == 200
    return before


def buttons(blocks) -> dict[str, str]:
    out = {}
    for block in blocks:
        for el in [*(block.get("elements") or []), block.get("accessory") or {}]:
            if el.get("type") == "button":
                out.setdefault(el["action_id"], el["value"])
    return out


# --- end to end --------------------------------------------------------------------------------


async def test_find_lists_matches_with_open_buttons(bot):
    ada = await add_customer(bot, "CUST-1", **ADA)
    await add_customer(bot, "CUST-2", name="Grace Hopper", email="grace@navy.example")

    for query in (
        "lov",
        "ada lovelace",
        "ada@example.com",
        "CUST-1",
        "analytical",
        "+44 20 7946 0001",
    ):
        answer = await ask(bot, ALICE, SALES, f"find {query}")
        assert answer.text.startswith("1 match for"), (query, answer.text)
        assert buttons(answer.blocks) == {"customer_open": str(ada.id)}
        texts = block_texts(answer.blocks)
        assert "Ada Lovelace" in texts and "Grace" not in texts
        assert not any(p in texts for p in PRIVATE if p not in query)  # beyond the query

    answer = await ask(bot, ALICE, SALES, "find zebra")
    assert answer.text == "No customers match `zebra`."
    assert bot.store.messages(SALES) == []  # nothing public


async def test_find_caps_at_ten(bot):
    for i in range(12):
        await add_customer(bot, f"ACME-{i}", name=f"Person {i}", company="Acme Rockets")
    answer = await ask(bot, ALICE, SALES, "find acme")
    assert answer.text.startswith("10 matches for")
    assert sum(1 for b in answer.blocks if b.get("accessory")) == 10


async def test_show_gives_the_full_card_to_the_asker_only(bot):
    ada = await add_customer(bot, "CUST-1", **ADA)
    await add_history(bot, ada)

    card = await ask(bot, BOB, SALES, "show ada@example.com")
    texts = block_texts(card.blocks)
    for expected in (
        "Ada Lovelace",
        "Analytical Engines Ltd",
        "ada@example.com",
        "+44 20 7946 0001",
        "gold",
        "customer",
        "12,345.67",
        "secret pricing note",
        "Renewal signed",
        "to service (requested)",
        "discount 15%",
        f"<@{ALICE}>",
    ):
        assert expected in texts, expected
    assert "to finance" not in texts  # a completed handoff is not open
    assert buttons(card.blocks) == {
        "customer_handoff": str(ada.id),
        "customer_approval": str(ada.id),
        "customer_share": str(ada.id),
    }
    assert bot.store.ephemerals(ALICE) == []
    assert bot.store.messages(SALES) == []

    by_external_id = await ask(bot, BOB, SALES, "show CUST-1")
    assert by_external_id.blocks == card.blocks


async def test_open_button_answers_with_the_full_card(bot):
    ada = await add_customer(bot, "CUST-1", **ADA)
    results = await ask(bot, ALICE, SALES, "find ada")
    before = await click(bot, ALICE, SALES, results, "customer_open", str(ada.id))
    await eventually(lambda: len(bot.store.ephemerals(ALICE)) > before)
    card = bot.store.ephemerals(ALICE)[-1]
    assert card.channel == SALES
    assert "ada@example.com" in block_texts(card.blocks)
    assert "customer_share" in buttons(card.blocks)

    # a forged or stale value gets a one-line answer
    before = await click(bot, ALICE, SALES, results, "customer_open", "not-a-uuid")
    await eventually(lambda: len(bot.store.ephemerals(ALICE)) > before)
    assert bot.store.ephemerals(ALICE)[-1].text == "That customer is no longer on record."


async def test_share_posts_a_redacted_card_once_and_remembers_it(bot):
    ada = await add_customer(bot, "CUST-1", **ADA)
    card = await ask(bot, ALICE, GENERAL, "show CUST-1")

    before = await click(bot, ALICE, GENERAL, card, "customer_share", str(ada.id))
    posted = await eventually(lambda: bot.store.messages(GENERAL))
    await eventually(lambda: len(bot.store.ephemerals(ALICE)) > before)
    assert "Shared a card for Ada Lovelace" in bot.store.ephemerals(ALICE)[-1].text
    texts = posted[0]["text"] + block_texts(posted[0]["blocks"])
    for expected in ("Ada Lovelace", "Analytical Engines Ltd", "gold", "customer", "sales", ALICE):
        assert expected in texts, expected
    for private in PRIVATE:
        assert private not in texts, private
    assert buttons(posted[0]["blocks"]) == {}

    async with bot.deps.db.transaction() as session:
        rows = (await session.execute(select(SharedCard))).scalars().all()
    assert [(r.customer_id, r.channel_id, r.ts, r.shared_by) for r in rows] == [
        (ada.id, GENERAL, posted[0]["ts"], ALICE)
    ]

    # a double click on the same card shares nothing more
    before = await click(bot, ALICE, GENERAL, card, "customer_share", str(ada.id))
    await eventually(lambda: len(bot.store.ephemerals(ALICE)) > before)
    assert bot.store.ephemerals(ALICE)[-1].text == f"This card is already shared in <#{GENERAL}>."
    async with bot.deps.db.transaction() as session:
        count = (await session.execute(select(func.count()).select_from(SharedCard))).scalar()
    assert count == 1 and len(bot.store.messages(GENERAL)) == 1


async def test_malformed_commands_get_one_line_answers(bot):
    await add_customer(bot, "CUST-1", **ADA)
    cases = {
        "find": "Usage: `/crm find <text>`",
        "find   \x01\x02\x7f": "Usage: `/crm find <text>`",
        "show": "Usage: `/crm show <customer>`",
        "show nobody@x": "No customer `nobody@x`.",
        "show two words": "`<customer>` is one email address or external id.",
        "find " + "x" * 300: "That search is too long",
        "show " + "a" * 5000: "That command is too long",
    }
    for text, expected in cases.items():
        answer = await ask(bot, ALICE, SALES, text)
        assert answer.text.startswith(expected), (text[:20], answer.text)
        assert "\n" not in answer.text and len(answer.text) < 200
    answer = await ask(bot, ALICE, SALES, "show ada@example.com")
    assert "Ada Lovelace" in block_texts(answer.blocks)  # still serving


async def test_mention_answers_in_a_thread_with_the_redacted_card(bot):
    await add_customer(bot, "CUST-1", **ADA)
    text = f"<@{BOT_USER_ID}> who is <mailto:ada@example.com|ada@example.com>?"
    await bot.sim.mention(BOB, SALES, text)
    asked = bot.store.messages(SALES)[0]
    thread = await eventually(lambda: len(bot.store.thread(SALES, asked["ts"])) == 2 or None)
    assert thread
    answer = bot.store.thread(SALES, asked["ts"])[1]
    texts = answer["text"] + block_texts(answer.get("blocks", []))
    assert "Ada Lovelace" in texts and "gold" in texts
    assert not any(p in texts for p in PRIVATE)

    await bot.sim.mention(BOB, SALES, f"<@{BOT_USER_ID}> CUST-1")
    second = bot.store.messages(SALES)[-1]
    await eventually(lambda: len(bot.store.thread(SALES, second["ts"])) == 2)
    assert "Ada Lovelace" in bot.store.thread(SALES, second["ts"])[1]["text"]

    await bot.sim.mention(BOB, SALES, f"<@{BOT_USER_ID}> hello there")
    third = bot.store.messages(SALES)[-1]
    await eventually(lambda: len(bot.store.thread(SALES, third["ts"])) == 2)
    hint = bot.store.thread(SALES, third["ts"])[1]["text"]
    assert "Mention me with a customer's email address or external id" in hint
    assert "\n" not in hint


async def test_mention_retry_answers_once(bot):
    await add_customer(bot, "CUST-1", **ADA)
    event = {"type": "app_mention", "user": BOB, "text": f"<@{BOT_USER_ID}> CUST-1"}
    event |= {"channel": SALES, "ts": bot.store.next_ts()}
    await bot.sim.event(event, event_id="EvONE")
    replies = await eventually(lambda: bot.store.all_messages(SALES))
    assert replies[0]["thread_ts"] == event["ts"] and "Ada Lovelace" in replies[0]["text"]
    await bot.sim.event(event, event_id="EvONE", retry_num=1)
    later = {**event, "ts": bot.store.next_ts()}
    await bot.sim.event(later, event_id="EvTWO")
    await eventually(
        lambda: any(m["thread_ts"] == later["ts"] for m in bot.store.all_messages(SALES))
    )
    assert [m["thread_ts"] for m in bot.store.all_messages(SALES)] == [event["ts"], later["ts"]]


# --- rules and renderings, without Slack ------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        ("ada", "ada"),
        ("  ada   lovelace ", "ada lovelace"),
        ("", UserError),
        ("x" * 201, UserError),
    ],
)
def test_search_text(args, expected):
    if expected is UserError:
        with pytest.raises(UserError):
            search_text(args)
    else:
        assert search_text(args) == expected


@pytest.mark.parametrize(
    "args, ok", [("ada@example.com", True), ("CUST-1", True), ("", False), ("a b", False)]
)
def test_customer_ref(args, ok):
    if ok:
        assert customer_ref(args) == args
    else:
        with pytest.raises(UserError):
            customer_ref(args)


@pytest.mark.parametrize(
    "text, refs",
    [
        ("<@U0CRMBOT1> <mailto:a@b.co|a@b.co>", ["a@b.co"]),
        ("<@U0CRMBOT1> CUST-1, please", ["CUST-1", "please"]),
        ("<@U0CRMBOT1> ask <@U0BOB0001> in <#C0SALES01|sales> about x@y.z", ["x@y.z", "ask"]),
        ("<@U0CRMBOT1>", []),
    ],
)
def test_mention_refs(text, refs):
    assert mention_refs(text)[: len(refs)] == refs


def test_cards_never_leak_private_fields_outside_the_full_card():
    record = CustomerRecord(id=uuid.uuid4(), external_id="CUST-1", **ADA)
    record.annual_value = Decimal("12345.67")
    text, blocks = redacted_card(record)
    for rendered in (text + block_texts(blocks), block_texts(short_card(record))):
        assert "Ada Lovelace" in rendered and "gold" in rendered
        assert not any(p in rendered for p in PRIVATE)
    _, full = full_card(record)
    assert all(p in block_texts(full) for p in PRIVATE)


def test_cards_escape_markup():
    record = CustomerRecord(id=uuid.uuid4(), external_id="X", name="<!channel> & co")
    assert "&lt;!channel&gt; &amp; co" in block_texts(short_card(record))
