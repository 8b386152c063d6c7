"""Local tokens and the settings a server refuses to start with."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from reporun.api.auth import (
    LOCAL_ISSUER,
    NOT_ISSUED,
    LocalAuth,
    MemoryTokens,
    ensure_admin_token,
    record_of,
)
from reporun.config import Settings
from reporun.errors import ConfigError, InvalidInput, Unauthorized
from reporun.paths import default_data_dir

KEY = "k" * 48


def local_auth() -> LocalAuth:
    return LocalAuth(KEY, MemoryTokens())


async def test_issued_tokens_carry_name_and_role() -> None:
    auth = local_auth()
    user = await auth.authenticate((await auth.issue("alice", "user")).token)
    admin = await auth.authenticate((await auth.issue("root", "admin")).token)
    assert (user.name, user.is_admin, admin.is_admin) == ("alice", False, True)


async def test_a_token_works_only_while_recorded_and_not_revoked() -> None:
    tokens = MemoryTokens()
    auth = LocalAuth(KEY, tokens)
    minted = auth.mint("alice", "user", ttl=600)
    with pytest.raises(Unauthorized, match="not among this server's tokens"):
        await auth.authenticate(minted.token)
    await tokens.add(minted.record)
    assert (await auth.authenticate(minted.token)).name == "alice"
    revoked_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    await tokens.add(dataclasses.replace(minted.record, revoked_at=revoked_at))
    with pytest.raises(Unauthorized) as caught:
        await auth.authenticate(minted.token)
    assert caught.value.message == (
        f"the token {minted.record.id} was revoked at 2031-05-06 07:08:09 UTC"
    )
    assert minted.record.role == "user" and minted.record.expires_at is not None


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Not enough segments"])
async def test_a_wrong_token_is_not_one_this_server_issued(token: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await local_auth().authenticate(token)
    assert caught.value.message == NOT_ISSUED


async def test_an_expired_token_says_when_it_expired() -> None:
    exp = int(datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
    claims = {"sub": "a", "iss": LOCAL_ISSUER, "iat": 0, "exp": exp, "jti": "x", "roles": []}
    with pytest.raises(Unauthorized) as caught:
        await local_auth().authenticate(jwt.encode(claims, KEY, "HS256"))
    assert caught.value.message == "the token expired at 2020-01-02 03:04:05 UTC"


async def test_serve_keeps_a_working_admin_token(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    auth = local_auth()
    assert await ensure_admin_token(auth, path)
    first = path.read_text().strip()
    assert (await auth.authenticate(first)).is_admin
    assert not await ensure_admin_token(auth, path) and path.read_text().strip() == first
    # One minted before tokens were recorded is adopted, not replaced.
    older = LocalAuth(KEY, MemoryTokens()).mint("admin", "admin")
    path.write_text(older.token + "\n")
    assert not await ensure_admin_token(auth, path)
    assert (await auth.authenticate(older.token)).is_admin
    # A revoked one (or one signed by another key) is replaced by a fresh one.
    revoked = dataclasses.replace(record_of(auth.verify(older.token)), revoked_at=datetime.now(UTC))
    await auth.tokens.add(revoked)
    assert await ensure_admin_token(auth, path)
    assert (await auth.authenticate(path.read_text().strip())).is_admin
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_default_data_dir_is_per_user_not_per_directory(tmp_path: Path) -> None:
    assert default_data_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "reporun"
    home = Path.home() / ".local" / "share" / "reporun"
    assert default_data_dir({}) == home
    assert default_data_dir({"XDG_DATA_HOME": "relative/dir"}) == home  # invalid: ignored


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        jwt.encode(
            {"sub": "a", "iss": LOCAL_ISSUER, "iat": 0, "roles": ["admin"]}, "other" * 10, "HS256"
        ),
        jwt.encode({"sub": "a", "iss": "elsewhere", "iat": 0, "roles": ["admin"]}, KEY, "HS256"),
        jwt.encode({"iss": LOCAL_ISSUER, "iat": 0, "roles": ["admin"]}, KEY, "HS256"),
        jwt.encode({"sub": "a", "iss": LOCAL_ISSUER, "iat": 0, "roles": "admin"}, KEY, "HS256"),
        jwt.encode(
            {
                "sub": "a",
                "iss": LOCAL_ISSUER,
                "iat": 0,
                "exp": int(time.time()) - 3600,
                "roles": [],
            },
            KEY,
            "HS256",
        ),
        jwt.encode({"sub": "a", "iss": LOCAL_ISSUER, "iat": 0, "roles": ["admin"]}, None, "none"),
        jwt.encode({"sub": "a", "iss": LOCAL_ISSUER, "iat": 0, "roles": ["admin"]}, KEY, "HS256"),
    ],
)
async def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        await local_auth().authenticate(token)


def test_minting_checks_name_and_role() -> None:
    with pytest.raises(InvalidInput):
        local_auth().mint("a b", "user")
    with pytest.raises(InvalidInput):
        local_auth().mint("alice", "root")
    with pytest.raises(ConfigError):
        LocalAuth("short", MemoryTokens())


@pytest.mark.parametrize(
    ("settings", "embedded", "message"),
    [
        (Settings(), False, "REPORUN_SECRET_KEY"),
        (Settings(secret_key="changeme"), False, "REPORUN_SECRET_KEY"),
        (Settings(secret_key=KEY, auth="oidc"), False, "OIDC_ISSUER"),
        (Settings(secret_key=KEY, host="0.0.0.0", sandbox="none"), False, "loopback"),
        (Settings(host="0.0.0.0", allow_local_repos=True), True, "loopback"),
    ],
)
def test_insecure_settings_are_refused(settings: Settings, embedded: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.check_secure(embedded=embedded)


def test_secure_settings_pass() -> None:
    Settings(secret_key=KEY, host="0.0.0.0").check_secure(embedded=False)
    Settings().check_secure(embedded=True)


def test_seed_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "POSTGRES_HOST": "database",
        "POSTGRES_PORT": "5433",
        "POSTGRES_DB": "results_db",
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "pw",
        "KAFKA_BOOTSTRAP": "kafka:9092",
        "REPORUN_ALLOWED_SCHEMES": "https, git",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.db_url == "postgresql+asyncpg://postgres:pw@database:5433/results_db"
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.allowed_schemes == ["https", "git"]


def test_database_urls_get_async_drivers() -> None:
    assert Settings(database_url="postgresql://u@h/db").db_url == "postgresql+asyncpg://u@h/db"
    assert Settings(database_url="sqlite:////tmp/x.db").db_url == "sqlite+aiosqlite:////tmp/x.db"
