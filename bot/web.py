"""The HTTP server: Slack's requests at POST /slack/events (verified by bolt), and the
operator's endpoints /healthz, /readyz and /metrics.

Nothing from an unsigned request is used before its signature is checked. Bolt parses a body
when it builds its request object, before its middleware checks the signature, so an unsigned
deeply nested body reached `json.loads` (a 500 and a traceback each time) and its `type` became
a metrics label (every new value a new time series: memory and /metrics grew without bound).
So the signature is checked here first, with slack_sdk's own `SignatureVerifier` (bolt checks
it again; that costs a hash); an unsigned request is answered 401 from its headers and raw
bytes alone, counted under the label `unsigned`. A signed body must still nest at most
bot/lib/bounded_json's depth, and its kind for metrics comes from a closed list (`KINDS`).

`/metrics` is for operators, not for the world: with METRICS_PORT it is served on that port
only (bind it to an internal interface), with METRICS_TOKEN it needs `Authorization: Bearer
<token>`; both may be set.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.lib import bounded_json
from bot.lib.metrics import REGISTRY, request_seconds, requests_total

# The readiness checks: booleans decide the status (all true: 200, else 503); other values
# (the department channels the bot cannot work in) are only shown.
Check = Callable[[], Awaitable[dict[str, object]]]

# The request kinds Slack sends (payload `type`); anything else is counted as "other".
KINDS = frozenset(
    {
        "command",
        "event_callback",
        "url_verification",
        "app_rate_limited",
        "block_actions",
        "block_suggestion",
        "view_submission",
        "view_closed",
        "shortcut",
        "message_action",
        "interactive_message",
        "dialog_submission",
    }
)
MAX_BODY = 1024 * 1024  # Slack's requests are a few kB; a view's state stays far below this
BODY_TIMEOUT = 10.0  # seconds to receive the body once the headers are in


def request_kind(body: str, content_type: str) -> str:
    """The kind of a SIGNED request, from `KINDS` (for metrics); JsonRefused when its JSON
    is too deep."""
    if content_type.startswith("application/json"):
        value = bounded_json.loads(body)
    else:
        form = parse_qs(body)
        if "command" in form:
            return "command"
        if "payload" not in form:
            return "other"
        value = bounded_json.loads(form["payload"][0])
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if kind in KINDS else "other"


def _signed(verifier: SignatureVerifier, raw: bytes, request: web.Request) -> bool:
    """Slack's signature checks out. slack_sdk raises on a timestamp that is not a number, a
    body that is not UTF-8 or a signature that is not ASCII: all are simply not signed."""
    try:
        return verifier.is_valid_request(raw, dict(request.headers))
    except (ValueError, TypeError):
        return False


def metrics_handler(token: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    expected = f"Bearer {token}".encode() if token else None

    async def metrics(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(status=401, text="metrics need a bearer token\n")
        resp = web.Response(body=generate_latest(REGISTRY))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    return metrics


def create_web_app(
    bolt: AsyncApp,
    readiness: Check,
    *,
    signing_secret: str,
    metrics_token: str | None = None,
    serve_metrics: bool = True,
) -> web.Application:
    """The app on PORT. `serve_metrics=False` when /metrics has a port of its own
    (`create_metrics_app`)."""
    verifier = SignatureVerifier(signing_secret)

    async def slack_events(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                raw = await request.read()
        except TimeoutError:
            return web.Response(status=408, text="request body too slow\n")
        if not _signed(verifier, raw, request):
            requests_total.labels("unsigned", "unauthorized").inc()
            return web.Response(status=401, text="invalid signature\n")
        body = raw.decode("utf-8", "replace")
        try:
            kind = request_kind(body, request.content_type or "")
        except bounded_json.JsonRefused as exc:
            requests_total.labels("other", "error").inc()
            return web.Response(status=400, text=f"body refused: {exc}\n")
        bolt_request = AsyncBoltRequest(
            body=body, query=request.query_string, headers=dict(request.headers)
        )
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

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if serve_metrics:
        app.router.add_get("/metrics", metrics_handler(metrics_token))
    return app


def create_metrics_app(token: str | None = None) -> web.Application:
    """/metrics alone, for METRICS_PORT."""
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/metrics", metrics_handler(token))
    return app
