"""Sync alerts: the header that starts a customer's thread in a channel, and alert messages
(one alert, or a burst coalesced into one message with the count and the list)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import Block, context, esc, section
from .customers import label, short_card

if TYPE_CHECKING:
    from storage.customers import CustomerRecord

SECTION_CHARS = 2800  # under Slack's 3,000 per section
MAX_LINE = 500
MAX_SECTIONS = 40  # well under 50 blocks per message


def _clip(text: str, limit: int = MAX_LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def thread_header(record: CustomerRecord) -> tuple[str, list[Block]]:
    """The first message about a customer in a channel; its alerts are replies to it."""
    blocks = [
        *short_card(record),
        context(":bell: Updates about this customer from the systems of record, in this thread"),
    ]
    return f"Updates about {esc(label(record))}", blocks


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
    blocks: list[Block] = [section(f":bell: {who}*{len(lines)} updates*")]
    chunk: list[str] = []
    size = 0
    shown = 0
    for line in lines:
        item = f"• {esc(_clip(line))}"
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
    if shown < len(lines):
        blocks.append(context(f"… and {len(lines) - shown} more in the customer's timeline"))
    text = f"{len(lines)} updates" + (f" about {esc(label(customer))}" if customer else "")
    return text, blocks
