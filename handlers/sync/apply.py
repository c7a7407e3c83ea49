"""RabbitMQ sync: apply the systems of record's events to the shared records, then alert.

For each message (`handle(event, attempt)`, called by bot/broker's Consumer with the body
parsed as a JSON object, one customer's events in arrival order):

1. validate against `crm.sync/1` and what storage can hold (`InvalidEvent` -> dead-lettered
   at once with the reason); events from our own outbox (`source` = `crm-bot`) are ignored;
2. in ONE transaction (shared with the other customers' events waiting at that moment: a
   group commit; an event that fails it is then applied alone, so only it is retried):
   skip if the event id was processed (a duplicate); upsert the customer
   with the per-source `occurred_at` rule (or erase on `customer.deleted`), add a timeline
   entry (summary sealed under the customer's key), write one `pending` row per alert channel
   in the delivery ledger, mark the customer's shared cards stale when the change shows on
   them, record the event id as processed;
3. after the commit: start posting the pending alerts and updating the stale cards in place
   (handlers/sync/delivery.py: the ledger and the stale marks are an outbox toward Slack, so
   the message is acknowledged without waiting for Slack, and the flush job does later what
   Slack could not take now).

Decisions where the contract is silent:

- Which events create a customer: `customer.upserted` and `lead.qualified` always, and any
  other type whose `customer` carries a name or an email (the helpdesk often knows a customer
  first), from those fields, with its source clock as for any upsert. An event about an
  unknown customer with neither creates a bare record (the external id only, and no source
  clock, so the record's own upsert applies whatever its time) and is applied to it at once:
  its timeline entry, deal or open item waits there for the record to arrive, and its alert
  names the external id ("a customer not in the shared records yet"), instead of the event
  being retried and dead-lettered while sales and service never hear of it. An erased
  customer stays erased: any type but `customer.upserted` is `InvalidEvent` at once.
- Deals and open items (storage/deals.py): `deal.stage_changed` keeps the deal as a row, with
  the deal's own per-source clock; `invoice.overdue`/`payment.received` and
  `ticket.escalated`/`ticket.resolved` open and close an item the digests count. When the
  customer's owner changes, its deals and items follow.
- `customer.deleted` always erases, whatever its `occurred_at` (an erasure request wins over an
  update); for an unknown customer it leaves a tombstone (an erased record whose source clock
  refuses the older upserts still in flight). Its pending alerts are dropped, not posted.
- A stale event (older than the last one applied from its source) changes no field, but is
  still a fact: its timeline entry is kept (dated) and its alerts are posted. It counts as
  `stale` instead of `applied`.
- `duplicate` counts events whose id was processed before, on their first delivery (a second
  publish, a redelivery after a lost ack); a retry of our own (attempt > 1) finishing the
  Slack side of an applied event is not a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import fastjsonschema
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from bot.lib import metrics
from handlers.sync import alerts
from handlers.sync.delivery import Delivery, settle
from storage import shared_cards
from storage import sync_ledger as ledger
from storage.customer_fields import NotStorable, check_storable
from storage.customers import Customers
from storage.deals import ITEM_EVENTS, Deals
from storage.departments import all_departments

if TYPE_CHECKING:
    from handlers.deps import Deps
    from storage.models import Customer

log = logging.getLogger(__name__)

OWN_SOURCE = "crm-bot"
CREATING_TYPES = frozenset({"customer.upserted", "lead.qualified"})
NOT_YET_SHARED = "a customer not in the shared records yet"
OWNER_FIELDS = frozenset({"owner_department", "owner_slack_user"})
# What a shared (redacted) card shows: a change to any of these updates the cards in place.
CARD_FIELDS = frozenset(
    {"name", "company", "tier", "lifecycle_stage", "owner_department", "owner_slack_user"}
)
APPLIED, STALE, DUPLICATE = "applied", "stale", "duplicate"
MAX_BATCH = 100  # events applied in one transaction at most


class InvalidEvent(Exception):
    """The message can never be applied: dead-letter it at once; the message is the reason."""


class UnknownCustomer(Exception):
    """The event is about a customer not known (yet): retried, then dead-lettered."""


# --- parsing and validation -----------------------------------------------------------------

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(text: object) -> datetime:
    """An RFC 3339 date-time with its offset; ValueError otherwise (also for a non-string:
    it checks JSON values of any type)."""
    if not isinstance(text, str) or not RFC3339.match(text):
        raise ValueError("not an RFC 3339 date-time")
    value = datetime.fromisoformat(text.upper().replace(" ", "T").replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no UTC offset")
    return value


def _is_time(value: object) -> bool:
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or _is_time(value)


def _schema() -> dict[str, Any]:
    text = resources.files("bot").joinpath("contracts/sync-event.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def validator() -> Draft7Validator:
    """The reference validator: it names what is wrong (`_reason`)."""
    schema = _schema()
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=_formats)


@cache
def fast_validator():
    """The same schema compiled to Python code (fastjsonschema): about 20x quicker, so every
    event is checked by it; only an event it refuses goes to `validator` for the reason."""
    return fastjsonschema.compile(_schema(), formats={"date-time": _is_time}, use_default=False)


def _reason(error: ValidationError) -> str:
    """Why an event fails the schema, naming the field and the rule, never the value (it may be
    personal data, and the reason travels in a header and reaches operators' screens)."""
    where = ".".join(str(p) for p in error.absolute_path) or "event"
    rule, wanted = error.validator, error.validator_value
    if rule == "required":
        return f"schema: {where}: {error.message}"
    if rule in ("enum", "const"):
        options = wanted if isinstance(wanted, list) else [wanted]
        return f"schema: {where}: must be one of {', '.join(map(str, options))}"[:300]
    if rule == "type":
        return f"schema: {where}: must be of type {wanted}"
    if rule == "format":
        return f"schema: {where}: not a valid {wanted}"
    if rule in ("maxLength", "minLength", "minimum", "maximum", "pattern"):
        return f"schema: {where}: fails {rule} {wanted}"
    return f"schema: {where}: fails {rule}"


def validate_event(event: dict[str, Any]) -> dict[str, Any]:
    """`event` when it is valid per `crm.sync/1` and storable (storage/customer_fields
    `check_storable`: no NUL or lone surrogate, numbers within their columns); InvalidEvent
    with the reason otherwise, so it is dead-lettered on its first attempt instead of failing
    five transactions as if the database were at fault."""
    try:
        fast_validator()(event)
    except fastjsonschema.JsonSchemaValueException:
        error = best_match(validator().iter_errors(event))
        if error is not None:
            raise InvalidEvent(_reason(error)) from None
    try:
        check_storable(event)
    except NotStorable as exc:
        raise InvalidEvent(f"not storable: {exc}") from None
    return event


# --- applying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    outcome: str  # applied | stale | duplicate
    customer_id: uuid.UUID | None = None
    alerts: bool = False  # there may be pending alerts to post
    cards: bool = False  # shared cards to update


class Sync:
    """The consumer's callback and the alert-flush job share one instance per Deps."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.delivery = Delivery(deps)
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[Applied]]] = []
        self._applier: asyncio.Task[None] | None = None

    @property
    def rules(self):
        return alerts.rules_for(self.deps.config.alerts)

    async def handle(self, event: dict[str, Any], attempt: int) -> None:
        validate_event(event)
        if event["source"] == OWN_SOURCE:
            metrics.events_total.labels("ignored").inc()
            return
        applied = await self.apply(event)
        if applied.outcome != DUPLICATE:
            metrics.events_total.labels(applied.outcome).inc()
        elif attempt == 1:
            metrics.events_total.labels(DUPLICATE).inc()
        log.debug("event %s (%s): %s", event["id"], event["type"], applied.outcome)
        if applied.customer_id is None:
            return
        if applied.alerts:
            # The ledger rows are committed: the message can be acknowledged now, and the
            # delivery worker posts at Slack's pace (what it cannot post now, the flush job
            # posts later), so a slow or failing Slack never holds up the consumer.
            self.delivery.start(applied.customer_id)
        if applied.cards:
            self.delivery.start_cards(applied.customer_id)

    async def apply(self, event: dict[str, Any]) -> Applied:
        """Apply an event. Events waiting at the same time (other customers': one customer's
        are serialised by the consumer) share one transaction: a group commit."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._applier is None or self._applier.done():
            self._applier = asyncio.get_running_loop().create_task(self._apply_waiting())
        return await future

    async def _apply_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:MAX_BATCH]
            del self._waiting[:MAX_BATCH]
            try:
                results = await self._apply_batch([e for e, _ in batch])
            except asyncio.CancelledError:
                settle([f for _, f in batch], RuntimeError("stopped while applying"))
                raise
            except Exception:
                # Something failed the whole transaction (the database, or one event): apply
                # one by one, so only the culprit fails (and is retried by the broker).
                results = []
                for event, _ in batch:
                    try:
                        results.append((await self._apply_batch([event]))[0])
                    except Exception as exc:
                        results.append(exc)
            for (_, future), result in zip(batch, results, strict=True):
                settle([future], result)

    async def _apply_batch(self, events: list[dict[str, Any]]) -> list[Applied | Exception]:
        results: list[Applied | Exception] = []
        async with self.deps.db.transaction() as session:
            # One query each for what the batch needs to know first (processed ids, its
            # customers, locked, and which of them have shared cards), not a few per event.
            done = await ledger.processed_among(session, [e["id"] for e in events])
            customers = Customers(session, self.deps.vault, batch=True)
            await customers.preload([e["customer"]["external_id"] for e in events])
            with_cards = await shared_cards.customers_with_cards(
                session, [c.id for c in customers.preloaded()]
            )
            deals = Deals(session, self.deps.vault)
            await deals.preload(events)
            batch = _Batch(session, customers, ledger.Writes(self.deps.vault), with_cards, deals)
            # The batch's rows are written together at its end (an executemany per table),
            # not statement by statement.
            with session.no_autoflush:
                for event in events:
                    try:
                        results.append(await self._apply_one(batch, event, event["id"] in done))
                    except (InvalidEvent, UnknownCustomer) as exc:
                        results.append(exc)
            await customers.write_batch()
            await batch.deals.write(batch.owner_changed.values())
            await batch.writes.write(session)
            await shared_cards.mark_stale(session, batch.stale_cards)
        return results

    async def _apply_one(self, batch: _Batch, event: dict[str, Any], done: bool) -> Applied:
        """Apply one event in the batch's transaction. InvalidEvent and UnknownCustomer are
        raised before anything is written, so the other events of a batch are unaffected."""
        customers = batch.customers
        event_id, kind = event["id"], event["type"]
        external_id = event["customer"]["external_id"]
        source, occurred_at = event["source"], parse_time(event["occurred_at"])
        if done:
            return await self._already_done(batch.session, customers, external_id)
        existing = await customers.by_external_id(external_id, for_update=True)
        if kind == "customer.deleted":
            customer = await self._erase(customers, existing, external_id, source, occurred_at)
            outcome, changed = APPLIED, set(CARD_FIELDS)
        else:
            erased = existing is not None and existing.erased_at is not None
            if erased and kind != "customer.upserted":
                raise InvalidEvent(f"customer {external_id!r} was erased; {kind} refused")
            fields = {k: v for k, v in event["customer"].items() if k != "external_id"}
            unshared = existing is None and not _creates(kind, fields)
            result = await customers.upsert(
                external_id, fields, source=source, occurred_at=occurred_at
            )
            customer = result.customer
            if unshared:  # its own record, when it comes, applies whatever its time
                customer.source_clock = {}
            outcome = APPLIED if result.applied else STALE
            changed = result.changed if result.applied and not result.created else set()
            if changed & OWNER_FIELDS:
                batch.owner_changed[customer.id] = customer
            await self._apply_business(batch, customer, event, source, occurred_at)
        summary = alerts.summary(event)
        batch.writes.add_timeline(
            customer,
            kind=kind,
            source=source,
            occurred_at=occurred_at,
            event_id=event_id,
            summary=summary,
        )
        line = summary
        if unknown_yet(customer):
            line = f"{summary} (customer {external_id}: {NOT_YET_SHARED})"
        routed = await self._add_alerts(batch, customer, event, line)
        batch.writes.mark_processed(event_id, kind, outcome)
        cards = bool(changed & CARD_FIELDS) and customer.id in batch.with_cards
        if cards:
            batch.stale_cards.add(customer.id)
        return Applied(outcome, customer.id, alerts=routed, cards=cards)

    async def _apply_business(
        self,
        batch: _Batch,
        customer: Customer,
        event: dict[str, Any],
        source: str,
        occurred_at: datetime,
    ) -> None:
        """The deal or open item an event is about, as its row (storage/deals.py)."""
        kind, data = event["type"], event.get("data") or {}
        if kind == "deal.stage_changed":
            await batch.deals.apply_deal(customer, data, source=source, occurred_at=occurred_at)
        elif kind in ITEM_EVENTS:
            await batch.deals.apply_item(customer, kind, data, occurred_at=occurred_at)

    async def _already_done(self, session, customers: Customers, external_id: str) -> Applied:
        """A processed event: report what the Slack side may still owe (a crash, or a failed
        post, between the commit and the ack)."""
        customer = await customers.by_external_id(external_id)
        if customer is None:
            return Applied(DUPLICATE)
        pending = await ledger.has_pending(session, customer.id)
        cards = any(c.stale for c in await shared_cards.for_customer(session, customer.id))
        return Applied(DUPLICATE, customer.id, alerts=pending, cards=cards)

    async def _erase(
        self,
        customers: Customers,
        existing: Customer | None,
        external_id: str,
        source: str,
        occurred_at: datetime,
    ) -> Customer:
        if existing is None:  # a tombstone, so older upserts from this source stay out
            existing = (
                await customers.upsert(external_id, {}, source=source, occurred_at=occurred_at)
            ).customer
        last = (existing.source_clock or {}).get(source)
        stamp = max(occurred_at, parse_time_or(last, occurred_at))
        await customers.erase(existing, occurred_at=stamp, source=source)
        return existing

    async def _add_alerts(
        self, batch: _Batch, customer: Customer, event: dict[str, Any], line: str
    ) -> bool:
        """A pending ledger row per channel that cares; False when none does."""
        if customer.erased_at is not None:
            return False
        sync = self.deps.config.sync
        routes = alerts.route(
            event, self.rules, self.deps.config.departments, sync.broadcast_overdue_over
        )
        if not routes:
            return False
        if batch.channels is None:
            departments = await all_departments(batch.session)
            batch.channels = {key: d.channel_id for key, d in departments.items()}
        added = False
        for target in alerts.by_channel(routes, batch.channels):
            batch.writes.add_alert(
                customer,
                event_id=event["id"],
                channel_id=target.channel,
                line=line,
                placement=target.placement,
                broadcast=target.broadcast,
            )
            added = True
        return added


@dataclass
class _Batch:
    """What the events of one transaction share."""

    session: Any
    customers: Customers
    writes: ledger.Writes
    with_cards: set[uuid.UUID]  # the batch's customers that have shared cards
    deals: Deals
    channels: dict[str, str] | None = None  # department -> channel, loaded when first needed
    stale_cards: set[uuid.UUID] = field(default_factory=set)  # whose cards a change shows on
    owner_changed: dict[uuid.UUID, Customer] = field(default_factory=dict)


def _creates(kind: str, fields: dict[str, Any]) -> bool:
    """Whether an event about an unknown customer brings the customer's record with it."""
    return kind in CREATING_TYPES or bool(fields.get("name") or fields.get("email"))


def unknown_yet(customer: Customer) -> bool:
    """A record made from an event that named neither a name nor an email, still waiting for
    its own: nothing personal on it yet."""
    return (
        customer.erased_at is None
        and customer.name_ct is None
        and customer.email_ct is None
        and customer.company_ct is None
    )


def parse_time_or(text: str | None, default: datetime) -> datetime:
    try:
        return datetime.fromisoformat(text) if text else default
    except ValueError:
        return default


# --- wiring -----------------------------------------------------------------------------------


def syncer(deps: Deps) -> Sync:
    """The one Sync of these deps (the consumer's callback and the job share its state)."""
    found = deps.__dict__.get("_sync")
    if found is None:
        found = deps.__dict__["_sync"] = Sync(deps)
    return found


def make_handler(deps: Deps):
    """(handle(event, attempt), permanent error types) for bot.broker.Consumer."""
    return syncer(deps).handle, (InvalidEvent,)


async def drain(deps: Deps, within: float) -> None:
    """On stop: let the alerts being posted finish (Delivery.drain)."""
    await syncer(deps).delivery.drain(within)


def jobs(deps: Deps) -> list:
    """Posts alerts held back by the coalescing window, and any left by a failed post; updates
    shared cards Slack could not update when their record changed."""
    delivery = syncer(deps).delivery
    return [("sync-alerts", delivery.flush_interval, delivery.flush)]
