"""Benchmark: `crm-bot import` of generated customers, with where its CPU goes.

    .venv/bin/python bench/import.py                              # 10k and 100k, both databases
    .venv/bin/python bench/import.py --sizes 1000000 --db postgresql
    .venv/bin/python bench/import.py --sizes 100000 --db sqlite --profile

Each run writes a CSV of N customers (36 first names x 36 last names, unique emails, 240
companies; streamed to disk, so 1M costs no memory here), then runs `import_file`, the function
`crm-bot import` calls, on a throwaway migrated database, with its progress callback timing the
first and the last tenth of the rows (rows/s at start and at end: a cost that grows with the
table shows as a falling end rate). Then it re-wraps every data key under a new master key
(`keys rotate`) and times `find` by a 3-letter name prefix and by email (p50/p99).

With `--profile`, py-spy (a dev dependency) samples the process's threads during the import
and a second table splits the busy samples: parse (CSV, validation), index tokens (normalising
words and prefixes, HMAC digests), crypto (data keys, wraps, field encryption), SQL
(SQLAlchemy, the drivers, SQLite's own thread), other (the event loop, the progress
bookkeeping). PostgreSQL's server time is not in it: compare the process's CPU seconds
(getrusage, every thread) with the wall time. RSS is this process's before the import and its
peak during it, sampled every 10 batches (the CSV is streamed, as `crm-bot import` reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import COMPANY_A, COMPANY_B, FIRST, LAST, TIERS, pct, table, throwaway_database
from bot.importer import import_file
from storage.crypto import KeyRing
from storage.customers import Customers
from storage.db import Database
from storage.rotation import rewrap
from storage.vault import Vault

KEY1 = "i1:" + base64.b64encode(os.urandom(32)).decode()
KEY2 = "i2:" + base64.b64encode(os.urandom(32)).decode()
COLUMNS = ["external_id", "name", "email", "phone", "company", "tier", "annual_value", "notes"]


def write_csv(path: Path, n: int, seed: int = 7) -> list[tuple[str, str]]:
    """N customers to `path`; returns a sample of (email, name) to search for."""
    rnd = random.Random(seed)
    sample = []
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(n):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            email = f"{first.lower()}.{last.lower()}.{i}@example.com"
            name = f"{first} {last}"
            w.writerow(
                [
                    f"CUST-{i:07d}",
                    name,
                    email,
                    f"+1 555 {rnd.randrange(10**7):07d}",
                    f"{rnd.choice(COMPANY_A)} {rnd.choice(COMPANY_B)}",
                    rnd.choice(TIERS),
                    rnd.randrange(1000, 500000),
                    "Renewal due in Q3; prefers email.",
                ]
            )
            if rnd.random() < 300 / n:
                sample.append((email, name))
    return sample


CATEGORIES = (  # (category, substrings of a py-spy frame "function (file:line)"), leaf first
    ("parse", ("csv.py", "read_rows", "customer_fields.py", "json/")),
    (
        "index tokens",
        (
            "index_terms",
            "text_words",
            "word_terms",
            "words (",
            "fold (",
            "customer_digests",
            "digest (",
            "index_rows",
            "hmac.py",
        ),
    ),
    ("crypto", ("crypto.py", "vault.py", "cryptography", "encrypt_field", "new_customer_key")),
    ("SQL", ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "blind_index.py", "bulk.py")),
)


def spy_split(path: Path) -> dict[str, float]:
    """py-spy's raw samples (every thread, idle ones left out) by category: a sample counts
    for the category of its innermost frame that matches one."""
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[::-1]
        name = next(
            (c for f in frames for c, keys in CATEGORIES if any(k in f for k in keys)), "other"
        )
        out[name] = out.get(name, 0.0) + int(count)
    return out


class Spy:
    """py-spy recording this process (all threads, 100 samples/s) while the block runs."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Spy:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [spy, "record", "--pid", str(os.getpid()), "--format", "raw", "--threads"]
        cmd += ["--rate", "100", "--nonblocking", "-o", str(self.path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1)  # let it attach (a bench, not a test)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_one(kind: str, n: int, tmp: str, profile: bool) -> dict:
    path = Path(tmp) / f"customers-{n}.csv"
    if not path.exists():
        write_csv(path, n)
    sample = write_csv(Path(tmp) / "sample.csv", min(n, 2000))  # names/emails from the start
    async with throwaway_database(kind, tmp) as url:
        db = Database(url)
        vault = Vault(KeyRing.parse(KEY1))
        async with db.transaction() as s:
            await vault.load(s)
        marks: list[tuple[int, float]] = []
        done, rss = 0, [rss_mb()]

        def progress(k: int) -> None:
            nonlocal done
            done += k
            marks.append((done, time.perf_counter()))
            if len(marks) % 10 == 0:
                rss.append(rss_mb())

        spied = Path(tmp) / f"spy-{kind}-{n}.txt"
        with Spy(spied) if profile else contextlib.nullcontext():
            cpu0, start = cpu_seconds(), time.perf_counter()
            report = await import_file(db, vault, path, progress=progress)
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
        assert report.created == n and not report.rejected, report.summary()

        def rate(lo: float, hi: float) -> float:
            """rows/s between the marks nearest to fractions lo and hi of the rows."""
            pts = [(0, start), *marks]
            a = min(pts, key=lambda p: abs(p[0] - lo * n))
            b = min(pts, key=lambda p: abs(p[0] - hi * n))
            return (b[0] - a[0]) / (b[1] - a[1])

        ring = Vault(KeyRing.parse(f"{KEY2},{KEY1}"))
        async with db.transaction() as s:
            await ring.load(s)
        t = time.perf_counter()
        assert await rewrap(db, ring) == n
        rewrap_s = time.perf_counter() - t
        finds: list[float] = []
        for email, name in sample[:150]:
            for q in (email, name.split()[-1][:3]):
                t = time.perf_counter()
                async with db.transaction() as s:
                    found = await Customers(s, ring).search(q)
                finds.append((time.perf_counter() - t) * 1000)
                assert found, q
        await db.close()
    return {
        "db": kind,
        "n": n,
        "wall": wall,
        "cpu": cpu,
        "start": rate(0, 0.1),
        "end": rate(0.9, 1.0),
        "rewrap": rewrap_s,
        "find_p50": pct(finds, 50),
        "find_p99": pct(finds, 99),
        "split": spy_split(spied) if profile else None,
        "rss": (rss[0], max(rss)),
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--profile", action="store_true", help="run under cProfile, print the split")
    p.add_argument("--tmp", help="directory for the CSV and SQLite files (default: a temp dir)")
    args = p.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            for kind in kinds:
                results.append(r := await run_one(kind, n, tmp, args.profile))
                print(f"done: {kind} {n}: {r['wall']:.1f} s", file=sys.stderr, flush=True)
    print(
        table(
            [
                "db",
                "customers",
                "import s",
                "rows/s",
                "rows/s first 10%",
                "rows/s last 10%",
                "end/start",
                "CPU s (process)",
                "RSS MB before / peak",
                "re-wrap all s",
                "find p50 ms",
                "find p99 ms",
            ],
            [
                [
                    r["db"],
                    r["n"],
                    r["wall"],
                    r["n"] / r["wall"],
                    r["start"],
                    r["end"],
                    f"{r['end'] / r['start']:.2f}",
                    r["cpu"],
                    f"{r['rss'][0]:.0f} / {r['rss'][1]:.0f}",
                    r["rewrap"],
                    r["find_p50"],
                    r["find_p99"],
                ]
                for r in results
            ],
        )
    )
    profiled = [r for r in results if r["split"]]
    if profiled:
        names = [c for c, _ in CATEGORIES] + ["other"]
        print()
        print(
            table(
                ["db", "customers", *(f"{c} %" for c in names), "samples"],
                [
                    [
                        r["db"],
                        r["n"],
                        *(100 * r["split"].get(c, 0) / sum(r["split"].values()) for c in names),
                        sum(r["split"].values()),
                    ]
                    for r in profiled
                ],
            )
        )
        print("Share of the process's busy samples (py-spy, every thread, 100/s; idle left out).")


if __name__ == "__main__":
    asyncio.run(main())
