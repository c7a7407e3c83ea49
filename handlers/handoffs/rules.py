"""The rules of a handoff, as plain functions: its states and who may move it, when its claim
reminders are due, and how the arguments of `/crm handoff` and a message name a customer.

    requested ──accept──▶ accepted ──complete──▶ completed
        │  └──decline──▶ declined
        └────cancel───▶ cancelled   (by the requester only)

No Slack, no database: they take data and return data, and are tested table-driven.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

REQUESTED, ACCEPTED, COMPLETED, DECLINED, CANCELLED = (
    "requested",
    "accepted",
    "completed",
    "declined",
    "cancelled",
)
OPEN = (REQUESTED, ACCEPTED)
STATUSES = (REQUESTED, ACCEPTED, COMPLETED, DECLINED, CANCELLED)

ACCEPT, DECLINE, COMPLETE, CANCEL = "accept", "decline", "complete", "cancel"

# The outbox event per step. The event contract has no `handoff.cancelled`: a cancel is
# published as `handoff.declined` with `data.cancelled = true`, so other systems close it too.
EVENTS = {
    REQUESTED: "handoff.requested",
    ACCEPTED: "handoff.accepted",
    DECLINED: "handoff.declined",
    COMPLETED: "handoff.completed",
    CANCELLED: "handoff.declined",
}

PAST = {ACCEPTED: "accepted", COMPLETED: "completed", DECLINED: "declined", CANCELLED: "cancelled"}

MAX_NOTE = 2000
MAX_REASON = 1000


@dataclass(frozen=True)
class Facts:
    """What the server knows about a handoff (never what a button claims)."""

    status: str
    requested_by: str
    assignee: str | None = None
    closed_by: str | None = None


@dataclass(frozen=True)
class Step:
    """An allowed transition: the new status and assignee."""

    status: str
    assignee: str | None
    closes: bool


@dataclass(frozen=True)
class Refusal:
    """Nothing changes; `text` tells the person why (mrkdwn, may mention users)."""

    kind: str  # forbidden | already | closed | early
    text: str


def _who(user_id: str | None, actor: str) -> str:
    return "you" if user_id == actor else (f"<@{user_id}>" if user_id else "someone")


def _closed(facts: Facts, actor: str) -> Refusal:
    who = _who(facts.closed_by, actor)
    return Refusal("closed", f"This handoff was already {PAST[facts.status]} by {who}.")


def decide(
    facts: Facts, action: str, actor: str, *, receiver: bool, dept: str = ""
) -> Step | Refusal:
    """The step `actor` may take, or why not. `receiver`: whether the actor is a member of
    the receiving department; `dept` its name, for the refusal."""
    if action == CANCEL:
        if actor != facts.requested_by:
            return Refusal("forbidden", f"Only <@{facts.requested_by}>, who asked, can cancel it.")
        if facts.status == REQUESTED:
            return Step(CANCELLED, None, True)
        if facts.status == ACCEPTED:
            who = _who(facts.assignee, actor)
            return Refusal("closed", f"It was already accepted by {who}; talk in its thread.")
        return _closed(facts, actor)
    if action not in (ACCEPT, DECLINE, COMPLETE):
        return Refusal("forbidden", "Unknown action.")
    if not receiver:
        verb = {ACCEPT: "accept", DECLINE: "decline", COMPLETE: "complete"}[action]
        return Refusal(
            "forbidden",
            f"Only members of {dept or 'the receiving department'} can {verb} this handoff.",
        )
    if action == ACCEPT:
        if facts.status == REQUESTED:
            return Step(ACCEPTED, actor, False)
        if facts.status == ACCEPTED:
            return Refusal("already", f"Already accepted by {_who(facts.assignee, actor)}.")
        return _closed(facts, actor)
    if action == DECLINE:
        if facts.status == REQUESTED:
            return Step(DECLINED, None, True)
        if facts.status == ACCEPTED:
            who = _who(facts.assignee, actor)
            return Refusal(
                "already", f"It was already accepted by {who}; it can only be completed now."
            )
        return _closed(facts, actor)
    # COMPLETE
    if facts.status == ACCEPTED:
        return Step(COMPLETED, facts.assignee, True)
    if facts.status == REQUESTED:
        return Refusal("early", "Accept it first; then it can be completed.")
    return _closed(facts, actor)


# -- claim timing ------------------------------------------------------------------------
REMIND, ESCALATE = "remind", "escalate"


def claim_deadline(now: datetime, claim_within_minutes: float) -> datetime:
    return now + timedelta(minutes=claim_within_minutes)


def claim_step(status: str, deadline: datetime, reminders_sent: int, now: datetime) -> str | None:
    """What an unclaimed handoff is owed now: one reminder in its thread once the deadline
    passed, then (after another period) one mention of the leads; then nothing."""
    if status != REQUESTED or now < deadline:
        return None
    if reminders_sent <= 0:
        return REMIND
    if reminders_sent == 1:
        return ESCALATE
    return None


# -- parsing -----------------------------------------------------------------------------
def parse_request(args: str) -> tuple[str, str, str | None] | None:
    """`<customer> <department> [note]` -> (customer, department, note); None when malformed."""
    parts = args.split(None, 2)
    if len(parts) < 2:
        return None
    note = parts[2].strip() if len(parts) > 2 else None
    return parts[0], parts[1], (note or None)


def check_note(note: str | None, limit: int = MAX_NOTE) -> str | None:
    """A one-line problem with a note or reason, or None when it is fine."""
    if note is not None and len(note) > limit:
        return f"That note is too long ({len(note)} characters; at most {limit})."
    return None


def check_route(from_department: str | None, to_department: str) -> str | None:
    if from_department is not None and from_department == to_department:
        return "That is your own department: hand the customer to another one."
    return None


LIST_OPEN, LIST_MINE = "open", "mine"


def parse_list_filter(args: str) -> str:
    """`/crm handoffs [open|mine|<department>]`: open, mine, or a department key/name."""
    word = args.strip().lower()
    return word or LIST_OPEN


EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{1,126}[A-Za-z0-9]")
MAX_REFS = 40


def customer_refs(text: str) -> list[str]:
    """Candidate `<customer>` references in a message: email addresses first, then words that
    could be external ids (letters/digits with - _ . : /), each once, at most MAX_REFS."""
    emails = EMAIL.findall(text or "")
    rest = EMAIL.sub(" ", text or "")
    tokens = [t for t in TOKEN.findall(rest) if any(c.isdigit() for c in t)]
    tokens += [t for t in TOKEN.findall(rest) if not any(c.isdigit() for c in t)]
    return list(dict.fromkeys([*emails, *tokens]))[:MAX_REFS]
