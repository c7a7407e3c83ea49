"""Handoff messages, replies, modals and lists, as pure Block Kit functions.

Each function takes a `HandoffRecord` (decrypted by the repository) and names, and returns
(fallback text, blocks) or a view; nothing here talks to Slack or the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import (
    Block,
    actions,
    button,
    context,
    date,
    esc,
    fields_section,
    link,
    modal,
    section,
    select_input,
    text_input,
    user,
)
from .customers import clip, label, short_card

if TYPE_CHECKING:
    from storage.customers import CustomerRecord
    from storage.handoffs import HandoffRecord

# action, callback and block ids
ACCEPT = "handoff_accept"
DECLINE = "handoff_decline"
COMPLETE = "handoff_complete"
CANCEL = "handoff_cancel"
CREATE_VIEW = "handoff_create"
DECLINE_VIEW = "handoff_decline_reason"
SHORTCUT = "handoff_from_message"
DEPT_BLOCK, DEPT_ACTION = "department", "department"
NOTE_BLOCK, NOTE_ACTION = "note", "note"
REASON_BLOCK, REASON_ACTION = "reason", "reason"

NOTE_LIMIT = 2000
LIST_LIMIT = 20


def status_line(h: HandoffRecord, to_name: str) -> str:
    if h.status == "requested":
        return f":hourglass_flowing_sand: Waiting for {esc(to_name)} to accept"
    if h.status == "accepted":
        return f":white_check_mark: Accepted by {user(h.assignee)}"
    if h.status == "completed":
        return f":tada: Completed by {user(h.closed_by)}" + (
            f" (assignee {user(h.assignee)})" if h.assignee and h.assignee != h.closed_by else ""
        )
    if h.status == "declined":
        return f":no_entry: Declined by {user(h.closed_by)}"
    return f":heavy_multiplication_x: Cancelled by {user(h.closed_by)}"


def _from(h: HandoffRecord, from_name: str | None) -> str:
    return user(h.requested_by) + (f" ({esc(from_name)})" if from_name else "")


def handoff_message(
    h: HandoffRecord, *, from_name: str | None, to_name: str
) -> tuple[str, list[Block]]:
    """The message in the receiving department's channel."""
    who = label(h.customer)
    blocks: list[Block] = [
        section(f":inbox_tray: *Handoff to {esc(to_name)}* from {_from(h, from_name)}"),
        *short_card(h.customer),
        section("*Why*\n" + (esc(clip(h.note, NOTE_LIMIT)) if h.note else "_no note given_")),
    ]
    if h.context_permalink:
        blocks.append(context(f"From {link(h.context_permalink, 'this message')}"))
    status = status_line(h, to_name)
    if h.status == "declined" and h.reason:
        status += f"\n>{esc(clip(h.reason, 500))}"
    blocks.append(fields_section([f"*Status*\n{status}", f"*Since*\n{date(h.created_at)}"]))
    hid = str(h.id)
    if h.status == "requested":
        blocks.append(
            actions(
                button("Accept", ACCEPT, hid, style="primary"),
                button("Decline", DECLINE, hid),
                block_id=f"handoff:{hid}",
            )
        )
    elif h.status == "accepted":
        blocks.append(
            actions(button("Complete", COMPLETE, hid, style="primary"), block_id=f"handoff:{hid}")
        )
    blocks.append(context(f"Handoff `{hid[:8]}` · updated {date(h.updated_at)}"))
    text = f"Handoff of {esc(who)} to {esc(to_name)} from {user(h.requested_by)}: {h.status}"
    return text, blocks


def requester_message(
    h: HandoffRecord, *, to_name: str, parent_link: str | None
) -> tuple[str, list[Block]]:
    """The message on the requester's side, linking to the handoff."""
    where = link(parent_link, to_name)
    blocks: list[Block] = [
        section(f":outbox_tray: {user(h.requested_by)} handed a customer off to {where}"),
        *short_card(h.customer),
        section(f"*Status:* {status_line(h, to_name)}"),
    ]
    if h.status == "requested":
        blocks.append(
            actions(button("Cancel handoff", CANCEL, str(h.id)), block_id=f"handoff_req:{h.id}")
        )
    blocks.append(context(f"Handoff `{str(h.id)[:8]}` · steps are posted in this thread"))
    return f"Handoff of {esc(label(h.customer))} to {esc(to_name)}: {h.status}", blocks


def step_reply(h: HandoffRecord, actor: str) -> str:
    """The thread reply for a step (posted in both threads)."""
    if h.status == "accepted":
        return f":white_check_mark: {user(actor)} accepted this handoff."
    if h.status == "completed":
        return f":tada: {user(actor)} completed this handoff."
    if h.status == "declined":
        reason = f"\n>{esc(clip(h.reason, 1000))}" if h.reason else ""
        return f":no_entry: {user(actor)} declined this handoff.{reason}"
    return f":heavy_multiplication_x: {user(actor)} cancelled this handoff."


def reminder_reply(h: HandoffRecord, to_name: str) -> str:
    return (
        f":alarm_clock: Reminder: this handoff to {esc(to_name)} is still waiting to be "
        f"accepted (asked {date(h.created_at)})."
    )


def escalation_reply(h: HandoffRecord, to_name: str, leads: list[str], group: str | None) -> str:
    who = " ".join(user(u) for u in sorted(leads))
    if not who and group:
        who = f"<!subteam^{group}>"
    who = who or f"Leads of {esc(to_name)}"
    return (
        f":rotating_light: {who}: nobody has accepted this handoff since {date(h.created_at)}. "
        "Could someone take it?"
    )


def create_modal(
    record: CustomerRecord, departments: list[tuple[str, str]], private_metadata: str
) -> Block:
    """`Hand off` / `Hand off customer`: a department and a note."""
    blocks = [
        *short_card(record),
        select_input(DEPT_BLOCK, "Hand off to", DEPT_ACTION, departments),
        text_input(
            NOTE_BLOCK,
            "Why (what they should know)",
            NOTE_ACTION,
            multiline=True,
            optional=True,
            max_length=NOTE_LIMIT,
        ),
    ]
    return modal(
        CREATE_VIEW,
        "Hand off customer",
        blocks,
        submit="Hand off",
        private_metadata=private_metadata,
    )


def decline_modal(h: HandoffRecord, private_metadata: str) -> Block:
    blocks = [
        *short_card(h.customer),
        text_input(REASON_BLOCK, "Why decline?", REASON_ACTION, multiline=True, max_length=1000),
    ]
    return modal(
        DECLINE_VIEW, "Decline handoff", blocks, submit="Decline", private_metadata=private_metadata
    )


def handoff_line(h: HandoffRecord, url: str | None, names: dict[str, str]) -> str:
    to = esc(names.get(h.to_department, h.to_department))
    frm = names.get(h.from_department or "", h.from_department or "")
    line = f"• *{esc(label(h.customer))}* → {to}, from {user(h.requested_by)}"
    line += f" ({esc(frm)})" if frm else ""
    line += f" · {esc(h.status)}" + (f" by {user(h.assignee)}" if h.assignee else "")
    line += f" · since {date(h.created_at)}"
    return line + (f" · {link(url, 'open')}" if url else "")


def handoff_items(
    items: list[tuple[HandoffRecord, str | None]], total: int, names: dict[str, str]
) -> list[Block]:
    """One line per handoff with its link, a few lines per section (a section holds 3000
    characters), and how many more there are; [] when there are none."""
    lines = [handoff_line(h, link, names) for h, link in items]
    blocks = [section("\n".join(lines[i : i + 5])) for i in range(0, len(lines), 5)]
    if total > len(items):
        blocks.append(context(f"… and {total - len(items)} more: `/crm handoffs`"))
    return blocks


def handoff_list(
    title: str, items: list[tuple[HandoffRecord, str | None]], total: int, names: dict[str, str]
) -> tuple[str, list[Block]]:
    if not items:
        return f"{esc(title)}: none.", [section(f"*{esc(title)}*: none.")]
    blocks = [section(f"*{esc(title)}* ({total})"), *handoff_items(items, total, names)]
    return f"{esc(title)}: {total}", blocks
