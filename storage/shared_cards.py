"""Customer cards shared to channels, remembered so they can be kept up to date.

A change a card shows marks the customer's cards `stale` in the transaction that makes it; the
card is `shown` once chat.update went through. So a card Slack could not update then (an
outage, a crash) is still known to be out of date, and the flush job updates it later."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import SharedCard


def remember(session: AsyncSession, customer_id: uuid.UUID, channel_id: str, ts: str, by: str):
    card = SharedCard(customer_id=customer_id, channel_id=channel_id, ts=ts, shared_by=by)
    session.add(card)
    return card


async def for_customer(session: AsyncSession, customer_id: uuid.UUID) -> list[SharedCard]:
    stmt = select(SharedCard).where(SharedCard.customer_id == customer_id)
    return list((await session.execute(stmt)).scalars())


async def customers_with_cards(
    session: AsyncSession, customer_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these customers have a card shared somewhere (one query for a batch)."""
    if not customer_ids:
        return set()
    stmt = select(SharedCard.customer_id).where(SharedCard.customer_id.in_(customer_ids))
    return set((await session.execute(stmt.distinct())).scalars())


async def mark_stale(session: AsyncSession, customer_ids: set[uuid.UUID]) -> None:
    """These customers' cards no longer show their record as it is."""
    if customer_ids:
        # The rows locked in id order first, as mark_shown takes them: the two cannot deadlock
        # (a batch's UPDATE alone locks them in whatever order it finds them).
        ids = select(SharedCard.id).where(SharedCard.customer_id.in_(customer_ids))
        await session.execute(ids.order_by(SharedCard.id).with_for_update(key_share=True))
        await session.execute(
            update(SharedCard)
            .where(SharedCard.customer_id.in_(customer_ids))
            .values(stale=SharedCard.stale + 1)
        )


async def mark_shown(session: AsyncSession, seen: list[tuple[uuid.UUID, int]]) -> None:
    """Cards updated with the record as it was when their staleness was `seen`: current, unless
    a change marked them again meanwhile."""
    for card_id, stale in sorted(seen):
        await session.execute(
            update(SharedCard)
            .where(SharedCard.id == card_id, SharedCard.stale == stale)
            .values(stale=0)
        )


async def stale_customers(session: AsyncSession, limit: int = 200) -> list[uuid.UUID]:
    """Customers with a card not showing their record as it is."""
    stmt = select(SharedCard.customer_id).where(SharedCard.stale > 0).distinct().limit(limit)
    return list((await session.execute(stmt)).scalars())
