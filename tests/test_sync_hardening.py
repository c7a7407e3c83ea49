"""Sync events an attacker or a broken producer sends: deeply nested bodies and values the
schema admits but storage cannot hold are dead letters with their reasons, on the first
attempt, and never hold up the valid events behind them (bot/lib/bounded_json,
storage/customer_fields.check_storable)."""

from __future__ import annotations

import json
import re

import pytest

from bot.broker import dlq_list
from storage.models import Customer
from tests import test_sync
from tests.fixtures.cli import run_cli
from tests.poll import eventually
from tests.test_sync import count, ev, processed

sync_bot = test_sync.sync_bot  # the fixture


def nested(i: int) -> bytes:
    """An object holding 5,000 nested arrays or objects (json.loads raised RecursionError)."""
    if i % 2:
        return (
            b'{"spec": "crm.sync/1", "id": "deep-%d", "x": ' % i + b"[" * 5000 + b"]" * 5000 + b"}"
        )
    return b'{"id": "deep-%d", "a": ' % i + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"


@pytest.mark.slow
async def test_deep_messages_are_dead_lettered_and_the_valid_ones_behind_them_applied(
    sync_bot, amqp_url
):
    """300 deeply nested messages (more than the prefetch of 256, which they held unacked
    for good), then 100 valid events: the 300 are dead letters with their reason, the 100 are
    applied, and `crm-bot dlq list` lists all 300 (it crashed on such a letter)."""
    bot = await sync_bot()
    await bot.publish(*(nested(i) for i in range(300)))
    await bot.publish(*(ev("customer.upserted", f"C-{i}", tier="smb") for i in range(100)))
    await processed(bot, 100, within=60)
    assert await count(bot, Customer) == 100

    async def all_dead():
        letters = await dlq_list(amqp_url, limit=400)
        return letters if len(letters) >= 300 else None

    letters = await eventually(all_dead, within=30)
    assert len(letters) == 300
    assert {d.reason for d in letters} == {"body refused: nested deeper than 32 levels"}
    assert all(d.attempts == 1 for d in letters)

    listed = run_cli("dlq", "list", "--limit", "400", env={"AMQP_URL": amqp_url})
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[-1] == "300 dead letters"
    assert len([x for x in lines if "nested deeper than 32 levels" in x]) == 300
    assert "Traceback" not in listed.stderr
    assert bot.service.consumer.connected


# Each input the schema admits but the database cannot store, and the field the reason names.
NOT_STORABLE = [
    pytest.param({"name": "Ada\x00Lovelace"}, "customer.name: contains a NUL", id="nul-name"),
    pytest.param({"notes": "a\x00"}, "customer.notes: contains a NUL", id="nul-notes"),
    pytest.param({"company": "\ud800"}, "customer.company: not valid Unicode", id="surrogate"),
    pytest.param({"annual_value": 1e13}, "customer.annual_value: above", id="value-1e13"),
    pytest.param({"annual_value": 1e300}, "customer.annual_value: above", id="value-1e300"),
    pytest.param({"tier": None, "owner_slack_user": "U\x00"}, "owner_slack_user", id="nul-owner"),
]


@pytest.mark.parametrize("fields, reason", NOT_STORABLE)
async def test_an_event_storage_cannot_hold_is_dead_lettered_on_the_first_attempt(
    sync_bot, amqp_url, fields, reason
):
    """On SQLite and PostgreSQL alike (PostgreSQL refused these in the transaction, five
    times, with a database error as the reason): refused before the transaction, attempt 1,
    the reason names the field and not the value; the next event is applied."""
    bot = await sync_bot()
    bad = ev("customer.upserted", "C-BAD", **fields)
    # A lone surrogate cannot be encoded by json.dumps(ensure_ascii=False): send it escaped.
    await bot.publish(json.dumps(bad).encode())
    await bot.publish(ev("customer.upserted", "C-GOOD", name="Grace"))
    await processed(bot, 1)

    letters = await eventually(lambda: dlq_list(amqp_url), within=10)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.attempts == 1
    assert letter.reason.startswith("not storable: ") and reason in letter.reason
    assert not re.search(r"Lovelace|\\x00|1e\+?13|IntegrityError|DataError", letter.reason)
    assert await count(bot, Customer) == 1
