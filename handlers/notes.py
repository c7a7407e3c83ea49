"""Notes from Slack onto the shared record: `/crm note <customer> <text>`, the card's
`Add note` button and the "Add to customer record" message shortcut.

A note is a timeline entry of kind `note` (storage/notes.py: sealed under the customer's key),
added in ONE transaction with its audit entry, its outbox event `note.added` (the customer by
external id, the note's id, author and department: never its text) and a pending alert row
for the owning department's channel, which the sync delivery posts in that customer's thread
like any other alert (handlers/sync/delivery.py: posted once, coalesced, retried).

Decisions where the issue is silent:
- Who may add: members of a configured department (the note says which department it came
  from: the channel's when the author belongs to it, else their first).
- The alert goes to the owning department's channel, also when the author is in it (the rest
  of the team learns of it); a customer with no owning department gets no alert.
- From a message: the note's text is the message's (editable in the modal) and the link is the
  message's permalink; the modal's customer field is prefilled with the first email address or
  external id in the message that is a customer, and empty when it names none. The modal is
  checked for its shape only when submitted (the ack goes before any database work); a
  customer typed there that the bot does not know is told to the person afterwards.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import notes as render
from bot.lib.blocks import reply
from bot.lib.blocks.customers import label
from bot.lib.errors import Forbidden, NotFound, UserError
from bot.lib.interaction import (
    Command,
    ModalMeta,
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
from handlers.changes import Published, record_change
from handlers.commands import CommandRouter, clean_text
from handlers.deps import Deps
from handlers.handoffs.flow import permalink
from handlers.handoffs.listeners import message_text
from handlers.handoffs.rules import customer_refs
from handlers.sync.apply import syncer
from storage import notes as store
from storage import sync_ledger as ledger
from storage.customers import Customers
from storage.departments import all_departments
from storage.handoffs import Handoffs
from storage.slack_requests import first_time

log = logging.getLogger(__name__)

USAGE = "note <customer> <text>"
EVENT = "note.added"


class NoteMeta(ModalMeta):
    """private_metadata of the `Add note` modal (and `channel_id`, where it was opened)."""

    customer_id: uuid.UUID | None = None  # from the card; else the modal asks
    permalink: str | None = None


# --- rules -------------------------------------------------------------------------------------


def parse_command(args: str) -> tuple[str, str]:
    """(customer ref, note text) of `/crm note`, or a UserError with the usage line."""
    ref, _, text = args.strip().partition(" ")
    text = text.strip()
    if not ref or not text:
        raise UserError(f"Usage: `/crm {USAGE}` (the customer's email address or external id)")
    return ref, check_text(text)


def check_text(text: str) -> str:
    text = clean_text(text)
    if not text:
        raise UserError("The note is empty.")
    if len(text) > render.NOTE_LIMIT:
        raise UserError(f"That note is too long (at most {render.NOTE_LIMIT} characters).")
    return text


def alert_line(author: str, department_name: str | None, text: str) -> str:
    dept = f" ({department_name})" if department_name else ""
    return f"Note from <@{author}>{dept}: {text}"


# --- the unit of work --------------------------------------------------------------------------


@dataclass
class NewNote:
    user: str
    text: str
    customer_ref: str | None = None
    customer_id: uuid.UUID | None = None
    channel: str | None = None
    permalink: str | None = None
    dedupe_key: str | None = None


async def add(deps: Deps, req: NewNote) -> str | None:
    """Add the note; the confirmation to show, or None for a repeated submission."""
    home = await deps.directory.home_of(req.user, req.channel)
    if home is None:
        raise Forbidden("Only members of a department can add notes to customer records.")
    text = check_text(req.text)
    now = deps.clock()
    async with deps.db.transaction() as session:
        if req.dedupe_key and not await first_time(session, req.dedupe_key):
            return None
        repo = Customers(session, deps.vault)
        if req.customer_id is not None:
            customer = await repo.get(req.customer_id)
        else:
            customer = await repo.by_ref(req.customer_ref or "")
        if customer is None or customer.erased_at is not None:
            shown = (req.customer_ref or "that customer")[:80]
            raise NotFound(f"I know no customer `{shown}` (use an email address or external id).")
        entry = store.add(
            session,
            deps.vault,
            customer,
            text=text,
            author=req.user,
            department=home.key,
            permalink=req.permalink,
            now=now,
        )
        data = {"note_id": str(entry.id), "actor": req.user, "department": home.key}
        await record_change(
            session,
            deps,
            actor=req.user,
            action=EVENT,
            entity_type="note",
            entity_id=entry.id,
            customer=customer,
            data=data,
            publish=Published(EVENT, customer.external_id, data),
        )
        departments = await all_departments(session)
        owner = departments.get(customer.owner_department or "")
        if owner is not None and owner.channel_id:
            writes = ledger.Writes(deps.vault)
            writes.add_alert(
                customer,
                event_id=entry.event_id or f"note:{entry.id}",
                channel_id=owner.channel_id,
                line=alert_line(req.user, home.name, text),
                placement="thread",
                broadcast=False,
            )
            await session.flush()
            await writes.write(session)
        who = label(repo.read(customer))
        customer_id = customer.id
    if owner is not None:
        syncer(deps).delivery.start(customer_id)
    log.info("note %s added to customer %s by %s", entry.id, customer_id, req.user)
    return f"Added your note to {who}'s record."


# --- listeners (on the interaction toolkit) ---------------------------------------------------

MODAL_TITLE = "Add to customer record"


async def note_command(deps: Deps, cmd: Command) -> dict:
    await access.require(deps, cmd.person)
    ref, text = parse_command(cmd.args)
    done = await add(deps, NewNote(user=cmd.user, text=text, customer_ref=ref, channel=cmd.channel))
    return reply(done or "That note was added already.")


def note_form(sub: Submission) -> tuple[NoteMeta | None, NewNote | None, dict[str, str]]:
    """(metadata, the note, errors by block id) of a submitted `Add note` modal, checked for
    its shape only (no database: the ack must go within 3 s)."""
    meta = sub.meta(NoteMeta)
    if meta is None:
        return None, None, {render.TEXT_BLOCK: "This form is out of date; open it again."}
    errors: dict[str, str] = {}
    text = sub.text(render.TEXT_BLOCK, render.TEXT_ACTION)
    try:
        text = check_text(text)
    except UserError as exc:
        errors[render.TEXT_BLOCK] = str(exc)
    ref = sub.text(render.CUSTOMER_BLOCK, render.CUSTOMER_ACTION) or None
    if meta.customer_id is None and not ref:
        errors[render.CUSTOMER_BLOCK] = "Name the customer: an email address or external id."
    note = NewNote(
        user=sub.user,
        text=text,
        customer_ref=ref,
        customer_id=meta.customer_id,
        channel=meta.channel_id,
        permalink=meta.permalink,
        dedupe_key=f"note_add:{sub.view_id}",
    )
    return meta, note, errors


async def card_modal(deps: Deps, meta: NoteMeta) -> dict:
    async with deps.db.transaction() as session:
        repo = Customers(session, deps.vault)
        customer = await repo.get(meta.customer_id) if meta.customer_id else None
        if customer is None or customer.erased_at is not None:
            raise NotFound("That customer is no longer on record.")
        name = label(repo.read(customer))
    return render.add_modal(meta.model_dump_json(), customer_label=name)


async def on_card_button(deps: Deps, body: dict) -> None:
    """`Add note` on a customer card: the modal, for that customer."""
    click = parse_click(body)
    cid = parse_customer_id(click.value)
    if cid is None:
        raise UserError("That button does not name a customer; nothing to do.")
    await access.require(deps, click.person)
    meta = NoteMeta(customer_id=cid, channel_id=click.channel)
    await open_then_fill(deps.slack, click.trigger_id, MODAL_TITLE, lambda: card_modal(deps, meta))


async def on_shortcut(deps: Deps, body: dict) -> None:
    """ "Add to customer record" on a message: the modal with its text, its link, and the
    customer it names (if any) preselected."""
    shortcut = parse_shortcut(body)
    await access.require(deps, shortcut.person)

    async def fill() -> dict:
        text = message_text(shortcut.message)
        refs = customer_refs(text)
        async with deps.db.transaction() as session:
            named = await Handoffs(session, deps.vault).customer_named(refs) if refs else None
            ref = named.external_id if named is not None else None
        link = await permalink(deps, shortcut.channel, shortcut.message_ts)
        meta = NoteMeta(channel_id=shortcut.channel, permalink=link)
        return render.add_modal(
            meta.model_dump_json(), customer_ref=ref, ask_customer=True, text=text
        )

    await open_then_fill(deps.slack, shortcut.trigger_id, MODAL_TITLE, fill)


async def submit_ack(ack, body) -> None:
    _, _, errors = note_form(parse_submission(body))
    if errors:
        await ack(response_action="errors", errors=errors)
    else:
        await ack()


async def submitted(deps: Deps, body: dict) -> None:
    sub = parse_submission(body)
    meta, note, errors = note_form(sub)
    if errors or meta is None or note is None:
        return  # answered in the modal by the ack
    await access.require(deps, sub.person)
    done = await add(deps, note)  # a refusal is raised, and told by the toolkit
    if done:
        await tell(deps.slack, sub.person, done, sub.place)


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add("note", note_command, USAGE, "add a note to the shared record")
    app.action(render.ADD)(ack=ack_only, lazy=[lazy(on_card_button, deps)])
    app.shortcut(render.SHORTCUT)(ack=ack_only, lazy=[lazy(on_shortcut, deps)])
    app.view(render.VIEW)(ack=submit_ack, lazy=[lazy(submitted, deps)])


__all__ = ["register"]
