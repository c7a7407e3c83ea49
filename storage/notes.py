"""Notes people add in Slack: timeline entries of kind `note`, the text sealed under the
customer's key like every other free text, with the author, their department and the link to
the Slack message in the clear (ids and a link, nothing personal).

Takes a session, never commits. Erasure deletes the notes outright (`Customers.erase`): the
sealed text would be unreadable anyway once the key is gone, but who wrote about whom, and
where, is not worth keeping either.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Customer, TimelineEntry, new_id
from .vault import Vault

KIND = "note"
SOURCE = "slack"


@dataclass(frozen=True)
class NoteItem:
    id: uuid.UUID
    added_at: datetime
    author: str | None
    department: str | None
    permalink: str | None
    text: str | None  # None when it does not decrypt


def add(
    session: AsyncSession,
    vault: Vault,
    customer: Customer,
    *,
    text: str,
    author: str,
    department: str | None,
    permalink: str | None,
    now: datetime,
) -> TimelineEntry:
    entry_id = new_id()
    entry = TimelineEntry(
        id=entry_id,
        customer_id=customer.id,
        occurred_at=now,
        kind=KIND,
        source=SOURCE,
        summary_ct=vault.seal(customer, "timeline", "summary", entry_id, text),
        event_id=f"note:{entry_id}",
        created_at=now,
        author=author,
        department=department,
        permalink=(permalink or None) and permalink[:500],
    )
    session.add(entry)
    return entry


async def latest(
    session: AsyncSession, vault: Vault, customer: Customer, limit: int = 5
) -> list[NoteItem]:
    """The customer's notes, newest first."""
    rows = (
        await session.execute(
            select(TimelineEntry)
            .where(TimelineEntry.customer_id == customer.id, TimelineEntry.kind == KIND)
            .order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.created_at.desc())
            .limit(limit)
        )
    ).scalars()
    items = []
    for e in rows:
        try:
            text = vault.open(customer, "timeline", "summary", e.id, e.summary_ct)
        except Exception:  # altered or moved ciphertext: shown as unreadable, never raised
            text = None
        items.append(NoteItem(e.id, e.occurred_at, e.author, e.department, e.permalink, text))
    return items
