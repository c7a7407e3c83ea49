"""Who may read customer data, end to end: each row of the access model (a member, a member of
another department, a lead, someone in no department, a Slack guest, a person of another
organisation) at each way in (find, show, the card's buttons, the handoff and approval lists,
App Home, mentions), through the real bolt app and the sandbox, on SQLite and PostgreSQL.
Then the read audit: `crm-bot audit reads` lists exactly the cards shown, the chain verifies,
and many cards in an hour alert the reader's leads once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from bot.lib.config import parse_config
from bot.sandbox import BOT_USER_ID
from bot.sandbox.faults import Fault
from storage import audit
from storage.customers import Customers
from storage.models import Approval, Handoff, utcnow
from tests.fixtures.bot import (
    ALICE,
    BOB,
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
from tests.fixtures.cli import run_cli
from tests.fixtures.db import KEY_LINE
from tests.fixtures.slack import block_texts, eventually

GUEST, OUTSIDER, NOBODY = "U0GUEST01", "U0OTHER01", "U0NOBODY1"

CONFIG = f"""
[departments.sales]
name = "Sales"
channel = "{SALES}"
members = ["{ALICE}", "{BOB}", "{GUEST}", "{OUTSIDER}"]
leads = ["{ALICE}"]

[departments.service]
name = "Customer Service"
channel = "{SERVICE}"
members = ["{DAVE}", "{ERIN}"]
leads = ["{DAVE}"]
fields = ["email", "notes", "tickets", "activity", "handoffs", "approvals"]

[departments.finance]
name = "Finance"
channel = "{FINANCE}"
members = ["{FRANK}", "{GRACE}"]
leads = ["{GRACE}"]
"""

ADA = dict(
    name="Ada Lovelace",
    email="ada@example.com",
    phone="+44 20 7946 0001",
    company="Analytical Engines Ltd",
    notes="Prefers calls before noon",
    tier="gold",
    lifecycle_stage="customer",
    owner_department="sales",
    annual_value="12345.67",
)
PHONE = "7946"

# Each row of the access model: who, and whether they read customer data at all.
ROWS = {
    "member": BOB,  # sales
    "other-department": ERIN,  # service: no phone numbers
    "lead": ALICE,  # leads sales
    "no-department": NOBODY,
    "guest": GUEST,  # listed in sales, but a Slack guest
    "external": OUTSIDER,  # listed in sales, but of another organisation
}
READS = {"member", "other-department", "lead"}
REFUSED = "ask <@"


@pytest.fixture
async def bot(db, db_url, sandbox):
    sandbox.store.users[GUEST] = {"name": "gus", "real_name": "Gus Guest", "is_restricted": True}
    sandbox.store.users[OUTSIDER] = {"name": "olga", "team_id": "T0OTHER01", "is_stranger": True}
    sandbox.store.users[NOBODY] = {"name": "nora", "real_name": "Nora Nobody"}
    harness = await start_bot(bot_settings(db_url, sandbox), sandbox, parse_config(CONFIG))
    try:
        yield harness
    finally:
        await harness.sim.close()
        await harness.service.stop()


async def add_ada(bot):
    """Ada, with an open handoff sales -> finance and an approval pending in sales."""
    async with bot.deps.db.transaction() as session:
        ada = (
            await Customers(session, bot.deps.vault).upsert(
                "CUST-1", ADA, source="test", occurred_at=utcnow()
            )
        ).customer
        now = utcnow()
        session.add(
            Handoff(
                customer_id=ada.id,
                from_department="sales",
                to_department="finance",
                requested_by=ALICE,
                status="requested",
                claim_deadline=now + timedelta(hours=1),
            )
        )
        session.add(
            Approval(
                customer_id=ada.id,
                kind="discount",
                amount=Decimal("15"),
                unit="%",
                requested_by=FRANK,
                department="sales",
                status="pending",
                expires_at=now + timedelta(days=3),
            )
        )
    return ada


def said(bot, user: str, before: int) -> str:
    """Everything `user` was told (ephemerals and DMs) after the first `before` messages."""
    new = bot.store.ephemerals(user)[before:]
    return "\n".join(e.text + "\n" + block_texts(e.blocks) for e in new)


async def answer(bot, user: str, do) -> str:
    before = len(bot.store.ephemerals(user))
    await do()
    await eventually(lambda: len(bot.store.ephemerals(user)) > before)
    return said(bot, user, before)


def card_seen(text: str) -> str:
    if REFUSED in text and "ada@example.com" not in text:
        return "refused"
    assert "ada@example.com" in text, text
    return "card" if PHONE in text else "card-without-phone"


CARD = {
    "member": "card",
    "other-department": "card-without-phone",
    "lead": "card",
    "no-department": "refused",
    "guest": "refused",
    "external": "refused",
}


@pytest.mark.parametrize("row", ROWS)
async def test_find(bot, row):
    await add_ada(bot)
    user = ROWS[row]
    text = await answer(bot, user, lambda: bot.sim.command(user, SALES, "/crm", "find ada"))
    if row in READS:
        assert "Ada Lovelace" in text and REFUSED not in text
    else:
        assert REFUSED in text and "Ada" not in text


@pytest.mark.parametrize("row", ROWS)
async def test_show(bot, row):
    await add_ada(bot)
    user = ROWS[row]
    do = lambda: bot.sim.command(user, SALES, "/crm", "show ada@example.com")  # noqa: E731
    assert card_seen(await answer(bot, user, do)) == CARD[row]


@pytest.mark.parametrize("row", ROWS)
async def test_open_button(bot, row):
    """A click naming a customer, as anyone may forge one: the server decides."""
    ada = await add_ada(bot)
    user = ROWS[row]
    do = lambda: bot.sim.click(user, SALES, None, "customer_open", str(ada.id))  # noqa: E731
    assert card_seen(await answer(bot, user, do)) == CARD[row]


@pytest.mark.parametrize("row", ROWS)
async def test_share_button(bot, row):
    ada = await add_ada(bot)
    user = ROWS[row]
    do = lambda: bot.sim.click(user, SALES, None, "customer_share", str(ada.id))  # noqa: E731
    text = await answer(bot, user, do)
    shared = [m for m in bot.store.messages(SALES) if "Ada Lovelace" in (m.get("text") or "")]
    if row in READS:
        assert len(shared) == 1 and REFUSED not in text
    else:
        assert shared == [] and REFUSED in text


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("button", ["customer_handoff", "customer_approval"])
async def test_card_modal_buttons(bot, row, button):
    ada = await add_ada(bot)
    user = ROWS[row]
    await bot.sim.click(user, SALES, None, button, str(ada.id))
    if row in READS:
        modal = await eventually(
            lambda: [v for v in bot.store.views(user) if "Ada Lovelace" in block_texts(v["blocks"])]
        )
        assert modal
    else:
        await eventually(lambda: REFUSED in said(bot, user, 0))
        assert not any("Ada" in block_texts(v["blocks"]) for v in bot.store.views(user))


LISTS = {  # what each row sees of Ada's handoff (sales -> finance) and approval (in sales)
    "member": True,
    "other-department": False,
    "lead": True,
}


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("listing", ["handoffs", "handoffs finance", "approvals"])
async def test_lists(bot, row, listing):
    await add_ada(bot)
    user = ROWS[row]
    text = await answer(bot, user, lambda: bot.sim.command(user, SALES, "/crm", listing))
    if row not in READS:
        assert REFUSED in text and "Ada" not in text
    else:
        assert ("Ada Lovelace" in text) is LISTS[row], text
        assert REFUSED not in text


@pytest.mark.parametrize("row", ROWS)
async def test_app_home(bot, row):
    await add_ada(bot)
    user = ROWS[row]
    await bot.sim.home_opened(user)
    home = await eventually(lambda: bot.store.home(user))
    text = block_texts(home["blocks"])
    if row in READS:
        assert ("Ada Lovelace" in text) is LISTS[row] and REFUSED not in text
    else:
        assert REFUSED in text and "Ada" not in text


@pytest.mark.parametrize("row", ROWS)
async def test_mention(bot, row):
    await add_ada(bot)
    user = ROWS[row]
    await bot.sim.mention(user, SALES, f"<@{BOT_USER_ID}> ada@example.com")
    asked = bot.store.messages(SALES)[-1]
    if row in READS:
        await eventually(lambda: len(bot.store.thread(SALES, asked["ts"])) == 2)
        reply = bot.store.thread(SALES, asked["ts"])[1]
        assert "Ada Lovelace" in reply["text"] and "ada@example.com" not in reply["text"]
    else:
        await eventually(lambda: REFUSED in said(bot, user, 0))
        assert len(bot.store.thread(SALES, asked["ts"])) == 1  # nothing in the channel
        assert not any("Ada" in (m.get("text") or "") for m in bot.store.all_messages(SALES)[1:])


# --- the read audit ---------------------------------------------------------------------------


async def test_audit_reads_lists_exactly_the_cards_shown(bot, db_url, tmp_path):
    ada = await add_ada(bot)
    for user in (BOB, ERIN, GUEST, NOBODY):  # the last two are refused: no view
        await answer(bot, user, lambda u=user: bot.sim.command(u, SALES, "/crm", "show CUST-1"))
    await answer(
        bot, ALICE, lambda: bot.sim.click(ALICE, SALES, None, "customer_open", str(ada.id))
    )
    await answer(bot, BOB, lambda: bot.sim.command(BOB, SALES, "/crm", "find ada"))  # no card
    await answer(bot, BOB, lambda: bot.sim.click(BOB, SALES, None, "customer_share", str(ada.id)))

    async with bot.deps.db.transaction() as session:
        views = await audit.reads(session, ada.id)
    assert [(v.actor, v.via) for v in views] == [
        (BOB, "show"),
        (ERIN, "show"),
        (ALICE, "customer_open"),
    ]
    env = {"DATABASE_URL": db_url, "CRM_MASTER_KEYS": KEY_LINE}
    out = run_cli("audit", "reads", "ada@example.com", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[1:3] for line in lines[:-1]] == [
        [BOB, "show"],
        [ERIN, "show"],
        [ALICE, "customer_open"],
    ]
    assert lines[-1] == f"3 views of customer {ada.id}"
    assert "Ada" not in out.stdout and "ada@" not in out.stdout  # ids only
    by_id = run_cli("audit", "reads", "CUST-1", env=env, cwd=tmp_path)
    assert by_id.stdout == out.stdout
    unknown = run_cli("audit", "reads", "nobody@example.com", env=env, cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    verified = run_cli("audit", "verify", env=env, cwd=tmp_path)
    assert verified.returncode == 0 and verified.stdout.startswith("ok: ")
    async with bot.deps.db.transaction() as session:
        exported = [e async for e in audit.export(session, None, bot.deps.vault)]
    assert all("Ada" not in str(e) and "ada@" not in str(e) for e in exported)


async def test_many_cards_in_an_hour_alert_the_leads_once(db, db_url, sandbox):
    config = parse_config(CONFIG + "\n[access]\nshow_alert_per_hour = 2\n")
    bot = await start_bot(bot_settings(db_url, sandbox), sandbox, config)
    try:
        async with bot.deps.db.transaction() as session:
            for i in range(4):
                await Customers(session, bot.deps.vault).upsert(
                    f"CUST-{i}", {"name": f"Customer {i}"}, source="test", occurred_at=utcnow()
                )
        for i in (0, 1, 1, 2, 3):  # the third different customer goes over the limit
            await answer(
                bot, BOB, lambda i=i: bot.sim.command(BOB, SALES, "/crm", f"show CUST-{i}")
            )
            if i == 1:
                assert bot.store.dms(ALICE) == []
        alerts = await eventually(lambda: bot.store.dms(ALICE))
        assert (
            len(alerts) == 1
            and f"<@{BOB}> was shown the full cards of 3 customers" in (alerts[0]["text"])
        )
        assert "Customer" not in alerts[0]["text"]
        assert bot.store.dms(BOB) == [] and bot.store.dms(DAVE) == []  # only Bob's leads
        async with bot.deps.db.transaction() as session:
            entries = [e async for e in audit.export(session, None, bot.deps.vault)]
        assert [e["action"] for e in entries].count(audit.READ_ALERT) == 1
    finally:
        await bot.sim.close()
        await bot.service.stop()


async def test_a_users_info_that_cannot_answer_is_never_a_refusal(bot):
    """Slack answering 5xx to users.info: the person is asked to try again (not refused, and
    nothing is cached), and once Slack answers they get the card."""
    await add_ada(bot)
    bot.sandbox.faults.add(Fault("users.info", 503, times=50))
    do = lambda: bot.sim.command(BOB, SALES, "/crm", "show CUST-1")  # noqa: E731
    text = await answer(bot, BOB, do)
    assert "try again" in text and REFUSED not in text and "ada@example.com" not in text
    bot.sandbox.faults.clear()
    assert card_seen(await answer(bot, BOB, do)) == "card"
