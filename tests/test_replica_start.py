"""What each replica sets up in the shared database at start-up, as several start at once."""

import asyncio

from bot.lib.config import parse_config
from storage.departments import all_departments, sync_from_config
from storage.vault import Vault
from tests.fixtures.bot import TEST_CONFIG


async def test_replicas_starting_together_all_load_the_departments(db):
    """Each replica makes the table match its config at start-up; several doing so at the
    same moment on an empty database must all start (one crashed on a duplicate key)."""
    config = parse_config(TEST_CONFIG)

    async def start_one() -> None:
        async with db.transaction() as session:
            await sync_from_config(session, config.departments)

    await asyncio.gather(*(start_one() for _ in range(4)))
    async with db.transaction() as session:
        found = await all_departments(session)
    assert set(found) == set(config.departments)
    for key, dept in config.departments.items():
        assert found[key].channel_id == dept.channel
        assert found[key].members == frozenset([*dept.members, *dept.leads])


async def test_replicas_starting_together_share_one_set_of_keys(db, ring):
    """The first start on a new database makes the blind-index and audit keys; replicas
    making them at the same moment all start, and all end up with the same keys."""
    vaults = [Vault(ring) for _ in range(4)]

    async def load(vault: Vault) -> None:
        async with db.transaction() as session:
            await vault.load(session)

    await asyncio.gather(*(load(v) for v in vaults))
    assert len({v.audit_key for v in vaults}) == 1
    digests = {v.indexers[1].digest("email", "ada@example.com") for v in vaults}
    assert len(digests) == 1
