"""What the client commands read: which server, which token, which OIDC client for sign-in.

The server's settings are `reporun.config.Settings`; neither reads the other's secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from reporun.paths import DEFAULT_URL


def default_credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "reporun" / "credentials.json"


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPORUN_", extra="ignore", frozen=True)

    url: str = DEFAULT_URL
    token: SecretStr | None = None
    # Where `reporun serve` on this machine stored its admin token (unset: the data dir of the
    # `serve` running on `url`, else the default one; see reporun.paths).
    data_dir: Path | None = None
    # `reporun login`: the issuer, its client for the CLI (public unless a secret is given),
    # and where the signed-in token is cached (default: ~/.config/reporun/credentials.json).
    oidc_issuer: str | None = None
    oidc_client_id: str = "reporun-cli"
    oidc_client_secret: SecretStr | None = None
    credentials_file: Path | None = None

    @property
    def credentials_path(self) -> Path:
        return self.credentials_file or default_credentials_path()

    @property
    def client_secret(self) -> str | None:
        return self.oidc_client_secret.get_secret_value() if self.oidc_client_secret else None
