"""In-memory state of the sandbox Slack: channels, messages, ephemerals, views and a call log.

Messages are kept as dicts in the shape Slack's Web API returns them, so what a test reads
here is what the bot would read back from Slack. Every change is also pushed to subscribers
(`subscribe()`), which the sandbox web page turns into server-sent events.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any

TEAM_ID = "T0CRM0001"
BOT_USER_ID = "U0CRMBOT1"
BOT_ID = "B0CRMBOT1"
APP_ID = "A0CRMBOT1"


@dataclass
class Call:
    """One Web API call as the sandbox saw it."""

    method: str
    body: dict[str, Any]
    status: int
    response: dict[str, Any] | str
    time: float  # time.monotonic() when the call arrived

    @property
    def ok(self) -> bool:
        return (
            self.status == 200 and isinstance(self.response, dict) and bool(self.response.get("ok"))
        )


@dataclass
class Ephemeral:
    """A message only `user` sees in `channel` (chat.postEphemeral, response_url, command ack)."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    source: str = "api"  # api | response_url | ack
    deleted: bool = False


def dm_channel_id(user: str) -> str:
    """The id of the direct-message channel between the bot and `user` (stable per user)."""
    return "D" + user[1:]


class Store:
    def __init__(
        self,
        channels: dict[str, dict[str, Any]] | None = None,
        users: dict[str, dict[str, Any]] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        auto_channels: bool = True,
    ) -> None:
        self.auto_channels = auto_channels
        self.users: dict[str, dict[str, Any]] = dict(users or {})
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in (usergroups or {}).items()}
        self._messages: dict[str, list[dict[str, Any]]] = {}  # channel -> all messages, ts order
        self._by_ts: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self._edits: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._ephemerals: list[Ephemeral] = []
        self._homes: dict[str, dict[str, Any]] = {}
        self._views: dict[str, dict[str, Any]] = {}  # view id -> view (modals)
        self._view_owner: dict[str, str] = {}
        self.closed_views: set[str] = set()
        self.triggers: dict[str, tuple[str, float]] = {}  # trigger_id -> (user, issued)
        self.used_triggers: set[str] = set()
        self.failed_views: set[str] = set()  # submitted, not acknowledged within 3 s
        self.response_urls: dict[str, dict[str, Any]] = {}  # token -> context
        self._calls: list[Call] = []
        self.files: dict[str, Any] = {}  # file id -> bot.sandbox.files.StoredFile
        self._last_ts_us = 0
        self._seq = 0
        self._queues: list[asyncio.Queue[dict[str, Any]]] = []
        self.channels: dict[str, dict[str, Any]] = {}
        for cid, info in (channels or {}).items():
            self.add_channel(cid, **info)

    # -- identifiers -------------------------------------------------------------------
    def next_ts(self) -> str:
        """A message ts like Slack's: seconds.microseconds, strictly increasing."""
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        sec, usec = divmod(self._last_ts_us, 1_000_000)
        return f"{sec}.{usec:06d}"

    def next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}0SBX{self._seq:05d}"

    # -- subscribers -------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        if queue in self._queues:
            self._queues.remove(queue)

    def emit(self, kind: str, **data: Any) -> None:
        change = {"type": kind, **copy.deepcopy(data)}
        for queue in self._queues:
            queue.put_nowait(change)

    # -- channels ----------------------------------------------------------------------
    def add_channel(self, cid: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
        info = {
            "id": cid,
            "name": name or cid.lower(),
            "is_channel": cid.startswith("C"),
            "is_im": cid.startswith("D"),
            "is_private": cid.startswith("G") or cid.startswith("D"),
            "is_archived": False,
            "created": int(time.time()),
            # Membership, as Slack keeps it per conversation: the bot is in a channel only once
            # it joined (conversations.join) or was invited (`Sandbox.invite`); always in its
            # DMs. `members` are the people in it.
            "is_member": cid.startswith("D"),
            "members": [],
            **extra,
        }
        if info["is_im"] and info.get("user"):
            info["members"] = [info["user"]]
        self.channels[cid] = info
        self._messages.setdefault(cid, [])
        self.emit("channel", channel=info)
        return info

    def resolve_channel(self, ref: str, create: bool | None = None) -> dict[str, Any] | None:
        """A channel by id or `#name`; a user id means the bot's DM with that user."""
        if ref in self.channels:
            return self.channels[ref]
        name = ref.lstrip("#")
        for info in self.channels.values():
            if info["name"] == name and not info["is_im"]:
                return info
        if ref[:1] in ("U", "W"):
            return self.open_dm(ref)
        if ref.startswith("D") and ref[1:] and ("U" + ref[1:]) in self.users:
            return self.open_dm("U" + ref[1:])
        if self.auto_channels if create is None else create:
            return self.add_channel(ref) if ref[:1] in ("C", "G") else None
        return None

    def add_member(self, cid: str, user: str) -> None:
        """`user` is in channel `cid` (the bot itself when `user` is BOT_USER_ID)."""
        info = self.channels.get(cid)
        if info is None:
            return
        if user == BOT_USER_ID:
            info["is_member"] = True
        elif user not in info["members"]:
            info["members"].append(user)
        self.emit("channel", channel=info)

    def is_active(self, user: str) -> bool:
        """A known user who was not deactivated (`deleted`, as users.info shows it)."""
        info = self.users.get(user)
        return info is not None and not info.get("deleted")

    def open_dm(self, user: str) -> dict[str, Any]:
        cid = dm_channel_id(user)
        if cid not in self.channels:
            self.add_channel(cid, name=cid.lower(), user=user)
        return self.channels[cid]

    # -- messages ----------------------------------------------------------------------
    def add_message(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Append a message (already Slack-shaped, with `ts`); updates its thread parent."""
        self._messages.setdefault(channel, []).append(message)
        self._by_ts[(channel, message["ts"])] = message
        parent_ts = message.get("thread_ts")
        if parent_ts and parent_ts != message["ts"]:
            parent = self.message(channel, parent_ts)
            if parent is not None:
                parent["thread_ts"] = parent_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                users = parent.setdefault("reply_users", [])
                who = message.get("user") or message.get("bot_id")
                if who and who not in users:
                    users.append(who)
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = message["ts"]
                self.emit("message_changed", channel=channel, message=parent)
        self.emit("message", channel=channel, message=message)
        return message

    def update_message(self, channel: str, ts: str, **changes: Any) -> dict[str, Any] | None:
        message = self.message(channel, ts)
        if message is None:
            return None
        self._edits.setdefault((channel, ts), []).append(copy.deepcopy(message))
        message.update(changes)
        message["edited"] = {"user": BOT_USER_ID, "ts": self.next_ts()}
        self.emit("message_changed", channel=channel, message=message)
        return message

    def delete_message(self, channel: str, ts: str) -> bool:
        message = self.message(channel, ts)
        if message is None:
            return False
        self._messages[channel].remove(message)
        del self._by_ts[(channel, ts)]
        self.emit("message_deleted", channel=channel, ts=ts)
        return True

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return self._by_ts.get((channel, ts))

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages of a channel (and replies shown there by reply_broadcast), oldest
        first."""
        return [
            m
            for m in self._messages.get(channel, [])
            if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
        ]

    def all_messages(self, channel: str) -> list[dict[str, Any]]:
        return list(self._messages.get(channel, []))

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The parent message and its replies, oldest first; [] when there is no such message."""
        parent = self.message(channel, ts)
        if parent is None:
            return []
        root = parent.get("thread_ts") or ts
        return [
            m for m in self._messages.get(channel, []) if (m.get("thread_ts") or m["ts"]) == root
        ]

    def history(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Earlier versions of a message, before each chat.update, oldest first."""
        return list(self._edits.get((channel, ts), []))

    def dms(self, user: str) -> list[dict[str, Any]]:
        return self.all_messages(dm_channel_id(user))

    # -- ephemerals --------------------------------------------------------------------
    def add_ephemeral(self, eph: Ephemeral) -> Ephemeral:
        self._ephemerals.append(eph)
        self.emit("ephemeral", ephemeral=eph.__dict__)
        return eph

    def ephemeral(self, user: str, ts: str) -> Ephemeral | None:
        for eph in self._ephemerals:
            if eph.user == user and eph.ts == ts and not eph.deleted:
                return eph
        return None

    def ephemerals(self, user: str, channel: str | None = None) -> list[Ephemeral]:
        return [
            e
            for e in self._ephemerals
            if e.user == user and not e.deleted and (channel is None or e.channel == channel)
        ]

    # -- views -------------------------------------------------------------------------
    def set_home(self, user: str, view: dict[str, Any]) -> None:
        self._homes[user] = view
        self.emit("home", user=user, view=view)

    def home(self, user: str) -> dict[str, Any] | None:
        return self._homes.get(user)

    def put_view(self, user: str, view: dict[str, Any]) -> None:
        self._views[view["id"]] = view
        self._view_owner[view["id"]] = user
        self.closed_views.discard(view["id"])
        self.emit("view", user=user, view=view)

    def view(self, view_id: str) -> dict[str, Any] | None:
        if view_id in self._views:
            return self._views[view_id]
        for view in self._homes.values():
            if view["id"] == view_id:
                return view
        return None

    def view_owner(self, view_id: str) -> str | None:
        if view_id in self._view_owner:
            return self._view_owner[view_id]
        for user, view in self._homes.items():
            if view["id"] == view_id:
                return user
        return None

    def view_by_external_id(self, external_id: str) -> dict[str, Any] | None:
        for view in [*self._views.values(), *self._homes.values()]:
            if external_id and view.get("external_id") == external_id:
                return view
        return None

    def close_view(self, view_id: str) -> None:
        self.closed_views.add(view_id)
        self.emit("view_closed", view_id=view_id)

    def views(self, user: str) -> list[dict[str, Any]]:
        """The modals currently open for `user`, oldest first."""
        return [
            v
            for vid, v in self._views.items()
            if self._view_owner[vid] == user and vid not in self.closed_views
        ]

    # -- call log ----------------------------------------------------------------------
    def record_call(self, call: Call) -> None:
        self._calls.append(call)
        self.emit(
            "api_call", method=call.method, status=call.status, ok=bool(call.ok), time=call.time
        )

    def calls(self, method: str | None = None) -> list[Call]:
        return [c for c in self._calls if method is None or c.method == method]
