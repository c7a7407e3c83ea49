"""Opening the shared database and its keys from settings, the way every command does."""

from __future__ import annotations

from bot.lib.config import ConfigError, Settings
from storage.crypto import KeyRing
from storage.db import Database, DatabaseError
from storage.migrate import is_current, upgrade
from storage.vault import Vault


async def open_storage(settings: Settings, *, migrate: bool = False) -> tuple[Database, Vault]:
    """The database (checked to be migrated, or migrated when asked) and the vault."""
    settings.require("crm_master_keys")
    ring = KeyRing.parse(settings.crm_master_keys)
    db = Database(settings.database_url)
    try:
        if not await db.ping():
            raise DatabaseError("the database at DATABASE_URL does not answer")
        if migrate:
            await upgrade(db)
        elif not await is_current(db):
            raise DatabaseError("the database is behind its migrations: run `crm-bot migrate`")
        vault = Vault(ring)
        async with db.transaction() as session:
            await vault.load(session)
    except BaseException:
        await db.close()
        raise
    return db, vault


__all__ = ["ConfigError", "open_storage"]
