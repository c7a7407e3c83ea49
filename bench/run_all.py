"""Run every benchmark and rewrite their tables (and the machine they ran on) in bench/README.md.

    .venv/bin/python bench/run_all.py            # full sizes (tens of minutes)
    .venv/bin/python bench/run_all.py --quick    # small sizes, a 15 s load test (~3 minutes)
    .venv/bin/python bench/run_all.py --only load,sync

Each benchmark runs as its own process (as a person would run it) and prints Markdown tables;
those tables replace what is between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in
bench/README.md, with the command line and the date. The load test also redraws its charts
(bench/load-alert-delay.png, bench/load-memory.png). A benchmark that fails leaves its section
as it was and is reported at the end (exit code 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
PYTHON = str(ROOT / ".venv" / "bin" / "python")

UPDATES_10K = ("--events", "10000", "--customers", "10000")
UPDATES_2K = ("--events", "2000", "--customers", "2000")
# name -> (full arguments, quick arguments)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "lookup": (["bench/lookup.py"], ["bench/lookup.py", "--sizes", "2000", "--samples", "100"]),
    "import": (
        ["bench/import.py", "--profile"],
        ["bench/import.py", "--sizes", "2000", "--profile"],
    ),
    "sync-creations": (
        ["-m", "bench.sync", "--mix", "creations", "--events", "10000", "--replicas", "1"],
        ["-m", "bench.sync", "--mix", "creations", "--events", "2000", "--replicas", "1"],
    ),
    "sync-updates": (
        ["-m", "bench.sync", "--mix", "updates", "--replicas", "1", *UPDATES_10K],
        ["-m", "bench.sync", "--mix", "updates", "--replicas", "1", *UPDATES_2K],
    ),
    "commands": (
        ["-m", "bench.commands"],
        ["-m", "bench.commands", "--customers", "5000", "--rounds", "2"],
    ),
    "sync": (["-m", "bench.sync"], ["-m", "bench.sync", "--events", "2000", "--customers", "500"]),
    "sync-backlog": (
        ["-m", "bench.sync", "--backlog", "100000", "--seconds", "60"],
        ["-m", "bench.sync", "--backlog", "10000", "--seconds", "10"],
    ),
    "load": (["bench/load.py"], ["bench/load.py", "--seconds", "15"]),
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = next(
            int(x.split()[1])
            for x in Path("/proc/meminfo").read_text().splitlines()
            if x.startswith("MemTotal")
        )
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        memory = "unknown memory"
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory} RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; PostgreSQL and RabbitMQ "
        "on the same machine"
    )


def tables(output: str) -> str:
    """The Markdown tables (and the one-line notes right after them) in a benchmark's output."""
    keep, in_table = [], False
    for line in output.splitlines():
        if line.startswith("|"):
            if not in_table and keep:
                keep.append("")
            keep.append(line)
            in_table = True
        elif in_table and line.strip():
            keep.append("")
            keep.append(line.strip())
            in_table = False
        else:
            in_table = False
    return "\n".join(keep).strip()


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    block = f"{start}\n{body}\n{end}"
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + f"\n\n{block}\n"


def run(name: str, args: list[str]) -> tuple[bool, str]:
    print(f"running {name}: python {' '.join(args)}", file=sys.stderr, flush=True)
    result = subprocess.run([PYTHON, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return False, result.stderr[-2000:]
    return True, result.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and a 15 s load test")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated benchmark names")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    text = README.read_text()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    text = replace_section(text, "machine", f"Measured on {today}: {machine()}.")
    failed = []
    for name in names:
        full, quick = BENCHES[name]
        argv = quick if args.quick else full
        ok, output = run(name, argv)
        if not ok:
            failed.append(name)
            print(f"{name} failed:\n{output}", file=sys.stderr)
            continue
        print(output)
        command = "python " + " ".join(argv)
        body = f"`{command}`, {today}:\n\n{tables(output)}"
        text = replace_section(text, name, body)
        README.write_text(text)  # keep what finished even if a later one fails
    README.write_text(text)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
