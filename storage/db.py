"""The async engine and units of work, for SQLite (WAL, foreign keys on) and PostgreSQL.

Repositories take a session and never commit; `Database.transaction()` is the one place a unit
of work commits (or rolls back on an exception).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


async def rowcount(session: AsyncSession, statement: Executable) -> int:
    """Execute an INSERT, UPDATE or DELETE; how many rows it changed. (Session.execute is typed
    as returning a plain Result for any statement; for these it is a CursorResult.)"""
    result = await session.execute(statement)
    return cast(CursorResult[Any], result).rowcount


async def driver_connection(session: AsyncSession) -> Any:
    """The driver's own connection under `session` (asyncpg's, aiosqlite's), for COPY and
    executemany without SQLAlchemy's per-row work."""
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    if raw is None:  # the pool invalidated it: fail like any lost connection (the caller retries)
        raise DisconnectionError("database connection invalidated")
    return raw


class DatabaseError(Exception):
    """The database URL is wrong or the database is behind its migrations."""


def make_engine(url: str, **kwargs) -> AsyncEngine:
    try:
        parsed = make_url(url)
    except Exception:
        raise DatabaseError("DATABASE_URL is not a database URL") from None
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, connect_args={"timeout": 30}, **kwargs)
        _sqlite_setup(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(parsed, **kwargs)
    raise DatabaseError(f"DATABASE_URL: unsupported database {parsed.get_backend_name()!r}")


def _sqlite_setup(engine: AsyncEngine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so concurrent writers queue instead of failing."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_in_transaction: ContextVar[bool] = ContextVar("in_transaction", default=False)


class Database:
    def __init__(self, url: str, **engine_kwargs):
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time, and every transaction here begins IMMEDIATE. This
        # process's transactions queue on a lock, first come first served, instead of in
        # SQLite's busy handler, which sleeps and retries: there, a steady writer (the sync
        # consumer) starves the others (alert posting waited until the stream ended).
        self._writer = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back on an exception."""
        if self._writer is None or _in_transaction.get():
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._writer:
            token = _in_transaction.set(True)
            try:
                async with self.sessions() as session, session.begin():
                    yield session
            finally:
                _in_transaction.reset(token)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self.engine.dispose()
