"""Customer cards shared to channels, remembered so they can be kept up to date."""

from __future__ import annotations

import uuid

from sqlalchemy import select
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
