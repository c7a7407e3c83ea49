"""Posting sync alerts from the delivery ledger, and keeping shared cards up to date.

Every alert is a ledger row (storage/sync_ledger.py) written `pending` with the event it
comes from. `deliver(customer)` posts a customer's pending alerts, each channel in order:

- reserve, post, confirm: one delivery worker posts (so the consumer and the flush job never
  post the same rows); a round loads the pending rows of the customers waiting in one
  transaction, then posts for every (customer, channel) at once, and each post is recorded
  (`posted`, with the message ts; a new thread's ts) before the next post in that channel for
  that customer: records made at the same moment share one commit. A redelivered event
  finds nothing pending and posts nothing. When the database fails at such a commit, the
  worker keeps what was posted in memory and records it first in the next round, so a
  database outage doubles nothing.
- posted once, even across a crash: a round notes on its rows that it sets out to post them
  (`tried_in`, committed first), and every post carries a key in its metadata (the round and
  the event, or the round and the placement for a coalesced message; the customer for a
  thread header). A later round that finds rows still pending from an earlier one (the
  process died between Slack's answer and the record, or Slack's answer was lost) looks for
  those keys in the channel and the thread, records what it finds, and posts only the rest.
- replicas: within a process the worker serialises posting; across processes a customer's
  alerts are posted by the one holding its delivery lease (storage.sync_ledger.claim), renewed
  each round, so two replicas never post the same rows or start two threads.
- threads: the first alert about a customer in a channel posts the customer header
  (`short_card`) and the alert as a reply to it; later alerts reply in that thread, with
  `reply_broadcast` when a rule (or the default for urgent tickets and large overdue invoices)
  asks; `top_level` alerts are posted in the channel, naming the customer.
- bursts: after a post in a channel, that customer's next alerts there wait until
  `coalesce_seconds` have passed and then go out as ONE message with the count and the list.
  They wait as pending rows in the database, so a restart loses none; the flush job
  (`jobs()`) posts them once due. 200 updates in a minute make at most
  1 + 60 / coalesce_seconds messages per channel.
- live cards: a change a shared card shows marks it stale (in the sync transaction); it is
  updated in place (chat.update) right after, and marked shown; the flush job updates what
  is still stale (Slack failed, or the process stopped first).
- failures: a transient Slack error (429 after retries, 5xx, connection) leaves the rows
  pending and is raised at the end, so the consumer retries the event (and the job tries
  again); a permanent one (channel_not_found, is_archived, ...) marks the rows `failed` with
  the kind, logged: retrying cannot help. An erased customer's pending alerts are `dropped`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.lib import metrics
from bot.lib.blocks.alerts import alert_message, thread_header
from bot.lib.blocks.customers import redacted_card
from bot.lib.slack_out import SlackError
from handlers.sync import alerts
from storage import shared_cards
from storage import sync_ledger as ledger
from storage.customers import CustomerRecord, read_record
from storage.models import Customer, CustomerThread, utcnow

if TYPE_CHECKING:
    from handlers.deps import Deps
    from storage.vault import Vault

log = logging.getLogger(__name__)

MAX_BATCH = 200  # customers per delivery round
# A customer's alerts are posted by the process holding its lease (renewed at each round):
# with several replicas, the others leave that customer's pending rows to it; if it stops,
# another takes over once the lease ran out.
LEASE = timedelta(seconds=30)


@dataclass
class _Done:
    """What a delivery round did, recorded in one transaction at its end."""

    settled: list[ledger.Settlement] = field(default_factory=list)
    threads: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)


class Delivery:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._waiting: dict[uuid.UUID, list[asyncio.Future[None]]] = {}
        self._worker: asyncio.Task[None] | None = None
        self._round: set[uuid.UUID] = set()  # the customers of the round being posted
        self._unconfirmed = _Done()  # posted, not yet recorded (the database failed)
        self._recording = _Done()  # posted, waiting for the next group commit
        self._recorded: list[asyncio.Future[None]] = []
        self._recorder: asyncio.Task[None] | None = None
        self.owner = str(uuid.uuid4())  # this process, in the delivery leases
        self._started: set[asyncio.Task[None]] = set()
        self._refreshing: set[uuid.UUID] = set()  # customers whose cards are being updated
        # (customer, channel) -> when an alert was last posted there; entries older than the
        # window are pruned by the flush job, so this holds only the customers active now.
        self.recent: dict[tuple[uuid.UUID, str], datetime] = {}

    @property
    def window(self) -> float:
        return self.deps.config.sync.coalesce_seconds

    @property
    def flush_interval(self) -> float:
        """Held alerts go out within a quarter of the window after it passed; without a window
        the job only picks up what a failed post left, once a second."""
        return min(1.0, max(0.1, self.window / 4)) if self.window > 0 else 1.0

    # --- alerts -------------------------------------------------------------------------------

    def start(self, customer_id: uuid.UUID) -> None:
        """Deliver this customer's pending alerts in the background; failures are left to the
        flush job (the rows stay pending)."""
        self._background(self.deliver(customer_id))

    def start_cards(self, customer_id: uuid.UUID) -> None:
        """Update this customer's stale cards in the background; failures are left to the
        flush job (the cards stay stale)."""
        self._background(self.refresh_cards(customer_id))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._started.add(task)
        task.add_done_callback(self._started_done)

    def _started_done(self, task: asyncio.Task[None]) -> None:
        self._started.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("the flush job takes over (%s)", type(task.exception()).__name__)

    async def deliver(self, customer_id: uuid.UUID) -> None:
        """Post what is pending and due for this customer; raise its first transient error.

        Callers wait on one delivery worker, which takes every customer waiting at that
        moment: one transaction loads their alerts, the posts run concurrently (each customer
        and channel in order), and are recorded in group commits. The worker is the only
        poster, so the consumer and the flush job never post the same rows."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(customer_id, []).append(future)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._deliver_waiting())
        await future

    async def drain(self, within: float) -> None:
        """On stop, once nothing starts new deliveries (the consumer and the jobs are
        stopped): let the posts under way finish and be recorded, for up to `within` seconds,
        then cancel what is left; its alerts stay pending for the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while busy := self._busy():
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "stop: %d alert deliveries cut short; their alerts stay pending", len(busy)
                )
                for task in busy:
                    task.cancel()
                await asyncio.gather(*busy, return_exceptions=True)
                return
            await asyncio.wait(busy, timeout=left)

    def _busy(self) -> set[asyncio.Task[None]]:
        """The delivery tasks still running: started deliveries, the worker, the recorder."""
        tasks = (*self._started, self._worker, self._recorder)
        return {t for t in tasks if t is not None and not t.done()}

    async def _deliver_waiting(self) -> None:
        while self._waiting:
            ids = list(itertools.islice(self._waiting, MAX_BATCH))
            futures = {cid: self._waiting.pop(cid) for cid in ids}
            self._round = set(ids)
            try:
                failures = await self._deliver_batch(ids)
            except asyncio.CancelledError:
                stopped = RuntimeError("stopped while delivering")
                settle(itertools.chain.from_iterable(futures.values()), stopped)
                raise
            except Exception as exc:  # the database: every caller retries
                failures = dict.fromkeys(ids, exc)
            finally:
                self._round = set()
            for cid, waiting in futures.items():
                settle(waiting, failures.get(cid))

    async def _deliver_batch(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Exception]:
        round_id, loaded = await self._load(ids)
        failures: dict[uuid.UUID, Exception] = {}

        async def one(about: _About, channel: str, thread_ts, items) -> None:
            posted: set[ledger.DeliveryKey] = set()
            try:
                await self._post(round_id, about, channel, thread_ts, items, posted)
            except SlackError as exc:
                if exc.transient:
                    failures.setdefault(about.id, exc)
                    return
                failed = [
                    (p.key, ledger.FAILED, None, exc.kind) for p in items if p.key not in posted
                ]
                log.warning(
                    "%d alerts for customer %s in %s failed for good: %s",
                    len(failed),
                    about.id,
                    channel,
                    exc.kind,
                )
                metrics.alerts_failed_total.labels(exc.kind).inc(len(failed))
                await self._record(_Done(settled=failed))

        # Every (customer, channel) of the round posts at once, each in order; the round holds
        # at most MAX_BATCH customers.
        posting = [
            one(about, channel, threads.get(channel), items)
            for about, by_channel, threads in loaded
            for channel, items in by_channel.items()
        ]
        # Every post ends before the round does (the next round may post for them).
        results = await asyncio.gather(*posting, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return failures

    async def _record(self, done: _Done) -> None:
        """Record what was just posted (or failed for good), before the next post. Posts
        recorded at the same moment share one transaction (a group commit: each poster still
        waits for its own record, so at most one post per customer and channel is ever
        unrecorded). If the database fails now, keep it: the next round writes it first, so
        what Slack already has is not posted again."""
        self._recording.settled += done.settled
        self._recording.threads += done.threads
        future = asyncio.get_running_loop().create_future()
        self._recorded.append(future)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(self._record_waiting())
        await future

    async def _record_waiting(self) -> None:
        while self._recorded:
            done, self._recording = self._recording, _Done()
            waiting, self._recorded = self._recorded, []
            try:
                async with self.deps.db.transaction() as session:
                    for customer_id, channel, ts in done.threads:
                        ledger.start_thread(session, customer_id, channel, ts)
                    await ledger.settle_many(session, done.settled)
            except Exception as exc:
                self._unconfirmed.settled += done.settled
                self._unconfirmed.threads += done.threads
                settle(waiting, exc)
            except BaseException as exc:  # cancelled: the posters must not wait forever
                settle(waiting, RuntimeError("stopped while recording"))
                raise exc
            else:
                settle(waiting, None)

    async def _confirm(self, session) -> None:
        for customer_id, channel, ts in self._unconfirmed.threads:
            if await session.get(CustomerThread, (customer_id, channel)) is None:
                ledger.start_thread(session, customer_id, channel, ts)
        await ledger.settle_many(session, self._unconfirmed.settled)

    async def _load(self, ids: list[uuid.UUID]):
        """(round id, [(customer, due alerts per channel, thread ts per channel)]) for customers
        with something to post; the alerts no round tried yet are marked as this round's. An
        erased (or vanished) customer's alerts are dropped. Coalesced alerts wait for the flush
        job (until their window passed)."""
        confirming = bool(self._unconfirmed.settled or self._unconfirmed.threads)
        round_id = uuid.uuid4().hex
        async with self.deps.db.transaction() as session:
            if confirming:
                await self._confirm(session)
            now = self.deps.clock()
            mine = await ledger.claim(session, ids, self.owner, now, now + LEASE)
            rows = await ledger.pending_for_many(session, mine)
            if not rows:
                return round_id, []
            wanted = {r.customer_id for r in rows}
            customers = {
                c.id: c
                for c in (
                    await session.execute(select(Customer).where(Customer.id.in_(wanted)))
                ).scalars()
            }
            threads = await ledger.threads_of_many(session, wanted)
            out: dict[uuid.UUID, tuple[_About, dict, dict]] = {}
            dropped, fresh = [], []
            for row in rows:
                key = (row.event_id, row.channel_id)
                customer = customers.get(row.customer_id)
                if customer is None or customer.erased_at is not None:
                    dropped.append((key, ledger.DROPPED, None, None))
                    continue
                if not alerts.is_due(
                    self.recent.get((customer.id, row.channel_id)), now, self.window
                ):
                    continue
                if customer.id not in out:
                    about = _About(customer, self.deps.vault)
                    out[customer.id] = (about, {}, threads.get(customer.id, {}))
                line = ledger.open_line(self.deps.vault, customer, row) or row.event_id
                tried = alerts.Tried(row.tried_in, row.tried_at) if row.tried_in else None
                if tried is None:
                    fresh.append(key)
                out[customer.id][1].setdefault(row.channel_id, []).append(
                    alerts.Pending(key, line, row.placement, row.broadcast, tried)
                )
            await ledger.settle_many(session, dropped)
            await ledger.mark_tried(session, fresh, round_id, utcnow())
        if confirming:
            self._unconfirmed = _Done()
        return round_id, list(out.values())

    async def _post(
        self,
        round_id: str,
        about: _About,
        channel: str,
        thread_ts: str | None,
        items: list[alerts.Pending],
        posted_keys: set[ledger.DeliveryKey],
    ) -> None:
        """Post these alerts of one customer in one channel, in order, each recorded before
        the next; `posted_keys` gathers what was recorded posted (the rest fails with a raise)."""
        slack = self.deps.slack
        if any(p.tried for p in items):
            thread_ts, left = await self._adopt(round_id, about, channel, thread_ts, items)
            posted_keys.update({p.key for p in items} - {p.key for p in left})
            items = left
        coalesce = self.window > 0
        for batch in alerts.batches(items, coalesce=coalesce):
            post_key = batch_key(round_id, batch, coalesce, about.id)
            lines = [p.line for p in batch.items]
            if batch.placement == alerts.TOP_LEVEL:
                text, blocks = alert_message(lines, customer=about.record)
                posted = await slack.post(channel, text, blocks, key=post_key)
            else:
                if thread_ts is None:
                    text, blocks = thread_header(about.record)
                    header = await slack.post(channel, text, blocks, key=header_key(about.id))
                    thread_ts = header["ts"]
                    await self._record(_Done(threads=[(about.id, channel, thread_ts)]))
                text, blocks = alert_message(lines)
                posted = await slack.post(
                    channel,
                    text,
                    blocks,
                    thread_ts=thread_ts,
                    reply_broadcast=batch.broadcast,
                    key=post_key,
                )
            metrics.alerts_posted_total.inc(len(batch.items))
            settled = [(key, ledger.POSTED, posted["ts"], None) for key in batch.keys]
            await self._record(_Done(settled=settled))
            posted_keys.update(batch.keys)
            self.recent[(about.id, channel)] = self.deps.clock()

    async def _adopt(
        self,
        round_id: str,
        about: _About,
        channel: str,
        thread_ts: str | None,
        items: list[alerts.Pending],
    ) -> tuple[str | None, list[alerts.Pending]]:
        """Alerts an earlier round set out to post and did not record as posted: those whose
        post Slack has (found by key in the channel, the thread) are recorded with it, and a
        thread header found becomes the thread. The rest are marked as this round's before it
        posts them; a failed lookup raises and leaves them to the next round as they are.
        Returns the thread and what is left to post."""
        slack = self.deps.slack
        tried = [p for p in items if p.tried]
        since = min(p.tried.at for p in tried if p.tried).timestamp()
        posts: dict[str, str] = {}
        if thread_ts is None or any(p.placement == alerts.TOP_LEVEL for p in tried):
            posts |= await slack.keyed_posts(channel, since)
        if thread_ts is None and (header := posts.get(header_key(about.id))):
            thread_ts = header
            await self._record(_Done(threads=[(about.id, channel, thread_ts)]))
        if thread_ts is not None and any(p.placement == alerts.THREAD for p in tried):
            posts |= await slack.keyed_posts(channel, since, thread_ts)
        found = {p.key: ts for p in tried if (ts := _posted(posts, p, about.id))}
        if found:
            settled = [(key, ledger.POSTED, ts, None) for key, ts in found.items()]
            await self._record(_Done(settled=settled))
            metrics.alerts_posted_total.inc(len(found))
            log.info(
                "%d alerts in %s were in Slack already: recorded, not posted again",
                len(found),
                channel,
            )
        left = [p for p in items if p.key not in found]
        if again := [p.key for p in left if p.tried]:
            async with self.deps.db.transaction() as session:
                await ledger.mark_tried(session, again, round_id, utcnow())
        return thread_ts, left

    async def flush(self) -> None:
        """The job: post every customer's pending alerts that are due, and update the cards
        still stale."""
        self._prune()
        async with self.deps.db.transaction() as session:
            customer_ids = await ledger.customers_with_pending(session)
            stale = await shared_cards.stale_customers(session)
        # Customers queued or being posted for (or their cards updated) are left to that work.
        busy = self._round | set(self._waiting)
        await _each("alerts", [self.deliver(c) for c in customer_ids if c not in busy])
        await _each("cards", [self.refresh_cards(c) for c in stale if c not in self._refreshing])

    def _prune(self) -> None:
        horizon = self.deps.clock() - timedelta(seconds=self.window)
        for key in [k for k, at in self.recent.items() if at <= horizon]:
            del self.recent[key]

    # --- live cards ---------------------------------------------------------------------------

    async def refresh_cards(self, customer_id: uuid.UUID) -> None:
        """Update this customer's stale cards (chat.update), so no channel shows stale data,
        and mark them shown. A transient failure raises and leaves the rest stale (the flush
        job tries again); a card Slack refuses for good (its message deleted) is given up."""
        async with self.deps.db.transaction() as session:
            cards = [c for c in await shared_cards.for_customer(session, customer_id) if c.stale]
            customer = await session.get(Customer, customer_id)
            if not cards or customer is None:
                return
            record = read_record(self.deps.vault, customer)
        text, blocks = redacted_card(record)
        shown: list[tuple[uuid.UUID, int]] = []
        self._refreshing.add(customer_id)
        try:
            for card in cards:
                try:
                    await self.deps.slack.update(card.channel_id, card.ts, text, blocks)
                except SlackError as exc:
                    if exc.transient:
                        raise
                    log.warning("shared card %s not updated: %s", card.id, exc.kind)
                shown.append((card.id, card.stale))
        finally:
            self._refreshing.discard(customer_id)
            if shown:
                async with self.deps.db.transaction() as session:
                    await shared_cards.mark_shown(session, shown)


class _About:
    """The customer a post is about, decrypted only when a message shows them (a thread
    header, a top-level alert): most alerts are replies in a thread that exists."""

    def __init__(self, customer: Customer, vault: Vault) -> None:
        self.id = customer.id
        self._customer = customer
        self._vault = vault

    @cached_property
    def record(self) -> CustomerRecord:
        return read_record(self._vault, self._customer)


def header_key(customer_id: uuid.UUID) -> str:
    """The key of a customer's thread header (one per channel)."""
    return f"thread:{customer_id}"


def batch_key(round_id: str, batch: alerts.Batch, coalesced: bool, customer_id: uuid.UUID) -> str:
    """The key of an alert message: the round and the event, or for a coalesced message the
    round, the customer and the placement (it holds every alert of that customer and placement
    the round posts there). Without the customer, two customers' coalesced messages of one
    round in one channel shared a key, and a broadcast reply of one, seen in the channel's
    history, was taken for the other's lost post (its alert recorded posted, never shown)."""
    if coalesced:
        return f"alerts:{round_id}:{customer_id}:{batch.placement}"
    return f"alert:{round_id}:{batch.items[0].key[0]}"


def _posted(posts: dict[str, str], item: alerts.Pending, customer_id: uuid.UUID) -> str | None:
    """The ts of the message that holds this tried alert, among the keyed posts found."""
    assert item.tried is not None
    round_id = item.tried.round_id
    return posts.get(f"alert:{round_id}:{item.key[0]}") or posts.get(
        f"alerts:{round_id}:{customer_id}:{item.placement}"
    )


async def _each(what: str, work: list[Coroutine[object, object, None]]) -> None:
    """Run the customers' work together; what fails waits for the next round (logged)."""
    results = await asyncio.gather(*work, return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        log.info("%d customers' %s wait (%s)", len(failed), what, type(failed[0]).__name__)


def settle(futures, outcome: object) -> None:
    """Give every caller still waiting the outcome: raised when it is an exception, returned
    otherwise. Nobody waits forever."""
    for future in futures:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
