"""Benchmark: bursts of concurrent `/crm find` commands against many stored customers.

    .venv/bin/python -m bench.commands                  # 100,000 customers, SQLite and PostgreSQL
    .venv/bin/python -m bench.commands --customers 5000 --databases sqlite

The real bot (BotService: bolt app, handlers, storage) runs with the sandbox as its Slack; the
sandbox's client sends signed slash commands, 50 at once per round. Measured:
- acknowledgement latency: from sending a command to the bot's HTTP answer (Slack's limit
  is 3 s; the target p99 is under 300 ms);
- answer latency: from the start of a round to each answer arriving at its response_url;
- answers per second: commands of a round / time until the round's last answer.
PostgreSQL gets a throwaway database (dropped at the end) at CRM_BENCH_PG (default
postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import customers, pct, table, throwaway_database
from bot.lib.config import Settings, parse_config
from bot.sandbox import Sandbox, SlackClientSim
from bot.service import BotService, Tuning
from storage.bulk import upsert_many
from storage.crypto import KeyRing
from storage.db import Database
from storage.models import utcnow
from storage.vault import Vault

TOKEN = "xoxb-bench-token"
SECRET = "bench-signing-secret"
KEYS = "bench:" + base64.b64encode(b"\x07" * 32).decode()
USER, CHANNEL = "U0ALICE01", "C0SALES01"
CONFIG = f"""
[departments.sales]
name = "Sales"
channel = "{CHANNEL}"
members = ["{USER}"]
leads = ["{USER}"]
"""


@dataclass
class Figures:
    database: str
    customers: int
    commands: int
    seed_seconds: float = 0.0
    acks: list[float] = field(default_factory=list)
    answers: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def queries(n: int, people: list[dict], rng: random.Random) -> list[str]:
    """A mix like people type: emails, external ids, full names, name prefixes, companies."""
    out = []
    for _ in range(n):
        c = rng.choice(people)
        first, last = c["name"].lower().split(maxsplit=1)
        out.append(
            rng.choice(
                [
                    c["email"],
                    c["external_id"],
                    f"{first} {last}",
                    f"{first[:3]} {last[:4]}",
                    f"{c['company'].split()[0].lower()} {last}",
                ]
            )
        )
    return out


async def seed(url: str, people: list[dict], batch: int) -> float:
    db = Database(url)
    vault = Vault(KeyRing.parse(KEYS))
    async with db.transaction() as session:
        await vault.load(session)
    started, now, n = time.perf_counter(), utcnow(), len(people)
    for start in range(0, n, batch):
        async with db.transaction() as session:
            await upsert_many(
                session, vault, people[start : start + batch], source="bench", occurred_at=now
            )
        print(f"\r  seeded {min(n, start + batch):,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    await db.close()
    return time.perf_counter() - started


async def run_rounds(url: str, people: list[dict], figures: Figures, args) -> None:
    sandbox = await Sandbox.start(bot_token=TOKEN)
    settings = Settings(
        _env_file=None,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=sandbox.api_url,
        database_url=url,
        crm_master_keys=KEYS,
    )
    service = BotService(settings, parse_config(CONFIG), Tuning(per_channel_interval=0))
    await service.start(migrate=True, port=0)
    sim = SlackClientSim(service.url + "/slack/events", SECRET, sandbox)
    rng = random.Random(7)
    try:
        for text in queries(5, people, rng):  # warm up connections and caches
            await sim.command(USER, CHANNEL, "/crm", f"find {text}")
        await wait_for_answers(sandbox.store, 5)
        for _ in range(args.rounds):
            await one_round(sandbox, sim, queries(args.concurrency, people, rng), figures)
    finally:
        await sim.close()
        await service.stop()
        await sandbox.stop()


async def one_round(sandbox: Sandbox, sim: SlackClientSim, texts: list[str], figures) -> None:
    """Send every command at once; time each acknowledgement and each answer's arrival."""
    store, arrivals = sandbox.store, []
    before = len(store.ephemerals(USER))
    changes = sandbox.subscribe()
    started = time.perf_counter()

    async def one(text: str) -> None:
        t0 = time.perf_counter()
        reply = await sim.command(USER, CHANNEL, "/crm", f"find {text}")
        figures.acks.append(time.perf_counter() - t0)
        if reply.status != 200:
            raise RuntimeError(f"the bot answered {reply.status}")

    async def watch() -> None:
        while len(arrivals) < len(texts):
            change = await changes.get()
            if change["type"] == "ephemeral":
                arrivals.append(time.perf_counter() - started)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(one(t) for t in texts))
    await asyncio.wait_for(watcher, 120)
    store.unsubscribe(changes)
    if len(store.ephemerals(USER)) != before + len(texts):
        raise RuntimeError("answers were lost")
    figures.answers += arrivals
    figures.rates.append(len(texts) / max(arrivals))


async def wait_for_answers(store, count: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while len(store.ephemerals(USER)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the bot did not answer")
        await asyncio.sleep(0.01)


async def bench_one(kind: str, people: list[dict], args) -> Figures:
    figures = Figures(kind, len(people), args.concurrency * args.rounds)
    print(f"{kind}: seeding {len(people):,} customers", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as folder:
        async with throwaway_database(kind, folder) as url:
            figures.seed_seconds = await seed(url, people, args.batch)
            await run_rounds(url, people, figures, args)
    return figures


def report(rows: list[Figures]) -> str:
    headers = [
        "database",
        "customers",
        "commands",
        "ack p50 ms",
        "ack p99 ms",
        "answer p50 ms",
        "answer p99 ms",
        "answers/s",
        "seeding s",
    ]
    return table(
        headers,
        [
            [
                f.database,
                f.customers,
                f.commands,
                pct(f.acks, 50) * 1000,
                pct(f.acks, 99) * 1000,
                pct(f.answers, 50) * 1000,
                pct(f.answers, 99) * 1000,
                statistics.mean(f.rates),
                f.seed_seconds,
            ]
            for f in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.commands", description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=50, help="commands sent at once")
    p.add_argument("--rounds", type=int, default=3, help="bursts per database")
    p.add_argument("--batch", type=int, default=2000, help="customers per seeding transaction")
    p.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("sqlite", "postgresql"):
            p.error(f"unknown database {kind!r}")
    people = customers(args.customers)
    rows = [asyncio.run(bench_one(kind, people, args)) for kind in kinds]
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
