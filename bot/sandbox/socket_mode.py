"""Socket Mode as Slack runs it, for a bot started with SLACK_APP_TOKEN.

`apps.connections.open`, called with the app-level token (xapp-...), hands out a WebSocket
URL. On a connection there Slack first says `hello`, then sends each request as an envelope
(`events_api`, `slash_commands`, `interactive`) and waits for the app to acknowledge it by its
envelope_id, with a response payload where one is allowed (a command's reply, a modal's
`response_action`). Slack gives the app 3 seconds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from bot.sandbox.store import APP_ID

ACK_WITHIN = 3.0  # seconds Slack waits for an envelope's acknowledgement


class SocketModeLink:
    def __init__(self, app_token: str | None) -> None:
        self.app_token = app_token
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connected = asyncio.Event()

    def open(self, token: str | None, base_url: str) -> dict[str, Any]:
        """The answer to apps.connections.open."""
        if not token:
            return {"ok": False, "error": "not_authed"}
        if self.app_token is None or not secrets.compare_digest(token, self.app_token):
            return {"ok": False, "error": "invalid_auth"}
        ticket = secrets.token_urlsafe(12)
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{base_url.replace('http', 'ws', 1)}/link/?ticket={ticket}"}

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets) + 1,
                "debug_info": {"host": "sandbox", "approximate_connection_time": 3600},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._sockets.append(ws)
        self.connected.set()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                waiting = self._acks.pop(str(data.get("envelope_id")), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self.connected.clear()
        return ws

    async def send(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool
    ) -> dict[str, Any]:
        """Deliver one envelope on the newest connection; the app's acknowledgement."""
        if not self._sockets:
            raise ConnectionError("no Socket Mode connection is open")
        envelope_id = str(uuid.uuid4())
        acked = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = acked
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        try:
            return await asyncio.wait_for(acked, ACK_WITHIN)
        finally:
            self._acks.pop(envelope_id, None)

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
