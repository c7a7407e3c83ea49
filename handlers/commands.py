"""`/crm`: one slash command, routed to subcommands that the capability modules add.

The listener acknowledges at once (a malformed command gets its usage line right in the ack);
the work runs after, as a bolt lazy listener, and answers through `response_url`. A subcommand
raises a `UserError` to refuse; the interaction toolkit's error mapping answers it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import reply
from bot.lib.interaction import Command, parse_command
from handlers.deps import Deps

log = logging.getLogger(__name__)

MAX_ARGS = 3000
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
SLACK_LINK = re.compile(r"<(?:mailto:|tel:)?([^<>|]+)\|([^<>]*)>|<(?:mailto:|tel:)([^<>|]+)>")


Answer = dict[str, Any] | None
Subcommand = Callable[[Deps, Command], Awaitable[Answer]]


def clean_text(text: str) -> str:
    """Slack's escaping undone (links to their label, &amp; &lt; &gt;), control characters gone."""

    def link(m: re.Match) -> str:
        return m.group(2) or m.group(1) or m.group(3) or ""

    text = SLACK_LINK.sub(link, text or "")
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return CONTROL.sub(" ", text).strip()


@dataclass
class _Entry:
    run: Subcommand
    usage: str
    summary: str


class CommandRouter:
    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def add(self, name: str, run: Subcommand, usage: str, summary: str) -> None:
        self.entries[name] = _Entry(run, usage, summary)

    def help(self) -> dict[str, Any]:
        lines = ["*crm-bot* — work on the same customers across departments."]
        lines += [f"• `/crm {e.usage}` — {e.summary}" for e in self.entries.values()]
        lines.append("`<customer>` is an email address or an external id.")
        return reply("\n".join(lines))

    def usage(self, name: str) -> str:
        return f"Usage: `/crm {self.entries[name].usage}`"

    def parse(self, text: str) -> tuple[str | None, str, str | None]:
        """(subcommand, its arguments, an immediate answer for a malformed command)."""
        if len(text or "") > MAX_ARGS:
            return None, "", f"That command is too long (at most {MAX_ARGS} characters)."
        cleaned = clean_text(text)
        name, _, args = cleaned.partition(" ")
        name = name.lower()
        if not name or name == "help":
            return "help", "", None
        if name not in self.entries:
            known = ", ".join(self.entries)
            return (
                None,
                "",
                f"Unknown subcommand `{name[:40]}`. Try one of: {known}, or `/crm help`.",
            )
        return name, args.strip(), None

    def register(self, app: AsyncApp, deps: Deps) -> None:
        async def acknowledge(ack, command):
            name, _, problem = self.parse(command.get("text", ""))
            if problem:
                await ack(reply(problem))
            elif name == "help":
                await ack(self.help())
            else:
                await ack()

        async def work(command, respond):
            name, args, problem = self.parse(command.get("text", ""))
            if problem or name is None or name == "help":
                return
            answer = await self.entries[name].run(deps, parse_command(command, args))
            if answer:
                await respond(**answer)

        app.command("/crm")(ack=acknowledge, lazy=[work])
