"""Slack's rules the sandbox enforces, each from Slack's documentation: the scope each method
needs, the rate-limit tier of each method, and the per-channel posting limit.

The scope list comes from whoever starts the sandbox (`Sandbox(scopes=...)`, usually read from
the app's manifest with `scopes_from_manifest`): the sandbox knows nothing of the bot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# -- scopes ------------------------------------------------------------------------------------
# "Required scopes" of each method's reference page (docs.slack.dev/reference/methods/<name>).
# conversations.history / .replies need the history scope of the conversation's type
# (channels:history, groups:history, im:history, mpim:history): see `history_scope`.
# views.*, chat.getPermalink and auth.test need none ("No scopes required").
METHOD_SCOPES: dict[str, str | None] = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.getPermalink": None,
    "conversations.open": "im:write",
    "conversations.join": "channels:join",
    "conversations.info": "channels:read",
    "users.info": "users:read",
    "usergroups.users.list": "usergroups:read",
    "views.open": None,
    "views.update": None,
    "views.push": None,
    "views.publish": None,
    "auth.test": None,
    "api.test": None,
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}


def history_scope(channel: dict[str, Any]) -> str:
    """The scope conversations.history / .replies need for this conversation's type."""
    if channel.get("is_im"):
        return "im:history"
    if channel.get("is_mpim"):
        return "mpim:history"
    return "groups:history" if channel.get("is_private") else "channels:history"


def scopes_from_manifest(path: str | Path) -> frozenset[str]:
    """The bot scopes an app manifest (YAML or JSON) requests: what a workspace grants when it
    installs the app from it."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    bot = ((data.get("oauth_config") or {}).get("scopes") or {}).get("bot") or []
    return frozenset(str(s) for s in bot)


# -- rate limits -------------------------------------------------------------------------------
# docs.slack.dev/apis/web-api/rate-limits: limits apply "per API method per workspace per app";
# Tier 1 1+ per minute, Tier 2 20+, Tier 3 50+, Tier 4 100+, each "allowing for occasional
# bursts". The sandbox grants exactly the documented floor per minute, as a token bucket that
# holds a minute's worth (the burst Slack tolerates) and refills evenly.
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
# The tier on each method's reference page ("Rate limits" fact).
METHOD_TIERS: dict[str, int] = {
    "chat.update": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.getPermalink": 4,  # listed as Special; at least Tier 4's rate
    "conversations.history": 3,  # internal (not commercially distributed) apps keep Tier 3
    "conversations.replies": 3,
    "conversations.open": 3,
    "conversations.join": 3,
    "conversations.info": 4,
    "users.info": 4,
    "usergroups.users.list": 2,
    "views.open": 4,
    "views.update": 4,
    "views.push": 4,
    "views.publish": 4,
    "auth.test": 4,  # Special; generous
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
}
# chat.postMessage is Special Tier: "generally allows posting one message per second per
# channel, while also maintaining a workspace-wide limit"; "Short bursts >1 allowed".
POST_PER_CHANNEL_PER_SECOND = 1.0
POST_BURST = 5
POSTING_METHODS = frozenset({"chat.postMessage"})


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; one bucket per key."""

    rate: float
    burst: float
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when a call may go now (and counts it), else seconds until it may."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.setdefault(key, _Bucket(self.burst, now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class RateLimits:
    """Slack's Web API rate limits: the tier of each method (per workspace, per app) and the
    per-channel posting limit. `retry_after(method, channel)` is None when the call may go,
    else the seconds for the Retry-After header of the 429."""

    def __init__(
        self,
        per_channel_per_second: float = POST_PER_CHANNEL_PER_SECOND,
        burst: int = POST_BURST,
        tiers: dict[str, int] | None = None,
    ) -> None:
        self.posting = TokenBucket(per_channel_per_second, float(burst))
        self.tiers = dict(METHOD_TIERS if tiers is None else tiers)
        self.methods = {
            t: TokenBucket(per / 60.0, float(per)) for t, per in TIER_PER_MINUTE.items()
        }

    def retry_after(self, method: str, channel: Any) -> int | None:
        if method in POSTING_METHODS:
            if not channel:
                return None
            wait = self.posting.take(str(channel))
        elif method in self.tiers:
            wait = self.methods[self.tiers[method]].take(method)
        else:
            return None
        return max(1, math.ceil(wait)) if wait > 0 else None
