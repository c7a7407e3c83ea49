"""Republishing App Homes in the background, for the people who opened theirs.

Decisions:
- Only people who opened their home (app_home_opened) get it republished: the others see a
  fresh one when they open it. The set is kept in memory: after a restart the first opening
  publishes a fresh tab anyway, so nothing shows stale data.
- Republishing is off the path that answers a click: `schedule` only notes who is due and a
  worker publishes in the background, each user once however many changes queued, through
  `SlackOut`, which paces views.publish to its rate-limit tier.
- This module sits below `deps` (which builds one `Homes`) and imports no capability: what
  publishing a home means (handlers.home.publish_home, with the sections of the
  `deps.home_sections` registry) is handed to it as `publish` by handlers.home.register.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.lib.slack_out import SlackError
from handlers.directory import Directory

log = logging.getLogger(__name__)


class Homes:
    """Who opened their App Home, and the worker that republishes the homes due."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.publish: Callable[[str], Awaitable[None]] | None = None  # set by the wiring
        self.opened: set[str] = set()
        self._due: list[tuple[str | None, str]] = []  # (department, requester) changes
        self._worker: asyncio.Task[None] | None = None

    def schedule(self, department_key: str | None, requester: str) -> None:
        """Note that a change touched `requester` and the department's people; returns at
        once (the worker republishes the homes of those who opened theirs)."""
        if not self.opened or self.publish is None:
            return
        self._due.append((department_key, requester))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._due and self.publish is not None:
            changes, self._due = self._due, []
            users: set[str] = set()
            for department_key, requester in changes:
                users |= await self._involved(department_key, requester)
            for user in sorted(users & self.opened):
                try:
                    await self.publish(user)
                except Exception:
                    log.warning("could not refresh the App Home of %s", user, exc_info=True)

    async def _involved(self, department_key: str | None, requester: str) -> set[str]:
        users = {requester}
        dept = (await self.directory.departments()).get(department_key or "")
        if dept is not None:
            try:
                users |= set(await self.directory.members(dept)) | set(dept.leads)
            except SlackError:
                users |= set(dept.members) | set(dept.leads)
        return users

    async def drain(self, within: float) -> None:
        """On stop: let the republishing under way finish, for up to `within` seconds."""
        if self._worker is not None and not self._worker.done():
            _, late = await asyncio.wait({self._worker}, timeout=within)
            for task in late:
                task.cancel()
