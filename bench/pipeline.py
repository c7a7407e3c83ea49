"""Benchmark: `/crm pipeline` and a digest with its chart, over many customers and deals.

    .venv/bin/python -m bench.pipeline                    # 100,000 customers, 300,000 deals
    .venv/bin/python -m bench.pipeline --customers 10000 --deals 30000 --databases sqlite

The real bot (BotService with the sandbox as its Slack) on a throwaway database; customers
(name sealed under each one's key) and deals (stage, amount, currency, owner; name sealed)
are written in bulk, then measured:
- `/crm pipeline`, `/crm pipeline sales`, `/crm pipeline <owner>`: the command's work after
  the ack (queries, decrypting the largest deals' names, rendering), run by the subcommand
  function the listener calls (handlers.pipeline.pipeline_command);
- a digest: building it (queries and the chart rendered to PNG, handlers.digests.build), and
  posting it (the message and the chart's upload to the sandbox, handlers.digests.post_due).
Targets: p99 under 200 ms for the command, under 5 s for a digest with its chart.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import delete, insert, text

from bench.common import median, pct, table, throwaway_database
from bot.lib.config import Settings, parse_config
from bot.lib.interaction import Command, Person
from bot.sandbox import Sandbox
from bot.service import BotService, Tuning
from handlers import digests
from handlers.pipeline import pipeline_command
from storage.crypto import KeyRing, encrypt_field
from storage.deals import rebuild_totals
from storage.models import Customer, Deal, DigestRun
from storage.vault import Vault

TOKEN = "xoxb-bench-token"
SECRET = "bench-signing-secret"
KEYS = "bench:" + base64.b64encode(b"\x07" * 32).decode()
USER = "U0GRACE01"
OWNERS = ["U0ALICE01", "U0BOB0001", "U0DAVE001", "U0ERIN001"]
DEPARTMENTS = ["sales", "service", "finance", "marketing"]
STAGES = ["qualification", "proposal", "negotiation", "closed_won", "closed_lost"]
CONFIG = f"""
[departments.sales]
name = "Sales"
channel = "C0SALES01"
members = ["U0ALICE01", "U0BOB0001"]

[departments.finance]
name = "Finance"
channel = "C0FINANCE"
members = ["{USER}"]

[[digests]]
department = "finance"
schedule = "mon 08:00"
timezone = "Europe/Berlin"
"""


async def seed(url: str, n_customers: int, n_deals: int) -> float:
    from storage.db import Database

    started = time.perf_counter()
    rng = random.Random(3)
    db = Database(url)
    vault = Vault(KeyRing.parse(KEYS))
    async with db.transaction() as session:
        await vault.load(session)
    now = datetime.now(UTC)
    ids, keys = [], {}
    rows = []
    for i in range(n_customers):
        c = Customer(id=uuid.uuid4(), external_id=f"CUST-{i:07d}")
        key = vault.new_customer_key(c)
        keys[c.id] = key
        ids.append(c.id)
        rows.append(
            {
                "id": c.id,
                "external_id": c.external_id,
                "key_id": c.key_id,
                "wrapped_key": c.wrapped_key,
                "name_ct": encrypt_field(key, "customers", "name", c.id, f"Customer {i}"),
                "owner_department": rng.choice(DEPARTMENTS),
                "owner_slack_user": rng.choice(OWNERS),
                "source_clock": {},
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with db.transaction() as session:
        for i in range(0, len(rows), 5000):
            await session.execute(insert(Customer.__table__), rows[i : i + 5000])
    deals = []
    for i in range(n_deals):
        cid = rng.choice(ids)
        stage = rng.choice(STAGES)
        deal_id = f"D-{i:07d}"
        closed = now - timedelta(days=rng.uniform(0, 90)) if stage.startswith("closed") else None
        deals.append(
            {
                "deal_id": deal_id,
                "customer_id": cid,
                "stage": stage,
                "amount": Decimal(rng.randrange(500, 250_000)),
                "currency": "EUR" if rng.random() < 0.9 else "USD",
                "name_ct": encrypt_field(keys[cid], "deals", "name", deal_id, f"Deal {i}"),
                "owner_department": rng.choice(DEPARTMENTS),
                "owner_slack_user": rng.choice(OWNERS),
                "source_clock": {},
                "closed_at": closed,
                "updated_at": now,
            }
        )
    async with db.transaction() as session:
        for i in range(0, len(deals), 5000):
            await session.execute(insert(Deal.__table__), deals[i : i + 5000])
    async with db.transaction() as session:  # the pipeline's totals, as the sync keeps them
        await rebuild_totals(session)
    if db.engine.dialect.name == "postgresql":
        async with db.engine.connect() as conn:
            await conn.exec_driver_sql("COMMIT")
            await conn.exec_driver_sql("ANALYZE")
    else:
        async with db.transaction() as session:
            await session.execute(text("ANALYZE"))
    await db.close()
    return time.perf_counter() - started


async def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def measure(kind: str, n_customers: int, n_deals: int, runs: int, tmp: str) -> list[list]:
    rows = []
    async with throwaway_database(kind, tmp) as url:
        seconds = await seed(url, n_customers, n_deals)
        print(f"{kind}: seeded {n_customers:,} customers and {n_deals:,} deals in {seconds:.0f} s")
        sandbox = await Sandbox.start(bot_token=TOKEN)
        settings = Settings(
            _env_file=None,
            slack_bot_token=TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=sandbox.api_url,
            database_url=url,
            crm_master_keys=KEYS,
        )
        # Jobs every hour: the digest job would otherwise post while we measure.
        tuning = Tuning(per_channel_interval=0, job_interval=3600)
        service = BotService(settings, parse_config(CONFIG), tuning)
        await service.start(migrate=True, port=0)
        deps = service.deps
        try:
            for label, args in (
                ("/crm pipeline", ""),
                ("/crm pipeline sales", "sales"),
                ("/crm pipeline <owner>", OWNERS[0]),
            ):
                cmd = Command(person=Person(USER), channel="C0FINANCE", args=args)
                await pipeline_command(deps, cmd)  # warm
                ms = await timed(lambda cmd=cmd: pipeline_command(deps, cmd), runs)
                rows.append([kind, label, runs, median(ms), pct(ms, 99)])
            digest = deps.config.digests[0]
            period = digests.latest_due(digest, datetime.now(UTC))
            n = max(5, runs // 10)
            ms = await timed(lambda: digests.build(deps, digest, period, datetime.now(UTC)), n)
            rows.append([kind, "digest: build + chart", n, median(ms), pct(ms, 99)])

            async def post_again() -> None:
                async with deps.db.transaction() as session:  # the period posted: forget it
                    await session.execute(delete(DigestRun))
                await digests.post_due(deps)

            await digests.post_due(deps)
            ms = await timed(post_again, n)
            rows.append([kind, "digest: build, post, upload", n, median(ms), pct(ms, 99)])
        finally:
            await service.stop()
            await sandbox.stop()
    return rows


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--deals", type=int, default=300_000)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--databases", default="sqlite,postgresql")
    a = p.parse_args(argv)
    rows: list[list] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.databases.split(","):
            rows += await measure(kind, a.customers, a.deals, a.runs, tmp)
    print()
    print(f"{a.customers:,} customers, {a.deals:,} deals")
    print(table(["database", "what", "runs", "p50 ms", "p99 ms"], rows))


if __name__ == "__main__":
    asyncio.run(main())
