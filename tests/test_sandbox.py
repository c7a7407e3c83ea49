"""The sandbox answers slack_sdk like Slack does, and signs what it sends to bolt like Slack."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox import BOT_USER_ID, TEAM_ID, Sandbox, SlackClientSim
from tests.fixtures.slack import BOT_TOKEN, eventually

ALICE, BOB, FRANK = "U0ALICE01", "U0BOB0001", "U0FRANK01"
SALES = "C0SALES01"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def slack_error(call: Any) -> str:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value.response["error"]


# -- Web API -------------------------------------------------------------------------------
async def test_post_update_replies_history(sandbox: Sandbox, slack_client: AsyncWebClient):
    auth = await slack_client.auth_test()
    assert auth["user_id"] == BOT_USER_ID
    await slack_client.conversations_join(channel=SALES)  # history needs membership

    parent = await slack_client.chat_postMessage(channel=SALES, text="hi", blocks=[section("hi")])
    assert parent["ok"] and parent["channel"] == SALES
    assert parent["message"]["blocks"][0]["text"]["text"] == "hi"
    reply = await slack_client.chat_postMessage(channel=SALES, text="re", thread_ts=parent["ts"])
    broadcast = await slack_client.chat_postMessage(
        channel=SALES, text="loud", thread_ts=parent["ts"], reply_broadcast=True
    )
    assert float(parent["ts"]) < float(reply["ts"]) < float(broadcast["ts"])

    updated = await slack_client.chat_update(channel=SALES, ts=parent["ts"], text="hello")
    assert updated["text"] == "hello" and updated["ts"] == parent["ts"]

    replies = await slack_client.conversations_replies(channel=SALES, ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["hello", "re", "loud"]
    assert replies["messages"][0]["reply_count"] == 2
    assert replies["messages"][0]["edited"]["user"] == BOT_USER_ID

    history = await slack_client.conversations_history(channel=SALES)
    assert [m["text"] for m in history["messages"]] == ["loud", "hello"]  # newest first

    store = sandbox.store
    assert [m["text"] for m in store.thread(SALES, parent["ts"])] == ["hello", "re", "loud"]
    assert [m["text"] for m in store.history(SALES, parent["ts"])] == ["hi"]
    assert [c.body["text"] for c in store.calls("chat.postMessage")] == ["hi", "re", "loud"]


async def test_reply_to_unknown_thread_is_posted(slack_client: AsyncWebClient):
    sent = await slack_client.chat_postMessage(channel=SALES, text="x", thread_ts="1.000001")
    assert sent["ok"] and sent["message"]["thread_ts"] == "1.000001"


async def test_ephemeral_permalink_dm_users(sandbox: Sandbox, slack_client: AsyncWebClient):
    eph = await slack_client.chat_postEphemeral(channel=SALES, user=ALICE, text="psst")
    assert sandbox.store.ephemerals(ALICE)[0].ts == eph["message_ts"]
    assert sandbox.store.ephemerals(BOB) == []

    sent = await slack_client.chat_postMessage(channel=SALES, text="x")
    link = await slack_client.chat_getPermalink(channel=SALES, message_ts=sent["ts"])
    assert link["permalink"].endswith(f"/archives/{SALES}/p{sent['ts'].replace('.', '')}")

    dm = await slack_client.conversations_open(users=ALICE)
    assert dm["channel"]["id"].startswith("D")
    await slack_client.chat_postMessage(channel=dm["channel"]["id"], text="for you")
    assert [m["text"] for m in sandbox.store.dms(ALICE)] == ["for you"]

    user = await slack_client.users_info(user=ALICE)
    assert user["user"]["real_name"] == "Alice Archer"
    assert user["user"]["team_id"] == TEAM_ID and not user["user"]["is_restricted"]
    sandbox.store.users["U0GUEST01"] = {"name": "gus", "is_restricted": True}
    sandbox.store.users["U0OTHER01"] = {"name": "olga", "team_id": "T0OTHER01", "is_stranger": True}
    guest = (await slack_client.users_info(user="U0GUEST01"))["user"]
    assert guest["is_restricted"] and not guest["is_ultra_restricted"]
    other = (await slack_client.users_info(user="U0OTHER01"))["user"]
    assert other["team_id"] == "T0OTHER01" and other["is_stranger"]
    group = await slack_client.usergroups_users_list(usergroup="S0SALES01")
    assert group["users"] == [ALICE, BOB]


async def test_granted_scopes_channel_facts_and_deactivated_users(sandbox: Sandbox):
    """What `crm-bot doctor` reads: the scopes in each answer's `x-oauth-scopes` header (the
    manifest's unless the sandbox is given others), a channel's membership, archived and
    private flags, and a deactivated user (`deleted`, still answered, as Slack does)."""
    client = AsyncWebClient(token=BOT_TOKEN, base_url=sandbox.api_url)
    auth = await client.auth_test()
    assert "chat:write" in auth.headers["x-oauth-scopes"].split(",")
    granted = sandbox.scopes
    sandbox.scopes = ["commands", "chat:write"]
    assert (await client.api_test()).headers["x-oauth-scopes"] == "commands,chat:write"
    # one list: the header names what the missing_scope checks grant
    assert await slack_error(client.conversations_info(channel=SALES)) == "missing_scope"
    sandbox.scopes = granted

    sandbox.invite(SALES)
    info = await client.conversations_info(channel=SALES)
    assert info["channel"]["is_member"] and not info["channel"]["is_archived"]
    assert not info["channel"]["is_private"]
    sandbox.store.channels[SALES].update(is_member=False, is_archived=True)
    sandbox.store.add_channel("G0SECRET1", "secret", is_member=False)
    info = await client.conversations_info(channel=SALES)
    assert not info["channel"]["is_member"] and info["channel"]["is_archived"]
    # a private channel the bot is not in does not exist for it, as in Slack
    assert await slack_error(client.conversations_info(channel="G0SECRET1")) == "channel_not_found"
    sandbox.invite("G0SECRET1")
    assert (await client.conversations_info(channel="G0SECRET1"))["channel"]["is_private"]
    assert await slack_error(client.conversations_info(channel="C0NOWHERE")) == "channel_not_found"

    assert (await client.users_info(user=BOB))["user"]["deleted"] is False
    sandbox.store.users[BOB] = {**sandbox.store.users[BOB], "deleted": True}  # not DEMO_USERS'!
    assert (await client.users_info(user=BOB))["user"]["deleted"] is True


async def test_home_and_views(sandbox: Sandbox, slack_client: AsyncWebClient):
    home = {"type": "home", "blocks": [section("welcome")]}
    published = await slack_client.views_publish(user_id=ALICE, view=home)
    assert sandbox.store.home(ALICE)["id"] == published["view"]["id"]

    trigger = sandbox.issue_trigger(ALICE)
    modal = {
        "type": "modal",
        "callback_id": "cb",
        "private_metadata": '{"id": 1}',
        "title": {"type": "plain_text", "text": "T"},
        "blocks": [section("one")],
    }
    opened = await slack_client.views_open(trigger_id=trigger, view=modal)
    view_id = opened["view"]["id"]
    assert sandbox.store.views(ALICE)[0]["private_metadata"] == '{"id": 1}'
    assert await slack_error(slack_client.views_open(trigger_id=trigger, view=modal)) == (
        "exchanged_trigger_id"
    )
    await slack_client.views_update(view_id=view_id, view={**modal, "blocks": [section("two")]})
    assert sandbox.store.view(view_id)["blocks"][0]["text"]["text"] == "two"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"channel": "#nope", "text": "x"}, "channel_not_found"),
        ({"channel": SALES}, "no_text"),
        ({"channel": SALES, "text": "x" * 40_001}, "msg_too_long"),
        ({"channel": SALES, "text": "x", "blocks": [section("x")] * 51}, "invalid_blocks"),
        ({"channel": SALES, "text": "x", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
        ({"channel": SALES, "text": "x", "blocks": [{"text": "no type"}]}, "invalid_blocks"),
        (
            {
                "channel": SALES,
                "text": "x",
                "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            },
            "invalid_blocks",
        ),
        (
            {
                "channel": SALES,
                "text": "x",
                "blocks": [
                    {
                        "type": "actions",
                        "elements": [
                            {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}}
                        ],
                    }
                ],
            },
            "invalid_blocks",
        ),
    ],
)
async def test_post_errors(slack_client: AsyncWebClient, args: dict[str, Any], expected: str):
    assert await slack_error(slack_client.chat_postMessage(**args)) == expected


async def test_other_errors(sandbox: Sandbox, slack_client: AsyncWebClient):
    sandbox.store.auto_channels = False
    assert await slack_error(slack_client.chat_postMessage(channel="C0NEW0001", text="x")) == (
        "channel_not_found"
    )
    assert await slack_error(slack_client.chat_update(channel=SALES, ts="1.2", text="x")) == (
        "message_not_found"
    )
    await slack_client.conversations_join(channel=SALES)
    assert await slack_error(slack_client.conversations_replies(channel=SALES, ts="1.2")) == (
        "thread_not_found"
    )
    assert await slack_error(slack_client.api_call("chat.frobnicate")) == "unknown_method"
    sandbox.store.channels[SALES]["is_archived"] = True
    assert await slack_error(slack_client.chat_postMessage(channel=SALES, text="x")) == (
        "is_archived"
    )
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=sandbox.api_url)
    assert await slack_error(wrong.auth_test()) == "invalid_auth"
    assert sandbox.store.calls("auth.test")[-1].response == {"ok": False, "error": "invalid_auth"}


async def test_injected_faults_look_like_slack(sandbox: Sandbox):
    sandbox.fail("chat.postMessage", status=429, times=1, retry_after=7)
    sandbox.fail("chat.postMessage", status=503, times=1)
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
    url = sandbox.api_url + "chat.postMessage"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(url, json={"channel": SALES, "text": "x"}) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "7"
            assert await resp.json() == {"ok": False, "error": "ratelimited"}
        async with http.post(url, json={"channel": SALES, "text": "x"}) as resp:
            assert resp.status == 503 and resp.content_type == "text/html"
        async with http.post(url, json={"channel": SALES, "text": "x"}) as resp:
            assert resp.status == 200 and (await resp.json())["ok"]
    assert [c.status for c in sandbox.store.calls("chat.postMessage")] == [429, 503, 200]


async def test_a_fault_after_the_effect_loses_only_the_answer(sandbox: Sandbox):
    sandbox.fail("chat.postMessage", status=503, times=1, applied=True)
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        url = sandbox.api_url + "chat.postMessage"
        async with http.post(url, json={"channel": SALES, "text": "x"}) as resp:
            assert resp.status == 503
    assert [m["text"] for m in sandbox.store.messages(SALES)] == ["x"]  # posted all the same


async def test_history_and_replies_page_and_show_metadata_only_when_asked(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    meta = {"event_type": "crm_bot_post", "event_payload": {"key": "k"}}
    await slack_client.conversations_join(channel=SALES)
    parent = await slack_client.chat_postMessage(channel=SALES, text="p", metadata=meta)
    for n in range(5):
        await slack_client.chat_postMessage(
            channel=SALES, text=f"r{n}", thread_ts=parent["ts"], metadata=meta
        )
    history = await slack_client.conversations_history(channel=SALES)
    assert "metadata" not in history["messages"][0]
    history = await slack_client.conversations_history(channel=SALES, include_all_metadata=True)
    assert history["messages"][0]["metadata"] == meta

    seen, cursor = [], None
    while True:
        page = await slack_client.conversations_replies(
            channel=SALES, ts=parent["ts"], limit=2, cursor=cursor, oldest=parent["ts"]
        )
        seen += [m["text"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
        assert bool(cursor) == page["has_more"]
        if not cursor:
            break
    assert seen == ["p", "r0", "r1", "r2", "r3", "r4"]
    assert (
        await slack_error(slack_client.conversations_history(channel=SALES, cursor="%%%"))
        == "invalid_cursor"
    )


async def test_subscribe_sees_changes(sandbox: Sandbox, slack_client: AsyncWebClient):
    queue = sandbox.subscribe()
    await slack_client.chat_postMessage(channel=SALES, text="x")
    kinds = []
    while not queue.empty():
        kinds.append(queue.get_nowait()["type"])
    assert "message" in kinds and "api_call" in kinds


# -- Slack's side, toward a real bolt app ---------------------------------------------------
async def test_command_ack_and_respond_are_what_the_user_sees(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, sandbox: Sandbox
):
    @bolt_app.command("/crm")
    async def crm(ack, respond, command):
        await ack(f"looking for {command['text']}")
        await respond(text="found it")
        await respond(text="for all", response_type="in_channel")

    reply = await slack_sim.command(ALICE, SALES, "/crm", "find acme")
    assert reply.status == 200
    seen = await eventually(lambda: len(sandbox.store.ephemerals(ALICE, SALES)) == 2)
    assert seen
    # Like Slack, the ack's text shows when the HTTP answer arrives, maybe after respond()'s.
    shown = {(e.source, e.text) for e in sandbox.store.ephemerals(ALICE)}
    assert shown == {("ack", "looking for find acme"), ("response_url", "found it")}
    posted = await eventually(lambda: sandbox.store.messages(SALES))
    assert posted[0]["text"] == "for all"
    assert sandbox.store.ephemerals(BOB) == []


@pytest.mark.parametrize("signing", ["none", "wrong", "stale"])
async def test_bad_signatures_get_401_and_no_listener_runs(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, signing: str
):
    ran: list[str] = []

    @bolt_app.command("/crm")
    async def crm(ack):
        ran.append("crm")
        await ack()

    reply = await slack_sim.command(ALICE, SALES, "/crm", "help", signing=signing)
    assert reply.status == 401
    ok = await slack_sim.command(ALICE, SALES, "/crm", "help")
    assert ok.status == 200 and ran == ["crm"]


async def test_click_updates_message_and_replaces_ephemeral(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, sandbox: Sandbox, slack_client: AsyncWebClient
):
    button = {
        "type": "actions",
        "block_id": "b1",
        "elements": [
            {
                "type": "button",
                "action_id": "handoff_accept",
                "value": "h1",
                "text": {"type": "plain_text", "text": "Accept"},
            }
        ],
    }
    got: list[dict[str, Any]] = []

    @bolt_app.action("handoff_accept")
    async def accept(ack, body, client, respond):
        await ack()
        got.append(body)
        if body["container"].get("is_ephemeral"):
            await respond(text="done", replace_original=True)
        else:
            await client.chat_update(
                channel=body["channel"]["id"], ts=body["message"]["ts"], text="accepted"
            )

    sent = await slack_client.chat_postMessage(channel=SALES, text="handoff", blocks=[button])
    reply = await slack_sim.click(BOB, SALES, sent["ts"], "handoff_accept", "h1")
    assert reply.status == 200
    await eventually(lambda: sandbox.store.message(SALES, sent["ts"])["text"] == "accepted")
    action = got[0]["actions"][0]
    assert (action["action_id"], action["value"], action["block_id"]) == (
        "handoff_accept",
        "h1",
        "b1",
    )
    assert got[0]["user"]["id"] == BOB and got[0]["message"]["text"] == "handoff"

    eph = await slack_client.chat_postEphemeral(
        channel=SALES, user=BOB, text="choose", blocks=[button]
    )
    await slack_sim.click(BOB, SALES, eph["message_ts"], "handoff_accept", "h1")
    await eventually(lambda: sandbox.store.ephemerals(BOB)[0].text == "done")
    assert len(sandbox.store.ephemerals(BOB)) == 1


async def test_modal_open_and_submit(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, sandbox: Sandbox
):
    submitted: list[dict[str, Any]] = []

    @bolt_app.command("/crm")
    async def crm(ack, body, client):
        await ack()
        await client.views_open(
            trigger_id=body["trigger_id"],
            view={
                "type": "modal",
                "callback_id": "approval_reject_reason",
                "private_metadata": json.dumps({"approval": "a1"}),
                "title": {"type": "plain_text", "text": "Reject"},
                "submit": {"type": "plain_text", "text": "Reject"},
                "blocks": [
                    {
                        "type": "input",
                        "block_id": "reason",
                        "label": {"type": "plain_text", "text": "Reason"},
                        "element": {"type": "plain_text_input", "action_id": "text"},
                    }
                ],
            },
        )

    @bolt_app.view("approval_reject_reason")
    async def on_submit(ack, view):
        submitted.append(view)
        await ack()

    await slack_sim.command(FRANK, SALES, "/crm", "approval")
    views = await eventually(lambda: sandbox.store.views(FRANK))
    values = {"reason": {"text": {"type": "plain_text_input", "value": "too much"}}}
    reply = await slack_sim.submit_view(FRANK, views[0]["id"], values)
    assert reply.status == 200
    assert json.loads(submitted[0]["private_metadata"]) == {"approval": "a1"}
    assert submitted[0]["state"]["values"]["reason"]["text"]["value"] == "too much"
    assert sandbox.store.views(FRANK) == []


async def test_events_shortcut_and_retry_headers(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, sandbox: Sandbox, slack_client: AsyncWebClient
):
    seen: list[tuple[str, Any]] = []

    @bolt_app.event("app_mention")
    async def mention(event, request):
        seen.append(("mention", request.headers.get("x-slack-retry-num")))

    @bolt_app.event("app_home_opened")
    async def home(event):
        seen.append(("home", event["user"]))

    @bolt_app.shortcut("handoff_from_message")
    async def shortcut(ack, shortcut):
        await ack()
        seen.append(("shortcut", shortcut["message"]["text"]))

    assert (await slack_sim.mention(ALICE, SALES, f"<@{BOT_USER_ID}> hi")).status == 200
    assert (await slack_sim.home_opened(ALICE)).status == 200
    assert (
        await slack_sim.event(
            {"type": "app_mention", "user": ALICE, "text": "x", "channel": SALES, "ts": "1.1"},
            retry_num=1,
        )
    ).status == 200
    sent = await slack_client.chat_postMessage(channel=SALES, text="about acme")
    reply = await slack_sim.message_shortcut(BOB, SALES, sent["ts"], "handoff_from_message")
    assert reply.status == 200
    await eventually(lambda: len(seen) == 4)
    assert sorted(seen, key=str) == sorted(
        [("mention", None), ("home", ALICE), ("mention", ["1"]), ("shortcut", "about acme")],
        key=str,
    )


async def test_sandbox_as_context_manager():
    async with Sandbox(bot_token=BOT_TOKEN) as sb:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=sb.api_url)
        assert (await client.auth_test())["ok"]
    await asyncio.sleep(0)


async def test_view_errors_keep_modal_open_and_home_buttons_carry_the_view(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, sandbox: Sandbox, slack_client: AsyncWebClient
):
    clicked: list[dict[str, Any]] = []

    @bolt_app.view("needs_reason")
    async def on_submit(ack):
        await ack(response_action="errors", errors={"reason": "Say why"})

    @bolt_app.action("home_refresh")
    async def refresh(ack, body, respond):
        await ack()
        clicked.append(body)

    modal = {
        "type": "modal",
        "callback_id": "needs_reason",
        "title": {"type": "plain_text", "text": "Why"},
        "blocks": [section("?")],
    }
    opened = await slack_client.views_open(trigger_id=sandbox.issue_trigger(ALICE), view=modal)
    queue = sandbox.subscribe()
    reply = await slack_sim.submit_view(ALICE, opened["view"]["id"], {})
    assert reply.json() == {"response_action": "errors", "errors": {"reason": "Say why"}}
    assert sandbox.store.views(ALICE)[0]["id"] == opened["view"]["id"]
    changes = [queue.get_nowait() for _ in range(queue.qsize())]
    assert {
        "type": "view_errors",
        "view_id": opened["view"]["id"],
        "errors": {"reason": "Say why"},
    } in (changes)

    refresh_button = {
        "type": "actions",
        "block_id": "home",
        "elements": [
            {
                "type": "button",
                "action_id": "home_refresh",
                "text": {"type": "plain_text", "text": "R"},
            }
        ],
    }
    home = await slack_client.views_publish(
        user_id=ALICE, view={"type": "home", "blocks": [refresh_button]}
    )
    container = {"type": "view", "view_id": home["view"]["id"]}
    await slack_sim.click(ALICE, None, None, "home_refresh", container=container)
    await eventually(lambda: clicked)
    assert clicked[0]["view"]["id"] == home["view"]["id"]
    assert clicked[0]["actions"][0]["block_id"] == "home"


async def test_delete_original_through_response_url(
    bolt_app: AsyncApp, slack_sim: SlackClientSim, sandbox: Sandbox, slack_client: AsyncWebClient
):
    @bolt_app.action("dismiss")
    async def dismiss(ack, respond):
        await ack()
        await respond(delete_original=True)

    dismiss_button = {
        "type": "actions",
        "elements": [
            {"type": "button", "action_id": "dismiss", "text": {"type": "plain_text", "text": "X"}}
        ],
    }
    eph = await slack_client.chat_postEphemeral(
        channel=SALES, user=ALICE, text="card", blocks=[dismiss_button]
    )
    await slack_sim.click(ALICE, SALES, eph["message_ts"], "dismiss")
    await eventually(lambda: sandbox.store.ephemerals(ALICE) == [])
