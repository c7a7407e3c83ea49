"""`crm-bot serve`: the bot over HTTP on PORT (or Socket Mode when SLACK_APP_TOKEN is set),
until SIGTERM or SIGINT; then it drains in-flight work and stops cleanly.

It never migrates: a database behind its migrations is refused with a one-line message that
says to run `crm-bot migrate` (raised as DatabaseError, which the CLI prints, exit code 2).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bot.lib.config import ConfigError, Settings, load_config
from bot.service import BotService

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(settings: Settings, port: int | None = None) -> int:
    config = load_config(settings.crm_config)
    if port is not None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--port {port}: not a TCP port (1-65535)")
        settings = settings.model_copy(update={"port": port})
    service = BotService(settings, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await service.start(migrate=False)
        except OSError as exc:  # the port is taken, or not ours to bind
            raise ConfigError(f"cannot listen on port {settings.port}: {exc.strerror}") from None
        log.info("crm-bot is serving; SIGTERM or Ctrl-C stops it")
        await stop.wait()
        log.info("stopping: draining in-flight work")
    finally:
        await service.stop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    log.info("crm-bot stopped")
    return 0
