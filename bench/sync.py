"""Benchmark: RabbitMQ sync events consumed end to end, beside a bare and a naive consumer.

    .venv/bin/python -m bench.sync                      # 20,000 events, SQLite and PostgreSQL
    .venv/bin/python -m bench.sync --events 2000 --db postgresql
    .venv/bin/python -m bench.sync --backlog 100000     # peak memory with a backlog
    .venv/bin/python -m bench.sync --mix creations --events 10000 --replicas 1
    .venv/bin/python -m bench.sync --mix updates --events 10000 --customers 10000 --replicas 1

Rows of the table (all in the same run, over the same events):
- bare aio-pika: a consumer that only acks (prefetch as the bot's): the ceiling here;
- naive: pika's BlockingConnection consuming one message at a time and calling slack_sdk's
  WebClient.chat_postMessage per event, then acking (what a hurried team would write);
- crm-bot: the real BotService: every event validated, applied in a transaction (customer
  fields encrypted, blind indexes, timeline entry sealed), alerts routed, posted to the sandbox
  in per-customer threads (pacing lifted: Tuning(per_channel_interval=0); coalescing off, so
  every alert is its own post, the worst case) and recorded in the delivery ledger; on each
  database asked for (`--db`, both by default). Its events/s counts until every event is applied
  AND every alert posted; "all applied at" is when the last event was applied;
- crm-bot, N replicas: the same on PostgreSQL with `--replicas` bot processes (2 by default)
  sharing the queue and the database, as a deployment scales out;
- crm-bot paced: the per-channel pacing on its own (SlackOut at 10 posts/s/channel, burst 3).
`--backlog N` publishes N events first, then starts the bot and samples its RSS while it
consumes (prefetch bounds what is held in memory). Everything runs in a throwaway vhost
(`crm-bench-<hex>`, deleted at the end) and a throwaway database; the sandbox runs in a
process of its own so its message store does not count toward the bot's memory.

A second table gives each run's CPU time per event by process (the consumer's, the sandbox,
PostgreSQL, RabbitMQ, and every process on the machine, from /proc), and the line under it the
most CPU per event the whole machine can spend at half the bare ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import multiprocessing as mp
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aio_pika
from sqlalchemy import func, select

from bench import cpu
from bench.common import customers, table, throwaway_database
from bot.broker import declare_topology
from bot.broker.messages import event_message
from bot.lib.config import Settings, parse_config
from bot.service import BotService, Tuning
from storage.models import AlertDelivery, CustomerThread, ProcessedEvent

TOKEN = "xoxb-bench-token"
SECRET = "bench-signing-secret"
KEYS = "bench:" + base64.b64encode(b"\x07" * 32).decode()
AMQP = os.environ.get("CRM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CPU_COLUMNS = ["run", "consumer process", "sandbox", "PostgreSQL", "RabbitMQ", "all processes"]
DATABASE_PROCESSES = {"postgres"}  # /proc command names
BROKER_PROCESSES = {"beam.smp", "erl_child_setup", "epmd", "inet_gethost"}
SALES, SERVICE, FINANCE = "C0SALES01", "C0SERVICE", "C0FINANCE"
CONFIG = f"""
[departments.sales]
name = "Sales"
channel = "{SALES}"
members = ["U0ALICE01"]
[departments.service]
name = "Customer Service"
channel = "{SERVICE}"
members = ["U0DAVE001"]
[departments.finance]
name = "Finance"
channel = "{FINANCE}"
members = ["U0GRACE01"]
[sync]
coalesce_seconds = 0
"""


# --- events -----------------------------------------------------------------------------------


def events(n: int, n_customers: int, seed: int = 11) -> Iterator[dict]:
    """Each customer is created first, then a mix: a third of the events raise an alert."""
    rnd = random.Random(seed)
    people = customers(min(n, n_customers))
    base = 1_770_000_000
    for i in range(n):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i))
        common = {"spec": "crm.sync/1", "id": f"bench-{i}", "occurred_at": at, "source": "bench"}
        if i < len(people):
            yield {**common, "type": "customer.upserted", "customer": people[i]}
            continue
        ext = {"external_id": people[rnd.randrange(len(people))]["external_id"]}
        roll = rnd.random()
        if roll < 0.35:
            tier = rnd.choice(["strategic", "enterprise", "mid_market", "smb"])
            body = {"type": "customer.upserted", "customer": {**ext, "tier": tier}}
        elif roll < 0.50:
            stage = rnd.choice(["proposal", "negotiation", "closed_won"])
            data = {"deal_id": f"D-{i}", "name": "Renewal", "stage": stage, "amount": 12000}
            body = {"type": "deal.stage_changed", "customer": ext, "data": data}
        elif roll < 0.65:
            kind = rnd.choice(["ticket.opened", "ticket.escalated", "ticket.resolved"])
            data = {"ticket_id": f"T-{i}", "subject": "Cannot log in", "priority": "high"}
            body = {"type": kind, "customer": ext, "data": data}
        elif roll < 0.75:
            data = {"invoice_id": f"I-{i}", "amount": 800, "currency": "EUR", "days_overdue": 9}
            body = {"type": "invoice.overdue", "customer": ext, "data": data}
        elif roll < 0.90:
            data = {"invoice_id": f"I-{i}", "amount": 800, "currency": "EUR"}
            body = {"type": "payment.received", "customer": ext, "data": data}
        else:
            body = {
                "type": "lead.qualified",
                "customer": ext,
                "data": {"campaign": "spring", "score": 70},
            }
        yield {**common, **body}


def updates(n: int, n_customers: int, seed: int = 13) -> Iterator[dict]:
    """Changes to customers already stored (`seed_customers`): a new phone (a personal,
    indexed field: decrypted to compare, encrypted, re-indexed) and a tier."""
    rnd = random.Random(seed)
    base = 1_770_000_000
    for i in range(n):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i))
        customer = {
            "external_id": f"CUST-{rnd.randrange(n_customers):07d}",
            "phone": f"+1 555 {rnd.randrange(10**7):07d}",
            "tier": rnd.choice(["strategic", "enterprise", "mid_market", "smb"]),
        }
        yield {
            "spec": "crm.sync/1",
            "id": f"bench-u{i}",
            "occurred_at": at,
            "source": "bench",
            "type": "customer.upserted",
            "customer": customer,
        }


def mix_events(mix: str, n: int, n_customers: int) -> Iterator[dict]:
    """The stream of a run: `mixed` (each customer created, then alerts and changes),
    `creations` (every event a new customer, no alerts), `updates` (changes to stored ones)."""
    if mix == "creations":
        return events(n, n)
    if mix == "updates":
        return updates(n, n_customers)
    return events(n, n_customers)


async def seed_customers(db_url: str, n: int) -> None:
    """The customers an `updates` run changes, stored beforehand as an import would."""
    from storage.bulk import upsert_many
    from storage.crypto import KeyRing
    from storage.db import Database
    from storage.models import utcnow
    from storage.vault import Vault

    db, vault = Database(db_url), Vault(KeyRing.parse(KEYS))
    async with db.transaction() as s:
        await vault.load(s)
    people = customers(n)
    for i in range(0, n, 1000):
        async with db.transaction() as s:
            await upsert_many(s, vault, people[i : i + 1000], source="import", occurred_at=utcnow())
    await db.close()


async def publish(url: str, bodies: Iterator[dict], *, queue: str | None = None) -> int:
    """Publish (confirmed) to crm.events, or straight to `queue` through the default exchange."""
    connection = await aio_pika.connect(url)
    sent = 0
    try:
        channel = await connection.channel()
        if queue is None:
            exchange = await channel.declare_exchange(
                "crm.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
        else:
            await channel.declare_queue(queue, durable=True)
            exchange = channel.default_exchange
        chunk: list = []
        for body in bodies:
            key = body["type"] if queue is None else queue
            chunk.append(exchange.publish(event_message(body), routing_key=key))
            if len(chunk) >= 500:
                await asyncio.gather(*chunk)
                sent += len(chunk)
                chunk = []
        await asyncio.gather(*chunk)
        sent += len(chunk)
    finally:
        await connection.close()
    return sent


# --- the sandbox, in a process of its own -----------------------------------------------------


def _sandbox_main(conn) -> None:
    from bot.sandbox import Sandbox

    async def run() -> None:
        sandbox = await Sandbox.start(bot_token=TOKEN)
        conn.send(sandbox.api_url)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        await sandbox.stop()

    asyncio.run(run())


class SandboxProcess:
    def __enter__(self) -> str:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_sandbox_main, args=(child,), daemon=True)
        self.process.start()
        self.pid = self.process.pid
        return self.conn.recv()

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()


# --- vhost ------------------------------------------------------------------------------------


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


class Vhost:
    def __enter__(self) -> str:
        self.name = f"crm-bench-{secrets.token_hex(4)}"
        user = urlsplit(AMQP).username or "guest"
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, user, ".*", ".*", ".*")
        parts = urlsplit(AMQP)
        return urlunsplit(parts._replace(path="/" + quote(self.name, safe="")))

    def __exit__(self, *exc: object) -> None:
        for _ in range(10):
            try:
                rabbitmqctl("delete_vhost", self.name)
                return
            except subprocess.CalledProcessError:
                time.sleep(3)  # the broker is being restarted by someone else
        print(f"could not delete vhost {self.name}; delete it by hand", file=sys.stderr)


# --- the three consumers ----------------------------------------------------------------------


async def bare(url: str, n: int, prefetch: int) -> tuple[float, cpu.Snapshot | None]:
    await publish(url, events(n, n), queue="bench.bare")
    connection = await aio_pika.connect(url)
    done = asyncio.Event()
    seen = 0
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue("bench.bare", durable=True)

    async def on_message(message) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if seen >= n:
            done.set()

    before = cpu.snapshot()
    started = time.perf_counter()
    await queue.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - started
    spent = cpu.since(before)
    await connection.close()
    return elapsed, spent


def _naive_consume(url: str, api_url: str, n: int) -> float:
    import pika
    from slack_sdk import WebClient

    client = WebClient(token=TOKEN, base_url=api_url)
    started = time.perf_counter()
    seen = 0
    while seen < n:  # the broker is shared: reconnect if someone restarts it meanwhile
        try:
            connection = pika.BlockingConnection(pika.URLParameters(url))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=1)
            for method, _props, body in channel.consume("bench.naive"):
                event = json.loads(body)
                text = f"{event['type']} {event['customer']}"
                client.chat_postMessage(channel=SALES, text=text)
                channel.basic_ack(method.delivery_tag)
                seen += 1
                if seen >= n:
                    break
            channel.cancel()
            connection.close()
        except pika.exceptions.AMQPError:
            time.sleep(1)
    return time.perf_counter() - started


async def naive(url: str, api_url: str, n: int) -> tuple[float, cpu.Snapshot | None]:
    await publish(url, events(n, n), queue="bench.naive")
    before = cpu.snapshot()
    elapsed = await asyncio.to_thread(_naive_consume, url, api_url, n)
    return elapsed, cpu.since(before)


async def _counts(db) -> tuple[int, int, int]:
    async with db.transaction() as session:
        done = (await session.execute(select(func.count()).select_from(ProcessedEvent))).scalar()
        rows = await session.execute(
            select(AlertDelivery.status, func.count()).group_by(AlertDelivery.status)
        )
        by_status = dict(rows.all())
    return done, by_status.get("pending", 0), by_status.get("posted", 0)


async def _messages(db) -> int:
    """Slack messages the alerts took: one per distinct posted ts (coalesced alerts share one),
    plus a header per customer thread."""
    async with db.transaction() as session:
        posted = select(AlertDelivery.channel_id, AlertDelivery.ts).where(
            AlertDelivery.status == "posted"
        )
        replies = select(func.count()).select_from(posted.distinct().subquery())
        headers = select(func.count()).select_from(CustomerThread)
        return (await session.execute(replies)).scalar() + (await session.execute(headers)).scalar()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _settings(url: str, api_url: str, db_url: str) -> Settings:
    return Settings(
        _env_file=None,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=api_url,
        database_url=db_url,
        crm_master_keys=KEYS,
        amqp_url=url,
    )


def _service(url: str, api_url: str, db_url: str, prefetch: int) -> BotService:
    tuning = Tuning(per_channel_interval=0, prefetch=prefetch)
    return BotService(_settings(url, api_url, db_url), parse_config(CONFIG), tuning)


async def _publish_all(url: str, n: int, n_customers: int, mix: str = "mixed") -> None:
    connection = await aio_pika.connect(url)
    await declare_topology(await connection.channel())
    await connection.close()
    await publish(url, mix_events(mix, n, n_customers))


async def _until_done(db, n: int, limit: float, started: float, sample=None) -> dict:
    """Poll the books until every event is applied and every alert posted (or `limit`)."""
    applied_at = None
    while True:
        done, pending, posted = await _counts(db)
        if sample is not None:
            sample()
        now = time.perf_counter() - started
        if done >= n and applied_at is None:
            applied_at = now
        if (done >= n and pending == 0) or now > limit:
            break
        await asyncio.sleep(0.25)
    elapsed = time.perf_counter() - started
    return {
        "elapsed": elapsed,
        "applied_at": applied_at,
        "done": done,
        "posted": posted,
        "messages": await _messages(db),
    }


async def crm_bot(
    url: str,
    api_url: str,
    db_url: str,
    n: int,
    n_customers: int,
    prefetch: int,
    limit: float,
    mix: str = "mixed",
) -> dict:
    if mix == "updates":
        await seed_customers(db_url, n_customers)
    await _publish_all(url, n, n_customers, mix)
    service = _service(url, api_url, db_url, prefetch)
    rss = {"before": rss_mb()}
    rss["peak"] = rss["before"]

    def sample() -> None:
        rss["peak"] = max(rss["peak"], rss_mb())

    before = cpu.snapshot()
    started = time.perf_counter()
    await service.start(port=0)
    try:
        result = await _until_done(service.deps.db, n, limit, started, sample)
        result["cpu"], result["pids"] = cpu.since(before), {os.getpid()}
    finally:
        await service.stop()
    return {**result, "rss_before": rss["before"], "rss_peak": rss["peak"]}


def _replica_main(conn, url: str, api_url: str, db_url: str, prefetch: int) -> None:
    """One `crm-bot serve` worth of BotService in a process of its own: built, then started
    when told, stopped when told."""

    async def run() -> None:
        service = _service(url, api_url, db_url, prefetch)
        loop = asyncio.get_running_loop()
        conn.send("ready")
        await loop.run_in_executor(None, conn.recv)
        await service.start(port=0)
        await loop.run_in_executor(None, conn.recv)
        await service.stop()

    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run())


async def crm_bot_replicas(
    url: str,
    api_url: str,
    db_url: str,
    n: int,
    n_customers: int,
    prefetch: int,
    limit: float,
    replicas: int,
) -> dict:
    """The same, with `replicas` bot processes sharing the queue and the database (how a
    deployment scales out: delivery leases keep their alerts from doubling)."""
    from storage.db import Database

    await _publish_all(url, n, n_customers)
    ctx = mp.get_context("spawn")
    pipes, processes = [], []
    for _ in range(replicas):
        mine, theirs = ctx.Pipe()
        process = ctx.Process(
            target=_replica_main, args=(theirs, url, api_url, db_url, prefetch), daemon=True
        )
        process.start()
        pipes.append(mine)
        processes.append(process)
    loop = asyncio.get_running_loop()
    for pipe in pipes:
        await loop.run_in_executor(None, pipe.recv)  # built: imports and set-up done
    db = Database(db_url)
    before = cpu.snapshot()
    started = time.perf_counter()
    for pipe in pipes:
        pipe.send("start")
    try:
        result = await _until_done(db, n, limit, started)
        result["cpu"], result["pids"] = cpu.since(before), {p.pid for p in processes}
        return result
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for process in processes:
            await loop.run_in_executor(None, process.join, 30)
            if process.is_alive():
                process.terminate()
        await db.close()
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:  # the figure would be that of fewer replicas
            raise RuntimeError(f"{len(failed)} of {replicas} replicas failed (exit {failed})")


async def paced(api_url: str, posts: int = 30) -> float:
    from bot.lib.slack_out import SlackOut, make_client

    slack = SlackOut(make_client(TOKEN, api_url), per_channel_interval=0.1, burst=3)
    started = time.perf_counter()
    await asyncio.gather(*(slack.post(SALES, f"paced {i}") for i in range(posts)))
    return posts / (time.perf_counter() - started)


# --- main -------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    n = args.events
    sandbox = SandboxProcess()
    with Vhost() as url, sandbox as api_url, tempfile.TemporaryDirectory() as tmp:
        if args.backlog:
            async with throwaway_database(args.db[0], tmp) as db_url:
                r = await crm_bot(
                    url, api_url, db_url, args.backlog, 2000, args.prefetch, args.seconds
                )
            print(
                table(
                    ["backlog", "consumed", "seconds", "events/s", "RSS at start MB", "peak MB"],
                    [
                        [
                            args.backlog,
                            r["done"],
                            r["elapsed"],
                            r["done"] / r["elapsed"],
                            r["rss_before"],
                            r["rss_peak"],
                        ]
                    ],
                )
            )
            return
        rows, cpu_rows = [], []

        def add_cpu_row(name: str, events: int, seconds: float, spent, pids: set[int]) -> None:
            per_event = [
                cpu.total(spent, pids=pids),
                cpu.total(spent, pids={sandbox.pid}),
                cpu.total(spent, names=DATABASE_PROCESSES),
                cpu.total(spent, names=BROKER_PROCESSES),
                cpu.everything(spent),
            ]
            busy = per_event[-1] / seconds
            cpu_rows.append([name, *(1000 * x / events for x in per_event), busy])

        t, spent = await bare(url, n, args.prefetch)
        rows.append(["bare aio-pika (ack only)", n, t, n / t, "-", "-", "-"])
        add_cpu_row(rows[-1][0], n, t, spent, {os.getpid()})
        print(rows[-1], flush=True)
        naive_n = min(n, args.naive_events or n)
        t, spent = await naive(url, api_url, naive_n)
        naive_row = ["naive (pika + WebClient per event)", naive_n, t, naive_n / t, "-"]
        rows.append([*naive_row, naive_n, naive_n])
        add_cpu_row(rows[-1][0], naive_n, t, spent, {os.getpid()})
        print(rows[-1], flush=True)
        ours: list[tuple[str, dict]] = []  # (which crm-bot run, its result)

        def add_row(name: str, r: dict) -> None:
            ours.append((name, r))
            applied = f"{r['applied_at']:.1f}" if r["applied_at"] is not None else "-"
            rate = r["done"] / r["elapsed"]
            row = [f"crm-bot end to end ({name})", r["done"], r["elapsed"], rate, applied]
            rows.append([*row, r["posted"], r["messages"]])
            add_cpu_row(row[0], r["done"], r["elapsed"], r["cpu"], r["pids"])
            print(rows[-1], flush=True)

        for db in args.db:
            async with throwaway_database(db, tmp) as db_url:
                r = await crm_bot(
                    url, api_url, db_url, n, args.customers, args.prefetch, 900, args.mix
                )
            add_row(db if args.mix == "mixed" else f"{db}, {args.mix}", r)
        if args.replicas > 1 and "postgresql" in args.db and args.mix == "mixed":
            async with throwaway_database("postgresql", tmp) as db_url:
                r = await crm_bot_replicas(
                    url, api_url, db_url, n, args.customers, args.prefetch, 900, args.replicas
                )
            add_row(f"{args.replicas} replicas, postgresql", r)
        rate = await paced(api_url)
        rows.append(["SlackOut paced 10/s/channel (1 channel)", 30, 30 / rate, rate, "-", 30, 30])
        ceiling, naive_rate = rows[0][3], rows[1][3]
        print()
        print(
            table(
                [
                    "consumer",
                    "events",
                    "seconds",
                    "events/s",
                    "all applied at s",
                    "alerts posted",
                    "Slack messages",
                ],
                rows,
            )
        )
        shares = "; ".join(
            f"{name}: {r['done'] / r['elapsed'] / ceiling:.1%} of the bare ceiling, "
            f"{r['done'] / r['elapsed'] / naive_rate:.2f}x the naive consumer"
            for name, r in ours
        )
        print(f"crm-bot ({shares}).")
        print()
        print(table([*CPU_COLUMNS, "CPUs busy"], cpu_rows))
        budget = 1000 * cpu.cpus() / (ceiling / 2)
        print(
            f"CPU ms per event, by process. At half the bare ceiling ({ceiling / 2:,.0f} "
            f"events/s) every process together may spend at most {budget:.2f} ms per event on "
            f"this machine's {cpu.cpus()} CPUs."
        )
        for name, r in ours:
            if "rss_peak" in r:  # measured in this process (not for the replicas)
                print(f"crm-bot ({name}): RSS {r['rss_before']:.0f} -> peak {r['rss_peak']:.0f} MB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--customers", type=int, default=2_000)
    p.add_argument(
        "--db", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    p.add_argument("--prefetch", type=int, default=256)
    p.add_argument(
        "--replicas", type=int, default=2, help="also run N bot processes on PostgreSQL (1: no)"
    )
    p.add_argument(
        "--mix",
        choices=["mixed", "creations", "updates"],
        default="mixed",
        help="mixed: create, then alerts and changes; creations: only new customers (no "
        "alerts); updates: changes (phone, tier) to --customers stored beforehand",
    )
    p.add_argument("--naive-events", type=int, default=0, help="cap the naive run (0: all)")
    p.add_argument("--backlog", type=int, default=0, help="peak-memory mode with N queued")
    p.add_argument("--seconds", type=float, default=120, help="backlog mode: consume this long")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
