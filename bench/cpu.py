"""Where a benchmark's CPU went: CPU seconds per process, read from /proc (Linux only).

    before = cpu.snapshot()
    ...                                  # the run
    spent = cpu.since(before)            # {pid: (command name, CPU seconds in the run)}
    cpu.total(spent, pids={os.getpid()}) # this process
    cpu.total(spent, names={"postgres"}) # every PostgreSQL process

A process that exited during the run is not counted (its time is gone from /proc), one that
started during it counts in full. Elsewhere than Linux every figure is NaN.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

Snapshot = dict[int, tuple[str, float]]  # pid -> (command name, user + system CPU seconds)


def _read(pid: int) -> tuple[str, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def snapshot() -> Snapshot | None:
    if not os.path.isdir("/proc/self"):
        return None
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (read := _read(int(entry))) is not None:
            found[int(entry)] = read
    return found


def since(before: Snapshot | None) -> Snapshot | None:
    after = snapshot()
    if before is None or after is None:
        return None
    return {
        pid: (name, seconds - before.get(pid, (name, 0.0))[1])
        for pid, (name, seconds) in after.items()
    }


def total(spent: Snapshot | None, *, pids: Iterable[int] = (), names: Iterable[str] = ()) -> float:
    """CPU seconds spent by the processes in `pids` or with a command name in `names`."""
    if spent is None:
        return math.nan
    pids, names = set(pids), set(names)
    return sum(s for pid, (name, s) in spent.items() if pid in pids or name in names)


def everything(spent: Snapshot | None) -> float:
    """CPU seconds spent by every process on the machine."""
    return math.nan if spent is None else sum(s for _, s in spent.values())


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
