"""The access model as plain functions: who reads customer data, which card fields, what lists
show, and who a refusal names. No Slack, no database."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.lib.config import CARD_FIELDS, ConfigError, parse_config
from handlers.access import (
    ALL_FIELDS,
    Reader,
    Scope,
    decide,
    list_scope,
    mentions,
    timeline_field,
    visible_fields,
    who_to_ask,
)

CONFIG = parse_config(
    """
[access]
fields = ["email", "phone", "notes", "deals", "tickets", "activity", "handoffs", "approvals"]

[departments.sales]
name = "Sales"
channel = "C0SALES01"
members = ["U0ALICE01", "U0BOB0001"]
leads = ["U0ALICE01"]

[departments.marketing]
name = "Marketing"
channel = "C0MARKET1"
members = ["U0CAROL01", "U0MIKE001"]
leads = ["U0CAROL01"]
fields = ["email", "notes", "deals", "activity"]

[departments.finance]
name = "Finance"
channel = "C0FINANCE"
members = ["U0FRANK01", "U0GRACE01"]
leads = ["U0GRACE01"]
fields = ["email", "phone", "annual_value", "invoices", "approvals"]
"""
)


@dataclass(frozen=True)
class D:
    key: str
    name: str
    leads: frozenset[str]


DEPTS = {k: D(k, d.name, frozenset(d.leads)) for k, d in CONFIG.departments.items()}
EVERY_LEAD = "<@U0ALICE01>, <@U0CAROL01>, <@U0GRACE01>"
SALES_DEFAULT = {"email", "phone", "notes", "deals", "tickets", "activity", "handoffs", "approvals"}


@pytest.mark.parametrize(
    "reader, allowed, code, fields",
    [
        (Reader("U0BOB0001", frozenset({"sales"})), True, "member", SALES_DEFAULT),
        (
            Reader("U0MIKE001", frozenset({"marketing"})),
            True,
            "member",
            {"email", "notes", "deals", "activity"},  # marketing: no phone numbers
        ),
        (
            Reader("U0FRANK01", frozenset({"finance"})),
            True,
            "member",
            {"email", "phone", "annual_value", "invoices", "approvals"},
        ),
        (  # in two departments: what either grants
            Reader("U0TWO0001", frozenset({"marketing", "finance"})),
            True,
            "member",
            {"email", "notes", "deals", "activity", "phone", "annual_value", "invoices"}
            | {"approvals"},
        ),
        (
            Reader("U0CAROL01", frozenset({"marketing"}), frozenset({"marketing"})),
            True,
            "lead",
            ALL_FIELDS,
        ),
        (Reader("U0NOBODY1"), False, "no_department", set()),
        (Reader("U0GUEST01", frozenset({"sales"}), guest=True), False, "guest", set()),
        (Reader("U0OTHER01", frozenset({"sales"}), external=True), False, "external", set()),
        (  # a guest who is also a lead in the config: still a guest
            Reader("U0GUEST01", frozenset({"sales"}), frozenset({"sales"}), guest=True),
            False,
            "guest",
            set(),
        ),
    ],
    ids=[
        "member",
        "marketing",
        "finance",
        "two-departments",
        "lead",
        "no-department",
        "guest",
        "external",
        "guest-listed-as-lead",
    ],
)
def test_decide(reader, allowed, code, fields):
    decision = decide(reader, CONFIG, DEPTS)
    assert (decision.allowed, decision.code, set(decision.fields)) == (allowed, code, fields)
    assert bool(decision) is allowed
    if allowed:
        assert decision.message is None
    else:
        assert "ask <@" in decision.message


def test_refusals_say_who_to_ask():
    nobody = decide(Reader("U0NOBODY1"), CONFIG, DEPTS)
    assert nobody.message.endswith(f"ask {EVERY_LEAD}.")
    guest = decide(Reader("U0GUEST01", frozenset({"sales"}), guest=True), CONFIG, DEPTS)
    assert "guest accounts" in guest.message and guest.message.endswith("ask <@U0ALICE01>.")
    outsider = decide(Reader("U0OTHER01", external=True), CONFIG, DEPTS)
    assert "this organisation" in outsider.message and EVERY_LEAD in outsider.message


def test_defaults_keep_todays_card_for_members():
    config = parse_config('[departments.sales]\nname = "S"\nchannel = "C0SALES01"\n')
    assert visible_fields(Reader("U0BOB0001", frozenset({"sales"})), config) == ALL_FIELDS
    assert config.access.show_alert_per_hour == 50
    assert set(CARD_FIELDS) == ALL_FIELDS


def test_an_unknown_field_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as err:
        parse_config('[departments.sales]\nname = "S"\nchannel = "C0SALES01"\nfields = ["ssn"]\n')
    assert "line 4" in str(err.value) and "departments.sales.fields" in str(err.value)
    with pytest.raises(ConfigError, match=r"access\.show_alert_per_hour"):
        parse_config("[access]\nshow_alert_per_hour = 0\n")


BOB, CAROL = (
    Reader("U0BOB0001", frozenset({"sales"})),
    Reader("U0CAROL01", frozenset({"marketing"})),
)


@pytest.mark.parametrize(
    "reader, asked, scope",
    [
        (BOB, None, Scope(to=frozenset({"sales"}), sent_from=frozenset({"sales"}))),
        (BOB, "sales", Scope(to=frozenset({"sales"}))),
        # another department's list: only what one's own departments sent it
        (CAROL, "finance", Scope(to=frozenset({"finance"}), within=frozenset({"marketing"}))),
    ],
)
def test_list_scope(reader, asked, scope):
    assert list_scope(reader, asked) == scope


@pytest.mark.parametrize(
    "kind, field",
    [
        ("deal.stage_changed", "deals"),
        ("lead.qualified", "deals"),
        ("ticket.escalated", "tickets"),
        ("invoice.overdue", "invoices"),
        ("payment.received", "invoices"),
        ("customer.upserted", "activity"),
        ("note.added", "activity"),
    ],
)
def test_timeline_entries_by_field(kind, field):
    assert timeline_field(kind) == field


def test_mentions_only_from_slack_user_ids():
    assert mentions(["U0ALICE01", "<!channel>", "U0ALICE01>|x", "W0ENTERP1", ""]) == (
        "<@U0ALICE01>, <@W0ENTERP1>"
    )
    assert who_to_ask({}, ()) == "your Slack admin"
    assert who_to_ask(DEPTS, ["finance"]) == "<@U0GRACE01>"
