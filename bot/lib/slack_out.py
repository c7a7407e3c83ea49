"""Every Slack Web API call the bot makes goes through `SlackOut`.

It paces posts per channel on a budget (bot/lib/pacing.py: Slack allows about one message
per second per channel, after a short burst; with replicas the budget is shared in the
database), keeps their order, waits out a post's 429 on that budget (so every replica waits
for the channel), lets slack_sdk's retry handlers deal with other calls' 429s, 5xx and dropped
connections, counts every 429 by method in `crm_slack_ratelimited_total`, cuts text and Block
Kit to Slack's limits, counts every call in `crm_slack_api_calls_total`, and turns a final
failure into a `SlackError` with a kind from a short closed list, so the caller decides
between retrying later and giving up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.lib.metrics import slack_api_calls_total, slack_ratelimited_total
from bot.lib.pacing import Budget, LocalBudget

log = logging.getLogger(__name__)

# -- Slack's limits ------------------------------------------------------------------------
MAX_TEXT = 40_000
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_CONTEXT_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
ELLIPSIS = "…"

# -- errors --------------------------------------------------------------------------------
KINDS = frozenset(
    {
        "ratelimited",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "message_not_found",
        "invalid_auth",
        "msg_too_long",
        "invalid_blocks",
        "invalid_arguments",
        "missing_scope",
        "user_not_in_channel",
        "user_not_found",
        "user_disabled",
        "method_not_supported_for_channel_type",
        "expired_trigger_id",
        "exchanged_trigger_id",
        "invalid_trigger_id",
        "server_error",
        "connection_error",
        "other",
    }
)
TRANSIENT = frozenset({"ratelimited", "server_error", "connection_error"})
OUTCOME_UNKNOWN = frozenset({"server_error", "connection_error"})  # Slack may have done it
_ALIASES = {
    "not_authed": "invalid_auth",
    "account_inactive": "invalid_auth",
    "token_revoked": "invalid_auth",
    "invalid_blocks_format": "invalid_blocks",
    "internal_error": "server_error",
    "fatal_error": "server_error",
    "service_unavailable": "server_error",
    "request_timeout": "server_error",
}


POST_KEY_EVENT = "crm_bot_post"
# A post's HTTP attempt ends within this many seconds (answered or abandoned): the delivery
# lease of a channel (handlers/sync/delivery.py) outlasts it, so a post under way always ends
# before another replica may take the channel over.
POST_TIMEOUT = 10

CLOCK_SKEW = 60.0  # seconds: how far Slack's clock may be behind ours when we look for a post


class SlackError(Exception):
    """A Web API call that failed for good; `kind` is one of `KINDS`.

    `lookup`: the call was a look-up for a post that may have gone out (`keyed_posts`). A
    look-up that cannot answer (`not_in_channel`, `missing_scope`, `channel_not_found`, 429,
    ...) leaves the post's outcome unknown, whatever Slack's reason: such an error is
    transient, so callers retry later and never mark the post failed or post it again."""

    def __init__(
        self,
        kind: str,
        method: str,
        detail: str = "",
        retry_after: float = 1.0,
        *,
        lookup: bool = False,
    ) -> None:
        self.kind = kind if kind in KINDS else "other"
        self.method = method
        self.detail = detail
        self.retry_after = retry_after  # seconds, for a 429
        self.lookup = lookup
        super().__init__(
            f"{method}: {self.kind}"
            + (f" ({detail})" if detail else "")
            + (" (look-up: outcome unknown)" if lookup else "")
        )

    @property
    def transient(self) -> bool:
        return self.lookup or self.kind in TRANSIENT


def error_kind(error: Exception) -> tuple[str, str]:
    """(kind, Slack's own error code or exception name) for a failed call."""
    if isinstance(error, SlackApiError):
        response = error.response
        status = getattr(response, "status_code", 200)
        data = getattr(response, "data", None)
        code = data.get("error", "") if isinstance(data, dict) else ""
        if status == 429 or code == "ratelimited":
            return "ratelimited", code or "429"
        if status >= 500:
            return "server_error", str(status)
        kind = _ALIASES.get(code, code)
        return (kind if kind in KINDS else "other"), code
    if isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return "connection_error", type(error).__name__
    return "other", type(error).__name__


def retry_after(error: Exception) -> float:
    """Slack's Retry-After (seconds) of a 429 answer; 1 when it names none."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(value))
            except ValueError:
                break
    return 1.0


class CountingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry (after Retry-After), counting each 429 by method first."""

    async def prepare_for_next_attempt_async(self, *, state, request, response=None, error=None):
        method = request.url.rstrip("/").rsplit("/", 1)[-1]
        slack_ratelimited_total.labels(method).inc()
        await super().prepare_for_next_attempt_async(
            state=state, request=request, response=response, error=error
        )


class ProportionalJitter(Jitter):
    """Adds up to 100% of the interval (slack_sdk's default adds up to a whole second)."""

    def recalculate(self, duration: float) -> float:
        return duration * (1.0 + random.random())


def make_client(
    token: str,
    base_url: str = "https://slack.com/api/",
    *,
    max_retries: int = 3,
    backoff: float = 0.5,
    timeout: int = 30,
    session: aiohttp.ClientSession | None = None,
) -> AsyncWebClient:
    """An AsyncWebClient that retries 429 (after Retry-After), 500/503 and dropped connections,
    `max_retries` times in all per call (slack_sdk counts retries across its handlers), 5xx
    and connection errors with exponential backoff from `backoff` seconds. Pass the process's
    `session` so calls reuse its keep-alive connections (without one, slack_sdk opens and
    closes a connection per call)."""
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff, jitter=ProportionalJitter())
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        session=session,
        retry_handlers=[
            CountingRateLimitHandler(max_retry_count=max_retries),
            AsyncServerErrorRetryHandler(max_retry_count=max_retries, interval_calculator=interval),
            AsyncConnectionErrorRetryHandler(
                max_retry_count=max_retries, interval_calculator=interval
            ),
        ],
    )


# -- cutting to Slack's limits -------------------------------------------------------------
MAX_ENTITY = len("&amp;") - 1  # how far back an entity cut at `end` can start


def cut(text: str, limit: int) -> str:
    """`text` shortened to at most `limit` characters, ending in an ellipsis when cut.

    The text is mrkdwn, already escaped (bot/lib/blocks `esc`), so it is cut only between
    entities and markup: never inside `&amp;` (Slack would show `&am…`) or inside the bot's
    own `<@U..>`, `<!date^..>` or `<https://..|..>` (a broken token shows its syntax)."""
    if len(text) <= limit:
        return text
    end = limit - 1
    head = text[:end]
    amp = head.rfind("&")
    if amp != -1 and amp >= end - MAX_ENTITY and ";" not in head[amp:]:
        end = amp
    lt = head.rfind("<", 0, end)
    if lt != -1 and ">" not in head[lt:end]:
        end = lt
    return text[:end] + ELLIPSIS


def _cut_text_obj(obj: Any, limit: int) -> None:
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        obj["text"] = cut(obj["text"], limit)


def _fit_element(element: Any) -> None:
    if isinstance(element, dict) and element.get("type") == "button":
        _cut_text_obj(element.get("text"), MAX_BUTTON_TEXT)


def _fit_block(block: dict[str, Any]) -> None:
    kind = block.get("type")
    if kind == "section":
        _cut_text_obj(block.get("text"), MAX_SECTION_TEXT)
        if isinstance(block.get("fields"), list):
            block["fields"] = block["fields"][:MAX_FIELDS]
            for f in block["fields"]:
                _cut_text_obj(f, MAX_FIELD_TEXT)
        _fit_element(block.get("accessory"))
    elif kind == "header":
        _cut_text_obj(block.get("text"), MAX_HEADER_TEXT)
    elif kind == "context" and isinstance(block.get("elements"), list):
        block["elements"] = block["elements"][:MAX_CONTEXT_ELEMENTS]
        for e in block["elements"]:
            _cut_text_obj(e, MAX_CONTEXT_TEXT)
    elif kind == "actions":
        for e in block.get("elements") or []:
            _fit_element(e)


def _copy_tree(value: Any) -> Any:
    """A copy of a JSON-shaped value (dicts, lists, scalars): what copy.deepcopy gives for
    blocks at a fraction of its cost (it is paid on every post)."""
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    return value


def fit_blocks(blocks: list[dict[str, Any]], max_blocks: int = MAX_BLOCKS) -> list[dict[str, Any]]:
    """A copy of `blocks` cut to Slack's limits; past `max_blocks`, the last one says how many
    were left out."""
    fitted = _copy_tree(blocks)
    if len(fitted) > max_blocks:
        left_out = len(fitted) - (max_blocks - 1)
        fitted = fitted[: max_blocks - 1]
        note = f"{ELLIPSIS} {left_out} more not shown"
        fitted.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    for block in fitted:
        if isinstance(block, dict):
            _fit_block(block)
    return fitted


def fallback_text(blocks: list[dict[str, Any]]) -> str:
    """Plain text for notifications and screen readers, from the first block that has some."""
    for block in blocks:
        text = block.get("text") if isinstance(block, dict) else None
        if isinstance(text, dict) and text.get("text"):
            return str(text["text"])
        for field in (block.get("fields") or []) if isinstance(block, dict) else []:
            if isinstance(field, dict) and field.get("text"):
                return str(field["text"])
    return ""


def fit_to_limits(
    text: str | None, blocks: list[dict[str, Any]] | None, max_blocks: int = MAX_BLOCKS
) -> tuple[str, list[dict[str, Any]] | None]:
    """(text, blocks) cut to Slack's limits, with fallback text taken from the blocks when
    `text` is empty. Pure: the arguments are not changed."""
    fitted = fit_blocks(blocks, max_blocks) if blocks else blocks
    plain = text or (fallback_text(fitted) if fitted else "")
    return cut(plain, MAX_TEXT), fitted


# -- pacing --------------------------------------------------------------------------------
# Slack's rate-limit tiers (docs.slack.dev/apis/web-api/rate-limits: per method, per workspace,
# per app; Tier 2 20+ a minute, Tier 3 50+, Tier 4 100+, bursts tolerated) of the methods the
# bot calls, from each method's reference page. chat.postMessage is paced per channel instead.
TIER_PER_MINUTE = {2: 20, 3: 50, 4: 100}
METHOD_TIERS = {
    "chat.update": 3,
    "chat.postEphemeral": 4,
    "chat.getPermalink": 4,
    "conversations.history": 3,
    "conversations.replies": 3,
    "conversations.open": 3,
    "conversations.join": 3,
    "usergroups.users.list": 2,
    "views.open": 4,
    "views.update": 4,
    "views.publish": 4,
}


class _MethodPacer:
    """Token bucket for one method: a minute's worth of calls at once, then the tier's rate."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.tokens = self.burst
        self.updated = time.monotonic()

    async def wait_turn(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class SlackOut:
    def __init__(
        self,
        client: AsyncWebClient,
        per_channel_interval: float = 1.0,
        burst: int = 1,
        budget: Budget | None = None,
    ) -> None:
        """Posts are paced on `budget` (a `LocalBudget` of one post per `per_channel_interval`
        after `burst` when None; no pacing when the interval is 0)."""
        self.client = client
        self.per_channel_interval = per_channel_interval
        self.burst = max(1, burst)
        self.budget: Budget = budget or LocalBudget(per_channel_interval, self.burst)
        self._order: dict[str, asyncio.Lock] = {}  # keeps one process's posts per channel in order
        self._method_pacers = {
            m: _MethodPacer(TIER_PER_MINUTE[tier]) for m, tier in METHOD_TIERS.items()
        }
        self._once: tuple[AsyncWebClient, AsyncWebClient] | None = None

    async def _call(
        self, method: str, send: Callable[[], Awaitable[AsyncSlackResponse]]
    ) -> dict[str, Any]:
        pacer = self._method_pacers.get(method)
        if pacer is not None:
            await pacer.wait_turn()
        try:
            response = await send()
        except Exception as exc:
            kind, detail = error_kind(exc)
            slack_api_calls_total.labels(method, kind).inc()
            if kind == "ratelimited":
                slack_ratelimited_total.labels(method).inc()
                raise SlackError(kind, method, detail, retry_after(exc)) from exc
            log.warning("Slack %s failed: %s (%s)", method, kind, detail)
            raise SlackError(kind, method, detail) from exc
        slack_api_calls_total.labels(method, "ok").inc()
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
        key: str | None = None,
        tried_at: float | None = None,
        guard: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """chat.postMessage, paced per channel; returns {"channel", "ts"}.

        `guard` runs right before each attempt to send (after the wait for the budget) and
        may raise to stop the post: the alert delivery renews its channel lease there, so a
        process that lost the channel while waiting posts nothing. A 429 holds the channel's
        budget for its Retry-After (every replica waits) and the post waits its turn again.

        Every post carries a key in its metadata (`key`, or a fresh one) and is made at most
        once: when Slack's answer is lost (a 5xx, a dropped connection) the message may have
        gone out all the same, so before posting again the channel (or the thread) is searched
        for the key, and a message found is the answer. A caller that may have to look for its
        post later passes its own key (for `find_posted` and `keyed_posts`), and on a repost
        after a crash `tried_at`, when the first try was made: a post with the key since then
        is the answer, and nothing is posted."""
        key = key or uuid.uuid4().hex
        if tried_at is not None:
            found = await self.find_posted(channel, key, tried_at, thread_ts)
            if found is not None:
                return {"channel": channel, "ts": found}
        text, blocks = fit_to_limits(text, blocks)
        args: dict[str, Any] = {
            "channel": channel,
            "text": text,
            "unfurl_links": False,
            "metadata": {"event_type": POST_KEY_EVENT, "event_payload": {"key": key}},
        }
        if blocks:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
            if reply_broadcast:
                args["reply_broadcast"] = True
        lock = self._order.get(channel)
        if lock is None:
            lock = self._order[channel] = asyncio.Lock()
        async with lock if self.per_channel_interval > 0 else contextlib.nullcontext():
            attempt = 0
            while True:
                await self._wait_turn(channel)
                try:
                    data = await self._post_once(args, key, guard)
                    break
                except SlackError as exc:
                    if exc.kind != "ratelimited" or attempt >= self._rate_retries():
                        raise
                    await self.budget.hold(channel, time.time() + exc.retry_after)
                attempt += 1
        return {"channel": data.get("channel", channel), "ts": data.get("ts", "")}

    async def _wait_turn(self, channel: str) -> None:
        if self.per_channel_interval <= 0:
            return
        wait = await self.budget.reserve(channel) - time.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _post_once(
        self, args: dict[str, Any], key: str, guard: Callable[[], Awaitable[None]] | None = None
    ) -> dict[str, Any]:
        """Post, and after an answer that leaves the outcome unknown, look for the key before
        posting again (on the client's own 5xx schedule)."""
        channel, thread_ts = args["channel"], args.get("thread_ts")
        since = time.time()
        retries, interval = self._resend_schedule()
        client = self._once_client()
        attempt = 0
        while True:
            if guard is not None:
                await guard()
            try:
                return await self._call("chat.postMessage", lambda: client.chat_postMessage(**args))
            except SlackError as exc:
                if exc.kind not in OUTCOME_UNKNOWN or attempt >= retries:
                    raise
            await asyncio.sleep(interval.calculate_sleep_duration(attempt))
            ts = await self.find_posted(channel, key, since, thread_ts)
            if ts is not None:
                log.info("a post whose answer was lost had gone out; adopted")
                return {"channel": channel, "ts": ts}
            attempt += 1

    def _once_client(self) -> AsyncWebClient:
        """`client` without retries: a 5xx or a dropped connection may hide a post Slack made
        (`_post_once` looks for it first), and a 429 waits on the channel's budget (`post`).
        Each attempt ends within POST_TIMEOUT."""
        if self._once is None or self._once[0] is not self.client:
            c = self.client
            once = AsyncWebClient(
                token=c.token,
                base_url=c.base_url,
                timeout=min(c.timeout, POST_TIMEOUT),
                session=c.session,
                retry_handlers=[],
            )
            self._once = (c, once)
        return self._once[1]

    def _rate_retries(self) -> int:
        """How often a post Slack answered 429 is tried again: the client's count for 429s."""
        for handler in self.client.retry_handlers:
            if isinstance(handler, AsyncRateLimitErrorRetryHandler):
                return handler.max_retry_count
        return 0

    def _resend_schedule(self) -> tuple[int, RetryIntervalCalculator]:
        """How often, and after what waits, the client retries a 5xx: keyed posts follow it."""
        for handler in self.client.retry_handlers:
            if isinstance(handler, AsyncServerErrorRetryHandler):
                return handler.max_retry_count, handler.interval_calculator
        return 0, BackoffRetryIntervalCalculator()

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        text, blocks = fit_to_limits(text, blocks)
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        data = await self._call("chat.update", lambda: self.client.chat_update(**args))
        return {"channel": data.get("channel", channel), "ts": data.get("ts", ts)}

    async def ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """chat.postEphemeral; returns its message_ts."""
        text, blocks = fit_to_limits(text, blocks)
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        data = await self._call(
            "chat.postEphemeral", lambda: self.client.chat_postEphemeral(**args)
        )
        return str(data.get("message_ts", ""))

    async def permalink(self, channel: str, ts: str) -> str:
        data = await self._call(
            "chat.getPermalink",
            lambda: self.client.chat_getPermalink(channel=channel, message_ts=ts),
        )
        return str(data.get("permalink", ""))

    @staticmethod
    def _fit_view(view: dict[str, Any]) -> dict[str, Any]:
        return {**view, "blocks": fit_blocks(view.get("blocks") or [], MAX_VIEW_BLOCKS)}

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """views.open; returns the opened view (with its `id`)."""
        fitted = self._fit_view(view)
        data = await self._call(
            "views.open", lambda: self.client.views_open(trigger_id=trigger_id, view=fitted)
        )
        return dict(data.get("view") or {})

    async def update_view(
        self, view_id: str, view: dict[str, Any], hash: str | None = None
    ) -> dict[str, Any]:
        fitted = self._fit_view(view)
        args: dict[str, Any] = {"view_id": view_id, "view": fitted}
        if hash:
            args["hash"] = hash
        data = await self._call("views.update", lambda: self.client.views_update(**args))
        return dict(data.get("view") or {})

    async def upload(
        self,
        channel: str,
        content: bytes,
        *,
        filename: str,
        title: str,
        thread_ts: str | None = None,
    ) -> str:
        """Share a file in a channel (or thread) with Slack's upload flow
        (files.getUploadURLExternal, the upload, files.completeUploadExternal: slack_sdk's
        `files_upload_v2`); returns the file id."""
        data = await self._call(
            "files.completeUploadExternal",
            lambda: self.client.files_upload_v2(
                content=content,
                filename=filename,
                title=title,
                channel=channel,
                thread_ts=thread_ts,
            ),
        )
        files = data.get("files") or [{}]
        return str(files[0].get("id") or "")

    async def publish_home(self, user: str, view: dict[str, Any]) -> dict[str, Any]:
        fitted = self._fit_view(view)
        data = await self._call(
            "views.publish", lambda: self.client.views_publish(user_id=user, view=fitted)
        )
        return dict(data.get("view") or {})

    async def dm(
        self,
        user: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """A direct message from the bot to `user` (conversations.open, then a paced post)."""
        return await self.post(await self.dm_channel(user), text, blocks, key=key)

    async def dm_channel(self, user: str) -> str:
        """The id of the direct-message channel between the bot and `user`."""
        data = await self._call(
            "conversations.open", lambda: self.client.conversations_open(users=user)
        )
        return str((data.get("channel") or {}).get("id", ""))

    async def find_posted(
        self, channel: str, key: str, since: float, thread_ts: str | None = None
    ) -> str | None:
        """The ts of a message posted with `post(..., key=key)` in `channel` (in the thread
        `thread_ts`, when given) since `since` (a Unix time, by our clock), or None: lets a retry
        whose first outcome is unknown (the process died, the database was down) adopt the
        earlier post instead of posting twice."""
        return (await self.keyed_posts(channel, since, thread_ts)).get(key)

    async def keyed_posts(
        self, channel: str, since: float, thread_ts: str | None = None
    ) -> dict[str, str]:
        """{key: ts} of the messages posted with a key in `channel` since `since` (a Unix time,
        by our clock: Slack's may be up to CLOCK_SKEW behind): its top-level messages
        (conversations.history), or the thread `thread_ts`'s replies (conversations.replies),
        every page."""
        found: dict[str, str] = {}
        cursor: str | None = None
        oldest = max(0.0, since - CLOCK_SKEW)
        while True:
            args: dict[str, Any] = {
                "channel": channel,
                "oldest": f"{oldest:.6f}",
                "limit": 200,
                "include_all_metadata": True,
            }
            if cursor:
                args["cursor"] = cursor
            if thread_ts:
                method = "conversations.replies"
                call = partial(self.client.conversations_replies, ts=thread_ts, **args)
            else:
                method = "conversations.history"
                call = partial(self.client.conversations_history, **args)
            try:
                data = await self._call(method, call)
            except SlackError as exc:
                raise SlackError(exc.kind, method, exc.detail, lookup=True) from exc
            for message in data.get("messages") or []:
                meta = message.get("metadata") or {}
                key = (meta.get("event_payload") or {}).get("key")
                if meta.get("event_type") == POST_KEY_EVENT and isinstance(key, str):
                    found.setdefault(key, str(message["ts"]))
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not cursor or not data.get("has_more"):
                return found

    async def user_info(self, user: str) -> dict[str, Any]:
        """users.info's `user` object (for the access check: guest, team, stranger)."""
        data = await self._call("users.info", lambda: self.client.users_info(user=user))
        return dict(data.get("user") or {})

    async def team_id(self) -> str:
        """The id of the workspace the bot is installed in (auth.test)."""
        data = await self._call("auth.test", lambda: self.client.auth_test())
        return str(data.get("team_id") or "")

    async def join(self, channel: str) -> None:
        """conversations.join: the bot becomes a member of a public channel (a no-op when it
        is one already)."""
        await self._call(
            "conversations.join", lambda: self.client.conversations_join(channel=channel)
        )

    async def usergroup_members(self, usergroup: str) -> list[str]:
        """The Slack user ids in a user group (usergroups.users.list)."""
        data = await self._call(
            "usergroups.users.list",
            lambda: self.client.usergroups_users_list(usergroup=usergroup),
        )
        return [str(u) for u in data.get("users") or []]
