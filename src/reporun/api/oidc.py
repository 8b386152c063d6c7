"""OpenID Connect bearer tokens (Keycloak and others): JWTs checked against the issuer's keys.

The issuer's discovery document gives the JWKS address; keys are cached and fetched again
only for an unknown `kid`, at most once per `refresh_interval`. With the issuer down, tokens
signed by cached keys keep working; a token with an unknown key gets 503.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
import jwt

from reporun.api.auth import ROLES, Principal
from reporun.errors import ConfigError, IssuerUnavailable, Unauthorized

# Asymmetric algorithms only: an HS* token "signed" with the issuer's public key is refused.
SAFE_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`, `resource_access.api.roles`)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class OidcAuth:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        discovery_url: str | None = None,
        azp: str | None,
        roles_claim: str,
        algorithms: Sequence[str],
        leeway: float = 30.0,
        refresh_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        unsafe = set(algorithms) - SAFE_ALGORITHMS
        if unsafe or not algorithms:
            raise ConfigError(f"REPORUN_OIDC_ALGORITHMS may hold only {sorted(SAFE_ALGORITHMS)}")
        if not audience and not azp:
            raise ConfigError("REPORUN_AUTH=oidc needs REPORUN_OIDC_AUDIENCE or REPORUN_OIDC_AZP")
        self.issuer = issuer.rstrip("/")
        # The issuer as this process reaches it (Keycloak's backchannel), else the issuer.
        self.discovery_base = (discovery_url or issuer).rstrip("/")
        self.audience = audience
        self.azp = azp
        self.roles_claim = roles_claim
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.refresh_interval = refresh_interval
        self.http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fetched_at = -float("inf")
        self._down: str | None = None  # why the last fetch failed
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self.http.aclose()

    async def authenticate(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized(self._not_issued) from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise Unauthorized(f"{self._not_issued} (it is signed with {algorithm!r})")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={
                    "require": ["exp", "iat", "iss"],
                    "verify_aud": self.audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(self._refusal(exc)) from None
        if self.azp is not None and claims.get("azp") != self.azp:
            raise Unauthorized(f"the token was issued to another client, not {self.azp}")
        name = claims.get("preferred_username") or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise Unauthorized("the token names no user (no preferred_username or sub)")
        roles = claim_at(claims, self.roles_claim)
        if not isinstance(roles, list):
            roles = []
        return Principal(name, frozenset(r for r in roles if isinstance(r, str) and r in ROLES))

    async def verify_id_token(self, token: str, *, audience: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token the issuer signed for `audience` with this `nonce` (the
        dashboard's sign-in); Unauthorized otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized(f"the ID token is not one the issuer {self.issuer} issued") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise Unauthorized(f"the ID token is signed with {algorithm!r}, which is not allowed")
        key = await self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=audience,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the ID token is refused: {self._refusal(exc)}") from None
        if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:
            raise Unauthorized("the ID token is not the answer to this sign-in (its nonce)")
        return claims

    async def _key(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str):
            raise Unauthorized(f"{self._not_issued} (it names no signing key)")
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            due = time.monotonic() - self._fetched_at >= self.refresh_interval
            if kid not in self._keys and due:
                self._fetched_at = time.monotonic()  # failures are rate-limited too
                await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if self._down is not None:
            raise IssuerUnavailable(self._down)
        raise Unauthorized(f"{self._not_issued} (signed by a key the issuer does not publish)")

    @property
    def _not_issued(self) -> str:
        return f"the token is not one the issuer {self.issuer} issued"

    def _refusal(self, exc: jwt.PyJWTError) -> str:
        """What was wrong with a well-formed token, in words a user can act on."""
        if isinstance(exc, jwt.ExpiredSignatureError):
            return "the token has expired: sign in again (`reporun login`)"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "the token is not valid yet (is this machine's clock right?)"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"the token was issued by another issuer, not {self.issuer}"
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"the token is for another audience, not {self.audience}"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"the token lacks the {exc.claim!r} claim the server requires"
        return f"{self._not_issued} (its signature does not match)"

    async def _refresh(self) -> None:
        try:
            if self._jwks_uri is None:
                discovery = await self._get_json(
                    f"{self.discovery_base}/.well-known/openid-configuration"
                )
                if discovery.get("issuer", "").rstrip("/") != self.issuer:
                    raise IssuerUnavailable("the issuer's discovery names another issuer")
                self._jwks_uri = str(discovery["jwks_uri"])
            document = await self._get_json(self._jwks_uri)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self._down = f"the identity provider is not answering ({type(exc).__name__})"
            raise IssuerUnavailable(self._down) from None
        self._down = None
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue
            if isinstance(entry.get("kid"), str):
                keys[entry["kid"]] = key
        self._keys = keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self.http.get(url)
        response.raise_for_status()
        body = json.loads(response.content)
        if not isinstance(body, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return body
