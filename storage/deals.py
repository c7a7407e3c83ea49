"""Deals and open items (overdue invoices, escalated tickets) as rows, and the pipeline read
from them.

Applied from sync events with the customers' rule: per source, a change older than the last
one applied from that source changes nothing (`source_clock`); a repeated event id never
reaches here (processed_events). Takes a session, never commits.

The pipeline's totals are kept as they change (`deal_totals`: count and sum per owner, stage,
currency and month closed), so `/crm pipeline` reads a few dozen rows whatever the number of
deals: each deal change adds its new contribution and takes back its old one, in the same
transaction (the batch's changes summed first, then one upsert per total row, in key order so
two replicas cannot deadlock). The largest open deals come from one covering index (a LIMIT
per stage, merged here), the won value per week from another. `rebuild_totals` recomputes the
totals from the deals (after a bulk load).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from .models import Customer, Deal, DealTotal, OpenItem, utcnow
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


TotalKey = tuple[str, str, str, str, str]  # department, owner, stage, currency, month


def total_key(deal: Deal) -> TotalKey:
    month = f"{deal.closed_at:%Y-%m}" if deal.closed_at is not None else ""
    return (
        deal.owner_department or "",
        deal.owner_slack_user or "",
        deal.stage,
        deal.currency or "",
        month,
    )


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
        self._deltas: dict[TotalKey, list] = {}  # total row -> [count, amount] to add

    def _count(self, deal: Deal, sign: int) -> None:
        """Add (`sign` 1) or take back (-1) a deal's contribution to its total row."""
        delta = self._deltas.setdefault(total_key(deal), [0, Decimal(0)])
        delta[0] += sign
        delta[1] += sign * (deal.amount or Decimal(0))

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
        else:
            self._count(deal, -1)
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
        self._count(deal, 1)
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

    async def write(self, owner_changed: Iterable[Customer] = ()) -> None:
        """Insert the new rows (once the customers they refer to are written), move the deals
        and items of customers whose owner changed, then add up the totals."""
        new, self._new = self._new, []
        if new:
            self.session.add_all(new)
            await self.session.flush()
        for customer in owner_changed:
            await self._follow_owner(customer)
        await self._write_totals()

    async def _follow_owner(self, customer: Customer) -> None:
        stmt = select(Deal).where(Deal.customer_id == customer.id)
        for deal in (await self.session.execute(stmt)).scalars():
            if (deal.owner_department, deal.owner_slack_user) == (
                customer.owner_department,
                customer.owner_slack_user,
            ):
                continue
            self._count(deal, -1)
            deal.owner_department = customer.owner_department
            deal.owner_slack_user = customer.owner_slack_user
            self._count(deal, 1)
        await self.session.execute(
            update(OpenItem)
            .where(OpenItem.customer_id == customer.id)
            .values(owner_department=customer.owner_department)
            .execution_options(synchronize_session=False)
        )
        await self.session.flush()

    async def _write_totals(self) -> None:
        deltas, self._deltas = self._deltas, {}
        rows = [
            dict(zip(_TOTAL_KEYS, key, strict=True), count=c, amount=a)
            for key, (c, a) in sorted(deltas.items())
            if c or a
        ]
        if not rows:
            return
        insert = (
            pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        )
        stmt = insert(DealTotal)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_TOTAL_KEYS),
            set_={
                "count": DealTotal.count + stmt.excluded.count,
                "amount": DealTotal.amount + stmt.excluded.amount,
            },
        )
        for row in rows:  # one statement each, in key order (no deadlock between replicas)
            await self.session.execute(stmt, row)


_TOTAL_KEYS = ("owner_department", "owner_slack_user", "stage", "currency", "month")


async def rebuild_totals(session: AsyncSession) -> int:
    """Recompute `deal_totals` from the deals (after a bulk load, or to repair); the number of
    total rows."""
    sums: dict[TotalKey, list] = {}
    stmt = select(
        Deal.owner_department,
        Deal.owner_slack_user,
        Deal.stage,
        Deal.currency,
        Deal.closed_at,
        Deal.amount,
    )
    for dept, owner, stage, currency, closed_at, amount in await session.execute(stmt):
        month = f"{closed_at:%Y-%m}" if closed_at is not None else ""
        total = sums.setdefault((dept or "", owner or "", stage, currency or "", month), [0, 0])
        total[0] += 1
        total[1] += amount or 0
    await session.execute(DealTotal.__table__.delete())
    rows = [
        dict(zip(_TOTAL_KEYS, key, strict=True), count=c, amount=a)
        for key, (c, a) in sorted(sums.items())
    ]
    if rows:
        await session.execute(DealTotal.__table__.insert(), rows)
    return len(rows)


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose deals: everyone's, one department's, or one owner's."""

    department: str | None = None
    owner: str | None = None

    def where_total(self) -> list:
        out = []
        if self.department:
            out.append(DealTotal.owner_department == self.department)
        if self.owner is not None:
            out.append(DealTotal.owner_slack_user == self.owner)
        return out

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
        if amount is not None and count:
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
    amount = func.sum(DealTotal.amount)
    n = func.sum(DealTotal.count)
    by_stage = {s: Total() for s in OPEN_STAGES}
    stmt = (
        select(DealTotal.stage, DealTotal.currency, n, amount)
        .where(DealTotal.month == "", DealTotal.stage.in_(OPEN_STAGES), *scope.where_total())
        .group_by(DealTotal.stage, DealTotal.currency)
    )
    for stage, currency, count, worth in await session.execute(stmt):
        by_stage[stage].add(int(count or 0), currency, worth if with_values else None)

    this, last = f"{month_start(now):%Y-%m}", f"{month_start(now, 1):%Y-%m}"
    closed = (
        select(DealTotal.stage, DealTotal.month, DealTotal.currency, n, amount)
        .where(DealTotal.month.in_((this, last)), DealTotal.stage.in_(CLOSED_STAGES))
        .where(*scope.where_total())
        .group_by(DealTotal.stage, DealTotal.month, DealTotal.currency)
    )
    won = {"this": Total(), "last": Total()}
    lost = {"this": Total(), "last": Total()}
    for stage, month, currency, count, worth in await session.execute(closed):
        which = "this" if month == this else "last"
        (won if stage == WON else lost)[which].add(
            int(count or 0), currency, worth if with_values else None
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
        largest_per_stage = union_all(*(select(*q.c) for q in per_stage))
        top = [OpenDeal(*row) for row in await session.execute(largest_per_stage)]
        top.sort(key=lambda d: -(d.amount or 0))
        top = top[:largest]
    return Pipeline(by_stage, won, lost, top)


async def won_by_week(
    session: AsyncSession, scope: Scope, now: datetime, weeks: int = 8, *, with_values: bool = True
) -> list[tuple[datetime, dict[str, Decimal]]]:
    """Won value per week (weeks ending at `now`, oldest first), per currency; without
    `with_values`, the number of deals won (under the currency key ""). Summed by the
    database in one query over the covering index (stage, closed_at, amount, currency)."""
    start = now - timedelta(weeks=weeks)
    bounds = [start + timedelta(weeks=i + 1) for i in range(weeks)]
    week = case(*((Deal.closed_at < b, i) for i, b in enumerate(bounds[:-1])), else_=weeks - 1)
    value = func.sum(Deal.amount) if with_values else func.count()
    stmt = (
        select(week, Deal.currency if with_values else literal(""), value)
        .where(Deal.stage == WON, Deal.closed_at >= start, Deal.closed_at <= now)
        .where(*scope.where(Deal))
        .group_by(week, Deal.currency if with_values else literal(""))
    )
    buckets: list[tuple[datetime, dict[str, Decimal]]] = [
        (start + timedelta(weeks=i), {}) for i in range(weeks)
    ]
    for i, currency, total in await session.execute(stmt):
        sums = buckets[int(i)][1]
        sums[currency or ""] = sums.get(currency or "", Decimal(0)) + Decimal(total or 0)
    return buckets


async def open_items(
    session: AsyncSession, kind: str, department: str | None, *, with_values: bool
) -> Total:
    cols: list[ColumnElement[Any] | QueryableAttribute[Any]] = [OpenItem.currency, func.count()]
    if with_values:
        cols.append(func.sum(OpenItem.amount))
    stmt = select(*cols).where(OpenItem.kind == kind, OpenItem.is_open.is_(True))
    if department:
        stmt = stmt.where(OpenItem.owner_department == department)
    total = Total()
    for row in await session.execute(stmt.group_by(OpenItem.currency)):
        currency, count, *amount = tuple(row)  # the amount only with values
        total.add(count, currency, amount[0] if with_values else None)
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
