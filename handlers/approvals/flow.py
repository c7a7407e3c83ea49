"""The units of work of approvals: ask, decide, expire, and tell everyone concerned.

Each change (the request, a decision, an expiry) is one transaction holding the row change, its
audit entry and its outbox event. Slack is told after the commit; a failure there is logged and
never undoes the decision.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from bot.lib.blocks import esc
from bot.lib.blocks.approvals import ApprovalView, outcome_text, request_message
from bot.lib.errors import NotFound, UserError
from bot.lib.interaction import parse_approval_id
from bot.lib.slack_out import SlackError
from handlers import access
from handlers.approvals import rules
from handlers.changes import Published, record_change
from handlers.deps import Deps
from handlers.home import refresh_homes
from storage.approvals import Approvals
from storage.customers import Customers
from storage.departments import DepartmentView
from storage.models import Approval, Customer, new_id
from storage.slack_requests import first_time

log = logging.getLogger(__name__)

BOT_ACTOR = "crm-bot"
REPOST_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class Outcome:
    view: ApprovalView | None = None  # set when this call made the decision
    refusal: rules.Refusal | None = None
    repeat: bool = False  # the same person made the same decision before (double click, retry)


UNKNOWN = rules.Refusal("unknown", "I do not know that approval request.")


def to_view(
    deps: Deps,
    row: Approval,
    customer: Customer | None,
    customers: Customers,
    departments: dict[str, DepartmentView],
) -> ApprovalView:
    record = customers.read(customer) if customer is not None else None
    readable = customer is not None and customer.erased_at is None

    def open_(column: str, blob: bytes | None) -> str | None:
        if customer is None or not readable or blob is None:
            return None
        return deps.vault.open(customer, "approvals", column, row.id, blob)

    def name(key: str | None) -> str | None:
        dept = departments.get(key or "")
        return dept.name if dept else key

    return ApprovalView(
        id=row.id,
        kind=row.kind,
        amount=row.amount,
        unit=row.unit,
        status=row.status,
        requested_by=row.requested_by,
        department=name(row.department) or row.department,
        department_key=row.department,
        expires_at=row.expires_at,
        created_at=row.created_at,
        customer=record,
        reason=open_("reason", row.reason_ct),
        requester_department=name(row.requester_department),
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=open_("decision_reason", row.decision_reason_ct),
        channel_id=row.channel_id,
        message_ts=row.message_ts,
    )


def event_data(row: Approval, actor: str) -> dict[str, Any]:
    """The outbox event's `data`: ids, kind, amount and state; no personal data."""
    return {
        "approval_id": str(row.id),
        "kind": row.kind,
        "actor": actor,
        "status": row.status,
        "amount": float(row.amount) if row.amount is not None else None,
        "unit": row.unit,
        "department": row.department,
        "requested_by": row.requested_by,
    }


def audit_data(row: Approval) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "amount": str(row.amount) if row.amount is not None else None,
        "unit": row.unit,
        "status": row.status,
        "department": row.department,
    }


async def approving_department(deps: Deps, kind: str) -> DepartmentView:
    key = deps.config.approving_department(kind)
    dept = (await deps.directory.departments()).get(key)
    if dept is None:
        raise UserError(f"No department `{key}` is set up to approve {kind} requests.")
    return dept


# --- asking ---------------------------------------------------------------------------------


async def create(
    deps: Deps,
    *,
    user: str,
    channel: str | None,
    kind: str,
    amount: rules.Amount,
    reason: str | None,
    customer_ref: str | None = None,
    customer_id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
) -> ApprovalView | None:
    """Record a request and post it to the approving department. None for a repeated request
    (the same `dedupe_key` seen before). Only someone who may read customer data asks."""
    await access.require(deps, user)
    dept = await approving_department(deps, kind)
    departments = await deps.directory.departments()
    home = await deps.directory.home_of(user, channel)
    now = deps.clock()
    async with deps.db.transaction() as session:
        if dedupe_key and not await first_time(session, dedupe_key):
            return None
        customers = Customers(session, deps.vault)
        customer = (
            await customers.by_ref(customer_ref)
            if customer_ref is not None
            else await customers.get(customer_id)
            if customer_id
            else None
        )
        if customer is None or customer.erased_at is not None:
            raise NotFound(f"No customer `{esc(str(customer_ref or customer_id)[:80])}`.")
        approval_id = new_id()
        row = await Approvals(session).create(
            approval_id=approval_id,
            customer=customer,
            kind=kind,
            amount=amount.value,
            unit=amount.unit,
            reason_ct=deps.vault.seal(customer, "approvals", "reason", approval_id, reason),
            requested_by=user,
            requester_department=home.key if home else None,
            department=dept.key,
            expires_at=rules.expires_at(now, deps.config.approvals.expire_after_hours),
            created_at=now,
        )
        await record_change(
            session,
            deps,
            actor=user,
            action="approval.requested",
            entity_type="approval",
            entity_id=row.id,
            customer=customer,
            data=audit_data(row),
            details=reason,
            publish=Published("approval.requested", customer.external_id, event_data(row, user)),
        )
        view = to_view(deps, row, customer, customers, departments)
    log.info("approval %s requested (%s) of %s", view.id, kind, dept.key)
    view = await post_request(deps, view, dept)
    await refresh_homes(deps, dept.key, view.requested_by)
    return view


async def post_request(
    deps: Deps, view: ApprovalView, dept: DepartmentView, *, recovering: bool = False
) -> ApprovalView:
    """Post the request in the department's channel and remember where. The post carries the
    approval's key, so a repost after a crash adopts the message that did go out instead of
    posting a second one (with buttons of its own)."""
    text, blocks = request_message(view)
    key = f"approval:{view.id}"
    tried_at = view.created_at.timestamp() if recovering and view.created_at else None
    try:
        posted = await deps.slack.post(dept.channel_id, text, blocks, key=key, tried_at=tried_at)
    except SlackError as exc:
        log.warning("approval %s: could not post the request (%s)", view.id, exc.kind)
        return view
    async with deps.db.transaction() as session:
        row = await Approvals(session).get(view.id, for_update=True)
        if row is None:
            return view
        Approvals(session).set_message(row, posted["channel"], posted["ts"])
        status = row.status
    view = replace(view, channel_id=posted["channel"], message_ts=posted["ts"])
    if status != view.status:  # decided (from the App Home) before the message was stored
        view = await load_view(deps, view.id) or view
        await update_message(deps, view)
    return view


# --- deciding -------------------------------------------------------------------------------


async def load_view(deps: Deps, approval_id: uuid.UUID) -> ApprovalView | None:
    departments = await deps.directory.departments()
    async with deps.db.transaction() as session:
        row = await Approvals(session).get(approval_id)
        if row is None:
            return None
        customers = Customers(session, deps.vault)
        customer = await customers.get(row.customer_id)
        return to_view(deps, row, customer, customers, departments)


async def check(
    deps: Deps, value: str | None, user: str
) -> tuple[ApprovalView | None, rules.Refusal | None]:
    """(the request, why `user` may not decide it or None), changing nothing."""
    approval_id = parse_approval_id(value)
    view = await load_view(deps, approval_id) if approval_id else None
    if view is None:
        return None, UNKNOWN
    return view, await refusal_for(deps, view, user)


def facts_of(view: ApprovalView, dept: DepartmentView | None) -> rules.Facts:
    annual = view.customer.annual_value if view.customer else None
    return rules.Facts(
        kind=view.kind,
        status=view.status,
        requested_by=view.requested_by,
        expires_at=view.expires_at,
        stake=rules.money_at_stake(view.kind, view.amount, annual),
        limit=dept.approval_limit if dept else None,
        decided_by=view.decided_by,
    )


async def refusal_for(
    deps: Deps,
    view: ApprovalView,
    user: str,
    departments: dict[str, DepartmentView] | None = None,
) -> rules.Refusal | None:
    departments = departments if departments is not None else await deps.directory.departments()
    dept = departments.get(view.department_key)
    return rules.may_decide(
        facts_of(view, dept),
        user,
        is_member=dept is not None and await deps.directory.is_member(dept, user),
        is_lead=dept is not None and user in dept.leads,
        now=deps.clock(),
        department=view.department,
    )


async def decide(
    deps: Deps, value: str | None, user: str, *, approve: bool, reason: str | None = None
) -> Outcome:
    """Approve or reject: the row is locked, the rules checked against the server's own records,
    and the decision, its audit entry and its outbox event committed together."""
    approval_id = parse_approval_id(value)
    if approval_id is None:
        return Outcome(refusal=UNKNOWN)
    departments = await deps.directory.departments()
    async with deps.db.transaction() as session:  # which department, to look up membership
        row = await Approvals(session).get(approval_id)
        dept_key = row.department if row else None
    if dept_key is None:
        return Outcome(refusal=UNKNOWN)
    dept = departments.get(dept_key)
    is_member = dept is not None and await deps.directory.is_member(dept, user)
    status = rules.APPROVED if approve else rules.REJECTED
    now = deps.clock()
    async with deps.db.transaction() as session:
        repo = Approvals(session)
        row = await repo.get(approval_id, for_update=True)
        if row is None:
            return Outcome(refusal=UNKNOWN)
        customers = Customers(session, deps.vault)
        customer = await customers.get(row.customer_id)
        if row.status == status and row.decided_by == user:
            return Outcome(repeat=True)
        before = to_view(deps, row, customer, customers, departments)
        refusal = rules.may_decide(
            facts_of(before, dept),
            user,
            is_member=is_member,
            is_lead=dept is not None and user in dept.leads,
            now=now,
            department=dept.name if dept else dept_key,
        )
        if refusal is not None:
            return Outcome(refusal=refusal)
        if customer is None or customer.erased_at is not None:
            raise UserError("This customer was erased; the request can no longer be decided.")
        reason = (reason or "").strip() or None
        await repo.decide(
            row,
            status=status,
            by=user,
            at=now,
            reason_ct=deps.vault.seal(customer, "approvals", "decision_reason", row.id, reason),
        )
        await record_change(
            session,
            deps,
            actor=user,
            action=f"approval.{status}",
            entity_type="approval",
            entity_id=row.id,
            customer=customer,
            data=audit_data(row),
            details=reason,
            publish=Published(f"approval.{status}", customer.external_id, event_data(row, user)),
        )
        view = to_view(deps, row, customer, customers, departments)
    log.info("approval %s %s by %s", view.id, status, user)
    return Outcome(view=view)


# --- telling --------------------------------------------------------------------------------


async def update_message(deps: Deps, view: ApprovalView) -> None:
    if not (view.channel_id and view.message_ts):
        return
    text, blocks = request_message(view)
    try:
        await deps.slack.update(view.channel_id, view.message_ts, text, blocks)
    except SlackError as exc:
        log.warning("approval %s: could not update its message (%s)", view.id, exc.kind)


async def announce(deps: Deps, view: ApprovalView) -> None:
    """After a decision or an expiry: the message, a reply in its thread, a DM, the homes."""
    await update_message(deps, view)
    text = outcome_text(view)
    if view.channel_id and view.message_ts:
        try:
            await deps.slack.post(view.channel_id, text, thread_ts=view.message_ts)
        except SlackError as exc:
            log.warning("approval %s: no thread reply (%s)", view.id, exc.kind)
    try:
        await deps.slack.dm(view.requested_by, text)
    except SlackError as exc:
        log.warning("approval %s: no direct message (%s)", view.id, exc.kind)
    await refresh_homes(deps, view.department_key, view.requested_by)


# --- expiring -------------------------------------------------------------------------------


async def expire_due(deps: Deps) -> int:
    """Mark pending requests past their time as expired, and show it; also post requests
    whose message never reached Slack. Returns how many expired."""
    now = deps.clock()
    departments = await deps.directory.departments()
    async with deps.db.transaction() as session:
        due = await Approvals(session).due_to_expire(now)
        unposted = await Approvals(session).unposted(now - REPOST_AFTER)
    expired = 0
    for approval_id in due:
        async with deps.db.transaction() as session:
            repo = Approvals(session)
            row = await repo.get(approval_id, for_update=True)
            if row is None or row.status != rules.PENDING or row.expires_at > now:
                continue
            await repo.decide(row, status=rules.EXPIRED, by=None, at=now)
            customers = Customers(session, deps.vault)
            customer = await customers.get(row.customer_id)
            await record_change(
                session,
                deps,
                actor=BOT_ACTOR,
                action="approval.expired",
                entity_type="approval",
                entity_id=row.id,
                customer=customer,
                data=audit_data(row),
            )
            view = to_view(deps, row, customer, customers, departments)
        expired += 1
        log.info("approval %s expired", approval_id)
        await announce(deps, view)
    for approval_id in unposted:
        unposted_view = await load_view(deps, approval_id)
        dept = departments.get(unposted_view.department_key) if unposted_view else None
        if unposted_view is not None and unposted_view.message_ts is None and dept is not None:
            await post_request(deps, unposted_view, dept, recovering=True)
    return expired
