"""Who is calling: bearer tokens, roles `user` and `admin`.

Local mode: HS256 tokens signed by the server's key and recorded in its database (`reporun
token create` mints them, `token revoke` revokes them). OIDC mode is `reporun.api.oidc`.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import jwt

from reporun.errors import ConfigError, InvalidInput, Unauthorized
from reporun.store.tokens import TokenRecord

ROLES = ("user", "admin")
LOCAL_ISSUER = "reporun-local"
LEEWAY = 30
NOT_ISSUED = "the token is not one this server issued"
UNRECORDED = (
    "the token is not among this server's tokens (minted before tokens were recorded, or its "
    "record was removed); mint a new one with `reporun token create`"
)
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str]
    # A local token's id (`jti`) and expiry: what a dashboard session opened with it ends with.
    token_id: str | None = field(default=None, compare=False)
    expires_at: datetime | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


class TokenRegistry(Protocol):
    """Where local tokens are recorded: `reporun.store.tokens.TokenRecords`, or `MemoryTokens`."""

    async def add(self, record: TokenRecord) -> None: ...

    async def get(self, token_id: str) -> TokenRecord | None: ...


class MemoryTokens:
    """A token registry in a dict, for unit tests."""

    def __init__(self) -> None:
        self.records: dict[str, TokenRecord] = {}

    async def add(self, record: TokenRecord) -> None:
        self.records[record.id] = record

    async def get(self, token_id: str) -> TokenRecord | None:
        return self.records.get(token_id)


@dataclass(frozen=True, slots=True)
class Issued:
    """A freshly minted token and the record that makes it valid once added to the registry."""

    token: str
    record: TokenRecord


def _when(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class LocalAuth:
    """HS256 tokens signed with the server's key. A token is valid while its signature, issuer
    and expiry are, and its `jti` is recorded in the registry and not revoked: a token missing
    from the registry (minted before tokens were recorded, or its row deleted) is refused too,
    so `reporun token list` shows every token that works."""

    def __init__(self, key: str, tokens: TokenRegistry) -> None:
        if len(key) < 32:
            raise ConfigError("the token signing key must be at least 32 characters")
        self._key = key
        self.tokens = tokens

    def mint(self, name: str, role: str, *, ttl: int | None = None) -> Issued:
        """A new token; it works once its record is added (`issue` does both)."""
        if not _NAME.match(name):
            raise InvalidInput("name must be 1-64 letters, digits or ._@-", field="name")
        if role not in ROLES:
            raise InvalidInput("role must be user or admin", field="role")
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": LOCAL_ISSUER,
            "sub": name,
            "roles": [role],
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        if ttl is not None:
            claims["exp"] = now + ttl
        return Issued(jwt.encode(claims, self._key, algorithm="HS256"), record_of(claims))

    async def issue(self, name: str, role: str, *, ttl: int | None = None) -> Issued:
        """Mint a token and record it."""
        issued = self.mint(name, role, ttl=ttl)
        await self.tokens.add(issued.record)
        return issued

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this key signed and that has not expired (no registry check)."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=LOCAL_ISSUER,
                options={"require": ["sub", "iss", "iat", "jti"]},
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            # The signature was checked before the expiry: the claims are the server's own.
            expired = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"verify_exp": False}
            )
            when = _when(datetime.fromtimestamp(int(expired["exp"]), UTC))
            raise Unauthorized(f"the token expired at {when}") from None
        except jwt.PyJWTError:
            raise Unauthorized(NOT_ISSUED) from None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized(NOT_ISSUED)
        if not isinstance(claims["jti"], str) or not isinstance(claims["sub"], str):
            raise Unauthorized(NOT_ISSUED)
        return claims

    async def authenticate(self, token: str) -> Principal:
        claims = self.verify(token)
        # Looked up on every request (no cache), so a revoked token fails on the next one.
        record = await self.tokens.get(claims["jti"])
        if record is None:
            raise Unauthorized(UNRECORDED)
        if record.revoked_at is not None:
            raise Unauthorized(f"the token {record.id} was revoked at {_when(record.revoked_at)}")
        roles = frozenset(r for r in claims["roles"] if r in ROLES)
        return Principal(claims["sub"], roles, token_id=record.id, expires_at=record.expires_at)


def record_of(claims: dict[str, Any]) -> TokenRecord:
    """The registry's record of a token, from its (verified) claims."""
    roles = [r for r in claims.get("roles", []) if r in ROLES]
    exp = claims.get("exp")
    return TokenRecord(
        id=str(claims["jti"]),
        name=str(claims["sub"]),
        role="admin" if "admin" in roles else "user",
        created_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        expires_at=None if exp is None else datetime.fromtimestamp(int(exp), UTC),
    )


async def ensure_admin_token(auth: LocalAuth, path: Path) -> bool:
    """Keep a working admin token in `path` (mode 0600) for `reporun serve`: the one there
    when it verifies and is not revoked (recorded now if it predates the registry), else a
    new one. True when a new one was written."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        try:
            claims = auth.verify(existing)
        except Unauthorized:
            claims = None
        if claims is not None:
            record = await auth.tokens.get(claims["jti"])
            if record is None:
                await auth.tokens.add(record_of(claims))
                return False
            if record.revoked_at is None:
                return False
    issued = await auth.issue("admin", "admin")
    write_token_file(path, issued.token)
    return True


def load_or_create_key(path: Path) -> str:
    """The embedded server's signing key, created once (mode 0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    _write_private(path, key + "\n")
    return key


def _write_private(path: Path, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def write_token_file(path: Path, token: str) -> None:
    _write_private(path, token + "\n")
