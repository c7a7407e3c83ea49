"""What every handler needs, built once in bot/app.py and passed to each `register`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from bot.lib.slack_out import SlackOut
from handlers.directory import Directory, ReaderCache
from handlers.home_refresh import Homes
from storage.db import Database
from storage.models import utcnow
from storage.vault import Vault

if TYPE_CHECKING:
    from bot.lib.config import CrmConfig


HomeSection = Callable[["Deps", str], Awaitable[list[dict]]]


@dataclass
class Deps:
    db: Database
    vault: Vault
    config: CrmConfig
    slack: SlackOut
    clock: Callable[[], datetime] = utcnow
    wake_outbox: Callable[[], None] = lambda: None
    # the App Home's sections by name ("handoffs", "approvals"), filled by the wiring
    # (handlers.register_listeners), so the home module imports no capability
    home_sections: dict[str, HomeSection] = field(default_factory=dict)
    directory: Directory = field(init=False)
    readers: ReaderCache = field(init=False)  # what users.info said (handlers/access.py)
    homes: Homes = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Directory(self.db, self.slack)
        self.readers = ReaderCache(ttl=self.config.access.users_cache_seconds)
        self.homes = Homes(self.directory)
