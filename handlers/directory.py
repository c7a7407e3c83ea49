"""Who is in which department: the config's members and leads, plus Slack user groups."""

from __future__ import annotations

import time

from bot.lib.errors import NotFound
from bot.lib.slack_out import SlackOut
from storage.db import Database
from storage.departments import DepartmentView, all_departments

GROUP_TTL = 60.0


class Directory:
    def __init__(self, db: Database, slack: SlackOut):
        self.db = db
        self.slack = slack
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    async def departments(self) -> dict[str, DepartmentView]:
        async with self.db.transaction() as session:
            return await all_departments(session)

    async def get(self, key: str) -> DepartmentView:
        departments = await self.departments()
        found = departments.get(key.strip().lower())
        if found is None:
            for dept in departments.values():  # also by display name
                if dept.name.casefold() == key.strip().casefold():
                    return dept
            known = ", ".join(departments) or "none configured"
            raise NotFound(f"No department `{key}`. Departments: {known}.")
        return found

    async def members(self, dept: DepartmentView) -> frozenset[str]:
        if not dept.usergroup:
            return dept.members
        cached = self._groups.get(dept.usergroup)
        if cached is None or time.monotonic() - cached[0] > GROUP_TTL:
            users = await self.slack.usergroup_members(dept.usergroup)
            cached = (time.monotonic(), frozenset(users))
            self._groups[dept.usergroup] = cached
        return dept.members | cached[1]

    async def is_member(self, dept: DepartmentView, user: str) -> bool:
        return user in dept.leads or user in await self.members(dept)

    async def departments_of(self, user: str) -> list[DepartmentView]:
        return [d for d in (await self.departments()).values() if await self.is_member(d, user)]

    async def home_of(self, user: str, channel: str | None = None) -> DepartmentView | None:
        """The department someone acts for: the channel's, if they belong to it, else their
        first."""
        mine = await self.departments_of(user)
        for dept in mine:
            if dept.channel_id == channel:
                return dept
        return mine[0] if mine else None

    async def by_channel(self, channel: str) -> DepartmentView | None:
        for dept in (await self.departments()).values():
            if dept.channel_id == channel:
                return dept
        return None
