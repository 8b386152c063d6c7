"""`reporun login` against a real OIDC provider, then the CLI on `reporun api` in OIDC mode
with the cached token: password and device grants, refresh, REPORUN_TOKEN winning, logout."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.ports import free_port
from tests.harness.processes import Processes
from tests.harness.server import Server, reporun
from tests.oidc_provider import OidcProvider

PUBLIC = "reporun-cli-public"
REPO = "https://example.org/octo/hello.git"


class OidcApi:
    """`reporun api` with REPORUN_AUTH=oidc on SQLite, and a CLI environment for it."""

    def __init__(self, tmp_path: Path, processes: Processes, provider: OidcProvider) -> None:
        self.credentials = tmp_path / "config" / "reporun" / "credentials.json"
        server = Server(
            processes,
            tmp_path / "data",
            REPORUN_AUTH="oidc",
            REPORUN_OIDC_ISSUER=provider.issuer,
            REPORUN_OIDC_AUDIENCE="reporun-api",
            REPORUN_OIDC_CLIENT_ID=PUBLIC,
            REPORUN_DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}",
            REPORUN_CREDENTIALS_FILE=str(self.credentials),
        )
        server.upgrade()
        server.api(tmp_path / "api.log")
        self.env = server.env

    def login(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reporun", "login", *args],
            env=self.env,
            input=password if password is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cached(self) -> dict[str, object]:
        return dict(json.loads(self.credentials.read_text()))

    def jobs(self, **env: str) -> list[dict[str, object]]:
        listed = reporun("jobs", "--json", env={**self.env, **env})
        assert listed.returncode == 0, listed.stderr
        return list(json.loads(listed.stdout))


@pytest.fixture
def oidc_api(tmp_path: Path, processes: Processes, oidc_provider: OidcProvider) -> OidcApi:
    return OidcApi(tmp_path, processes, oidc_provider)


def test_password_login_caches_a_private_token_the_cli_uses_and_refreshes(
    oidc_api: OidcApi, oidc_provider: OidcProvider
) -> None:
    signed_in = oidc_api.login("--username", "user", "--password-stdin", password="user-password\n")
    assert signed_in.returncode == 0, signed_in.stderr
    assert "signed in as user (roles: user)" in signed_in.stdout
    assert stat.S_IMODE(oidc_api.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(oidc_api.credentials.parent.stat().st_mode) == 0o700
    cached = oidc_api.cached()
    assert cached["issuer"] == oidc_provider.issuer and cached["refresh_token"]

    assert cached["server"] == oidc_api.env["REPORUN_URL"]
    # Another server never gets this sign-in's token.
    elsewhere = {**oidc_api.env, "REPORUN_URL": f"http://127.0.0.1:{free_port()}"}
    refused = reporun("jobs", env=elsewhere)
    assert refused.returncode == 2 and "no token" in refused.stderr, refused.stderr

    submitted = reporun("submit", REPO, "--json", env=oidc_api.env)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["owner"] == "user"

    # The access token ran out: the next command refreshes it with a real refresh grant.
    oidc_api.credentials.write_text(json.dumps({**cached, "expires_at": time.time() - 60}))
    assert [job["owner"] for job in oidc_api.jobs()] == ["user"]
    renewed = oidc_api.cached()
    assert renewed["access_token"] != cached["access_token"]
    assert float(str(renewed["expires_at"])) > time.time() + 60
    assert stat.S_IMODE(oidc_api.credentials.stat().st_mode) == 0o600


def test_reporun_token_wins_over_the_cached_login(
    oidc_api: OidcApi, oidc_provider: OidcProvider
) -> None:
    assert (
        oidc_api.login(
            "--username", "user", "--password-stdin", password="user-password"
        ).returncode
        == 0
    )
    admin = oidc_provider.password_token("admin", "admin-password")
    as_admin = reporun("submit", REPO, "--json", env={**oidc_api.env, "REPORUN_TOKEN": admin})
    assert json.loads(as_admin.stdout)["owner"] == "admin"
    assert oidc_api.jobs() == []  # the cached user sees none of the admin's jobs
    assert [job["owner"] for job in oidc_api.jobs(REPORUN_TOKEN=admin)] == ["admin"]
    refused = reporun("jobs", env={**oidc_api.env, "REPORUN_TOKEN": "garbage"})
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("reporun: the token is not one the issuer"), refused.stderr


def test_device_login_through_the_browser(oidc_api: OidcApi, oidc_provider: OidcProvider) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reporun", "login"],
        env=oidc_api.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.match(r"To sign in, open (\S+)", first)
        assert match, first
        assert "enter the code" in process.stderr.readline()
        oidc_provider.approve_device(match.group(1), "admin", "admin-password")
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "signed in as admin (roles: admin, user)" in out
    assert reporun("submit", REPO, env=oidc_api.env).returncode == 0
    assert [job["owner"] for job in oidc_api.jobs()] == ["admin"]


def test_confidential_client_and_logout(oidc_api: OidcApi) -> None:
    env = {"REPORUN_OIDC_CLIENT_ID": "reporun-cli", "REPORUN_OIDC_CLIENT_SECRET": "cli-secret"}
    oidc_api.env.update(env)
    signed_in = oidc_api.login(
        "--password", "--username", "admin", "--password-stdin", password="admin-password"
    )
    assert signed_in.returncode == 0, signed_in.stderr
    cached = oidc_api.cached()
    assert cached["client_id"] == "reporun-cli"
    assert "cli-secret" not in oidc_api.credentials.read_text()  # the secret stays in the env
    oidc_api.credentials.write_text(json.dumps({**cached, "expires_at": time.time() - 60}))
    assert oidc_api.jobs() == []  # refreshed with the client's secret
    out = reporun("logout", env=oidc_api.env)
    assert out.returncode == 0 and "signed out" in out.stdout
    assert not oidc_api.credentials.exists()
    gone = reporun("jobs", env=oidc_api.env)
    assert gone.returncode == 2 and "reporun login" in gone.stderr
    # The refresh token was revoked at the issuer: a copy of the old cache cannot refresh.
    oidc_api.credentials.write_text(json.dumps({**cached, "expires_at": time.time() - 60}))
    expired = reporun("jobs", env=oidc_api.env)
    assert expired.returncode == 1
    assert expired.stderr.strip() == "reporun: your sign-in has expired; run `reporun login`"


def test_refusals_are_one_line(oidc_api: OidcApi, tmp_path: Path) -> None:
    wrong = oidc_api.login("--username", "user", "--password-stdin", password="wrong")
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1
    assert "invalid_grant" in wrong.stderr and not oidc_api.credentials.exists()
    for args, message in (
        (("--password-stdin",), "--password-stdin needs --username"),
        (("--username", "user"), "use --password-stdin"),
        (("--issuer", "ftp://x"), "--issuer must be an https:// URL"),
        (("--issuer", "http://sso.example.org/realms/x"), "http:// only on a loopback"),
    ):
        refused = oidc_api.login(*args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().startswith("reporun: ") and message in refused.stderr
    no_issuer = {k: v for k, v in oidc_api.env.items() if k != "REPORUN_OIDC_ISSUER"}
    refused = subprocess.run(
        [sys.executable, "-m", "reporun", "login"],
        env=no_issuer,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 2 and "--issuer" in refused.stderr
    down = oidc_api.login("--issuer", f"http://127.0.0.1:{free_port()}/realms/x")
    assert down.returncode == 1 and "cannot reach the issuer" in down.stderr
    oidc_api.credentials.parent.mkdir(parents=True, exist_ok=True)
    oidc_api.credentials.write_text("{not json")
    broken = reporun("jobs", env=oidc_api.env)
    assert broken.returncode == 1 and "run `reporun login` again" in broken.stderr
