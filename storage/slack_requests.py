"""Requests from Slack already acted on: a retried delivery or a double submit has one effect."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import SlackRequest


async def first_time(session: AsyncSession, key: str) -> bool:
    """Record `key` (e.g. a command's trigger_id) in the caller's transaction; False when it was
    recorded before, in which case the caller should do nothing."""
    try:
        async with session.begin_nested():
            session.add(SlackRequest(key=key[:128]))
        return True
    except IntegrityError:
        return False
