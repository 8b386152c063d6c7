"""What the client commands read: which server, which token, which OIDC client for sign-in.

The server's settings are `reporun.config.Settings`; neither reads the other's secrets. This is
a plain dataclass over the environment, read once per command: a client command starts without
pydantic or the server's configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reporun.paths import DEFAULT_URL

PREFIX = "REPORUN_"


def default_credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "reporun" / "credentials.json"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    url: str = DEFAULT_URL
    token: str | None = field(default=None, repr=False)
    # Where `reporun serve` on this machine stored its admin token (unset: the data dir of the
    # `serve` running on `url`, else the default one; see reporun.paths).
    data_dir: Path | None = None
    # `reporun login`: the issuer, its client for the CLI (public unless a secret is given),
    # and where the signed-in token is cached (default: ~/.config/reporun/credentials.json).
    oidc_issuer: str | None = None
    oidc_client_id: str = "reporun-cli"
    oidc_client_secret: str | None = field(default=None, repr=False)
    credentials_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """REPORUN_URL, REPORUN_TOKEN, ... (case-insensitive names, as the server reads its
        own); a variable set to the empty string counts as unset."""
        env = os.environ if environ is None else environ
        found = {
            key.upper().removeprefix(PREFIX).lower(): value
            for key, value in env.items()
            if key.upper().startswith(PREFIX) and value
        }

        def path(name: str) -> Path | None:
            return Path(found[name]) if name in found else None

        defaults = cls()
        return cls(
            url=found.get("url", defaults.url),
            token=found.get("token"),
            data_dir=path("data_dir"),
            oidc_issuer=found.get("oidc_issuer"),
            oidc_client_id=found.get("oidc_client_id", defaults.oidc_client_id),
            oidc_client_secret=found.get("oidc_client_secret"),
            credentials_file=path("credentials_file"),
        )

    @property
    def credentials_path(self) -> Path:
        return self.credentials_file or default_credentials_path()

    @property
    def client_secret(self) -> str | None:
        return self.oidc_client_secret
