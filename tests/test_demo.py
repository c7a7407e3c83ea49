"""`crm-bot demo`: the sandbox page, its live stream, its JSON endpoints acting as a demo user
(signed requests to the real bot), the seeded customers, and the sample sync events."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from bot.demo import Demo, DemoOptions, run_demo
from bot.demo_data import SampleEvents, demo_config, demo_customers, roles, topics
from bot.lib.config import Settings
from bot.service import Tuning
from storage.customer_fields import validate_customer
from tests.fixtures.bot import ALICE, FINANCE, GRACE, SALES
from tests.fixtures.slack import eventually, filled_views

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "bot/contracts/sync-event.schema.json").read_text())
FAST = Tuning(per_channel_interval=0, outbox_poll=0.1)
ADA = "ada.lovelace@analytical-engines.example"


async def start_demo(tmp_path: Path, **options) -> Demo:
    options.setdefault("tuning", FAST)
    demo = Demo(DemoOptions(port=0, data=tmp_path, events=False, **options))
    await demo.start()
    return demo


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    d = await start_demo(tmp_path)
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- demo data (no Slack, no database) -----------------------------------------------------
def test_customers_are_plausible_valid_and_the_same_every_run():
    rows = demo_customers(50)
    assert rows == demo_customers(50)
    assert len({r["email"] for r in rows}) == len({r["external_id"] for r in rows}) == 50
    assert all(validate_customer(r) for r in rows)
    assert all(r["email"].endswith(".example") for r in rows)  # RFC 2606: nobody real
    assert rows[0]["name"] == "Ada Lovelace" and rows[0]["email"] == ADA


def test_sample_events_follow_the_contract_and_cover_every_kind():
    events = SampleEvents(demo_customers(50))
    seen, stages = set(), set()
    for _ in range(300):
        event = events.next()
        jsonschema.validate(event, SCHEMA)
        seen.add(event["type"])
        if event["type"] == "deal.stage_changed":
            stages.add(event["data"]["stage"])
    assert seen == {
        "deal.stage_changed",
        "ticket.opened",
        "ticket.escalated",
        "invoice.overdue",
        "payment.received",
        "lead.qualified",
    }
    assert {"qualification", "proposal", "closed_won"} <= stages


@pytest.mark.parametrize(
    ("user", "role"),
    [
        ("U0ALICE01", "Sales lead"),
        ("U0BOB0001", "Sales"),
        ("U0CAROL01", "Marketing lead"),
        ("U0ERIN001", "Customer Service"),
        ("U0FRANK01", "Finance"),
        ("U0GRACE01", "Finance lead, approves above 10,000"),
    ],
)
def test_the_user_switcher_shows_departments_and_leads(user, role):
    assert roles(demo_config())[user] == role


def test_channel_topics_name_the_people():
    assert topics(demo_config())[FINANCE] == "Finance: Frank Fisher, Grace Green (lead)"


# -- the page and its endpoints ------------------------------------------------------------
async def test_page_and_static_files_load(demo: Demo, http: aiohttp.ClientSession):
    async with http.get(demo.url) as r:
        assert r.status == 200 and "text/html" in r.content_type
        assert '<script src="/static/app.js">' in await r.text()
    for name, kind in (("app.js", "javascript"), ("blockkit.js", "javascript"), ("app.css", "css")):
        async with http.get(demo.url + "static/" + name) as r:
            assert r.status == 200 and kind in r.content_type, name


async def read_events(response: aiohttp.ClientResponse, until) -> dict:
    """Read server-sent events until one satisfies `until`; returns it."""
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                change = json.loads(line[6:])
                if until(change):
                    return change


async def test_find_through_the_page_reaches_the_bot_signed_and_streams_back(
    demo: Demo, http: aiohttp.ClientSession
):
    async with http.get(demo.url + "events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        async with http.post(
            demo.url + "ui/message",
            json={"user": ALICE, "channel": SALES, "text": "/crm find Ada Lovelace"},
        ) as r:
            answer = await r.json()
        assert r.status == 200 and answer["status"] == 200  # the bot accepted the signature
        change = await read_events(
            stream,
            lambda c: (
                c["type"] == "ephemeral"
                and c["ephemeral"]["user"] == ALICE
                and "Ada Lovelace" in json.dumps(c["ephemeral"]["blocks"])
            ),
        )
    assert change["ephemeral"]["channel"] == SALES
    assert demo.sandbox.store.calls()  # the bot answered through the sandbox's Web API
    async with http.get(demo.url + "ui/state", params={"user": ALICE}) as r:
        state = await r.json()
    assert any("Ada Lovelace" in json.dumps(e["blocks"]) for e in state["ephemerals"])
    assert state["users"][GRACE]["role"] == "Finance lead, approves above 10,000"
    async with http.get(demo.url + "ui/state", params={"user": GRACE}) as r:
        assert (await r.json())["ephemerals"] == []  # only visible to Alice


async def test_buttons_and_modals_go_through_the_page(demo: Demo, http: aiohttp.ClientSession):
    store = demo.sandbox.store
    await http.post(
        demo.url + "ui/message", json={"user": ALICE, "channel": SALES, "text": f"/crm show {ADA}"}
    )
    card = await eventually(lambda: [e for e in store.ephemerals(ALICE) if e.blocks])
    button = next(
        el
        for block in card[-1].blocks
        for el in block.get("elements", [])
        if el.get("action_id") == "customer_handoff"
    )
    async with http.post(
        demo.url + "ui/action",
        json={
            "user": ALICE,
            "channel": SALES,
            "message_ts": card[-1].ts,
            "action_id": "customer_handoff",
            "value": button["value"],
        },
    ) as r:
        assert (await r.json())["status"] == 200
    view = (await eventually(lambda: filled_views(store, ALICE)))[-1]
    values = {
        "department": {
            "department": {"type": "static_select", "selected_option": {"value": "finance"}}
        },
        "note": {"note": {"type": "plain_text_input", "value": "Wants annual invoicing."}},
    }
    async with http.post(
        demo.url + "ui/submit", json={"user": ALICE, "view_id": view["id"], "values": values}
    ) as r:
        assert (await r.json())["status"] == 200
    await eventually(lambda: not store.views(ALICE))
    posted = await eventually(lambda: store.messages(FINANCE))
    assert "handoff_accept" in json.dumps(posted[-1]["blocks"])


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("ui/message", {"user": "U0NOBODY1", "channel": SALES, "text": "hi"}, "no such user"),
        ("ui/message", {"user": ALICE, "channel": "C0NOWHERE", "text": "hi"}, "no such channel"),
        ("ui/message", {"user": ALICE, "channel": SALES, "text": "  "}, "nothing to send"),
        ("ui/message", {"user": ALICE, "channel": SALES, "text": "x" * 4001}, "at most"),
        ("ui/message", [1, 2], "JSON object"),
        ("ui/action", {"user": ALICE, "channel": SALES}, "action_id is required"),
        ("ui/action", {"user": ALICE, "action_id": "a", "view_id": "V0NONE"}, "no such view"),
        ("ui/submit", {"user": ALICE, "view_id": "V0NONE"}, "no such open view"),
        ("ui/close", {"user": ALICE, "view_id": "V0NONE"}, "no such open view"),
    ],
)
async def test_bad_requests_from_the_page_get_a_clear_answer_and_change_nothing(
    demo: Demo, http: aiohttp.ClientSession, path, body, error
):
    calls = len(demo.sandbox.store.calls())
    async with http.post(demo.url + path, json=body) as r:
        assert r.status == 400
        assert error in (await r.json())["error"]
    assert len(demo.sandbox.store.calls()) == calls and demo.sandbox.store.messages(SALES) == []


async def test_other_text_is_a_plain_message_and_other_commands_are_refused(
    demo: Demo, http: aiohttp.ClientSession
):
    store = demo.sandbox.store
    calls = len(store.calls())
    await http.post(
        demo.url + "ui/message", json={"user": ALICE, "channel": SALES, "text": "hello team"}
    )
    assert store.messages(SALES)[-1]["user"] == ALICE
    await http.post(
        demo.url + "ui/message", json={"user": ALICE, "channel": SALES, "text": "/giphy cats"}
    )
    assert "is not a command here" in store.ephemerals(ALICE)[-1].text
    assert len(store.calls()) == calls  # nothing reached the bot


async def test_commands_work_in_the_dm_with_the_bot_before_it_exists(
    demo: Demo, http: aiohttp.ClientSession
):
    dm = "D" + ALICE[1:]
    assert dm not in demo.sandbox.store.channels
    async with http.post(
        demo.url + "ui/message", json={"user": ALICE, "channel": dm, "text": "/crm help"}
    ) as r:
        assert (await r.json())["status"] == 200
    seen = await eventually(lambda: demo.sandbox.store.ephemerals(ALICE, dm))
    assert "/crm find" in seen[-1].text


async def test_mentioning_the_bot_on_the_page_sends_an_app_mention(
    demo: Demo, http: aiohttp.ClientSession
):
    store = demo.sandbox.store
    async with http.post(
        demo.url + "ui/message",
        json={"user": ALICE, "channel": SALES, "text": f"@crm-bot {ADA}"},
    ) as r:
        assert (await r.json())["status"] == 200
    said = store.messages(SALES)[0]
    assert said["text"] == f"<@U0CRMBOT1> {ADA}" and said["user"] == ALICE
    shared = await eventually(
        lambda: [m for m in store.thread(SALES, said["ts"]) if m.get("bot_id")]
    )
    assert "Ada Lovelace" in json.dumps(shared[0]["blocks"])
    assert ADA not in json.dumps(shared[0]["blocks"])  # a shared card is redacted


# -- sample events and data folders --------------------------------------------------------
async def test_sample_events_become_alerts_without_rabbitmq(demo: Demo):
    assert demo.via == "direct"
    await demo.play(6)
    store = demo.sandbox.store
    channels = ("C0SALES01", "C0MARKET1", "C0SERVICE", "C0FINANCE")
    await eventually(lambda: sum(len(store.messages(c)) for c in channels) >= 2, within=10)


async def test_sample_events_travel_through_rabbitmq_when_it_answers(tmp_path, amqp_url):
    demo = await start_demo(tmp_path, amqp_url=amqp_url)
    try:
        assert demo.via == "rabbitmq"
        await demo.play(4)
        store = demo.sandbox.store
        channels = ("C0SALES01", "C0MARKET1", "C0SERVICE", "C0FINANCE")
        await eventually(lambda: sum(len(store.messages(c)) for c in channels) >= 1, within=15)
    finally:
        await demo.stop()


async def test_a_data_folder_is_reopened_with_its_key(tmp_path: Path):
    demo = await start_demo(tmp_path)
    await demo.stop()
    key = (tmp_path / "master-key").read_text()
    assert oct((tmp_path / "master-key").stat().st_mode & 0o777) == "0o600"
    demo = await start_demo(tmp_path)
    try:
        assert (tmp_path / "master-key").read_text() == key
        assert await demo.seed(50) == (0, 0)  # same customers, still readable
    finally:
        await demo.stop()
    assert (tmp_path / "crm-bot-demo.db").exists()  # --data is kept


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"busy_port": True}, "cannot listen on 127.0.0.1:"),
        ({"customers": 0}, "--customers must be between 1 and 5000"),
    ],
)
async def test_bad_demo_options_are_a_one_line_error(tmp_path, capsys, options, error):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1] if options.get("busy_port") else 0
        args = argparse.Namespace(
            port=port, data=tmp_path, no_events=True, customers=options.get("customers", 5)
        )
        assert await run_demo(Settings(_env_file=None, amqp_url=None), args) == 2
    err = capsys.readouterr().err.strip()
    assert error in err and "\n" not in err


async def test_cli_prints_the_url_ignores_slack_env_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-real-workspace",
        "SLACK_SIGNING_SECRET": "not-the-demo's",
        "SLACK_APP_TOKEN": "xapp-would-mean-socket-mode",
        "DATABASE_URL": "postgresql+asyncpg://nowhere:1/none",
        "CRM_MASTER_KEYS": "",
    }
    env.pop("AMQP_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", "--port", "0", "--no-events", "--customers", "5",
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "demo exited before printing its URL"
                found = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
                url = found and found.group(1)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                url + "ui/message", json={"user": ALICE, "channel": SALES, "text": "/crm help"}
            ) as r:
                assert (await r.json())["status"] == 200  # signed with the demo's own secret
            async with http.get(url + "events") as stream:  # a browser still watching
                proc.send_signal(signal.SIGINT)
                async with asyncio.timeout(15):
                    output = (await proc.stdout.read()).decode()
                    assert await proc.wait() == 0, output
                    await stream.content.read()  # returns once the demo ended the stream
        assert "Traceback" not in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
