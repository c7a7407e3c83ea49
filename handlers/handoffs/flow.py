"""The units of work of a handoff: create it, take a step (accept, decline, complete, cancel),
send the claim reminders, and show each change in Slack (the parent message updated, a reply in
both threads). The listeners in `handoffs.py` only parse and call these.

Every change is one transaction: the row (locked), an audit entry and an outbox event; Slack is
told after the commit, from what the database now says.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from bot.lib.blocks import esc, link
from bot.lib.blocks import handoffs as render
from bot.lib.blocks.customers import label
from bot.lib.errors import NotFound, UserError
from bot.lib.interaction import parse_handoff_id
from bot.lib.slack_out import SlackError
from handlers import access
from handlers.changes import Published, record_change
from handlers.deps import Deps
from handlers.handoffs import rules
from handlers.home import refresh_homes
from storage.customers import Customers
from storage.handoffs import HandoffRecord, Handoffs
from storage.models import Customer, Handoff
from storage.slack_requests import first_time

log = logging.getLogger(__name__)

# A handoff not on record as posted this long after it was made is posted by the job.
REPOST_AFTER = timedelta(minutes=2)

BOT_ACTOR = "crm-bot"
STALE = "That button does not belong to this handoff's message; nothing changed."
UNKNOWN = "I know no such handoff (the button may be forged or out of date); nothing changed."


@dataclass
class NewHandoff:
    user: str
    to: str  # department key or name
    note: str | None = None
    customer_ref: str | None = None  # email or external id (command)
    customer_id: uuid.UUID | None = None  # (card button, message shortcut)
    channel: str | None = None  # where the person acted
    requester_channel: str | None = None  # None: the requester's department channel (or a DM)
    context: str | None = None  # permalink of the message it came from
    dedupe_key: str | None = None


@dataclass
class Created:
    record: HandoffRecord
    to_name: str
    link: str | None
    requester_channel: str | None


async def dept_names(deps: Deps) -> dict[str, str]:
    return {k: d.name for k, d in (await deps.directory.departments()).items()}


async def permalink(deps: Deps, channel: str | None, ts: str | None) -> str | None:
    if not channel or not ts:
        return None
    try:
        return await deps.slack.permalink(channel, ts) or None
    except SlackError:
        return None


def event_data(h: Handoff, actor: str) -> dict:
    """The outbox event's `data` (ids and states only: no note, no reason)."""
    data: dict[str, object] = {
        "handoff_id": str(h.id),
        "from_department": h.from_department,
        "to_department": h.to_department,
        "actor": actor,
        "status": h.status,
    }
    if h.assignee:
        data["assignee"] = h.assignee
    if h.status == rules.CANCELLED:
        data["cancelled"] = True
    return data


async def record_step(
    session, deps: Deps, h: Handoff, customer: Customer, actor: str, details: str | None = None
) -> None:
    """The audit entry and the outbox event of a step, in the caller's transaction (the relay
    is woken when it commits)."""
    data = event_data(h, actor)
    await record_change(
        session,
        deps,
        actor=actor,
        action=f"handoff.{h.status}",
        entity_type="handoff",
        entity_id=h.id,
        customer=customer,
        data=data,
        details=details,
        publish=Published(rules.EVENTS[h.status], customer.external_id, data),
    )


async def _find_customer(repo: Customers, req: NewHandoff) -> Customer:
    if req.customer_id is not None:
        customer = await repo.get(req.customer_id)
        shown = "that customer"
    else:
        customer = await repo.by_ref(req.customer_ref or "")
        shown = f"`{esc((req.customer_ref or '')[:80])}`"
    if customer is None or customer.erased_at is not None:
        raise NotFound(f"I know no customer {shown} (use an email address or an external id).")
    return customer


async def create(deps: Deps, req: NewHandoff) -> Created | None:
    """Record a new handoff, post it in the receiving channel and link it on the requester's
    side. None when `dedupe_key` was seen before (a retried submission). Only someone who
    may read customer data hands a customer off (handlers/access.py)."""
    problem = rules.check_note(req.note)
    if problem:
        raise UserError(problem)
    await access.require(deps, req.user)
    to = await deps.directory.get(req.to)
    home = await deps.directory.home_of(req.user, req.channel)
    problem = rules.check_route(home.key if home else None, to.key)
    if problem:
        raise UserError(problem)
    now = deps.clock()
    async with deps.db.transaction() as session:
        if req.dedupe_key and not await first_time(session, req.dedupe_key):
            return None
        customer = await _find_customer(Customers(session, deps.vault), req)
        repo = Handoffs(session, deps.vault)
        existing = await repo.open_to(customer.id, to.key)
        if existing is not None:
            raise UserError(
                f"There is already an open handoff of this customer to {to.name} "
                f"(asked by <@{existing.requested_by}>): see `/crm handoffs {to.key}`."
            )
        h = await repo.create(
            customer,
            from_department=home.key if home else None,
            to_department=to.key,
            requested_by=req.user,
            note=req.note,
            context_permalink=req.context,
            now=now,
            claim_deadline=rules.claim_deadline(now, deps.config.handoffs.claim_within_minutes),
        )
        await record_step(session, deps, h, customer, req.user, details=req.note)
        record = repo.read(h, customer)
    log.info("handoff %s requested to %s", record.id, to.key)

    try:
        link, mine = await _publish(deps, record, to, home, req.requester_channel)
    except SlackError as exc:
        if exc.transient:
            # Slack may have posted it (its answer was lost and the look-up could not tell):
            # the handoff stays requested and the repost job adopts the post or makes it.
            log.warning("handoff %s: post outcome unknown (%s); the job retries", record.id, exc)
            raise UserError(
                f"Slack did not confirm the handoff in <#{to.channel_id}> yet ({exc.kind}); "
                "it stays requested and will be posted there once Slack answers."
            ) from None
        await _abandon(deps, record.id)
        raise UserError(
            f"I could not post the handoff in <#{to.channel_id}> ({exc.kind}); it was cancelled."
        ) from None
    await refresh_homes(deps, to.key, req.user)
    return Created(record, to.name, link, mine[0] if mine else None)


async def _publish(
    deps: Deps, record: HandoffRecord, to, home, requester_channel, *, recovering: bool = False
):
    """Post the handoff in the receiving channel and link it on the requester's side, saving
    each message's ts. Each post carries the handoff's key, so a repost after a crash adopts a
    message that did go out instead of posting it again."""
    key = f"handoff:{record.id}"
    text, blocks = render.handoff_message(
        record, from_name=home.name if home else None, to_name=to.name
    )
    tried_at = record.created_at.timestamp() if recovering else None
    ts = (await deps.slack.post(to.channel_id, text, blocks, key=key, tried_at=tried_at))["ts"]
    record.channel_id, record.message_ts = to.channel_id, ts
    link = await permalink(deps, record.channel_id, record.message_ts)
    record.message_permalink = link
    await _save_messages(deps, record.id, channel=(record.channel_id, record.message_ts, link))

    side = requester_channel or (home.channel_id if home else None)
    text, blocks = render.requester_message(record, to_name=to.name, parent_link=link)
    mine = None
    if tried_at is not None:
        mine = await _find_requester(deps, side, record.requested_by, f"{key}:requester", tried_at)
    if mine is None:
        mine = await _post_requester(
            deps, side, record.requested_by, text, blocks, key=f"{key}:requester"
        )
    if mine:
        record.requester_channel_id, record.requester_ts = mine
        await _save_messages(deps, record.id, requester=mine)
    return link, mine


async def repost_unposted(deps: Deps) -> int:
    """Handoffs recorded but not on record as posted (the process died or the database failed
    in between) are posted now, or the earlier post is adopted. Returns how many."""
    async with deps.db.transaction() as session:
        due = await Handoffs(session, deps.vault).unposted(deps.clock() - REPOST_AFTER)
    departments = await deps.directory.departments()
    done = 0
    for hid in due:
        async with deps.db.transaction() as session:
            repo = Handoffs(session, deps.vault)
            h = await repo.get(hid)
            if h is None or h.message_ts is not None or h.status != rules.REQUESTED:
                continue
            record = repo.read(h, await repo.customer_of(h))
        to = departments.get(record.to_department)
        if to is None:
            continue
        try:
            home = departments.get(record.from_department or "")
            await _publish(deps, record, to, home, None, recovering=True)
        except SlackError as exc:
            log.warning("handoff %s: repost failed (%s); next pass", hid, exc.kind)
            continue
        log.info("handoff %s: posted after recovery", hid)
        done += 1
    return done


async def _find_requester(
    deps: Deps, channel, user, key: str, since: float
) -> tuple[str, str] | None:
    """The requester-side message a crash left unsaved, where `_post_requester` puts it: the
    channel, or the DM it falls back to. A place Slack refuses to show is not where it is."""
    for place in (channel, None) if channel else (None,):
        try:
            where = place or await deps.slack.dm_channel(user)
            ts = await deps.slack.find_posted(where, key, since)
        except SlackError as exc:
            if exc.transient:
                raise
            continue
        if ts is not None:
            return where, ts
    return None


async def _post_requester(
    deps: Deps, channel, user, text, blocks, *, key: str
) -> tuple[str, str] | None:
    """Post on the requester's side: their channel, or a DM when that fails or is unknown."""
    if channel:
        try:
            posted = await deps.slack.post(channel, text, blocks, key=key)
            return posted["channel"], posted["ts"]
        except SlackError as exc:
            log.warning("requester side %s: %s; sending a DM instead", channel, exc.kind)
    try:
        posted = await deps.slack.dm(user, text, blocks, key=key)
        return posted["channel"], posted["ts"]
    except SlackError as exc:
        log.warning("requester DM failed: %s", exc.kind)
        return None


async def _save_messages(deps: Deps, hid: uuid.UUID, *, channel=None, requester=None) -> None:
    async with deps.db.transaction() as session:
        h = await Handoffs(session, deps.vault).get(hid, for_update=True)
        if h is None:
            return
        if channel:
            h.channel_id, h.message_ts, h.message_permalink = channel
        if requester:
            h.requester_channel_id, h.requester_ts = requester


async def _abandon(deps: Deps, hid: uuid.UUID) -> None:
    """A handoff that could not be posted is cancelled by the bot (and published as such)."""
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        h = await repo.get(hid, for_update=True)
        if h is None or h.status != rules.REQUESTED:
            return
        customer = await repo.customer_of(h)
        h.status, h.closed_by, h.closed_at = rules.CANCELLED, BOT_ACTOR, deps.clock()
        await record_step(session, deps, h, customer, BOT_ACTOR)


@dataclass
class Click:
    value: object  # the button's value / the metadata's id, as it arrived
    action: str  # rules.ACCEPT | DECLINE | COMPLETE | CANCEL
    user: str
    channel: str | None  # where the button was (container)
    message_ts: str | None
    reason: str | None = None


async def act(deps: Deps, click: Click, *, dry_run: bool = False):
    """Take a step. Returns (refusal text or None, the handoff as it now is or None). With
    `dry_run`, only checks whether the step is allowed (e.g. before opening the reason modal)."""
    hid = parse_handoff_id(click.value)
    if hid is None:
        return "That button does not name a handoff; nothing changed.", None
    async with deps.db.transaction() as session:
        h = await Handoffs(session, deps.vault).get(hid)
        if h is None:
            return UNKNOWN, None
        to_key = h.to_department
        origin = (
            (h.requester_channel_id, h.requester_ts)
            if click.action == rules.CANCEL
            else (h.channel_id, h.message_ts)
        )
    if origin != (click.channel, click.message_ts):
        log.info("handoff %s: %s from another message refused", hid, click.action)
        return STALE, None
    try:
        dept = await deps.directory.get(to_key)
    except NotFound:
        return "The receiving department no longer exists; nothing changed.", None
    receiver = await deps.directory.is_member(dept, click.user)
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        h = await repo.get(hid, for_update=True)
        assert h is not None
        facts = rules.Facts(h.status, h.requested_by, h.assignee, h.closed_by)
        outcome = rules.decide(facts, click.action, click.user, receiver=receiver, dept=dept.name)
        if isinstance(outcome, rules.Refusal):
            log.info("handoff %s: %s refused (%s)", hid, click.action, outcome.kind)
            return outcome.text, None
        customer = await repo.customer_of(h)
        if dry_run:
            return None, repo.read(h, customer)
        now = deps.clock()
        h.status, h.assignee, h.updated_at = outcome.status, outcome.assignee, now
        if outcome.closes:
            h.closed_by, h.closed_at = click.user, now
        if click.reason is not None:
            repo.seal_reason(customer, h, click.reason)
        await record_step(session, deps, h, customer, click.user, details=click.reason)
        record = repo.read(h, customer)
    log.info("handoff %s %s", hid, record.status)
    await show_step(deps, record, click.user)
    await refresh_homes(deps, record.to_department, record.requested_by)
    return None, record


async def _quietly(what: str, hid, call) -> None:
    try:
        await call
    except SlackError as exc:
        log.warning("handoff %s: %s failed (%s)", hid, what, exc.kind)


async def refresh(deps: Deps, record: HandoffRecord) -> None:
    """Update both messages to what the handoff now is."""
    names = await dept_names(deps)
    to_name = names.get(record.to_department, record.to_department)
    from_name = names.get(record.from_department or "")
    if record.channel_id and record.message_ts:
        text, blocks = render.handoff_message(record, from_name=from_name, to_name=to_name)
        await _quietly(
            "update",
            record.id,
            deps.slack.update(record.channel_id, record.message_ts, text, blocks),
        )
    if record.requester_channel_id and record.requester_ts:
        link = record.message_permalink or await permalink(
            deps, record.channel_id, record.message_ts
        )
        text, blocks = render.requester_message(record, to_name=to_name, parent_link=link)
        await _quietly(
            "requester update",
            record.id,
            deps.slack.update(record.requester_channel_id, record.requester_ts, text, blocks),
        )


async def show_step(deps: Deps, record: HandoffRecord, actor: str) -> None:
    """The parent message and the requester's message updated, a reply in both threads."""
    await refresh(deps, record)
    text = render.step_reply(record, actor)
    for channel, ts in (
        (record.channel_id, record.message_ts),
        (record.requester_channel_id, record.requester_ts),
    ):
        if channel and ts:
            await _quietly("reply", record.id, deps.slack.post(channel, text, thread_ts=ts))


# -- claim reminders ---------------------------------------------------------------------
async def remind_unclaimed(deps: Deps) -> int:
    """One pass of the claim timer (driven by claim_deadline and reminders_sent in the
    database, so it survives restarts); returns how many reminders it sent. Also posts the
    handoffs whose message never made it to Slack."""
    await repost_unposted(deps)
    now = deps.clock()
    async with deps.db.transaction() as session:
        due = await Handoffs(session, deps.vault).due_for_reminder(now)
    sent = 0
    for hid in due:
        sent += await _remind_one(deps, hid, now)
    return sent


async def _remind_one(deps: Deps, hid: uuid.UUID, now) -> bool:
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        h = await repo.get(hid, for_update=True)
        if h is None or not h.message_ts or not h.channel_id:  # no message to reply under
            return False
        channel, message_ts = h.channel_id, h.message_ts
        step = rules.claim_step(h.status, h.claim_deadline, h.reminders_sent, now)
        if step is None:
            return False
        before = (h.reminders_sent, h.claim_deadline)
        h.reminders_sent += 1
        h.claim_deadline = rules.claim_deadline(now, deps.config.handoffs.claim_within_minutes)
        record = repo.read(h, await repo.customer_of(h))
    try:
        dept = await deps.directory.get(record.to_department)
        if step == rules.REMIND:
            text = render.reminder_reply(record, dept.name)
        else:
            text = render.escalation_reply(record, dept.name, list(dept.leads), dept.usergroup)
        await deps.slack.post(channel, text, thread_ts=message_ts)
    except (SlackError, NotFound) as exc:
        log.warning("handoff %s: %s not sent (%s)", hid, step, getattr(exc, "kind", "no dept"))
        if isinstance(exc, SlackError) and exc.transient:  # try again on the next pass
            async with deps.db.transaction() as session:
                h = await Handoffs(session, deps.vault).get(hid, for_update=True)
                if h is not None and h.reminders_sent == before[0] + 1:
                    h.reminders_sent, h.claim_deadline = before
        return False
    log.info("handoff %s: %s sent", hid, step)
    return True


# -- lists -------------------------------------------------------------------------------
async def with_links(deps: Deps, records: list[HandoffRecord]):
    """Each handoff with the permalink saved when it was posted: a list or an App Home costs
    no chat.getPermalink per handoff (Slack rate-limits it by tier)."""
    return [(r, r.message_permalink) for r in records]


def confirmation(created: Created) -> str:
    where = link(created.link, "the handoff")
    return (
        f"Handed *{esc(label(created.record.customer))}* off to {esc(created.to_name)}: "
        f"see {where}. "
        "Each step will be posted in its thread."
    )
