"""`reporun login`: a token from the OIDC issuer for the CLI, cached in a private file and
refreshed when it runs out.

The device authorization grant (RFC 8628) where the issuer offers it, else the password grant
(Keycloak's "direct access grants"). The cache holds what the token endpoint answered; only
this user can read it (mode 0600, written whole and renamed into place).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jwt

from reporun.errors import ClientError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid profile email"
# Refresh a cached token this long before it runs out, so it does not expire in flight.
EXPIRY_MARGIN = 30.0
HTTP_TIMEOUT = 10.0


class LoginError(ClientError):
    """Signing in failed."""


@dataclass(frozen=True, slots=True)
class Credentials:
    issuer: str
    client_id: str
    token_endpoint: str
    access_token: str
    expires_at: float
    refresh_token: str | None = None
    refresh_expires_at: float | None = None
    # The reporun server (REPORUN_URL) this sign-in is for; other servers never get the token.
    server: str | None = None

    @property
    def fresh(self) -> bool:
        return time.time() < self.expires_at - EXPIRY_MARGIN

    @property
    def refreshable(self) -> bool:
        if self.refresh_token is None:
            return False
        return self.refresh_expires_at is None or time.time() < self.refresh_expires_at

    def who(self) -> tuple[str, list[str]]:
        """User name and roles as the token says (for display only: not verified here)."""
        try:
            claims = jwt.decode(self.access_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "?", []
        name = str(claims.get("preferred_username") or claims.get("sub") or "?")
        roles = (claims.get("realm_access") or {}).get("roles") or []
        return name, [r for r in roles if isinstance(r, str)]


@dataclass(frozen=True, slots=True)
class DeviceCode:
    """What the user must do: open `verification_uri_complete`, or the URI and type the code."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    device_code: str
    interval: float
    expires_in: float


class CredentialCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Credentials | None:
        try:
            data = json.loads(self.path.read_text())
            return Credentials(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise LoginError(
                f"cannot read {self.path} ({type(exc).__name__}); run `reporun login` again"
            ) from None

    def save(self, credentials: Credentials) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials-")
        try:
            with os.fdopen(fd, "w") as handle:  # mkstemp files are mode 0600
                json.dump(asdict(credentials), handle)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class Issuer:
    """The token endpoint side of an OIDC issuer, for one client."""

    def __init__(
        self, http: httpx.AsyncClient, issuer: str, client_id: str, client_secret: str | None
    ) -> None:
        self.http = http
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.discovery: dict[str, Any] = {}

    async def discover(self) -> None:
        url = f"{self.issuer}/.well-known/openid-configuration"
        document = await self._json("GET", url)
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise LoginError(f"{url} names another issuer ({document.get('issuer')!r})")
        if not isinstance(document.get("token_endpoint"), str):
            raise LoginError(f"{url} names no token endpoint")
        self.discovery = document

    @property
    def offers_device_login(self) -> bool:
        return isinstance(self.discovery.get("device_authorization_endpoint"), str)

    async def start_device_login(self) -> DeviceCode | None:
        """A device code, or None when the issuer will not give this client one."""
        response = await self._post(
            self.discovery["device_authorization_endpoint"], {"scope": SCOPE}
        )
        if response.status_code in (400, 401) and _error(response)[0] in (
            "unauthorized_client",
            "invalid_client",
            "invalid_request",
        ):
            return None
        body = self._body(response)
        try:
            return DeviceCode(
                user_code=str(body["user_code"]),
                verification_uri=str(body["verification_uri"]),
                verification_uri_complete=body.get("verification_uri_complete"),
                device_code=str(body["device_code"]),
                interval=float(body.get("interval") or 5),
                expires_in=float(body.get("expires_in") or 600),
            )
        except (KeyError, TypeError, ValueError):
            raise LoginError("the issuer's device authorization answer is incomplete") from None

    async def finish_device_login(self, code: DeviceCode) -> Credentials:
        """Poll the token endpoint as RFC 8628 says until the user approves or refuses."""
        interval = code.interval
        deadline = time.monotonic() + code.expires_in
        form = {"grant_type": DEVICE_GRANT, "device_code": code.device_code}
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            response = await self._post(self.discovery["token_endpoint"], form)
            error, _ = _error(response)
            if response.status_code == 200:
                return self._credentials(self._body(response))
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            if error == "access_denied":
                raise LoginError("the sign-in was refused in the browser")
            if error == "expired_token":
                break
            self._body(response)  # raises with the issuer's reason
        raise LoginError("the sign-in code expired before it was used; run `reporun login` again")

    async def password_login(self, username: str, password: str) -> Credentials:
        form = {"grant_type": "password", "username": username, "password": password}
        response = await self._post(self.discovery["token_endpoint"], {**form, "scope": SCOPE})
        return self._credentials(self._body(response))

    async def refresh(self, credentials: Credentials) -> Credentials:
        assert credentials.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_token}
        response = await self._post(credentials.token_endpoint, form)
        if response.status_code in (400, 401) and _error(response)[0] == "invalid_grant":
            raise LoginError("your sign-in has expired; run `reporun login`")
        body = self._body(response)
        body.setdefault("refresh_token", credentials.refresh_token)
        renewed = self._credentials(body, token_endpoint=credentials.token_endpoint)
        return replace(renewed, server=credentials.server)

    async def revoke(self, token: str) -> None:
        endpoint = self.discovery.get("revocation_endpoint")
        if isinstance(endpoint, str):
            await self._post(endpoint, {"token": token, "token_type_hint": "refresh_token"})

    # -- HTTP -----------------------------------------------------------------------------------
    def _credentials(self, body: dict[str, Any], token_endpoint: str | None = None) -> Credentials:
        now = time.time()
        try:
            access = str(body["access_token"])
            expires_in = float(body.get("expires_in") or 300)
        except (KeyError, TypeError, ValueError):
            raise LoginError("the issuer answered without an access token") from None
        refresh_in = body.get("refresh_expires_in")
        return Credentials(
            issuer=self.issuer,
            client_id=self.client_id,
            token_endpoint=token_endpoint or str(self.discovery["token_endpoint"]),
            access_token=access,
            expires_at=now + expires_in,
            refresh_token=body.get("refresh_token"),
            # Keycloak says 0 for offline tokens that never expire on their own.
            refresh_expires_at=now + float(refresh_in) if refresh_in else None,
        )

    async def _post(self, url: str, form: dict[str, str]) -> httpx.Response:
        auth = None
        data = dict(form)
        if self.client_secret is None:
            data["client_id"] = self.client_id
        else:
            auth = httpx.BasicAuth(self.client_id, self.client_secret)
        try:
            return await self.http.post(url, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise LoginError(f"cannot reach the issuer at {url}: {exc}") from None

    async def _json(self, method: str, url: str) -> dict[str, Any]:
        try:
            response = await self.http.request(method, url)
        except httpx.HTTPError as exc:
            raise LoginError(f"cannot reach the issuer at {url}: {exc}") from None
        return self._body(response)

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            error, description = _error(response)
            reason = f"{error}: {description}" if description else error
            raise LoginError(f"the issuer refused ({response.status_code} {reason})")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise LoginError(f"{response.request.url} did not answer a JSON object")
        return body


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"], str(body.get("error_description") or "")
    return response.reason_phrase or str(response.status_code), ""


async def login(
    issuer: Issuer,
    *,
    username: str | None,
    ask_password: Callable[[], str] | None,
    show_code: Callable[[DeviceCode], None],
    device: bool | None,
) -> Credentials:
    """Sign in: the device flow where offered (or asked for), else the password grant.
    `device` True insists on the device flow, False on the password grant."""
    await issuer.discover()
    if device is not False and username is None and issuer.offers_device_login:
        code = await issuer.start_device_login()
        if code is not None:
            show_code(code)
            return await issuer.finish_device_login(code)
    if device:
        raise LoginError("the issuer offers this client no device sign-in")
    if username is None or ask_password is None:
        raise LoginError(
            "the issuer offers no device sign-in here: give --username (and --password-stdin "
            "when there is no terminal)"
        )
    password = await asyncio.to_thread(ask_password)
    return await issuer.password_login(username, password)


async def cached_token(
    cache: CredentialCache, client_secret: str | None, server: str
) -> str | None:
    """The cached access token for `server`, refreshed first when it has run out; None
    without a cache, or when the sign-in was for another server."""
    credentials = cache.load()
    if credentials is None or credentials.server not in (None, server.rstrip("/")):
        return None
    if credentials.fresh:
        return credentials.access_token
    if not credentials.refreshable:
        raise LoginError("your sign-in has expired; run `reporun login`")
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        issuer = Issuer(http, credentials.issuer, credentials.client_id, client_secret)
        try:
            renewed = await issuer.refresh(credentials)
        except LoginError:
            if time.time() < credentials.expires_at:  # issuer down: use what still works
                return credentials.access_token
            raise
    cache.save(renewed)
    return renewed.access_token
