"""The CLI's credential cache: where it lives, when a token counts as run out, what is kept."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from reporun.cli.settings import default_credentials_path
from reporun.cli.signin import (
    EXPIRY_MARGIN,
    CredentialCache,
    Credentials,
    LoginError,
)


def credentials(**changes: object) -> Credentials:
    values: dict[str, object] = {
        "issuer": "https://id.example.org/realms/reporun",
        "client_id": "reporun-cli",
        "token_endpoint": "https://id.example.org/realms/reporun/protocol/openid-connect/token",
        "access_token": "a.b.c",
        "expires_at": time.time() + 300,
        "refresh_token": "r",
        "refresh_expires_at": time.time() + 1800,
    }
    values.update(changes)
    return Credentials(**values)  # type: ignore[arg-type]


def test_default_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_credentials_path() == tmp_path / "reporun" / "credentials.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        default_credentials_path() == tmp_path / "home" / ".config" / "reporun" / "credentials.json"
    )


@pytest.mark.parametrize(
    ("changes", "fresh", "refreshable"),
    [
        ({}, True, True),
        ({"expires_at": time.time() + EXPIRY_MARGIN / 2}, False, True),
        ({"expires_at": time.time() - 1, "refresh_token": None}, False, False),
        ({"expires_at": time.time() - 1, "refresh_expires_at": time.time() - 1}, False, False),
        ({"expires_at": time.time() - 1, "refresh_expires_at": None}, False, True),
    ],
)
def test_when_a_token_is_fresh_or_refreshable(
    changes: dict[str, object], fresh: bool, refreshable: bool
) -> None:
    cached = credentials(**changes)
    assert (cached.fresh, cached.refreshable) == (fresh, refreshable)


def test_cache_round_trip_is_private(tmp_path: Path) -> None:
    cache = CredentialCache(tmp_path / "cfg" / "credentials.json")
    assert cache.load() is None
    saved = credentials()
    cache.save(saved)
    assert cache.load() == saved
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in cache.path.parent.iterdir()] == ["credentials.json"]
    assert cache.delete() and not cache.delete()


def test_a_damaged_cache_says_to_log_in_again(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text('{"issuer": 1}')
    with pytest.raises(LoginError, match="reporun login"):
        CredentialCache(path).load()
