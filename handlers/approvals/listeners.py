"""Approvals: `/crm approval`, `/crm approvals`, the card's `Request approval` modal, the
approve/reject buttons and the reject-reason modal, the expiry job and the App Home section.

Listeners stay thin: they parse, call `approval_flow` (units of work) and `approval_rules`
(the policy), and tell the person. The server decides from its own records only.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import approvals as ui
from bot.lib.blocks import reply
from bot.lib.blocks.customers import APPROVAL as CARD_BUTTON
from bot.lib.slack_out import SlackError
from handlers.approvals import flow, rules
from handlers.commands import Command, CommandRouter, clean_text
from handlers.deps import Deps
from handlers.errors import UserError
from storage.approvals import Approvals, parse_id
from storage.customers import Customers

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 60.0
LIST_USAGE = "approvals [pending|mine]"


# --- typed private_metadata -----------------------------------------------------------------


@dataclass(frozen=True)
class CreateMeta:
    customer_id: str
    channel_id: str | None = None

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str | None) -> CreateMeta | None:
        try:
            raw = json.loads(text or "")
            return cls(customer_id=str(raw["customer_id"]), channel_id=raw.get("channel_id"))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class RejectMeta:
    approval_id: str
    channel_id: str | None = None

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str | None) -> RejectMeta | None:
        try:
            raw = json.loads(text or "")
            return cls(approval_id=str(raw["approval_id"]), channel_id=raw.get("channel_id"))
        except (ValueError, KeyError, TypeError):
            return None


# --- helpers ----------------------------------------------------------------------------------


def _channel_of(body: dict[str, Any]) -> str | None:
    return (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")


def _value_of(body: dict[str, Any]) -> str | None:
    acts = body.get("actions") or [{}]
    return acts[0].get("value")


def _input(view: dict[str, Any], ids: tuple[str, str]) -> dict[str, Any]:
    return ((view.get("state") or {}).get("values") or {}).get(ids[0], {}).get(ids[1]) or {}


async def tell(deps: Deps, user: str, channel: str | None, text: str) -> None:
    """An answer only `user` sees: ephemeral where they clicked, else (or when Slack refuses
    it there) a direct message."""
    try:
        await deps.slack.tell(user, channel, text)
    except SlackError as exc:
        log.warning("could not answer %s: %s", user, exc.kind)


async def _guarded(deps: Deps, what: str, user: str, channel: str | None, work) -> None:
    """Typed errors become an answer to the person; anything else is logged with a reference."""
    try:
        await work
    except UserError as exc:
        await tell(deps, user, channel, str(exc))
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("%s failed (ref %s)", what, ref)
        await tell(deps, user, channel, f"Sorry, that did not work (ref {ref}). Please try again.")


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
    channel = _channel_of(body)
    customer_id = parse_id(_value_of(body))
    async with deps.db.transaction() as session:
        customers = Customers(session, deps.vault)
        customer = await customers.get(customer_id) if customer_id else None
        if customer is None or customer.erased_at is not None:
            raise UserError("I do not know that customer.")
        record = customers.read(customer)
    meta = CreateMeta(customer_id=str(record.id), channel_id=channel)
    await deps.slack.open_view(body["trigger_id"], ui.create_modal(record, meta.dump()))


def parse_modal(view: dict[str, Any]) -> tuple[str, rules.Amount, str | None] | dict[str, str]:
    """(kind, amount, reason) from the request modal, or the modal's errors by block id."""
    option = _input(view, ui.KIND_INPUT).get("selected_option") or {}
    try:
        kind = rules.parse_kind(option.get("value") or "")
    except rules.AmountError as exc:
        return {ui.KIND_INPUT[0]: str(exc)}
    text = (_input(view, ui.AMOUNT_INPUT).get("value") or "").strip()
    try:
        amount = rules.parse_amount(kind, text or ("-" if kind == "exception" else ""))
    except rules.AmountError as exc:
        return {ui.AMOUNT_INPUT[0]: str(exc)}
    reason = clean_text(_input(view, ui.REASON_INPUT).get("value") or "") or None
    if reason and len(reason) > rules.MAX_REASON:
        return {ui.REASON_INPUT[0]: f"At most {rules.MAX_REASON} characters, please."}
    return kind, amount, reason


async def create_from_modal(deps: Deps, body: dict[str, Any], meta: CreateMeta, parsed) -> None:
    user = body["user"]["id"]
    kind, amount, reason = parsed
    view = await flow.create(
        deps,
        user=user,
        channel=meta.channel_id,
        kind=kind,
        amount=amount,
        reason=reason,
        customer_id=parse_id(meta.customer_id),
        dedupe_key=f"approval:view:{body['view']['id']}",
    )
    if view is not None:
        await tell(deps, user, meta.channel_id, ui.confirmation(view, await _permalink(deps, view)))


# --- approve / reject -------------------------------------------------------------------------


async def approve(deps: Deps, body: dict[str, Any]) -> None:
    user, channel = body["user"]["id"], _channel_of(body)
    outcome = await flow.decide(deps, _value_of(body), user, approve=True)
    await _after(deps, user, channel, outcome)


async def _after(deps: Deps, user: str, channel: str | None, outcome: flow.Outcome) -> None:
    if outcome.refusal is not None:
        log.info("approval decision refused for %s: %s", user, outcome.refusal.code)
        await tell(deps, user, channel, outcome.refusal.message)
    elif outcome.view is not None:
        await flow.announce(deps, outcome.view)


async def open_reject_modal(deps: Deps, body: dict[str, Any]) -> None:
    user, channel = body["user"]["id"], _channel_of(body)
    view, refusal = await flow.check(deps, _value_of(body), user)
    if refusal is not None or view is None:
        await tell(deps, user, channel, (refusal or flow.UNKNOWN).message)
        return
    meta = RejectMeta(approval_id=str(view.id), channel_id=channel)
    await deps.slack.open_view(body["trigger_id"], ui.reject_modal(view, meta.dump()))


# --- wiring ---------------------------------------------------------------------------------


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add(
        "approval",
        request_command,
        rules.USAGE,
        "ask the approving department for a discount, refund, credit or exception",
    )
    router.add("approvals", list_command, LIST_USAGE, "approvals waiting for you, or your own")

    def on_click(what: str, work):
        async def listener(ack, body):
            await ack()
            user = body["user"]["id"]
            await _guarded(deps, what, user, _channel_of(body), work(deps, body))

        return listener

    app.action(CARD_BUTTON)(on_click("open approval modal", open_request_modal))
    app.action(ui.APPROVE)(on_click("approve", approve))
    app.action(ui.REJECT)(on_click("open reject modal", open_reject_modal))

    @app.view(ui.CREATE_VIEW)
    async def submit_request(ack, body, view):
        meta = CreateMeta.load(view.get("private_metadata"))
        parsed = parse_modal(view)
        if isinstance(parsed, dict):
            await ack(response_action="errors", errors=parsed)
            return
        if meta is None or parse_id(meta.customer_id) is None:
            await ack(response_action="errors", errors={ui.AMOUNT_INPUT[0]: "This form is stale."})
            return
        await ack()
        user = body["user"]["id"]
        work = create_from_modal(deps, body, meta, parsed)
        await _guarded(deps, "approval request", user, meta.channel_id, work)

    @app.view(ui.REJECT_VIEW)
    async def submit_reject(ack, body, view):
        user = body["user"]["id"]
        meta = RejectMeta.load(view.get("private_metadata"))
        reason = clean_text(_input(view, ui.REASON_INPUT).get("value") or "")
        field = ui.REASON_INPUT[0]
        if not reason:
            await ack(response_action="errors", errors={field: "Please give a reason."})
            return
        if meta is None:
            await ack(response_action="errors", errors={field: flow.UNKNOWN.message})
            return
        try:
            outcome = await flow.decide(deps, meta.approval_id, user, approve=False, reason=reason)
        except UserError as exc:
            await ack(response_action="errors", errors={field: str(exc)})
            return
        if outcome.refusal is not None:
            log.info("approval rejection refused for %s: %s", user, outcome.refusal.code)
            await ack(response_action="errors", errors={field: outcome.refusal.message})
            return
        await ack()
        if outcome.view is not None:
            await _guarded(deps, "reject", user, meta.channel_id, flow.announce(deps, outcome.view))


def jobs(deps: Deps) -> list:
    async def expire() -> None:
        await flow.expire_due(deps)

    return [("approvals.expire", EXPIRY_INTERVAL, expire)]
