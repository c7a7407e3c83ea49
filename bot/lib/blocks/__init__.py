"""Block Kit builders: plain functions that return dicts. One module per message family
(customers, handoffs, approvals, alerts); the small shared pieces are here."""

from __future__ import annotations

import re
from typing import Any

from bot.lib.slack_out import fit_to_limits

Block = dict[str, Any]

# Slack's ids: only these become mentions; anything else is shown as (escaped) text.
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
LINK_URL = re.compile(r"^https?://[^\s<>|]+$")


def esc(text: object) -> str:
    """THE function that renders outside text (from the systems of record, from people, from
    the database) for Slack, in blocks and in the fallback `text` of every post alike: Slack's
    three control characters become entities, so `<!channel>`, `<@U..>` and
    `<https://..|..>` in data show as typed and notify or link nothing. Markup the bot makes
    itself (mentions, links, dates) comes only from `user`, `channel`, `link` and `date`
    below. Cut escaped text only with bot/lib/slack_out's `cut`, which never splits an
    entity."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text or " ", "emoji": True}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text)}


def section(text: str, *, fields: list[str] | None = None, accessory: Block | None = None) -> Block:
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": text or " "}}
    if fields:
        block["fields"] = [{"type": "mrkdwn", "text": f} for f in fields[:10]]
    if accessory:
        block["accessory"] = accessory
    return block


def fields_section(fields: list[str]) -> Block:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields[:10]]}


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts[:10]]}


def divider() -> Block:
    return {"type": "divider"}


def button(
    text: str, action_id: str, value: str, *, style: str | None = None, confirm: Block | None = None
) -> Block:
    b: Block = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def actions(*elements: Block, block_id: str | None = None) -> Block:
    block: Block = {"type": "actions", "elements": list(elements)}
    if block_id:
        block["block_id"] = block_id
    return block


def user(user_id: str | None) -> str:
    """A mention, only of a Slack user id (an owner from a system of record may be anything)."""
    if not user_id:
        return "nobody"
    return f"<@{user_id}>" if USER_ID.match(user_id) else esc(user_id)


def channel(channel_id: str | None) -> str:
    if not channel_id:
        return "no channel"
    return f"<#{channel_id}>" if CHANNEL_ID.match(channel_id) else esc(channel_id)


def link(url: str | None, text: str) -> str:
    """`<url|text>` for a web URL that cannot break out of the link (Slack's permalinks);
    the text alone otherwise."""
    if url and LINK_URL.match(url):
        return f"<{url}|{esc(text)}>"
    return esc(text)


def date(dt) -> str:
    """A time Slack shows in each reader's own zone."""
    if dt is None:
        return "-"
    ts = int(dt.timestamp())
    return f"<!date^{ts}^{{date_short_pretty}} {{time}}|{dt.strftime('%Y-%m-%d %H:%M UTC')}>"


def modal(
    callback_id: str,
    title: str,
    blocks: list[Block],
    *,
    submit: str = "Submit",
    private_metadata: str = "",
) -> Block:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title[:24]),
        "submit": plain(submit),
        "close": plain("Cancel"),
        "blocks": blocks,
        "private_metadata": private_metadata,
    }


def text_input(
    block_id: str,
    label: str,
    action_id: str,
    *,
    multiline: bool = False,
    optional: bool = False,
    max_length: int = 3000,
    initial: str | None = None,
) -> Block:
    element: Block = {
        "type": "plain_text_input",
        "action_id": action_id,
        "multiline": multiline,
        "max_length": max_length,
    }
    if initial:
        element["initial_value"] = initial
    return {
        "type": "input",
        "block_id": block_id,
        "label": plain(label),
        "element": element,
        "optional": optional,
    }


def select_input(
    block_id: str,
    label: str,
    action_id: str,
    options: list[tuple[str, str]],
    *,
    initial: str | None = None,
) -> Block:
    opts = [{"text": plain(text), "value": value} for value, text in options[:100]]
    element: Block = {"type": "static_select", "action_id": action_id, "options": opts}
    for o in opts:
        if o["value"] == initial:
            element["initial_option"] = o
    return {"type": "input", "block_id": block_id, "label": plain(label), "element": element}


def reply(text: str, blocks: list[Block] | None = None) -> dict[str, Any]:
    """An answer to the person who asked (ephemeral), fitted to Slack's limits: it goes out
    through a command's acknowledgement or a `response_url`, which Slack checks as strictly
    as chat.postMessage but which do not pass through `SlackOut`."""
    text, fitted = fit_to_limits(text, blocks)
    out: dict[str, Any] = {"response_type": "ephemeral", "text": text}
    if fitted:
        out["blocks"] = fitted
    return out
