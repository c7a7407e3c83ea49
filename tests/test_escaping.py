"""Slack markup in the data never reaches Slack as markup: every customer field, a ticket
subject, a deal name, a note and a reason carry `<!channel>`, a disguised link, a mention and
an entity; after alerts, cards (shown, found, shared, mentioned), a handoff and its steps, an
approval and its decision, lists and App Home, nothing the bot sent to the sandbox (Web API
calls, response_url bodies, acks) holds them unescaped. The bot's own markup (its mentions,
links and dates) is made only from valid ids (bot/lib/blocks `user`, `link`)."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from bot.app import sync_handler
from bot.sandbox.store import BOT_USER_ID
from storage.models import Approval, Handoff
from tests.fixtures.bot import ALICE, FINANCE, GRACE, SALES, SERVICE
from tests.poll import eventually

MARKUP = "<!channel> <https://evil.example|Reset your password> <@U123> &amp; <!here>"
# What must never appear in anything the bot sends (the escaped forms are &lt;!channel&gt; ...).
FORBIDDEN = re.compile(r"<!channel|<!here|<https://evil|<@U123|&amp;(?!amp;)|<@U1\|")


# What Slack sends when a person types MARKUP in a command: the three characters escaped.
TYPED = MARKUP.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fields(tag: str) -> dict:
    return {
        "name": f"{MARKUP} {tag} Ada",
        "email": f"ada{tag}@example.com {MARKUP}",
        "phone": "<!channel> <@U123>",
        "company": f"{MARKUP} Engines",
        "tier": "enterprise",
        "lifecycle_stage": "customer",
        "owner_department": "<!channel> <@U123> &amp;",
        "owner_slack_user": "U1|<!channel>",
        "annual_value": 1000,
        "notes": MARKUP,
    }


def event(n: int, type_: str, ext: str, data: dict | None = None, **customer) -> dict:
    body = {
        "spec": "crm.sync/1",
        "id": f"esc-{n}",
        "type": type_,
        "occurred_at": f"2026-03-01T10:00:{n:02d}Z",
        "source": "crm",
        "customer": {"external_id": ext, **customer},
    }
    if data is not None:
        body["data"] = data
    return body


NOT_SHOWN = {"value", "private_metadata", "action_id", "block_id", "metadata", "callback_id"}


def shown_texts(node, out: list[str]) -> list[str]:
    """The strings Slack renders as mrkdwn: everything but plain_text objects (shown as typed,
    never parsed for mentions or links) and ids, values and metadata (never shown)."""
    if isinstance(node, str):
        try:
            decoded = json.loads(node)  # blocks and views may travel JSON-encoded
        except ValueError:
            out.append(node)
        else:
            if isinstance(decoded, dict | list):
                shown_texts(decoded, out)
            else:
                out.append(node)
    elif isinstance(node, list):
        for item in node:
            shown_texts(item, out)
    elif isinstance(node, dict) and node.get("type") != "plain_text":
        for key, value in node.items():
            if key not in NOT_SHOWN:
                shown_texts(value, out)
    return out


def sent(bot) -> list[str]:
    """Everything the bot sent that Slack shows: Web API call bodies, and what reached people
    through response_urls and acks (the sandbox keeps those as ephemerals)."""
    out: list[str] = []
    for call in bot.store.calls():
        shown_texts(call.body, out)
    for eph in bot.store._ephemerals:
        shown_texts([eph.text, eph.blocks], out)
    return out


async def test_markup_in_the_data_reaches_no_post_unescaped(bot):
    handle, _ = sync_handler(bot.deps)
    # Alerts: a customer whose every field carries markup, an escalated ticket and a won deal
    # about them (the defaults notify sales, service and finance), in threads and top level.
    await handle(event(1, "customer.upserted", "EVIL-1", **fields("one")), 1)
    subject = {"ticket_id": "T-1", "subject": MARKUP, "priority": "urgent"}
    await handle(event(2, "ticket.escalated", "EVIL-1", subject), 1)
    deal = {"deal_id": "D-1", "name": MARKUP, "stage": "closed_won", "amount": 5}
    await handle(event(3, "deal.stage_changed", "EVIL-1", deal), 1)
    await eventually(lambda: len(bot.store.messages(SERVICE)) >= 1, within=10)
    await eventually(lambda: len(bot.store.messages(FINANCE)) >= 1, within=10)

    # Cards: find, show, share, a mention.
    await bot.sim.command(ALICE, SALES, "/crm", "find Ada")
    await bot.sim.command(ALICE, SALES, "/crm", "show EVIL-1")
    card = await eventually(
        lambda: [e for e in bot.store.ephemerals(ALICE) if "customer_share" in json.dumps(e.blocks)]
    )
    share = next(
        el
        for b in card[-1].blocks
        if b["type"] == "actions"
        for el in b["elements"]
        if el["action_id"] == "customer_share"
    )
    await bot.sim.click(ALICE, SALES, card[-1].ts, "customer_share", share["value"])
    await bot.sim.mention(ALICE, SALES, f"<@{BOT_USER_ID}> EVIL-1")

    # A handoff with a note carrying markup, accepted by finance.
    await bot.sim.command(ALICE, SALES, "/crm", f"handoff EVIL-1 finance {TYPED}")

    async def handoff():
        async with bot.deps.db.transaction() as session:
            row = await session.scalar(select(Handoff))
        return row if row is not None and row.message_ts else None

    h = await eventually(handoff, within=10)
    await bot.sim.click(GRACE, FINANCE, h.message_ts, "handoff_accept", str(h.id))

    # An approval with a reason carrying markup, approved.
    await bot.sim.command(ALICE, SALES, "/crm", f"approval EVIL-1 refund 100 {TYPED}")

    async def approval():
        async with bot.deps.db.transaction() as session:
            row = await session.scalar(select(Approval))
        return row if row is not None and row.message_ts else None

    a = await eventually(approval, within=10)
    await bot.sim.click(GRACE, FINANCE, a.message_ts, "approval_approve", str(a.id))
    await eventually(lambda: bot.store.dms(ALICE), within=10)

    # Lists and App Home.
    await bot.sim.command(ALICE, SALES, "/crm", "handoffs")
    await bot.sim.command(ALICE, SALES, "/crm", "approvals")
    await bot.sim.home_opened(GRACE)
    await eventually(lambda: bot.store.home(GRACE), within=10)

    everything = sent(bot)
    methods = {c.method for c in bot.store.calls()}
    assert {"chat.postMessage", "chat.update", "views.publish"} <= methods, methods
    joined = "\n".join(everything)
    assert "&lt;!channel&gt;" in joined  # the data is there, shown as typed
    leaks = [joined[max(0, m.start() - 80) : m.end() + 20] for m in FORBIDDEN.finditer(joined)]
    assert leaks == []
