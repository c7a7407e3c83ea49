"""The sync rules as plain functions: routing, placement, coalescing, validation, rendering."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.lib.blocks.alerts import alert_message, thread_header
from bot.lib.config import AlertRule, parse_config
from handlers.sync import alerts
from handlers.sync import apply as sync
from handlers.sync.alerts import THREAD, TOP_LEVEL, ChannelRoute, Pending, Route
from handlers.sync.apply import InvalidEvent, parse_time, validate_event
from storage.customers import CustomerRecord
from tests.fixtures.slack import block_texts

DEPTS = ("sales", "marketing", "service", "finance")
CHANNELS = {"sales": "C0SALES01", "service": "C0SERVICE", "finance": "C0FINANCE"}


def ev(type_: str, data: dict | None = None, **customer) -> dict:
    return {
        "spec": "crm.sync/1",
        "id": "e-1",
        "type": type_,
        "occurred_at": "2026-03-01T10:00:00Z",
        "source": "test",
        "customer": {"external_id": "C-1", **customer},
        "data": data or {},
    }


def routes(event: dict, rules=(), over: float = 10000) -> list[Route]:
    return alerts.route(event, alerts.rules_for(rules), DEPTS, over)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev("deal.stage_changed", {"stage": "closed_won"}), ["finance", "service"]),
        (ev("deal.stage_changed", {"stage": "proposal"}), []),
        (ev("ticket.escalated", {"priority": "normal"}), ["sales", "service"]),
        (ev("ticket.opened", {"priority": "urgent"}), []),
        (ev("invoice.overdue", {"amount": 50}), ["sales", "finance"]),
        (ev("lead.qualified", {"score": 80}), ["sales"]),
        (ev("payment.received", {"amount": 5}), []),
        (ev("customer.upserted"), []),
        (ev("customer.deleted"), []),
    ],
)
def test_default_rules(event, expected):
    assert [r.department for r in routes(event)] == expected
    assert all(r.placement == THREAD for r in routes(event))


@pytest.mark.parametrize(
    ("event", "broadcast"),
    [
        (ev("ticket.escalated", {"priority": "urgent"}), True),
        (ev("ticket.escalated", {"priority": "high"}), False),
        (ev("invoice.overdue", {"amount": 10000.01}), True),
        (ev("invoice.overdue", {"amount": 10000}), False),  # over, not at
        (ev("lead.qualified", {"score": 100}), False),
    ],
)
def test_default_broadcast(event, broadcast):
    assert {r.broadcast for r in routes(event)} == {broadcast}


def test_threshold_comes_from_the_setting():
    event = ev("invoice.overdue", {"amount": 600})
    assert {r.broadcast for r in routes(event, over=500)} == {True}
    assert {r.broadcast for r in routes(event, over=1000)} == {False}


@pytest.mark.parametrize(
    ("rule", "event", "matched"),
    [
        (AlertRule(on="deal.stage_changed", notify=("sales",)), ev("deal.stage_changed"), True),
        (AlertRule(on="ticket.*", notify=("sales",)), ev("ticket.resolved"), True),
        (AlertRule(on="ticket.*", notify=("sales",)), ev("invoice.overdue"), False),
        (
            AlertRule(on="lead.qualified", when={"score": 90}, notify=("sales",)),
            ev("lead.qualified", {"score": 90.0}),
            True,
        ),
        (
            AlertRule(on="lead.qualified", when={"score": 90}, notify=("sales",)),
            ev("lead.qualified", {"score": 89}),
            False,
        ),
        (
            AlertRule(on="*", when={"tier": "strategic"}, notify=("sales",)),
            ev("payment.received", tier="strategic"),
            True,
        ),
        (
            AlertRule(on="*", when={"customer.tier": "strategic"}, notify=("sales",)),
            ev("payment.received", tier="smb"),
            False,
        ),
        (
            AlertRule(
                on="*", when={"data.stage": ["closed_won", "closed_lost"]}, notify=("sales",)
            ),
            ev("deal.stage_changed", {"stage": "closed_lost"}),
            True,
        ),
        (AlertRule(on="*", when={"missing": None}, notify=("sales",)), ev("lead.qualified"), False),
    ],
)
def test_rule_matching(rule, event, matched):
    assert alerts.matches(rule, event) is matched


def test_configured_rules_replace_the_defaults_and_merge_per_department():
    rules = (
        AlertRule(on="ticket.opened", notify=("service", "nowhere"), broadcast=True),
        AlertRule(on="ticket.*", notify=("service", "sales"), placement="top_level"),
    )
    got = routes(ev("ticket.opened", {"priority": "low"}), rules)
    assert got == [Route("service", TOP_LEVEL, True), Route("sales", TOP_LEVEL, False)]
    # the defaults are gone once rules are configured
    assert routes(ev("lead.qualified"), rules) == []


def test_rule_broadcast_false_overrides_the_urgent_default():
    rules = (AlertRule(on="ticket.escalated", notify=("service",), broadcast=False),)
    assert routes(ev("ticket.escalated", {"priority": "urgent"}), rules)[0].broadcast is False


def test_config_file_rules_parse():
    config = parse_config(
        """
[departments.sales]
name = "Sales"
channel = "C0SALES01"
[[alerts]]
on = "payment.received"
notify = ["sales"]
placement = "top_level"
[sync]
coalesce_seconds = 2
"""
    )
    assert alerts.rules_for(config.alerts)[0].placement == TOP_LEVEL
    assert config.sync.coalesce_seconds == 2


def test_one_alert_per_channel():
    got = alerts.by_channel(
        [Route("sales"), Route("marketing"), Route("finance", TOP_LEVEL), Route("service")],
        {**CHANNELS, "finance": "C0SALES01"},  # finance shares the sales channel here
    )
    assert got == [ChannelRoute("C0SALES01", TOP_LEVEL, False), ChannelRoute("C0SERVICE")]


T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "now", "window", "due"),
    [
        (None, T0, 5, True),
        (T0, T0 + timedelta(seconds=4.9), 5, False),
        (T0, T0 + timedelta(seconds=5), 5, True),
        (T0, T0, 0, True),
    ],
)
def test_coalescing_window(last, now, window, due):
    assert alerts.is_due(last, now, window) is due


def test_batches_post_every_alert_once():
    pending = [
        Pending(("e1", "C"), "one"),
        Pending(("e2", "C"), "two", TOP_LEVEL),
        Pending(("e3", "C"), "three", THREAD, True),
    ]
    got = alerts.batches(pending)
    assert [(b.placement, b.broadcast, b.keys) for b in got] == [
        (THREAD, True, [("e1", "C"), ("e3", "C")]),
        (TOP_LEVEL, False, [("e2", "C")]),
    ]
    assert alerts.batches([]) == []


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (
            ev(
                "deal.stage_changed",
                {
                    "deal_id": "D1",
                    "name": "Big",
                    "stage": "closed_won",
                    "amount": 12000,
                    "currency": "EUR",
                },
            ),
            "Deal Big [D1] moved to closed won, 12,000.00 EUR",
        ),
        (
            ev("ticket.escalated", {"ticket_id": "T1", "subject": "Down", "priority": "urgent"}),
            "Ticket [T1] escalated (urgent priority): Down",
        ),
        (
            ev(
                "invoice.overdue",
                {"invoice_id": "I1", "amount": 10, "currency": "EUR", "days_overdue": 1},
            ),
            "Invoice [I1] overdue by 1 day: 10.00 EUR",
        ),
        (
            ev("lead.qualified", {"campaign": "spring", "score": 80}),
            "Lead qualified: campaign spring, score 80",
        ),
        (ev("customer.upserted", name="Ada", tier="smb"), "Record updated: name, tier"),
    ],
)
def test_summary(event, text):
    assert alerts.summary(event) == text


def record(**kw) -> CustomerRecord:
    return CustomerRecord(id=uuid.uuid4(), external_id="C-1", **kw)


def test_alert_messages():
    text, blocks = alert_message(["Deal <x> won"])
    # the notification text is escaped like the blocks: Slack parses both
    assert "Deal &lt;x&gt; won" in block_texts(blocks) and text == "Deal &lt;x&gt; won"
    text, blocks = alert_message([f"update {i}" for i in range(200)])
    assert text == "200 updates"
    body = block_texts(blocks)
    assert all(f"update {i}\n" in body + "\n" for i in range(200))
    _, blocks = alert_message(["x" * 400] * 1000)  # cut to Slack's limits, the rest counted
    assert len(blocks) <= 50 and "more in the customer's timeline" in block_texts(blocks)
    _, blocks = alert_message(["Paid"], customer=record(name="Ada Lovelace"))
    assert "Ada Lovelace" in block_texts(blocks)
    _, blocks = thread_header(record(name="Ada", email="ada@example.com", tier="smb"))
    assert "Ada" in block_texts(blocks) and "ada@example.com" not in block_texts(blocks)


GOOD = ev("lead.qualified", {"campaign": "c", "score": 1})


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({**GOOD, "spec": "v2"}, "schema: spec: must be one of crm.sync/1"),
        (
            {k: v for k, v in GOOD.items() if k != "id"},
            "schema: event: 'id' is a required property",
        ),
        ({**GOOD, "occurred_at": "yesterday"}, "schema: occurred_at: not a valid date-time"),
        (
            {**GOOD, "occurred_at": "2026-03-01T10:00:00"},
            "schema: occurred_at: not a valid date-time",
        ),
        ({**GOOD, "data": {"campaign": "c"}}, "schema: data: 'score' is a required property"),
        (
            {**GOOD, "customer": {"external_id": "C", "email": "a" * 300}},
            "schema: customer.email: fails maxLength 254",
        ),
        ({**GOOD, "type": "deal.exploded"}, "schema: type: must be one of"),
    ],
)
def test_invalid_events_name_the_reason_not_the_value(event, reason):
    # Bodies that are not JSON objects are the consumer's to refuse (tests/test_broker.py).
    with pytest.raises(InvalidEvent) as caught:
        validate_event(event)
    assert str(caught.value).startswith(reason)
    assert "aaaa" not in str(caught.value)


def test_valid_event_and_times():
    assert validate_event(GOOD) is GOOD
    assert parse_time("2026-03-01T10:00:00.5+02:00") == datetime(
        2026, 3, 1, 8, 0, 0, 500000, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        parse_time("2026-03-01")


# Events of every inbound type, then bent: a field dropped, or replaced by any JSON value.
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_EVENTS = [
    GOOD,
    ev("customer.upserted", email="a@b.example", name="Ada", annual_value=5),
    ev("customer.deleted"),
    ev("deal.stage_changed", {"deal_id": "D", "stage": "closed_won", "amount": 5}),
    ev("ticket.escalated", {"ticket_id": "T", "subject": "s", "priority": "urgent"}),
    ev("invoice.overdue", {"invoice_id": "I", "amount": 5, "currency": "EUR", "days_overdue": 3}),
    ev("payment.received", {"invoice_id": "I", "amount": 5, "currency": "EUR"}),
]


@st.composite
def _bent_events(draw):
    event = json.loads(json.dumps(draw(st.sampled_from(_EVENTS))))
    for _ in range(draw(st.integers(0, 2))):
        target = event
        if "data" in event and isinstance(event["data"], dict) and draw(st.booleans()):
            target = event["data"]
        keys = [*sorted(target), "extra"]
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(
                _VALUES | st.sampled_from(["2026-03-01T10:00:00Z", "2026-13-01T10:00:00Z", ""])
            )
    return event


@settings(max_examples=400, deadline=None)
@given(_bent_events())
def test_the_fast_validator_accepts_exactly_what_the_reference_one_does(event):
    """Every event is checked by the compiled validator; only the reference one names reasons.
    They must agree, or a malformed event would be applied (or a good one dead-lettered)."""
    assert sync.validator().is_valid(event) == _fast_accepts(event)


def _fast_accepts(event) -> bool:
    try:
        sync.fast_validator()(event)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True
