"""The approval policy and amount parsing, table-driven, without Slack or a database."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from handlers.approvals import rules
from handlers.approvals.rules import Amount, AmountError, Facts

D = Decimal


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("discount", "15%", Amount(D("15"), "%")),
        ("discount", "15", Amount(D("15"), "%")),
        ("discount", "12.5%", Amount(D("12.5"), "%")),
        ("discount", "100%", Amount(D("100"), "%")),
        ("refund", "1200", Amount(D("1200"), "EUR")),
        ("refund", "1200 EUR", Amount(D("1200"), "EUR")),
        ("refund", "1,200.50 USD", Amount(D("1200.50"), "USD")),
        ("credit", "usd 99.99", Amount(D("99.99"), "USD")),
        ("credit", "0.01", Amount(D("0.01"), "EUR")),
        ("exception", "-", Amount(None, None)),
    ],
)
def test_amounts_that_parse(kind, text, expected):
    assert rules.parse_amount(kind, text) == expected


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("discount", "0%"),
        ("discount", "101%"),
        ("discount", "-5%"),
        ("discount", "abc"),
        ("discount", "15.123%"),
        ("discount", "1200 EUR"),
        ("refund", "0"),
        ("refund", "-10"),
        ("refund", "12,00"),
        ("refund", "1200 XYZ"),
        ("refund", "1200.555"),
        ("refund", "15%"),
        ("refund", "1e9"),
        ("refund", "9999999999999"),
        ("credit", ""),
        ("credit", "1200 EUR USD"),
        ("exception", "100"),
        ("exception", "15%"),
    ],
)
def test_amounts_that_do_not(kind, text):
    with pytest.raises(AmountError, match=kind):
        rules.parse_amount(kind, text)


@pytest.mark.parametrize(
    ("args", "customer", "kind", "amount", "reason"),
    [
        ("C-1 discount 15% big deal", "C-1", "discount", "15%", "big deal"),
        ("a@x.io refund 1200 EUR damaged", "a@x.io", "refund", "1,200.00 EUR", "damaged"),
        ("C-1 refund 1200 for the outage", "C-1", "refund", "1,200.00 EUR", "for the outage"),
        ("C-1 credit USD 50", "C-1", "credit", "50.00 USD", None),
        ("C-1 exception - late payment ok", "C-1", "exception", "no amount", "late payment ok"),
        ("C-1 DISCOUNT 5%", "C-1", "discount", "5%", None),
    ],
)  # fmt: skip
def test_request_arguments(args, customer, kind, amount, reason):
    parsed = rules.parse_request(args)
    assert (parsed.customer, parsed.kind, str(parsed.amount), parsed.reason) == (
        customer,
        kind,
        amount,
        reason,
    )


@pytest.mark.parametrize(
    "args", ["", "C-1", "C-1 discount", "C-1 bribe 100", "C-1 refund lots", "C-1 exception 5"]
)
def test_request_arguments_refused(args):
    with pytest.raises(AmountError):
        rules.parse_request(args)


@pytest.mark.parametrize(
    ("kind", "amount", "annual", "stake"),
    [
        ("refund", D("1200"), None, D("1200")),
        ("credit", D("20000"), D("1"), D("20000")),
        ("discount", D("15"), D("50000"), D("7500.00")),
        ("discount", D("15"), None, None),
        ("exception", None, D("50000"), None),
    ],
)
def test_money_at_stake(kind, amount, annual, stake):
    assert rules.money_at_stake(kind, amount, annual) == stake


@pytest.mark.parametrize(
    ("kind", "stake", "limit", "needs"),
    [
        ("refund", D("10000"), D("10000"), False),  # at the limit: any member
        ("refund", D("10000.01"), D("10000"), True),
        ("refund", D("999999"), None, False),  # no limit configured
        ("discount", D("7500"), D("10000"), False),
        ("discount", D("20000"), D("10000"), True),
        ("discount", None, D("10000"), True),  # unknown annual value: a lead decides
        ("exception", None, D("10000"), True),  # no amount to bound it: always a lead
        ("exception", None, None, True),
    ],
)
def test_needs_lead(kind, stake, limit, needs):
    assert rules.needs_lead(kind, stake, limit) is needs


NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)
REQUESTER, MEMBER, LEAD, OUTSIDER = "U0BOB0001", "U0FRANK01", "U0GRACE01", "U0CAROL01"


def facts(**over) -> Facts:
    values = dict(
        kind="refund",
        status="pending",
        requested_by=REQUESTER,
        expires_at=NOW + timedelta(hours=1),
        stake=D("500"),
        limit=D("10000"),
        decided_by=None,
    )
    values.update(over)
    return Facts(**values)


@pytest.mark.parametrize(
    ("case", "user", "is_member", "is_lead", "expected"),
    [
        (facts(), MEMBER, True, False, None),
        (facts(), LEAD, True, True, None),
        (facts(), OUTSIDER, False, False, "not_member"),
        (facts(requested_by=MEMBER), MEMBER, True, False, "own"),
        (facts(requested_by=LEAD, stake=D("20000")), LEAD, True, True, "own"),
        (facts(stake=D("20000")), MEMBER, True, False, "above_limit"),
        (facts(stake=D("20000")), LEAD, True, True, None),
        (facts(kind="discount", stake=None), MEMBER, True, False, "above_limit"),
        (facts(kind="exception", stake=None), MEMBER, True, False, "exception"),
        (facts(kind="exception", stake=None, limit=None), MEMBER, True, False, "exception"),
        (facts(kind="exception", stake=None), LEAD, True, True, None),
        (facts(expires_at=NOW), MEMBER, True, False, "expired"),
        (facts(expires_at=NOW - timedelta(seconds=1)), LEAD, True, True, "expired"),
        (facts(status="approved", decided_by=LEAD), MEMBER, True, False, "decided"),
        (facts(status="rejected", decided_by=LEAD), LEAD, True, True, "decided"),
        (facts(status="expired"), MEMBER, True, False, "decided"),
        (facts(), LEAD, False, True, None),  # a lead listed without being a member
    ],
)
def test_who_may_decide(case, user, is_member, is_lead, expected):
    refusal = rules.may_decide(
        case, user, is_member=is_member, is_lead=is_lead, now=NOW, department="Finance"
    )
    assert (refusal.code if refusal else None) == expected
    if refusal is not None:
        assert refusal.message and "\n" not in refusal.message


def test_refusal_names_who_decided():
    refusal = rules.may_decide(
        facts(status="approved", decided_by=LEAD),
        MEMBER,
        is_member=True,
        is_lead=False,
        now=NOW,
        department="Finance",
    )
    assert refusal is not None and f"<@{LEAD}>" in refusal.message


def test_expiry_time():
    assert rules.expires_at(NOW, 72) == NOW + timedelta(hours=72)
    assert rules.expires_at(NOW, 0.5) == NOW + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [(D("15"), "%", "15%"), (D("1200.5"), "EUR", "1,200.50 EUR"), (None, None, "no amount")],
)
def test_format_amount(value, unit, text):
    assert rules.format_amount(value, unit) == text
