"""Scheduled digests (`[[digests]]` in CRM_CONFIG): the pipeline, won and lost, overdue
invoices, open escalations, handoffs waiting past their claim time and approvals decided,
posted in a department's (or a channel's) channel with a chart uploaded in its thread.

Once per period, with any number of replicas and across restarts: each digest's latest due
time is its period; the replica that inserts the period's row (storage/digests.py) posts it,
and a claim left unfinished for `LEASE` seconds (its holder died) is taken over. The message
carries a key (`digest:<name>:<period>`), so a takeover finds a post that went out before the
holder died instead of posting again; the chart's file id is recorded after its upload.

Decisions where the issue is silent:
- A digest due while the bot was down is posted when it starts, for the latest period only
  (the ones before it are not worth a flood of stale summaries).
- A department digest shows values (amounts, deal names, invoice totals) only when the
  department may see them (handlers/pipeline.department_sees_values); otherwise the database
  is asked for counts only, and the chart shows counts. A channel digest belongs to no
  department, so it never shows values.
- Handoffs waiting and approvals decided are the department's own (to it, asked of it) in a
  department digest, everyone's in a channel digest. Approvals decided: since the previous
  period.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.lib import charts
from bot.lib.blocks import context, header
from bot.lib.blocks import pipeline as render
from bot.lib.config import Digest
from bot.lib.slack_out import SlackError
from handlers import pipeline
from handlers.deps import Deps
from storage import deals
from storage import digests as runs
from storage.departments import all_departments
from storage.models import Approval, Handoff

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LEASE = 300.0  # seconds a claim may stay unfinished before another replica takes it over
EVERY = 30.0  # how often the job looks for a due digest


# --- schedule (plain functions) ----------------------------------------------------------------


def parse_schedule(schedule: str) -> tuple[frozenset[int] | None, int, int]:
    """(weekdays, or None for every day; hour; minute) of a validated schedule."""
    days, _, at = schedule.partition(" ")
    hh, mm = (int(x) for x in at.split(":"))
    if days == "daily":
        return None, hh, mm
    return frozenset(DAYS.index(d) for d in days.split(",")), hh, mm


def latest_due(digest: Digest, now: datetime) -> datetime:
    """The latest scheduled time at or before `now`, in UTC: the period to post."""
    zone = ZoneInfo(digest.timezone)
    days, hh, mm = parse_schedule(digest.schedule)
    local = now.astimezone(zone)
    for back in range(8):
        day = local.date() - timedelta(days=back)
        if days is not None and day.weekday() not in days:
            continue
        at = datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone)
        if at <= local:
            return at.astimezone(UTC)
    raise AssertionError("a schedule names at least one weekday")


def previous_due(digest: Digest, period: datetime) -> datetime:
    return latest_due(digest, period - timedelta(seconds=1))


def post_key(digest: Digest, period: datetime) -> str:
    return f"digest:{digest.key}:{period:%Y%m%dT%H%MZ}"


def primary_currency(amounts: list[dict]) -> str:
    """The currency with the largest total (the chart shows one)."""
    totals: dict[str, float] = {}
    for a in amounts:
        for cur, v in a.items():
            totals[cur] = totals.get(cur, 0.0) + float(v)
    return max(totals, key=lambda c: totals[c]) if totals else ""


# --- building ----------------------------------------------------------------------------------


async def build(deps: Deps, digest: Digest, period: datetime, now: datetime):
    """(text, blocks, chart PNG) of a digest for `period`."""
    dept = deps.config.departments.get(digest.department or "")
    values = pipeline.department_sees_values(deps, digest.department)
    whose = dept.name if dept else "this channel"
    title = f"Digest for {whose}"
    scope = deals.Scope()
    content = set(digest.content)
    blocks: list[dict] = []
    lines: list[str] = []
    async with deps.db.transaction() as session:
        result = await deals.pipeline(session, scope, now, with_values=values)
        weeks = await deals.won_by_week(session, scope, now, with_values=values)
        if content & {"pipeline", "won_lost"}:
            blocks = await pipeline.blocks_of(deps, session, result, title, values=values)
        if "overdue_invoices" in content:
            total = await deals.open_items(session, "invoice", None, with_values=values)
            worth = render.money(total.amounts) if values else ""
            lines.append(f"*Overdue invoices*: {total.count}" + (f" · {worth}" if worth else ""))
        if "escalations" in content:
            total = await deals.open_items(session, "escalation", None, with_values=False)
            lines.append(f"*Escalations open*: {total.count}")
        if "handoffs_waiting" in content:
            stmt = select(func.count()).where(
                Handoff.status == "requested", Handoff.claim_deadline < now
            )
            if dept is not None:
                stmt = stmt.where(Handoff.to_department == dept.key)
            waiting = (await session.execute(stmt)).scalar_one()
            lines.append(f"*Handoffs waiting past their claim time*: {waiting}")
        if "approvals_decided" in content:
            since = previous_due(digest, period)
            by_status = (
                select(Approval.status, func.count())
                .where(Approval.decided_at >= since, Approval.decided_at < now)
                .group_by(Approval.status)
            )
            if dept is not None:
                by_status = by_status.where(Approval.department == dept.key)
            decided = {status: n for status, n in await session.execute(by_status)}
            lines.append(
                f"*Approvals decided since the last digest*: {decided.get('approved', 0)} "
                f"approved, {decided.get('rejected', 0)} rejected"
            )
    if not blocks:
        blocks = [header(title)]
    if lines:
        blocks.append(render.digest_lines(lines))
    blocks.append(context(f"Scheduled `{digest.schedule}` ({digest.timezone}) · chart below"))
    cur = primary_currency([t.amounts for t in result.by_stage.values()] + [w for _, w in weeks])
    stages = [
        (
            render.STAGE_NAMES[s],
            float(t.amounts.get(cur, 0)) if values else float(t.count),
        )
        for s, t in result.by_stage.items()
    ]
    week_bars = [(f"{start:%d %b}", float(sums.get(cur, 0))) for start, sums in weeks]
    unit = (cur or "deals") if values else "deals"
    png = await asyncio.to_thread(
        charts.digest_chart, stages, week_bars, unit=unit, title=f"{title}, {now:%d %b %Y}"
    )
    return title, blocks, png


# --- posting -----------------------------------------------------------------------------------


def owner_of(deps: Deps) -> str:
    """This process's id in the claims."""
    return deps.__dict__.setdefault("_digest_owner", uuid.uuid4().hex)


def channel_of(deps: Deps, digest: Digest, channels: dict[str, str]) -> str | None:
    return digest.channel or channels.get(digest.department or "")


async def post_due(deps: Deps) -> int:
    """Post every digest whose latest period is not posted yet (and not being posted by a live
    replica); returns how many were posted."""
    if not deps.config.digests:
        return 0
    async with deps.db.transaction() as session:
        channels = {k: d.channel_id for k, d in (await all_departments(session)).items()}
    posted = 0
    for digest in deps.config.digests:
        try:
            posted += await _post_one(deps, digest, channels)
        except SlackError as exc:  # retried at the next run (the claim's lease expires)
            log.warning("digest %s: Slack said %s; trying again later", digest.key, exc.kind)
    return posted


async def _post_one(deps: Deps, digest: Digest, channels: dict[str, str]) -> int:
    now = deps.clock()
    period = latest_due(digest, now)
    channel = channel_of(deps, digest, channels)
    if channel is None:
        return 0
    async with deps.db.transaction() as session:
        claimed = await runs.claim(session, digest.key, period, owner_of(deps), now, LEASE)
        if claimed is None:
            return 0
        run, earlier = claimed
        ts, file_id = run.ts, run.file_id
    title, blocks, png = await build(deps, digest, period, now)
    if ts is None:
        tried_at = earlier.timestamp() - 5 if earlier is not None else None
        sent = await deps.slack.post(
            channel, title, blocks, key=post_key(digest, period), tried_at=tried_at
        )
        ts, channel = sent["ts"], sent["channel"]
        async with deps.db.transaction() as session:
            await runs.record(session, digest.key, period, channel=channel, ts=ts)
    if file_id is None:
        file_id = await deps.slack.upload(
            channel,
            png,
            filename=f"digest-{period:%Y%m%d}.png",
            title=f"{title}: pipeline by stage and won per week",
            thread_ts=ts,
        )
    async with deps.db.transaction() as session:
        await runs.record(
            session, digest.key, period, file_id=file_id or "-", posted_at=deps.clock()
        )
    log.info("digest %s for %s posted in %s", digest.key, period.isoformat(), channel)
    return 1


def jobs(deps: Deps) -> list:
    async def digests() -> None:
        await post_due(deps)

    return [("digests", EVERY, digests)] if deps.config.digests else []
