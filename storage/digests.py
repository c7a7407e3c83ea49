"""Which digest periods were claimed and posted (`digest_runs`): one row per digest and period.

A replica claims a period by inserting its row (the primary key lets one insert win, across
replicas and restarts); a claim whose holder did not finish within the lease (it died) is taken
over by compare-and-set. Takes a session, never commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .db import rowcount
from .models import DigestRun


async def claim(
    session: AsyncSession, digest: str, period: datetime, owner: str, now: datetime, lease: float
) -> tuple[DigestRun, datetime | None] | None:
    """(the run, when an earlier holder claimed it: it may have posted) when `owner` is to post
    this period now; None when it was posted, or a claim on it is still live."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(DigestRun)
        .values(digest=digest, period=period, claimed_by=owner, claimed_at=now)
        .on_conflict_do_nothing(index_elements=["digest", "period"])
    )
    inserted = await rowcount(session, stmt) == 1
    run = await _get(session, digest, period)
    if inserted and run is not None:
        return run, None
    if run is None or run.posted_at is not None:
        return None
    if run.claimed_at > now - timedelta(seconds=lease):
        return None  # being posted (by this process too: its job and a direct call)
    earlier = run.claimed_at
    taken = await rowcount(
        session,
        update(DigestRun)
        .where(
            DigestRun.digest == digest,
            DigestRun.period == period,
            DigestRun.posted_at.is_(None),
            DigestRun.claimed_by == run.claimed_by,
            DigestRun.claimed_at == earlier,
        )
        .values(claimed_by=owner, claimed_at=now)
        .execution_options(synchronize_session=False),
    )
    if taken != 1:
        return None
    await session.refresh(run)
    return run, earlier


async def _get(session: AsyncSession, digest: str, period: datetime) -> DigestRun | None:
    stmt = select(DigestRun).where(DigestRun.digest == digest, DigestRun.period == period)
    return (await session.execute(stmt)).scalar_one_or_none()


async def record(
    session: AsyncSession,
    digest: str,
    period: datetime,
    *,
    channel: str | None = None,
    ts: str | None = None,
    file_id: str | None = None,
    posted_at: datetime | None = None,
) -> None:
    values = {
        k: v
        for k, v in {
            "channel_id": channel,
            "ts": ts,
            "file_id": file_id,
            "posted_at": posted_at,
        }.items()
        if v is not None
    }
    if values:
        await session.execute(
            update(DigestRun)
            .where(DigestRun.digest == digest, DigestRun.period == period)
            .values(**values)
        )


async def run(session: AsyncSession, digest: str, period: datetime) -> DigestRun | None:
    return await _get(session, digest, period)
