"""The one seam for SQL that differs between SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def clock(engine: AsyncEngine) -> Any:
    """Now, on the clock every host shares where there is one: PostgreSQL's `now()` (so lease
    deadlines do not depend on the workers' clocks); Python's on SQLite (one host)."""
    if engine.dialect.name == "postgresql":
        return sa.func.now()
    return datetime.now(UTC)


async def read_clock(conn: AsyncConnection) -> datetime:
    """The time now on `clock`'s clock (a round trip only on PostgreSQL)."""
    current = clock(conn.engine)
    if isinstance(current, datetime):
        return current
    value: datetime = (await conn.execute(sa.select(current))).scalar_one()
    return value.astimezone(UTC)


def seconds_between(start: Any, end: Any, dialect: str) -> sa.ColumnElement[float]:
    """`end - start` in seconds, as a SQL expression."""
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0
    return sa.cast(sa.extract("epoch", end - start), sa.Float)


async def lock_owner(conn: AsyncConnection, owner: str) -> None:
    """Serialize one owner's submissions for the rest of the transaction, so each sees the
    previous one's fair tag. SQLite needs nothing: its INSERT ... SELECT runs under the write
    lock."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(owner))))


# Wake-ups: PostgreSQL tells listening workers about new jobs at once (LISTEN/NOTIFY); SQLite
# has no such thing and its workers poll.
CHANNEL = "reporun_jobs"
# Kafka mode: a row was added to the outbox (the relays listen).
OUTBOX_CHANNEL = "reporun_outbox"


def notifies(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def notify(conn: AsyncConnection, channel: str = CHANNEL) -> None:
    """Announce a job (or an outbox row) to listeners, when the transaction commits."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_notify(channel, "")))


class Listener:
    """One connection held open with LISTEN, calling `on_notify` for each announcement."""

    def __init__(
        self, engine: AsyncEngine, on_notify: Callable[[], None], channel: str = CHANNEL
    ) -> None:
        self.engine = engine
        self.on_notify = on_notify
        self.channel = channel
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    @property
    def alive(self) -> bool:
        return self._driver is not None and not self._driver.is_closed()

    async def start(self) -> None:
        await self.close()
        conn = await self.engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg.Connection
            await driver.add_listener(self.channel, self._callback)
        except BaseException:
            await conn.invalidate()
            await conn.close()
            raise
        self._conn, self._driver = conn, driver

    def _callback(self, *_: object) -> None:
        self.on_notify()

    async def close(self) -> None:
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
