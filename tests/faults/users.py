"""Simulated people using the bot while events flow: commands and button clicks through the
sandbox's signed Slack client, with each acknowledgement's latency recorded.

Sales people find and show customers, hand them off to customer service and ask finance for
refunds; service people accept and complete the handoffs they see in their channel; finance
people approve the requests in theirs. Several people may click the same button at once: that
is the double click the bot must turn into one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from bot.sandbox import Sandbox, SlackClientSim
from tests.fixtures.bot import ALICE, BOB, DAVE, ERIN, FINANCE, FRANK, GRACE, SALES, SERVICE

SORRY = "Sorry, that did not work"
# (operation, weight)
OPERATIONS = (
    ("find", 30),
    ("show", 20),
    ("handoff", 12),
    ("approval", 10),
    ("accept", 10),
    ("complete", 8),
    ("approve", 10),
)


@dataclass
class Tally:
    acks: list[tuple[float, str, float]] = field(default_factory=list)  # (at, op, seconds)
    ok: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # op -> non-200 answers
    unreachable: Counter = field(default_factory=Counter)  # op -> connection refused/reset
    handoffs_asked: int = 0
    approvals_asked: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def buttons(sandbox: Sandbox, channel: str, action_id: str) -> list[tuple[str, str]]:
    """(message ts, value) of every `action_id` button in the channel's messages."""
    found = []
    for message in sandbox.store.all_messages(channel):
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    found.append((message["ts"], str(element.get("value"))))
    return found


def sorry_answers(sandbox: Sandbox) -> int:
    """Ephemeral answers saying something failed inside the bot."""
    users = (ALICE, BOB, DAVE, ERIN, FRANK, GRACE)
    return sum(1 for u in users for e in sandbox.store.ephemerals(u) if SORRY in (e.text or ""))


class Users:
    def __init__(
        self,
        sims: Sequence[SlackClientSim],
        sandbox: Sandbox,
        customers: Sequence[str],
        names: Sequence[str] = ("Fault", "Customer", "Faultline"),
        seed: int = 5,
        mix: Sequence[tuple[str, int]] = OPERATIONS,
    ) -> None:
        self.mix = tuple(mix)
        self.sims = list(sims)
        self.sandbox = sandbox
        self.customers = list(customers)
        self.names = list(names)
        self.rnd = random.Random(seed)
        self.tally = Tally()

    async def _timed(self, op: str, call) -> None:
        started = time.monotonic()
        try:
            reply = await call
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.tally.unreachable[op] += 1
            return
        took = time.monotonic() - started
        self.tally.acks.append((time.time(), op, took))
        if reply.status == 200:
            self.tally.ok[op] += 1
        else:
            self.tally.errors[op] += 1

    async def act(self, op: str, sim: SlackClientSim) -> None:
        rnd, sandbox = self.rnd, self.sandbox
        customer = rnd.choice(self.customers)
        if op == "find":
            user = rnd.choice((ALICE, BOB))
            await self._timed(
                op, sim.command(user, SALES, "/crm", f"find {rnd.choice(self.names)}")
            )
        elif op == "show":
            await self._timed(
                op, sim.command(rnd.choice((ALICE, BOB)), SALES, "/crm", f"show {customer}")
            )
        elif op == "handoff":
            self.tally.handoffs_asked += 1
            await self._timed(
                op,
                sim.command(
                    rnd.choice((ALICE, BOB)),
                    SALES,
                    "/crm",
                    f"handoff {customer} service please call them back",
                ),
            )
        elif op == "approval":
            self.tally.approvals_asked += 1
            await self._timed(
                op,
                sim.command(
                    rnd.choice((ALICE, BOB)),
                    SALES,
                    "/crm",
                    f"approval {customer} refund 500 late delivery",
                ),
            )
        elif op in ("accept", "complete"):
            found = buttons(sandbox, SERVICE, f"handoff_{op}")
            if found:
                ts, value = rnd.choice(found)
                await self._timed(
                    op, sim.click(rnd.choice((DAVE, ERIN)), SERVICE, ts, f"handoff_{op}", value)
                )
        elif op == "approve":
            found = buttons(sandbox, FINANCE, "approval_approve")
            if found:
                ts, value = rnd.choice(found)
                await self._timed(
                    op,
                    sim.click(rnd.choice((FRANK, GRACE)), FINANCE, ts, "approval_approve", value),
                )

    async def person(self, index: int, stop: asyncio.Event, pause: float) -> None:
        sim = self.sims[index % len(self.sims)]
        ops, weights = zip(*self.mix, strict=True)
        while not stop.is_set():
            await self.act(self.rnd.choices(ops, weights)[0], sim)
            # think time: this paces the load generator, it does not wait for the bot
            jitter = pause * (0.5 + self.rnd.random())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), jitter)

    async def run(self, people: int, stop: asyncio.Event, pause: float = 0.5) -> Tally:
        await asyncio.gather(*(self.person(i, stop, pause) for i in range(people)))
        return self.tally


@dataclass
class Traffic:
    """Events flowing and people acting at once, until `end()`."""

    users: Users
    stop: asyncio.Event
    flow: asyncio.Task
    people: asyncio.Task

    @classmethod
    def start(cls, stream, sims, sandbox, customers, *, rate=10, people=3, extra=None):
        users = Users(sims, sandbox, customers)
        stop = asyncio.Event()
        options = {"extra": extra} if extra else {}
        flow = asyncio.create_task(stream.flow(customers, rate, stop, alert_share=0.3, **options))
        acting = asyncio.create_task(users.run(people, stop, pause=0.3))
        return cls(users, stop, flow, acting)

    async def end(self) -> None:
        self.stop.set()
        await asyncio.gather(self.flow, self.people)
