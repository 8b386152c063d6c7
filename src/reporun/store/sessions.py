"""The dashboard's sign-ins: browser sessions and one-time sign-in codes.

Both are kept by the SHA-256 of their secret, never the secret: a reader of the database can
neither use a session nor redeem a code. A code is deleted by the statement that redeems it,
so it works once however many browsers race for it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from reporun.store.tables import signin_codes, web_sessions


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class WebSession:
    name: str
    roles: frozenset[str]
    csrf: str
    expires_at: datetime
    id_token: str | None = None
    token_id: str | None = None  # the local token it came from, if one did


@dataclass(frozen=True, slots=True)
class Redeemed:
    """Whom a sign-in code signs in."""

    name: str
    roles: frozenset[str]
    token_id: str | None


@dataclass(frozen=True, slots=True)
class Opened:
    """A new session: the cookie's secret (given to the browser once) and the session."""

    secret: str
    session: WebSession


def _roles(text: str) -> frozenset[str]:
    return frozenset(r for r in text.split(",") if r)


class Sessions:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def open(
        self,
        name: str,
        roles: frozenset[str],
        *,
        ttl: float,
        id_token: str | None = None,
        token_id: str | None = None,
    ) -> Opened:
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        session = WebSession(
            name=name,
            roles=roles,
            csrf=secrets.token_urlsafe(32),
            expires_at=now + timedelta(seconds=ttl),
            id_token=id_token,
            token_id=token_id,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.delete(web_sessions).where(web_sessions.c.expires_at <= now)
            )  # the expired ones go as new ones come
            await conn.execute(
                sa.insert(web_sessions).values(
                    id=digest(secret),
                    name=name,
                    roles=",".join(sorted(roles)),
                    csrf=session.csrf,
                    id_token=id_token,
                    token_id=token_id,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return Opened(secret, session)

    async def get(self, secret: str) -> WebSession | None:
        """The session of a cookie, while it has not expired or been closed."""
        stmt = sa.select(web_sessions).where(
            web_sessions.c.id == digest(secret),
            web_sessions.c.expires_at > datetime.now(UTC),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return WebSession(
            name=row.name,
            roles=_roles(row.roles),
            csrf=row.csrf,
            expires_at=row.expires_at,
            id_token=row.id_token,
            token_id=row.token_id,
        )

    async def close(self, secret: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(web_sessions).where(web_sessions.c.id == digest(secret)))

    async def new_code(
        self, name: str, roles: frozenset[str], *, ttl: float, token_id: str | None = None
    ) -> str:
        """A one-time sign-in code for `name`, good for `ttl` seconds."""
        code = secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(signin_codes).where(signin_codes.c.expires_at <= now))
            await conn.execute(
                sa.insert(signin_codes).values(
                    id=digest(code),
                    name=name,
                    roles=",".join(sorted(roles)),
                    token_id=token_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
        return code

    async def peek(self, code: str) -> str | None:
        """Whom a code would sign in, leaving it unused (None: unknown, used or expired)."""
        stmt = sa.select(signin_codes.c.name).where(
            signin_codes.c.id == digest(code), signin_codes.c.expires_at > datetime.now(UTC)
        )
        async with self.engine.connect() as conn:
            name: str | None = (await conn.execute(stmt)).scalar()
        return name

    async def redeem(self, code: str) -> Redeemed | None:
        """Who a code signs in, once: the code is gone after (None: unknown, used or expired)."""
        stmt = (
            sa.delete(signin_codes)
            .where(signin_codes.c.id == digest(code))
            .returning(
                signin_codes.c.name,
                signin_codes.c.roles,
                signin_codes.c.token_id,
                signin_codes.c.expires_at,
            )
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None or row.expires_at <= datetime.now(UTC):
            return None
        return Redeemed(row.name, _roles(row.roles), row.token_id)
