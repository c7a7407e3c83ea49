"""Fault injection for the sandbox: scripted failures, and Slack's rate limits (on by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.sandbox.rules import RateLimits


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


class Faults:
    def __init__(self, rate_limits: bool = True) -> None:
        self.scripted: list[Fault] = []
        self.rate_limits: RateLimits | None = RateLimits() if rate_limits else None

    def add(self, fault: Fault) -> None:
        self.scripted.append(fault)

    def clear(self) -> None:
        """Forget the scripted faults (Slack's rate limits stay as they are)."""
        self.scripted.clear()

    def next_for(self, method: str) -> Fault | None:
        """The scripted fault that answers this call, consuming one of its `times`."""
        for fault in self.scripted:
            if fault.matches(method):
                fault.times -= 1
                return fault
        return None

    def throttle(self, method: str, channel: Any) -> int | None:
        """Retry-After seconds when Slack's rate limits refuse this call, else None."""
        if self.rate_limits is None:
            return None
        return self.rate_limits.retry_after(method, channel)
