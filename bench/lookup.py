"""Lookup, encryption and rotation costs of the encrypted customer store.

    .venv/bin/python bench/lookup.py                 # 10k and 100k, SQLite and PostgreSQL
    .venv/bin/python bench/lookup.py --sizes 2000 --db sqlite

For each size and database: `find` by email and by a 3-letter name prefix through the blind
index (p50/p99 over many queries), beside a naive "decrypt every row and filter" scan on the
same data (and the ratio); rows/s written encrypted (with blind index) vs plaintext (a plain
table with ordinary indexes); seconds to re-wrap every data key under a new master key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, select

from bench.common import customers, median, pct, table, throwaway_database
from storage.bulk import upsert_many
from storage.crypto import KeyRing, decrypt_field
from storage.customers import Customers
from storage.db import Database
from storage.models import Customer, utcnow
from storage.rotation import rewrap
from storage.vault import Vault

KEY1 = "b1:" + base64.b64encode(os.urandom(32)).decode()
KEY2 = "b2:" + base64.b64encode(os.urandom(32)).decode()
BATCH = 2000

plain_meta = MetaData()
plain = Table(
    "bench_plain_customers",
    plain_meta,
    Column("id", Integer, primary_key=True),
    Column("external_id", String(128), unique=True),
    Column("name", String(200), index=True),
    Column("email", String(254), index=True),
    Column("phone", String(40), index=True),
    Column("company", String(200), index=True),
    Column("notes", Text),
)


async def load(db: Database, vault: Vault, rows: list[dict]) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        async with db.transaction() as s:
            await upsert_many(s, vault, rows[i : i + BATCH], source="bench", occurred_at=utcnow())
    return len(rows) / (time.perf_counter() - start)


async def load_plain(db: Database, rows: list[dict]) -> float:
    async with db.engine.begin() as conn:
        await conn.run_sync(plain_meta.create_all)
    keys = ("external_id", "name", "email", "phone", "company", "notes")
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        async with db.transaction() as s:
            await s.execute(insert(plain), [{k: r[k] for k in keys} for r in rows[i : i + BATCH]])
    return len(rows) / (time.perf_counter() - start)


async def single_writes(db: Database, vault: Vault, rows: list[dict]) -> tuple[float, float]:
    """One customer per transaction, as sync events write them: encrypted through the
    repository vs a plaintext row with ordinary indexes."""
    start = time.perf_counter()
    for r in rows:
        async with db.transaction() as s:
            await Customers(s, vault).upsert(
                "ONE-" + r["external_id"], r, source="bench", occurred_at=utcnow()
            )
    enc = len(rows) / (time.perf_counter() - start)
    keys = ("name", "email", "phone", "company", "notes")
    start = time.perf_counter()
    for r in rows:
        async with db.transaction() as s:
            await s.execute(
                insert(plain), {"external_id": "ONE-" + r["external_id"], **{k: r[k] for k in keys}}
            )
    return enc, len(rows) / (time.perf_counter() - start)


async def timed_queries(db: Database, vault: Vault, queries: list[str]) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        async with db.transaction() as s:
            found = await Customers(s, vault).search(q)
        out.append((time.perf_counter() - start) * 1000)
        assert found, q
    return out


async def naive_scan(db: Database, vault: Vault, email: str) -> float:
    """What a team without blind indexes would do: decrypt every row, compare."""
    start = time.perf_counter()
    async with db.transaction() as s:
        result = await s.stream(
            select(Customer.id, Customer.key_id, Customer.wrapped_key, Customer.email_ct)
        )
        async for cid, key_id, wrapped, email_ct in result:
            key = vault.data_key(cid, key_id, wrapped)
            if decrypt_field(key, "customers", "email", cid, email_ct) == email:
                pass
    return (time.perf_counter() - start) * 1000


async def bench(kind: str, n: int, tmp: str, samples: int) -> dict:
    rows = customers(n)
    rnd = random.Random(1)
    async with throwaway_database(kind, tmp) as url:
        db = Database(url)
        vault = Vault(KeyRing.parse(KEY1))
        async with db.transaction() as s:
            await vault.load(s)
        enc_rate = await load(db, vault, rows)
        plain_rate = await load_plain(db, rows)
        one_enc, one_plain = await single_writes(db, vault, rows[:500])
        picks = [rnd.choice(rows) for _ in range(samples)]
        await timed_queries(db, vault, [p["email"] for p in picks[:20]])  # warm up
        by_email = await timed_queries(db, vault, [p["email"] for p in picks])
        by_prefix = await timed_queries(db, vault, [p["name"].split()[-1][:3] for p in picks])
        scans = [await naive_scan(db, vault, p["email"]) for p in picks[:3]]
        ring = Vault(KeyRing.parse(f"{KEY2},{KEY1}"))
        async with db.transaction() as s:
            await ring.load(s)
        start = time.perf_counter()
        rewrapped = await rewrap(db, ring, batch=1000)
        rotate_s = time.perf_counter() - start
        assert rewrapped >= n
        await db.close()
    return {
        "db": kind,
        "n": n,
        "email_p50": pct(by_email, 50),
        "email_p99": pct(by_email, 99),
        "prefix_p50": pct(by_prefix, 50),
        "prefix_p99": pct(by_prefix, 99),
        "scan_ms": median(scans),
        "ratio": median(scans) / pct(by_email, 50),
        "enc_rate": enc_rate,
        "plain_rate": plain_rate,
        "rotate_s": rotate_s,
        "one_enc": one_enc,
        "one_plain": one_plain,
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--samples", type=int, default=300)
    args = p.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            for kind in kinds:
                results.append(await bench(kind, n, tmp, args.samples))
                print(f"done: {kind} {n}", file=sys.stderr)
    print(
        table(
            [
                "db",
                "customers",
                "email p50 ms",
                "email p99 ms",
                "prefix p50 ms",
                "prefix p99 ms",
                "naive scan ms",
                "scan / indexed",
                "bulk rows/s enc",
                "bulk rows/s plain",
                "bulk plain/enc",
                "single writes/s enc",
                "single writes/s plain",
                "single plain/enc",
                "re-wrap all s",
            ],
            [
                [
                    r["db"],
                    r["n"],
                    r["email_p50"],
                    r["email_p99"],
                    r["prefix_p50"],
                    r["prefix_p99"],
                    r["scan_ms"],
                    f"{r['ratio']:,.0f}x",
                    r["enc_rate"],
                    r["plain_rate"],
                    f"{r['plain_rate'] / r['enc_rate']:.2f}x",
                    r["one_enc"],
                    r["one_plain"],
                    f"{r['one_plain'] / r['one_enc']:.2f}x",
                    r["rotate_s"],
                ]
                for r in results
            ],
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
