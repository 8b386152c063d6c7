"""The one seam for SQL that differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


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
