"""Departments kept in the shared database, as several replicas start at once."""

import asyncio

from bot.config import parse_config
from storage.departments import all_departments, sync_from_config
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
