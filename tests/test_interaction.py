"""The interaction toolkit (bot/lib/interaction.py): parsing once, one id parser per kind, one
error mapping for ack and lazy failures, and `tell` with its DM fallback, against the sandbox
and a real bolt app."""

from __future__ import annotations

import logging
import uuid

import pytest

from bot.lib.errors import Forbidden, NotFound, UserError
from bot.lib.interaction import (
    SORRY,
    ModalMeta,
    Place,
    ack_only,
    answer_for,
    channel_of_click,
    install,
    parse,
    parse_approval_id,
    parse_click,
    parse_command,
    parse_customer_id,
    parse_handoff_id,
    parse_submission,
    tell,
)
from tests.fixtures.bot import ALICE, BOB, GENERAL, SALES
from tests.poll import eventually

CLICK = {
    "type": "block_actions",
    "user": {"id": ALICE, "team_id": "T0GUEST01"},
    "team": {"id": "T0CRM0001", "enterprise_id": "E0ORG0001"},
    "is_enterprise_install": False,
    "container": {"type": "message", "channel_id": SALES, "message_ts": "1.000100"},
    "channel": {"id": SALES},
    "message": {"ts": "1.000100", "thread_ts": "1.000001"},
    "actions": [{"action_id": "handoff_accept", "value": "v-1"}],
    "trigger_id": "t-1",
    "response_url": "https://example.invalid/r",
}


def test_a_click_parses_once_with_the_signed_fields_an_access_check_needs():
    click = parse_click(CLICK)
    assert (click.user, click.action_id, click.value) == (ALICE, "handoff_accept", "v-1")
    assert (click.channel, click.message_ts, click.thread_ts) == (SALES, "1.000100", "1.000001")
    assert click.person.team_id == "T0GUEST01"  # the person's own team, not the workspace's
    assert (click.person.workspace_id, click.person.enterprise_id) == ("T0CRM0001", "E0ORG0001")
    assert click.place == Place(SALES, "1.000001", "https://example.invalid/r")
    assert parse(CLICK) == click


def test_the_channel_of_a_click_is_its_containers():
    both = {**CLICK, "channel": {"id": GENERAL}}
    assert channel_of_click(both) == SALES
    assert channel_of_click({"channel": {"id": GENERAL}}) == GENERAL
    assert channel_of_click({"container": {"type": "view", "view_id": "V1"}}) is None


def test_a_command_keeps_its_team_and_enterprise():
    body = {
        "command": "/crm",
        "text": "show ada@example.com",
        "user_id": ALICE,
        "channel_id": SALES,
        "team_id": "T0CRM0001",
        "enterprise_id": "E0ORG0001",
        "is_enterprise_install": "true",
        "response_url": "https://example.invalid/c",
    }
    cmd = parse_command(body, "ada@example.com")
    assert (cmd.user, cmd.channel, cmd.args) == (ALICE, SALES, "ada@example.com")
    assert (cmd.person.team_id, cmd.person.enterprise_id) == ("T0CRM0001", "E0ORG0001")
    assert cmd.person.is_enterprise_install is True
    assert cmd.place.response_url == "https://example.invalid/c"


class ExampleMeta(ModalMeta):
    thing_id: uuid.UUID


def test_a_submission_reads_typed_metadata_and_refuses_a_stale_one():
    thing = uuid.uuid4()
    meta = ExampleMeta(thing_id=thing, channel_id=SALES).model_dump_json()
    body = {
        "type": "view_submission",
        "user": {"id": ALICE},
        "view": {
            "id": "V1",
            "callback_id": "example",
            "private_metadata": meta,
            "state": {"values": {"b": {"a": {"value": "  hello "}}}},
        },
    }
    sub = parse_submission(body)
    assert sub.meta(ExampleMeta) == ExampleMeta(thing_id=thing, channel_id=SALES)
    assert sub.text("b", "a") == "hello" and sub.place == Place(SALES)
    stale = parse_submission({**body, "view": {**body["view"], "private_metadata": "{}"}})
    assert stale.meta(ExampleMeta) is None and stale.place == Place()


@pytest.mark.parametrize("parse_id", [parse_customer_id, parse_handoff_id, parse_approval_id])
@pytest.mark.parametrize(
    "value, ok",
    [
        ("6f1c2a9e-54a7-4d37-9c55-1e7c2d3b9a10", True),
        (" 6f1c2a9e-54a7-4d37-9c55-1e7c2d3b9a10 ", True),
        ("not-a-uuid", False),
        ("", False),
        (None, False),
        (42, False),
        ("6f1c2a9e" * 20, False),
    ],
)
def test_ids_parse_to_a_uuid_or_none(parse_id, value, ok):
    assert (parse_id(value) is not None) == ok


def test_errors_map_to_their_message_or_one_apology_with_a_reference(caplog):
    assert answer_for(UserError("Usage: x")) == "Usage: x"
    assert answer_for(NotFound("No customer")) == "No customer"
    assert answer_for(Forbidden("Only leads")) == "Only leads"
    with caplog.at_level(logging.ERROR, logger="bot.lib.interaction"):
        text = answer_for(RuntimeError("secret detail"), "click on x")
    assert text.startswith(SORRY.split("(")[0]) and "secret detail" not in text
    ref = text.split("ref ")[1][:8]
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)


async def test_tell_falls_back_to_a_dm_when_the_place_refuses(sandbox, slack_out):
    sandbox.fail("chat.postEphemeral", error="channel_not_found")
    await tell(slack_out, ALICE, "Only members of Finance may.", Place(SALES))
    assert [m["text"] for m in sandbox.store.dms(ALICE)] == ["Only members of Finance may."]
    assert sandbox.store.ephemerals(ALICE) == []
    # a response_url that refuses: the channel, then
    gone = f"{sandbox.url}/response/no-such-token"
    await tell(slack_out, ALICE, "Second answer.", Place(SALES, response_url=gone))
    assert [e.text for e in sandbox.store.ephemerals(ALICE, SALES)] == ["Second answer."]


async def test_tell_falls_back_to_a_dm_where_an_ephemeral_cannot_go(sandbox, slack_out):
    """Slack's own refusals, not injected faults: the person not in the channel, a private
    channel the bot is not in; a DM conversation goes to the DM without an ephemeral try."""
    sandbox.store.add_channel("C0OTHER01", name="other", members=[ALICE])
    await tell(slack_out, ALICE, "here", Place("C0OTHER01"))
    assert [e.text for e in sandbox.store.ephemerals(ALICE, "C0OTHER01")] == ["here"]
    await tell(slack_out, BOB, "not here", Place("C0OTHER01"))  # Bob is not in that channel
    assert [m["text"] for m in sandbox.store.dms(BOB)] == ["not here"]
    await tell(slack_out, BOB, "gone", Place("G0GONE001"))  # a private channel, bot not in it
    assert [m["text"] for m in sandbox.store.dms(BOB)] == ["not here", "gone"]
    before = len(sandbox.store.calls())
    await tell(slack_out, BOB, "in a DM", Place("D0SOMEONE"))
    assert [m["text"] for m in sandbox.store.dms(BOB)][-1] == "in a DM"
    assert "chat.postEphemeral" not in sandbox.call_counts(before)


async def test_failures_of_lazy_and_ack_functions_are_told_to_the_person(
    sandbox, slack_out, bolt_app, slack_sim
):
    install(bolt_app, slack_out)

    async def broken(body):
        raise RuntimeError("database on fire")

    async def refused(body):
        raise Forbidden("Only members of Sales may do that.")

    async def ack_refuses(ack, body):
        raise UserError("That form is out of date.")

    async def nothing(body):
        return None

    bolt_app.action("broken")(ack=ack_only, lazy=[broken])
    bolt_app.action("refused")(ack=ack_only, lazy=[refused])
    bolt_app.action("ack_refuses")(ack=ack_refuses, lazy=[nothing])

    await slack_sim.click(ALICE, SALES, None, "broken", "x")
    sorry = await eventually(lambda: sandbox.store.ephemerals(ALICE, SALES))
    assert sorry[-1].text.startswith("Sorry, that did not work") and "(ref " in sorry[-1].text
    await slack_sim.click(ALICE, SALES, None, "refused", "x")
    await eventually(lambda: len(sandbox.store.ephemerals(ALICE, SALES)) == 2)
    assert sandbox.store.ephemerals(ALICE, SALES)[-1].text == "Only members of Sales may do that."
    await slack_sim.click(ALICE, None, None, "ack_refuses", "x")  # no channel: a DM
    dm = await eventually(lambda: sandbox.store.dms(ALICE))
    assert dm[-1]["text"] == "That form is out of date."
