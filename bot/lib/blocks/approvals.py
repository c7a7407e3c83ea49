"""Approval messages, modals, lists and the App Home section, as pure Block Kit functions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from . import (
    Block,
    actions,
    button,
    context,
    date,
    esc,
    header,
    link,
    modal,
    section,
    select_input,
    text_input,
    user,
)
from .customers import clip, label, money, short_card

if TYPE_CHECKING:
    from storage.customers import CustomerRecord

APPROVE = "approval_approve"
REJECT = "approval_reject"
CREATE_VIEW = "approval_create"
REJECT_VIEW = "approval_reject_reason"
# modal inputs: (block_id, action_id)
KIND_INPUT = ("kind", "kind")
AMOUNT_INPUT = ("amount", "amount")
REASON_INPUT = ("reason", "reason")

REASON_LIMIT = 1500
KIND_OPTIONS = [
    ("discount", "Discount (percent)"),
    ("refund", "Refund (money)"),
    ("credit", "Credit (money)"),
    ("exception", "Exception (no amount)"),
]
STATUS_ICON = {"pending": "⏳", "approved": "✅", "rejected": "❌", "expired": "⌛"}


@dataclass(frozen=True)
class ApprovalView:
    """An approval as people see it: decrypted, with its customer."""

    id: uuid.UUID
    kind: str
    amount: Decimal | None
    unit: str | None
    status: str
    requested_by: str
    department: str  # the approving department's display name
    department_key: str
    expires_at: datetime
    created_at: datetime | None
    customer: CustomerRecord | None
    reason: str | None = None
    requester_department: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    channel_id: str | None = None
    message_ts: str | None = None


def what(a: ApprovalView) -> str:
    """`discount of 15%`, `refund of 1,200.00 EUR`, `exception`."""
    if a.kind == "exception" or a.amount is None:
        return a.kind
    return f"{a.kind} of {money(a.amount, a.unit)}"


def customer_label(a: ApprovalView) -> str:
    return label(a.customer) if a.customer else "an erased customer"


def outcome_line(a: ApprovalView) -> str:
    icon = STATUS_ICON.get(a.status, "")
    if a.status == "pending":
        return f"{icon} Waiting for {esc(a.department)} · expires {date(a.expires_at)}"
    if a.status == "expired":
        return f"{icon} *Expired* {date(a.decided_at or a.expires_at)} without a decision"
    return f"{icon} *{a.status.capitalize()}* by {user(a.decided_by)} {date(a.decided_at)}"


def request_message(a: ApprovalView) -> tuple[str, list[Block]]:
    """(fallback text, blocks) of the message in the approving department's channel."""
    text = f"Approval request: {esc(what(a))} for {esc(customer_label(a))} ({a.status})"
    asked = f"{user(a.requested_by)}" + (
        f" ({esc(a.requester_department)})" if a.requester_department else ""
    )
    blocks: list[Block] = [
        header(f"Approval request: {what(a)}"[:150]),
        *(short_card(a.customer) if a.customer else [section("_Customer erased_")]),
        section(
            " ",
            fields=[
                f"*Kind*\n{esc(a.kind)}",
                f"*Amount*\n{esc(money(a.amount, a.unit)) if a.amount is not None else '-'}",
                f"*Requested by*\n{asked}",
                f"*Approver*\n{esc(a.department)}",
            ],
        ),
    ]
    if a.reason:
        blocks.append(section(f"*Reason*\n{esc(clip(a.reason, REASON_LIMIT))}"))
    if a.status == "pending":
        value = str(a.id)
        blocks.append(
            actions(
                button("Approve", APPROVE, value, style="primary"),
                button("Reject", REJECT, value, style="danger"),
                block_id=f"approval:{value}",
            )
        )
    elif a.decision_reason:
        blocks.append(section(f"*Decision reason*\n{esc(clip(a.decision_reason, REASON_LIMIT))}"))
    blocks.append(context(outcome_line(a)))
    return text, blocks


def outcome_text(a: ApprovalView) -> str:
    """The reply in the request's thread and the requester's direct message."""
    who = user(a.requested_by)
    if a.status == "expired":
        return f"{who} your {what(a)} for {esc(customer_label(a))} expired without a decision."
    line = (
        f"{who} your {what(a)} for {esc(customer_label(a))} was *{a.status}* "
        f"by {user(a.decided_by)}."
    )
    if a.decision_reason:
        line += f"\nReason: {esc(clip(a.decision_reason, REASON_LIMIT))}"
    return line


def confirmation(a: ApprovalView, permalink: str | None) -> str:
    where = link(permalink, "its message") if permalink else "its channel"
    return (
        f"Asked {esc(a.department)} to approve a {what(a)} for {esc(customer_label(a))}: "
        f"see {where}. You will hear back here and in a direct message."
    )


def create_modal(customer: CustomerRecord, private_metadata: str) -> Block:
    return modal(
        CREATE_VIEW,
        "Request approval",
        [
            section(f"Approval for *{esc(label(customer))}*"),
            select_input(KIND_INPUT[0], "Kind", KIND_INPUT[1], KIND_OPTIONS),
            text_input(
                AMOUNT_INPUT[0],
                "Amount (15% · 1200 EUR · - for an exception)",
                AMOUNT_INPUT[1],
                optional=True,
                max_length=40,
            ),
            text_input(
                REASON_INPUT[0],
                "Reason",
                REASON_INPUT[1],
                multiline=True,
                optional=True,
                max_length=2000,
            ),
        ],
        submit="Request",
        private_metadata=private_metadata,
    )


def reject_modal(a: ApprovalView, private_metadata: str) -> Block:
    return modal(
        REJECT_VIEW,
        "Reject request",
        [
            section(f"Reject the {what(a)} for *{esc(customer_label(a))}*?"),
            text_input(
                REASON_INPUT[0],
                "Reason (the requester will see it)",
                REASON_INPUT[1],
                multiline=True,
                max_length=2000,
            ),
        ],
        submit="Reject",
        private_metadata=private_metadata,
    )


def list_line(a: ApprovalView) -> str:
    icon = STATUS_ICON.get(a.status, "")
    line = f"{icon} {esc(what(a))} for *{esc(customer_label(a))}*, from {user(a.requested_by)}"
    if a.status == "pending":
        line += f" · expires {date(a.expires_at)}"
    else:
        line += f" · {a.status}" + (f" by {user(a.decided_by)}" if a.decided_by else "")
    return line


def list_reply(title: str, items: list[ApprovalView], empty: str) -> tuple[str, list[Block]]:
    if not items:
        return empty, [section(empty)]
    blocks: list[Block] = [section(f"*{esc(title)}*")]
    blocks += [section(list_line(a)) for a in items[:40]]
    if len(items) > 40:
        blocks.append(context(f"… and {len(items) - 40} more"))
    return title, blocks


def home_section(to_decide: list[ApprovalView], mine: list[ApprovalView]) -> list[Block]:
    """Requests this person may decide (with buttons), then their own pending requests; no
    header (the App Home frames it), at most 40 blocks, [] when there is nothing."""
    blocks: list[Block] = []
    if to_decide:
        blocks.append(section("*Waiting for your decision*"))
        for a in to_decide[:12]:
            value = str(a.id)
            blocks.append(section(list_line(a)))
            blocks.append(
                actions(
                    button("Approve", APPROVE, value, style="primary"),
                    button("Reject", REJECT, value, style="danger"),
                    block_id=f"home_approval:{value}",
                )
            )
        if len(to_decide) > 12:
            blocks.append(context(f"… and {len(to_decide) - 12} more: `/crm approvals`"))
    if mine:
        blocks.append(section("*Your requests waiting for a decision*"))
        blocks += [section(list_line(a)) for a in mine[:10]]
    return blocks
