"""Deals and open items (overdue invoices, escalated tickets) as rows, and the pipeline read
from them.

Applied from sync events with the customers' rule: per source, a change older than the last
one applied from that source changes nothing (`source_clock`); a repeated event id never
reaches here (processed_events). Takes a session, never commits.

The pipeline's queries each read one covering index: totals per stage and currency, the
largest open deals per stage (a LIMIT per stage, merged here, rather than one sort of every
open deal), and the deals closed since the start of last month.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, literal, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Customer, Deal, OpenItem, utcnow
from .vault import Vault

OPEN_STAGES = ("qualification", "proposal", "negotiation")
WON, LOST = "closed_won", "closed_lost"
CLOSED_STAGES = (WON, LOST)
STAGES = (*OPEN_STAGES, *CLOSED_STAGES)

# event type -> (item kind, opens it?)
ITEM_EVENTS = {
    "invoice.overdue": ("invoice", True),
    "payment.received": ("invoice", False),
    "ticket.escalated": ("escalation", True),
    "ticket.resolved": ("escalation", False),
}


def _money(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value)).quantize(Decimal("0.01"))


def _newer(clock: dict | None, source: str, occurred_at: datetime) -> bool:
    last = (clock or {}).get(source)
    return last is None or datetime.fromisoformat(last) <= occurred_at


class Deals:
    """Writes for one transaction; remembers the rows it touched, so two events about one deal
    in a batch meet the same row."""

    def __init__(self, session: AsyncSession, vault: Vault) -> None:
        self.session = session
        self.vault = vault
        self._deals: dict[str, Deal | None] = {}
        self._items: dict[tuple[str, str], OpenItem | None] = {}
        self._new: list[Deal | OpenItem] = []  # added by `write`, after their customers

    async def preload(self, events: Iterable[dict[str, Any]]) -> None:
        """Load the deals and items a batch of events is about, one query each (not one per
        event); later look-ups for them are answered from memory."""
        deal_ids, items = set(), set()
        for e in events:
            data = e.get("data") or {}
            if e.get("type") == "deal.stage_changed" and data.get("deal_id") is not None:
                deal_ids.add(str(data["deal_id"])[:128])
            elif e.get("type") in ITEM_EVENTS:
                item_id = str(data.get("invoice_id") or data.get("ticket_id") or "")[:128]
                if item_id:
                    items.add((ITEM_EVENTS[e["type"]][0], item_id))
        deal_ids -= set(self._deals)
        items -= set(self._items)
        if deal_ids:
            rows = await self.session.execute(select(Deal).where(Deal.deal_id.in_(deal_ids)))
            found = {d.deal_id: d for d in rows.scalars()}
            self._deals.update({d: found.get(d) for d in deal_ids})
        for kind in {k for k, _ in items}:
            ids = [i for k, i in items if k == kind]
            stmt = select(OpenItem).where(OpenItem.kind == kind, OpenItem.item_id.in_(ids))
            found_items = {o.item_id: o for o in (await self.session.execute(stmt)).scalars()}
            self._items.update({(kind, i): found_items.get(i) for i in ids})

    async def _deal(self, deal_id: str) -> Deal | None:
        if deal_id not in self._deals:
            self._deals[deal_id] = await self.session.get(Deal, deal_id)
        return self._deals[deal_id]

    async def apply_deal(
        self, customer: Customer, data: dict[str, Any], *, source: str, occurred_at: datetime
    ) -> bool:
        """A deal.stage_changed; False when older than what its source said last."""
        deal_id = str(data["deal_id"])[:128]
        deal = await self._deal(deal_id)
        if deal is None:
            deal = Deal(deal_id=deal_id, customer_id=customer.id, source_clock={})
            self._new.append(deal)
            self._deals[deal_id] = deal
        elif not _newer(deal.source_clock, source, occurred_at):
            return False
        deal.customer_id = customer.id
        deal.stage = data["stage"]
        if "amount" in data:
            deal.amount = _money(data.get("amount"))
        if "currency" in data:
            deal.currency = data.get("currency")
        if data.get("name") and customer.erased_at is None:
            deal.name_ct = self.vault.seal(customer, "deals", "name", deal_id, str(data["name"]))
        deal.closed_at = occurred_at if deal.stage in CLOSED_STAGES else None
        deal.owner_department = customer.owner_department
        deal.owner_slack_user = customer.owner_slack_user
        deal.source_clock = {**(deal.source_clock or {}), source: occurred_at.isoformat()}
        deal.updated_at = utcnow()
        return True

    async def apply_item(
        self,
        customer: Customer,
        kind: str,
        data: dict[str, Any],
        *,
        occurred_at: datetime,
    ) -> bool:
        """Open or close an invoice or escalation; a change older than the row's is ignored."""
        item_kind, opens = ITEM_EVENTS[kind]
        item_id = str(data.get("invoice_id") or data.get("ticket_id") or "")[:128]
        if not item_id:
            return False
        key = (item_kind, item_id)
        if key not in self._items:
            self._items[key] = await self.session.get(OpenItem, key)
        item = self._items[key]
        if item is None:
            item = OpenItem(kind=item_kind, item_id=item_id, customer_id=customer.id)
            self._new.append(item)
            self._items[key] = item
        elif item.occurred_at > occurred_at:
            return False
        item.is_open = opens
        if opens and data.get("amount") is not None:
            item.amount = _money(data.get("amount"))
            item.currency = data.get("currency")
        item.owner_department = customer.owner_department
        item.occurred_at = occurred_at
        return True

    async def write(self) -> None:
        """Insert the new rows (once the customers they refer to are written)."""
        new, self._new = self._new, []
        if new:
            self.session.add_all(new)
            await self.session.flush()

    async def follow_owner(self, customer: Customer) -> None:
        """The customer's owner changed: its deals and open items follow."""
        for model, extra in (
            (Deal, {"owner_slack_user": customer.owner_slack_user}),
            (OpenItem, {}),
        ):
            await self.session.execute(
                update(model)
                .where(model.customer_id == customer.id)
                .values(owner_department=customer.owner_department, **extra)
                .execution_options(synchronize_session=False)
            )


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose deals: everyone's, one department's, or one owner's."""

    department: str | None = None
    owner: str | None = None

    def where(self, model) -> list:
        out = []
        if self.department:
            out.append(model.owner_department == self.department)
        if self.owner is not None and hasattr(model, "owner_slack_user"):
            out.append(model.owner_slack_user == self.owner)
        return out


@dataclass
class Total:
    count: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)  # currency -> sum

    def add(self, count: int, currency: str | None, amount: Decimal | None) -> None:
        self.count += count
        if amount is not None:
            cur = currency or ""
            self.amounts[cur] = self.amounts.get(cur, Decimal(0)) + Decimal(amount)


@dataclass(frozen=True)
class OpenDeal:
    deal_id: str
    customer_id: uuid.UUID
    stage: str
    amount: Decimal | None
    currency: str | None
    name_ct: bytes | None


@dataclass
class Pipeline:
    by_stage: dict[str, Total]
    won: dict[str, Total]  # "this" | "last" month
    lost: dict[str, Total]
    largest: list[OpenDeal]


def month_start(now: datetime, back: int = 0) -> datetime:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(back):
        start = (start - timedelta(days=1)).replace(day=1)
    return start


async def pipeline(
    session: AsyncSession,
    scope: Scope,
    now: datetime,
    *,
    with_values: bool = True,
    largest: int = 5,
) -> Pipeline:
    """Totals by open stage, won and lost this month and last, the largest open deals. Without
    `with_values` no amount is read at all (counts only, no deals listed)."""
    amount = func.sum(Deal.amount) if with_values else None
    cols = [Deal.stage, Deal.currency, func.count()] + ([amount] if with_values else [])
    by_stage = {s: Total() for s in OPEN_STAGES}
    stmt = (
        select(*cols)
        .where(Deal.stage.in_(OPEN_STAGES), *scope.where(Deal))
        .group_by(Deal.stage, Deal.currency)
    )
    for row in await session.execute(stmt):
        by_stage[row[0]].add(row[2], row[1], row[3] if with_values else None)

    this, last = month_start(now), month_start(now, 1)
    month = case((Deal.closed_at >= this, "this"), else_="last")
    stmt = (
        select(Deal.stage, month, Deal.currency, func.count(), *([amount] if with_values else []))
        .where(Deal.closed_at >= last, Deal.closed_at < now + timedelta(days=1))
        .where(Deal.stage.in_(CLOSED_STAGES), *scope.where(Deal))
        .group_by(Deal.stage, month, Deal.currency)
    )
    won = {"this": Total(), "last": Total()}
    lost = {"this": Total(), "last": Total()}
    for row in await session.execute(stmt):
        (won if row[0] == WON else lost)[row[1]].add(
            row[3], row[2], row[4] if with_values else None
        )

    top: list[OpenDeal] = []
    if with_values and largest:
        cols = (
            Deal.deal_id,
            Deal.customer_id,
            Deal.stage,
            Deal.amount,
            Deal.currency,
            Deal.name_ct,
        )
        per_stage = [
            select(*cols)
            .where(Deal.stage == stage, Deal.amount.is_not(None), *scope.where(Deal))
            .order_by(Deal.amount.desc())
            .limit(largest)
            .subquery()
            for stage in OPEN_STAGES
        ]
        stmt = union_all(*(select(*q.c) for q in per_stage))
        top = [OpenDeal(*row) for row in await session.execute(stmt)]
        top.sort(key=lambda d: -(d.amount or 0))
        top = top[:largest]
    return Pipeline(by_stage, won, lost, top)


async def won_by_week(
    session: AsyncSession, scope: Scope, now: datetime, weeks: int = 8, *, with_values: bool = True
) -> list[tuple[datetime, dict[str, Decimal]]]:
    """Won value per week (weeks ending at `now`, oldest first), per currency; without
    `with_values`, the number of deals won (under the currency key "")."""
    start = now - timedelta(weeks=weeks)
    buckets: list[tuple[datetime, dict[str, Decimal]]] = [
        (start + timedelta(weeks=i), {}) for i in range(weeks)
    ]
    stmt = (
        select(Deal.closed_at, Deal.currency, Deal.amount if with_values else literal(1))
        .where(Deal.closed_at >= start, Deal.closed_at <= now, Deal.stage == WON)
        .where(*scope.where(Deal))
    )
    for closed_at, currency, value in await session.execute(stmt):
        i = min(weeks - 1, int((closed_at - start) / timedelta(weeks=1)))
        sums = buckets[i][1]
        cur = (currency or "") if with_values else ""
        sums[cur] = sums.get(cur, Decimal(0)) + Decimal(value or 0)
    return buckets


async def open_items(
    session: AsyncSession, kind: str, department: str | None, *, with_values: bool
) -> Total:
    cols = [OpenItem.currency, func.count()] + ([func.sum(OpenItem.amount)] if with_values else [])
    stmt = select(*cols).where(OpenItem.kind == kind, OpenItem.is_open.is_(True))
    if department:
        stmt = stmt.where(OpenItem.owner_department == department)
    total = Total()
    for row in await session.execute(stmt.group_by(OpenItem.currency)):
        total.add(row[1], row[0], row[2] if with_values else None)
    return total


def open_names(vault: Vault, customers: Iterable[Customer], deals: list[OpenDeal]) -> dict:
    """deal id -> its name (None when it has none or does not decrypt)."""
    by_id = {c.id: c for c in customers}
    names: dict[str, str | None] = {}
    for d in deals:
        customer = by_id.get(d.customer_id)
        try:
            names[d.deal_id] = (
                vault.open(customer, "deals", "name", d.deal_id, d.name_ct) if customer else None
            )
        except Exception:
            names[d.deal_id] = None
    return names
