"""The Slack Web API methods the bot uses, answered from the in-memory store.

Each method takes the parsed arguments (query, form and JSON merged, as Slack accepts them)
and returns the response body, shaped as Slack's: `{"ok": true, ...}` or
`{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.sandbox.limits import MAX_MESSAGE_BLOCKS, MAX_TEXT, block_errors
from bot.sandbox.rules import history_scope
from bot.sandbox.store import APP_ID, BOT_ID, BOT_USER_ID, TEAM_ID, Ephemeral, Store

Body = dict[str, Any]
Method = Callable[["WebApi", Body], Awaitable[Body]]


def registrar(table: dict[str, Method]) -> Callable[[str], Callable[[Method], Method]]:
    """A decorator `@method("chat.postMessage")` that records methods in `table`."""

    def method(name: str) -> Callable[[Method], Method]:
        def register(fn: Method) -> Method:
            table[name] = fn
            return fn

        return register

    return method


METHODS: dict[str, Method] = {}  # messages, conversations, users (views: bot.sandbox.views)
method = registrar(METHODS)


def error(code: str, **extra: Any) -> Body:
    return {"ok": False, "error": code, **extra}


def _json_arg(value: Any) -> Any:
    """Form-encoded calls carry blocks and views as JSON strings; JSON calls as objects."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _flag(value: Any) -> bool:
    return value in (True, "true", "True", "1", 1)


class WebApi:
    def __init__(
        self,
        store: Store,
        base_url: Callable[[], str],
        methods: dict[str, Method],
        scopes: list[str] | None = None,
    ) -> None:
        self.store = store
        self.base_url = base_url
        self.methods = methods
        self.scopes = scopes  # None: every scope granted

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def missing_scope(self, scope: str) -> Body:
        provided = ",".join(sorted(self.scopes or ()))
        return error("missing_scope", needed=scope, provided=provided)

    async def call(self, name: str, args: Body) -> Body:
        fn = self.methods.get(name)
        if fn is None:
            return error("unknown_method")
        return await fn(self, args)

    # -- shared checks -----------------------------------------------------------------
    def content_error(self, args: Body, max_blocks: int = MAX_MESSAGE_BLOCKS) -> Body | None:
        text = args.get("text")
        blocks = args.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            return error("invalid_blocks_format")
        if not text and not blocks and not args.get("attachments"):
            return error("no_text")
        if text and len(str(text)) > MAX_TEXT:
            return error("msg_too_long")
        if blocks:
            problems = block_errors(blocks, max_blocks)
            if problems:
                return error(
                    "invalid_blocks", errors=problems, response_metadata={"messages": problems}
                )
        return None

    def channel_for_write(self, ref: Any) -> tuple[dict[str, Any] | None, Body | None]:
        """The channel a message may be posted in, or Slack's refusal (chat.postMessage,
        docs.slack.dev/reference/methods/chat.postMessage "Errors"): `channel_not_found` for
        a private channel the bot is not in (to the bot it does not exist), `is_archived`,
        and `not_in_channel` for a public one it is not in unless the token has
        `chat:write.public` ("Send messages to channels @your_slack_app isn't a member of")."""
        if not ref:
            return None, error("channel_not_found")
        info = self.store.resolve_channel(str(ref))
        if info is None:
            return None, error("channel_not_found")
        if info.get("is_private") and not info.get("is_member"):
            return None, error("channel_not_found")
        if info.get("is_archived"):
            return None, error("is_archived")
        if not info.get("is_member") and not self.has_scope("chat:write.public"):
            return None, error("not_in_channel")
        return info, None

    def channel_for_read(self, ref: Any) -> tuple[dict[str, Any] | None, Body | None]:
        """The channel whose messages the bot may read, or Slack's refusal
        (conversations.history / .replies, "Errors"): `not_in_channel` for a public channel
        the bot is not a member of, `channel_not_found` for a private one (or none at all),
        `missing_scope` without the history scope of the conversation's type."""
        info = self.store.resolve_channel(str(ref or ""), create=False)
        if info is None or (info.get("is_private") and not info.get("is_member")):
            return None, error("channel_not_found")
        if not self.has_scope(history_scope(info)):
            return None, self.missing_scope(history_scope(info))
        if not info.get("is_member"):
            return None, error("not_in_channel")
        return info, None

    def bot_message(self, args: Body, ts: str) -> Body:
        message: Body = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": str(args.get("text") or ""),
            "ts": ts,
            "bot_profile": {"id": BOT_ID, "app_id": APP_ID, "name": "crm-bot", "team_id": TEAM_ID},
        }
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        if args.get("metadata"):
            message["metadata"] = args["metadata"]
        return message

    def user_info(self, user: str) -> Body | None:
        info = self.store.users.get(user)
        if info is None:
            return None
        real = info.get("real_name", info.get("name", user))
        team = info.get("team_id", TEAM_ID)
        return {
            "id": user,
            "team_id": team,
            "name": info.get("name", user.lower()),
            "real_name": real,
            "deleted": bool(info.get("deleted", False)),  # deactivated: still answered, as Slack
            "is_bot": False,
            # A guest (multi- or single-channel) and a person of another organisation seen in
            # a shared channel, as Slack reports them; set on the sandbox's user entry.
            "is_restricted": bool(info.get("is_restricted", False)),
            "is_ultra_restricted": bool(info.get("is_ultra_restricted", False)),
            **({"is_stranger": True} if info.get("is_stranger") else {}),
            "tz": info.get("tz", "Europe/Berlin"),
            "profile": {
                "real_name": real,
                "display_name": info.get("name", ""),
                "title": info.get("dept", ""),
                "team": team,
            },
        }


def parse_json_args(args: Body, *keys: str) -> Body:
    for key in keys:
        if key in args:
            args[key] = _json_arg(args[key])
    return args


@method("api.test")
async def api_test(api: WebApi, args: Body) -> Body:
    return {"ok": True, "args": {k: v for k, v in args.items() if k != "token"}}


@method("auth.test")
async def auth_test(api: WebApi, args: Body) -> Body:
    return {
        "ok": True,
        "url": api.base_url() + "/",
        "team": "CRM Sandbox",
        "user": "crm-bot",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "is_enterprise_install": False,
    }


@method("chat.postMessage")
async def chat_post_message(api: WebApi, args: Body) -> Body:
    parse_json_args(args, "blocks", "metadata", "attachments")
    info, err = api.channel_for_write(args.get("channel"))
    if err:
        return err
    assert info is not None
    err = api.content_error(args)
    if err:
        return err
    ts = api.store.next_ts()
    message = api.bot_message(args, ts)
    thread_ts = args.get("thread_ts")
    if thread_ts:
        # Slack accepts a thread_ts that matches no message and simply posts the reply.
        message["thread_ts"] = str(thread_ts)
        message["parent_user_id"] = BOT_USER_ID
        if _flag(args.get("reply_broadcast")):
            message["subtype"] = "thread_broadcast"
    api.store.add_message(info["id"], message)
    return {"ok": True, "channel": info["id"], "ts": ts, "message": message}


@method("chat.update")
async def chat_update(api: WebApi, args: Body) -> Body:
    parse_json_args(args, "blocks", "metadata", "attachments")
    info = api.store.resolve_channel(str(args.get("channel", "")), create=False)
    if info is None or (info.get("is_private") and not info.get("is_member")):
        return error("channel_not_found")
    if info.get("is_archived"):
        return error("is_archived")
    message = api.store.message(info["id"], str(args.get("ts", "")))
    if message is None:
        return error("message_not_found")
    if message.get("bot_id") != BOT_ID:
        return error("cant_update_message")
    if "text" not in args and "blocks" not in args:
        return error("no_text")
    err = api.content_error({"text": message["text"], **args})
    if err:
        return err
    changes: Body = {}
    if "text" in args:
        changes["text"] = str(args["text"] or "")
    if "blocks" in args:
        changes["blocks"] = args["blocks"] or []
    if args.get("metadata"):
        changes["metadata"] = args["metadata"]
    updated = api.store.update_message(info["id"], message["ts"], **changes)
    assert updated is not None
    return {
        "ok": True,
        "channel": info["id"],
        "ts": updated["ts"],
        "text": updated["text"],
        "message": updated,
    }


@method("chat.delete")
async def chat_delete(api: WebApi, args: Body) -> Body:
    info = api.store.resolve_channel(str(args.get("channel", "")), create=False)
    if info is None:
        return error("channel_not_found")
    if not api.store.delete_message(info["id"], str(args.get("ts", ""))):
        return error("message_not_found")
    return {"ok": True, "channel": info["id"], "ts": args["ts"]}


@method("chat.postEphemeral")
async def chat_post_ephemeral(api: WebApi, args: Body) -> Body:
    parse_json_args(args, "blocks", "attachments")
    info, err = api.channel_for_write(args.get("channel"))
    if err:
        return err
    assert info is not None
    user = str(args.get("user") or "")
    if not user or (api.store.users and user not in api.store.users):
        return error("user_not_found")
    # "user_not_in_channel: Intended recipient is not in the specified channel"
    # (chat.postEphemeral, "Errors"); a deactivated user is in no channel.
    if not api.store.is_active(user) and api.store.users:
        return error("user_not_in_channel")
    if not info.get("is_im") and user not in info["members"]:
        return error("user_not_in_channel")
    if info.get("is_im") and info.get("user") not in (None, user):
        return error("user_not_in_channel")
    err = api.content_error(args)
    if err:
        return err
    ts = api.store.next_ts()
    api.store.add_ephemeral(
        Ephemeral(
            channel=info["id"],
            user=user,
            ts=ts,
            text=str(args.get("text") or ""),
            blocks=args.get("blocks") or [],
            thread_ts=args.get("thread_ts"),
        )
    )
    return {"ok": True, "message_ts": ts}


@method("chat.getPermalink")
async def chat_get_permalink(api: WebApi, args: Body) -> Body:
    info = api.store.resolve_channel(str(args.get("channel", "")), create=False)
    if info is None or (info.get("is_private") and not info.get("is_member")):
        return error("channel_not_found")
    ts = str(args.get("message_ts", ""))
    if api.store.message(info["id"], ts) is None:
        return error("message_not_found")
    link = f"{api.base_url()}/archives/{info['id']}/p{ts.replace('.', '')}"
    return {"ok": True, "channel": info["id"], "permalink": link}


def _page(messages: list[Body], args: Body) -> Body:
    """One page of `messages` (`limit`, `cursor` as Slack pages), metadata only when asked for
    with `include_all_metadata`, as Slack answers."""
    limit = max(1, min(int(args.get("limit") or 100), 1000))
    try:
        cursor = base64.b64decode(str(args.get("cursor") or ""), validate=True).decode()
        start = int(cursor.removeprefix("next:") or 0)
    except (ValueError, binascii.Error):
        return error("invalid_cursor")
    page = messages[start : start + limit]
    if not _truthy(args.get("include_all_metadata")):
        page = [{k: v for k, v in m.items() if k != "metadata"} for m in page]
    more = start + limit < len(messages)
    cursor = base64.b64encode(f"next:{start + limit}".encode()).decode() if more else ""
    return {
        "ok": True,
        "messages": page,
        "has_more": more,
        "response_metadata": {"next_cursor": cursor},
    }


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _between(messages: list[Body], args: Body) -> list[Body]:
    """The messages within `oldest` and `latest` (Unix times, both inclusive here)."""
    oldest = float(args.get("oldest") or 0)
    latest = float(args.get("latest") or time.time() + 86400)
    return [m for m in messages if oldest <= float(m["ts"]) <= latest]


@method("conversations.replies")
async def conversations_replies(api: WebApi, args: Body) -> Body:
    info, err = api.channel_for_read(args.get("channel"))
    if err:
        return err
    assert info is not None
    thread = api.store.thread(info["id"], str(args.get("ts", "")))
    if not thread:
        return error("thread_not_found")
    return _page(_between(thread, args), args)


@method("conversations.history")
async def conversations_history(api: WebApi, args: Body) -> Body:
    info, err = api.channel_for_read(args.get("channel"))
    if err:
        return err
    assert info is not None
    found = _between(api.store.messages(info["id"]), args)
    return _page(list(reversed(found)), args)  # newest first, as Slack answers


@method("conversations.info")
async def conversations_info(api: WebApi, args: Body) -> Body:
    """A channel's facts as Slack gives them to a bot token: `is_member`, `is_archived`,
    `is_private`. A private channel the bot is not in does not exist for it:
    `channel_not_found` (scope channels:read, checked with every method's scope)."""
    info = api.store.resolve_channel(str(args.get("channel", "")), create=False)
    if info is None or (info.get("is_private") and not info.get("is_member")):
        return error("channel_not_found")
    private = bool(info.get("is_private"))
    channel = {
        **info,
        "is_private": private,
        "is_group": private and not info["is_im"],
        "is_member": bool(info.get("is_member")),
        "is_archived": bool(info.get("is_archived", False)),
    }
    channel.pop("members", None)  # Slack lists members with conversations.members
    return {"ok": True, "channel": channel}


@method("conversations.open")
async def conversations_open(api: WebApi, args: Body) -> Body:
    users = str(args.get("users") or "").split(",")
    if len(users) != 1 or not users[0]:
        return error("users_list_not_supplied" if not users[0] else "not_implemented")
    if api.store.users and users[0] not in api.store.users:
        return error("user_not_found")
    # conversations.open "Errors": user_disabled, "The user has been disabled".
    if api.store.users and not api.store.is_active(users[0]):
        return error("user_disabled")
    info = api.store.open_dm(users[0])
    return {"ok": True, "channel": {"id": info["id"]}}


@method("conversations.join")
async def conversations_join(api: WebApi, args: Body) -> Body:
    """Joins a public channel (scope channels:join, checked with every method's scope). A
    private channel cannot be joined, only invited to: `method_not_supported_for_channel_type`
    (conversations.join, "Errors"); an archived one answers `is_archived`."""
    info = api.store.resolve_channel(str(args.get("channel", "")))
    if info is None or (info.get("is_private") and not info.get("is_member")):
        return error("channel_not_found")
    if info.get("is_im") or info.get("is_private"):
        return error("method_not_supported_for_channel_type")
    if info.get("is_archived"):
        return error("is_archived")
    already = bool(info.get("is_member"))
    api.store.add_member(info["id"], BOT_USER_ID)
    answer: Body = {"ok": True, "channel": {**info, "is_member": True}}
    if already:
        answer["warning"] = "already_in_channel"
        answer["response_metadata"] = {"warnings": ["already_in_channel"]}
    return answer


@method("users.info")
async def users_info(api: WebApi, args: Body) -> Body:
    user = api.user_info(str(args.get("user", "")))
    return {"ok": True, "user": user} if user else error("user_not_found")


@method("usergroups.users.list")
async def usergroups_users_list(api: WebApi, args: Body) -> Body:
    members = api.store.usergroups.get(str(args.get("usergroup", "")))
    if members is None:
        return error("no_such_subteam")
    return {"ok": True, "users": list(members)}
