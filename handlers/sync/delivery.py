"""Posting sync alerts from the delivery ledger, one channel at a time per owner.

Every alert is a ledger row (storage/sync_ledger.py) written `pending` with the event it
comes from, for one channel. Slack's limits are per channel (about one message per second),
so delivery is organised by channel:

- ownership: the alerts of a channel are posted by the one process holding the channel's
  lease (storage.channels.claim), renewed right before each post (posting.ChannelRound.guard)
  and at each sweep; another replica takes the channel over only once the lease ran out, and
  then first looks for what the earlier owner may have posted (recovery.py). So an alert has
  one owner at a time, and a post is recorded or found by its key before anyone else may post
  it: no double, whatever the timing (a holder that waited out a long Retry-After finds the
  channel gone and posts nothing).
- pace: every post draws on the channel's budget, shared by the replicas in the database
  (bot/lib/pacing.py), and a 429 holds the channel for every replica.
- a round (posting.ChannelRound) loads the channel's pending alerts, recovers what earlier
  rounds left (recovery.adopt), then either posts each customer's due alerts (the first alert
  is the thread's top-level message; later ones reply in it, one message per coalescing
  window), or, when more messages are due than the budget posts in one window, delivers them
  all in the channel's roll-up (rollups.py); then keeps thread tops and the roll-up current
  (cards.py, rollups.refresh).
- the sweep (`start` after an event is applied, and the flush job) finds the channels with
  pending alerts, claims them, and runs a round for each channel it holds that has none
  running; a channel's round repeats while it posts something.
- failures: a transient Slack error (429 after retries, 5xx, connection) leaves the rows
  pending for the next sweep; a permanent one (channel_not_found, is_archived, ...) marks that
  customer's rows `failed` with the kind, logged. An erased customer's alerts are `dropped`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from bot.lib import metrics
from bot.lib.slack_out import SlackError
from handlers.sync import alerts, cards, recovery, rollups
from handlers.sync.posting import LEASE, ChannelRound, LostChannel, Waiting
from storage import channels, shared_cards
from storage import sync_ledger as ledger

if TYPE_CHECKING:
    from handlers.deps import Deps

log = logging.getLogger(__name__)


class Delivery:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # This process, in the channel leases (its pid first: operators and tests can tell
        # which process holds a channel).
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex}"[:36]
        self._rounds: dict[str, asyncio.Task[None]] = {}  # channel -> its round running
        self._sweep: asyncio.Task[None] | None = None
        self._again = False  # a sweep was asked for while one ran
        self._started: set[asyncio.Task[None]] = set()  # card updates
        self._refreshing: set[uuid.UUID] = set()

    @property
    def window(self) -> float:
        return self.deps.config.sync.coalesce_seconds

    @property
    def flush_interval(self) -> float:
        """Held alerts go out within a quarter of the window after it passed (at most a
        second); the job also renews this process's leases."""
        return min(1.0, max(0.1, self.window / 4)) if self.window > 0 else 1.0

    # --- scheduling ---------------------------------------------------------------------------

    def start(self, customer_id: uuid.UUID | None = None) -> None:
        """New alerts are pending: sweep (in the background; what fails waits for the job)."""
        if self._sweep is not None and not self._sweep.done():
            self._again = True
            return
        self._sweep = asyncio.get_running_loop().create_task(self._sweeping())

    def start_cards(self, customer_id: uuid.UUID) -> None:
        """Update this customer's stale cards in the background; failures are left to the
        flush job (the cards stay stale)."""
        task = asyncio.get_running_loop().create_task(self.refresh_cards(customer_id))
        self._started.add(task)
        task.add_done_callback(self._started.discard)

    async def _sweeping(self) -> None:
        while True:
            self._again = False
            try:
                await self.sweep()
            except Exception as exc:  # the database: the flush job sweeps again
                log.info("alert sweep failed (%s); the job tries again", type(exc).__name__)
            if not self._again:
                return
            # Events arriving one after another ask for a sweep each: at most five a second.
            await asyncio.sleep(0.2)

    async def sweep(self) -> None:
        """Claim the channels with pending alerts and start a round in each one held here."""
        async with self.deps.db.transaction() as session:
            waiting = await ledger.channels_with_pending(session)
            waiting += await ledger.channels_behind(session)
            held = [c for c, t in self._rounds.items() if not t.done()]
            now = self.deps.clock()
            mine = await channels.claim(
                session, sorted(set(waiting) | set(held)), self.owner, now, now + LEASE
            )
        for channel in set(waiting) - set(mine):
            metrics.alert_backlog.labels(channel).set(0)  # another replica reports it
        for channel in mine:
            running = self._rounds.get(channel)  # looked at again: the job sweeps too
            if channel in waiting and (running is None or running.done()):
                task = asyncio.get_running_loop().create_task(self._run(channel))
                self._rounds[channel] = task

    async def _run(self, channel: str) -> None:
        """Rounds in this channel while they post something."""
        try:
            while await self._round(channel):
                pass
        except LostChannel:
            log.info("another replica took %s over", channel)
        except Exception as exc:
            log.info("alerts in %s wait (%s)", channel, type(exc).__name__)
        finally:
            if self._rounds.get(channel) is asyncio.current_task():
                del self._rounds[channel]

    async def _round(self, channel: str) -> bool:
        """One round in `channel`; True when it delivered something."""
        r = ChannelRound(self.deps, channel, self.owner)
        waiting = await r.load()
        await recovery.adopt(r, waiting)
        waiting = [w for w in waiting if w.items]
        rollup = await rollups.current(r)
        delivered = False
        if waiting:
            over = self.deps.config.sync.storm_over()
            storm = rollups.is_open(r, rollup) or (
                over is not None
                and (rollups.messages_due(r, waiting) > over or rollups.too_late(r, waiting))
            )
            if storm:
                await rollups.roll_up(r, waiting, rollup)
                delivered = True
            else:
                due = [w for w in waiting if alerts.is_due(w.last_post, r.now, r.window)]
                # Customers at once (the budget paces the channel, SlackOut keeps the order);
                # each customer's alerts in order. Every post ends before the round does.
                results = await asyncio.gather(
                    *(self._post(r, w) for w in due), return_exceptions=True
                )
                if errors := [e for e in results if isinstance(e, BaseException)]:
                    raise errors[0]
                delivered = bool(due)
        await rollups.refresh(r)
        await cards.refresh_tops(r)
        return delivered

    async def _post(self, r: ChannelRound, w: Waiting) -> None:
        try:
            await r.post_customer(w)
        except SlackError as exc:
            if exc.transient:
                raise
            failed = [ledger.Settlement(p.key, ledger.FAILED, error=exc.kind) for p in w.items]
            log.warning(
                "%d alerts for customer %s in %s failed for good: %s",
                len(failed),
                w.about.id,
                r.channel,
                exc.kind,
            )
            metrics.alerts_failed_total.labels(exc.kind).inc(len(failed))
            await r.record(failed)

    async def flush(self) -> None:
        """The job: sweep (post what is due, renew the leases), and update the cards still
        stale."""
        await self.sweep()
        async with self.deps.db.transaction() as session:
            stale = await shared_cards.stale_customers(session)
        await _each("cards", [self.refresh_cards(c) for c in stale if c not in self._refreshing])

    async def drain(self, within: float) -> None:
        """On stop, once nothing starts new deliveries (the consumer and the jobs are
        stopped): let the rounds under way finish, for up to `within` seconds, then cancel
        what is left (its alerts stay pending) and give the channels up, so another replica
        takes them over at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while busy := self._busy():
            left = deadline - loop.time()
            if left <= 0:
                log.warning("stop: %d alert rounds cut short; their alerts stay pending", len(busy))
                for task in busy:
                    task.cancel()
                await asyncio.gather(*busy, return_exceptions=True)
                break
            await asyncio.wait(busy, timeout=left)
        try:
            async with self.deps.db.transaction() as session:
                await channels.release(session, self.owner)
        except Exception as exc:
            log.info("stop: leases left to run out (%s)", type(exc).__name__)

    def _busy(self) -> set[asyncio.Task[None]]:
        tasks = (*self._started, *self._rounds.values(), self._sweep)
        return {t for t in tasks if t is not None and not t.done()}

    async def refresh_cards(self, customer_id: uuid.UUID) -> None:
        self._refreshing.add(customer_id)
        try:
            await cards.refresh_cards(self.deps, customer_id)
        finally:
            self._refreshing.discard(customer_id)


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
