"""Fault injection for the sandbox: scripted failures and Slack's per-channel rate limit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

POSTING_METHODS = frozenset({"chat.postMessage"})


@dataclass
class Fault:
    """Answer the next `times` calls to `method` (any method when None) with a failure."""

    method: str | None
    status: int  # 429, 500, 503, ..., or 200 with `error` for an ok:false answer
    times: int
    retry_after: int = 1
    error: str | None = None
    disconnect: bool = False  # drop the connection instead of answering
    applied: bool = False  # the call takes effect, then its answer is lost to the failure

    def matches(self, method: str) -> bool:
        return self.times > 0 and (self.method is None or self.method == method)


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimit:
    """Token bucket per channel for posting methods, like Slack's ~1 message/s/channel."""

    per_second: float
    burst: int
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, channel: str, now: float | None = None) -> float:
        """0 when a post to `channel` may go now (and counts it), else seconds to wait."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.setdefault(channel, _Bucket(float(self.burst), now))
        bucket.tokens = min(
            float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second
        )
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second


class Faults:
    def __init__(self) -> None:
        self.scripted: list[Fault] = []
        self.rate_limit: RateLimit | None = None

    def add(self, fault: Fault) -> None:
        self.scripted.append(fault)

    def clear(self) -> None:
        self.scripted.clear()
        self.rate_limit = None

    def next_for(self, method: str) -> Fault | None:
        """The scripted fault that answers this call, consuming one of its `times`."""
        for fault in self.scripted:
            if fault.matches(method):
                fault.times -= 1
                return fault
        return None

    def throttle(self, method: str, channel: str | None) -> int | None:
        """Retry-After seconds when the rate limit refuses this call, else None."""
        if self.rate_limit is None or method not in POSTING_METHODS or not channel:
            return None
        wait = self.rate_limit.take(channel)
        return math.ceil(wait) if wait > 0 else None
