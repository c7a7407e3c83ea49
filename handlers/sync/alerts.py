"""Which channels hear about a sync event, how, and when: plain functions over plain data.

- `rules_for(config)`: the `[[alerts]]` rules, or `DEFAULT_RULES` when none are configured.
- `route(event, rules, ...)`: one `Route` per department that cares, with its placement
  (the customer's thread, or top-level) and whether a thread reply is also broadcast.
- `by_channel(routes, channels)`: one `ChannelRoute` per channel (two departments sharing a
  channel get one alert there).
- `due_at` / `is_due`: the coalescing window per customer and channel.
- `batches(pending)`: how the pending alerts of one customer in one channel become messages.
- `summary(event)`: the one-line text of an event (timeline entry and alert).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.lib.config import AlertRule

THREAD, TOP_LEVEL = "thread", "top_level"

DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(on="deal.stage_changed", when={"stage": "closed_won"}, notify=("finance", "service")),
    AlertRule(on="ticket.escalated", notify=("sales", "service")),
    AlertRule(on="invoice.overdue", notify=("sales", "finance")),
    AlertRule(on="lead.qualified", notify=("sales",)),
)


@dataclass(frozen=True)
class Route:
    department: str
    placement: str = THREAD  # THREAD or TOP_LEVEL
    broadcast: bool = False  # a thread reply also shown in the channel


@dataclass(frozen=True)
class ChannelRoute:
    channel: str
    placement: str = THREAD
    broadcast: bool = False


def rules_for(configured: Sequence[AlertRule]) -> tuple[AlertRule, ...]:
    """The configured rules; the defaults only when there are none at all."""
    return tuple(configured) or DEFAULT_RULES


def _lookup(event: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """`customer.tier` / `data.stage` explicitly; a bare key in data first, then customer."""
    data = event.get("data") or {}
    customer = event.get("customer") or {}
    head, _, rest = key.partition(".")
    if rest and head in ("data", "customer"):
        scope = data if head == "data" else customer
        return (rest in scope, scope.get(rest))
    if key in data:
        return True, data[key]
    if key in customer:
        return True, customer[key]
    return False, None


def _equal(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, list | tuple):
        return any(_equal(actual, w) for w in wanted)
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return actual is wanted
    if isinstance(wanted, int | float) and isinstance(actual, int | float):
        return float(actual) == float(wanted)
    return actual == wanted


def matches(rule: AlertRule, event: Mapping[str, Any]) -> bool:
    """`on` is an event type or a glob (`ticket.*`); every `when` entry must equal (or, for a
    list, be one of) the event's value."""
    if not fnmatch.fnmatchcase(str(event.get("type", "")), rule.on):
        return False
    for key, wanted in rule.when.items():
        present, actual = _lookup(event, key)
        if not present or not _equal(actual, wanted):
            return False
    return True


def _amount(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def urgent(event: Mapping[str, Any], broadcast_overdue_over: float) -> bool:
    """Urgent tickets, and overdue invoices over the threshold, are broadcast by default."""
    data = event.get("data") or {}
    kind = str(event.get("type", ""))
    if kind.startswith("ticket.") and kind != "ticket.resolved":
        return data.get("priority") == "urgent"
    if kind == "invoice.overdue":
        amount = _amount(data.get("amount"))
        return amount is not None and amount > Decimal(str(broadcast_overdue_over))
    return False


def route(
    event: Mapping[str, Any],
    rules: Iterable[AlertRule],
    departments: Iterable[str],
    broadcast_overdue_over: float,
) -> list[Route]:
    """One route per department that cares, in the order rules name them. A department named by
    several matching rules gets one alert: top-level if any rule says so, broadcast if any
    does. Departments that are not configured are left out."""
    known = set(departments)
    merged: dict[str, Route] = {}
    for rule in rules:
        if not matches(rule, event):
            continue
        broadcast = rule.broadcast
        if broadcast is None:
            broadcast = urgent(event, broadcast_overdue_over)
        for dept in rule.notify:
            if dept not in known:
                continue
            seen = merged.get(dept)
            placement: str = rule.placement
            loud = bool(broadcast)
            if seen is not None:
                placement = TOP_LEVEL if TOP_LEVEL in (seen.placement, placement) else THREAD
                loud = loud or seen.broadcast
            merged[dept] = Route(dept, placement, loud)
    return list(merged.values())


def by_channel(routes: Iterable[Route], channels: Mapping[str, str]) -> list[ChannelRoute]:
    """Routes as channels (department key -> channel id); one per channel, flags merged."""
    out: dict[str, ChannelRoute] = {}
    for r in routes:
        channel = channels.get(r.department)
        if not channel:
            continue
        seen = out.get(channel)
        if seen is None:
            out[channel] = ChannelRoute(channel, r.placement, r.broadcast)
        else:
            placement = TOP_LEVEL if TOP_LEVEL in (seen.placement, r.placement) else THREAD
            out[channel] = ChannelRoute(channel, placement, seen.broadcast or r.broadcast)
    return list(out.values())


# --- coalescing -----------------------------------------------------------------------------


def due_at(last_alert_at: datetime | None, window: float) -> datetime | None:
    """When the next alert message may be posted in a customer's thread in a channel: at once
    (None) when nothing was posted there yet, else one window after the last post."""
    if last_alert_at is None or window <= 0:
        return None
    return last_alert_at + timedelta(seconds=window)


def is_due(last_alert_at: datetime | None, now: datetime, window: float) -> bool:
    when = due_at(last_alert_at, window)
    return when is None or now >= when


@dataclass(frozen=True)
class Pending:
    """One alert waiting to be posted (a row of the delivery ledger, decrypted)."""

    key: tuple[str, str]  # (event id, channel id)
    line: str
    placement: str = THREAD
    broadcast: bool = False
    tried: Tried | None = None  # the delivery round that set out to post it, if one did
    created: datetime | None = None  # when the event was applied (its alert's age)


@dataclass(frozen=True)
class Tried:
    round_id: str
    at: datetime


@dataclass(frozen=True)
class Batch:
    """Alerts posted as one message: a thread reply (broadcast if any of them asks) or one
    top-level message."""

    placement: str
    broadcast: bool
    items: tuple[Pending, ...]

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [p.key for p in self.items]


def batches(pending: Sequence[Pending], coalesce: bool = True) -> list[Batch]:
    """Every alert exactly once: the thread ones in one reply, the top-level ones in one
    top-level message, oldest first within each; without `coalesce`, one message each."""
    if not coalesce:
        return [Batch(p.placement, p.broadcast, (p,)) for p in pending]
    out = []
    for placement in (THREAD, TOP_LEVEL):
        items = tuple(p for p in pending if p.placement == placement)
        if items:
            out.append(Batch(placement, any(p.broadcast for p in items), items))
    return out


# --- text -----------------------------------------------------------------------------------


def _money(amount: Any, currency: Any) -> str:
    value = _amount(amount)
    if value is None:
        return ""
    return f"{value:,.2f}" + (f" {currency}" if currency else "")


def _human(value: Any) -> str:
    return str(value).replace("_", " ") if value is not None else "-"


def summary(event: Mapping[str, Any]) -> str:
    """One line about what happened (plain text; it may hold personal data, so it is stored
    sealed and never logged)."""
    kind = str(event.get("type", ""))
    d = event.get("data") or {}
    if kind == "lead.qualified":
        return f"Lead qualified: campaign {d.get('campaign')}, score {d.get('score')}"
    if kind == "deal.stage_changed":
        name = f" {d['name']}" if d.get("name") else ""
        money = _money(d.get("amount"), d.get("currency"))
        before = f" (was {_human(d['previous_stage'])})" if d.get("previous_stage") else ""
        text = f"Deal{name} [{d.get('deal_id')}] moved to {_human(d.get('stage'))}{before}"
        return text + (f", {money}" if money else "")
    if kind.startswith("ticket."):
        verb = kind.split(".", 1)[1]
        return (
            f"Ticket [{d.get('ticket_id')}] {verb} ({d.get('priority')} priority): "
            f"{d.get('subject')}"
        )
    if kind == "invoice.overdue":
        days = d.get("days_overdue")
        unit = "day" if days == 1 else "days"
        money = _money(d.get("amount"), d.get("currency"))
        return f"Invoice [{d.get('invoice_id')}] overdue by {days} {unit}: {money}"
    if kind == "payment.received":
        money = _money(d.get("amount"), d.get("currency"))
        return f"Payment received for invoice [{d.get('invoice_id')}]: {money}"
    if kind == "customer.upserted":
        fields = sorted(k for k in (event.get("customer") or {}) if k != "external_id")
        return "Record updated" + (f": {', '.join(fields)}" if fields else "")
    if kind == "customer.deleted":
        return "Record erased at the source's request"
    return kind
