"""Alembic, driven from code: `reporun db upgrade` and `reporun serve` call `upgrade`.

Starting a worker or an API checks the schema with one query against `SCHEMA_HEAD`, without
loading Alembic (a test keeps the constant equal to the newest migration).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

SCHEMA_HEAD = "0016"
# The advisory lock `upgrade` holds on PostgreSQL, so that migrations started at once (an init
# container in each API replica, two operators) run one after the other: the first migrates,
# the others find the schema current.
MIGRATION_LOCK = 0x7265706F72756E  # "reporun"

logger = logging.getLogger("reporun.store")


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
    """Migrate to `revision`; one log line when there is something to do, none otherwise."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    def run(connection: Connection) -> None:
        config = alembic_config(connection)
        current = MigrationContext.configure(connection).get_current_revision()
        if revision == "head":
            target = ScriptDirectory.from_config(config).get_current_head()
        else:
            target = revision
        if current == target:
            return
        logger.info(
            f"migrating the database from {current or 'empty'} to {target}",
            extra={"action": "migrate", "current": current, "target": target},
        )
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
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
