"""SlackOut against the sandbox: pacing, retries, typed errors, and cutting to Slack's limits."""

from __future__ import annotations

import asyncio
import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.web.async_client import AsyncWebClient

from bot.lib.metrics import slack_api_calls_total
from bot.lib.slack_out import (
    MAX_TEXT,
    SlackError,
    SlackOut,
    fit_to_limits,
    make_client,
)
from bot.sandbox import Sandbox
from bot.sandbox.limits import block_errors
from tests.fixtures.slack import BOT_TOKEN

SALES, FINANCE, ALICE, BOB = "C0SALES01", "C0FINANCE", "U0ALICE01", "U0BOB0001"


@pytest.fixture(autouse=True)
def _bot_in_sales(sandbox: Sandbox) -> None:
    """The bot is a member of SALES, as it is of every department channel once it started
    (it joins them): SlackOut looks for its keyed posts there, which needs membership."""
    sandbox.invite(SALES)


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def button(text: str) -> dict[str, Any]:
    return {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": text}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def fields(n: int, size: int) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * size}] * n}


def counted(method: str, outcome: str) -> float:
    return slack_api_calls_total.labels(method, outcome)._value.get()


# -- fit_to_limits -------------------------------------------------------------------------
def _len(path: str):
    def get(blocks: list[dict[str, Any]]) -> int:
        node: Any = blocks
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        return len(node)

    return get


@pytest.mark.parametrize(
    ("blocks", "measure", "limit"),
    [
        ([section("s" * 5000)], _len("0.text.text"), 3000),
        ([header("h" * 500)], _len("0.text.text"), 150),
        ([section("x", accessory=button("b" * 100))], _len("0.accessory.text.text"), 75),
        ([{"type": "actions", "elements": [button("b" * 76)]}], _len("0.elements.0.text.text"), 75),
        ([context("c" * 2500)], _len("0.elements.0.text"), 2000),
        ([fields(12, 10)], _len("0.fields"), 10),
        ([fields(2, 2500)], _len("0.fields.1.text"), 2000),
        ([section("x")] * 80, len, 50),
    ],
)
def test_fit_cuts_each_limit(blocks, measure, limit):
    original = copy.deepcopy(blocks)
    text, fitted = fit_to_limits("fallback", blocks)
    assert measure(fitted) == limit
    assert block_errors(fitted) == []
    assert blocks == original  # pure
    assert text == "fallback"


@pytest.mark.parametrize(
    ("text", "blocks", "expected"),
    [
        ("short", None, "short"),
        ("", [header("Acme Corp"), section("body")], "Acme Corp"),
        (None, [fields(2, 3)], "fff"),
        ("t" * 40_001, None, "t" * (MAX_TEXT - 1) + "…"),
        ("t" * 40_000, None, "t" * 40_000),
    ],
)
def test_fit_text(text, blocks, expected):
    assert fit_to_limits(text, blocks)[0] == expected


def test_fit_keeps_small_messages_and_says_what_was_left_out():
    blocks = [section("a"), header("b"), context("c")]
    assert fit_to_limits("t", blocks) == ("t", blocks)
    _, cut = fit_to_limits("t", [section(str(i)) for i in range(60)])
    assert cut[48]["text"]["text"] == "48"
    assert "11 more not shown" in cut[49]["elements"][0]["text"]


_text = st.text(alphabet="ab ", max_size=3500)
_block = st.one_of(
    _text.map(section),
    _text.map(header),
    _text.map(context),
    # a section needs text or at least one field (slack_sdk's model, like Slack, refuses none)
    st.tuples(st.integers(1, 14), st.integers(0, 2100)).map(lambda t: fields(*t)),
    _text.map(lambda t: {"type": "actions", "elements": [button(t[:100] or "b")]}),
)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=41_000), st.lists(_block, max_size=60))
def test_fit_output_is_always_accepted_by_slack(text, blocks):
    fitted_text, fitted = fit_to_limits(text, blocks)
    assert len(fitted_text) <= MAX_TEXT
    assert block_errors(fitted or []) == []


# -- round trips ---------------------------------------------------------------------------
async def test_post_update_ephemeral_permalink_views_dm(sandbox: Sandbox, slack_out: SlackOut):
    before = counted("chat.postMessage", "ok")
    sent = await slack_out.post(SALES, "hi", [section("hi")])
    assert sent["channel"] == SALES
    reply = await slack_out.post(SALES, "re", thread_ts=sent["ts"], reply_broadcast=True)
    await slack_out.update(SALES, sent["ts"], "edited", [section("edited")])
    assert [m["text"] for m in sandbox.store.thread(SALES, sent["ts"])] == ["edited", "re"]
    assert sandbox.store.message(SALES, reply["ts"])["subtype"] == "thread_broadcast"
    assert counted("chat.postMessage", "ok") == before + 2

    ts = await slack_out.ephemeral(SALES, ALICE, "only you")
    assert sandbox.store.ephemerals(ALICE)[0].ts == ts
    assert (await slack_out.permalink(SALES, sent["ts"])).startswith(sandbox.url)

    home = await slack_out.publish_home(ALICE, {"type": "home", "blocks": [section("x" * 4000)]})
    assert len(sandbox.store.home(ALICE)["blocks"][0]["text"]["text"]) == 3000
    # a view holds 1 to 100 blocks (slack_sdk's View, as Slack)
    modal = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "M"},
        "blocks": [section("m")],
    }
    view = await slack_out.open_view(sandbox.issue_trigger(ALICE), modal)
    await slack_out.update_view(view["id"], {**modal, "blocks": [section("more")]})
    assert sandbox.store.views(ALICE)[0]["blocks"] == [section("more")]
    assert home["id"] != view["id"]

    dm = await slack_out.dm(ALICE, "hello")
    assert sandbox.store.dms(ALICE)[0]["ts"] == dm["ts"]


async def test_oversized_message_is_cut_and_accepted(sandbox: Sandbox, slack_out: SlackOut):
    await slack_out.post(SALES, "x" * 50_000, [section("y" * 5000)] * 70)
    message = sandbox.store.messages(SALES)[0]
    assert len(message["text"]) == MAX_TEXT and len(message["blocks"]) == 50


# -- errors --------------------------------------------------------------------------------
async def _kind(call) -> SlackError:
    with pytest.raises(SlackError) as info:
        await call
    return info.value


async def test_errors_map_to_kinds(sandbox: Sandbox, slack_out: SlackOut):
    sandbox.store.auto_channels = False
    err = await _kind(slack_out.post("C0NOWHERE", "x"))
    assert (err.kind, err.method, err.transient) == ("channel_not_found", "chat.postMessage", False)
    assert (await _kind(slack_out.update(SALES, "1.000001", "x"))).kind == "message_not_found"
    sandbox.store.channels[FINANCE]["is_archived"] = True
    assert (await _kind(slack_out.post(FINANCE, "x"))).kind == "is_archived"
    sandbox.fail("chat.postMessage", status=200, error="not_in_channel")
    assert (await _kind(slack_out.post(SALES, "x"))).kind == "not_in_channel"
    sandbox.fail("chat.postMessage", status=200, error="something_new")
    assert (await _kind(slack_out.post(SALES, "x"))).kind == "other"
    assert counted("chat.postMessage", "channel_not_found") >= 1

    wrong = SlackOut(AsyncWebClient(token="xoxb-wrong", base_url=sandbox.api_url))
    assert (await _kind(wrong.post(SALES, "x"))).kind == "invalid_auth"


async def test_final_failures_are_transient_kinds(sandbox: Sandbox):
    out = SlackOut(make_client(BOT_TOKEN, sandbox.api_url, max_retries=1, backoff=0.01), 0)
    sandbox.fail("chat.postMessage", status=500, times=2)
    err = await _kind(out.post(SALES, "x"))
    assert (err.kind, err.transient) == ("server_error", True)
    sandbox.fail("chat.postMessage", status=429, times=2, retry_after=0)
    err = await _kind(out.post(SALES, "x"))
    assert (err.kind, err.transient) == ("ratelimited", True)
    assert sandbox.store.messages(SALES) == []

    await sandbox.stop()
    err = await _kind(out.post(SALES, "x"))
    assert (err.kind, err.transient) == ("connection_error", True)


# -- retries and pacing --------------------------------------------------------------------
async def test_server_errors_then_recovery_every_post_arrives_once(
    sandbox: Sandbox, slack_out: SlackOut
):
    sandbox.fail("chat.postMessage", status=503, times=1)
    sandbox.fail("chat.postMessage", status=500, times=1)
    sandbox.fail("chat.postMessage", disconnect=True, times=1)
    for i in range(5):
        await slack_out.post(SALES, f"m{i}")
        if i == 1:
            sandbox.fail("chat.postMessage", status=503, times=1)
    assert [m["text"] for m in sandbox.store.messages(SALES)] == [f"m{i}" for i in range(5)]
    statuses = [c.status for c in sandbox.store.calls("chat.postMessage")]
    assert statuses == [503, 500, 0, 200, 200, 503, 200, 200, 200]


async def test_a_keyed_post_whose_answer_is_lost_is_found_not_posted_again(
    sandbox: Sandbox, slack_out: SlackOut
):
    sandbox.fail("chat.postMessage", status=503, times=1, applied=True)
    parent = await slack_out.post(SALES, "parent", key="p")
    sandbox.fail("chat.postMessage", disconnect=True, times=1, applied=True)
    reply = await slack_out.post(SALES, "reply", thread_ts=parent["ts"], key="r")
    sandbox.fail("chat.postMessage", status=503, times=1)  # refused: nothing went out
    again = await slack_out.post(SALES, "refused once", key="x")
    sandbox.fail("chat.postMessage", status=500, times=1, applied=True)
    unkeyed = await slack_out.post(SALES, "no key of its own")  # it gets a fresh one

    messages = sandbox.store.all_messages(SALES)
    assert [m["text"] for m in messages] == ["parent", "reply", "refused once", "no key of its own"]
    assert [parent["ts"], reply["ts"], again["ts"], unkeyed["ts"]] == [m["ts"] for m in messages]
    looked = [c.method for c in sandbox.store.calls() if c.method.startswith("conversations.")]
    assert (
        looked == ["conversations.history", "conversations.replies"] + ["conversations.history"] * 2
    )
    assert set((await slack_out.keyed_posts(SALES, 0)).items()) > {
        ("p", parent["ts"]),
        ("x", again["ts"]),
    }
    assert await slack_out.find_posted(SALES, "r", 0, thread_ts=parent["ts"]) == reply["ts"]


async def test_a_keyed_post_refused_every_time_fails_transient_and_posts_nothing(
    sandbox: Sandbox,
):
    out = SlackOut(make_client(BOT_TOKEN, sandbox.api_url, max_retries=2, backoff=0.01), 0)
    sandbox.fail("chat.postMessage", status=500, times=3)
    err = await _kind(out.post(SALES, "x", key="k"))
    assert (err.kind, err.transient) == ("server_error", True)
    assert sandbox.store.messages(SALES) == []
    assert len(sandbox.store.calls("chat.postMessage")) == 3  # the client's own schedule


async def test_ratelimited_once_then_retried(sandbox: Sandbox, slack_out: SlackOut):
    sandbox.fail("chat.postMessage", status=429, times=1, retry_after=0)
    await slack_out.post(SALES, "after a 429")
    assert [m["text"] for m in sandbox.store.messages(SALES)] == ["after a 429"]
    assert [c.status for c in sandbox.store.calls("chat.postMessage")] == [429, 200]


async def test_burst_is_paced_in_order_within_the_channel_rate(
    sandbox: Sandbox, slack_client: AsyncWebClient
):
    interval, burst = 0.05, 3
    # The sandbox allows the same rate with one token of slack for network jitter.
    sandbox.rate_limit(per_channel_per_second=1 / interval, burst=burst + 1)
    out = SlackOut(slack_client, per_channel_interval=interval, burst=burst)

    await asyncio.gather(
        *(out.post(SALES, f"s{i}") for i in range(20)),
        *(out.post(FINANCE, f"f{i}") for i in range(5)),
    )

    assert [m["text"] for m in sandbox.store.messages(SALES)] == [f"s{i}" for i in range(20)]
    assert [m["text"] for m in sandbox.store.messages(FINANCE)] == [f"f{i}" for i in range(5)]
    calls = [c for c in sandbox.store.calls("chat.postMessage") if c.body["channel"] == SALES]
    assert all(c.status == 200 for c in calls), "SlackOut should never hit the rate limit"
    times = [c.time for c in calls]
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            # Token bucket: posts in [t_i, t_j] never exceed the burst plus the refill.
            assert j - i + 1 <= burst + 1 + (times[j] - times[i]) / interval
    assert times[-1] - times[0] >= (20 - burst) * interval * 0.9


async def test_no_pacing_when_interval_is_zero(sandbox: Sandbox, slack_client: AsyncWebClient):
    # Rate limits off: this checks that SlackOut itself holds nothing back; Slack's
    # per-channel limit (1 a second after a burst of 5) would refuse part of the burst.
    sandbox.rate_limits_off()
    out = SlackOut(slack_client, per_channel_interval=0)
    await asyncio.gather(*(out.post(SALES, f"m{i}") for i in range(10)))
    assert len(sandbox.store.messages(SALES)) == 10


@pytest.mark.parametrize("pad", range(2990, 3001))
def test_cut_never_splits_an_entity_or_the_bots_markup(pad):
    """Text is escaped before it is cut, and cut only between entities and tokens: Slack
    would show `&am…` or a broken `<@U0ALI…` as typed."""
    from bot.lib.blocks import esc, user
    from bot.lib.slack_out import cut

    for tail in (esc("R&D <x>") * 3, user("U0ALICE01") * 3, "<https://example.com/a|link>"):
        text = "a" * pad + tail
        out = cut(text, 3000)
        assert len(out) <= 3000 and out.endswith("…")
        body = out[:-1]
        assert not re.search(r"&[a-z]*$", body), body[-12:]
        assert body.count("<") == body.count(">"), body[-12:]
        assert text.startswith(body)


# -- answers to a person -------------------------------------------------------------------
def test_reply_bodies_are_fitted_to_what_slack_accepts():
    from bot.lib.blocks import reply
    from bot.sandbox.server import response_body_error

    # `/crm handoffs` could answer with a 3,600-character section through respond
    body = reply("t" * 41_000, [section("x" * 3600)] * 60)
    assert response_body_error(body) is None
