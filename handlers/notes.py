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
  external id in the message that is a customer, and empty when it names none.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import notes as render
from bot.lib.blocks import reply
from bot.lib.blocks.customers import label
from handlers.commands import Command, CommandRouter, clean_text
from handlers.deps import Deps
from handlers.errors import Forbidden, NotFound, UserError
from handlers.handoffs.flow import permalink
from handlers.handoffs.listeners import clicked, message_text, safely, tell
from handlers.handoffs.rules import customer_refs
from handlers.sync.apply import syncer
from storage import audit, outbox
from storage import notes as store
from storage import sync_ledger as ledger
from storage.customers import Customers
from storage.departments import all_departments
from storage.handoffs import Handoffs
from storage.slack_requests import first_time

log = logging.getLogger(__name__)

USAGE = "note <customer> <text>"
EVENT = "note.added"


class NoteMeta(BaseModel):
    """private_metadata of the `Add note` modal."""

    customer_id: uuid.UUID | None = None  # from the card; else the modal asks
    channel: str | None = None
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
        await audit.append(
            session,
            actor=req.user,
            action=EVENT,
            entity_type="note",
            entity_id=entry.id,
            customer=customer,
            data=data,
            vault=deps.vault,
        )
        outbox.add(session, EVENT, customer.external_id, data)
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
    deps.wake_outbox()
    if owner is not None:
        syncer(deps).delivery.start(customer_id)
    log.info("note %s added to customer %s by %s", entry.id, customer_id, req.user)
    return f"Added your note to {who}'s record."


# --- listeners ---------------------------------------------------------------------------------


async def note_command(deps: Deps, cmd: Command) -> dict:
    ref, text = parse_command(cmd.args)
    done = await add(deps, NewNote(user=cmd.user, text=text, customer_ref=ref, channel=cmd.channel))
    return reply(done or "That note was added already.")


def _value(view: dict, block: str, action: str) -> str:
    state = ((view.get("state") or {}).get("values") or {}).get(block) or {}
    return ((state.get(action) or {}).get("value") or "").strip()


async def check_form(deps: Deps, view: dict) -> tuple[NoteMeta | None, NewNote | None, dict]:
    """A submitted `Add note` modal: (metadata, the note, errors by block id)."""
    try:
        meta = NoteMeta.model_validate_json(view.get("private_metadata") or "")
    except ValidationError:
        return None, None, {render.TEXT_BLOCK: "This form is out of date; open it again."}
    errors: dict[str, str] = {}
    text = _value(view, render.TEXT_BLOCK, render.TEXT_ACTION)
    try:
        text = check_text(text)
    except UserError as exc:
        errors[render.TEXT_BLOCK] = str(exc)
    ref = _value(view, render.CUSTOMER_BLOCK, render.CUSTOMER_ACTION) or None
    if meta.customer_id is None:
        if not ref:
            errors[render.CUSTOMER_BLOCK] = "Name the customer: an email address or external id."
        else:
            async with deps.db.transaction() as session:
                found = await Customers(session, deps.vault).by_ref(ref)
            if found is None:
                errors[render.CUSTOMER_BLOCK] = "I know no such customer."
    note = NewNote(
        user="",
        text=text,
        customer_ref=ref,
        customer_id=meta.customer_id,
        channel=meta.channel,
        permalink=meta.permalink,
        dedupe_key=f"note_add:{view.get('id')}",
    )
    return meta, note, errors


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add("note", note_command, USAGE, "add a note to the shared record")

    async def ack_now(ack):
        await ack()

    async def on_card_button(body):
        user, value, channel, _ = clicked(body)
        try:
            cid = uuid.UUID(str(value))
        except ValueError:
            await tell(deps, channel, user, "That button does not name a customer.")
            return
        async with deps.db.transaction() as session:
            repo = Customers(session, deps.vault)
            customer = await repo.get(cid)
            name = label(repo.read(customer)) if customer and not customer.erased_at else None
        if name is None:
            await tell(deps, channel, user, "That customer is no longer on record.")
            return
        meta = NoteMeta(customer_id=cid, channel=channel)
        view = render.add_modal(meta.model_dump_json(), customer_label=name)
        _, problem = await safely("note modal", deps.slack.open_view(body["trigger_id"], view))
        if problem:
            await tell(deps, channel, user, problem)

    async def on_shortcut(body):
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        text = message_text(message)
        refs = customer_refs(text)
        async with deps.db.transaction() as session:
            named = await Handoffs(session, deps.vault).customer_named(refs) if refs else None
            ref = named.external_id if named is not None else None
        ts = body.get("message_ts") or message.get("ts")
        link = None
        if channel and ts:
            link = await permalink(deps, channel, ts)
        meta = NoteMeta(channel=channel, permalink=link)
        view = render.add_modal(
            meta.model_dump_json(), customer_ref=ref, ask_customer=True, text=text
        )
        _, problem = await safely("note modal", deps.slack.open_view(body["trigger_id"], view))
        if problem:
            await tell(deps, channel, user, problem)

    async def submit_ack(ack, view):
        _, _, errors = await check_form(deps, view)
        if errors:
            await ack(response_action="errors", errors=errors)
        else:
            await ack()

    async def submitted(body, view):
        meta, note, errors = await check_form(deps, view)
        if errors or meta is None or note is None:
            return  # answered in the modal by the ack
        note.user = body["user"]["id"]
        done, problem = await safely("note add", add(deps, note))
        if problem or done:
            await tell(deps, meta.channel, note.user, problem or done)

    app.action(render.ADD)(ack=ack_now, lazy=[on_card_button])
    app.shortcut(render.SHORTCUT)(ack=ack_now, lazy=[on_shortcut])
    app.view(render.VIEW)(ack=submit_ack, lazy=[submitted])


__all__ = ["register"]
