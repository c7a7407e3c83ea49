"""The sandbox is as strict as Slack: one test per rule, each asserting what Slack answers
(see the rule's comment in bot/sandbox for the documentation it follows)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox import BOT_USER_ID, Sandbox, SlackClientSim
from bot.sandbox.rules import TIER_PER_MINUTE, scopes_from_manifest
from tests.fixtures.slack import BOT_TOKEN, MANIFEST, SCOPES, SIGNING_SECRET, serve

ALICE, BOB, FRANK = "U0ALICE01", "U0BOB0001", "U0FRANK01"
SALES = "C0SALES01"
SECRET_ROOM = "G0SECRET1"  # a private channel


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def slack_error(call: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as info:
        await call
    return dict(info.value.response.data)


def bare_client(sandbox: Sandbox) -> AsyncWebClient:
    """A client without slack_sdk's retry handlers: it sees each 429 Slack answers."""
    return AsyncWebClient(token=BOT_TOKEN, base_url=sandbox.api_url, retry_handlers=[])


async def test_scopes_come_from_the_manifest():
    assert scopes_from_manifest(MANIFEST) == SCOPES
    assert {"chat:write", "channels:join", "channels:history"} <= SCOPES


# -- membership ------------------------------------------------------------------------------
async def test_public_channel_history_needs_membership_and_join_gives_it(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    # chat:write.public: the bot posts in a public channel it is not in ...
    posted = await slack_client.chat_postMessage(channel=SALES, text="hi")
    assert posted["ok"]
    # ... but reads only where it is a member
    refused = await slack_error(slack_client.conversations_history(channel=SALES))
    assert refused["error"] == "not_in_channel"
    refused = await slack_error(slack_client.conversations_replies(channel=SALES, ts=posted["ts"]))
    assert refused["error"] == "not_in_channel"
    joined = await slack_client.conversations_join(channel=SALES)
    assert joined["channel"]["is_member"]
    assert [
        m["text"] for m in (await slack_client.conversations_history(channel=SALES))["messages"]
    ] == ["hi"]
    again = await slack_client.conversations_join(channel=SALES)
    assert again["warning"] == "already_in_channel"


async def test_without_chat_write_public_the_bot_posts_only_where_it_is():
    async with Sandbox(bot_token=BOT_TOKEN, scopes=SCOPES - {"chat:write.public"}) as sb:
        client = bare_client(sb)
        assert (await slack_error(client.chat_postMessage(channel=SALES, text="x")))["error"] == (
            "not_in_channel"
        )
        await client.conversations_join(channel=SALES)
        assert (await client.chat_postMessage(channel=SALES, text="x"))["ok"]


async def test_private_channel_only_by_invitation(sandbox: Sandbox, slack_client: AsyncWebClient):
    sandbox.store.add_channel(SECRET_ROOM, name="secret", members=[ALICE])
    for call in (
        slack_client.chat_postMessage(channel=SECRET_ROOM, text="x"),
        slack_client.conversations_history(channel=SECRET_ROOM),
        slack_client.chat_update(channel=SECRET_ROOM, ts="1.2", text="x"),
    ):
        assert (await slack_error(call))["error"] == "channel_not_found"
    refused = await slack_error(slack_client.conversations_join(channel=SECRET_ROOM))
    assert refused["error"] == "channel_not_found"
    sandbox.invite(SECRET_ROOM)
    refused = await slack_error(slack_client.conversations_join(channel=SECRET_ROOM))
    assert refused["error"] == "method_not_supported_for_channel_type"
    posted = await slack_client.chat_postMessage(channel=SECRET_ROOM, text="x")
    history = await slack_client.conversations_history(channel=SECRET_ROOM)
    assert [m["ts"] for m in history["messages"]] == [posted["ts"]]


async def test_archived_channel_refuses_posts_and_updates(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    posted = await slack_client.chat_postMessage(channel=SALES, text="x")
    sandbox.store.channels[SALES]["is_archived"] = True
    for call in (
        slack_client.chat_postMessage(channel=SALES, text="y"),
        slack_client.chat_update(channel=SALES, ts=posted["ts"], text="y"),
        slack_client.conversations_join(channel=SALES),
    ):
        assert (await slack_error(call))["error"] == "is_archived"


async def test_ephemeral_only_to_a_person_in_the_channel(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    sandbox.store.add_channel("C0OTHER01", name="other", members=[ALICE])
    assert (await slack_client.chat_postEphemeral(channel="C0OTHER01", user=ALICE, text="x"))["ok"]
    refused = await slack_error(
        slack_client.chat_postEphemeral(channel="C0OTHER01", user=BOB, text="x")
    )
    assert refused["error"] == "user_not_in_channel"


# -- scopes ----------------------------------------------------------------------------------
async def test_a_method_without_its_scope_answers_missing_scope():
    async with Sandbox(
        bot_token=BOT_TOKEN, scopes=SCOPES - {"usergroups:read", "im:history"}
    ) as sb:
        client = bare_client(sb)
        refused = await slack_error(client.usergroups_users_list(usergroup="S0SALES01"))
        assert refused["error"] == "missing_scope" and refused["needed"] == "usergroups:read"
        assert "usergroups:read" not in refused["provided"].split(",")
        dm = (await client.conversations_open(users=ALICE))["channel"]["id"]
        refused = await slack_error(client.conversations_history(channel=dm))
        assert refused["error"] == "missing_scope" and refused["needed"] == "im:history"
        assert sb.call_counts() == {
            "usergroups.users.list": 1,
            "conversations.open": 1,
            "conversations.history": 1,
        }


# -- rate limits -----------------------------------------------------------------------------
async def test_rate_limits_are_on_by_default_per_method_tier(sandbox: Sandbox):
    client = bare_client(sandbox)
    allowed = TIER_PER_MINUTE[2]  # usergroups.users.list is Tier 2: 20 a minute, as a burst
    for _ in range(allowed):
        await client.usergroups_users_list(usergroup="S0SALES01")
    refused = await slack_error(client.usergroups_users_list(usergroup="S0SALES01"))
    assert refused["error"] == "ratelimited"
    last = sandbox.store.calls("usergroups.users.list")[-1]
    assert last.status == 429
    # another method has its own allowance
    assert (await client.conversations_open(users=ALICE))["ok"]


async def test_post_message_is_limited_per_channel_with_retry_after(sandbox: Sandbox):
    async with aiohttp.ClientSession() as http:

        async def post(channel: str) -> aiohttp.ClientResponse:
            return await http.post(
                sandbox.api_url + "chat.postMessage",
                json={"channel": channel, "text": "x"},
                headers={"Authorization": f"Bearer {BOT_TOKEN}"},
            )

        statuses = [(await post(SALES)).status for _ in range(5)]
        assert statuses == [200] * 5  # a short burst is allowed, as Slack does
        refused = await post(SALES)
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        assert (await refused.json())["error"] == "ratelimited"
        assert (await post("C0FINANCE")).status == 200  # per channel


# -- the 3-second windows ----------------------------------------------------------------------
MODAL = {
    "type": "modal",
    "callback_id": "cb",
    "title": {"type": "plain_text", "text": "T"},
    "blocks": [section("x")],
}


async def test_trigger_id_is_single_use_within_3_seconds(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    trigger = sandbox.issue_trigger(ALICE)
    assert (await slack_client.views_open(trigger_id=trigger, view=MODAL))["ok"]
    again = await slack_error(slack_client.views_open(trigger_id=trigger, view=MODAL))
    assert again["error"] == "exchanged_trigger_id"
    late = sandbox.issue_trigger(ALICE)
    user, _ = sandbox.store.triggers[late]
    sandbox.store.triggers[late] = (user, time.monotonic() - 3.1)  # issued 3.1 s ago
    assert (await slack_error(slack_client.views_open(trigger_id=late, view=MODAL)))["error"] == (
        "expired_trigger_id"
    )
    bad = await slack_error(slack_client.views_open(trigger_id="1.2.nope", view=MODAL))
    assert bad["error"] == "invalid_trigger_id"


async def test_response_url_five_uses_within_30_minutes(sandbox: Sandbox):
    url = sandbox.issue_response_url(ALICE, SALES)
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            async with http.post(url, json={"text": f"answer {n}"}) as resp:
                assert resp.status == 200
        async with http.post(url, json={"text": "sixth"}) as resp:
            assert (resp.status, await resp.text()) == (404, "used_url")
        late = sandbox.issue_response_url(ALICE, SALES)
        token = late.rsplit("/", 1)[1]
        sandbox.store.response_urls[token]["issued"] -= 30 * 60 + 1
        async with http.post(late, json={"text": "late"}) as resp:
            assert (resp.status, await resp.text()) == (404, "expired_url")
        fresh = sandbox.issue_response_url(ALICE, SALES)
        async with http.post(fresh, json={"blocks": [section("x" * 3001)]}) as resp:
            assert (resp.status, await resp.text()) == (400, "invalid_blocks")
    assert [e.text for e in sandbox.store.ephemerals(ALICE)] == [f"answer {n}" for n in range(5)]


class Gate:
    """A bolt middleware that holds the first request of each kind until released: an app
    too slow to acknowledge within Slack's 3 seconds (the sim waits less here)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[dict[str, str | None]] = []

    async def __call__(self, req, resp, next):
        self.seen.append(
            {
                "num": req.headers.get("x-slack-retry-num", [None])[0],
                "reason": req.headers.get("x-slack-retry-reason", [None])[0],
            }
        )
        if len(self.seen) == 1:
            await self.release.wait()
        return await next()


async def slow_app(sandbox: Sandbox) -> tuple[AsyncApp, Gate]:
    app = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=sandbox.api_url),
        signing_secret=SIGNING_SECRET,
    )
    gate = Gate()
    app.middleware(gate)
    return app, gate


async def test_an_event_not_acked_in_time_is_retried_with_retry_headers(sandbox: Sandbox):
    app, gate = await slow_app(sandbox)
    seen: list[str] = []

    @app.event("app_mention")
    async def mention(event):
        seen.append(event["text"])

    runner, base = await serve(app.web_app(path="/slack/events"))
    sim = SlackClientSim(f"{base}/slack/events", SIGNING_SECRET, sandbox, ack_timeout=0.3)
    try:
        reply = await sim.mention(ALICE, SALES, "hello")
        assert reply.status == 200
        assert gate.seen[0] == {"num": None, "reason": None}
        assert gate.seen[1] == {"num": "1", "reason": "http_timeout"}
    finally:
        gate.release.set()
        await sim.close()
        await runner.cleanup()


async def test_a_submission_not_acked_in_time_shows_failed(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    app, gate = await slow_app(sandbox)

    @app.view("cb")
    async def submitted(ack):
        await ack(response_action="clear")

    view = (await slack_client.views_open(trigger_id=sandbox.issue_trigger(ALICE), view=MODAL))[
        "view"
    ]
    runner, base = await serve(app.web_app(path="/slack/events"))
    sim = SlackClientSim(f"{base}/slack/events", SIGNING_SECRET, sandbox, ack_timeout=0.3)
    try:
        reply = await sim.submit_view(ALICE, view["id"])
        assert reply.status == 0
        assert view["id"] in sandbox.store.failed_views
        assert [v["id"] for v in sandbox.store.views(ALICE)] == [view["id"]]  # still open
    finally:
        gate.release.set()
        await sim.close()
        await runner.cleanup()


async def test_a_command_not_acked_in_time_tells_the_user(sandbox: Sandbox):
    app, gate = await slow_app(sandbox)

    @app.command("/crm")
    async def crm(ack):
        await ack("late")

    runner, base = await serve(app.web_app(path="/slack/events"))
    sim = SlackClientSim(f"{base}/slack/events", SIGNING_SECRET, sandbox, ack_timeout=0.3)
    try:
        await sim.command(ALICE, SALES, "/crm", "help")
        assert [e.text for e in sandbox.store.ephemerals(ALICE)] == [
            '/crm failed with the error "operation_timeout"'
        ]
    finally:
        gate.release.set()
        await sim.close()
        await runner.cleanup()


# -- Block Kit ---------------------------------------------------------------------------------
def button(text: str) -> dict[str, Any]:
    return {"type": "button", "action_id": "b", "text": {"type": "plain_text", "text": text}}


@pytest.mark.parametrize(
    "blocks",
    [
        [section("x" * 3001)],
        [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}],
        [{"type": "actions", "elements": [button("x" * 76)]}],
        [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "pick"},
                "accessory": {
                    "type": "static_select",
                    "action_id": "s",
                    "options": [{"text": {"type": "plain_text", "text": "x" * 76}, "value": "v"}],
                },
            }
        ],
        [section("x")] * 51,
        [{"type": "no_such_block"}],
    ],
    ids=["section-3001", "header-151", "button-76", "option-76", "51-blocks", "unknown-type"],
)
async def test_messages_are_checked_like_slack(slack_client: AsyncWebClient, blocks):
    for call in (
        slack_client.chat_postMessage(channel=SALES, text="x", blocks=blocks),
        slack_client.chat_postEphemeral(channel=SALES, user=ALICE, text="x", blocks=blocks),
    ):
        assert (await slack_error(call))["error"] == "invalid_blocks"


async def test_text_over_40000_characters_is_refused(slack_client: AsyncWebClient):
    refused = await slack_error(slack_client.chat_postMessage(channel=SALES, text="x" * 40001))
    assert refused["error"] == "msg_too_long"


@pytest.mark.parametrize(
    "change",
    [
        {"title": {"type": "plain_text", "text": "x" * 25}},
        {"blocks": [section("x")] * 101},
        {"blocks": [section("x" * 3001)]},
    ],
    ids=["title-25", "101-blocks", "section-3001"],
)
async def test_views_are_checked_like_slack(sandbox: Sandbox, slack_client: AsyncWebClient, change):
    trigger = sandbox.issue_trigger(ALICE)
    refused = await slack_error(
        slack_client.views_open(trigger_id=trigger, view={**MODAL, **change})
    )
    assert refused["error"] == "invalid_arguments"
    assert refused["response_metadata"]["messages"]
    home = {"type": "home", "blocks": change.get("blocks", [section("x")])}
    if "blocks" in change:
        refused = await slack_error(slack_client.views_publish(user_id=ALICE, view=home))
        assert refused["error"] == "invalid_arguments"


# -- people ------------------------------------------------------------------------------------
async def test_a_deactivated_user(sandbox: Sandbox, slack_client: AsyncWebClient):
    sandbox.deactivate(BOB)
    assert (await slack_client.users_info(user=BOB))["user"]["deleted"] is True
    assert (await slack_error(slack_client.conversations_open(users=BOB)))["error"] == (
        "user_disabled"
    )
    refused = await slack_error(slack_client.chat_postEphemeral(channel=SALES, user=BOB, text="x"))
    assert refused["error"] == "user_not_in_channel"
    assert (await slack_client.users_info(user=ALICE))["user"]["deleted"] is False


async def test_calls_are_counted_by_method(sandbox: Sandbox, slack_client: AsyncWebClient):
    before = len(sandbox.store.calls())
    await slack_client.chat_postMessage(channel=SALES, text="x")
    await slack_client.chat_postMessage(channel=SALES, text="y")
    await slack_client.auth_test()
    assert sandbox.call_counts(before) == {"chat.postMessage": 2, "auth.test": 1}
    assert BOT_USER_ID  # the bot's own id is what auth.test names
