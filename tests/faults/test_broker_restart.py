"""RabbitMQ's app stopped and started (`rabbitmqctl stop_app` / `start_app`) while events and
commands flow: the bot's robust connection comes back, consuming resumes, nothing is lost or
posted twice, and /readyz says so before and after.

The broker is shared with everyone's tests on this machine, so the stop is short, and after the
start the test checks the quorum queues' dead-letter supervisor (RabbitMQ 3.10.8 can lose it
when queues are deleted right after a restart) and restarts it when it is gone. Nothing here
deletes a queue: the fixtures purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import pytest

from storage.db import Database
from tests.fixtures.amqp import rabbitmqctl
from tests.poll import eventually

from .books import check_books, settle_window, settled
from .harness import hold_for
from .stream import bad_events
from .users import Traffic

STOPPED = 3.0


def dlx_supervisor_running() -> bool:
    out = rabbitmqctl("eval", "supervisor:which_children(rabbit_sup).")
    line = next((x for x in out.splitlines() if "rabbit_fifo_dlx_sup," in x), "")
    return "<" in line  # a pid, not `undefined`


def ensure_dlx_supervisor() -> None:
    if not dlx_supervisor_running():
        rabbitmqctl("eval", "supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup).")


async def restart_broker_app(stopped_for: float) -> None:
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        await hold_for(stopped_for)  # the fault is the time it is away
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")
        await asyncio.to_thread(ensure_dlx_supervisor)


@pytest.mark.slow
async def test_broker_app_restart_loses_nothing(stack, stream):
    bot = await stack.start_bot()
    customers = await stream.seed(6)
    db = Database(stack.db_url)
    try:
        await settled(db, stream, stack.amqp_url, within=30)
        bad = bad_events(stream, customers[0])
        traffic = Traffic.start(
            stream, [stack.sim_for(bot)], stack.sandbox, customers, rate=10, people=3, extra=bad
        )
        users = traffic.users
        await eventually(lambda: len(stream.published) >= 40, 30)
        before = len(stream.published)
        await restart_broker_app(STOPPED)
        await bot.wait_ready(30)  # the consumer is connected again
        await eventually(lambda: len(stream.published) >= before + 40, 40)
        await traffic.end()
        await settled(db, stream, stack.amqp_url, within=settle_window(stream, bad))
    finally:
        await db.close()
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            await asyncio.to_thread(ensure_dlx_supervisor)
    books = await check_books(stack.db_url, stack.amqp_url, stream, stack.sandbox)
    print(books.summary(), "publish retries:", stream.publish_retries)
    assert bot.running and bot.starts == 1
    assert stream.publish_retries > 0, "the broker was not away while events flowed"
    assert users.tally.error_count == 0, users.tally.errors
    books.assert_clean(dead_allowed={e["id"] for e in bad})
    # Of the three bad events, the erasure of a customer never seen applies (it leaves a
    # tombstone); the event about that erased customer and the one failing the schema never do.
    assert len(books.dead) == 2
    assert len(books.applied) == books.published - 2
