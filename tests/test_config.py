"""CRM_CONFIG and settings: good files parse; bad ones give one line naming the place."""

import pytest

from bot.lib.config import ConfigError, parse_config
from tests.fixtures.bot import TEST_CONFIG
from tests.fixtures.cli import run_cli


def test_the_test_config_parses():
    config = parse_config(TEST_CONFIG)
    assert config.departments["finance"].approval_limit == 10000
    assert config.departments["sales"].leads == ("U0ALICE01",)
    assert config.handoffs.claim_within_minutes == 60
    assert config.approving_department("refund") == "finance"


GOOD_ALERT = """
[departments.finance]
name = "Finance"
channel = "C0FINANCE"

[[alerts]]
on = "deal.stage_changed"
when = { stage = "closed_won" }
notify = ["finance"]
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[departments.sales\nname='x'", "CRM_CONFIG: "),  # TOML syntax error
        (
            '[departments.sales]\nname = "Sales"\nchannel = "sales"\n',
            "line 3: departments.sales.channel: 'sales' is not a Slack channel id",
        ),
        (
            '[departments.sales]\nname = "Sales"\n\nchannel = "C0SALES01"\nmembers = ["alice"]\n',
            "line 5: departments.sales.members",
        ),
        (
            '[departments.sales]\nchannel = "C0SALES01"\n',
            "line 1: departments.sales.name: Field required",
        ),
        (
            '[departments.sales]\nname = "S"\nchannel = "C0SALES01"\ncolour = "red"\n',
            "line 4: departments.sales.colour: Extra inputs",
        ),
        (
            GOOD_ALERT.replace('notify = ["finance"]', 'notify = ["legal"]'),
            "line 9: alerts[0].notify: unknown department 'legal'",
        ),
        (
            f'[departments.sales]\nchannel = "C0SALES01"\nname = "{"S" * 76}"\n',
            "line 3: departments.sales.name: is 76 characters: Slack shows at most 75",
        ),
        (
            '[departments.sales]\nname = "  "\nchannel = "C0SALES01"\n',
            "line 2: departments.sales.name: is blank",
        ),
        ("[handoffs]\nclaim_within_minutes = -5\n", "line 2: handoffs.claim_within_minutes"),
        ("[sync]\nretry_delays = []\n", "line 2: sync.retry_delays"),
        ("[sync]\ncoalesce_seconds = 5\nretry_delays = [1, 0]\n", "line 3: sync.retry_delays"),
        ("[sync]\nmax_attempts = 0\n", "line 2: sync.max_attempts"),
        (
            '[departments.finance]\nname = "F"\nchannel = "C0FINANCE"\napproval_limit = "lots"\n',
            "line 4: departments.finance.approval_limit",
        ),
    ],
)
def test_bad_config_names_the_line(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["serve"], {}, "missing setting: SLACK_BOT_TOKEN"),
        (["migrate"], {}, "CRM_MASTER_KEYS"),
        (
            ["migrate"],
            {"CRM_MASTER_KEYS": "k1:notbase64!"},
            "CRM_MASTER_KEYS entry 1 (k1) is not base64",
        ),
        (["serve"], {"PORT": "eighty"}, "bad setting PORT"),
        (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
        (["import"], {}, "the following arguments are required: file"),
        (["audit", "export", "--since", "yesterday"], {}, "not an ISO date or time"),
        (
            ["migrate"],
            {"CRM_MASTER_KEYS": "k1:" + "A" * 43 + "=", "DATABASE_URL": "mysql://x"},
            "DATABASE_URL",
        ),
        (
            ["serve"],
            {
                "SLACK_BOT_TOKEN": "x",
                "SLACK_SIGNING_SECRET": "y",
                "CRM_MASTER_KEYS": "k1:" + "A" * 43 + "=",
                "CRM_CONFIG": "/nonexistent.toml",
            },
            "CRM_CONFIG: cannot read /nonexistent.toml",
        ),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(args, env, expected, tmp_path):
    result = run_cli(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_config_file_exits_2(tmp_path):
    (tmp_path / "crm.toml").write_text('[departments.sales]\nname = "Sales"\nchannel = "nope"\n')
    env = {
        "SLACK_BOT_TOKEN": "x",
        "SLACK_SIGNING_SECRET": "y",
        "CRM_MASTER_KEYS": "k1:" + "A" * 43 + "=",
        "CRM_CONFIG": str(tmp_path / "crm.toml"),
    }
    result = run_cli("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "crm.toml, line 3: departments.sales.channel" in result.stderr.strip()


def test_every_command_has_help(tmp_path):
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["demo", "--help"],
        ["import", "--help"],
        ["keys", "rotate", "--help"],
        ["audit", "verify", "--help"],
        ["dlq", "replay", "--help"],
        ["alerts", "retry", "--help"],
    ):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0 and "usage: crm-bot" in result.stdout, args


def test_the_longest_department_name_config_takes_is_one_slack_shows():
    """The limit is Slack's own: the handoff modal's menu option built from the longest name
    the config accepts passes slack_sdk's Block Kit validation; one character more fails both."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Option

    from bot.lib.blocks import select_input

    def option_block(name: str) -> Option:
        block = select_input("to", "Hand off to", "to", [("sales", name)])
        (option,) = block["element"]["options"]
        return Option(value=option["value"], text=option["text"]["text"])

    longest = "S" * 75
    parse_config(f'[departments.sales]\nname = "{longest}"\nchannel = "C0SALES01"\n')
    option_block(longest).validate_json()
    with pytest.raises(ConfigError):
        parse_config(f'[departments.sales]\nname = "{longest}S"\nchannel = "C0SALES01"\n')
    with pytest.raises(SlackObjectFormationError):
        option_block(longest + "S").validate_json()
