"""Checking the books after a fault: what was published against what the bot did.

- every published event is applied (a `processed_events` row, its timeline entry) or in
  crm-bot.sync.dead, with its reason; none is lost;
- every applied alerting event has a ledger row per channel that the rules name, each row
  `posted`, and the sandbox shows each (event, channel) in exactly one message; a second
  message for the same (event, channel) is a double, counted with the message ts;
- handoffs and approvals are in a state their rules know, with the fields that state needs,
  an audit entry per step and their Slack message in place;
- the audit chain verifies.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import text

from bot.broker import dlq_list
from bot.lib.config import parse_config
from bot.sandbox import Sandbox
from storage import audit
from storage.crypto import KeyRing
from storage.db import Database
from storage.vault import Vault
from tests.fixtures.bot import FINANCE, GENERAL, MARKETING, SALES, SERVICE
from tests.fixtures.db import KEY_LINE
from tests.poll import eventually

from .harness import FAULT_CONFIG
from .stream import EventStream, tokens_in

CHANNELS = (SALES, MARKETING, SERVICE, FINANCE, GENERAL)
HANDOFF_STATES = {"requested", "accepted", "completed", "declined", "cancelled"}
APPROVAL_STATES = {"pending", "approved", "rejected", "expired"}
# Audit entries a handoff/approval in a state has at least (the request, then each step).
MIN_AUDIT = {
    "requested": 1,
    "accepted": 2,
    "completed": 3,
    "declined": 2,
    "cancelled": 2,
    "pending": 1,
    "approved": 2,
    "rejected": 2,
    "expired": 2,
}


@dataclass
class Books:
    published: int = 0
    applied: set[str] = field(default_factory=set)
    dead: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    no_timeline: list[str] = field(default_factory=list)
    ledger: dict[tuple[str, str], str] = field(default_factory=dict)
    posts: Counter = field(default_factory=Counter)  # (event id, channel) -> messages
    missing_rows: list[tuple[str, str]] = field(default_factory=list)
    unposted: list[tuple[str, str, str]] = field(default_factory=list)
    doubles: dict[tuple[str, str], int] = field(default_factory=dict)
    double_messages: int = 0
    handoff_problems: list[str] = field(default_factory=list)
    approval_problems: list[str] = field(default_factory=list)
    handoffs: Counter = field(default_factory=Counter)
    approvals: Counter = field(default_factory=Counter)
    audit_ok: bool = False
    audit_text: str = ""

    def summary(self) -> str:
        return (
            f"published {self.published}, applied {len(self.applied)}, dead {len(self.dead)}, "
            f"lost {len(self.lost)}; alerts: ledger rows {len(self.ledger)}, missing rows "
            f"{len(self.missing_rows)}, unposted {len(self.unposted)}, doubled (event, channel) "
            f"{len(self.doubles)} in {self.double_messages} extra messages; handoffs "
            f"{dict(self.handoffs)}, approvals {dict(self.approvals)}; audit: {self.audit_text}"
        )

    def assert_clean(self, *, max_double_messages: int = 0, dead_allowed: set[str] | None = None):
        problems = []
        if self.lost:
            problems.append(f"lost events: {self.lost[:10]}")
        if self.no_timeline:
            problems.append(f"applied without a timeline entry: {self.no_timeline[:10]}")
        if dead_allowed is not None and set(self.dead) - dead_allowed:
            extra = {k: self.dead[k] for k in sorted(set(self.dead) - dead_allowed)[:10]}
            problems.append(f"dead-lettered unexpectedly: {extra}")
        if self.missing_rows:
            problems.append(f"alerts never recorded: {self.missing_rows[:10]}")
        if self.unposted:
            problems.append(f"alerts not posted: {self.unposted[:10]}")
        if self.double_messages > max_double_messages:
            problems.append(
                f"{self.double_messages} double alert messages (allowed {max_double_messages}): "
                f"{dict(list(self.doubles.items())[:10])}"
            )
        problems += self.handoff_problems[:10] + self.approval_problems[:10]
        if not self.audit_ok:
            problems.append(f"audit chain: {self.audit_text}")
        assert not problems, self.summary() + "\n" + "\n".join(problems)


async def _rows(db: Database, sql: str, **params) -> list:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def progress(db: Database, stream: EventStream, amqp_url: str) -> tuple[int, int, int]:
    """(events not yet applied nor dead, alerts not yet shown, dead letters) right now. An
    alert recorded in a channel's roll-up is shown once the roll-up is updated in place (at most
    once a second, by a later round): a roll-up listing fewer than it holds counts as pending."""
    ids = set(stream.published)
    done = {r[0] for r in await _rows(db, "SELECT event_id FROM processed_events")}
    left = ids - done
    dead = 0
    if left:
        letters = await dlq_list(amqp_url, limit=10_000)
        dead_ids = {d.event_id for d in letters}
        dead = len(dead_ids & ids)
        left -= dead_ids
    pending = await _rows(db, "SELECT count(*) FROM alert_deliveries WHERE status='pending'")
    behind = await _rows(db, "SELECT count(*) FROM channel_rollups WHERE listed < items")
    return len(left), int(pending[0][0]) + int(behind[0][0]), dead


async def settled(db: Database, stream: EventStream, amqp_url: str, within: float) -> None:
    """Wait until every published event is applied or dead and no alert is pending."""
    last: tuple = (None, None, None)

    async def done() -> bool:
        nonlocal last
        try:
            last = await progress(db, stream, amqp_url)
        except Exception as exc:  # the broker or database may still be coming back
            last = (None, None, repr(exc))
        if os.environ.get("FAULTS_DEBUG"):
            print(f"settling: (left, pending, dead) = {last}", flush=True)
        return last[0] == 0 and last[1] == 0

    try:
        await eventually(done, within, interval=0.3)
    except AssertionError:
        raise AssertionError(
            f"not settled within {within}s: (left, pending, dead) = {last}"
        ) from None


def settle_window(stream: EventStream, bad: list[dict], least: float = 60.0) -> float:
    """Seconds to let the books settle: at least `least`, and long enough for `bad` events to
    reach the dead-letter queue. An unknown customer's event is retried on the fault config's
    schedule before its last attempt dead-letters it, which may end after the traffic."""
    sync = parse_config(FAULT_CONFIG).sync
    delays = sync.retry_delays
    retried = sum(delays[min(a, len(delays) - 1)] for a in range(sync.max_attempts - 1))
    first = min(stream.published[e["id"]].at for e in bad)
    return max(least, first + retried + 30 - time.time())


def count_posts(sandbox: Sandbox) -> tuple[Counter, dict[tuple[str, str], list[str]]]:
    posts: Counter = Counter()
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for channel in CHANNELS:
        for message in sandbox.store.all_messages(channel):
            for token in tokens_in(message):
                posts[(token, channel)] += 1
                where[(token, channel)].append(message["ts"])
    return posts, where


async def check_books(db_url: str, amqp_url: str, stream: EventStream, sandbox: Sandbox) -> Books:
    books = Books(published=len(stream.published))
    db = Database(db_url)
    try:
        processed = {
            r[0]: r[1] for r in await _rows(db, "SELECT event_id, outcome FROM processed_events")
        }
        timeline = {r[0] for r in await _rows(db, "SELECT event_id FROM timeline")}
        letters = await dlq_list(amqp_url, limit=10_000)
        dead = {d.event_id: d.reason for d in letters}
        for eid in stream.published:
            if eid in processed:
                books.applied.add(eid)
                if eid not in timeline:
                    books.no_timeline.append(eid)
            elif eid in dead:
                books.dead[eid] = dead[eid]
            else:
                books.lost.append(eid)
        for eid, channel, status in await _rows(
            db, "SELECT event_id, channel_id, status FROM alert_deliveries"
        ):
            books.ledger[(eid, channel)] = status
        books.posts, where = count_posts(sandbox)
        for p in stream.alerting:
            if p.id not in books.applied or processed.get(p.id) == "duplicate":
                continue
            for channel in p.channels:
                status = books.ledger.get((p.id, channel))
                if status is None:
                    books.missing_rows.append((p.id, channel))
                elif status != "posted" or books.posts[(p.id, channel)] == 0:
                    books.unposted.append((p.id, channel, status))
        for key, n in books.posts.items():
            if n > 1:
                books.doubles[key] = n
        # Extra messages: a doubled batch repeats every event in it, so count distinct messages.
        extra = {ts for key in books.doubles for ts in sorted(where[key])[1:]}
        books.double_messages = len(extra)
        await _check_handoffs(db, sandbox, books)
        await _check_approvals(db, sandbox, books)
        vault = Vault(KeyRing.parse(KEY_LINE))  # the bots' key: the audit chain is keyed
        async with db.transaction() as session:
            await vault.load(session)
            verdict = await audit.verify(session, vault)
        books.audit_ok, books.audit_text = verdict.ok, str(verdict)
    finally:
        await db.close()
    return books


async def _audit_counts(db: Database, entity_type: str) -> Counter:
    rows = await _rows(
        db,
        "SELECT entity_id, count(*) FROM audit_log WHERE entity_type = :t GROUP BY entity_id",
        t=entity_type,
    )
    return Counter({str(r[0]): int(r[1]) for r in rows})


async def _check_handoffs(db: Database, sandbox: Sandbox, books: Books) -> None:
    audits = await _audit_counts(db, "handoff")
    rows = await _rows(
        db,
        "SELECT id, status, assignee, closed_at, closed_by, channel_id, message_ts FROM handoffs",
    )
    for hid, status, assignee, closed_at, closed_by, channel, ts in rows:
        hid = str(hid)
        books.handoffs[status] += 1
        bad = books.handoff_problems
        if status not in HANDOFF_STATES:
            bad.append(f"handoff {hid}: unknown state {status}")
        if status in ("accepted", "completed") and not assignee:
            bad.append(f"handoff {hid}: {status} without an assignee")
        if status in ("completed", "declined", "cancelled") and closed_at is None:
            bad.append(f"handoff {hid}: {status} without closed_at")
        if audits[hid] < MIN_AUDIT.get(status, 1):
            bad.append(f"handoff {hid}: {status} with {audits[hid]} audit entries")
        if not ts and status == "cancelled" and closed_by == "crm-bot":
            books.handoffs["cancelled: could not be posted"] += 1  # the requester was told
        elif not ts and status == "requested":
            # handoff_flow.repost_unposted posts it (or adopts the post that went out, found by
            # its key) once REPOST_AFTER has passed
            books.handoffs["requested: to be posted again"] += 1
        elif not ts or sandbox.store.message(channel, ts) is None:
            seen = [c for c in CHANNELS if any(v == hid for _, v in _buttons(sandbox, c))]
            where = f"posted in {seen} but its ts never saved" if seen else "never posted"
            bad.append(f"handoff {hid}: {status}, no message on record ({where})")


def _buttons(sandbox: Sandbox, channel: str) -> list[tuple[str, str]]:
    from .users import buttons

    return buttons(sandbox, channel, "handoff_accept") + buttons(
        sandbox, channel, "handoff_decline"
    )


async def _check_approvals(db: Database, sandbox: Sandbox, books: Books) -> None:
    audits = await _audit_counts(db, "approval")
    rows = await _rows(
        db, "SELECT id, status, decided_by, decided_at, channel_id, message_ts FROM approvals"
    )
    for aid, status, decided_by, decided_at, channel, ts in rows:
        aid = str(aid)
        books.approvals[status] += 1
        bad = books.approval_problems
        if status not in APPROVAL_STATES:
            bad.append(f"approval {aid}: unknown state {status}")
        if status in ("approved", "rejected") and (not decided_by or decided_at is None):
            bad.append(f"approval {aid}: {status} without who/when")
        if audits[aid] < MIN_AUDIT.get(status, 1):
            bad.append(f"approval {aid}: {status} with {audits[aid]} audit entries")
        if not ts and status == "pending":
            books.approvals["pending: to be posted again"] += 1  # approval_flow.REPOST_AFTER
        elif not ts or sandbox.store.message(channel, ts) is None:
            bad.append(f"approval {aid}: {status}, its message is not in Slack ({channel}, {ts})")
