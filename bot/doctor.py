"""`crm-bot doctor`: checks a deployment against the Slack, database and RabbitMQ it is given,
one line per check (`ok`, `FAIL` or `warn`, what was found and what to do), exit 1 when any
check fails.

What it checks, and why each the way it does:
- `auth.test` with SLACK_BOT_TOKEN. The other Slack checks need it and are not run without it.
- The scopes Slack granted (the `x-oauth-scopes` header Slack sends with every answer) against
  manifest.yml's bot scopes: one missing fails (a call needing it would answer
  `missing_scope`); one granted but not in the manifest only warns (the app asks for more than
  it uses: remove it from the app's configuration).
- Each department's channel (`conversations.info`): missing or archived fails; a private channel
  the bot was not invited to fails (Slack refuses the bot's posts there); a public channel the
  bot is not in only warns, because `serve` joins it at start and `chat:write.public` lets the
  bot post meanwhile. Slack answers `channel_not_found` for a private channel the bot is not in,
  so that answer names both causes.
- Each lead and member, and the members of a department's user group (`users.info`): unknown
  or deactivated (`deleted`) fails. One line per department when all are fine, one per person
  otherwise (ids only: names are personal data and never printed).
- The database: answers, and its schema is at the migrations' head (a SQLite file that does not
  exist fails without being created). RabbitMQ when AMQP_URL is set (connect, then close).
  URLs are never printed: they may carry passwords.

`check_channel` is also what `serve` runs at start and every few minutes for /readyz.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.lib.config import CrmConfig, Department, Settings
from bot.lib.slack_out import make_client

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).resolve().parent.parent / "manifest.yml"
LOOKUPS_AT_ONCE = 4  # users.info calls in flight (Tier 4: 100+ a minute)
BROKER_TIMEOUT = 10.0

Status = Literal["ok", "FAIL", "warn"]


@dataclass(frozen=True)
class Check:
    status: Status
    subject: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        return f"{self.status:<4} {self.subject}: {self.detail}"


def manifest_scopes(path: Path) -> list[str] | None:
    """The manifest's bot scopes, or None when there is no manifest at `path`."""
    if not path.is_file():
        return None
    manifest = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return list(((manifest.get("oauth_config") or {}).get("scopes") or {}).get("bot") or [])


def _slack_error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or exc.response.status_code)
    return f"no answer ({type(exc).__name__})"


UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError)


# -- Slack ---------------------------------------------------------------------------------
async def check_auth(client: AsyncWebClient) -> tuple[Check, dict[str, Any]]:
    """auth.test, and the answer's headers (for the granted scopes)."""
    try:
        answer = await client.auth_test()
    except SlackApiError as exc:
        error = _slack_error(exc)
        what = "SLACK_BOT_TOKEN is not a bot token Slack accepts"
        return Check(
            "FAIL",
            "slack",
            f"auth.test: {error}: {what}; copy the app's Bot User OAuth Token (xoxb-) "
            "(the other Slack checks need it)",
        ), {}
    except UNREACHABLE as exc:
        return Check(
            "FAIL",
            "slack",
            f"auth.test: {_slack_error(exc)}: check SLACK_API_URL and the network "
            "(the other Slack checks need it)",
        ), {}
    detail = f"auth.test: bot {answer.get('user_id')} in team {answer.get('team_id')}"
    return Check("ok", "slack", detail), dict(answer.headers or {})


def check_scopes(headers: dict[str, Any], wanted: Iterable[str] | None) -> list[Check]:
    """A FAIL line for scopes missing, a warn line for scopes granted beyond the manifest."""
    if wanted is None:
        return [Check("warn", "scopes", "manifest.yml not found: pass --manifest to compare")]
    granted_header = next((v for k, v in headers.items() if k.lower() == "x-oauth-scopes"), None)
    if granted_header is None:
        return [Check("warn", "scopes", "Slack did not say which scopes it granted")]
    if isinstance(granted_header, list):
        granted_header = ",".join(granted_header)
    granted = {s.strip() for s in str(granted_header).split(",") if s.strip()}
    wanted = set(wanted)
    missing, extra = sorted(wanted - granted), sorted(granted - wanted)
    checks = []
    if missing:
        checks.append(
            Check(
                "FAIL",
                "scopes",
                f"missing {', '.join(missing)}: add them to the app's bot scopes (manifest.yml) "
                "and reinstall the app to the workspace",
            )
        )
    if extra:
        checks.append(
            Check(
                "warn",
                "scopes",
                f"granted but not in manifest.yml: {', '.join(extra)}: remove them from the "
                "app's bot scopes and reinstall",
            )
        )
    return checks or [Check("ok", "scopes", f"all {len(wanted)} of manifest.yml's are granted")]


async def check_channel(client: AsyncWebClient, dept: Department) -> Check:
    """Whether the bot can work in `dept`'s channel (see the module's docstring)."""
    subject = f"channel {dept.channel} of {dept.key}"
    setting = f"departments.{dept.key}.channel"
    try:
        answer = await client.conversations_info(channel=dept.channel)
    except SlackApiError as exc:
        error = _slack_error(exc)
        if error == "channel_not_found":
            return Check(
                "FAIL",
                subject,
                f"not found: a private channel the bot was not invited to (/invite @crm-bot "
                f"there), or a wrong {setting} in CRM_CONFIG",
            )
        if error == "missing_scope":
            return Check("FAIL", subject, "cannot look (missing_scope): see the scopes line")
        return Check("FAIL", subject, f"conversations.info: {error}")
    except UNREACHABLE as exc:
        return Check("warn", subject, f"could not look: {_slack_error(exc)}")
    channel = answer.get("channel") or {}
    private = bool(channel.get("is_private"))
    kind = "private channel" if private else "channel"
    if channel.get("is_archived"):
        return Check(
            "FAIL",
            subject,
            f"archived: unarchive it in Slack, or set {setting} to a live channel",
        )
    if not channel.get("is_member"):
        if private:
            return Check(
                "FAIL",
                subject,
                "the bot is not in this private channel, and Slack refuses its posts there: "
                "/invite @crm-bot in it",
            )
        return Check(
            "warn",
            subject,
            "the bot is not in this channel: `crm-bot serve` joins it at start "
            "(or /invite @crm-bot in it)",
        )
    return Check("ok", subject, f"the bot is a member of this {kind}")


async def check_people(client: AsyncWebClient, dept: Department) -> list[Check]:
    """The department's leads and members (and its user group's members) exist and are active."""
    problems: list[Check] = []
    roles: dict[str, str] = {}
    for user in dept.members:
        roles[user] = f"departments.{dept.key}.members"
    for user in dept.leads:
        roles[user] = f"departments.{dept.key}.leads"
    if dept.usergroup:
        try:
            answer = await client.usergroups_users_list(usergroup=dept.usergroup)
        except (SlackApiError, *UNREACHABLE) as exc:
            status: Status = "warn" if isinstance(exc, UNREACHABLE) else "FAIL"
            problems.append(
                Check(
                    status,
                    f"user group {dept.usergroup} of {dept.key}",
                    f"usergroups.users.list: {_slack_error(exc)}: check "
                    f"departments.{dept.key}.usergroup",
                )
            )
        else:
            for user in answer.get("users") or []:
                roles.setdefault(str(user), f"user group {dept.usergroup}")
    gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)

    async def one(user: str, where: str) -> Check | None:
        async with gate:
            try:
                answer = await client.users_info(user=user)
            except SlackApiError as exc:
                error = _slack_error(exc)
                if error in ("user_not_found", "user_not_visible"):
                    return Check(
                        "FAIL",
                        f"person {user} of {dept.key}",
                        f"not in this workspace ({error}): fix {where}",
                    )
                return Check("FAIL", f"person {user} of {dept.key}", f"users.info: {error}")
            except UNREACHABLE as exc:
                return Check("warn", f"person {user} of {dept.key}", _slack_error(exc))
        if (answer.get("user") or {}).get("deleted"):
            return Check(
                "FAIL",
                f"person {user} of {dept.key}",
                f"deactivated in Slack: remove them from {where}",
            )
        return None

    found = await asyncio.gather(*(one(u, where) for u, where in roles.items()))
    problems.extend(c for c in found if c is not None)
    if not problems:
        leads = len(dept.leads)
        problems.append(
            Check(
                "ok",
                f"people of {dept.key}",
                f"{len(roles)} {'person' if len(roles) == 1 else 'people'} "
                f"({leads} lead{'s' * (leads != 1)}), all active",
            )
        )
    return problems


async def check_slack(
    client: AsyncWebClient, config: CrmConfig, scopes: Iterable[str] | None
) -> list[Check]:
    auth, headers = await check_auth(client)
    if auth.failed:
        return [auth]
    checks = [auth, *check_scopes(headers, scopes)]
    if not config.departments:
        checks.append(Check("warn", "departments", "CRM_CONFIG names no departments"))
    for dept in config.departments.values():
        checks.append(await check_channel(client, dept))
        checks.extend(await check_people(client, dept))
    return checks


# -- database and RabbitMQ -----------------------------------------------------------------
async def check_database(url: str) -> Check:
    from sqlalchemy.engine import make_url

    from storage.db import Database, DatabaseError
    from storage.migrate import current_revision, head_revision

    try:
        parsed = make_url(url)
    except Exception:
        return Check("FAIL", "database", "DATABASE_URL is not a database URL")
    path = parsed.database or ""
    sqlite_file = parsed.get_backend_name() == "sqlite" and path not in ("", ":memory:")
    if sqlite_file and not await asyncio.to_thread(os.path.isfile, path):
        return Check("FAIL", "database", "no SQLite file at DATABASE_URL: run `crm-bot migrate`")
    try:
        db = Database(url)
    except DatabaseError as exc:
        return Check("FAIL", "database", str(exc))
    try:
        if not await db.ping():
            return Check(
                "FAIL",
                "database",
                "does not answer: check DATABASE_URL and that the database server runs",
            )
        current, head = await current_revision(db), head_revision()
        if current != head:
            return Check(
                "FAIL",
                "database",
                f"schema at {current or 'nothing'}, the code needs {head}: run `crm-bot migrate`",
            )
        return Check("ok", "database", f"answers, schema at the migrations' head ({head})")
    finally:
        await db.close()


async def check_broker(amqp_url: str | None) -> Check:
    if not amqp_url:
        return Check(
            "warn", "rabbitmq", "AMQP_URL is not set: the sync consumer and outbox relay are off"
        )
    import aio_pika

    logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # the line below says it, once
    try:
        connection = await asyncio.wait_for(aio_pika.connect(amqp_url), BROKER_TIMEOUT)
    except Exception as exc:  # refused, bad credentials, unknown vhost, timeout, bad URL
        return Check(
            "FAIL",
            "rabbitmq",
            f"cannot connect ({type(exc).__name__}): check AMQP_URL and that RabbitMQ runs",
        )
    await connection.close()
    return Check("ok", "rabbitmq", "connects")


# -- the command ---------------------------------------------------------------------------
async def run_doctor(
    settings: Settings,
    config: CrmConfig,
    manifest: Path | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Every check, printed as it finishes; 1 when any failed, else 0."""
    settings.require("slack_bot_token")
    path = manifest or MANIFEST
    scopes = await asyncio.to_thread(manifest_scopes, path)
    checks: list[Check] = []

    def report(found: Iterable[Check]) -> None:
        for check in found:
            checks.append(check)
            out(check.line())

    async with aiohttp.ClientSession() as session:
        client = make_client(
            str(settings.slack_bot_token), settings.slack_api_url, timeout=10, session=session
        )
        report(await check_slack(client, config, scopes))
    report([await check_database(settings.database_url)])
    report([await check_broker(settings.amqp_url)])
    failed = sum(c.failed for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    out(f"doctor: {len(checks)} checks, {failed} failed, {warned} warnings")
    return 1 if failed else 0
