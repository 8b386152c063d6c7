"""Who is calling: bearer tokens, roles `user` and `admin`.

Local mode: HS256 tokens signed by the server's key (`reporun token create` mints them).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jwt

from reporun.errors import ConfigError, InvalidInput, Unauthorized

ROLES = ("user", "admin")
LOCAL_ISSUER = "reporun-local"
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


class LocalAuth:
    def __init__(self, key: str) -> None:
        if len(key) < 32:
            raise ConfigError("the token signing key must be at least 32 characters")
        self._key = key

    def mint(self, name: str, role: str, *, ttl: int | None = None) -> str:
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
        return jwt.encode(claims, self._key, algorithm="HS256")

    async def authenticate(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=LOCAL_ISSUER,
                options={"require": ["sub", "iss", "iat"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("invalid token: roles")
        return Principal(str(claims["sub"]), frozenset(r for r in roles if r in ROLES))


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
