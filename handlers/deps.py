"""What every handler needs, built once in bot/app.py and passed to each `register`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from bot.lib.slack_out import SlackOut
from storage.db import Database
from storage.models import utcnow
from storage.vault import Vault

if TYPE_CHECKING:
    from bot.lib.config import CrmConfig
    from handlers.directory import Directory
    from handlers.home import Homes


@dataclass
class Deps:
    db: Database
    vault: Vault
    config: CrmConfig
    slack: SlackOut
    clock: Callable[[], datetime] = utcnow
    wake_outbox: Callable[[], None] = lambda: None
    directory: Directory = field(init=False)
    homes: Homes = field(init=False)

    def __post_init__(self) -> None:
        from handlers.directory import Directory
        from handlers.home import Homes

        self.directory = Directory(self)
        self.homes = Homes(self)
