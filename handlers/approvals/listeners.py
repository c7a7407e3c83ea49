"""Approvals: `/crm approval`, `/crm approvals`, the card's `Request approval` modal, the
approve/reject buttons and the reject-reason modal, the expiry job and the App Home section.

Listeners stay thin: they ack, then (as bolt lazy listeners) parse with the interaction
toolkit, call `flow` (units of work) and `rules` (the policy), and tell the person; a refusal
is raised as a UserError for the toolkit's error mapping to tell. The server decides from its
own records only.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import approvals as ui
from bot.lib.blocks import reply
from bot.lib.blocks.customers import APPROVAL as CARD_BUTTON
from bot.lib.errors import UserError
from bot.lib.interaction import (
    Command,
    ModalMeta,
    Submission,
    ack_only,
    lazy,
    open_then_fill,
    parse_click,
    parse_customer_id,
    parse_submission,
    tell,
)
from bot.lib.slack_out import SlackError
from handlers.approvals import flow, rules
from handlers.commands import CommandRouter, clean_text
from handlers.deps import Deps
from storage.approvals import Approvals
from storage.customers import Customers

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 60.0
LIST_USAGE = "approvals [pending|mine]"
STALE = "This form is stale."


# --- typed private_metadata -----------------------------------------------------------------


class CreateMeta(ModalMeta):
    """private_metadata of the request modal (`channel_id`: where the card's button was)."""

    customer_id: uuid.UUID


class RejectMeta(ModalMeta):
    """private_metadata of the reject-reason modal (`channel_id`: the approval's channel)."""

    approval_id: str


async def _permalink(deps: Deps, view: ui.ApprovalView) -> str | None:
    if not (view.channel_id and view.message_ts):
        return None
    try:
        return await deps.slack.permalink(view.channel_id, view.message_ts)
    except SlackError:
        return None


# --- commands -------------------------------------------------------------------------------


async def request_command(deps: Deps, cmd: Command) -> dict[str, Any] | None:
    try:
        args = rules.parse_request(cmd.args)
    except rules.AmountError as exc:
        raise UserError(f"{exc} Usage: `/crm {rules.USAGE}`") from None
    view = await flow.create(
        deps,
        user=cmd.user,
        channel=cmd.channel,
        kind=args.kind,
        amount=args.amount,
        reason=args.reason,
        customer_ref=args.customer,
        dedupe_key=f"approval:cmd:{cmd.trigger_id}" if cmd.trigger_id else None,
    )
    if view is None:
        return None
    return reply(ui.confirmation(view, await _permalink(deps, view)))


async def list_command(deps: Deps, cmd: Command) -> dict[str, Any]:
    which = cmd.args.strip().lower() or "pending"
    if which not in ("pending", "mine"):
        raise UserError(f"Usage: `/crm {LIST_USAGE}`")
    if which == "mine":
        views = await _views(deps, lambda repo: repo.requested_by(cmd.user, limit=20))
        text, blocks = ui.list_reply("Your approval requests", views, "You have asked for none.")
        return reply(text, blocks)
    keys = [d.key for d in await deps.directory.departments_of(cmd.user)]
    views = await _views(deps, lambda repo: repo.pending_in(keys))
    text, blocks = ui.list_reply(
        "Pending approvals in your departments", views, "No approvals are waiting."
    )
    return reply(text, blocks)


async def _views(deps: Deps, query) -> list[ui.ApprovalView]:
    departments = await deps.directory.departments()
    async with deps.db.transaction() as session:
        repo = Approvals(session)
        customers = Customers(session, deps.vault)
        pairs = await repo.with_customers(await query(repo))
        return [flow.to_view(deps, a, c, customers, departments) for a, c in pairs]


async def home_section(deps: Deps, user: str) -> list[dict]:
    """Pending requests `user` may decide (with buttons), and their own pending requests."""
    departments = await deps.directory.departments()
    mine_depts = await deps.directory.departments_of(user)
    pending = await _views(deps, lambda repo: repo.pending_in([d.key for d in mine_depts]))
    to_decide = [v for v in pending if await flow.refusal_for(deps, v, user, departments) is None]
    own = await _views(deps, lambda repo: repo.requested_by(user, pending_only=True))
    return ui.home_section(to_decide, own)


# --- the card's button and the request modal ------------------------------------------------


async def open_request_modal(deps: Deps, body: dict[str, Any]) -> None:
    """`Request approval` on a card: the request modal, opened at once and then filled."""
    click = parse_click(body)
    customer_id = parse_customer_id(click.value)

    async def fill() -> dict[str, Any]:
        async with deps.db.transaction() as session:
            customers = Customers(session, deps.vault)
            customer = await customers.get(customer_id) if customer_id else None
            if customer is None or customer.erased_at is not None:
                raise UserError("I do not know that customer.")
            record = customers.read(customer)
        meta = CreateMeta(customer_id=record.id, channel_id=click.channel)
        return ui.create_modal(record, meta.model_dump_json())

    await open_then_fill(deps.slack, click.trigger_id, "Request approval", fill)


@dataclass(frozen=True)
class RequestForm:
    meta: CreateMeta
    kind: str
    amount: rules.Amount
    reason: str | None


def request_form(sub: Submission) -> tuple[RequestForm | None, dict[str, str]]:
    """The request modal, checked for its shape: (the request, None) or (None, the modal's
    errors by block id)."""
    try:
        kind = rules.parse_kind(sub.selected(*ui.KIND_INPUT))
    except rules.AmountError as exc:
        return None, {ui.KIND_INPUT[0]: str(exc)}
    text = sub.text(*ui.AMOUNT_INPUT)
    try:
        amount = rules.parse_amount(kind, text or ("-" if kind == "exception" else ""))
    except rules.AmountError as exc:
        return None, {ui.AMOUNT_INPUT[0]: str(exc)}
    reason = clean_text(sub.input(*ui.REASON_INPUT).get("value") or "") or None
    if reason and len(reason) > rules.MAX_REASON:
        return None, {ui.REASON_INPUT[0]: f"At most {rules.MAX_REASON} characters, please."}
    meta = sub.meta(CreateMeta)
    if meta is None:
        return None, {ui.AMOUNT_INPUT[0]: STALE}
    return RequestForm(meta, kind, amount, reason), {}


async def request_ack(ack, body) -> None:
    _, errors = request_form(parse_submission(body))
    if errors:
        await ack(response_action="errors", errors=errors)
    else:
        await ack()


async def create_from_modal(deps: Deps, body: dict[str, Any]) -> None:
    sub = parse_submission(body)
    form, _ = request_form(sub)
    if form is None:
        return  # answered in the modal by the ack
    view = await flow.create(
        deps,
        user=sub.user,
        channel=form.meta.channel_id,
        kind=form.kind,
        amount=form.amount,
        reason=form.reason,
        customer_id=form.meta.customer_id,
        dedupe_key=f"approval:view:{sub.view_id}",
    )
    if view is not None:
        text = ui.confirmation(view, await _permalink(deps, view))
        await tell(deps.slack, sub.person, text, sub.place)


# --- approve / reject -------------------------------------------------------------------------


def _refused(user: str, refusal: rules.Refusal) -> UserError:
    log.info("approval decision refused for %s: %s", user, refusal.code)
    return UserError(refusal.message)


async def approve(deps: Deps, body: dict[str, Any]) -> None:
    click = parse_click(body)
    outcome = await flow.decide(deps, click.value, click.user, approve=True)
    if outcome.refusal is not None:
        raise _refused(click.user, outcome.refusal)
    if outcome.view is not None:
        await flow.announce(deps, outcome.view)


async def open_reject_modal(deps: Deps, body: dict[str, Any]) -> None:
    """Reject: the reason modal, opened only for someone who may decide (checked first, so
    nobody else sees a form they cannot send)."""
    click = parse_click(body)
    view, refusal = await flow.check(deps, click.value, click.user)
    if refusal is not None or view is None:
        raise _refused(click.user, refusal or flow.UNKNOWN)
    meta = RejectMeta(approval_id=str(view.id), channel_id=click.channel)
    await deps.slack.open_view(
        click.trigger_id or "", ui.reject_modal(view, meta.model_dump_json())
    )


def reject_form(sub: Submission) -> tuple[RejectMeta | None, str, dict[str, str]]:
    """(metadata, reason, the modal's errors) of a submitted reject modal; its shape only."""
    reason = clean_text(sub.input(*ui.REASON_INPUT).get("value") or "")
    field = ui.REASON_INPUT[0]
    if not reason:
        return None, reason, {field: "Please give a reason."}
    meta = sub.meta(RejectMeta)
    if meta is None:
        return None, reason, {field: flow.UNKNOWN.message}
    return meta, reason, {}


async def reject_ack(ack, body) -> None:
    _, _, errors = reject_form(parse_submission(body))
    if errors:
        await ack(response_action="errors", errors=errors)
    else:
        await ack()


async def reject(deps: Deps, body: dict[str, Any]) -> None:
    """The reason was given: decide, after the ack (a refusal is told where the message is)."""
    sub = parse_submission(body)
    meta, reason, _ = reject_form(sub)
    if meta is None:
        return  # answered in the modal by the ack
    outcome = await flow.decide(deps, meta.approval_id, sub.user, approve=False, reason=reason)
    if outcome.refusal is not None:
        raise _refused(sub.user, outcome.refusal)
    if outcome.view is not None:
        await flow.announce(deps, outcome.view)


# --- wiring ---------------------------------------------------------------------------------


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add(
        "approval",
        request_command,
        rules.USAGE,
        "ask the approving department for a discount, refund, credit or exception",
    )
    router.add("approvals", list_command, LIST_USAGE, "approvals waiting for you, or your own")
    app.action(CARD_BUTTON)(ack=ack_only, lazy=[lazy(open_request_modal, deps)])
    app.action(ui.APPROVE)(ack=ack_only, lazy=[lazy(approve, deps)])
    app.action(ui.REJECT)(ack=ack_only, lazy=[lazy(open_reject_modal, deps)])
    app.view(ui.CREATE_VIEW)(ack=request_ack, lazy=[lazy(create_from_modal, deps)])
    app.view(ui.REJECT_VIEW)(ack=reject_ack, lazy=[lazy(reject, deps)])


def jobs(deps: Deps) -> list:
    async def expire() -> None:
        await flow.expire_due(deps)

    return [("approvals.expire", EXPIRY_INTERVAL, expire)]
