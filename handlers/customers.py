"""Finding and seeing customers: `/crm find`, `/crm show`, the card's `Open` and
`Share to channel` buttons, and `@crm-bot <email or external id>` mentions.

The full card goes only to the person who asked (ephemeral); what lands in a channel is the
redacted card (name, company, tier, stage, owner), so personal data does not spread.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.lib.blocks import customers as cards
from bot.lib.blocks import reply
from bot.lib.errors import NotFound, UserError
from bot.lib.interaction import (
    Command,
    ack_only,
    lazy,
    parse_click,
    parse_customer_id,
    parse_event,
    tell,
)
from bot.lib.slack_out import SlackError, fit_to_limits
from handlers.changes import record_change
from handlers.commands import CommandRouter, clean_text
from handlers.deps import Deps
from storage import shared_cards
from storage.crypto import CryptoError
from storage.customers import CustomerRecord, Customers
from storage.models import Approval, Customer, Handoff, SlackRequest, TimelineEntry
from storage.slack_requests import first_time

log = logging.getLogger(__name__)

MAX_QUERY = 200
TIMELINE_ENTRIES = 5
OPEN_HANDOFF = ("requested", "accepted")
PUNCTUATION = ".,;:!?()[]\"'"
MENTION = re.compile(r"<[@!#][^<>]*>")
MENTION_HINT = (
    "Mention me with a customer's email address or external id, e.g. `@crm-bot ada@example.com`;"
    " `/crm find <text>` searches by name or company."
)


# --- rules (plain functions) -----------------------------------------------------------------


def search_text(args: str) -> str:
    """The text of `/crm find`, or a UserError with the one-line answer."""
    text = " ".join(args.split())
    if not text:
        raise UserError("Usage: `/crm find <text>` (an email, phone, external id or name words)")
    if len(text) > MAX_QUERY:
        raise UserError(f"That search is too long (at most {MAX_QUERY} characters).")
    return text


def customer_ref(args: str, usage: str = "show <customer>") -> str:
    ref = args.strip()
    if not ref:
        raise UserError(f"Usage: `/crm {usage}` (an email address or an external id)")
    if len(ref) > 254 or len(ref.split()) > 1:
        raise UserError("`<customer>` is one email address or external id.")
    return ref


def mention_refs(text: str) -> list[str]:
    """Candidate customer references in a mention's text: email addresses first, then the
    other words (as external ids); mentions of people, channels and the bot are skipped."""
    words = clean_text(MENTION.sub(" ", text or "")).split()
    words = [w.strip(PUNCTUATION) for w in words]
    emails = [w for w in words if "@" in w]
    others = [w for w in words if "@" not in w]
    return [w for w in dict.fromkeys([*emails, *others]) if w and len(w) <= 128][:10]


def not_found(ref: str) -> NotFound:
    shown = cards.esc(cards.clip(ref, 60))
    return NotFound(f"No customer `{shown}`. Try `/crm find <text>` to search.")


# --- reading a card --------------------------------------------------------------------------


@dataclass
class Card:
    record: CustomerRecord
    timeline: list[cards.TimelineItem]
    handoffs: list[cards.HandoffItem]
    approvals: list[cards.ApprovalItem]

    def full(self) -> dict:
        text, blocks = cards.full_card(
            self.record, timeline=self.timeline, handoffs=self.handoffs, approvals=self.approvals
        )
        return answer(text, blocks)


def answer(text: str, blocks: list | None = None) -> dict:
    """An ephemeral reply cut to Slack's limits (response_url posts bypass SlackOut)."""
    text, blocks = fit_to_limits(text, blocks)
    return reply(text, blocks)


async def load_card(deps: Deps, session: AsyncSession, customer: Customer) -> Card:
    repo = Customers(session, deps.vault)
    record = repo.read(customer)
    entries = (
        await session.execute(
            select(TimelineEntry)
            .where(TimelineEntry.customer_id == customer.id)
            .order_by(TimelineEntry.occurred_at.desc())
            .limit(TIMELINE_ENTRIES)
        )
    ).scalars()
    timeline = [
        cards.TimelineItem(e.occurred_at, e.kind, e.source, _open_summary(deps, customer, e))
        for e in entries
    ]
    handoffs = (
        await session.execute(
            select(Handoff)
            .where(Handoff.customer_id == customer.id, Handoff.status.in_(OPEN_HANDOFF))
            .order_by(Handoff.created_at.desc())
            .limit(10)
        )
    ).scalars()
    approvals = (
        await session.execute(
            select(Approval)
            .where(Approval.customer_id == customer.id, Approval.status == "pending")
            .order_by(Approval.created_at.desc())
            .limit(10)
        )
    ).scalars()
    return Card(
        record,
        timeline,
        [
            cards.HandoffItem(h.to_department, h.status, h.requested_by, h.created_at)
            for h in handoffs
        ],
        [
            cards.ApprovalItem(a.kind, a.amount, a.unit, a.department, a.requested_by)
            for a in approvals
        ],
    )


def _open_summary(deps: Deps, customer: Customer, entry: TimelineEntry) -> str | None:
    try:
        return deps.vault.open(customer, "timeline", "summary", entry.id, entry.summary_ct)
    except CryptoError:
        log.warning("timeline entry %s does not decrypt", entry.id)
        return None


async def card_by_ref(deps: Deps, ref: str) -> Card:
    async with deps.db.transaction() as session:
        customer = await Customers(session, deps.vault).by_ref(ref)
        if customer is None:
            raise not_found(ref)
        return await load_card(deps, session, customer)


async def card_by_id(deps: Deps, customer_id: uuid.UUID | None) -> Card:
    async with deps.db.transaction() as session:
        customer = await Customers(session, deps.vault).get(customer_id) if customer_id else None
        if customer is None or customer.erased_at is not None:
            raise NotFound("That customer is no longer on record.")
        return await load_card(deps, session, customer)


# --- /crm find, /crm show --------------------------------------------------------------------


async def find(deps: Deps, cmd: Command) -> dict:
    text = search_text(cmd.args)
    async with deps.db.transaction() as session:
        records = await Customers(session, deps.vault).search(text, limit=10)
    log.info("/crm find by %s: %d matches", cmd.user, len(records))
    return answer(*cards.search_results(text, records))


async def show(deps: Deps, cmd: Command) -> dict:
    card = await card_by_ref(deps, customer_ref(cmd.args))
    log.info("/crm show by %s: customer %s", cmd.user, card.record.id)
    return card.full()


# --- buttons and mentions --------------------------------------------------------------------


async def share(deps: Deps, user_id: str, channel: str | None, value: str | None, key: str):
    """Post the redacted card in `channel` and remember it; one effect per click."""
    if not channel:
        raise UserError("Open the card in a channel to share it there.")
    customer_id = parse_customer_id(value)
    async with deps.db.transaction() as session:
        customer = await Customers(session, deps.vault).get(customer_id) if customer_id else None
        if customer is None or customer.erased_at is not None:
            raise NotFound("That customer is no longer on record.")
        if not await first_time(session, key):
            return answer(f"This card is already shared in <#{channel}>.")
        record = Customers(session, deps.vault).read(customer)
    text, blocks = cards.redacted_card(record)
    try:
        posted = await deps.slack.post(channel, text, blocks)
    except SlackError as exc:
        async with deps.db.transaction() as session:  # let the person try again
            await session.execute(delete(SlackRequest).where(SlackRequest.key == key[:128]))
        raise UserError(f"I could not post in this channel ({exc.kind}).") from None
    async with deps.db.transaction() as session:
        customer = await session.get(Customer, record.id)
        shared_cards.remember(session, record.id, posted["channel"], posted["ts"], user_id)
        await record_change(
            session,
            deps,
            actor=user_id,
            action="customer.card_shared",
            entity_type="customer",
            entity_id=record.id,
            customer=customer,
            data={"channel": posted["channel"], "ts": posted["ts"]},
        )
    log.info("card of customer %s shared in %s by %s", record.id, channel, user_id)
    return answer(f"Shared a card for {cards.label(record)} in <#{channel}> (no contact details).")


async def mention(deps: Deps, event: dict) -> tuple[str, list | None]:
    """The answer to `@crm-bot <email or external id>`: the redacted card, or a hint."""
    refs = mention_refs(event.get("text", ""))
    if not refs:
        return MENTION_HINT, None
    async with deps.db.transaction() as session:
        repo = Customers(session, deps.vault)
        for ref in refs:
            customer = await repo.by_ref(ref)
            if customer is not None:
                return cards.redacted_card(repo.read(customer))
    return f"I found no customer for that. {MENTION_HINT}", None


async def open_card(deps: Deps, body: dict) -> None:
    """`Open` on a search result: the full card, to the person who clicked."""
    click = parse_click(body)
    card = (await card_by_id(deps, parse_customer_id(click.value))).full()
    log.info("customer_open by %s", click.user)
    await tell(deps.slack, click.person, card["text"], click.place, card.get("blocks"))


async def share_card(deps: Deps, body: dict) -> None:
    """`Share to channel` on a card: the redacted card, once per click."""
    click = parse_click(body)
    key = f"share:{click.value}:{click.channel}:{click.message_ts}:{click.user}"
    result = await share(deps, click.user, click.channel, click.value, key)
    await tell(deps.slack, click.person, result["text"], click.place, result.get("blocks"))


async def on_mention(deps: Deps, body: dict) -> None:
    """`@crm-bot <email or external id>`: the redacted card (or a hint) in the thread."""
    event = parse_event(body)
    if not event.channel or not event.ts or event.event.get("bot_id"):
        return
    async with deps.db.transaction() as session:
        if not await first_time(session, f"mention:{event.channel}:{event.ts}"):
            return  # a retried delivery
    text, blocks = await mention(deps, event.event)
    await deps.slack.post(event.channel, text, blocks, thread_ts=event.thread_ts or event.ts)


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add("find", find, "find <text>", "search by email, phone, external id, name or company")
    router.add("show", show, "show <customer>", "the full customer card, only to you")
    app.action(cards.OPEN)(ack=ack_only, lazy=[lazy(open_card, deps)])
    app.action(cards.SHARE)(ack=ack_only, lazy=[lazy(share_card, deps)])
    app.event("app_mention")(ack=ack_only, lazy=[lazy(on_mention, deps)])
