"""manifest.yml is a valid Slack app manifest and declares what the bot answers to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "contracts" / "slack-manifest.schema.1.0.0.json"
# sha256 of the file in ../shared/contracts when it was vendored (2026-11)
SCHEMA_SHA256 = "f2adf9f9800230e2fe44bab0762796492871edaab817e9160fdcdf0eb4642e58"
REQUEST_URL = "https://crm-bot.example.com/slack/events"
SUBCOMMANDS = [
    "help",
    "find",
    "show",
    "handoff",
    "approval",
    "handoffs",
    "approvals",
    "dept",
    "note",
    "pipeline",
]


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_validates_against_slacks_schema(manifest):
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
    errors = sorted(validator_class(schema).iter_errors(manifest), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    assert manifest["_metadata"]["major_version"] == 1


def test_vendored_schema_is_slacks_unchanged():
    """The schema is Slack's own (slackapi/manifest-schema, major version 1), copied from the
    shared contracts; its digest is pinned so an edit to the copy shows here. The test reads
    only files in this repository (it used to compare with ../shared and skipped without it)."""
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256
    assert "MIT" in (SCHEMA.parent / "slack-manifest.schema.LICENSE").read_text()


def test_slash_command_and_shortcut(manifest):
    features = manifest["features"]
    (command,) = features["slash_commands"]
    assert command["command"] == "/crm"
    assert command["url"] == REQUEST_URL
    for sub in SUBCOMMANDS:
        assert sub in command["usage_hint"].replace("|", " ").split()
    shortcuts = {(s["type"], s["callback_id"]): s["name"] for s in features["shortcuts"]}
    assert shortcuts == {
        ("message", "handoff_from_message"): "Hand off customer",
        ("message", "add_to_customer_record"): "Add to customer record",
    }
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is True


def test_settings_point_at_one_endpoint(manifest):
    settings = manifest["settings"]
    assert settings["interactivity"] == {"is_enabled": True, "request_url": REQUEST_URL}
    events = settings["event_subscriptions"]
    assert events["request_url"] == REQUEST_URL
    assert set(events["bot_events"]) == {"app_home_opened", "app_mention"}
    assert settings["socket_mode_enabled"] is False
    assert settings["token_rotation_enabled"] is False


# Each Web API method the code calls and the bot scopes Slack's documentation asks of it
# (docs.slack.dev/reference/methods/<method>, "Scopes: Bot token"). A method the scan below
# finds that is not here fails the test: look its scopes up and add it.
METHOD_SCOPES: dict[str, set[str]] = {
    "auth.test": set(),
    "apps.connections.open": set(),  # app-level token (connections:write), not the bot's
    # chat:write.public: posts in public channels the bot is not in (a card shared to the
    # channel it was asked in)
    "chat.postMessage": {"chat:write", "chat:write.public"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.getPermalink": set(),
    "conversations.open": {"im:write"},
    # the bot reads back its own posts in public and private department channels and its DMs
    "conversations.history": {"channels:history", "groups:history", "im:history"},
    "conversations.replies": {"channels:history", "groups:history", "im:history"},
    "conversations.info": {"channels:read", "groups:read"},  # public and private channels
    "conversations.join": {"channels:join"},  # the department channels, joined at start
    "usergroups.users.list": {"usergroups:read"},
    "users.info": {"users:read"},
    "views.open": set(),
    "views.update": set(),
    "views.publish": set(),
    "files.getUploadURLExternal": {"files:write"},  # the digests' charts (files_upload_v2)
    "files.completeUploadExternal": {"files:write"},
}
# Scopes that come with a manifest feature rather than a method.
FEATURE_SCOPES = {
    "slash_commands": {"commands"},  # and the message shortcut
    "app_mention": {"app_mentions:read"},
    "app_home_opened": set(),
}
CODE = [ROOT / "bot", ROOT / "handlers"]
NOT_THE_BOT = ROOT / "bot" / "sandbox"  # Slack's side


def web_api_methods_called() -> set[str]:
    """Every Slack method the bot's code calls: `<client>.<slack_sdk method>(` and
    `api_call("<method>"` in bot/ and handlers/ (not the sandbox), by slack_sdk's own
    name-to-method mapping (each AsyncWebClient method calls `api_call("<method>", ...)`)."""
    import inspect
    import re

    from slack_sdk.web.async_client import AsyncWebClient

    called: set[str] = set()
    for folder in CODE:
        for path in folder.rglob("*.py"):
            if NOT_THE_BOT in path.parents:
                continue
            text = path.read_text()
            called.update(re.findall(r"api_call\(\s*[\"']([a-z]+\.[a-zA-Z.]+)[\"']", text))
            for name in set(re.findall(r"\.([a-z]+_[A-Za-z0-9_]+)\b", text)):  # files_upload_v2
                fn = getattr(AsyncWebClient, name, None)
                if fn is None or not callable(fn):
                    continue
                source = inspect.getsource(fn)
                called.update(re.findall(r"api_call\(\s*\"([^\"]+)\"", source))
                # one level down: files_upload_v2 calls files_getUploadURLExternal, ...
                for inner in set(re.findall(r"self\.([a-z]+_[A-Za-z_]+)\(", source)):
                    fn = getattr(AsyncWebClient, inner, None)
                    if fn is not None and callable(fn):
                        inner_source = inspect.getsource(fn)
                        called.update(re.findall(r"api_call\(\s*\"([^\"]+)\"", inner_source))
    return called


def test_the_scan_finds_the_methods_the_bot_is_known_to_call():
    called = web_api_methods_called()
    assert {"chat.postMessage", "conversations.history", "views.publish", "users.info"} <= called


def test_scopes_are_exactly_what_the_code_uses(manifest):
    called = web_api_methods_called()
    unknown = sorted(called - METHOD_SCOPES.keys())
    assert unknown == [], f"look up the bot scopes of {unknown} and add them to METHOD_SCOPES"
    needed = set().union(*(METHOD_SCOPES[m] for m in called))
    needed |= FEATURE_SCOPES["slash_commands"] if manifest["features"]["slash_commands"] else set()
    for event in manifest["settings"]["event_subscriptions"]["bot_events"]:
        needed |= FEATURE_SCOPES[event]
    granted = manifest["oauth_config"]["scopes"]["bot"]
    assert len(granted) == len(set(granted))
    assert sorted(granted) == sorted(needed)
    assert "user" not in manifest["oauth_config"]["scopes"]


def test_the_dm_tab_takes_no_input_as_nothing_answers_it(manifest):
    app_home = manifest["features"]["app_home"]
    assert app_home["messages_tab_enabled"] is True  # the bot's DMs are shown
    assert app_home["messages_tab_read_only_enabled"] is True
    assert "message.im" not in manifest["settings"]["event_subscriptions"]["bot_events"]
