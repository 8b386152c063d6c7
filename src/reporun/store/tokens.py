"""The local tokens a server issued (`reporun token create`, and `serve`'s admin token): the
authenticator looks each one up on every request, so a revoked token is refused at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from reporun.errors import InvalidInput
from reporun.store.tables import tokens

# What `token revoke` takes: a token's id, or the start of one (at least this long).
MIN_PREFIX = 6
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str  # the token's `jti`
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _record(row: Any) -> TokenRecord:
    return TokenRecord(**dict(row._mapping))


class TokenRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, record: TokenRecord) -> None:
        values = {
            "id": record.id,
            "name": record.name,
            "role": record.role,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "revoked_at": record.revoked_at,
        }
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(tokens).values(**values))

    async def get(self, token_id: str) -> TokenRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(tokens).where(tokens.c.id == token_id))).first()
        return None if row is None else _record(row)

    async def active(self, token_id: str) -> TokenRecord | None:
        """The token's record while it is neither revoked nor expired."""
        record = await self.get(token_id)
        if record is None or record.state(datetime.now(UTC)) != "active":
            return None
        return record

    async def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first (revoked and expired ones too)."""
        stmt = sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id)
        async with self.engine.connect() as conn:
            return [_record(row) for row in await conn.execute(stmt)]

    async def find(self, id_or_prefix: str) -> TokenRecord:
        """The token with this id, or the only one whose id starts with it; InvalidInput
        naming `id` when there is none or more than one."""
        if not _ID.match(id_or_prefix):
            raise InvalidInput(f"{id_or_prefix!r} is not a token id", field="id")
        exact = await self.get(id_or_prefix)
        if exact is not None:
            return exact
        if len(id_or_prefix) < MIN_PREFIX:
            raise InvalidInput(
                f"no token {id_or_prefix} (give an id, or at least its first {MIN_PREFIX} "
                "characters)",
                field="id",
            )
        stmt = sa.select(tokens).where(tokens.c.id.startswith(id_or_prefix, autoescape=True))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.limit(2))).all()
        if not rows:
            raise InvalidInput(f"no token {id_or_prefix}", field="id")
        if len(rows) > 1:
            raise InvalidInput(f"more than one token id starts with {id_or_prefix}", field="id")
        return _record(rows[0])

    async def revoke(self, id_or_prefix: str) -> tuple[TokenRecord, bool]:
        """Revoke a token (see `find`): the record after, and whether this call revoked it (false:
        it already was)."""
        found = await self.find(id_or_prefix)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(tokens)
                .where(tokens.c.id == found.id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        record = await self.get(found.id)
        assert record is not None
        return record, bool(result.rowcount)
