"""The handoff repository: rows of `handoffs`, their encrypted note and reason, and the queries
the bot needs (one handoff locked for a step, lists, the claim reminders that are due).

Takes a session, never commits: the caller's unit of work does.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .customers import CustomerRecord, Customers
from .models import Customer, Handoff
from .vault import Vault

OPEN = ("requested", "accepted")


@dataclass(frozen=True)
class HandoffQuery:
    """Which open handoffs a list shows: those to `to_departments`, from `from_departments`,
    or requested by or assigned to `user` (any of these matches); all of them with `everyone`.
    An empty query matches none. With `within`, only those sent to or from one of those
    departments (the access model's "party to")."""

    to_departments: Collection[str] = ()
    from_departments: Collection[str] = ()
    user: str | None = None
    everyone: bool = False
    within: Collection[str] = ()


@dataclass
class HandoffRecord:
    """A handoff as people see it: its note and reason decrypted, with its customer."""

    id: uuid.UUID
    customer: CustomerRecord
    from_department: str | None
    to_department: str
    requested_by: str
    status: str
    assignee: str | None
    closed_by: str | None
    note: str | None
    reason: str | None
    context_permalink: str | None
    channel_id: str | None
    message_ts: str | None
    message_permalink: str | None
    requester_channel_id: str | None
    requester_ts: str | None
    created_at: datetime
    updated_at: datetime
    reminders_sent: int


class Handoffs:
    def __init__(self, session: AsyncSession, vault: Vault):
        self.session = session
        self.vault = vault

    async def create(
        self,
        customer: Customer,
        *,
        from_department: str | None,
        to_department: str,
        requested_by: str,
        note: str | None,
        context_permalink: str | None,
        now: datetime,
        claim_deadline: datetime,
    ) -> Handoff:
        handoff = Handoff(
            id=uuid.uuid4(),
            customer_id=customer.id,
            from_department=from_department,
            to_department=to_department,
            requested_by=requested_by,
            context_permalink=context_permalink,
            status="requested",
            claim_deadline=claim_deadline,
            reminders_sent=0,
            created_at=now,
            updated_at=now,
        )
        handoff.note_ct = self.vault.seal(customer, "handoffs", "note", handoff.id, note)
        self.session.add(handoff)
        await self.session.flush()
        return handoff

    def seal_reason(self, customer: Customer, handoff: Handoff, reason: str | None) -> None:
        handoff.reason_ct = self.vault.seal(customer, "handoffs", "reason", handoff.id, reason)

    async def get(self, handoff_id: uuid.UUID, *, for_update: bool = False) -> Handoff | None:
        stmt = select(Handoff).where(Handoff.id == handoff_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def open_to(self, customer_id: uuid.UUID, to_department: str) -> Handoff | None:
        stmt = (
            select(Handoff)
            .where(
                Handoff.customer_id == customer_id,
                Handoff.to_department == to_department,
                Handoff.status.in_(OPEN),
            )
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def customer_of(self, handoff: Handoff, *, for_update: bool = False) -> Customer:
        customer = await Customers(self.session, self.vault).get(
            handoff.customer_id, for_update=for_update
        )
        assert customer is not None  # the foreign key cascades deletes
        return customer

    def read(self, handoff: Handoff, customer: Customer) -> HandoffRecord:
        open_ = self.vault.open
        return HandoffRecord(
            id=handoff.id,
            customer=Customers(self.session, self.vault).read(customer),
            from_department=handoff.from_department,
            to_department=handoff.to_department,
            requested_by=handoff.requested_by,
            status=handoff.status,
            assignee=handoff.assignee,
            closed_by=handoff.closed_by,
            note=open_(customer, "handoffs", "note", handoff.id, handoff.note_ct),
            reason=open_(customer, "handoffs", "reason", handoff.id, handoff.reason_ct),
            context_permalink=handoff.context_permalink,
            channel_id=handoff.channel_id,
            message_ts=handoff.message_ts,
            message_permalink=handoff.message_permalink,
            requester_channel_id=handoff.requester_channel_id,
            requester_ts=handoff.requester_ts,
            created_at=handoff.created_at,
            updated_at=handoff.updated_at,
            reminders_sent=handoff.reminders_sent,
        )

    async def records(self, rows: Iterable[Handoff]) -> list[HandoffRecord]:
        rows = list(rows)
        ids = {r.customer_id for r in rows}
        customers = {
            c.id: c
            for c in (
                await self.session.execute(select(Customer).where(Customer.id.in_(ids)))
            ).scalars()
        }
        return [self.read(r, customers[r.customer_id]) for r in rows if r.customer_id in customers]

    async def listing(self, query: HandoffQuery, *, limit: int = 20) -> tuple[list[Handoff], int]:
        """The open handoffs `query` matches, newest first: (the first `limit`, how many in
        all)."""
        conditions: list[ColumnElement[bool]] = []
        if query.to_departments:
            conditions.append(Handoff.to_department.in_(list(query.to_departments)))
        if query.from_departments:
            conditions.append(Handoff.from_department.in_(list(query.from_departments)))
        if query.user is not None:
            conditions += [Handoff.requested_by == query.user, Handoff.assignee == query.user]
        if not conditions and not query.everyone:
            return [], 0
        where: list[ColumnElement[bool]] = [Handoff.status.in_(OPEN)]
        if conditions:
            where.append(or_(*conditions))
        if query.within:
            party = list(query.within)
            where.append(or_(Handoff.to_department.in_(party), Handoff.from_department.in_(party)))
        total = (
            await self.session.execute(select(func.count()).select_from(Handoff).where(*where))
        ).scalar_one()
        stmt = select(Handoff).where(*where).order_by(Handoff.created_at.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars()), total

    async def customer_named(self, refs: list[str]) -> Customer | None:
        """The first of `refs` (emails, then candidate external ids) that is a customer."""
        customers = Customers(self.session, self.vault)
        for ref in refs:
            if "@" in ref:
                found = await customers.by_ref(ref)
                if found is not None:
                    return found
        ids = [r for r in refs if "@" not in r]
        if not ids:
            return None
        stmt = select(Customer).where(Customer.external_id.in_(ids), Customer.erased_at.is_(None))
        by_id = {c.external_id: c for c in (await self.session.execute(stmt)).scalars()}
        return next((by_id[r] for r in ids if r in by_id), None)

    async def unposted(self, older_than: datetime, limit: int = 20) -> list[uuid.UUID]:
        """Requested handoffs whose channel message is not on record (the process stopped, or
        the database failed, between the commit and saving the message's ts)."""
        stmt = (
            select(Handoff.id)
            .where(
                Handoff.status == "requested",
                Handoff.message_ts.is_(None),
                Handoff.created_at <= older_than,
            )
            .order_by(Handoff.created_at)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def due_for_reminder(self, now: datetime, limit: int = 100) -> list[uuid.UUID]:
        """Ids of unclaimed handoffs past their claim deadline still owed a reminder."""
        stmt = (
            select(Handoff.id)
            .where(
                Handoff.status == "requested",
                Handoff.claim_deadline <= now,
                Handoff.reminders_sent < 2,
                Handoff.message_ts.is_not(None),
            )
            .order_by(Handoff.claim_deadline)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())
