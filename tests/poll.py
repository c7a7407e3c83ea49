"""The one way a test waits for something: poll with a deadline, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    within: float = 10.0,
    *,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `check` (sync or async) until it returns something truthy, and return that; at the
    deadline fail with an AssertionError naming `what`."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s ({check})")
        await asyncio.sleep(interval)
