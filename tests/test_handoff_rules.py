"""The handoff rules, table-driven: no Slack, no database."""

from datetime import UTC, datetime, timedelta

import pytest

from bot.lib.interaction import parse_handoff_id
from handlers.handoffs import rules as r

REQ, FRANK, GRACE = "U0ALICE01", "U0FRANK01", "U0GRACE01"


def facts(status, assignee=None, closed_by=None):
    return r.Facts(status, REQ, assignee, closed_by)


@pytest.mark.parametrize(
    "status, assignee, action, actor, receiver, expect",
    [
        # the happy paths
        (r.REQUESTED, None, r.ACCEPT, FRANK, True, (r.ACCEPTED, FRANK)),
        (r.ACCEPTED, FRANK, r.COMPLETE, FRANK, True, (r.COMPLETED, FRANK)),
        (r.ACCEPTED, FRANK, r.COMPLETE, GRACE, True, (r.COMPLETED, FRANK)),  # assignee stays
        (r.REQUESTED, None, r.DECLINE, GRACE, True, (r.DECLINED, None)),
        (r.REQUESTED, None, r.CANCEL, REQ, False, (r.CANCELLED, None)),
        # only the receiving department
        (r.REQUESTED, None, r.ACCEPT, REQ, False, "forbidden"),
        (r.REQUESTED, None, r.DECLINE, REQ, False, "forbidden"),
        (r.ACCEPTED, FRANK, r.COMPLETE, REQ, False, "forbidden"),
        # only the requester cancels
        (r.REQUESTED, None, r.CANCEL, FRANK, True, "forbidden"),
        # twice, or too late, or too early
        (r.ACCEPTED, FRANK, r.ACCEPT, GRACE, True, "already"),
        (r.ACCEPTED, FRANK, r.ACCEPT, FRANK, True, "already"),
        (r.ACCEPTED, FRANK, r.DECLINE, GRACE, True, "already"),
        (r.ACCEPTED, FRANK, r.CANCEL, REQ, False, "closed"),
        (r.REQUESTED, None, r.COMPLETE, FRANK, True, "early"),
        (r.COMPLETED, FRANK, r.COMPLETE, FRANK, True, "closed"),
        (r.COMPLETED, FRANK, r.ACCEPT, GRACE, True, "closed"),
        (r.DECLINED, None, r.ACCEPT, FRANK, True, "closed"),
        (r.DECLINED, None, r.DECLINE, FRANK, True, "closed"),
        (r.CANCELLED, None, r.ACCEPT, FRANK, True, "closed"),
        (r.CANCELLED, None, r.CANCEL, REQ, False, "closed"),
        (r.REQUESTED, None, "frobnicate", FRANK, True, "forbidden"),
    ],
)
def test_decide(status, assignee, action, actor, receiver, expect):
    out = r.decide(facts(status, assignee, GRACE), action, actor, receiver=receiver, dept="Finance")
    if isinstance(expect, tuple):
        assert isinstance(out, r.Step)
        assert (out.status, out.assignee) == expect
        assert out.closes == (expect[0] != r.ACCEPTED)
    else:
        assert isinstance(out, r.Refusal) and out.kind == expect, out


def test_refusals_say_who():
    out = r.decide(facts(r.ACCEPTED, FRANK), r.ACCEPT, GRACE, receiver=True)
    assert out.text == f"Already accepted by <@{FRANK}>."
    out = r.decide(facts(r.ACCEPTED, FRANK), r.ACCEPT, FRANK, receiver=True)
    assert out.text == "Already accepted by you."
    out = r.decide(facts(r.REQUESTED), r.ACCEPT, REQ, receiver=False, dept="Finance")
    assert out.text == "Only members of Finance can accept this handoff."


def test_every_step_has_a_contract_event():
    assert r.EVENTS[r.CANCELLED] == "handoff.declined"
    assert {r.EVENTS[s] for s in r.STATUSES} == {
        "handoff.requested",
        "handoff.accepted",
        "handoff.declined",
        "handoff.completed",
    }


T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "status, deadline, sent, now, expect",
    [
        (r.REQUESTED, T0, 0, T0 - timedelta(seconds=1), None),  # not yet
        (r.REQUESTED, T0, 0, T0, r.REMIND),
        (r.REQUESTED, T0, 1, T0 - timedelta(minutes=1), None),  # second period not over
        (r.REQUESTED, T0, 1, T0 + timedelta(hours=5), r.ESCALATE),
        (r.REQUESTED, T0, 2, T0 + timedelta(days=5), None),  # never more than two
        (r.ACCEPTED, T0, 0, T0 + timedelta(days=1), None),  # claimed: nothing
        (r.DECLINED, T0, 0, T0 + timedelta(days=1), None),
        (r.CANCELLED, T0, 1, T0 + timedelta(days=1), None),
    ],
)
def test_claim_step(status, deadline, sent, now, expect):
    assert r.claim_step(status, deadline, sent, now) == expect


def test_claim_deadline():
    assert r.claim_deadline(T0, 60) == T0 + timedelta(hours=1)
    assert r.claim_deadline(T0, 0.5) == T0 + timedelta(seconds=30)


@pytest.mark.parametrize(
    "args, expect",
    [
        ("ada@example.com finance", ("ada@example.com", "finance", None)),
        ("C-1 finance  please   call her", ("C-1", "finance", "please   call her")),
        ("C-1 finance   ", ("C-1", "finance", None)),
        ("C-1", None),
        ("", None),
    ],
)
def test_parse_request(args, expect):
    assert r.parse_request(args) == expect


def test_checks():
    assert r.check_route("sales", "sales")
    assert r.check_route("sales", "finance") is None
    assert r.check_route(None, "finance") is None
    assert r.check_note(None) is None
    assert r.check_note("x" * r.MAX_NOTE) is None
    assert "too long" in r.check_note("x" * (r.MAX_NOTE + 1))


@pytest.mark.parametrize(
    "value, ok",
    [
        ("6f1c2a9e-54a7-4d37-9c55-1e7c2d3b9a10", True),
        ("not-a-uuid", False),
        ("", False),
        (None, False),
        (42, False),
        ("6f1c2a9e" * 20, False),
    ],
)
def test_parse_id(value, ok):
    assert (parse_handoff_id(value) is not None) == ok


@pytest.mark.parametrize(
    "text, first",
    [
        ("Could finance look at ada@example.com please", "ada@example.com"),
        ("Ticket for ACME-1042, angry about invoice", "ACME-1042"),
        ("both C-77 and bob@x.org", "bob@x.org"),  # emails first
        ("nothing here", "nothing"),
        ("", None),
    ],
)
def test_customer_refs(text, first):
    refs = r.customer_refs(text)
    assert (refs[0] if refs else None) == first
    assert len(refs) == len(set(refs)) <= r.MAX_REFS


def test_list_filter():
    assert r.parse_list_filter("") == r.LIST_OPEN
    assert r.parse_list_filter(" MINE ") == r.LIST_MINE
    assert r.parse_list_filter("Finance") == "finance"
