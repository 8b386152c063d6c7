"""Alembic, driven from code: `reporun db upgrade` and `reporun serve` call `upgrade`.

Starting a worker or an API checks the schema with one query against `SCHEMA_HEAD`, without
loading Alembic (a test keeps the constant equal to the newest migration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

SCHEMA_HEAD = "0006"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "reporun.store:migrations")
    config.attributes["connection"] = connection
    return config


def migration_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    from alembic import command

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def is_current(engine: AsyncEngine) -> bool:
    """Whether the database is at the newest migration."""
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            return {row[0] for row in rows} == {SCHEMA_HEAD}
    except DBAPIError as exc:
        if "alembic_version" in str(exc.orig):  # an empty database: no such table
            return False
        raise
