"""manifest.yml is a valid Slack app manifest and declares what the bot answers to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "contracts" / "slack-manifest.schema.1.0.0.json"
SHARED_SCHEMA = ROOT.parent / "shared" / "contracts" / "slack-manifest.schema.1.0.0.json"
REQUEST_URL = "https://crm-bot.example.com/slack/events"
SUBCOMMANDS = ["help", "find", "show", "handoff", "approval", "handoffs", "approvals", "dept"]


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_validates_against_slacks_schema(manifest):
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
    errors = sorted(validator_class(schema).iter_errors(manifest), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    assert manifest["_metadata"]["major_version"] == 1


def test_vendored_schema_is_the_shared_contract():
    if not SHARED_SCHEMA.exists():
        pytest.skip(f"{SHARED_SCHEMA} is not there to compare with")
    assert json.loads(SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


def test_slash_command_and_shortcut(manifest):
    features = manifest["features"]
    (command,) = features["slash_commands"]
    assert command["command"] == "/crm"
    assert command["url"] == REQUEST_URL
    for sub in SUBCOMMANDS:
        assert sub in command["usage_hint"].replace("|", " ").split()
    (shortcut,) = features["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", "handoff_from_message")
    assert shortcut["name"] == "Hand off customer"
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


def test_scopes_are_the_smallest_set_used(manifest):
    # Each scope and what needs it: commands (/crm), chat:write (posts, updates, ephemerals),
    # chat:write.public (department channels without joining), channels:join
    # (conversations.join: the bot joins them at start to read back its posts),
    # app_mentions:read (app_mention),
    # users:read (users.info), usergroups:read (usergroups.users.list), im:write
    # (conversations.open), channels:history, groups:history and im:history
    # (conversations.history and .replies, to find the bot's own earlier post when a retry does
    # not know whether it went out: in channels, private channels and its direct messages).
    # app_home_opened needs no scope.
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(
        [
            "commands",
            "chat:write",
            "chat:write.public",
            "channels:join",
            "app_mentions:read",
            "users:read",
            "usergroups:read",
            "im:write",
            "channels:history",
            "groups:history",
            "im:history",
        ]
    )
    assert "user" not in manifest["oauth_config"]["scopes"]
