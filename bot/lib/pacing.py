"""Slack's posting budget per channel (about one message per second after a short burst).

`LocalBudget` paces one process (tests, the demo, SQLite); `SharedBudget` keeps the budget in
the shared database (storage.channels.reserve: one row per channel, updated atomically), so
any number of replicas together post at Slack's rate, and a 429's Retry-After seen by one holds
every replica back from that channel. Both are a GCRA: `reserve` hands out the next slot and
pushes the channel's next free moment on by one interval; the caller sleeps until its slot.
"""

from __future__ import annotations

import time
from typing import Protocol

from storage import channels
from storage.db import Database


class Budget(Protocol):
    interval: float

    async def reserve(self, channel: str) -> float:
        """The Unix time at which one more post in `channel` fits the rate (<= now: at once)."""
        ...

    async def hold(self, channel: str, until: float) -> None:
        """Slack answered 429: no post in `channel` before `until` (Unix time)."""
        ...


class LocalBudget:
    """One process's budget (in memory)."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.burst = max(1, burst)
        self._next: dict[str, float] = {}

    async def reserve(self, channel: str) -> float:
        now = time.time()
        floor = now - (self.burst - 1) * self.interval
        slot = max(self._next.get(channel, floor), floor)
        self._next[channel] = slot + self.interval
        return slot

    async def hold(self, channel: str, until: float) -> None:
        self._next[channel] = max(self._next.get(channel, 0.0), until)


class SharedBudget:
    """Every replica's budget, in the shared database."""

    def __init__(self, db: Database, interval: float, burst: int) -> None:
        self.db = db
        self.interval = interval
        self.burst = max(1, burst)

    async def reserve(self, channel: str) -> float:
        async with self.db.transaction() as session:
            return await channels.reserve(session, channel, time.time(), self.interval, self.burst)

    async def hold(self, channel: str, until: float) -> None:
        async with self.db.transaction() as session:
            await channels.hold(session, channel, until)
