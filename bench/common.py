"""Shared bits for the benchmarks: fake customers, throwaway databases, percentiles, tables."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import unicodedata
import uuid
from contextlib import asynccontextmanager

FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "John",
    "Radia",
    "Tim",
    "Hedy",
    "Edsger",
    "Donald",
    "Sophie",
    "Anita",
    "Guido",
    "Yukihiro",
    "Bjarne",
    "Niklaus",
    "Leslie",
    "Shafi",
    "Whitfield",
    "Martin",
    "Ivan",
    "Jean",
    "Carl",
    "Elena",
    "Marta",
    "Pierre",
    "Ingrid",
    "Olga",
    "Mateo",
    "Zoë",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "McCarthy",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Dijkstra",
    "Knuth",
    "Wilson",
    "Borg",
    "Rossum",
    "Matsumoto",
    "Stroustrup",
    "Wirth",
    "Lamport",
    "Goldwasser",
    "Diffie",
    "Fowler",
    "Sutherland",
    "Sammet",
    "Hewitt",
    "Petrova",
    "Nowak",
    "Dubois",
    "Larsen",
    "Ivanova",
    "García",
    "Ångström",
]
COMPANY_A = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Massive",
    "Aperture",
    "Black Mesa",
    "Oscorp",
    "Wonka",
    "Gringotts",
    "Monarch",
    "Nakatomi",
    "Dunder",
]
COMPANY_B = [
    "Industries",
    "Systems",
    "Labs",
    "Holdings",
    "Logistics",
    "Analytics",
    "Foods",
    "Energy",
    "Robotics",
    "Media",
    "Capital",
    "Networks",
]
TIERS = ["strategic", "enterprise", "mid_market", "smb"]

PG_ADMIN = os.environ.get("CRM_BENCH_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


def customers(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        out.append(
            {
                "external_id": f"CUST-{i:07d}",
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}.{i}@example.com".replace("ë", "e")
                .replace("å", "a")
                .replace("í", "i"),
                "phone": f"+1 555 {rnd.randrange(10**7):07d}",
                "company": f"{rnd.choice(COMPANY_A)} {rnd.choice(COMPANY_B)}",
                "tier": rnd.choice(TIERS),
                "lifecycle_stage": "customer",
                "annual_value": rnd.randrange(1000, 500000),
                "notes": "Renewal due in Q3; prefers email.",
            }
        )
    return out


def ascii_only(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


@asynccontextmanager
async def throwaway_database(kind: str, tmpdir: str):
    """A migrated, empty database URL of `kind` (sqlite or postgresql), dropped afterwards."""
    from sqlalchemy.engine import make_url

    from storage.db import Database
    from storage.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmpdir}/bench-{uuid.uuid4().hex[:6]}.db"
        db = Database(url)
        await upgrade(db)
        await db.close()
        yield url
        return
    import asyncpg

    admin = make_url(PG_ADMIN)
    name = f"crm_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, database=admin.database
    )
    await conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    await upgrade(db)
    await db.close()
    try:
        yield url
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def run(coro):
    return asyncio.run(coro)
