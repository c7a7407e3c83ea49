"""Load test: 20 people using the bot while 200 sync events/s flow in, against the real process.

    .venv/bin/python bench/load.py                  # 60 s, 20 people, 200 events/s
    .venv/bin/python bench/load.py --seconds 15     # a short run
    .venv/bin/python bench/load.py --json bench/results/load.json

`crm-bot serve` runs as a subprocess (as in tests/faults/) on a throwaway PostgreSQL database
and RabbitMQ vhost, with the sandbox (in this process) as Slack. Customers are loaded with
`crm-bot import`. Then for `--seconds`:
- events are published to crm.events at `--rate` per second (confirmed); most are quiet
  (customer updates, payments, new tickets), `--alerts` per second are alerting ones (won deals,
  escalations, overdue invoices) on `--hot` customers. Slack allows about one message per second
  per channel, and the bot paces itself to that, so the alert rate is kept near what three
  alert channels can take; bursts for one customer are coalesced by the bot;
- `--people` simulated people type /crm find, show, handoff, approval and click accept,
  complete and approve buttons, each with ~`--pause` s between actions.
Then publishing stops and the bot drains what is queued (up to `--drain` s).

Before that, with nothing flowing, the Web API calls of each user action are counted by the
sandbox (bench/slack_calls.py), with 10 handoffs open. `--dept-size 5 --dept-size 50` runs the
whole test once per size of the customer service and finance departments and prints a table of
the Slack figures side by side: 429 answers (target 0), calls per action, ack p99. Slack's
per-channel limit on chat.postMessage (1/s, bursts of 3) is on; the sandbox's per-method rate
tiers are on too where the sandbox has them.

Measured: errors (non-200 answers, "did not work" answers, lost or dead-lettered events, double
alerts; target 0), acknowledgement latency of commands and clicks (p99 target < 300 ms), alert
delay from publish to the post in Slack (p50/p99; each event carries its publish time), the
bot's RSS every second. Writes load-alert-delay.png and load-memory.png next to this file and
prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench import charts, slack_calls  # noqa: E402
from bench.common import customers, pct, table  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.faults.books import check_books, progress, settled  # noqa: E402
from tests.faults.harness import FAULT_CONFIG, Stack, run_cli  # noqa: E402
from tests.faults.stream import EventStream, tokens_in  # noqa: E402
from tests.faults.users import Users, sorry_answers  # noqa: E402
from tests.fixtures.amqp import rabbitmqctl  # noqa: E402
from tests.fixtures.bot import FINANCE, SALES, SERVICE  # noqa: E402
from tests.fixtures.services import AMQP_URL  # noqa: E402

# What people do, by weight: mostly looking customers up; one action in ten posts to a channel
# (a handoff, an approval request, a click that updates a message and replies in its thread),
# so with the alerts the channels stay near Slack's ~1 message/s each.
LOAD_MIX = (
    ("find", 45),
    ("show", 45),
    ("handoff", 2),
    ("approval", 2),
    ("accept", 2),
    ("complete", 2),
    ("approve", 2),
)


@asynccontextmanager
async def throwaway_vhost():
    vhost = f"crm-load-{secrets.token_hex(4)}"
    user = urlsplit(AMQP_URL).username or "guest"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit(urlsplit(AMQP_URL)._replace(path="/" + quote(vhost, safe="")))
    finally:
        rabbitmqctl("delete_vhost", vhost)


def seed(stack: Stack, n: int) -> list[dict]:
    people = customers(n)
    path = stack.workdir / "customers.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in people))
    run_cli(stack.env, stack.workdir, "import", str(path), timeout=600)
    return people


async def sampler(stack, bot, db, stream, start, stop, out) -> None:
    """Every second: the bot's RSS, events published and applied so far."""
    while not stop.is_set():
        at = time.monotonic() - start
        rss = bot.rss_mb()
        if rss is not None:
            out["rss"].append((at, rss))
        async with db.engine.connect() as conn:
            applied = (await conn.execute(text("SELECT count(*) FROM processed_events"))).scalar()
        out["applied"].append((at, int(applied or 0)))
        out["published"].append((at, len(stream.published)))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def alert_delays(stack: Stack, stream: EventStream, wall_start: float):
    """(publish offset s, delay s) for each alert's first post in each of its channels."""
    first: dict[tuple[str, str], float] = {}
    for channel in (SALES, SERVICE, FINANCE):
        for message in stack.sandbox.store.all_messages(channel):
            for token in tokens_in(message):
                first.setdefault((token, channel), float(message["ts"]))
    points = []
    for p in stream.alerting:
        for channel in p.channels:
            ts = first.get((p.id, channel))
            if ts is not None:
                points.append((p.at - wall_start, ts - p.at))
    return points


async def run(args, dept_size: int | None = None) -> dict:
    config, colleagues = FAULT_CONFIG, []
    if dept_size is not None:
        config, colleagues = slack_calls.big_config(dept_size)
    with tempfile.TemporaryDirectory(prefix="crm-load-") as tmp:
        async with (
            throwaway_vhost() as amqp_url,
            Stack.open(amqp_url, Path(tmp), config=config) as stack,
        ):
            slack_calls.meet(stack.sandbox, colleagues)
            if stack.sandbox.faults.rate_limit is None:
                stack.sandbox.rate_limit(per_channel_per_second=1.0, burst=3)
            t = time.monotonic()
            people = await asyncio.to_thread(seed, stack, args.customers)
            print(f"seeded {len(people)} customers in {time.monotonic() - t:.1f}s", file=sys.stderr)
            refs = [c["external_id"] for c in people]
            names = sorted({c["name"].split()[0] for c in people})[:20]
            stream = EventStream(amqp_url)
            await stream.connect()
            bot = await stack.start_bot(name="load")
            per_action = await slack_calls.calls_per_action(
                stack.sandbox, stack.sim_for(bot), refs[-20:], names, reps=args.reps
            )
            users = Users(
                [stack.sim_for(bot)], stack.sandbox, refs[: args.hot * 4], names, mix=LOAD_MIX
            )
            db = Database(stack.db_url)
            samples = {"rss": [], "applied": [], "published": []}
            stop, stop_sampling = asyncio.Event(), asyncio.Event()
            start, wall_start = time.monotonic(), time.time()
            sampling = asyncio.create_task(
                sampler(stack, bot, db, stream, start, stop_sampling, samples)
            )
            flow = asyncio.create_task(
                stream.flow(
                    refs, args.rate, stop, alert_share=args.alerts / args.rate, hot=refs[: args.hot]
                )
            )
            acting = asyncio.create_task(users.run(args.people, stop, pause=args.pause))
            await asyncio.sleep(args.seconds)  # the length of the run is the point here
            stop.set()
            sent = await flow
            await acting
            published_for = time.monotonic() - start
            left = await progress(db, stream, amqp_url)
            drained = True
            try:
                await settled(db, stream, amqp_url, within=args.drain)
            except AssertionError:
                drained = False
                print(f"not drained; the bot's log ends:\n{bot.log_tail(30)}", file=sys.stderr)
            if args.log:
                args.log.write_bytes(bot.log_path.read_bytes())
            drain = time.monotonic() - start - published_for
            stop_sampling.set()
            await sampling
            books = await check_books(stack.db_url, amqp_url, stream, stack.sandbox)
            await db.close()
            await stream.close()
            points = alert_delays(stack, stream, wall_start)
            tally = users.tally
            acks = [s for _, _, s in tally.acks]
            sorry = sorry_answers(stack.sandbox)
            rss = [r for _, r in samples["rss"]]
            delays = [d for _, d in points]
            result = {
                "dept_size": dept_size,
                "slack_429": slack_calls.refused(stack.sandbox),
                "calls_per_action": per_action,
                "slack_calls": len(stack.sandbox.store.calls()),
                "seconds": round(published_for, 1),
                "rate": args.rate,
                "people": args.people,
                "customers": args.customers,
                "published": sent,
                "published_per_s": sent / published_for,
                "applied": len(books.applied),
                "dead": len(books.dead),
                "lost": len(books.lost),
                "backlog_at_stop": left[0],
                "pending_alerts_at_stop": left[1],
                "drain_s": drain,
                "drained": drained,
                "actions": len(acks),
                "actions_per_s": len(acks) / published_for,
                "errors": tally.error_count
                + sum(tally.unreachable.values())
                + sorry
                + len(books.lost)
                + len(books.dead)
                + books.double_messages,
                "error_detail": {
                    "non_200": dict(tally.errors),
                    "unreachable": dict(tally.unreachable),
                    "did_not_work": sorry,
                    "lost": len(books.lost),
                    "dead": len(books.dead),
                    "double_alerts": books.double_messages,
                },
                "ack_p50_ms": pct(acks, 50) * 1000,
                "ack_p99_ms": pct(acks, 99) * 1000,
                "ack_max_ms": max(acks, default=0) * 1000,
                "alerts": len(points),
                "alert_p50_s": pct(delays, 50),
                "alert_p99_s": pct(delays, 99),
                "alert_max_s": max(delays, default=0),
                "rss_start_mb": rss[0] if rss else None,
                "rss_peak_mb": max(rss, default=None),
                "rss_end_mb": rss[-1] if rss else None,
                "handoffs": dict(books.handoffs),
                "approvals": dict(books.approvals),
                "audit": books.audit_text.split(" (")[0],
                "samples": samples,
            }
            charts.alert_delay(points, publishing_until=published_for)
            charts.memory(
                samples["rss"], applied=samples["applied"], published=samples["published"]
            )
            return result


def render(r: dict) -> str:
    rows = [
        ["run", f"{r['seconds']:.0f} s, {r['people']} people, {r['customers']:,} customers", ""],
        [
            "events published",
            f"{r['published']:,} ({r['published_per_s']:.0f}/s)",
            f"{r['rate']}/s",
        ],
        [
            "events applied / dead-lettered / not applied",
            f"{r['applied']:,} / {r['dead']} / {r['lost']}",
            "all / 0 / 0",
        ],
        ["backlog when publishing stopped", f"{r['backlog_at_stop']:,} events", ""],
        [
            "drain after publishing stopped",
            f"{r['drain_s']:.1f} s" + ("" if r["drained"] else " (not drained)"),
            "",
        ],
        ["commands and clicks", f"{r['actions']:,} ({r['actions_per_s']:.1f}/s)", ""],
        ["errors", f"{r['errors']}", "0"],
        [
            "ack p50 / p99 / max",
            f"{r['ack_p50_ms']:.0f} / {r['ack_p99_ms']:.0f} / {r['ack_max_ms']:.0f} ms",
            "p99 < 300 ms",
        ],
        ["alerts posted (event, channel)", f"{r['alerts']:,}", ""],
        [
            "alert delay p50 / p99 / max",
            f"{r['alert_p50_s']:.2f} / {r['alert_p99_s']:.2f} / {r['alert_max_s']:.2f} s",
            "",
        ],
        [
            "bot RSS start / peak / end",
            f"{r['rss_start_mb']:.0f} / {r['rss_peak_mb']:.0f} / {r['rss_end_mb']:.0f} MiB",
            "",
        ],
    ]
    return table(["load test", "result", "target"], rows)


def render_slack(results: list[dict]) -> str:
    """The Slack figures, one column per department size."""
    headers = ["Slack", *(f"{r['dept_size'] or 'test config'}-person departments" for r in results)]
    rows = [
        ["429 answers (target 0)", *(_refused_text(r["slack_429"]) for r in results)],
        ["Web API calls in the run", *(f"{r['slack_calls']:,}" for r in results)],
    ]
    for action in slack_calls.ACTIONS:
        cells = []
        for r in results:
            found = r["calls_per_action"].get(action)
            at_least = "" if not found or found.get("settled", True) else "~"
            cells.append(
                f"{at_least}{found['calls']:.0f}: {slack_calls.methods_text(found['methods'])}"
                if found
                else "-"
            )
        rows.append([f"calls per {action}", *cells])
    rows.append(
        ["ack p99 under load (target < 300 ms)", *(f"{r['ack_p99_ms']:.0f} ms" for r in results)]
    )
    return table(headers, rows)


def _refused_text(by_method: dict[str, int]) -> str:
    if not by_method:
        return "0"
    each = ", ".join(f"{m} {n}" for m, n in by_method.items())
    return f"{sum(by_method.values())} ({each})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--rate", type=float, default=200, help="sync events per second")
    p.add_argument("--alerts", type=float, default=0.5, help="alerting events per second")
    p.add_argument("--people", type=int, default=20)
    p.add_argument("--pause", type=float, default=2.0, help="seconds between a person's actions")
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--hot", type=int, default=40, help="customers the alerting events are about")
    p.add_argument("--drain", type=float, default=120, help="seconds to wait for the backlog")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--log", type=Path, help="copy the bot's log here")
    p.add_argument(
        "--dept-size",
        type=int,
        action="append",
        help="people in customer service and in finance (repeatable: one run per size; "
        "default: the test config's two each)",
    )
    p.add_argument("--reps", type=int, default=3, help="times each action is counted")
    args = p.parse_args()
    results = []
    for size in args.dept_size or [None]:
        result = asyncio.run(run(args, size))
        results.append(result)
        if size is not None:
            print(f"\n{size}-person departments:")
        print(render(result))
        print("errors:", json.dumps(result["error_detail"]), file=sys.stderr)
    print()
    print(render_slack(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
