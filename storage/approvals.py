"""The approvals repository. Takes a session, never commits: the caller's unit of work does."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Approval, Customer, new_id


class Approvals:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def create(
        self,
        *,
        customer: Customer,
        kind: str,
        amount: Decimal | None,
        unit: str | None,
        requested_by: str,
        requester_department: str | None,
        department: str,
        expires_at: datetime,
        created_at: datetime,
        approval_id: uuid.UUID | None = None,
        reason_ct: bytes | None = None,
    ) -> Approval:
        row = Approval(
            id=approval_id or new_id(),
            customer_id=customer.id,
            kind=kind,
            amount=amount,
            unit=unit,
            reason_ct=reason_ct,
            requested_by=requested_by,
            requester_department=requester_department,
            department=department,
            status="pending",
            expires_at=expires_at,
            created_at=created_at,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def get(self, approval_id: uuid.UUID, *, for_update: bool = False) -> Approval | None:
        stmt = select(Approval).where(Approval.id == approval_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def decide(
        self,
        approval: Approval,
        *,
        status: str,
        by: str | None,
        at: datetime,
        reason_ct: bytes | None = None,
    ) -> None:
        """Record the outcome of a request the caller has locked and checked."""
        approval.status = status
        approval.decided_by = by
        approval.decided_at = at
        approval.decision_reason_ct = reason_ct
        await self.session.flush()

    def set_message(self, approval: Approval, channel_id: str, ts: str) -> None:
        approval.channel_id = channel_id
        approval.message_ts = ts

    async def with_customers(
        self, approvals: Iterable[Approval]
    ) -> list[tuple[Approval, Customer | None]]:
        rows = list(approvals)
        ids = {a.customer_id for a in rows}
        customers = {}
        if ids:
            stmt = select(Customer).where(Customer.id.in_(ids))
            customers = {c.id: c for c in (await self.session.execute(stmt)).scalars()}
        return [(a, customers.get(a.customer_id)) for a in rows]

    async def pending_in(self, departments: Iterable[str], limit: int = 50) -> list[Approval]:
        keys = list(departments)
        if not keys:
            return []
        stmt = (
            select(Approval)
            .where(Approval.status == "pending", Approval.department.in_(keys))
            .order_by(Approval.created_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def requested_by(
        self, user: str, *, pending_only: bool = False, limit: int = 20
    ) -> list[Approval]:
        stmt = select(Approval).where(Approval.requested_by == user)
        if pending_only:
            stmt = stmt.where(Approval.status == "pending")
        stmt = stmt.order_by(Approval.created_at.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def due_to_expire(self, now: datetime, limit: int = 100) -> list[uuid.UUID]:
        stmt = (
            select(Approval.id)
            .where(Approval.status == "pending", Approval.expires_at <= now)
            .order_by(Approval.expires_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def unposted(self, older_than: datetime, limit: int = 20) -> list[uuid.UUID]:
        """Pending requests whose channel message was never posted (Slack was down)."""
        stmt = (
            select(Approval.id)
            .where(
                Approval.status == "pending",
                Approval.message_ts.is_(None),
                Approval.created_at <= older_than,
            )
            .order_by(Approval.created_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())
