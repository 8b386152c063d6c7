"""Local tokens and the settings a server refuses to start with."""

from __future__ import annotations

import time

import jwt
import pytest

from reporun.api.auth import LOCAL_ISSUER, LocalAuth
from reporun.config import Settings
from reporun.errors import ConfigError, InvalidInput, Unauthorized

KEY = "k" * 48


async def test_minted_tokens_carry_name_and_role() -> None:
    auth = LocalAuth(KEY)
    user = await auth.authenticate(auth.mint("alice", "user"))
    admin = await auth.authenticate(auth.mint("root", "admin"))
    assert (user.name, user.is_admin, admin.is_admin) == ("alice", False, True)


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
    ],
)
async def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        await LocalAuth(KEY).authenticate(token)


def test_minting_checks_name_and_role() -> None:
    with pytest.raises(InvalidInput):
        LocalAuth(KEY).mint("a b", "user")
    with pytest.raises(InvalidInput):
        LocalAuth(KEY).mint("alice", "root")
    with pytest.raises(ConfigError):
        LocalAuth("short")


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
