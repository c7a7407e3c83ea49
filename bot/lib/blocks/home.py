"""The App Home tab: the person's open handoffs and pending approvals, and how to use the bot.

The handoff and approval sections come from their capability modules (`home_section`) as
lists of blocks without a header; this module frames them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import Block, context, divider, esc, header, section

MAX_SECTION_BLOCKS = 40  # a home view holds 100 blocks; two sections plus the frame fit

HOW_TO = "\n".join(
    [
        "• `/crm find <text>`: search by email, phone, external id, name or company",
        "• `/crm show <customer>`: the full card, only to you (email or external id)",
        "• `/crm handoff <customer> <department> [note]`: hand a customer to another team",
        "• `/crm approval <customer> <kind> <amount> [reason]`: ask for a discount, refund,"
        " credit or exception",
        "• `/crm handoffs`, `/crm approvals`, `/crm dept`, `/crm help`",
        "• mention `@crm-bot <email or external id>` in a channel for a shared (redacted) card",
    ]
)


def home_view(
    departments: Sequence[str],
    handoffs: Sequence[Block],
    approvals: Sequence[Block],
    *,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """A `home` view. `departments` are the names of the person's departments; `problems`
    names sections that could not be loaded this time."""
    mine = ", ".join(esc(d) for d in departments) or "none (ask an admin to add you)"
    blocks: list[Block] = [
        header("crm-bot"),
        context(f"Your departments: {mine}"),
        header("Your open handoffs"),
        *(list(handoffs)[:MAX_SECTION_BLOCKS] or [section("_No open handoffs._")]),
        header("Your pending approvals"),
        *(list(approvals)[:MAX_SECTION_BLOCKS] or [section("_No pending approvals._")]),
        divider(),
        header("How to use"),
        section(HOW_TO),
    ]
    if problems:
        blocks.append(context(f"Could not load: {', '.join(problems)}. Open the tab again later."))
    return {"type": "home", "blocks": blocks}


def refused_view(refusal: str) -> dict[str, Any]:
    """The tab of someone who may not read customer data: why, and who to ask (the refusal
    is built by handlers/access.py from configured ids)."""
    return {"type": "home", "blocks": [header("crm-bot"), section(refusal)]}
