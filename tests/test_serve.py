"""`crm-bot serve` as a real process: one-line refusals with exit code 2, and a clean stop on
SIGTERM after serving Slack's requests; and how its periodic jobs report failing runs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from bot.sandbox import SlackClientSim
from bot.service import run_every
from storage.db import Database
from storage.migrate import upgrade
from tests.fixtures.bot import ALICE, SALES, TEST_CONFIG
from tests.fixtures.db import KEY_LINE
from tests.fixtures.slack import BOT_TOKEN, SIGNING_SECRET, eventually

ROOT = Path(__file__).resolve().parents[1]
CLEARED = ("SLACK_", "DATABASE_URL", "AMQP_URL", "CRM_", "PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    env["PYTHONPATH"] = str(ROOT)
    env.update(values)
    return env


async def start(tmp_path: Path, port: int, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(proc: asyncio.subprocess.Process, within: float = 30) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), within)
    return proc.returncode, err.decode()


def full_env(tmp_path: Path, db_file: Path, api_url: str = "http://127.0.0.1:9/api/"):
    config = tmp_path / "crm-bot.toml"
    config.write_text(TEST_CONFIG)
    return env_for(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=api_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{db_file}",
        CRM_MASTER_KEYS=KEY_LINE,
        CRM_CONFIG=str(config),
    )


async def test_missing_settings_is_one_line_and_exit_2(tmp_path):
    proc = await start(tmp_path, free_port(), env_for())
    code, err = await finished(proc)
    assert code == 2
    assert err.strip().splitlines() == [
        "crm-bot: missing setting: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, CRM_MASTER_KEYS"
        " (set it in the environment or .env)"
    ]


async def test_a_database_behind_its_migrations_is_refused(tmp_path):
    db_file = tmp_path / "old.db"
    db = Database(f"sqlite+aiosqlite:///{db_file}")
    assert await db.ping()  # an empty database: no schema at all
    await db.close()
    proc = await start(tmp_path, free_port(), full_env(tmp_path, db_file))
    code, err = await finished(proc)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "run `crm-bot migrate`" in lines[0], err


async def test_serves_until_sigterm_then_exits_cleanly(tmp_path, sandbox):
    db_file = tmp_path / "crm.db"
    db = Database(f"sqlite+aiosqlite:///{db_file}")
    await upgrade(db)
    await db.close()
    port = free_port()
    proc = await start(tmp_path, port, full_env(tmp_path, db_file, sandbox.api_url))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                assert proc.returncode is None, "serve exited early"
                try:
                    async with http.get(base + "/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(healthy, within=30, interval=0.1)
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
        async with SlackClientSim(base + "/slack/events", SIGNING_SECRET, sandbox) as sim:
            reply = await sim.command(ALICE, SALES, "/crm", "help")
            assert reply.status == 200 and "work on the same customers" in reply.body
            assert (await sim.command(ALICE, SALES, "/crm", "help", signing="wrong")).status == 401
        proc.send_signal(signal.SIGTERM)
        code, err = await finished(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, err
    assert "crm-bot stopped" in err
    assert "Traceback" not in err


async def test_a_job_failing_run_after_run_is_logged_once_with_its_traceback(caplog):
    """A database outage makes every run of the periodic jobs fail: one error with the
    traceback for the streak, one line when a run works again, not a traceback a second."""
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ConnectionError("database unavailable")

    caplog.set_level(logging.INFO, logger="bot.service")
    stopping = asyncio.Event()
    task = asyncio.create_task(run_every("sync-alerts", 0.01, job, stopping))
    try:
        await eventually(lambda: runs >= 6)
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=5)
    records = [r for r in caplog.records if r.name == "bot.service"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", "job sync-alerts failed; it runs again every 0.01s"),
        ("INFO", "job sync-alerts works again after 3 failed runs"),
    ]
    assert records[0].exc_info is not None


async def test_a_stop_lets_a_jobs_run_under_way_finish():
    """On stop, a job's run under way (a transaction, say) finishes rather than being
    cancelled mid-way, and no new run starts."""
    started, release, finished = asyncio.Event(), asyncio.Event(), []

    async def job() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    stopping = asyncio.Event()
    task = asyncio.create_task(run_every("audit-head", 60, job, stopping))
    await asyncio.wait_for(started.wait(), timeout=5)
    stopping.set()
    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert finished == [True] and not task.cancelled()
