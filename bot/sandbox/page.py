"""The sandbox's web page: a local Slack to click, served next to the Web API.

    GET  /                 the page (bot/sandbox/static/index.html, app.css, app.js)
    GET  /events           server-sent events: every change to the store, live
    GET  /ui/state?user=U  what that user sees now (channels, messages, their ephemerals,
                           their open modals and App Home), to start from and after reconnects
    POST /ui/message       {user, channel, text, thread_ts?}: `/crm ...` becomes a signed slash
                           command; other text is a message from that user (and an
                           `app_mention` event to the bot when it says @crm-bot)
    POST /ui/action        {user, action_id, value?, block_id?, channel?, message_ts?, view_id?}:
                           a signed `block_actions` (a button on a message, ephemeral or view)
    POST /ui/submit        {user, view_id, values}: a signed `view_submission`
    POST /ui/close         {user, view_id}: the person closed a modal
    POST /ui/home          {user}: the App Home tab was opened (a signed `app_home_opened`)

The page acts as whichever demo user is selected; everything reaching the bot goes through
`SlackClientSim`, so the bot only ever sees signed HTTP, as from Slack.

Only its own page may use it (`same_site_only`): every request must name the sandbox's own
address in `Host` (127.0.0.1 or localhost, its port), so a DNS-rebinding page cannot read
cards through /ui/state; a POST must be `application/json` (a cross-site form or "simple"
request cannot send that without a CORS preflight, which is never answered) and, when the
browser says where it comes from (`Origin`), come from that address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.sandbox.client import SlackClientSim
from bot.sandbox.store import BOT_USER_ID, Ephemeral, dm_channel_id

if TYPE_CHECKING:
    from bot.sandbox.server import Sandbox

log = logging.getLogger(__name__)
mimetypes.add_type("text/javascript", ".js")  # whatever the system's MIME table says
mimetypes.add_type("text/css", ".css")

STATIC = Path(__file__).parent / "static"
HEARTBEAT_SECONDS = 15.0
QUIET = {"api_call"}  # store changes the page does not need
MAX_TEXT = 4000
BOT_MENTION = "@crm-bot"  # typed on the page; Slack would send <@U0CRMBOT1>


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


class Page:
    """The page's routes on a sandbox. `connect(bot_url, secret)` once the bot listens."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.sim: SlackClientSim | None = None
        self.roles: dict[str, str] = {}  # user id -> what the switcher says about them
        self.topics: dict[str, str] = {}  # channel id -> the line under its name
        self.title = "crm-bot sandbox"
        self._streams: set[asyncio.Queue[Any]] = set()

    def connect(self, bot_url: str, signing_secret: str) -> SlackClientSim:
        self.sim = SlackClientSim(bot_url, signing_secret, self.sandbox)
        return self.sim

    async def close(self) -> None:
        if self.sim is not None:
            await self.sim.close()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_static("/static", STATIC, append_version=False)
        app.router.add_get("/events", self.events)
        app.router.add_get("/archives/{channel}/{p}", self.permalink)
        app.router.add_get("/ui/state", self.state)
        app.router.add_post("/ui/message", self.message)
        app.router.add_post("/ui/action", self.action)
        app.router.add_post("/ui/submit", self.submit)
        app.router.add_post("/ui/close", self.close_view)
        app.router.add_post("/ui/home", self.home)
        app.on_shutdown.append(self._end_streams)
        app.middlewares.append(self.same_site_only)

    def _own_hosts(self) -> set[str]:
        port = urlsplit(self.sandbox.url).port
        return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    @web.middleware
    async def same_site_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        hosts = self._own_hosts()
        if request.host.lower() not in hosts:
            raise web.HTTPForbidden(text="this sandbox answers only at its own address\n")
        if request.method == "POST" and request.path.startswith("/ui/"):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc.lower() not in hosts:
                raise web.HTTPForbidden(text="requests from other sites are refused\n")
            if request.content_type != "application/json":
                raise web.HTTPUnsupportedMediaType(text="send application/json\n")
        return await handler(request)

    # -- pages -------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def permalink(self, request: web.Request) -> web.Response:
        p = request.match_info["p"].removeprefix("p")
        ts = f"{p[:-6]}.{p[-6:]}" if len(p) > 6 else p
        raise web.HTTPFound(f"/#{request.match_info['channel']}/{ts}")

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self.sandbox.store.subscribe()
        self._streams.add(queue)
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if change is None:
                    break
                if change.get("type") in QUIET:
                    continue
                await response.write(f"data: {json.dumps(change, default=str)}\n\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.sandbox.store.unsubscribe(queue)
            self._streams.discard(queue)
        return response

    async def _end_streams(self, app: web.Application) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)

    # -- what the selected user sees ---------------------------------------------------
    async def state(self, request: web.Request) -> web.Response:
        store = self.sandbox.store
        user = request.query.get("user", "")
        people = {
            uid: {
                "id": uid,
                "name": info.get("name", uid),
                "real_name": info.get("real_name") or info.get("name", uid),
                "dept": info.get("dept", ""),
                "role": self.roles.get(uid) or str(info.get("dept", "")).title(),
            }
            for uid, info in store.users.items()
        }
        body: dict[str, Any] = {
            "title": self.title,
            "bot": {"id": BOT_USER_ID, "name": "crm-bot"},
            "connected": self.sim is not None,
            "users": people,
            "topics": self.topics,
            "channels": list(store.channels.values()),
            "messages": {cid: store.all_messages(cid) for cid in store.channels},
            "ephemerals": [],
            "views": [],
            "home": None,
        }
        if user in store.users:
            body["ephemerals"] = [e.__dict__ for e in store.ephemerals(user)]
            body["views"] = store.views(user)
            body["home"] = store.home(user)
        return web.json_response(body, dumps=lambda o: json.dumps(o, default=str))

    # -- what the selected user does ---------------------------------------------------
    async def _args(self, request: web.Request) -> tuple[dict[str, Any], str]:
        try:
            args = await request.json()
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(args, dict):
            raise BadRequest("the body must be a JSON object")
        user = str(args.get("user") or "")
        if user not in self.sandbox.store.users:
            raise BadRequest(f"no such user: {user[:40]}")
        return args, user

    def _channel(
        self, args: dict[str, Any], required: bool = True, user: str | None = None
    ) -> str | None:
        channel = args.get("channel")
        if not channel and not required:
            return None
        if user and channel == dm_channel_id(user):  # the DM with the bot, opened on first use
            self.sandbox.store.open_dm(user)
        if str(channel) not in self.sandbox.store.channels:
            raise BadRequest(f"no such channel: {str(channel)[:40]}")
        return str(channel)

    def _sim(self) -> SlackClientSim:
        if self.sim is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "the bot is not connected yet"}),
                content_type="application/json",
            )
        return self.sim

    @staticmethod
    def _answer(reply: Any) -> web.Response:
        """The bot's HTTP answer, passed on so the page can tell a refusal from a success."""
        try:
            body = reply.json()
        except ValueError:
            body = reply.body
        return web.json_response({"status": reply.status, "body": body})

    async def message(self, request: web.Request) -> web.Response:
        args, user = await self._args(request)
        channel = self._channel(args, user=user)
        assert channel is not None
        text = str(args.get("text") or "").strip()
        if not text:
            raise BadRequest("nothing to send")
        if len(text) > MAX_TEXT:
            raise BadRequest(f"at most {MAX_TEXT} characters")
        store = self.sandbox.store
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command != "/crm":
                store.add_ephemeral(
                    Ephemeral(
                        channel=channel,
                        user=user,
                        ts=store.next_ts(),
                        text=f"`{command[:30]}` is not a command here. Try `/crm help`.",
                        source="ack",
                    )
                )
                return web.json_response({"status": 0, "body": None})
            return self._answer(await self._sim().command(user, channel, "/crm", rest.strip()))
        message: dict[str, Any] = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": store.next_ts(),
        }
        thread_ts = args.get("thread_ts")
        if thread_ts and store.message(channel, str(thread_ts)) is not None:
            message["thread_ts"] = str(thread_ts)
        mentioned = BOT_MENTION in text or f"<@{BOT_USER_ID}>" in text
        if mentioned:  # Slack sends the bot an app_mention event
            message["text"] = text.replace(BOT_MENTION, f"<@{BOT_USER_ID}>")
        store.add_message(channel, message)
        if not mentioned:
            return web.json_response({"status": 0, "body": None})
        event = {"type": "app_mention", "channel": channel}
        event.update({k: message[k] for k in ("user", "text", "ts", "thread_ts") if k in message})
        return self._answer(await self._sim().event(event))

    async def action(self, request: web.Request) -> web.Response:
        args, user = await self._args(request)
        action_id = str(args.get("action_id") or "")
        if not action_id:
            raise BadRequest("action_id is required")
        view_id = args.get("view_id")
        container = None
        if view_id:
            if self.sandbox.store.view(str(view_id)) is None:
                raise BadRequest("no such view")
            container = {"type": "view", "view_id": str(view_id)}
        channel = self._channel(args, required=not view_id)
        value = args.get("value")
        reply = await self._sim().click(
            user,
            channel,
            str(args["message_ts"]) if args.get("message_ts") else None,
            action_id,
            None if value is None else str(value),
            block_id=str(args["block_id"]) if args.get("block_id") else None,
            container=container,
        )
        return self._answer(reply)

    async def submit(self, request: web.Request) -> web.Response:
        args, user = await self._args(request)
        view_id = str(args.get("view_id") or "")
        store = self.sandbox.store
        if store.view(view_id) is None or store.view_owner(view_id) != user:
            raise BadRequest("no such open view for this user")
        values = args.get("values") or {}
        if not isinstance(values, dict):
            raise BadRequest("values must be an object")
        return self._answer(await self._sim().submit_view(user, view_id, values))

    async def close_view(self, request: web.Request) -> web.Response:
        args, user = await self._args(request)
        view_id = str(args.get("view_id") or "")
        if self.sandbox.store.view_owner(view_id) != user:
            raise BadRequest("no such open view for this user")
        self.sandbox.store.close_view(view_id)
        return web.json_response({"status": 0, "body": None})

    async def home(self, request: web.Request) -> web.Response:
        _, user = await self._args(request)
        return self._answer(await self._sim().home_opened(user))


def add_page_routes(sandbox: Sandbox) -> Page:
    """Mount the page on the sandbox's app (before it starts listening)."""
    page = Page(sandbox)
    page.routes(sandbox.app)
    return page
