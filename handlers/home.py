"""The App Home tab: published when a person opens it, and republished after a handoff or
approval of theirs changed (`refresh_homes`) for the people who opened it.

Decisions:
- Only people who opened their home (app_home_opened) get it republished: the others see a
  fresh one when they open it. The set is kept in memory: after a restart the first opening
  publishes a fresh tab anyway, so nothing shows stale data.
- Republishing is off the path that answers a click: `refresh_homes` only notes who is due
  and a worker publishes in the background, each user once however many changes queued,
  through `SlackOut`, which paces views.publish to its rate-limit tier.
"""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks.home import home_view
from bot.lib.slack_out import SlackError
from handlers.deps import Deps

log = logging.getLogger(__name__)


async def publish_home(deps: Deps, user: str) -> None:
    """Build and publish `user`'s home tab. Never raises for a section that fails: the tab
    says what could not be loaded, and the failure is logged."""
    from handlers.approvals import listeners as approvals
    from handlers.handoffs import listeners as handoffs  # they call publish_home too: import late

    problems: list[str] = []
    parts = []
    for name, module in (("handoffs", handoffs), ("approvals", approvals)):
        try:
            parts.append(list(await module.home_section(deps, user)))
        except Exception:
            log.exception("home section %s failed for %s", name, user)
            problems.append(name)
            parts.append([])
    try:
        departments = [d.name for d in await deps.directory.departments_of(user)]
    except SlackError:
        departments = []
    view = home_view(departments, parts[0], parts[1], problems=problems)
    await deps.slack.publish_home(user, view)


async def refresh_homes(deps: Deps, department_key: str | None, requester: str) -> None:
    """After a handoff or approval changed: the App Home of the requester and of the members
    and leads of the department involved, for those who opened it, republished in the
    background (returns at once)."""
    deps.homes.schedule(department_key, requester)


class Homes:
    """Who opened their App Home, and the worker that republishes the homes due."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.opened: set[str] = set()
        self._due: list[tuple[str | None, str]] = []  # (department, requester) changes
        self._worker: asyncio.Task[None] | None = None

    def schedule(self, department_key: str | None, requester: str) -> None:
        if not self.opened:
            return
        self._due.append((department_key, requester))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._due:
            changes, self._due = self._due, []
            users: set[str] = set()
            for department_key, requester in changes:
                users |= await self._involved(department_key, requester)
            for user in sorted(users & self.opened):
                try:
                    await publish_home(self.deps, user)
                except Exception:
                    log.warning("could not refresh the App Home of %s", user, exc_info=True)

    async def _involved(self, department_key: str | None, requester: str) -> set[str]:
        users = {requester}
        dept = (await self.deps.directory.departments()).get(department_key or "")
        if dept is not None:
            try:
                users |= set(await self.deps.directory.members(dept)) | set(dept.leads)
            except SlackError:
                users |= set(dept.members) | set(dept.leads)
        return users

    async def drain(self, within: float) -> None:
        """On stop: let the republishing under way finish, for up to `within` seconds."""
        if self._worker is not None and not self._worker.done():
            _, late = await asyncio.wait({self._worker}, timeout=within)
            for task in late:
                task.cancel()


def register(app: AsyncApp, deps: Deps) -> None:
    async def ack_only(ack):
        await ack()

    async def opened(event):
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        deps.homes.opened.add(event["user"])
        try:
            await publish_home(deps, event["user"])
        except SlackError as exc:
            log.warning("home tab of %s not published: %s", event["user"], exc.kind)

    app.event("app_home_opened")(ack=ack_only, lazy=[opened])
