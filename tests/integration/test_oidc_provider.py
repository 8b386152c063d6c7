"""The Keycloak-shaped OIDC provider of the tests gives real tokens through real grants."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.oidc_provider import OidcProvider, TokenError

pytestmark = pytest.mark.slow


def verified(provider: OidcProvider, token: str, audience: str = "reporun-api") -> dict[str, Any]:
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    key = jwt.PyJWKClient(provider.jwks_uri, cache_keys=False).get_signing_key_from_jwt(token)
    return dict(
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=audience,
            issuer=provider.issuer,
            options={"require": ["exp", "iat", "iss", "sub", "aud"]},
        )
    )


def test_discovery_has_keycloak_routes(oidc_provider: OidcProvider) -> None:
    discovery = oidc_provider.discovery()
    routes = f"{oidc_provider.issuer}/protocol/openid-connect"
    assert oidc_provider.issuer.endswith("/realms/reporun")
    assert discovery["issuer"] == oidc_provider.issuer
    assert discovery["token_endpoint"] == f"{routes}/token" == oidc_provider.token_endpoint
    assert discovery["jwks_uri"] == f"{routes}/certs" == oidc_provider.jwks_uri
    assert discovery["device_authorization_endpoint"] == f"{routes}/auth/device"
    assert {"password", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"} <= (
        set(discovery["grant_types_supported"])
    )
    keys = oidc_provider.jwks()["keys"]
    assert keys and all(k["kty"] == "RSA" and "d" not in k for k in keys)


def test_password_grant_for_user(oidc_provider: OidcProvider) -> None:
    claims = verified(oidc_provider, oidc_provider.password_token("user", "user-password"))
    assert claims["realm_access"]["roles"] == ["user"]
    assert claims["resource_access"]["reporun-api"]["roles"] == ["user"]
    assert claims["preferred_username"] == "user"
    assert claims["aud"] == "reporun-api"
    assert claims["azp"] == "reporun-cli"
    assert claims["iss"] == oidc_provider.issuer
    assert claims["exp"] - claims["iat"] == 300
    assert claims["sub"] != "user"  # a Keycloak-like UUID


def test_admin_has_both_roles(oidc_provider: OidcProvider) -> None:
    claims = verified(oidc_provider, oidc_provider.password_token("admin", "admin-password"))
    assert claims["realm_access"]["roles"] == ["admin", "user"]
    assert claims["preferred_username"] == "admin"


def test_nobody_has_no_roles(oidc_provider: OidcProvider) -> None:
    claims = verified(oidc_provider, oidc_provider.password_token("nobody", "nobody-password"))
    assert claims["realm_access"]["roles"] == []


def test_keycloak_account_audience(oidc_provider: OidcProvider) -> None:
    token = oidc_provider.password_token("user", "user-password", audience="account")
    claims = verified(oidc_provider, token, audience="account")
    assert claims["aud"] == "account"
    assert claims["azp"] == "reporun-cli"


def test_service_client_credentials(oidc_provider: OidcProvider) -> None:
    claims = verified(oidc_provider, oidc_provider.client_credentials_token())
    assert claims["realm_access"]["roles"] == ["admin"]
    assert claims["preferred_username"] == "reporun-service"
    assert claims["azp"] == "reporun-service"
    assert claims["aud"] == "reporun-api"


@pytest.mark.parametrize(
    ("username", "password"), [("user", "wrong"), ("ghost", "user-password"), ("user", "")]
)
def test_wrong_password_is_refused(
    oidc_provider: OidcProvider, username: str, password: str
) -> None:
    response = oidc_provider.token_request(
        {"grant_type": "password", "username": username, "password": password},
        "reporun-cli",
        "cli-secret",
    )
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_grant", "invalid_request")
    with pytest.raises(TokenError):
        oidc_provider.password_token(username, password)


def test_wrong_client_secret_is_refused(oidc_provider: OidcProvider) -> None:
    with pytest.raises(TokenError) as refused:
        oidc_provider.client_credentials_token(client_secret="nope")
    assert refused.value.response.status_code == 401


def test_device_flow(oidc_provider: OidcProvider) -> None:
    started = oidc_provider.start_device_login()
    assert started["verification_uri"] == f"{oidc_provider.issuer}/device"
    pending = oidc_provider.device_token(started["device_code"])
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"
    oidc_provider.approve_device(started["verification_uri_complete"], "admin", "admin-password")
    response = oidc_provider.device_token(started["device_code"])
    assert response.status_code == 200, response.text
    claims = verified(oidc_provider, response.json()["access_token"])
    assert claims["preferred_username"] == "admin"
    assert claims["realm_access"]["roles"] == ["admin", "user"]
    assert claims["azp"] == "reporun-cli"


def test_key_rotation(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Its own provider: rotating the shared one would change keys under other tests.
    provider = OidcProvider(log_dir=tmp_path_factory.mktemp("oidc-rotate"))
    provider.start()
    try:
        before = provider.client_credentials_token()
        old_kid = jwt.get_unverified_header(before)["kid"]
        new_kid = provider.rotate_keys(keep_old=True)
        assert {k["kid"] for k in provider.jwks()["keys"]} == {old_kid, new_kid}
        after = provider.client_credentials_token()
        assert jwt.get_unverified_header(after)["kid"] == new_kid
        verified(provider, before)
        provider.rotate_keys()
        assert old_kid not in {k["kid"] for k in provider.jwks()["keys"]}
        with pytest.raises(jwt.PyJWKClientError):
            verified(provider, before)
    finally:
        provider.stop()
