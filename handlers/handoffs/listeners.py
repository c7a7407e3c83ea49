"""Handoffs between departments: `/crm handoff`, `/crm handoffs`, the card's `Hand off`
button, the "Hand off customer" message shortcut, and the handoff message's buttons.

Listeners acknowledge at once and work after (bolt lazy listeners); they parse (with the
interaction toolkit), then call `flow`, which holds the units of work, and `rules`, which holds
the rules. A refusal is raised as a UserError: the toolkit's error mapping tells the person.

Cancelling: the requester clicks `Cancel handoff` (action `handoff_cancel`) on the message on
their side; only the requester may, and only while nobody has accepted it. The event contract
has no `handoff.cancelled`, so a cancel is published as `handoff.declined` with
`data.cancelled = true` (and audited as `handoff.cancelled`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import customers as cards
from bot.lib.blocks import handoffs as render
from bot.lib.blocks import reply
from bot.lib.errors import UserError
from bot.lib.interaction import (
    Command,
    ModalMeta,
    Person,
    Submission,
    ack_only,
    lazy,
    open_then_fill,
    parse_click,
    parse_customer_id,
    parse_shortcut,
    parse_submission,
    tell,
)
from handlers import access
from handlers.commands import CommandRouter, clean_text
from handlers.deps import Deps
from handlers.handoffs import flow, rules
from storage.customers import Customers
from storage.handoffs import HandoffQuery, Handoffs

log = logging.getLogger(__name__)

USAGE = "handoff <customer> <department> [note]"
LIST_USAGE = "handoffs [open|mine|<department>]"
HOME_LIMIT = 10
MODAL_TITLE = "Hand off customer"
NO_CUSTOMER_IN_MESSAGE = (
    "I found no customer in that message: it needs a customer's email address or external id."
)


class CreateMeta(ModalMeta):
    """private_metadata of the `Hand off` modal (`channel_id`: where the person opened it)."""

    customer_id: uuid.UUID
    context: str | None = None  # permalink of the message it came from
    # the department the person acts for, as the modal was opened: the modal's own check that
    # they do not hand off to it (the flow checks again, from the directory)
    from_department: str | None = None


class DecideMeta(ModalMeta):
    """private_metadata of the decline-reason modal (`channel_id`: the handoff's channel)."""

    handoff_id: str
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
    """Open handoffs the person's departments are party to (handlers/access.py)."""
    which = rules.parse_list_filter(cmd.args)
    reader = (await access.require(deps, cmd.person)).reader
    if which == rules.LIST_MINE:
        title, query = "Your open handoffs", HandoffQuery(user=cmd.user)
    elif which == rules.LIST_OPEN:
        scope = access.list_scope(reader, None)
        title = "Open handoffs to or from your departments"
        query = HandoffQuery(to_departments=scope.to, from_departments=scope.sent_from)
    else:
        dept = await deps.directory.get(which)
        scope = access.list_scope(reader, dept.key)
        title = f"Open handoffs to {dept.name}" + (" from your departments" if scope.within else "")
        query = HandoffQuery(to_departments=scope.to, within=scope.within)
    names = await flow.dept_names(deps)
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        rows, total = await repo.listing(query)
        records = await repo.records(rows)
    text, blocks = render.handoff_list(title, await flow.with_links(deps, records), total, names)
    return reply(text, blocks)


async def home_section(deps: Deps, user: str) -> list[dict]:
    """The App Home's part: open handoffs the user asked for, is assigned, or that wait for
    one of their departments (home.publish_home checked their access first)."""
    mine = tuple(d.key for d in await deps.directory.departments_of(user))
    names = await flow.dept_names(deps)
    async with deps.db.transaction() as session:
        repo = Handoffs(session, deps.vault)
        query = HandoffQuery(to_departments=mine, user=user)
        rows, total = await repo.listing(query, limit=HOME_LIMIT)
        records = await repo.records(rows)
    return render.handoff_items(await flow.with_links(deps, records), total, names)


# -- helpers -----------------------------------------------------------------------------
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


async def create_modal(deps: Deps, who: Person, meta: CreateMeta) -> dict[str, Any]:
    """The `Hand off` modal for a customer; a UserError when there is nothing to hand off, or
    when `who` may not read customer data."""
    await access.require(deps, who)
    user = who.id
    async with deps.db.transaction() as session:
        repo = Customers(session, deps.vault)
        customer = await repo.get(meta.customer_id)
        if customer is None or customer.erased_at is not None:
            raise UserError(
                "I know no such customer (it may have been erased); nothing to hand off."
            )
        record = repo.read(customer)
    home = await deps.directory.home_of(user, meta.channel_id)
    options = [
        (key, d.name)
        for key, d in (await deps.directory.departments()).items()
        if home is None or key != home.key
    ]
    if not options:
        raise UserError("There is no other department to hand off to.")
    meta = meta.model_copy(update={"from_department": home.key if home else None})
    return render.create_modal(record, options, meta.model_dump_json())


def decline_form(sub: Submission) -> tuple[DecideMeta | None, str, str | None]:
    """(metadata, reason, problem) of a submitted decline modal; its shape only."""
    reason = sub.text(render.REASON_BLOCK, render.REASON_ACTION)
    meta = sub.meta(DecideMeta)
    if meta is None:
        return None, reason, "This form is out of date; click Decline again."
    if not reason:
        return meta, reason, "Please give a reason."
    return meta, reason, rules.check_note(reason, rules.MAX_REASON)


def create_form(sub: Submission) -> tuple[CreateMeta | None, str, str | None, dict[str, str]]:
    """(metadata, department, note, errors by block id) of a submitted `Hand off` modal,
    checked for its shape only (no database, no Slack: the ack must go within 3 s); the flow
    checks the rest and its refusals are told to the person."""
    department = sub.selected(render.DEPT_BLOCK, render.DEPT_ACTION)
    note = sub.text(render.NOTE_BLOCK, render.NOTE_ACTION) or None
    meta = sub.meta(CreateMeta)
    errors: dict[str, str] = {}
    if meta is None:
        errors[render.DEPT_BLOCK] = "This form is out of date; open it again."
        return None, department, note, errors
    if not department:
        errors[render.DEPT_BLOCK] = "Pick a department."
    else:
        problem = rules.check_route(meta.from_department, department.strip().lower())
        if problem:
            errors[render.DEPT_BLOCK] = problem
    problem = rules.check_note(note)
    if problem:
        errors[render.NOTE_BLOCK] = problem
    return meta, department, note, errors


# -- listeners: module-level functions over the flows (registered in `register`) ----------
STEPS = {render.ACCEPT: rules.ACCEPT, render.COMPLETE: rules.COMPLETE, render.CANCEL: rules.CANCEL}


async def on_step(deps: Deps, body: dict) -> None:
    """Accept, Complete or Cancel on a handoff message."""
    click = parse_click(body)
    step = flow.Click(
        click.value, STEPS[click.action_id], click.user, click.channel, click.message_ts
    )
    problem, _ = await flow.act(deps, step)
    if problem:
        raise UserError(problem)


async def on_decline(deps: Deps, body: dict) -> None:
    """Decline: the reason modal, opened only for someone who may decline (checked first, so
    nobody else sees a form they cannot send)."""
    click = parse_click(body)
    step = flow.Click(click.value, rules.DECLINE, click.user, click.channel, click.message_ts)
    problem, record = await flow.act(deps, step, dry_run=True)
    if problem or record is None:
        raise UserError(problem or "Nothing to decline.")
    meta = DecideMeta(
        handoff_id=str(record.id), channel_id=click.channel, message_ts=click.message_ts
    )
    await deps.slack.open_view(
        click.trigger_id or "", render.decline_modal(record, meta.model_dump_json())
    )


async def decline_ack(ack, body) -> None:
    _, _, problem = decline_form(parse_submission(body))
    if problem:
        await ack(response_action="errors", errors={render.REASON_BLOCK: problem})
    else:
        await ack()


async def decline_submitted(deps: Deps, body: dict) -> None:
    sub = parse_submission(body)
    meta, reason, problem = decline_form(sub)
    if problem or meta is None:
        return  # answered in the modal by the ack
    step = flow.Click(
        meta.handoff_id, rules.DECLINE, sub.user, meta.channel_id, meta.message_ts, reason
    )
    problem, _ = await flow.act(deps, step)
    if problem:
        raise UserError(problem)


async def on_card_button(deps: Deps, body: dict) -> None:
    """`Hand off` on a customer card: the modal."""
    click = parse_click(body)
    cid = parse_customer_id(click.value)
    if cid is None:
        raise UserError("That button does not name a customer; nothing to do.")
    meta = CreateMeta(customer_id=cid, channel_id=click.channel)
    await open_then_fill(
        deps.slack, click.trigger_id, MODAL_TITLE, lambda: create_modal(deps, click.person, meta)
    )


async def on_shortcut(deps: Deps, body: dict) -> None:
    """The "Hand off customer" message shortcut: the modal, with the message as context."""
    shortcut = parse_shortcut(body)
    await access.require(deps, shortcut.person)  # first: a refusal says nothing of a customer
    refs = rules.customer_refs(message_text(shortcut.message))
    # Looked up before the modal opens (one blind-index query), so a message that names no
    # customer gets an answer and no modal; the rest is filled in after it opens.
    async with deps.db.transaction() as session:
        customer = await Handoffs(session, deps.vault).customer_named(refs) if refs else None
        cid = customer.id if customer is not None else None
    if cid is None:
        raise UserError(NO_CUSTOMER_IN_MESSAGE)

    async def fill() -> dict[str, Any]:
        link = await flow.permalink(deps, shortcut.channel, shortcut.message_ts)
        meta = CreateMeta(customer_id=cid, channel_id=shortcut.channel, context=link)
        return await create_modal(deps, shortcut.person, meta)

    await open_then_fill(deps.slack, shortcut.trigger_id, MODAL_TITLE, fill)


async def create_ack(ack, body) -> None:
    _, _, _, errors = create_form(parse_submission(body))
    if errors:
        await ack(response_action="errors", errors=errors)
    else:
        await ack()


async def create_submitted(deps: Deps, body: dict) -> None:
    sub = parse_submission(body)
    meta, department, note, errors = create_form(sub)
    if errors or meta is None:
        return  # answered in the modal by the ack
    req = flow.NewHandoff(
        user=sub.user,
        to=department,
        note=note,
        customer_id=meta.customer_id,
        channel=meta.channel_id,
        context=meta.context,
        dedupe_key=f"handoff_create:{sub.view_id}",
    )
    created = await flow.create(deps, req)
    if created is not None and meta.channel_id and meta.channel_id != created.requester_channel:
        await tell(deps.slack, sub.person, flow.confirmation(created), sub.place)


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add("handoff", handoff_command, USAGE, "hand a customer off to another department")
    router.add("handoffs", list_command, LIST_USAGE, "open handoffs, with links")
    for action in STEPS:
        app.action(action)(ack=ack_only, lazy=[lazy(on_step, deps)])
    app.action(render.DECLINE)(ack=ack_only, lazy=[lazy(on_decline, deps)])
    app.view(render.DECLINE_VIEW)(ack=decline_ack, lazy=[lazy(decline_submitted, deps)])
    app.action(cards.HANDOFF)(ack=ack_only, lazy=[lazy(on_card_button, deps)])
    app.shortcut(render.SHORTCUT)(ack=ack_only, lazy=[lazy(on_shortcut, deps)])
    app.view(render.CREATE_VIEW)(ack=create_ack, lazy=[lazy(create_submitted, deps)])


def jobs(deps: Deps) -> list:
    async def claim_reminders() -> None:
        await flow.remind_unclaimed(deps)

    return [("handoff-claim-reminders", 30, claim_reminders)]


__all__ = ["home_section", "jobs", "register"]
