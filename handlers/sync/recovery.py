"""Alerts an earlier round set out to post and did not record: found in Slack by their keys,
or made this round's to post.

A row still pending with another round's id (`tried_in`) may be in Slack already: that
round's process died between Slack's answer and the record, Slack's answer was lost, the
database failed at the record, or the process lost the channel's lease while posting. Before
anything else is posted for such rows, the round looks for the keys that round used (the
channel's top-level messages for first alerts, top-level alerts and roll-ups; the customer's
thread for replies), records what it finds, and only then posts the rest. The lease makes
this safe: the earlier round's last attempt to post ended before this round could take the
channel (posting.LEASE > slack_out.POST_TIMEOUT), so what it posted is there to be found.
"""

from __future__ import annotations

import logging

from bot.lib import metrics
from bot.lib.slack_out import SlackError
from handlers.sync import alerts
from handlers.sync.posting import ChannelRound, Waiting
from storage import sync_ledger as ledger
from storage.models import CustomerThread, utcnow

log = logging.getLogger(__name__)


def _earlier(r: ChannelRound, p: alerts.Pending) -> bool:
    return p.tried is not None and p.tried.round_id != r.id


async def adopt(r: ChannelRound, waiting: list[Waiting]) -> None:
    """Record what Slack has of the alerts earlier rounds tried in this channel; the rest
    become this round's (`waiting` is left with only what is still to post). A customer whose
    posts cannot be looked up now (Slack fails) waits, with all its alerts, for a later round;
    the other customers go on."""
    tried = [(w, p) for w in waiting for p in w.items if _earlier(r, p)]
    if not tried:
        return
    slack = r.deps.slack
    since = min(p.tried.at for _, p in tried if p.tried).timestamp()
    try:
        in_channel: dict[str, str] | None = await slack.keyed_posts(r.channel, since)
    except SlackError as exc:
        log.info("looking for earlier posts in %s failed (%s); they wait", r.channel, exc.kind)
        in_channel = None
    found_total = 0
    for w in waiting:
        mine = [p for p in w.items if _earlier(r, p)]
        if not mine:
            continue
        try:
            found_total += await _adopt_customer(r, w, mine, in_channel, since)
        except SlackError as exc:
            log.info("looking for earlier posts in %s failed (%s); they wait", r.channel, exc.kind)
            w.items = []
    if found_total:
        metrics.alerts_posted_total.inc(found_total)
        log.info(
            "%d alerts in %s were in Slack already: recorded, not posted again",
            found_total,
            r.channel,
        )
    again = [p.key for w in waiting for p in w.items if _earlier(r, p)]
    if again:
        async with r.deps.db.transaction() as session:
            await ledger.mark_tried(session, again, r.id, utcnow())


async def _adopt_customer(
    r: ChannelRound,
    w: Waiting,
    mine: list[alerts.Pending],
    in_channel: dict[str, str] | None,
    since: float,
) -> int:
    """What Slack has of one customer's tried alerts, recorded; returns how many."""
    if in_channel is None:  # the channel's lookup failed: wait with the rest
        raise SlackError("server_error", "conversations.history")
    slack = r.deps.slack
    if w.thread is None:
        # A first alert (or an old header) may have gone out: it becomes the thread.
        opened = _first_found(in_channel, w, mine)
        if opened is not None:
            ts, event_id = opened
            await r.record([], thread=(w.about.id, ts, event_id))
            w.thread = CustomerThread(
                customer_id=w.about.id,
                channel_id=r.channel,
                thread_ts=ts,
                created_at=r.deps.clock(),
            )
    in_thread: dict[str, str] = {}
    if w.thread is not None and any(p.placement == alerts.THREAD for p in mine):
        in_thread = await slack.keyed_posts(r.channel, since, w.thread.thread_ts)
    found: dict[ledger.DeliveryKey, str] = {}
    replies = 0
    rollups: dict[str, int] = {}
    for p in mine:
        if at := _in(in_thread, r, w, p):
            found[p.key] = at
            replies += 1
        elif at := _in(in_channel, r, w, p):
            found[p.key] = at
        elif p.tried is not None and (at := in_channel.get(rollup_key(p.tried.round_id))):
            found[p.key] = at
            rollups[at] = rollups.get(at, 0) + 1
    if found:
        settled = [ledger.Settlement(k, ledger.POSTED, ts=at) for k, at in found.items()]
        await r.record(settled, replies=(w.about.id, replies) if replies else None)
        for ts, n in rollups.items():
            await r.record([], rollup=(ts, n, True))
    w.items = [p for p in w.items if p.key not in found]
    return len(found)


def rollup_key(round_id: str) -> str:
    return f"rollup:{round_id}"


def header_key(customer_id) -> str:
    """The key of a thread header posted before 0008 (one per customer and channel)."""
    return f"thread:{customer_id}"


def _keys(r: ChannelRound, w: Waiting, p: alerts.Pending) -> list[str]:
    """Every key the round that tried `p` may have posted it under (also the keys of the
    version before 0008, for rows tried before an upgrade)."""
    assert p.tried is not None
    rid, event = p.tried.round_id, p.key[0]
    return [
        f"alert:{rid}:{event}",
        f"alerts:{rid}:{w.about.id}:{p.placement}",
        f"alerts:{rid}:{p.placement}",
    ]


def _in(posts: dict[str, str], r: ChannelRound, w: Waiting, p: alerts.Pending) -> str | None:
    for key in _keys(r, w, p):
        if key in posts:
            return posts[key]
    return None


def _first_found(
    in_channel: dict[str, str], w: Waiting, mine: list[alerts.Pending]
) -> tuple[str, str | None] | None:
    """(ts, opening event) of a first alert (or an old header) found among the channel's
    top-level posts for this customer."""
    if header := in_channel.get(header_key(w.about.id)):
        return header, None
    for p in mine:
        if p.placement != alerts.THREAD:
            continue
        assert p.tried is not None
        rid = p.tried.round_id
        for key in (f"alert:{rid}:{p.key[0]}", f"alerts:{rid}:{w.about.id}:{p.placement}"):
            if key in in_channel:
                batch = [q for q in mine if q.tried and q.tried.round_id == rid]
                return in_channel[key], batch[0].key[0]
    return None
