"""One delivery round in one channel: load what is pending there, then post it, each post
guarded by the channel's lease and recorded before the next.

A round (`ChannelRound`) belongs to the process holding the channel's lease
(storage.channels.claim). It marks the rows it sets out to post with its id (`tried_in`,
committed first), so a later round (this process after a failure, or another replica after
taking over) knows they may be in Slack and looks for their keys first (recovery.py). Before
each attempt to send, `guard` renews the lease; a process that lost the channel (it waited
longer than the lease, and another replica took over) stops there and posts nothing more.
Each post is recorded (`posted`, with the ts) in its own transaction right after Slack's
answer: at one post per second per channel a commit per post costs nothing.

Per customer: the first alert in a channel is the top-level message of the customer's thread
(what happened, for whom); later alerts reply in that thread (`reply_broadcast` when asked), at
most one message per coalescing window (a burst becomes one message with the count and the
list); the thread's count and last change are noted so cards.py keeps the top-level message
current. `top_level` alerts are posted in the channel, naming the customer.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.lib import metrics
from bot.lib.blocks.alerts import alert_message, first_alert
from bot.lib.slack_out import POST_TIMEOUT
from handlers.sync import alerts
from storage import channels
from storage import sync_ledger as ledger
from storage.customers import CustomerRecord, read_record
from storage.models import Customer, CustomerThread, utcnow

if TYPE_CHECKING:
    from handlers.deps import Deps
    from storage.vault import Vault

log = logging.getLogger(__name__)

# How long a channel's lease lasts after each renewal: longer than any one attempt to post
# (bot.lib.slack_out.POST_TIMEOUT), so a post under way ends before another replica may take
# the channel over; short enough that a replica that died is replaced within seconds.
LEASE = timedelta(seconds=20)
# A renewal younger than this covers the next attempt too: begun within it, the attempt ends
# (POST_TIMEOUT) with 5 s to spare before the lease could run out.
FRESH = LEASE - timedelta(seconds=POST_TIMEOUT + 5)


class LostChannel(Exception):
    """Another process holds the channel's lease now: this one posts nothing more there."""


@dataclass
class Waiting:
    """A customer's pending alerts in the channel of a round."""

    about: About
    thread: CustomerThread | None
    items: list[alerts.Pending] = field(default_factory=list)

    @property
    def last_post(self) -> datetime | None:
        """When an alert was last posted in this customer's thread (the coalescing window)."""
        if self.thread is None:
            return None
        return self.thread.changed_at or self.thread.created_at


class ChannelRound:
    def __init__(self, deps: Deps, channel: str, owner: str) -> None:
        self.deps = deps
        self.channel = channel
        self.owner = owner
        self.id = uuid.uuid4().hex
        self.now = deps.clock()
        self._renewed: datetime | None = None

    @property
    def window(self) -> float:
        return self.deps.config.sync.coalesce_seconds

    async def guard(self) -> None:
        """Right before an attempt to post: renew the lease (unless this round renewed it
        within FRESH); raise LostChannel when another process holds it."""
        now = self.deps.clock()
        if self._renewed is not None and now - self._renewed < FRESH:
            return
        async with self.deps.db.transaction() as session:
            if not await channels.renew(session, self.channel, self.owner, now + LEASE):
                raise LostChannel(self.channel)
        self._renewed = now

    async def load(self) -> list[Waiting]:
        """The channel's pending alerts per customer (oldest customer first). An erased (or
        vanished) customer's alerts are dropped."""
        async with self.deps.db.transaction() as session:
            rows = await ledger.pending_in(session, self.channel)
            metrics.alert_backlog.labels(self.channel).set(len(rows))
            if not rows:
                return []
            wanted = {r.customer_id for r in rows}
            found = await session.execute(select(Customer).where(Customer.id.in_(wanted)))
            customers = {c.id: c for c in found.scalars()}
            threads = {
                t.customer_id: t
                for t in (
                    await session.execute(
                        select(CustomerThread).where(
                            CustomerThread.channel_id == self.channel,
                            CustomerThread.customer_id.in_(wanted),
                        )
                    )
                ).scalars()
            }
            waiting: dict[uuid.UUID, Waiting] = {}
            dropped: list[ledger.Settlement] = []
            for row in rows:
                key = (row.event_id, row.channel_id)
                customer = customers.get(row.customer_id)
                if customer is None or customer.erased_at is not None:
                    dropped.append(ledger.Settlement(key, ledger.DROPPED))
                    continue
                if customer.id not in waiting:
                    about = About(customer, self.deps.vault)
                    waiting[customer.id] = Waiting(about, threads.get(customer.id))
                line = ledger.open_line(self.deps.vault, customer, row) or row.event_id
                tried = alerts.Tried(row.tried_in, row.tried_at) if row.tried_in else None
                waiting[customer.id].items.append(
                    alerts.Pending(key, line, row.placement, row.broadcast, tried, row.created_at)
                )
            await ledger.settle_many(session, dropped)
        return list(waiting.values())

    async def mark(self, keys: list[ledger.DeliveryKey]) -> None:
        """Note on these rows that this round sets out to post them (committed before the
        post): a row left pending with a round's id may be in Slack already."""
        async with self.deps.db.transaction() as session:
            await ledger.mark_tried(session, keys, self.id, utcnow())

    async def record(
        self,
        settled: list[ledger.Settlement],
        *,
        thread: tuple[uuid.UUID, str, str | None] | None = None,
        replies: tuple[uuid.UUID, int] | None = None,
        rollup: tuple[str, int, bool] | None = None,
    ) -> None:
        """Record a post (or what was found in Slack): its rows, a new thread (customer, ts,
        opening event), alerts added to a thread (customer, how many), a roll-up (ts, alerts,
        whether it is new)."""
        now = self.deps.clock()
        async with self.deps.db.transaction() as session:
            if thread is not None:
                customer_id, ts, opened_by = thread
                if await session.get(CustomerThread, (customer_id, self.channel)) is None:
                    ledger.start_thread(session, customer_id, self.channel, ts, opened_by)
                    await session.flush()
            if replies is not None:
                await ledger.note_replies(session, replies[0], self.channel, replies[1], now)
            if rollup is not None:
                ts, n, new = rollup
                if new:
                    await channels.start_rollup(session, self.channel, ts, now, n)
                else:
                    await channels.add_to_rollup(session, self.channel, ts, n)
            await ledger.settle_many(session, settled)

    async def post_customer(self, w: Waiting) -> None:
        """Post this customer's due alerts in the channel, in order, each recorded before the
        next. The caller checked that they are due (the coalescing window)."""
        slack = self.deps.slack
        coalesce = self.window > 0
        for batch in alerts.batches(w.items, coalesce=coalesce):
            key = batch_key(self.id, w.about.id, batch, coalesce)
            lines = [p.line for p in batch.items]
            await self.mark(batch.keys)
            settled_thread = None
            replies = None
            if batch.placement == alerts.TOP_LEVEL:
                text, blocks = alert_message(lines, customer=w.about.record)
                posted = await slack.post(self.channel, text, blocks, key=key, guard=self.guard)
            elif w.thread is None:
                text, blocks = first_alert(w.about.record, lines)
                posted = await slack.post(self.channel, text, blocks, key=key, guard=self.guard)
                settled_thread = (w.about.id, posted["ts"], batch.items[0].key[0])
            else:
                text, blocks = alert_message(lines)
                posted = await slack.post(
                    self.channel,
                    text,
                    blocks,
                    thread_ts=w.thread.thread_ts,
                    reply_broadcast=batch.broadcast,
                    key=key,
                    guard=self.guard,
                )
                replies = (w.about.id, len(batch.items))
            settled = [ledger.Settlement(k, ledger.POSTED, ts=posted["ts"]) for k in batch.keys]
            await self.record(settled, thread=settled_thread, replies=replies)
            metrics.alerts_posted_total.inc(len(batch.items))
            if settled_thread is not None:
                w.thread = CustomerThread(
                    customer_id=w.about.id,
                    channel_id=self.channel,
                    thread_ts=posted["ts"],
                    created_at=self.deps.clock(),
                )


class About:
    """The customer a post is about, decrypted only when a message shows them (a first alert,
    a top-level alert, a roll-up): most alerts are replies in a thread that exists."""

    def __init__(self, customer: Customer, vault: Vault) -> None:
        self.id = customer.id
        self._customer = customer
        self._vault = vault

    @cached_property
    def record(self) -> CustomerRecord:
        return read_record(self._vault, self._customer)


def batch_key(round_id: str, customer_id: uuid.UUID, batch: alerts.Batch, coalesced: bool) -> str:
    """The key of an alert message: the round and the event, or for a coalesced message the
    round, the customer and the placement (it holds every alert of that placement the round
    posts for that customer there)."""
    if coalesced:
        return f"alerts:{round_id}:{customer_id}:{batch.placement}"
    return f"alert:{round_id}:{batch.items[0].key[0]}"
