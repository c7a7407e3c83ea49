"""The real bot as a process, and everything around it, for the fault tests and bench/load.py.

    async with Stack.open(amqp_url) as stack:          # sandbox, PostgreSQL db, config, vhost
        bot = await stack.start_bot()                  # `crm-bot serve`, ready (/readyz 200)
        stream = EventStream(stack.amqp_url, customers)
        ...
        await bot.kill()                               # SIGKILL
        await bot.start()                              # the same port again

The bot runs as `.venv/bin/crm-bot serve` with its settings in the environment only (a clean
environment, its own working directory so no `.env` is read): the Slack API is the sandbox in
this process, the database a throwaway PostgreSQL database migrated with `crm-bot migrate`,
the broker a vhost of the caller's. Nothing here sleeps to wait for something except the
paced loops that *make* load (publishing at a rate, users between actions).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url

from bot.sandbox import Sandbox, SlackClientSim
from tests.fixtures.bot import TEST_CONFIG
from tests.fixtures.db import KEY_LINE, _admin
from tests.fixtures.services import PG_URL
from tests.fixtures.slack import BOT_TOKEN, SCOPES, SIGNING_SECRET
from tests.poll import eventually

ROOT = Path(__file__).resolve().parents[2]
CRM_BOT = ROOT / ".venv" / "bin" / "crm-bot"
CLEARED = ("SLACK_", "DATABASE_URL", "AMQP_URL", "CRM_", "PORT")
# Alerts coalesce per customer and channel for 10 s, so a test's burst of alerts stays under
# Slack's one message per second per channel and drains in seconds. A failed event is retried
# after 1, 5, 5 and 5 s (16 s in all, against the default 66 s): longer than any outage here,
# and short enough that an event that can never apply is dead-lettered within the test.
FAULT_CONFIG = TEST_CONFIG + "\n[sync]\ncoalesce_seconds = 10\nretry_delays = [1, 5]\n"
PG_ADMIN = PG_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hold_for(seconds: float) -> None:
    """Let `seconds` pass: for a fault whose length *is* the point (an outage), never to wait
    for something to happen (poll with `eventually` for that)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), seconds)


# --- PostgreSQL ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def throwaway_pg() -> AsyncIterator[tuple[str, str]]:
    """(database name, URL) of a new empty PostgreSQL database, dropped afterwards."""
    name = f"crm_faults_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield name, make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the bot process ----------------------------------------------------------------------------


class BotProcess:
    """One `crm-bot serve`: start (and wait for /readyz), kill -9, terminate, RSS."""

    def __init__(self, env: dict[str, str], workdir: Path, port: int, name: str = "bot") -> None:
        self.env = {**env, "PORT": str(port)}
        self.workdir = workdir
        self.port = port
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = workdir / f"{name}.log"
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, ready_within: float = 40.0) -> None:
        assert not self.running, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - handed to the child
        log.write(f"\n--- start {self.starts + 1} ---\n".encode())
        log.flush()
        self.proc = await asyncio.create_subprocess_exec(
            str(CRM_BOT),
            "serve",
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1
        await self.wait_ready(ready_within)

    async def ready(self) -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(self.url + "/readyz") as resp,
            ):
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def wait_ready(self, within: float = 40.0) -> None:
        async def check() -> bool:
            if not self.running:
                raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
            return await self.ready()

        try:
            await eventually(check, within, interval=0.1, what=f"{self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self, within: float = 30.0) -> int | None:
        """SIGTERM and wait for the drain (SIGKILL if it takes longer than `within`)."""
        if not self.running:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            await self.kill()
            return None

    def rss_mb(self) -> float | None:
        """Resident memory of the process in MiB (Linux), None when it is not running."""
        if not self.running:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- everything around it -----------------------------------------------------------------------


def run_cli(env: dict[str, str], workdir: Path, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(CRM_BOT), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"crm-bot {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Stack:
    """The sandbox (in this process), a migrated database, the config file and the broker."""

    sandbox: Sandbox
    workdir: Path
    db_name: str
    db_url: str
    amqp_url: str
    env: dict[str, str]
    bots: list[BotProcess] = field(default_factory=list)
    sims: list[SlackClientSim] = field(default_factory=list)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, amqp_url: str, workdir: Path, config: str = FAULT_CONFIG
    ) -> AsyncIterator[Stack]:
        sandbox = await Sandbox.start(bot_token=BOT_TOKEN, scopes=SCOPES)
        try:
            async with throwaway_pg() as (db_name, db_url):
                config_path = workdir / "crm-bot.toml"
                config_path.write_text(config)
                base = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
                base.update(
                    PYTHONPATH=str(ROOT),
                    SLACK_BOT_TOKEN=BOT_TOKEN,
                    SLACK_SIGNING_SECRET=SIGNING_SECRET,
                    SLACK_API_URL=sandbox.api_url,
                    DATABASE_URL=db_url,
                    AMQP_URL=amqp_url,
                    CRM_MASTER_KEYS=KEY_LINE,
                    CRM_CONFIG=str(config_path),
                )
                await asyncio.to_thread(run_cli, base, workdir, "migrate")
                stack = cls(sandbox, workdir, db_name, db_url, amqp_url, base)
                try:
                    yield stack
                finally:
                    await stack.close()
        finally:
            await sandbox.stop()

    def env_with(self, **values: str) -> dict[str, str]:
        return {**self.env, **values}

    async def start_bot(self, *, database_url: str | None = None, name: str = "") -> BotProcess:
        env = self.env_with(DATABASE_URL=database_url) if database_url else self.env
        bot = BotProcess(env, self.workdir, free_port(), name or f"bot{len(self.bots) + 1}")
        self.bots.append(bot)
        await bot.start()
        return bot

    def sim_for(self, bot: BotProcess) -> SlackClientSim:
        sim = SlackClientSim(bot.url + "/slack/events", SIGNING_SECRET, self.sandbox)
        self.sims.append(sim)
        return sim

    async def close(self) -> None:
        for sim in self.sims:
            await sim.close()
        for bot in self.bots:
            await bot.stop(within=15)


def bot_logs(stack: Stack) -> str:
    return "\n\n".join(f"== {b.name} ==\n{b.log_tail(60)}" for b in stack.bots)


__all__ = [
    "BotProcess",
    "Stack",
    "free_port",
    "hold_for",
    "run_cli",
    "throwaway_pg",
]
