"""The step every change made from Slack ends with, in the change's own transaction: its audit
entry, its outbox event (when other systems are told of it), and a wake-up for the outbox relay
once that transaction commits (so the event goes out at once rather than at the next poll; a
rolled-back change wakes nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.deps import Deps
from storage import audit, outbox
from storage.models import Customer


@dataclass(frozen=True)
class Published:
    """An outbox event: its type (the routing key), the customer's external id, its `data`."""

    type: str
    external_id: str
    data: dict[str, Any]


async def record_change(
    session: AsyncSession,
    deps: Deps,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: object,
    customer: Customer | None = None,
    data: dict[str, Any] | None = None,
    details: str | None = None,
    publish: Published | None = None,
) -> None:
    """Audit `action` (and `details`, sealed under the customer's key); with `publish`, add its
    outbox event and wake the relay after the commit."""
    await audit.append(
        session,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        customer=customer,
        data=data,
        details=details,
        vault=deps.vault,
    )
    if publish is not None:
        outbox.add(session, publish.type, publish.external_id, publish.data)
        sa_event.listen(
            session.sync_session, "after_commit", lambda _s: deps.wake_outbox(), once=True
        )
