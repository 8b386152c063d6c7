"""The database engine. Dialect-specific settings live here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reporun.errors import ConfigError


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_engine(url: str, *, read_only: bool = False) -> AsyncEngine:
    """An engine for `url`; `read_only` opens a SQLite file without creating or changing
    anything (no file, directory, journal or schema)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if read_only and path is not None:
            return _read_only_sqlite(parsed.drivername, path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "PostgreSQL needs the asyncpg driver: pip install 'reporun[postgres]'"
            ) from None
        # Bounded waits everywhere: an outage gives errors (503 at the API), never a hang.
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            pool_timeout=10,
            connect_args={"timeout": 5, "command_timeout": 30},
        )
    raise ConfigError(f"unsupported database URL scheme {parsed.drivername!r}")


def _read_only_sqlite(driver: str, path: Path) -> AsyncEngine:
    # mode=ro never creates the file; with no write-ahead log present (no writer has it open),
    # immutable=1 also keeps SQLite from creating the -wal and -shm files beside it.
    wal = path.with_name(path.name + "-wal")
    options = "mode=ro" + ("" if wal.exists() else "&immutable=1")
    uri = f"{driver}:///file:{quote(str(path.resolve()))}?{options}&uri=true"
    engine = create_async_engine(uri, connect_args={"timeout": 30})
    event.listen(engine.sync_engine, "connect", _sqlite_read_only_pragmas)
    return engine


def _sqlite_read_only_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while workers write; the busy timeout waits out short writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
