"""The sandbox acting as Slack toward the bot: slash commands, clicks, modal submissions,
shortcuts and events, each signed exactly as Slack signs them (v0 scheme, via slack_sdk), or,
for a bot in Socket Mode (`socket_mode=True`), sent as envelopes on its WebSocket.

Every call returns the bot's answer (`BotReply`). What the bot sends back the way Slack would
show it (a command's acknowledgement text, a modal's `response_action`) is applied to the
sandbox store too, so a test asserts on what a person sees.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.server import Sandbox, response_body_error
from bot.sandbox.store import APP_ID, BOT_USER_ID, TEAM_ID, Call

Signing = Literal["valid", "none", "wrong", "stale"]

# Slack waits 3 seconds for the app's HTTP 200 to any request (docs.slack.dev/apis/events-api,
# "Responding to events"; interactivity: "acknowledge ... within 3 seconds").
ACK_TIMEOUT = 3.0
# An event not acknowledged (timeout or an error status) is retried 3 times, "nearly
# immediately, then after 1 minute, then after 5 minutes", each with X-Slack-Retry-Num 1..3 and
# X-Slack-Retry-Reason (events-api, "Failure conditions" / "Retries"). The sandbox keeps the
# order and the headers but shortens the waits (a test cannot wait five minutes).
EVENT_RETRY_DELAYS = (0.0, 0.2, 0.5)


@dataclass
class BotReply:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackClientSim:
    def __init__(
        self,
        bot_url: str,
        signing_secret: str,
        sandbox: Sandbox,
        *,
        socket_mode: bool = False,
        ack_timeout: float = ACK_TIMEOUT,
        event_retry_delays: tuple[float, ...] = EVENT_RETRY_DELAYS,
    ) -> None:
        self.ack_timeout = ack_timeout
        self.event_retry_delays = event_retry_delays
        self.bot_url = bot_url
        self.sandbox = sandbox
        self.socket_mode = socket_mode
        self.verifier = SignatureVerifier(signing_secret)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SlackClientSim:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport ---------------------------------------------------------------------
    async def send(
        self,
        body: str,
        content_type: str,
        *,
        signing: Signing = "valid",
        retry_num: int | None = None,
        retry_reason: str | None = None,
    ) -> BotReply:
        """POST `body` to the bot as Slack would, signed (or not) as asked."""
        if self.socket_mode:
            return await self._send_envelope(body, content_type)
        timestamp = int(time.time()) - (600 if signing == "stale" else 0)
        headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+sandbox)"}
        if signing != "none":
            headers["X-Slack-Request-Timestamp"] = str(timestamp)
            signature = self.verifier.generate_signature(timestamp=str(timestamp), body=body)
            if signing == "wrong":
                signature = "v0=" + secrets.token_hex(32)
            headers["X-Slack-Signature"] = str(signature)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self.bot_url,
                data=body.encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.ack_timeout),
            ) as resp:
                return BotReply(resp.status, await resp.text(), dict(resp.headers))
        except TimeoutError:
            return BotReply(0, "", {"X-Sandbox-Timeout": "1"})

    async def _send_envelope(self, body: str, content_type: str) -> BotReply:
        """The same request as a Socket Mode envelope; the ack's payload is the reply body."""
        if content_type == "application/json":
            kind, payload, accepts = "events_api", json.loads(body), False
        else:
            form = dict(parse_qsl(body, keep_blank_values=True))
            if "payload" in form:
                payload = json.loads(form["payload"])
                kind = "interactive"
                accepts = payload.get("type") in ("view_submission", "block_suggestion")
            else:
                kind, payload, accepts = "slash_commands", form, True
        ack = await self.sandbox.socket_mode.send(kind, payload, accepts_response_payload=accepts)
        reply = ack.get("payload")
        return BotReply(200, json.dumps(reply) if reply else "", {})

    async def _interactive(self, payload: dict[str, Any], **options: Any) -> BotReply:
        body = urlencode({"payload": json.dumps(payload)})
        return await self.send(body, "application/x-www-form-urlencoded", **options)

    # -- payload parts -----------------------------------------------------------------
    def _user(self, user: str) -> dict[str, Any]:
        info = self.sandbox.store.users.get(user, {})
        name = info.get("name", user.lower())
        return {"id": user, "username": name, "name": name, "team_id": self.team_of(user)}

    def team_of(self, user: str) -> str:
        """The workspace a person belongs to: the sandbox's, unless their user entry names
        another (a person of another organisation in a shared channel)."""
        return str(self.sandbox.store.users.get(user, {}).get("team_id", TEAM_ID))

    def _channel(self, channel: str) -> dict[str, Any]:
        info = self.sandbox.store.channels.get(channel)
        return {"id": channel, "name": info["name"] if info else channel.lower()}

    @staticmethod
    def _team() -> dict[str, Any]:
        return {"id": TEAM_ID, "domain": "crm-sandbox"}

    def _base(self, kind: str, user: str) -> dict[str, Any]:
        return {
            "type": kind,
            "token": "sandbox-verification-token",
            "api_app_id": APP_ID,
            "team": self._team(),
            "user": self._user(user),
            "is_enterprise_install": False,
            "enterprise": None,
            "trigger_id": self.sandbox.issue_trigger(user),
        }

    # -- what people do ----------------------------------------------------------------
    async def command(
        self, user: str, channel: str, command: str, text: str = "", **options: Any
    ) -> BotReply:
        """Type `command text` in `channel`. The ack's text, if any, becomes what the user sees
        (ephemeral unless `response_type` is `in_channel`)."""
        self._present(user, channel)
        response_url = self.sandbox.issue_response_url(user, channel)
        form = {
            "token": "sandbox-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "crm-sandbox",
            "channel_id": channel,
            "channel_name": self._channel(channel)["name"],
            "user_id": user,
            "user_name": self._user(user)["name"],
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self.sandbox.issue_trigger(user),
        }
        reply = await self.send(urlencode(form), "application/x-www-form-urlencoded", **options)
        self._show_ack(reply, user, channel, command)
        return reply

    def _present(self, user: str, channel: str) -> None:
        """`user` acts in `channel`: it exists, and they are in it."""
        info = self.sandbox.store.resolve_channel(channel)
        if info is not None and not info.get("is_im"):
            self.sandbox.store.add_member(info["id"], user)

    def _show_ack(self, reply: BotReply, user: str, channel: str, command: str) -> None:
        target = {"user": user, "channel": channel, "ts": None, "source": "ack"}
        if reply.status == 0:  # not acknowledged within 3 s: Slack tells the user so
            failed = {"text": f'{command} failed with the error "operation_timeout"'}
            self.sandbox.apply_response({**target, "source": "slack"}, failed)
            return
        if reply.status != 200 or not reply.body:
            return
        try:
            body = reply.json()
        except ValueError:
            body = {"text": reply.body}
        if isinstance(body, dict) and (body.get("text") or body.get("blocks")):
            problem = response_body_error(body)
            if problem is not None:  # Slack shows nothing of an acknowledgement it refuses
                self.sandbox.store.record_call(Call("ack", body, 400, problem, time.monotonic()))
                return
            self.sandbox.apply_response(target, body)

    async def click(
        self,
        user: str,
        channel: str | None,
        message_ts: str | None,
        action_id: str,
        value: str | None = None,
        block_id: str | None = None,
        container: dict[str, Any] | None = None,
        **options: Any,
    ) -> BotReply:
        """Click a button: on a channel message, on the user's ephemeral message (when
        `message_ts` is one), or in a view (pass `container={"type": "view", "view_id": ...}`)."""
        store = self.sandbox.store
        if channel and not (container and container.get("type") == "view"):
            self._present(user, channel)
        payload = self._base("block_actions", user)
        message = store.message(channel, message_ts) if channel and message_ts else None
        ephemeral = store.ephemeral(user, message_ts) if message_ts else None
        blocks: list[dict[str, Any]] = []
        if container is None and message_ts and channel:
            container = {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": message is None and ephemeral is not None,
            }
        if message is not None:
            payload["message"] = message
            blocks = message.get("blocks", [])
        elif ephemeral is not None:
            blocks = ephemeral.blocks
        if container and container.get("type") == "view":
            view = store.view(container["view_id"])
            if view is not None:
                payload["view"] = view
                blocks = view.get("blocks", [])
        payload["container"] = container or {}
        if channel:
            payload["channel"] = self._channel(channel)
            payload["response_url"] = self.sandbox.issue_response_url(user, channel, message_ts)
        payload["state"] = {"values": {}}
        payload["actions"] = [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id or _block_id_of(blocks, action_id) or "sandbox",
                "value": value,
                "text": {"type": "plain_text", "text": action_id, "emoji": True},
                "action_ts": f"{time.time():.6f}",
            }
        ]
        if value is None:
            payload["actions"][0].pop("value")
        return await self._interactive(payload, **options)

    async def submit_view(
        self, user: str, view_id: str, values: dict[str, Any] | None = None, **options: Any
    ) -> BotReply:
        """Submit an open modal with `values` ({block_id: {action_id: {...}}}), as
        `view.state.values`; applies the bot's `response_action` to the store."""
        store = self.sandbox.store
        view = store.view(view_id)
        if view is None:
            raise KeyError(f"no view {view_id} in the sandbox")
        payload = self._base("view_submission", user)
        payload["view"] = {**view, "state": {"values": values or {}}}
        payload["response_urls"] = []
        reply = await self._interactive(payload, **options)
        if reply.status == 0:
            # Not acknowledged within 3 s: the modal stays open and shows that it failed
            # ("We had some trouble connecting"), nothing the app answers later applies.
            store.failed_views.add(view_id)
            store.emit("view_failed", view_id=view_id)
            return reply
        if reply.status == 200:
            answer = reply.json() if reply.body else {}
            action = (answer or {}).get("response_action")
            if action in (None, "clear"):
                for open_view in store.views(user) if action == "clear" else [view]:
                    store.close_view(open_view["id"])
            elif action in ("update", "push") and isinstance(answer.get("view"), dict):
                new = {**view, **answer["view"], "id": view_id}
                if action == "push":
                    new["id"] = store.next_id("V")
                store.put_view(user, new)
            elif action == "errors":
                store.emit("view_errors", view_id=view_id, errors=answer.get("errors", {}))
        return reply

    async def message_shortcut(
        self, user: str, channel: str, message_ts: str, callback_id: str, **options: Any
    ) -> BotReply:
        message = self.sandbox.store.message(channel, message_ts)
        if message is None:
            raise KeyError(f"no message {message_ts} in {channel}")
        payload = self._base("message_action", user)
        payload.update(
            callback_id=callback_id,
            action_ts=f"{time.time():.6f}",
            message_ts=message_ts,
            message=message,
            channel=self._channel(channel),
            response_url=self.sandbox.issue_response_url(user, channel),
        )
        return await self._interactive(payload, **options)

    async def event(
        self, event: dict[str, Any], *, event_id: str | None = None, **options: Any
    ) -> BotReply:
        """Deliver an Events API `event_callback` carrying `event`; when the bot does not
        answer 2xx within 3 s, retry it as Slack does (`X-Slack-Retry-Num` 1..3 with the
        reason), and return the last answer."""
        envelope = {
            "token": "sandbox-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": {"event_ts": f"{time.time():.6f}", **event},
            "type": "event_callback",
            "event_id": event_id or "Ev" + secrets.token_hex(5).upper(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        body = json.dumps(envelope)
        reply = await self.send(body, "application/json", **options)
        if self.socket_mode or "retry_num" in options:
            return reply
        for num, delay in enumerate(self.event_retry_delays, start=1):
            if 200 <= reply.status < 300:
                break
            reason = "http_timeout" if reply.status == 0 else "http_error"
            self.sandbox.store.emit("event_retry", event_id=envelope["event_id"], num=num)
            await asyncio.sleep(delay)
            reply = await self.send(
                body, "application/json", retry_num=num, retry_reason=reason, **options
            )
        return reply

    async def home_opened(self, user: str, **options: Any) -> BotReply:
        home = self.sandbox.store.home(user)
        event: dict[str, Any] = {"type": "app_home_opened", "user": user, "tab": "home"}
        event["channel"] = "D" + user[1:]
        if home is not None:
            event["view"] = home
        return await self.event(event, **options)

    async def mention(self, user: str, channel: str, text: str, **options: Any) -> BotReply:
        """`user` writes `text` mentioning the bot in `channel` (stored, then sent as an
        app_mention event)."""
        store = self.sandbox.store
        self._present(user, channel)
        ts = store.next_ts()
        store.add_message(channel, {"type": "message", "user": user, "text": text, "ts": ts})
        event = {
            "type": "app_mention",
            "user": user,
            "user_team": self.team_of(user),
            "text": text,
            "ts": ts,
            "channel": channel,
        }
        return await self.event(event, **options)


def _block_id_of(blocks: list[dict[str, Any]], action_id: str) -> str | None:
    for block in blocks:
        elements = list(block.get("elements") or [])
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block.get("block_id")
    return None
