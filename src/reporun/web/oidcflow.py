"""Signing in to the dashboard through the OIDC issuer: the authorization code flow with PKCE
(S256), a state against forged answers and a nonce bound into the ID token; signing out at the
issuer too (its end-session endpoint, with the ID token as hint).

The browser goes to the addresses the issuer publishes (authorization, end session); this
server exchanges the code at the token endpoint of the discovery document it reads, which may
be the issuer's inside address (REPORUN_OIDC_DISCOVERY_URL, Keycloak's backchannel).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from reporun.api.auth import Principal
from reporun.api.oidc import OidcAuth
from reporun.errors import IssuerUnavailable, Unauthorized

SCOPE = "openid profile email"


@dataclass(frozen=True, slots=True)
class Flow:
    """What one sign-in keeps in its browser's cookie until the issuer sends it back."""

    state: str
    verifier: str
    nonce: str
    next_path: str

    @classmethod
    def new(cls, next_path: str) -> Flow:
        return cls(
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),
            secrets.token_urlsafe(24),
            next_path,
        )

    def cookie(self) -> str:
        return base64.urlsafe_b64encode(json.dumps(list(self.astuple())).encode()).decode()

    def astuple(self) -> tuple[str, str, str, str]:
        return (self.state, self.verifier, self.nonce, self.next_path)

    @classmethod
    def of_cookie(cls, value: str | None) -> Flow | None:
        if not value or len(value) > 4096:
            return None
        try:
            parts = json.loads(base64.urlsafe_b64decode(value.encode()))
        except ValueError:
            return None
        if not isinstance(parts, list) or len(parts) != 4:
            return None
        if not all(isinstance(p, str) for p in parts):
            return None
        return cls(*parts)

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def with_query(endpoint: str, query: str) -> str:
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


@dataclass(frozen=True, slots=True)
class SignedIn:
    principal: Principal
    id_token: str | None


class OidcSignin:
    def __init__(
        self,
        auth: OidcAuth,
        *,
        client_id: str,
        client_secret: str | None,
        timeout: float = 10.0,
    ) -> None:
        self.auth = auth
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._discovery: dict[str, Any] | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            url = f"{self.auth.discovery_base}/.well-known/openid-configuration"
            try:
                response = await self.http.get(url)
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise IssuerUnavailable(
                    f"the identity provider is not answering ({type(exc).__name__})"
                ) from None
            if not isinstance(document, dict) or not all(
                isinstance(document.get(name), str)
                for name in ("authorization_endpoint", "token_endpoint")
            ):
                raise IssuerUnavailable("the identity provider's discovery document is unusable")
            self._discovery = document
        return self._discovery

    async def authorize_url(self, flow: Flow, redirect_uri: str) -> str:
        endpoint = (await self.discovery())["authorization_endpoint"]
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": SCOPE,
                "state": flow.state,
                "nonce": flow.nonce,
                "code_challenge": flow.challenge,
                "code_challenge_method": "S256",
            }
        )
        return with_query(endpoint, query)

    async def finish(self, code: str, flow: Flow, redirect_uri: str) -> SignedIn:
        """Exchange the code (with the PKCE verifier) and check what comes back."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "code_verifier": flow.verifier,
        }
        endpoint = (await self.discovery())["token_endpoint"]  # checked with the document
        try:
            if self.client_secret:
                auth = (self.client_id, self.client_secret)
                response = await self.http.post(endpoint, data=form, auth=auth)
            else:
                response = await self.http.post(endpoint, data=form)
        except httpx.HTTPError as exc:
            raise IssuerUnavailable(
                f"the identity provider is not answering ({type(exc).__name__})"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code != 200:
            error = body.get("error_description") or body.get("error")
            raise Unauthorized(
                f"the identity provider refused the sign-in: {error or response.status_code}"
            )
        access, id_token = body.get("access_token"), body.get("id_token")
        if not isinstance(access, str) or not isinstance(id_token, str):
            raise Unauthorized("the identity provider answered no access token or no ID token")
        claims = await self.auth.verify_id_token(
            id_token, audience=self.client_id, nonce=flow.nonce
        )
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self.client_id:
            raise Unauthorized("the ID token was issued to another client (its azp)")
        principal = await self.auth.authenticate(access)
        # Verified just above; read again for its subject, which must be the ID token's.
        subject = jwt.decode(access, options={"verify_signature": False}).get("sub")
        if subject != claims["sub"]:
            raise Unauthorized("the access token and the ID token name different users")
        return SignedIn(principal, id_token)

    async def end_session_url(self, id_token: str | None, after: str) -> str | None:
        """Where the browser signs out at the issuer, then comes back to `after`; None when
        the issuer has no end-session endpoint."""
        try:
            endpoint = (await self.discovery()).get("end_session_endpoint")
        except IssuerUnavailable:
            return None
        if not isinstance(endpoint, str):
            return None
        query: dict[str, str] = {"client_id": self.client_id, "post_logout_redirect_uri": after}
        if id_token:
            query["id_token_hint"] = id_token
        return with_query(endpoint, urlencode(query))
