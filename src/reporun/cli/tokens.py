"""`reporun token create | list | revoke`: local tokens, recorded in the server's database.

Run beside the server with its configuration: REPORUN_SECRET_KEY and REPORUN_DATABASE_URL for
`reporun api`, else the data dir of the `reporun serve` running on REPORUN_URL (or the default
data dir), whose signing key and database they use.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reporun.cli import show
from reporun.cli.base import local_settings, run, token_app
from reporun.errors import ConfigError

if TYPE_CHECKING:
    from reporun.config import Settings
    from reporun.store import Store
    from reporun.store.tokens import TokenRecord

COLUMNS = ("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE")


def _signing_key(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    try:
        return settings.secret_key_path.read_text().strip()
    except OSError:
        raise ConfigError(
            f"no signing key: set REPORUN_SECRET_KEY, or start `reporun serve` once "
            f"(it keeps its key in {settings.secret_key_path})"
        ) from None


@asynccontextmanager
async def _records(settings: Settings, *, read_only: bool = False) -> AsyncIterator[Store]:
    """The server's store, when its database exists and is current (none is ever created)."""
    from reporun.store import Store
    from reporun.store.engine import sqlite_file
    from reporun.store.migrate import is_current

    url = settings.db_url
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(
            f"no database at {path}: start `reporun serve` (it creates one) or set REPORUN_DATA_DIR"
        )
    store = Store.open(url, read_only=read_only)
    try:
        if not await is_current(store.engine):
            raise ConfigError("the database schema is not current: run `reporun db upgrade`")
        yield store
    finally:
        await store.close()


def _local(stamp: datetime | None, never: str = "never") -> str:
    return never if stamp is None else show.local_time(stamp)


def _utc(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_json(record: TokenRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "created_at": _utc(record.created_at),
        "expires_at": _utc(record.expires_at),
        "revoked_at": _utc(record.revoked_at),
        "state": record.state(now),
    }


@token_app.command("create")
def token_create(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Who the token is for.", show_default=False)
    ],
    role: Annotated[
        str, typer.Option(metavar="user|admin", help="What the token may do.")
    ] = "user",
    ttl: Annotated[
        int | None,
        typer.Option(
            min=60, metavar="SECONDS", help="Lifetime of the token.", show_default="no expiry"
        ),
    ] = None,
) -> None:
    """Mint an access token.

    The token alone on stdout (for `export REPORUN_TOKEN=$(reporun token create ci)`), its id,
    role and expiry on stderr.
    """
    from reporun.api.auth import LocalAuth

    settings = local_settings()

    async def create() -> None:
        async with _records(settings) as store:
            auth = LocalAuth(_signing_key(settings), store.tokens)
            issued = auth.mint(name, role, ttl=ttl)  # checks the name and role first
            await store.tokens.add(issued.record)
        record = issued.record
        print(issued.token, flush=True)
        print(
            f"token {record.id} for {record.name}: role {record.role}, "
            f"expires {_local(record.expires_at)}\n"
            f"use it: export REPORUN_TOKEN=<the token> for the CLI, or send "
            f"'Authorization: Bearer <the token>' over HTTP",
            file=sys.stderr,
        )

    run(create())


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the tokens as JSON.")] = False,
) -> None:
    """List the tokens this server issued.

    Revoked and expired ones too, with their state.
    """
    settings = local_settings()

    async def listing() -> None:
        async with _records(settings, read_only=True) as store:
            records = await store.tokens.list_tokens()
        now = datetime.now(UTC)
        if as_json:
            print(json.dumps([_as_json(r, now) for r in records], indent=2))
            return
        if not records:
            print("no tokens", file=sys.stderr)
            return
        rows = [
            (
                r.id,
                r.name,
                r.role,
                _local(r.created_at),
                _local(r.expires_at),
                r.state(now),
            )
            for r in records
        ]
        print(show.table(COLUMNS, rows, show.use_colour(sys.stdout)))

    run(listing())


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="A token's id, or its start.")],
) -> None:
    """Revoke a token.

    The server refuses it from its next request on.
    """
    settings = local_settings()

    async def revoke() -> None:
        async with _records(settings) as store:
            record, revoked = await store.tokens.revoke(token_id)
        if revoked:
            print(f"revoked token {record.id} ({record.name}, {record.role})")
        else:
            print(
                f"token {record.id} ({record.name}, {record.role}) was already revoked at "
                f"{_local(record.revoked_at)}"
            )

    run(revoke())
