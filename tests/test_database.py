"""The database: its schema is the migrations' (SQLite and PostgreSQL); units of work on SQLite
take turns instead of starving."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from storage.db import Database
from storage.models import Base


async def test_a_steady_writer_does_not_starve_another_on_sqlite(tmp_path):
    """The sync consumer writes batch after batch; alert posting must get its turn between two
    of them (SQLite's own busy handler let it wait until the stream ended)."""
    db = Database(f"sqlite:///{tmp_path / 'turns.db'}")
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE t (who TEXT)"))
    steady_done = 0
    stop, going = asyncio.Event(), asyncio.Event()

    async def steady() -> None:
        nonlocal steady_done
        while not stop.is_set() and steady_done < 100:
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES ('steady')"))
                await asyncio.sleep(0.01)  # a batch's work, during which other tasks run
                await session.execute(text("INSERT INTO t VALUES ('steady')"))
            steady_done += 1
            if steady_done == 3:
                going.set()

    writer = asyncio.create_task(steady())
    try:
        await asyncio.wait_for(going.wait(), timeout=10)
        before = steady_done
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES ('other')"))
        waited_for = steady_done - before
    finally:
        stop.set()
        await writer
    async with db.transaction() as session:
        rows = (await session.execute(text("SELECT who, count(*) FROM t GROUP BY who"))).all()
    await db.close()
    assert dict(rows) == {"steady": 2 * steady_done, "other": 1}
    assert waited_for <= 2  # its turn came after the batch in progress (and one queued)


async def test_the_migrations_build_the_schema_the_models_describe(db):
    """A model changed without its migration (or the other way round) shows here, on both
    databases, before it reaches an upgraded production database."""
    async with db.engine.connect() as conn:
        drift = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert drift == []
