"""The one seam for SQL that differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def seconds_between(start: Any, end: Any, dialect: str) -> sa.ColumnElement[float]:
    """`end - start` in seconds, as a SQL expression."""
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0
    return sa.cast(sa.extract("epoch", end - start), sa.Float)
