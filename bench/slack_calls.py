"""What the bot asks of Slack per user action, and what Slack refuses: the part of
bench/load.py that reads the sandbox's call log.

- `big_config(n)`: the test departments with customer service and finance grown to `n` people
  each (Dave, Erin / Frank, Grace and made-up colleagues), and those people in the sandbox: what
  a department's size does to the calls of an action (App Home republished for every member,
  for instance).
- `calls_per_action`: with no sync events flowing, 10 handoffs open, each action (`/crm find`,
  `show`, `handoff`, Accept, `/crm approval`, Approve) done `reps` times, one at a time; the
  Web API calls it caused are those the sandbox logs from the action until Slack has heard
  nothing for `QUIET` s (the lazy listener's work included), waiting at most `SETTLE` s. The
  median count per action, and its calls by method; `settled` is False when Slack never went
  quiet (fan-outs of earlier actions still running: the count then includes some of theirs).
- `refused`: the calls Slack answered 429, by method (target 0).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

from bot.sandbox import Sandbox, SlackClientSim
from tests.faults.users import buttons
from tests.fixtures.bot import ALICE, DAVE, FINANCE, FRANK, GRACE, SALES, SERVICE, TEST_CONFIG

QUIET = 2.0  # s without a call to Slack: the action's work is done (0.5 s cut fan-outs short)
SETTLE = 60.0  # s to wait for that quiet at most
ACTIONS = ("find", "show", "handoff", "accept", "approval", "approve")
OPEN_HANDOFFS = 10


def colleagues(prefix: str, n: int) -> list[str]:
    return [f"U0{prefix}{i:04d}" for i in range(n)]


def big_config(size: int) -> tuple[str, list[str]]:
    """TEST_CONFIG with service and finance of `size` people each, and the people to add to
    the sandbox (`meet`)."""
    service = [DAVE, "U0ERIN001", *colleagues("SVC", size - 2)]
    finance = [FRANK, GRACE, *colleagues("FIN", size - 2)]

    def members(users: list[str]) -> str:
        return "members = [" + ", ".join(f'"{u}"' for u in users) + "]"

    text = TEST_CONFIG.replace('members = ["U0DAVE001", "U0ERIN001"]', members(service))
    text = text.replace('members = ["U0FRANK01", "U0GRACE01"]', members(finance))
    assert text != TEST_CONFIG, "TEST_CONFIG's members changed: update big_config"
    return text + "\n[sync]\ncoalesce_seconds = 10\nretry_delays = [1, 5]\n", service + finance


def meet(sandbox: Sandbox, users: list[str]) -> None:
    for user in users:
        sandbox.store.users.setdefault(user, {"name": user.lower(), "real_name": f"Person {user}"})


async def quiet(sandbox: Sandbox, within: float = SETTLE) -> bool:
    """Until Slack has had no Web API call for QUIET s (polled, with a deadline); False when
    the deadline came first."""
    seen, since = len(sandbox.store.calls()), time.monotonic()
    end = since + within
    while time.monotonic() < end:
        await asyncio.sleep(0.05)
        now = len(sandbox.store.calls())
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET:
            return True
    return False


def newest(sandbox: Sandbox, channel: str, action_id: str) -> tuple[str, str] | None:
    found = buttons(sandbox, channel, action_id)
    return found[-1] if found else None


async def calls_per_action(
    sandbox: Sandbox, sim: SlackClientSim, refs: list[str], names: list[str], reps: int = 3
) -> dict[str, dict]:
    """{action: {"calls": median count, "methods": Counter of the median run}}."""
    for ref in refs[:OPEN_HANDOFFS]:
        await sim.command(ALICE, SALES, "/crm", f"handoff {ref} service please call them back")
    await quiet(sandbox)
    runs: dict[str, list[Counter]] = {a: [] for a in ACTIONS}
    settled: dict[str, bool] = dict.fromkeys(ACTIONS, True)
    for rep in range(reps):
        ref = refs[OPEN_HANDOFFS + rep]
        for action in ACTIONS:
            before = len(sandbox.store.calls())
            if action == "find":
                await sim.command(ALICE, SALES, "/crm", f"find {names[rep % len(names)]}")
            elif action == "show":
                await sim.command(ALICE, SALES, "/crm", f"show {ref}")
            elif action == "handoff":
                await sim.command(ALICE, SALES, "/crm", f"handoff {ref} service call them")
            elif action == "approval":
                await sim.command(ALICE, SALES, "/crm", f"approval {ref} refund 500 late")
            else:
                channel, action_id, user = {
                    "accept": (SERVICE, "handoff_accept", DAVE),
                    "approve": (FINANCE, "approval_approve", GRACE),
                }[action]
                button = newest(sandbox, channel, action_id)
                if button is None:
                    continue
                await sim.click(user, channel, button[0], action_id, button[1])
            settled[action] &= await quiet(sandbox)
            runs[action].append(Counter(c.method for c in sandbox.store.calls()[before:]))
    result = {}
    for action, counters in runs.items():
        if not counters:
            continue
        ordered = sorted(counters, key=lambda c: sum(c.values()))
        middle = ordered[len(ordered) // 2]
        result[action] = {
            "calls": statistics.median(sum(c.values()) for c in counters),
            "methods": dict(middle.most_common()),
            "settled": settled[action],
        }
    return result


def refused(sandbox: Sandbox) -> dict[str, int]:
    return dict(Counter(c.method for c in sandbox.store.calls() if c.status == 429))


def methods_text(methods: dict[str, int], top: int = 3) -> str:
    if not methods:
        return "answered in the ack or through response_url"
    shown = list(methods.items())[:top]
    more = sum(methods.values()) - sum(n for _, n in shown)
    text = ", ".join(f"{m} {n}" for m, n in shown)
    return text + (f", other {more}" if more else "")
