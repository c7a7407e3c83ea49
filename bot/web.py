"""The HTTP server: Slack's requests at POST /slack/events (verified by bolt), and the
operator's endpoints /healthz, /readyz and /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.lib.metrics import REGISTRY, request_seconds, requests_total

# The readiness checks: booleans decide the status (all true: 200, else 503); other values
# (the department channels the bot cannot work in) are only shown.
Check = Callable[[], Awaitable[dict[str, object]]]


def request_kind(body: str, content_type: str) -> str:
    """command, block_actions, view_submission, event_callback, ... (for metrics only)."""
    try:
        if content_type.startswith("application/json"):
            return str(json.loads(body).get("type", "other"))
        form = parse_qs(body)
        if "command" in form:
            return "command"
        if "payload" in form:
            return str(json.loads(form["payload"][0]).get("type", "other"))
    except (ValueError, AttributeError):
        pass
    return "other"


def create_web_app(bolt: AsyncApp, readiness: Check) -> web.Application:
    async def slack_events(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await request.text()
        kind = request_kind(body, request.content_type or "")
        bolt_request = await to_bolt_request(request)
        bolt_response = await bolt.async_dispatch(bolt_request)
        status = bolt_response.status
        outcome = "ok" if status < 400 else ("unauthorized" if status == 401 else "error")
        requests_total.labels(kind, outcome).inc()
        request_seconds.labels(kind).observe(time.perf_counter() - started)
        return await to_aiohttp_response(bolt_response)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness()
        ok = all(v for v in checks.values() if isinstance(v, bool))
        return web.json_response({"ok": ok, **checks}, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(REGISTRY))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
