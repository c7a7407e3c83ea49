"""What the sync consumer has done: processed events, the per-(event, channel) alert ledger,
each customer's alert thread per channel, and timeline entries.

Takes a session, never commits. The alert ledger is an outbox toward Slack: a row is written
`pending` in the transaction that applies the event, and becomes `posted` (with the message's
ts) in a transaction of its own right after the post. So a redelivered event posts nothing
again, and an alert whose post failed is still there to post.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from .db import rowcount
from .models import (
    AlertDelivery,
    ChannelRollup,
    Customer,
    CustomerThread,
    ProcessedEvent,
    TimelineEntry,
    new_id,
    utcnow,
)
from .vault import Vault

PENDING, POSTED, FAILED, DROPPED = "pending", "posted", "failed", "dropped"

DeliveryKey = tuple[str, str]  # (event id, channel id)


# --- what a batch of events writes -----------------------------------------------------------


async def processed_among(session: AsyncSession, event_ids: Sequence[str]) -> set[str]:
    """Which of these event ids were processed already (one query for a batch)."""
    stmt = select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(list(event_ids)))
    return set((await session.execute(stmt)).scalars())


class Writes:
    """The rows a batch of events adds (processed ids, timeline entries, pending alerts),
    written together by `write` (one executemany per table) instead of object by object."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.processed: list[dict] = []
        self.timeline: list[dict] = []
        self.alerts: list[dict] = []

    def mark_processed(self, event_id: str, type_: str, outcome: str) -> None:
        """Recorded with the event's effects (the primary key refuses a second)."""
        self.processed.append(
            {"event_id": event_id, "type": type_, "outcome": outcome, "processed_at": utcnow()}
        )

    def add_timeline(
        self,
        customer: Customer,
        *,
        kind: str,
        source: str,
        occurred_at: datetime,
        event_id: str,
        summary: str | None,
    ) -> None:
        """A timeline entry; the summary sealed under the customer's key (None once erased)."""
        entry_id = new_id()
        sealed = None
        if customer.erased_at is None and summary:
            sealed = self.vault.seal(customer, "timeline", "summary", entry_id, summary)
        self.timeline.append(
            {
                "id": entry_id,
                "customer_id": customer.id,
                "occurred_at": occurred_at,
                "kind": kind[:40],
                "source": source[:64],
                "summary_ct": sealed,
                "event_id": event_id,
                "created_at": utcnow(),
            }
        )

    def add_alert(
        self,
        customer: Customer,
        *,
        event_id: str,
        channel_id: str,
        line: str,
        placement: str,
        broadcast: bool,
    ) -> None:
        """A `pending` alert: the outbox row toward Slack."""
        rid = line_row_id(event_id, channel_id)
        self.alerts.append(
            {
                "event_id": event_id,
                "channel_id": channel_id,
                "customer_id": customer.id,
                "line_ct": self.vault.seal(customer, "alert_deliveries", "line", rid, line),
                "placement": placement,
                "broadcast": broadcast,
                "status": PENDING,
                "error": None,
                "ts": None,
                "created_at": utcnow(),
                "posted_at": None,
            }
        )

    async def write(self, session: AsyncSession) -> None:
        """Insert the rows (after the session flushed the customers they refer to)."""
        for model, rows in (
            (TimelineEntry, self.timeline),
            (AlertDelivery, self.alerts),
            (ProcessedEvent, self.processed),
        ):
            if rows:
                await session.execute(insert(model.__table__), rows)


# --- alert ledger -----------------------------------------------------------------------------


def line_row_id(event_id: str, channel_id: str) -> str:
    """What an alert's sealed text is bound to (table, column and this id)."""
    return f"{event_id}/{channel_id}"


def open_line(vault: Vault, customer: Customer, row) -> str | None:
    """The alert's text; None once the customer is erased."""
    rid = line_row_id(row.event_id, row.channel_id)
    return vault.open(customer, "alert_deliveries", "line", rid, row.line_ct)


async def pending_for_many(session: AsyncSession, customer_ids: Sequence[uuid.UUID]) -> list:
    """The pending alert rows of these customers, oldest first (rows, not ORM objects: they
    are read, never changed through the session)."""
    table = AlertDelivery.__table__
    stmt = (
        select(table)
        .where(table.c.customer_id.in_(list(customer_ids)), table.c.status == PENDING)
        .order_by(table.c.created_at, table.c.event_id)
    )
    return list((await session.execute(stmt)).all())


async def pending_in(session: AsyncSession, channel: str, limit: int = 1000) -> list:
    """The pending alert rows of one channel, oldest first."""
    table = AlertDelivery.__table__
    stmt = (
        select(table)
        .where(table.c.channel_id == channel, table.c.status == PENDING)
        .order_by(table.c.created_at, table.c.event_id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).all())


async def channels_with_pending(session: AsyncSession) -> list[str]:
    stmt = select(AlertDelivery.channel_id).where(AlertDelivery.status == PENDING).distinct()
    return list((await session.execute(stmt)).scalars())


async def channels_behind(session: AsyncSession) -> list[str]:
    """Channels with a message to bring up to date: a thread's top-level message showing fewer
    alerts than its thread holds, or a roll-up listing fewer than it holds."""
    tops = select(CustomerThread.channel_id).where(
        CustomerThread.updates > CustomerThread.shown_updates
    )
    rollups = select(ChannelRollup.channel_id).where(ChannelRollup.listed < ChannelRollup.items)
    return list((await session.execute(tops.union(rollups))).scalars())


async def posted_with(session: AsyncSession, channel: str, ts: str) -> list:
    """The alert rows recorded as posted in the message `ts` (a roll-up), oldest first."""
    table = AlertDelivery.__table__
    stmt = (
        select(table)
        .where(table.c.channel_id == channel, table.c.ts == ts, table.c.status == POSTED)
        .order_by(table.c.created_at, table.c.event_id)
    )
    return list((await session.execute(stmt)).all())


async def alert_row(session: AsyncSession, event_id: str, channel: str):
    return await session.get(AlertDelivery, (event_id, channel))


async def latest_posted(session: AsyncSession, customer_id: uuid.UUID, channel: str):
    """The customer's alert posted last in `channel` (for its thread's top-level message)."""
    table = AlertDelivery.__table__
    stmt = (
        select(table)
        .where(
            table.c.customer_id == customer_id,
            table.c.channel_id == channel,
            table.c.status == POSTED,
        )
        .order_by(table.c.posted_at.desc(), table.c.created_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).first()


async def threads_of_many(
    session: AsyncSession, customer_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dict[str, str]]:
    """customer -> {channel: thread ts}, for the customers that have threads."""
    table = CustomerThread.__table__
    stmt = select(table.c.customer_id, table.c.channel_id, table.c.thread_ts).where(
        table.c.customer_id.in_(list(customer_ids))
    )
    threads: dict[uuid.UUID, dict[str, str]] = {}
    for customer_id, channel_id, ts in await session.execute(stmt):
        threads.setdefault(customer_id, {})[channel_id] = ts
    return threads


async def has_pending(session: AsyncSession, customer_id: uuid.UUID) -> bool:
    stmt = select(func.count()).where(
        AlertDelivery.customer_id == customer_id, AlertDelivery.status == PENDING
    )
    return bool((await session.execute(stmt)).scalar_one())


async def customers_with_pending(session: AsyncSession, limit: int = 500) -> list[uuid.UUID]:
    stmt = (
        select(AlertDelivery.customer_id)
        .where(AlertDelivery.status == PENDING)
        .group_by(AlertDelivery.customer_id)
        .order_by(func.min(AlertDelivery.created_at))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def mark_tried(
    session: AsyncSession, keys: Sequence[DeliveryKey], round_id: str, at: datetime
) -> None:
    """Note that delivery round `round_id` sets out to post these alerts now (committed before
    it posts): a row still pending with a round may be in Slack already."""
    table = AlertDelivery.__table__
    key = tuple_(table.c.event_id, table.c.channel_id)
    for i in range(0, len(keys), 500):  # within every database's limit on bound values
        chunk = list(keys[i : i + 500])
        stmt = (
            update(table)
            .where(key.in_(chunk), table.c.status == PENDING)
            .values(tried_in=round_id, tried_at=at)
        )
        await session.execute(stmt)


class Settlement(NamedTuple):
    """How one alert's delivery ended: POSTED (with the message's ts), FAILED (with Slack's
    reason) or DROPPED (its customer was erased or is gone)."""

    key: DeliveryKey
    status: str
    ts: str | None = None
    error: str | None = None


async def settle_many(session: AsyncSession, settlements: Sequence[Settlement]) -> None:
    """Several rows at once (one executemany); only rows still pending change."""
    if not settlements:
        return
    table = AlertDelivery.__table__
    stmt = (
        update(table)
        .where(
            table.c.event_id == bindparam("k_event"),
            table.c.channel_id == bindparam("k_channel"),
            table.c.status == PENDING,
        )
        .values(
            status=bindparam("v_status"),
            ts=bindparam("v_ts"),
            error=bindparam("v_error"),
            posted_at=bindparam("v_at"),
        )
    )
    now = utcnow()
    params = [
        {
            "k_event": s.key[0],
            "k_channel": s.key[1],
            "v_status": s.status,
            "v_ts": s.ts,
            "v_error": s.error,
            "v_at": now,
        }
        for s in settlements
    ]
    await session.execute(stmt, params)


async def failed(session: AsyncSession, limit: int = 100) -> list:
    """The alerts Slack refused for good (newest first): event, channel, reason, when; never
    their text."""
    table = AlertDelivery.__table__
    stmt = (
        select(table.c.created_at, table.c.event_id, table.c.channel_id, table.c.error)
        .where(table.c.status == FAILED)
        .order_by(table.c.created_at.desc(), table.c.event_id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).all())


async def retry_failed(
    session: AsyncSession, *, channels: Sequence[str] = (), event_ids: Sequence[str] = ()
) -> int:
    """Make failed alerts (of these channels, these events; all when neither is given)
    pending again, for the running bot to post. Returns how many."""
    table = AlertDelivery.__table__
    stmt = (
        update(table)
        .where(table.c.status == FAILED)
        .values(status=PENDING, error=None, tried_in=None, tried_at=None)
    )
    if channels:
        stmt = stmt.where(table.c.channel_id.in_(list(channels)))
    if event_ids:
        stmt = stmt.where(table.c.event_id.in_(list(event_ids)))
    return await rowcount(session, stmt)


# --- per-customer threads ---------------------------------------------------------------------


def start_thread(
    session: AsyncSession,
    customer_id: uuid.UUID,
    channel_id: str,
    thread_ts: str,
    opened_by: str | None = None,
) -> CustomerThread:
    """The customer's thread in a channel: `thread_ts` is its top-level message, the alert of
    event `opened_by` (None for a thread started by a header, before 0008)."""
    thread = CustomerThread(
        customer_id=customer_id,
        channel_id=channel_id,
        thread_ts=thread_ts,
        opened_by=opened_by,
        updates=0,
        shown_updates=0,
    )
    session.add(thread)
    return thread


async def note_replies(
    session: AsyncSession, customer_id: uuid.UUID, channel_id: str, n: int, at: datetime
) -> None:
    """`n` more alerts were posted in the thread: its top-level message is behind."""
    stmt = (
        update(CustomerThread)
        .where(CustomerThread.customer_id == customer_id, CustomerThread.channel_id == channel_id)
        .values(updates=CustomerThread.updates + n, changed_at=at)
    )
    await session.execute(stmt)


async def tops_behind(
    session: AsyncSession, channel_id: str, shown_before: datetime
) -> list[CustomerThread]:
    """The threads in a channel whose top-level message shows fewer alerts than were posted,
    and was last updated before `shown_before` (at most once per coalescing window)."""
    stmt = select(CustomerThread).where(
        CustomerThread.channel_id == channel_id,
        CustomerThread.updates > CustomerThread.shown_updates,
        (CustomerThread.shown_at.is_(None)) | (CustomerThread.shown_at <= shown_before),
    )
    return list((await session.execute(stmt)).scalars())


async def top_shown(
    session: AsyncSession, customer_id: uuid.UUID, channel_id: str, updates: int, at: datetime
) -> None:
    stmt = (
        update(CustomerThread)
        .where(CustomerThread.customer_id == customer_id, CustomerThread.channel_id == channel_id)
        .values(shown_updates=updates, shown_at=at)
    )
    await session.execute(stmt)
