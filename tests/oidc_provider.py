"""A real OpenID Connect provider shaped like Keycloak, for the tests.

`tests/oidc/server.js` hosts the npm package `oidc-provider` (v9) at `/realms/<realm>` with
Keycloak's routes and claims; see that file for what it serves. The `oidc_provider` fixture
installs its npm dependencies on first use (`npm ci`), starts it on a free loopback port and
gets tokens through real grants over HTTP: password, client credentials and the device flow.
Missing node or npm fails the tests; it never skips them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.ports import free_port

SERVER_DIR = Path(__file__).resolve().parent / "oidc"
NPM_TIMEOUT = 300.0
START_TIMEOUT = 60.0  # a deadline for failing: the machine may be loaded by npm and podman
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
AUDIENCE_URN = "urn:audience:"

_FORM = re.compile(r'<form[^>]*\baction="([^"]+)"[^>]*>(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is required for the OIDC provider of the tests (tests/oidc/server.js); "
            "install Node.js 20+ and npm (Debian: apt-get install nodejs npm)"
        )
    return path


def ensure_node_modules(directory: Path = SERVER_DIR) -> None:
    """`npm ci` (or `npm install` without a lockfile) once; a lock keeps parallel runs apart,
    and a mark written when npm is done tells a whole install from one under way (another
    test process starting node on half-written modules would hang)."""
    done = directory / "node_modules" / ".installed-for-reporun-tests"
    if done.is_file():
        return
    npm = _tool("npm")
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"reporun-oidc-npm-{digest}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return
        command = "ci" if (directory / "package-lock.json").is_file() else "install"
        env = {
            **os.environ,
            "npm_config_audit": "false",
            "npm_config_fund": "false",
            "npm_config_update_notifier": "false",
            "npm_config_progress": "false",
            "PUPPETEER_SKIP_DOWNLOAD": "1",
            "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
        }
        try:
            result = subprocess.run(
                [npm, command, "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=directory,
                env=env,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm {command} in {directory} took more than {NPM_TIMEOUT:.0f} s")
        if result.returncode != 0:
            pytest.fail(
                f"npm {command} in {directory} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        done.write_text("npm " + command + "\n")


class TokenError(AssertionError):
    """The token endpoint refused a grant the test expected to work."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        super().__init__(f"token endpoint answered {response.status_code}: {response.text}")


class OidcProvider:
    """`node tests/oidc/server.js`: a Keycloak-shaped issuer at http://127.0.0.1:<port>/realms/<realm>.

    Users: `user`/`user-password` (roles user), `admin`/`admin-password` (admin, user),
    `nobody`/`nobody-password` (none). Clients: `reporun-cli`/`cli-secret` (password, device,
    refresh), `reporun-cli-public` (public: password, device, refresh), `reporun-service`/
    `service-secret` (client credentials; its tokens carry roles ["admin"]), `reporun-web`
    (public: the authorization code with PKCE, for the dashboard at `web_origin`).
    """

    def __init__(
        self,
        *,
        realm: str = "reporun",
        host: str = "127.0.0.1",
        audience: str = "reporun-api",
        access_token_ttl: int = 300,
        log_dir: Path | None = None,
        web_origin: str | None = None,
        realm_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`web_origin`: the dashboard whose sign-in client `reporun-web` may return to;
        `realm_file`: a Keycloak realm to serve instead of the built-in users and clients,
        its placeholders resolved from `env`."""
        self.realm = realm
        self.host = host
        self.audience = audience
        self.access_token_ttl = access_token_ttl
        self.port = free_port()
        self.base_url = f"http://{host}:{self.port}"
        self.issuer = f"{self.base_url}/realms/{realm}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        routes = f"{self.issuer}/protocol/openid-connect"
        self.token_endpoint = f"{routes}/token"
        self.jwks_uri = f"{routes}/certs"
        self.device_authorization_endpoint = f"{routes}/auth/device"
        self.userinfo_endpoint = f"{routes}/userinfo"
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="reporun-oidc-"))) / "oidc.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=10.0)
        self.startup_seconds: float | None = None
        self.options: list[str] = []
        if web_origin is not None:
            self.options += ["--web-origin", web_origin]
        if realm_file is not None:
            self.options += ["--realm-file", str(realm_file)]
        self.env = {**os.environ, **(env or {})}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        node = _tool("node")
        ensure_node_modules()
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    node,
                    "server.js",
                    "--port",
                    str(self.port),
                    "--realm",
                    self.realm,
                    "--issuer-host",
                    self.host,
                    "--audience",
                    self.audience,
                    "--access-token-ttl",
                    str(self.access_token_ttl),
                    *self.options,
                ],
                cwd=SERVER_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = f"ready {self.port}"
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready in self.log_path.read_text(errors="replace").splitlines():
                self.startup_seconds = time.monotonic() - started
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        log_text = self.log()
        self.stop()
        pytest.fail(f"the OIDC provider did not start:\n{log_text}")

    def stop(self) -> None:
        self.http.close()
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """What the server printed (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- raw endpoints ------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        response = self.http.get(self.discovery_url)
        response.raise_for_status()
        return dict(response.json())

    def jwks(self) -> dict[str, Any]:
        response = self.http.get(self.jwks_uri)
        response.raise_for_status()
        return dict(response.json())

    def token_request(
        self,
        form: dict[str, str],
        client_id: str,
        client_secret: str | None,
        *,
        audience: str | Sequence[str] | None = None,
    ) -> httpx.Response:
        """POST to the token endpoint (client_secret_basic; `None` secret: a public client)."""
        data = dict(form)
        if audience is not None:
            data["resource"] = _resource(audience)
        if client_secret is None:
            data["client_id"] = client_id
            return self.http.post(self.token_endpoint, data=data)
        return self.http.post(self.token_endpoint, data=data, auth=(client_id, client_secret))

    # -- grants -------------------------------------------------------------------------------

    def password_token(
        self,
        username: str,
        password: str,
        client_id: str = "reporun-cli",
        client_secret: str | None = "cli-secret",
        *,
        audience: str | Sequence[str] | None = None,
        scope: str | None = None,
    ) -> str:
        """An access token from the password grant (Keycloak's direct access grant)."""
        form = {"grant_type": "password", "username": username, "password": password}
        if scope is not None:
            form["scope"] = scope
        return self._access_token(
            self.token_request(form, client_id, client_secret, audience=audience)
        )

    def client_credentials_token(
        self,
        client_id: str = "reporun-service",
        client_secret: str = "service-secret",
        *,
        audience: str | Sequence[str] | None = None,
    ) -> str:
        """An access token from the client credentials grant (the client's service account)."""
        form = {"grant_type": "client_credentials"}
        return self._access_token(
            self.token_request(form, client_id, client_secret, audience=audience)
        )

    def start_device_login(
        self, client_id: str = "reporun-cli", client_secret: str | None = "cli-secret"
    ) -> dict[str, Any]:
        """Device authorization: device_code, user_code, verification_uri(_complete), ..."""
        data = {"scope": "openid profile email"}
        if client_secret is None:
            response = self.http.post(
                self.device_authorization_endpoint, data={**data, "client_id": client_id}
            )
        else:
            response = self.http.post(
                self.device_authorization_endpoint, data=data, auth=(client_id, client_secret)
            )
        if response.status_code != 200:
            raise TokenError(response)
        return dict(response.json())

    def approve_device(self, verification_uri_complete: str, username: str, password: str) -> None:
        """Be the user's browser: open the verification page, confirm, sign in."""
        with httpx.Client(timeout=10.0, follow_redirects=True) as browser:
            page = browser.get(verification_uri_complete)
            for _ in range(10):
                if "Device Login Successful" in page.text:
                    return
                match = _FORM.search(page.text)
                if match is None:
                    break
                fields = dict(_HIDDEN.findall(match.group(2)))
                if 'name="username"' in match.group(2):
                    fields.update(username=username, password=password)
                page = browser.post(page.url.join(match.group(1)), data=fields)
            raise AssertionError(
                f"device approval did not succeed ({page.status_code}): {page.text[:500]}"
            )

    def device_token(
        self,
        device_code: str,
        client_id: str = "reporun-cli",
        client_secret: str | None = "cli-secret",
    ) -> httpx.Response:
        """One poll of the token endpoint with the device code (400 authorization_pending...)."""
        form = {"grant_type": DEVICE_GRANT, "device_code": device_code}
        return self.token_request(form, client_id, client_secret)

    def device_login_token(
        self,
        username: str,
        password: str,
        client_id: str = "reporun-cli",
        client_secret: str | None = "cli-secret",
    ) -> str:
        """The whole device flow: authorize, approve as `username`, redeem the device code."""
        started = self.start_device_login(client_id, client_secret)
        self.approve_device(started["verification_uri_complete"], username, password)
        return self._access_token(
            self.device_token(started["device_code"], client_id, client_secret)
        )

    # -- test hooks ---------------------------------------------------------------------------

    def rotate_keys(self, *, keep_old: bool = False) -> str:
        """Sign with a fresh RSA key from now on; returns its kid. Without `keep_old` the old
        key leaves the JWKS, so tokens signed before carry a kid the issuer no longer publishes."""
        response = self.http.post(
            f"{self.base_url}/test/rotate-keys", params={"keep_old": "1" if keep_old else "0"}
        )
        response.raise_for_status()
        return str(response.json()["kid"])

    def sign(self, claims: dict[str, object], header: dict[str, object] | None = None) -> str:
        """A JWT with these claims, signed by the issuer's own current key."""
        response = self.http.post(
            f"{self.base_url}/test/sign", json={"claims": claims, "header": header or {}}
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def claims(self, **overrides: object) -> dict[str, object]:
        """Claims as this issuer puts in a `user` access token, changed by `overrides`."""
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": "reporun-api",
            "azp": "reporun-cli",
            "sub": "6f4c2a4e-8c1d-4a55-9a0e-2a1b7c3d9e01",
            "preferred_username": "user",
            "realm_access": {"roles": ["user"]},
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return claims

    @staticmethod
    def _access_token(response: httpx.Response) -> str:
        if response.status_code != 200:
            raise TokenError(response)
        return str(response.json()["access_token"])


def _resource(audience: str | Sequence[str]) -> str:
    audiences = [audience] if isinstance(audience, str) else list(audience)
    return AUDIENCE_URN + ",".join(audiences)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(log_dir=tmp_path_factory.mktemp("oidc"))
    provider.start()
    yield provider
    provider.stop()
