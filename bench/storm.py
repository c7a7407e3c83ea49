"""Storm bench: urgent escalations at a steady rate with 1 and 3 replicas, Slack enforcing one
message per second per channel.

    .venv/bin/python bench/storm.py                 # 2 escalations/s, 120 s, 1 and 3 replicas
    .venv/bin/python bench/storm.py --seconds 60 --replicas 3

Each run: `crm-bot serve` x N on a throwaway PostgreSQL database and RabbitMQ vhost (as in
tests/faults/), the sandbox in this process as Slack with its per-channel limit on (1 message/s
after a burst of 2, answering 429 with Retry-After above it), customers loaded with
`crm-bot import`. Then `--rate` urgent `ticket.escalated` per second, each about another
customer (a helpdesk outage), each alerting #sales and #service, for `--seconds`; then the bot
drains. The sandbox's change feed is watched live, so an alert's delay is measured to the moment
it became visible in the channel: posted, or added to a roll-up by an update in place.

Measured per run: answers 429 (all, and after the first), alerts posted twice (the books of
tests/faults), alert delay publish -> visible p50/p99 (target: p99 under the coalescing window
+ 2 s), Slack messages per channel per minute (chat.postMessage; target <= 60), alerts that went
into roll-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import pct, table  # noqa: E402
from bench.load import seed, throwaway_vhost  # noqa: E402
from bot.lib.config import parse_config  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.faults.books import check_books, settled  # noqa: E402
from tests.faults.harness import FAULT_CONFIG, Stack  # noqa: E402
from tests.faults.stream import EventStream, tokens_in  # noqa: E402
from tests.fixtures.bot import SALES, SERVICE  # noqa: E402

CHANNELS = (SALES, SERVICE)


async def watch(stack: Stack, seen: dict[tuple[str, str], float], stop: asyncio.Event) -> None:
    """Record when each (event, channel) first became visible (a post or an update)."""
    queue = stack.sandbox.subscribe()
    while not stop.is_set():
        try:
            change = await asyncio.wait_for(queue.get(), 0.5)
        except TimeoutError:
            continue
        if change.get("type") not in ("message", "message_changed"):
            continue
        channel = change.get("channel")
        if channel not in CHANNELS:
            continue
        now = time.time()
        for token in tokens_in(change.get("message") or {}):
            seen.setdefault((token, channel), now)


async def escalations(stream: EventStream, refs: list[str], rate: float, seconds: float) -> None:
    start = time.monotonic()
    i = 0
    while (due := start + i / rate) < start + seconds:
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)  # the pace of the load
        event = stream.event("ticket.escalated", refs[i % len(refs)])
        event["data"]["priority"] = "urgent"
        await stream.publish(event)
        i += 1


async def run_one(replicas: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="crm-storm-") as tmp:
        async with throwaway_vhost() as amqp_url, Stack.open(amqp_url, Path(tmp)) as stack:
            people = await asyncio.to_thread(seed, stack, int(args.rate * args.seconds) + 10)
            refs = [c["external_id"] for c in people]
            stream = EventStream(amqp_url)
            await stream.connect()
            for i in range(replicas):
                await stack.start_bot(name=f"replica{i + 1}")
            stack.sandbox.rate_limit(per_channel_per_second=1.0, burst=2)
            seen: dict[tuple[str, str], float] = {}
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(stack, seen, stop))
            await escalations(stream, refs, args.rate, args.seconds)
            published = time.time()
            db = Database(stack.db_url)
            try:
                await settled(db, stream, amqp_url, within=args.drain)
            finally:
                await db.close()
            drained = time.time() - published
            stop.set()
            await watcher
            books = await check_books(stack.db_url, amqp_url, stream, stack.sandbox)
            posts = [
                c
                for c in stack.sandbox.store.calls("chat.postMessage")
                if c.body.get("channel") in CHANNELS
            ]
            limited = [c for c in posts if c.status == 429]
            ok = [c for c in posts if c.status == 200]
            delays = [
                seen[(p.id, ch)] - p.at
                for p in stream.alerting
                for ch in p.channels
                if (p.id, ch) in seen
            ]
            per_minute = max(
                busiest_minute([c.time for c in ok if c.body.get("channel") == ch])
                for ch in CHANNELS
            )
            rolled = sum(
                1
                for ch in CHANNELS
                for m in stack.sandbox.store.messages(ch)
                if " alert" in m.get("text", "") and " since " in m.get("text", "")
                for _ in tokens_in(m)
            )
            await stream.close()
            return {
                "replicas": replicas,
                "escalations": len(stream.alerting),
                "visible": len(delays),
                "429s": len(limited),
                "429s after the first": max(0, len(limited) - 1),
                "doubles": books.double_messages,
                "delay p50 s": pct(delays, 50),
                "delay p99 s": pct(delays, 99),
                "most messages/channel in a minute": per_minute,
                "alerts in roll-ups": rolled,
                "drain s": drained,
            }


def busiest_minute(times: list[float]) -> int:
    """The most posts within any 60 s."""
    times = sorted(times)
    most, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 60:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def render(results: list[dict], args) -> str:
    window = parse_config(FAULT_CONFIG).sync.coalesce_seconds
    headers = list(results[0])
    note = (
        f"{args.rate:g} urgent escalations/s for {args.seconds:g} s, each about another customer, "
        f"to #sales and #service; sandbox at 1 message/s/channel (burst 2); coalescing window "
        f"{window:g} s (target p99 < {window + 2:g} s)"
    )
    return note + "\n\n" + table(headers, [[r[h] for h in headers] for r in results])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 3])
    parser.add_argument("--drain", type=float, default=180)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [asyncio.run(run_one(n, args)) for n in args.replicas]
    print(render(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
