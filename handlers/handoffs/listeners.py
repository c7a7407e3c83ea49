"""Handoffs between departments: `/crm handoff`, `/crm handoffs`, the card's `Hand off`
button, the "Hand off customer" message shortcut, and the handoff message's buttons.

Listeners acknowledge at once and work after (bolt lazy listeners); they parse, then call
`handoff_flow`, which holds the units of work, and `handoff_rules`, which holds the rules.

Cancelling: the requester clicks `Cancel handoff` (action `handoff_cancel`) on the message on
their side; only the requester may, and only while nobody has accepted it. The event contract
has no `handoff.cancelled`, so a cancel is published as `handoff.declined` with
`data.cancelled = true` (and audited as `handoff.cancelled`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import customers as cards
from bot.lib.blocks import handoffs as render
from bot.lib.blocks import reply
from bot.lib.slack_out import SlackError
from handlers.commands import Command, CommandRouter, clean_text
from handlers.deps import Deps
from handlers.errors import NotFound, UserError
from handlers.handoffs import flow, rules
from storage.customers import Customers
from storage.handoffs import Handoffs

log = logging.getLogger(__name__)

USAGE = "handoff <customer> <department> [note]"
LIST_USAGE = "handoffs [open|mine|<department>]"
HOME_LIMIT = 10
SORRY = "Sorry, that did not work; it was logged (ref {ref}). Please try again."


class CreateMeta(BaseModel):
    """private_metadata of the `Hand off` modal."""

    customer_id: uuid.UUID
    channel: str | None = None  # where the person opened it
    context: str | None = None  # permalink of the message it came from


class DecideMeta(BaseModel):
    """private_metadata of the decline-reason modal."""

    handoff_id: str
    channel: str | None = None
    message_ts: str | None = None


# -- commands ----------------------------------------------------------------------------
async def handoff_command(deps: Deps, cmd: Command) -> dict[str, Any]:
    parsed = rules.parse_request(cmd.args)
    if parsed is None:
        raise UserError(f"Usage: `/crm {USAGE}`")
    ref, department, note = parsed
    created = await flow.create(
        deps,
        flow.NewHandoff(
            user=cmd.user,
            to=department,
            note=note,
            customer_ref=ref,
            channel=cmd.channel,
            requester_channel=cmd.channel,
        ),
    )
    assert created is not None
    return reply(flow.confirmation(created))


async def list_command(deps: Deps, cmd: Command) -> dict[str, Any]:
    which = rules.parse_list_filter(cmd.args)
    if which == rules.LIST_MINE:
        title, query = "Your open handoffs", {"user": cmd.user}
    elif which == rules.LIST_OPEN:
        mine = [d.key for d in await deps.directory.departments_of(cmd.user)]
        if mine:
            title = "Open handoffs to or from your departments"
            query = {"to_departments": mine, "from_departments": mine}
        else:
            title, query = "Open handoffs", {"everyone": True}
    else:
        dept = await deps.directory.get(which)
        title, query = f"Open handoffs to {dept.name}", {"to_departments": [dept.key]}
    names = await flow.dept_names(deps)
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        rows, total = await repo.listing(**query)
        records = await repo.records(rows)
    text, blocks = render.handoff_list(title, await flow.with_links(deps, records), total, names)
    return reply(text, blocks)


async def home_section(deps: Deps, user: str) -> list[dict]:
    """The App Home's part: open handoffs the user asked for, is assigned, or that wait for
    one of their departments."""
    mine = [d.key for d in await deps.directory.departments_of(user)]
    names = await flow.dept_names(deps)
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        rows, total = await repo.listing(to_departments=mine, user=user, limit=HOME_LIMIT)
        records = await repo.records(rows)
    return render.handoff_items(await flow.with_links(deps, records), total, names)


# -- helpers -----------------------------------------------------------------------------
async def safely(what: str, work: Awaitable[Any]) -> tuple[Any, str | None]:
    """(result, None), or (None, what to tell the person)."""
    try:
        return await work, None
    except UserError as exc:
        return None, str(exc)
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("%s failed (ref %s)", what, ref)
        return None, SORRY.format(ref=ref)


async def tell(deps: Deps, channel: str | None, user: str, text: str) -> None:
    """An ephemeral answer where the person is, or a DM when that is not possible."""
    try:
        await deps.slack.tell(user, channel, text)
    except SlackError as exc:
        log.warning("DM answer failed (%s)", exc.kind)


def clicked(body: dict) -> tuple[str, Any, str | None, str | None]:
    """(user, value, channel, message_ts) of a button click."""
    container = body.get("container") or {}
    action = (body.get("actions") or [{}])[0]
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return body["user"]["id"], action.get("value"), channel, container.get("message_ts")


def message_text(message: dict) -> str:
    """A message's text and the texts of its blocks (sections, fields, context)."""
    parts = [message.get("text") or ""]
    for block in message.get("blocks") or []:
        for item in [
            block.get("text"),
            *(block.get("fields") or []),
            *(block.get("elements") or []),
        ]:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(item["text"])
    return clean_text("\n".join(parts))[:5000]


async def open_create_modal(deps: Deps, trigger_id: str, user: str, meta: CreateMeta) -> str | None:
    """Open the `Hand off` modal for a customer; returns a refusal instead when there is none."""
    async with deps.db.transaction() as session:
        repo = Customers(session, deps.vault)
        customer = await repo.get(meta.customer_id)
        if customer is None or customer.erased_at is not None:
            return "I know no such customer (it may have been erased); nothing to hand off."
        record = repo.read(customer)
    home = await deps.directory.home_of(user, meta.channel)
    options = [
        (key, d.name)
        for key, d in (await deps.directory.departments()).items()
        if home is None or key != home.key
    ]
    if not options:
        return "There is no other department to hand off to."
    view = render.create_modal(record, options, meta.model_dump_json())
    await deps.slack.open_view(trigger_id, view)
    return None


def _value(view: dict, block: str, action: str) -> dict:
    state = (view.get("state") or {}).get("values") or {}
    return (state.get(block) or {}).get(action) or {}


def decline_form(view: dict) -> tuple[DecideMeta | None, str, str | None]:
    """(metadata, reason, problem) of a submitted decline modal."""
    reason = (_value(view, render.REASON_BLOCK, render.REASON_ACTION).get("value") or "").strip()
    try:
        meta = DecideMeta.model_validate_json(view.get("private_metadata") or "")
    except ValidationError:
        return None, reason, "This form is out of date; click Decline again."
    if not reason:
        return meta, reason, "Please give a reason."
    return meta, reason, rules.check_note(reason, rules.MAX_REASON)


@dataclass
class CreateForm:
    meta: CreateMeta | None
    department: str
    note: str | None
    errors: dict[str, str]


async def create_form(deps: Deps, user: str, view: dict) -> CreateForm:
    """A submitted `Hand off` modal, checked: errors by block id (empty when fine)."""
    selected = _value(view, render.DEPT_BLOCK, render.DEPT_ACTION).get("selected_option") or {}
    department = str(selected.get("value") or "")
    note = (_value(view, render.NOTE_BLOCK, render.NOTE_ACTION).get("value") or "").strip()
    form = CreateForm(None, department, note or None, {})
    try:
        form.meta = CreateMeta.model_validate_json(view.get("private_metadata") or "")
    except ValidationError:
        form.errors[render.DEPT_BLOCK] = "This form is out of date; open it again."
        return form
    try:
        to = await deps.directory.get(department) if department else None
    except NotFound:
        to = None
    if to is None:
        form.errors[render.DEPT_BLOCK] = "Pick a department."
    else:
        home = await deps.directory.home_of(user, form.meta.channel)
        problem = rules.check_route(home.key if home else None, to.key)
        if problem:
            form.errors[render.DEPT_BLOCK] = problem
    problem = rules.check_note(form.note)
    if problem:
        form.errors[render.NOTE_BLOCK] = problem
    return form


# -- listeners ---------------------------------------------------------------------------
def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add("handoff", handoff_command, USAGE, "hand a customer off to another department")
    router.add("handoffs", list_command, LIST_USAGE, "open handoffs, with links")

    async def ack_now(ack):
        await ack()

    def step(action: str):
        async def on_click(body):
            user, value, channel, ts = clicked(body)
            click = flow.Click(value, action, user, channel, ts)
            result, problem = await safely(f"handoff {action}", flow.act(deps, click))
            problem = problem or (result[0] if result else None)
            if problem:
                await tell(deps, channel, user, problem)

        return on_click

    app.action(render.ACCEPT)(ack=ack_now, lazy=[step(rules.ACCEPT)])
    app.action(render.COMPLETE)(ack=ack_now, lazy=[step(rules.COMPLETE)])
    app.action(render.CANCEL)(ack=ack_now, lazy=[step(rules.CANCEL)])

    async def on_decline(body):
        user, value, channel, ts = clicked(body)
        click = flow.Click(value, rules.DECLINE, user, channel, ts)
        result, problem = await safely("handoff decline", flow.act(deps, click, dry_run=True))
        problem = problem or (result[0] if result else None)
        if problem or not result:
            await tell(deps, channel, user, problem or "Nothing to decline.")
            return
        record = result[1]
        meta = DecideMeta(handoff_id=str(record.id), channel=channel, message_ts=ts)
        view = render.decline_modal(record, meta.model_dump_json())
        _, problem = await safely("decline modal", deps.slack.open_view(body["trigger_id"], view))
        if problem:
            await tell(deps, channel, user, problem)

    app.action(render.DECLINE)(ack=ack_now, lazy=[on_decline])

    async def decline_ack(ack, view):
        _, _, problem = decline_form(view)
        if problem:
            await ack(response_action="errors", errors={render.REASON_BLOCK: problem})
        else:
            await ack()

    async def decline_submitted(body, view):
        meta, reason, problem = decline_form(view)
        if problem or meta is None:
            return  # answered in the modal by the ack
        user = body["user"]["id"]
        click = flow.Click(
            meta.handoff_id, rules.DECLINE, user, meta.channel, meta.message_ts, reason
        )
        result, problem = await safely("handoff decline", flow.act(deps, click))
        problem = problem or (result[0] if result else None)
        if problem:
            await tell(deps, meta.channel, user, problem)

    app.view(render.DECLINE_VIEW)(ack=decline_ack, lazy=[decline_submitted])

    async def on_card_button(body):
        user, value, channel, _ = clicked(body)
        cid = rules.parse_id(value)
        if cid is None:
            await tell(deps, channel, user, "That button does not name a customer; nothing to do.")
            return
        meta = CreateMeta(customer_id=cid, channel=channel)
        refusal, problem = await safely(
            "handoff modal", open_create_modal(deps, body["trigger_id"], user, meta)
        )
        if refusal or problem:
            await tell(deps, channel, user, refusal or problem)

    app.action(cards.HANDOFF)(ack=ack_now, lazy=[on_card_button])

    async def on_shortcut(body):
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        refs = rules.customer_refs(message_text(message))
        async with deps.db.transaction() as session:
            customer = await Handoffs(session, deps.vault).customer_named(refs) if refs else None
            cid = customer.id if customer is not None else None
        if cid is None:
            await tell(
                deps,
                channel,
                user,
                "I found no customer in that message: it needs a customer's email address "
                "or external id.",
            )
            return
        link = await flow.permalink(deps, channel, body.get("message_ts") or message.get("ts"))
        meta = CreateMeta(customer_id=cid, channel=channel, context=link)
        refusal, problem = await safely(
            "handoff modal", open_create_modal(deps, body["trigger_id"], user, meta)
        )
        if refusal or problem:
            await tell(deps, channel, user, refusal or problem)

    app.shortcut(render.SHORTCUT)(ack=ack_now, lazy=[on_shortcut])

    async def create_ack(ack, body, view):
        form = await create_form(deps, body["user"]["id"], view)
        if form.errors:
            await ack(response_action="errors", errors=form.errors)
        else:
            await ack()

    async def create_submitted(body, view):
        user = body["user"]["id"]
        form = await create_form(deps, user, view)
        if form.errors or form.meta is None:
            return  # answered in the modal by the ack
        meta = form.meta
        req = flow.NewHandoff(
            user=user,
            to=form.department,
            note=form.note,
            customer_id=meta.customer_id,
            channel=meta.channel,
            context=meta.context,
            dedupe_key=f"handoff_create:{view['id']}",
        )
        created, problem = await safely("handoff create", flow.create(deps, req))
        if problem:
            await tell(deps, meta.channel, user, problem)
        elif created is not None and meta.channel and meta.channel != created.requester_channel:
            await tell(deps, meta.channel, user, flow.confirmation(created))

    app.view(render.CREATE_VIEW)(ack=create_ack, lazy=[create_submitted])


def jobs(deps: Deps) -> list:
    async def claim_reminders() -> None:
        await flow.remind_unclaimed(deps)

    return [("handoff-claim-reminders", 30, claim_reminders)]


__all__ = ["home_section", "jobs", "register"]
