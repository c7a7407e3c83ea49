"""Messages kept current in place: shared customer cards, and the top-level message of each
customer's alert thread.

- Shared cards: a change a shared card shows marks it stale (in the sync transaction); it is
  updated (chat.update) right after, and marked shown; the flush job updates what is still
  stale (Slack failed, or the process stopped first).
- Thread tops: the first alert about a customer in a channel is the thread's top-level
  message; as alerts are added in the thread, it is updated to show how many there are, the
  latest one and when it came, at most once per coalescing window (chat.update has a rate
  limit of its own; at most once a second without a window), by the round that holds the
  channel, and rendered from the database, so an update that failed is made again later.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.lib.blocks.alerts import first_alert, thread_header, thread_top
from bot.lib.blocks.customers import redacted_card
from bot.lib.slack_out import SlackError
from storage import shared_cards
from storage import sync_ledger as ledger
from storage.customers import read_record
from storage.models import Customer

if TYPE_CHECKING:
    from handlers.deps import Deps
    from handlers.sync.posting import ChannelRound

log = logging.getLogger(__name__)


async def refresh_cards(deps: Deps, customer_id: uuid.UUID) -> None:
    """Update this customer's stale cards (chat.update), so no channel shows stale data, and
    mark them shown. A transient failure raises and leaves the rest stale (the flush job tries
    again); a card Slack refuses for good (its message deleted) is given up."""
    async with deps.db.transaction() as session:
        cards = [c for c in await shared_cards.for_customer(session, customer_id) if c.stale]
        customer = await session.get(Customer, customer_id)
        if not cards or customer is None:
            return
        record = read_record(deps.vault, customer)
    text, blocks = redacted_card(record)
    shown: list[tuple[uuid.UUID, int]] = []
    try:
        for card in cards:
            try:
                await deps.slack.update(card.channel_id, card.ts, text, blocks)
            except SlackError as exc:
                if exc.transient:
                    raise
                log.warning("shared card %s not updated: %s", card.id, exc.kind)
            shown.append((card.id, card.stale))
    finally:
        if shown:
            async with deps.db.transaction() as session:
                await shared_cards.mark_shown(session, shown)


async def refresh_tops(r: ChannelRound) -> None:
    """Bring the channel's thread tops that are behind up to date (those not updated within
    the coalescing window); one that Slack refuses for good is marked shown and left."""
    deps = r.deps
    before = deps.clock() - timedelta(seconds=max(r.window, 1.0))
    async with deps.db.transaction() as session:
        behind = await ledger.tops_behind(session, r.channel, before)
        work = []
        for thread in behind:
            customer = await session.get(Customer, thread.customer_id)
            if customer is None or customer.erased_at is not None:
                continue
            record = read_record(deps.vault, customer)
            first: list[str] = []
            if thread.opened_by is not None:  # the alerts the top-level message posted
                rows = await ledger.posted_with(session, r.channel, thread.thread_ts)
                first = [ledger.open_line(deps.vault, customer, row) or "" for row in rows]
            latest_row = await ledger.latest_posted(session, customer.id, r.channel)
            latest = ledger.open_line(deps.vault, customer, latest_row) if latest_row else None
            opening = first_alert(record, first) if first else thread_header(record)
            top = thread_top(record, opening, thread.updates, latest, thread.changed_at)
            work.append((thread, top))
    for thread, (text, blocks) in work:
        try:
            await deps.slack.update(r.channel, thread.thread_ts, text, blocks)
        except SlackError as exc:
            if exc.transient:
                raise
            log.warning("the top of a thread in %s was not updated: %s", r.channel, exc.kind)
        async with deps.db.transaction() as session:
            await ledger.top_shown(
                session, thread.customer_id, r.channel, thread.updates, deps.clock()
            )
