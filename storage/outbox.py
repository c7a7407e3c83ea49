"""Events the bot publishes, written in the same transaction as the change they describe."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import OutboxEvent, utcnow

SPEC = "crm.sync/1"
SOURCE = "crm-bot"


def event_body(
    type_: str, external_id: str, data: dict[str, Any], *, event_id: uuid.UUID, at: datetime
) -> dict[str, Any]:
    """A `crm.sync/1` event; the customer by external id only (no personal data leaves)."""
    return {
        "spec": SPEC,
        "id": str(event_id),
        "type": type_,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "source": SOURCE,
        "customer": {"external_id": external_id},
        "data": data,
    }


def add(session: AsyncSession, type_: str, external_id: str, data: dict[str, Any]) -> OutboxEvent:
    event_id = uuid.uuid4()
    body = event_body(type_, external_id, data, event_id=event_id, at=utcnow())
    row = OutboxEvent(id=event_id, routing_key=type_, body=json.dumps(body, sort_keys=True))
    session.add(row)
    return row


async def pending(session: AsyncSession, limit: int = 100) -> list[OutboxEvent]:
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.created_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def mark_published(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    if ids:
        await session.execute(
            update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(published_at=utcnow())
        )
