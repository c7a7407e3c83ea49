"""Fixtures of the fault suite: the real `crm-bot serve` process around a stack of its own.

Each test gets a fresh PostgreSQL database (migrated with `crm-bot migrate`), the session's
RabbitMQ vhost with the crm queues purged (never deleted: see tests/fixtures/amqp.py), the
sandbox as Slack in the test process, and an event stream that has declared the topology.
A missing service skips the test with the reason (fails it under CI=true).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from tests.fixtures.services import PG_URL, need_service

from .harness import FAULT_CONFIG, Stack
from .stream import EventStream


@pytest.fixture
async def stack(amqp_url: str, tmp_path) -> AsyncIterator[Stack]:
    url = make_url(PG_URL)
    need_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    async with Stack.open(amqp_url, tmp_path, FAULT_CONFIG) as s:
        yield s


@pytest.fixture
async def stream(stack: Stack) -> AsyncIterator[EventStream]:
    events = EventStream(stack.amqp_url)
    await events.connect()
    yield events
    await events.close()
