"""The client's settings: REPORUN_* from the environment, without pydantic."""

from __future__ import annotations

from pathlib import Path

from reporun.cli.settings import ClientSettings


def test_defaults_without_any_variable() -> None:
    settings = ClientSettings.from_env({"HOME": "/home/ann", "OTHER_TOKEN": "x"})
    assert settings == ClientSettings()
    assert settings.url == "http://127.0.0.1:8000"
    assert settings.token is None and settings.client_secret is None
    assert settings.data_dir is None  # the running serve's, else the per-user default


def test_every_variable_is_read_case_insensitively_and_empty_ones_are_unset() -> None:
    settings = ClientSettings.from_env(
        {
            "REPORUN_URL": "https://reporun.example.com",
            "reporun_token": "t0ken",
            "REPORUN_DATA_DIR": "/srv/reporun",
            "REPORUN_OIDC_ISSUER": "https://id.example.com/realms/r",
            "REPORUN_OIDC_CLIENT_ID": "",
            "REPORUN_OIDC_CLIENT_SECRET": "s3cret",
            "REPORUN_CREDENTIALS_FILE": "/tmp/creds.json",
        }
    )
    assert settings.url == "https://reporun.example.com"
    assert settings.token == "t0ken"
    assert settings.data_dir == Path("/srv/reporun")
    assert settings.oidc_issuer == "https://id.example.com/realms/r"
    assert settings.oidc_client_id == "reporun-cli"
    assert settings.client_secret == "s3cret"
    assert settings.credentials_path == Path("/tmp/creds.json")
    assert "t0ken" not in repr(settings) and "s3cret" not in repr(settings)
