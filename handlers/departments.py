"""`/crm dept` (the departments, their channels, people and approval limits) and
`/crm dept link <department>` (a lead moves their department to the channel they type it in)."""

from __future__ import annotations

import logging
from decimal import Decimal

from slack_bolt.async_app import AsyncApp

from bot.lib.blocks import channel, esc, reply, section
from bot.lib.errors import Forbidden, NotFound, UserError
from bot.lib.interaction import Command
from bot.lib.slack_out import SlackError
from handlers.changes import record_change
from handlers.commands import CommandRouter
from handlers.deps import Deps
from storage.departments import DepartmentView, link_channel

log = logging.getLogger(__name__)

USAGE = "Usage: `/crm dept` or `/crm dept link <department>`"


# --- rules (plain functions) -----------------------------------------------------------------


def parse_args(args: str) -> tuple[str, str]:
    """("list", "") or ("link", department); anything else is a UserError with the usage."""
    verb, _, rest = " ".join(args.split()).partition(" ")
    if not verb:
        return "list", ""
    if verb.lower() == "link":
        if not rest:
            raise UserError("Usage: `/crm dept link <department>` (typed in the channel to link)")
        return "link", rest
    raise UserError(USAGE)


def link_refusal(dept: DepartmentView, user: str, channel_id: str) -> str | None:
    """Why `user` may not link `channel_id` to `dept`, or None when they may."""
    if user not in dept.leads:
        return f"Only a lead of {dept.name} can link its channel."
    if not channel_id or channel_id[:1] not in ("C", "G"):
        return "Type `/crm dept link` in the channel you want to link, not in a direct message."
    if channel_id == dept.channel_id:
        return f"<#{channel_id}> is already {dept.name}'s channel."
    return None


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def limit_text(limit: Decimal | None) -> str:
    return "none" if limit is None else f"{limit:,.2f}"


# --- joining -------------------------------------------------------------------------------


async def join_channels(deps: Deps, channels: set[str] | None = None) -> dict[str, str]:
    """Join the department channels (all, or `channels`), so the bot can read back its own
    posts there: Slack answers conversations.history only to members (`not_in_channel`), and
    `chat:write.public` lets it post without joining but not read. Returns {channel: why not}
    for those it is not in: a private channel cannot be joined, only invited to (its lead
    invites the bot), and a Slack error leaves a channel for the next start or link."""
    if channels is None:
        channels = {d.channel_id for d in (await deps.directory.departments()).values()}
    missing: dict[str, str] = {}
    for channel_id in sorted(c for c in channels if c):
        try:
            await deps.slack.join(channel_id)
        except SlackError as exc:
            missing[channel_id] = exc.kind
    if missing:  # a private channel answers method_not_supported_for_channel_type, joined or not
        log.warning(
            "could not join %d department channels (a private one needs an invitation): %s",
            len(missing),
            sorted(missing.items()),
        )
    return missing


# --- listeners -------------------------------------------------------------------------------


async def dept(deps: Deps, cmd: Command) -> dict:
    action, rest = parse_args(cmd.args)
    if action == "link":
        return await link(deps, cmd, rest)
    departments = await deps.directory.departments()
    if not departments:
        return reply("No departments are configured (see CRM_CONFIG).")
    lines = []
    for d in departments.values():
        try:
            members = await deps.directory.members(d)
        except SlackError:  # the user group could not be read: show the configured people
            members = d.members
        lines.append(
            f"*{esc(d.name)}* (`{d.key}`) · {channel(d.channel_id)} · "
            f"{plural(len(members | d.leads), 'member')}, {plural(len(d.leads), 'lead')} · "
            f"approval limit {limit_text(d.approval_limit)}"
        )
    text = f"{len(departments)} departments"
    return reply(text, [section("\n".join(lines))])


async def link(deps: Deps, cmd: Command, key: str) -> dict:
    if len(key) > 64:
        raise NotFound(f"No department `{esc(key[:40])}…`. `/crm dept` lists them.")
    department = await deps.directory.get(key)
    refusal = link_refusal(department, cmd.user, cmd.channel)
    if refusal:
        raise Forbidden(refusal)
    async with deps.db.transaction() as session:
        if not await link_channel(session, department.key, cmd.channel, cmd.user):
            raise NotFound(f"No department `{esc(key[:40])}`.")
        await record_change(
            session,
            deps,
            actor=cmd.user,
            action="department.channel_linked",
            entity_type="department",
            entity_id=department.key,
            data={"channel": cmd.channel, "previous_channel": department.channel_id},
        )
    log.info("department %s linked to %s by %s", department.key, cmd.channel, cmd.user)
    await join_channels(deps, {cmd.channel})
    return reply(
        f"Linked <#{cmd.channel}> to {department.name}: its handoffs, approvals and alerts"
        " now come here."
    )


def register(app: AsyncApp, deps: Deps, router: CommandRouter) -> None:
    router.add(
        "dept",
        dept,
        "dept [link <department>]",
        "departments and their channels; a lead links the current channel",
    )
