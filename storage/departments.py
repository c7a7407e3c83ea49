"""Departments and their members, loaded from CRM_CONFIG and kept in the shared database."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Department, DepartmentMember


@dataclass(frozen=True)
class DepartmentView:
    key: str
    name: str
    channel_id: str
    usergroup: str | None
    approval_limit: Decimal | None
    members: frozenset[str]
    leads: frozenset[str]


# PostgreSQL advisory lock taken while the tables are made to match the config.
CONFIG_LOCK = 0x63726D_6465707473  # "crm" "depts"


async def sync_from_config(session: AsyncSession, departments) -> None:
    """Make the table match the config; a channel linked with `/crm dept link` is kept.
    Replicas starting together take turns (on SQLite, BEGIN IMMEDIATE does that already),
    so none inserts a row another is inserting at that moment."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CONFIG_LOCK})
    existing = {d.key: d for d in (await session.execute(select(Department))).scalars()}
    for key, dept in departments.items():
        row = existing.get(key)
        if row is None:
            row = Department(key=key, channel_id=dept.channel)
            session.add(row)
        elif row.channel_linked_by is None:
            row.channel_id = dept.channel
        row.name = dept.name
        row.usergroup = dept.usergroup
        limit = dept.approval_limit
        row.approval_limit = Decimal(str(limit)) if limit is not None else None
    await session.flush()
    await session.execute(delete(DepartmentMember))
    for key, dept in departments.items():
        for user in dict.fromkeys([*dept.members, *dept.leads]):
            session.add(
                DepartmentMember(department_key=key, slack_user_id=user, is_lead=user in dept.leads)
            )
    await session.flush()


async def all_departments(session: AsyncSession) -> dict[str, DepartmentView]:
    rows = (await session.execute(select(Department).order_by(Department.key))).scalars().all()
    members = (await session.execute(select(DepartmentMember))).scalars().all()
    out = {}
    for d in rows:
        mine = [m for m in members if m.department_key == d.key]
        out[d.key] = DepartmentView(
            key=d.key,
            name=d.name,
            channel_id=d.channel_id,
            usergroup=d.usergroup,
            approval_limit=d.approval_limit,
            members=frozenset(m.slack_user_id for m in mine),
            leads=frozenset(m.slack_user_id for m in mine if m.is_lead),
        )
    return out


async def link_channel(session: AsyncSession, key: str, channel_id: str, user: str) -> bool:
    row = await session.get(Department, key)
    if row is None:
        return False
    row.channel_id = channel_id
    row.channel_linked_by = user
    await session.flush()
    return True
