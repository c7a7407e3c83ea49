"""The sandbox's HTTP server: Slack's Web API under /api/, response_urls under /response/.

async with await Sandbox.start(bot_token="xoxb-test") as sandbox:
    client = AsyncWebClient(token="xoxb-test", base_url=sandbox.api_url)
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.sandbox import files, views, webapi
from bot.sandbox.faults import Fault, Faults
from bot.sandbox.limits import MAX_TEXT, block_errors
from bot.sandbox.rules import (
    METHOD_SCOPES,
    POST_BURST,
    POST_PER_CHANNEL_PER_SECOND,
    RateLimits,
    scopes_from_manifest,
)
from bot.sandbox.socket_mode import SocketModeLink
from bot.sandbox.store import BOT_USER_ID, Call, Ephemeral, Store
from bot.sandbox.webapi import WebApi, error

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "xoxb-sandbox-token"
MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"


def manifest_scopes(path: Path = MANIFEST) -> list[str] | None:
    """The bot scopes an app installed from the manifest beside the code is granted; None (every
    scope) when there is no manifest there."""
    return sorted(scopes_from_manifest(path)) if path.is_file() else None


DEMO_CHANNELS: dict[str, dict[str, Any]] = {
    "C0SALES01": {"name": "sales"},
    "C0MARKET1": {"name": "marketing"},
    "C0SERVICE": {"name": "customer-service"},
    "C0FINANCE": {"name": "finance"},
    "C0GENERAL": {"name": "general"},
}
DEMO_USERS: dict[str, dict[str, Any]] = {
    "U0ALICE01": {"name": "alice", "real_name": "Alice Archer", "dept": "sales"},
    "U0BOB0001": {"name": "bob", "real_name": "Bob Baker", "dept": "sales"},
    "U0CAROL01": {"name": "carol", "real_name": "Carol Clark", "dept": "marketing"},
    "U0DAVE001": {"name": "dave", "real_name": "Dave Dunn", "dept": "service"},
    "U0ERIN001": {"name": "erin", "real_name": "Erin Evans", "dept": "service"},
    "U0FRANK01": {"name": "frank", "real_name": "Frank Fisher", "dept": "finance"},
    "U0GRACE01": {"name": "grace", "real_name": "Grace Green", "dept": "finance"},
}
DEMO_USERGROUPS: dict[str, list[str]] = {
    "S0SALES01": ["U0ALICE01", "U0BOB0001"],
    "S0FINANCE": ["U0FRANK01", "U0GRACE01"],
}

RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 30 * 60.0

ERROR_PAGE = "<html><body><h1>{status}</h1><p>Slack is having trouble.</p></body></html>"


def response_body_error(body: dict[str, Any]) -> str | None:
    """What Slack answers a response_url (or a command's acknowledgement) whose message it
    refuses: the same Block Kit and text limits as chat.postMessage; None when accepted."""
    if body.get("delete_original"):
        return None
    blocks = body.get("blocks")
    text = body.get("text")
    if blocks is not None and not isinstance(blocks, list):
        return "invalid_blocks_format"
    if not text and not blocks and not body.get("attachments"):
        return "no_text"
    if text and len(str(text)) > MAX_TEXT:
        return "msg_too_long"
    if blocks and block_errors(blocks):
        return "invalid_blocks"
    return None


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Query, form and JSON arguments merged, the way Slack accepts any of them."""
    args: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                args.update(body)
        else:
            args.update(dict(await request.post()))
    return args


class Sandbox:
    """A local Slack. Build with `await Sandbox.start(...)`; `store` holds everything it saw."""

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_TOKEN,
        channels: dict[str, dict[str, Any]] | None = None,
        users: dict[str, dict[str, Any]] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        auto_channels: bool = True,
        page: bool = False,
        app_token: str | None = None,
        scopes: Iterable[str] | None = None,
        rate_limits: bool = True,
    ) -> None:
        """`scopes`: the bot scopes the workspace granted, by default those manifest.yml
        requests (every scope only when no manifest is beside the code). Slack's rate limits
        are on unless `rate_limits=False`."""
        self.bot_token = bot_token
        self.socket_mode = SocketModeLink(app_token)  # for a bot given this app-level token
        if channels is None:  # the demo workspace: everyone is in every channel, the bot in none
            channels = {c: {**i, "members": list(DEMO_USERS)} for c, i in DEMO_CHANNELS.items()}
        self.store = Store(
            channels=channels,
            users=DEMO_USERS if users is None else users,
            usergroups=DEMO_USERGROUPS if usergroups is None else usergroups,
            auto_channels=auto_channels,
        )
        self.faults = Faults(rate_limits)
        self.url = ""
        methods = {**webapi.METHODS, **views.METHODS, **files.METHODS}
        granted = manifest_scopes() if scopes is None else list(scopes)
        self.webapi = WebApi(self.store, lambda: self.url, methods, granted)
        self.app = web.Application()
        files.add_routes(self.app, self.webapi)
        self.app.router.add_route("*", "/api/{method}", self._api)
        self.app.router.add_post("/response/{token}", self._response_url)
        self.app.router.add_get("/link/", self.socket_mode.serve)
        self.page: Any = None
        if page:  # the web page of `crm-bot demo` (bot/sandbox/page.py)
            from bot.sandbox.page import add_page_routes

            self.page = add_page_routes(self)
        self._runner: web.AppRunner | None = None

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Sandbox:
        sandbox = cls(**options)
        await sandbox.listen(host, port)
        return sandbox

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # (host, port, ...) of each listening socket
        bound = addresses[0][1] if addresses else port
        self.url = f"http://{host}:{bound}"

    async def stop(self) -> None:
        await self.socket_mode.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        if self._runner is None:
            await self.listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def scopes(self) -> list[str] | None:
        """The bot scopes the workspace granted (None: every scope): one list, both the
        `missing_scope` checks and the `x-oauth-scopes` header read it. A test may set it, as
        an admin changing the app's scopes would."""
        return self.webapi.scopes

    @scopes.setter
    def scopes(self, scopes: Iterable[str] | None) -> None:
        self.webapi.scopes = None if scopes is None else list(scopes)

    # -- test controls -----------------------------------------------------------------
    def fail(
        self,
        method: str | None = None,
        status: int = 429,
        times: int = 1,
        retry_after: int = 1,
        error: str | None = None,
        disconnect: bool = False,
        applied: bool = False,
    ) -> None:
        """Answer the next `times` calls to `method` (all methods when None) with HTTP
        `status` (429 with Retry-After, 5xx with an HTML page), with `{"ok": false, "error":
        error}` when `error` is given (status 200), or by dropping the connection. With
        `applied`, each call takes effect first and only its answer fails, as when Slack posts a
        message and the answer is lost on the way back."""
        if error is not None and status == 429:
            status = 200
        self.faults.add(Fault(method, status, times, retry_after, error, disconnect, applied))

    def rate_limit(
        self, per_channel_per_second: float = POST_PER_CHANNEL_PER_SECOND, burst: int = POST_BURST
    ) -> None:
        """Slack's rate limits (afresh), with chat.postMessage answered 429 when one channel
        gets posts faster than this (Slack's own: 1 a second, short bursts allowed)."""
        self.faults.rate_limits = RateLimits(per_channel_per_second, burst)

    def rate_limits_off(self) -> None:
        """No rate limits at all. A test that calls this says why in a comment."""
        self.faults.rate_limits = None

    def invite(self, channel: str, user: str = BOT_USER_ID) -> None:
        """Someone invites `user` (the bot by default) into `channel`: how the bot gets into
        a private channel (conversations.join works only for public ones)."""
        self.store.add_member(channel, user)

    def kick(self, channel: str, user: str = BOT_USER_ID) -> None:
        """Someone removes `user` (the bot by default) from `channel`."""
        info = self.store.channels[channel]
        if user == BOT_USER_ID:
            info["is_member"] = False
        elif user in info["members"]:
            info["members"].remove(user)
        self.store.emit("channel", channel=info)

    def deactivate(self, user: str) -> None:
        """An admin deactivates `user`: users.info shows `deleted`, they leave every channel."""
        self.store.users[user] = {**self.store.users.get(user, {}), "deleted": True}
        for info in self.store.channels.values():
            if user in info["members"]:
                info["members"].remove(user)

    def call_counts(self, since: int = 0) -> Counter[str]:
        """Web API calls by method, from the `since`-th call on (`len(store.calls())` taken
        before an action counts that action's calls)."""
        return Counter(c.method for c in self.store.calls()[since:])

    def clear_faults(self) -> None:
        self.faults.clear()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of every change to the store, as dicts with a `type` key."""
        return self.store.subscribe()

    def issue_trigger(self, user: str) -> str:
        trigger_id = f"{int(time.time())}.{secrets.token_hex(6)}"
        self.store.triggers[trigger_id] = (user, time.monotonic())
        return trigger_id

    def issue_response_url(
        self, user: str, channel: str | None, message_ts: str | None = None
    ) -> str:
        token = secrets.token_urlsafe(12)
        self.store.response_urls[token] = {
            "user": user,
            "channel": channel,
            "ts": message_ts,
            "issued": time.monotonic(),
            "uses": 0,
        }
        return f"{self.url}/response/{token}"

    # -- handlers ----------------------------------------------------------------------
    @staticmethod
    def _token(request: web.Request, args: dict[str, Any]) -> str | None:
        header = request.headers.get("Authorization", "")
        return header[7:] if header.startswith("Bearer ") else args.pop("token", None)

    def _authorized(self, request: web.Request, args: dict[str, Any]) -> str | None:
        token = self._token(request, args)
        if not token:
            return "not_authed"
        return None if secrets.compare_digest(str(token), self.bot_token) else "invalid_auth"

    async def _api(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        started = time.monotonic()
        args = await _read_args(request)
        logged = {k: v for k, v in args.items() if k != "token"}
        fault = self.faults.next_for(name)
        if fault is not None:
            if fault.applied and self._authorized(request, dict(args)) is None:
                args.pop("token", None)
                await self.webapi.call(name, args)
            return self._inject(request, name, logged, fault, started)
        if name == "apps.connections.open":  # the one method called with the app-level token
            body = self.socket_mode.open(self._token(request, args), self.url)
            return self._answer(name, logged, 200, body, started)
        auth_error = self._authorized(request, args)
        args.pop("token", None)
        if auth_error:
            return self._answer(name, logged, 200, error(auth_error), started)
        # Every answer to a call made with the bot token names what it was granted in the
        # `x-oauth-scopes` header, as Slack's do (what `crm-bot doctor` reads).
        granted = {"x-oauth-scopes": ",".join(self.scopes or ())}
        needed = METHOD_SCOPES.get(name)
        if needed and not self.webapi.has_scope(needed):
            # Slack answers a method whose scope the token lacks with missing_scope, naming
            # the scope `needed` and the ones `provided` (docs.slack.dev/apis/web-api,
            # "Errors"); the call does nothing.
            body = self.webapi.missing_scope(needed)
            return self._answer(name, logged, 200, body, started, granted)
        retry_after = self.faults.throttle(name, args.get("channel"))
        if retry_after is not None:
            return self._answer(
                name, logged, 429, error("ratelimited"), started, {"Retry-After": str(retry_after)}
            )
        body = await self.webapi.call(name, args)
        return self._answer(name, logged, 200, body, started, granted)

    def _answer(
        self,
        name: str,
        args: dict[str, Any],
        status: int,
        body: dict[str, Any],
        started: float,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.store.record_call(Call(name, args, status, body, started))
        return web.json_response(body, status=status, headers=headers, dumps=json.dumps)

    def _inject(
        self, request: web.Request, name: str, args: dict[str, Any], fault: Fault, started: float
    ) -> web.StreamResponse:
        if fault.disconnect:
            self.store.record_call(Call(name, args, 0, "disconnected", started))
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault.status == 429:
            headers = {"Retry-After": str(fault.retry_after)}
            return self._answer(name, args, 429, error("ratelimited"), started, headers)
        if fault.status == 200:
            return self._answer(name, args, 200, error(fault.error or "fatal_error"), started)
        page = ERROR_PAGE.format(status=fault.status)
        self.store.record_call(Call(name, args, fault.status, page, started))
        return web.Response(status=fault.status, text=page, content_type="text/html")

    async def _response_url(self, request: web.Request) -> web.Response:
        target = self.store.response_urls.get(request.match_info["token"])
        if target is None:
            return web.Response(status=404, text="no_such_response_url")
        # "You can use a response_url up to 5 times within 30 minutes of receiving it"
        # (docs.slack.dev/interactivity/handling-user-interaction, responding to interactions).
        if time.monotonic() - target["issued"] > RESPONSE_URL_TTL:
            return web.Response(status=404, text="expired_url")
        if target["uses"] >= RESPONSE_URL_USES:
            return web.Response(status=404, text="used_url")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        body = body if isinstance(body, dict) else {}
        problem = response_body_error(body)
        if problem is not None:
            self.store.record_call(Call("response_url", body, 400, problem, time.monotonic()))
            return web.Response(status=400, text=problem)
        target["uses"] += 1
        self.store.record_call(Call("response_url", body, 200, {"ok": True}, time.monotonic()))
        self.apply_response(target, body)
        return web.Response(text="ok")

    def apply_response(self, target: dict[str, Any], body: dict[str, Any]) -> None:
        """What Slack does with a message sent to a response_url (or a command's ack body)."""
        store, user, channel, ts = self.store, target["user"], target["channel"], target["ts"]
        original = store.ephemeral(user, ts) if ts else None
        if body.get("delete_original"):
            if original is not None:
                original.deleted = True
                store.emit("ephemeral_deleted", user=user, ts=ts)
            elif ts and channel:
                store.delete_message(channel, ts)
            return
        text = str(body.get("text") or "")
        blocks = body.get("blocks") or []
        if body.get("replace_original") and ts:
            if original is not None:
                original.text, original.blocks = text, blocks
                store.emit("ephemeral", ephemeral=original.__dict__)
            elif channel and store.message(channel, ts) is not None:
                store.update_message(channel, ts, text=text, blocks=blocks)
            return
        if channel is None:
            return
        if body.get("response_type") == "in_channel":
            message = self.webapi.bot_message({"text": text, "blocks": blocks}, store.next_ts())
            if body.get("thread_ts"):
                message["thread_ts"] = str(body["thread_ts"])
            store.add_message(channel, message)
            return
        store.add_ephemeral(
            Ephemeral(
                channel=channel,
                user=user,
                ts=store.next_ts(),
                text=text,
                blocks=blocks,
                thread_ts=body.get("thread_ts"),
                source=target.get("source", "response_url"),
            )
        )
