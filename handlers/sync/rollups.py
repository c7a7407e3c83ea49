"""Alert storms: when a channel has more alert messages waiting than its budget posts in one
coalescing window, its alerts go into one top-level roll-up message instead.

- A storm starts in a channel when a round finds more messages due there than
  `[sync] storm_threshold` (by default what one message per second posts in the coalescing
  window), or so many that, posted one a second, the oldest would wait longer than the window
  (`too_late`; when roll-ups are on). The round posts ONE roll-up (`N alerts since
  HH:MM:SS UTC`, one line per alert: customer, what happened, a link to the customer's thread
  when there is one) and records every alert in it as posted, with the roll-up's ts: each
  counts as delivered, once, and none is posted again in the customer's thread.
- While the roll-up is younger than the window, every new alert of the channel is added to it
  (recorded first, then the message is updated in place, at most once a second; a failed
  update is made again by the next round or the flush job). After the window, a round that
  still finds a storm posts a new roll-up; one that does not posts normally again: the storm
  has ended. So a storm costs one message per window in the channel.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from bot.lib import metrics
from bot.lib.blocks.alerts import RolledUp, rollup_message
from bot.lib.slack_out import SlackError
from handlers.sync import alerts
from handlers.sync.posting import ChannelRound, Waiting
from handlers.sync.recovery import rollup_key
from storage import channels
from storage import sync_ledger as ledger
from storage.customers import read_record
from storage.models import ChannelRollup, Customer, CustomerThread

log = logging.getLogger(__name__)

MAX_ITEMS = 200  # alerts in one roll-up; past it, the next alert opens a new one
UPDATE_EVERY = timedelta(seconds=1)  # a roll-up is updated in place at most this often


def messages_due(r: ChannelRound, waiting: list[Waiting]) -> int:
    """How many messages posting `waiting` the usual way would take now."""
    coalesce = r.window > 0
    return sum(
        len(alerts.batches(w.items, coalesce=coalesce))
        for w in waiting
        if alerts.is_due(w.last_post, r.now, r.window)
    )


def too_late(r: ChannelRound, waiting: list[Waiting], interval: float = 1.0) -> bool:
    """Whether posting what is due one by one (one message per `interval` s) would leave an
    alert waiting longer than the coalescing window since it became due: the budget cannot
    post it within the window. One message due is never a storm."""
    due = [w for w in waiting if alerts.is_due(w.last_post, r.now, r.window)]
    n = messages_due(r, waiting)
    if n <= 1 or r.window <= 0:
        return False
    late = 0.0
    for w in due:
        created = [p.created for p in w.items if p.created is not None]
        if created:
            since = max(min(created), alerts.due_at(w.last_post, r.window) or min(created))
            late = max(late, (r.now - since).total_seconds())
    return late + n * interval > r.window


def is_open(r: ChannelRound, rollup: ChannelRollup | None) -> bool:
    return (
        rollup is not None
        and rollup.items < MAX_ITEMS
        and r.now < rollup.opened_at + timedelta(seconds=max(r.window, 1.0))
    )


async def current(r: ChannelRound) -> ChannelRollup | None:
    async with r.deps.db.transaction() as session:
        return await channels.open_rollup(session, r.channel)


async def roll_up(r: ChannelRound, waiting: list[Waiting], rollup: ChannelRollup | None) -> None:
    """Deliver every alert waiting in the channel in its roll-up: added to the open one, or
    in a new one."""
    items = [p for w in waiting for p in w.items]
    if not items:
        return
    keys = [p.key for p in items]
    if rollup is not None and is_open(r, rollup):
        settled = [ledger.Settlement(k, ledger.POSTED, ts=rollup.ts) for k in keys]
        await r.record(settled, rollup=(rollup.ts, len(items), False))
        metrics.alerts_posted_total.inc(len(items))
        metrics.alerts_rolled_up_total.inc(len(items))
        await refresh(r)
        return
    if rollup is not None and rollup.listed < rollup.items:
        # The roll-up closing holds alerts it does not show yet (its holder stopped between
        # the record and the update): shown first, as the channel's open roll-up is replaced.
        await refresh(r, force=True)
    links = {w.about.id: await _permalink(r, w.thread.thread_ts) for w in waiting if w.thread}
    rendered = [_item(w, p, links.get(w.about.id)) for w in waiting for p in w.items]
    text, blocks = rollup_message(rendered, r.now)
    await r.mark(keys)
    posted = await r.deps.slack.post(r.channel, text, blocks, key=rollup_key(r.id), guard=r.guard)
    settled = [ledger.Settlement(k, ledger.POSTED, ts=posted["ts"]) for k in keys]
    await r.record(settled, rollup=(posted["ts"], len(items), True))
    metrics.alerts_posted_total.inc(len(items))
    metrics.alerts_rolled_up_total.inc(len(items))
    log.info("storm in %s: %d alerts in one roll-up", r.channel, len(items))


async def refresh(r: ChannelRound, force: bool = False) -> None:
    """Update the channel's roll-up in place when it lists fewer alerts than it holds (and
    was not updated in the last second): rendered from the ledger, so an update lost to a
    failure or a crash is simply made again."""
    async with r.deps.db.transaction() as session:
        rollup = await channels.open_rollup(session, r.channel)
        if rollup is None or rollup.listed >= rollup.items:
            return
        recent = rollup.shown_at is not None and r.deps.clock() - rollup.shown_at < UPDATE_EVERY
        if recent and not force:
            return
        rows = await ledger.posted_with(session, r.channel, rollup.ts)
        ids = {row.customer_id for row in rows}
        customers = {c.id: c for c in [await session.get(Customer, i) for i in ids] if c}
        threads = {
            i: t.thread_ts
            for i in ids
            if (t := await session.get(CustomerThread, (i, r.channel))) is not None
        }
        ts, since = rollup.ts, rollup.opened_at
    links = {}
    rendered = []
    for row in rows:
        customer = customers.get(row.customer_id)
        if customer is None or customer.erased_at is not None:
            continue
        record = read_record(r.deps.vault, customer)
        line = ledger.open_line(r.deps.vault, customer, row) or row.event_id
        link = None
        if (thread_ts := threads.get(row.customer_id)) is not None:
            if thread_ts not in links:
                links[thread_ts] = await _permalink(r, thread_ts)
            link = links[thread_ts]
        rendered.append(RolledUp(record.name or record.external_id, line, link, row.broadcast))
    text, blocks = rollup_message(rendered, since)
    await r.deps.slack.update(r.channel, ts, text, blocks)
    async with r.deps.db.transaction() as session:
        await channels.rollup_shown(session, r.channel, ts, len(rows), r.deps.clock())


async def _permalink(r: ChannelRound, ts: str) -> str | None:
    try:
        return await r.deps.slack.permalink(r.channel, ts) or None
    except SlackError:
        return None


def _item(w: Waiting, p: alerts.Pending, link: str | None) -> RolledUp:
    record = w.about.record
    return RolledUp(record.name or record.external_id, p.line, link, p.broadcast)
