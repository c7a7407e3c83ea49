"""Per-channel delivery state shared by every replica: who posts a channel's alerts (leases),
how fast anyone may post there (the budget), and the channel's open storm roll-up.

Takes a session, never commits (each caller's transaction is one short statement or two).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .db import rowcount
from .models import ChannelBudget, ChannelLease, ChannelRollup


def _insert(session: AsyncSession, model):
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


# --- leases -----------------------------------------------------------------------------------


async def claim(
    session: AsyncSession, channels: Sequence[str], owner: str, now: datetime, until: datetime
) -> list[str]:
    """Of these channels, those whose alerts `owner` may post now: a lease nobody else holds
    (or whose holder let it run out) is taken or renewed until `until`."""
    if not channels:
        return []
    stmt = _insert(session, ChannelLease)
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel_id"],
        set_={"owner": stmt.excluded.owner, "until": stmt.excluded.until},
        where=(ChannelLease.owner == owner) | (ChannelLease.until < now),
    )
    # One order for every replica, so two claiming overlapping sets cannot deadlock.
    rows = [{"channel_id": c, "owner": owner, "until": until} for c in sorted(set(channels))]
    await session.execute(stmt, rows)
    mine = select(ChannelLease.channel_id).where(
        ChannelLease.channel_id.in_(list(channels)), ChannelLease.owner == owner
    )
    return list((await session.execute(mine)).scalars())


async def renew(session: AsyncSession, channel: str, owner: str, until: datetime) -> bool:
    """Extend `owner`'s lease on `channel` to `until`; False when another process holds it now
    (it took over after the lease ran out): then `owner` must not post there."""
    stmt = (
        update(ChannelLease)
        .where(ChannelLease.channel_id == channel, ChannelLease.owner == owner)
        .values(until=until)
    )
    return await rowcount(session, stmt) == 1


async def release(session: AsyncSession, owner: str) -> None:
    """Give `owner`'s leases up (on stop), so another replica takes over at once."""
    stmt = (
        update(ChannelLease)
        .where(ChannelLease.owner == owner)
        .values(until=datetime(2000, 1, 1, tzinfo=UTC))
    )
    await session.execute(stmt)


# --- the posting budget -----------------------------------------------------------------------


async def reserve(
    session: AsyncSession, channel: str, now: float, interval: float, burst: int
) -> float:
    """A slot to post in `channel` (Unix seconds; at most `now`: post at once): a GCRA on one
    row, updated atomically (the upsert locks it), so every replica draws on one budget of one
    post per `interval` after a burst of `burst`."""
    floor = now - (burst - 1) * interval
    stmt = _insert(session, ChannelBudget).values(channel_id=channel, next_at=now + interval)
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel_id"],
        set_={
            "next_at": case((ChannelBudget.next_at > floor, ChannelBudget.next_at), else_=floor)
            + interval
        },
    ).returning(ChannelBudget.next_at)
    next_at = (await session.execute(stmt)).scalar_one()
    return next_at - interval


async def hold(session: AsyncSession, channel: str, until: float) -> None:
    """Slack refused a post with Retry-After: nobody posts in `channel` before `until`."""
    stmt = _insert(session, ChannelBudget).values(channel_id=channel, next_at=until)
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel_id"],
        set_={"next_at": case((ChannelBudget.next_at > until, ChannelBudget.next_at), else_=until)},
    )
    await session.execute(stmt)


# --- roll-ups ---------------------------------------------------------------------------------


async def open_rollup(session: AsyncSession, channel: str) -> ChannelRollup | None:
    return await session.get(ChannelRollup, channel)


async def start_rollup(
    session: AsyncSession, channel: str, ts: str, at: datetime, items: int
) -> None:
    """The roll-up just posted (listing `items` alerts) becomes the channel's open one."""
    stmt = _insert(session, ChannelRollup).values(
        channel_id=channel, ts=ts, opened_at=at, items=items, listed=items, shown_at=at
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel_id"],
        set_={"ts": ts, "opened_at": at, "items": items, "listed": items, "shown_at": at},
    )
    await session.execute(stmt)


async def add_to_rollup(session: AsyncSession, channel: str, ts: str, n: int) -> None:
    stmt = (
        update(ChannelRollup)
        .where(ChannelRollup.channel_id == channel, ChannelRollup.ts == ts)
        .values(items=ChannelRollup.items + n)
    )
    await session.execute(stmt)


async def rollup_shown(
    session: AsyncSession, channel: str, ts: str, listed: int, at: datetime
) -> None:
    stmt = (
        update(ChannelRollup)
        .where(ChannelRollup.channel_id == channel, ChannelRollup.ts == ts)
        .values(listed=listed, shown_at=at)
    )
    await session.execute(stmt)
