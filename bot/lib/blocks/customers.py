"""Customer cards and search results, as pure Block Kit functions.

- `short_card(record)`: a one-section customer header (name, company, tier, stage) that other
  messages (alerts, handoffs, approvals) reuse; no contact details, value or notes.
- `redacted_card(record)`: what `Share to channel` and mentions post in a channel: name,
  company, tier, stage and owner only.
- `full_card(...)`: everything the bot knows that the asker may see (`fields`, decided by
  handlers/access.py), shown only to them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from . import Block, actions, button, context, date, divider, esc, header, section, user
from .notes import ADD as ADD_NOTE
from .notes import notes_section

if TYPE_CHECKING:
    from storage.customers import CustomerRecord
    from storage.notes import NoteItem

OPEN = "customer_open"
HANDOFF = "customer_handoff"
APPROVAL = "customer_approval"
SHARE = "customer_share"

NOTES_LIMIT = 1500
LINE_LIMIT = 300
NAME_LIMIT = 120


@dataclass(frozen=True)
class TimelineItem:
    occurred_at: datetime
    kind: str
    source: str
    summary: str | None


@dataclass(frozen=True)
class HandoffItem:
    to_department: str
    status: str
    requested_by: str
    created_at: datetime | None


@dataclass(frozen=True)
class ApprovalItem:
    kind: str
    amount: Decimal | None
    unit: str | None
    department: str
    requested_by: str


def clip(text: str | None, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def label(record: CustomerRecord) -> str:
    return clip(record.name or record.company or record.external_id, NAME_LIMIT)


def money(value: Decimal | None, unit: str | None = None) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value.normalize():f}%"
    return f"{value:,.2f}" + (f" {unit}" if unit else "")


def _title(record: CustomerRecord) -> str:
    """`*Name* · Company`, escaped."""
    name = f"*{esc(label(record))}*"
    if record.company and record.company != record.name:
        name += f" · {esc(clip(record.company, NAME_LIMIT))}"
    return name


def _tier_stage(record: CustomerRecord) -> str:
    return f"Tier: {esc(record.tier or '-')} · Stage: {esc(record.lifecycle_stage or '-')}"


def owner(record: CustomerRecord) -> str:
    parts = []
    if record.owner_department:
        parts.append(esc(record.owner_department))
    if record.owner_slack_user:
        parts.append(user(record.owner_slack_user))
    return " · ".join(parts) or "-"


def short_card(record: CustomerRecord) -> list[Block]:
    """One section: name, company, tier, stage. Safe for any channel."""
    return [section(f"{_title(record)}\n{_tier_stage(record)}")]


def redacted_card(record: CustomerRecord) -> tuple[str, list[Block]]:
    """(fallback text, blocks) for a channel: no email, phone, value or notes."""
    text = f"{esc(label(record))}: {_tier_stage(record)}"
    blocks = [
        section(f"{_title(record)}\n{_tier_stage(record)}\nOwner: {owner(record)}"),
        context(f"`{esc(clip(record.external_id, 80))}` · contact details: `/crm show`"),
    ]
    return text, blocks


def full_card(
    record: CustomerRecord,
    *,
    timeline: Sequence[TimelineItem] = (),
    handoffs: Sequence[HandoffItem] = (),
    approvals: Sequence[ApprovalItem] = (),
    notes: Sequence[NoteItem] = (),
    department_names: dict[str, str] | None = None,
    fields: Collection[str] | None = None,
) -> tuple[str, list[Block]]:
    """(fallback text, blocks): the card, for the asker's eyes only. `fields` are the card
    fields the asker may see (bot.lib.config.CARD_FIELDS; None: all); the caller passes only
    the timeline entries those fields allow. The head (name, company, tier, stage, owner,
    external id) is always shown. Notes newest first, each with its author, department and a
    link to the Slack message (under the `notes` field)."""
    cid = str(record.id)

    def shown(name: str) -> bool:
        return fields is None or name in fields

    facts = []
    if shown("email"):
        facts.append(f"*Email*\n{esc(clip(record.email, 200) or '-')}")
    if shown("phone"):
        facts.append(f"*Phone*\n{esc(clip(record.phone, 60) or '-')}")
    facts += [
        f"*Tier*\n{esc(record.tier or '-')}",
        f"*Stage*\n{esc(record.lifecycle_stage or '-')}",
        f"*Owner*\n{owner(record)}",
    ]
    if shown("annual_value"):
        facts.append(f"*Annual value*\n{money(record.annual_value)}")
    blocks: list[Block] = [
        header(label(record)),
        section(
            f"{_title(record)}\nExternal id: `{esc(clip(record.external_id, 80))}`",
            fields=facts,
        ),
    ]
    if record.notes and shown("notes"):
        blocks.append(section(f"*Notes*\n{esc(clip(record.notes, NOTES_LIMIT))}"))
    blocks.append(divider())
    if shown("handoffs"):
        blocks.append(section("*Open handoffs*\n" + _lines([_handoff_line(h) for h in handoffs])))
    if shown("approvals"):
        lines = [_approval_line(a) for a in approvals]
        blocks.append(section("*Pending approvals*\n" + _lines(lines)))
    if shown("notes"):
        blocks.append(notes_section(notes, department_names or {}))
    blocks.append(section("*Latest activity*\n" + _lines([_timeline_line(t) for t in timeline])))
    blocks.append(
        actions(
            button("Add note", ADD_NOTE, cid),
            button("Hand off", HANDOFF, cid),
            button("Request approval", APPROVAL, cid),
            button("Share to channel", SHARE, cid),
            block_id=f"customer_card:{cid}",
        )
    )
    if record.updated_at is not None:
        blocks.append(context(f"Updated {date(record.updated_at)} · only you can see this card"))
    else:
        blocks.append(context("Only you can see this card"))
    return f"Customer card: {esc(label(record))}", blocks


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) if lines else "_none_"


def _handoff_line(h: HandoffItem) -> str:
    return f"• to {esc(h.to_department)} ({esc(h.status)}), from {user(h.requested_by)}" + (
        f", {date(h.created_at)}" if h.created_at else ""
    )


def _approval_line(a: ApprovalItem) -> str:
    amount = "" if a.kind == "exception" else f" {money(a.amount, a.unit)}"
    return f"• {esc(a.kind)}{amount}, asked of {esc(a.department)} by {user(a.requested_by)}"


def _timeline_line(t: TimelineItem) -> str:
    summary = esc(clip(t.summary, LINE_LIMIT)) if t.summary else "_(not readable)_"
    return f"• {date(t.occurred_at)} {esc(t.kind)} ({esc(t.source)}): {summary}"


def search_results(query: str, records: list[CustomerRecord]) -> tuple[str, list[Block]]:
    """Up to 10 matches, each with an `Open` button (its value the customer id)."""
    shown = esc(clip(query, 60))
    if not records:
        return f"No customers match `{shown}`.", []
    count = f"{len(records)} match" + ("" if len(records) == 1 else "es")
    blocks: list[Block] = [section(f"{count} for `{shown}`:")]
    for r in records[:10]:
        blocks.append(
            section(
                f"{_title(r)}\n{_tier_stage(r)} · `{esc(clip(r.external_id, 60))}`",
                accessory=button("Open", OPEN, str(r.id)),
            )
        )
    return f"{count} for `{shown}`", blocks
