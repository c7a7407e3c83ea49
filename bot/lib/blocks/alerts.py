"""Sync alerts: the first alert about a customer in a channel (the top-level message of the
customer's thread, kept current in place), the alerts replying in its thread (one, or a burst
coalesced into one message with the count and the list), and a channel's storm roll-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from . import Block, context, esc, link, section
from .customers import label, short_card

if TYPE_CHECKING:
    from storage.customers import CustomerRecord

SECTION_CHARS = 2800  # under Slack's 3,000 per section
MAX_LINE = 500
MAX_SECTIONS = 40  # well under 50 blocks per message
# The block of a thread's top-level message that shows its latest alert: a summary of what the
# thread holds, not a post of that alert (tests/faults/stream.tokens_in leaves it out).
LATEST_BLOCK = "crm_latest"


def _clip(text: str, limit: int = MAX_LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(items: Sequence[str], head: Block, more: str) -> list[Block]:
    """`head`, then the (already escaped) items in sections within Slack's limits."""
    blocks: list[Block] = [head]
    chunk: list[str] = []
    size = 0
    shown = 0
    for item in items:
        if chunk and size + len(item) + 1 > SECTION_CHARS:
            if len(blocks) >= MAX_SECTIONS:
                break
            blocks.append(section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 1
        shown += 1
    if chunk:
        blocks.append(section("\n".join(chunk)))
    if shown < len(items):
        blocks.append(context(f"… and {len(items) - shown} more {more}"))
    return blocks


def _who(record: CustomerRecord) -> str:
    tier = f" ({esc(record.tier)})" if record.tier else ""
    return f"*{esc(label(record))}*{tier}"


def thread_header(record: CustomerRecord) -> tuple[str, list[Block]]:
    """How a customer's thread began before alerts opened their own threads (0008): such
    threads are kept, and their header is kept current like a first alert."""
    blocks = [
        *short_card(record),
        context(":bell: Updates about this customer from the systems of record, in this thread"),
    ]
    return f"Updates about {esc(label(record))}", blocks


def first_alert(record: CustomerRecord, lines: Sequence[str]) -> tuple[str, list[Block]]:
    """The first alert about a customer in a channel: what happened, for whom (name and tier).
    Later alerts reply in its thread."""
    who = _who(record)
    if len(lines) == 1:
        line = _clip(lines[0])
        return f"{esc(label(record))}: {esc(line)}", [section(f":bell: {who}: {esc(line)}")]
    items = [f"• {esc(_clip(line))}" for line in lines]
    head = section(f":bell: {who}: *{len(lines)} updates*")
    return f"{len(lines)} updates about {esc(label(record))}", _listed(items, head, "in the thread")


def thread_top(
    record: CustomerRecord,
    first: tuple[str, list[Block]],
    updates: int,
    latest: str | None,
    changed_at: datetime | None,
) -> tuple[str, list[Block]]:
    """A thread's top-level message kept current: the first alert (or the old header) as it
    was posted, then the number of alerts in the thread, the latest one and when it came."""
    text, blocks = first
    when = f" · last change {changed_at:%H:%M} UTC" if changed_at else ""
    latest_text = f" · latest: {esc(_clip(latest, 300))}" if latest else ""
    unit = "update" if updates == 1 else "updates"
    summary = context(f":speech_balloon: {updates} {unit} in the thread{latest_text}{when}")
    summary["block_id"] = LATEST_BLOCK
    return text, [*blocks[:MAX_SECTIONS], summary]


def alert_message(
    lines: Sequence[str], *, customer: CustomerRecord | None = None
) -> tuple[str, list[Block]]:
    """One alert, or `N updates` and the list. With `customer` (a top-level alert, outside the
    customer's thread) the message names them."""
    who = f"*{esc(label(customer))}*: " if customer is not None else ""
    if len(lines) == 1:
        line = _clip(lines[0])
        return f"{esc(label(customer)) + ': ' if customer else ''}{esc(line)}", [
            section(f":bell: {who}{esc(line)}")
        ]
    items = [f"• {esc(_clip(line))}" for line in lines]
    head = section(f":bell: {who}*{len(lines)} updates*")
    text = f"{len(lines)} updates" + (f" about {esc(label(customer))}" if customer else "")
    return text, _listed(items, head, "in the customer's timeline")


@dataclass(frozen=True)
class RolledUp:
    """One alert in a roll-up: about whom, what happened, the customer's thread (a link)."""

    customer: str
    line: str
    thread_link: str | None = None
    urgent: bool = False


def rollup_message(items: Sequence[RolledUp], since: datetime) -> tuple[str, list[Block]]:
    """A channel's storm roll-up: `N alerts since HH:MM:SS UTC` and one line per alert."""
    urgent = sum(1 for i in items if i.urgent)
    span = f"since {since:%H:%M:%S} UTC"
    count = f"{len(items)} alert{'s' if len(items) != 1 else ''}"
    if urgent:
        count += f" ({urgent} urgent)"
    head = section(
        f":rotating_light: *{count} {span}*: too many at once to post one by one, "
        "so they are listed here and not repeated in each customer's thread"
    )
    lines = []
    for item in items:
        thread = f" ({link(item.thread_link, 'thread')})" if item.thread_link else ""
        lines.append(f"• *{esc(_clip(item.customer, 80))}*: {esc(_clip(item.line, 300))}{thread}")
    return f"{count} {span}", _listed(lines, head, "in the customers' timelines")
