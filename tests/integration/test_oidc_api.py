"""reporun's API behind a real OIDC provider (Keycloak-shaped): real grants, then every route,
then every forgery refused as DESIGN.md says (401, 403 or 404; never 500)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from reporun.api.app import create_app
from reporun.api.server import build_auth, build_services
from reporun.config import Settings
from reporun.store import Store
from tests.oidc_provider import OidcProvider

REPO = "https://example.org/octo/hello.git"


async def oidc_client(
    settings: Settings, store: Store, provider: OidcProvider, **overrides: Any
) -> tuple[httpx.AsyncClient, Any]:
    configured = settings.model_copy(
        update={
            "auth": "oidc",
            "oidc_issuer": provider.issuer,
            "oidc_audience": "reporun-api",
            **overrides,
        }
    )
    auth = build_auth(configured, store)
    app = create_app(build_services(configured, store, auth))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    return client, auth


@pytest.fixture
async def api(
    settings: Settings, store: Store, oidc_provider: OidcProvider
) -> AsyncIterator[httpx.AsyncClient]:
    client, auth = await oidc_client(settings, store, oidc_provider)
    async with client:
        yield client
    await auth.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_real_tokens_on_every_route(
    api: httpx.AsyncClient, oidc_provider: OidcProvider
) -> None:
    user = bearer(oidc_provider.password_token("user", "user-password"))
    admin = bearer(oidc_provider.password_token("admin", "admin-password"))
    service = bearer(oidc_provider.client_credentials_token())
    mine = (await api.post("/v1/jobs", json={"repo": REPO}, headers=user)).json()
    assert mine["owner"] == "user" and mine["status"] == "queued"
    theirs = (await api.post("/v1/jobs", json={"repo": REPO}, headers=admin)).json()
    assert theirs["owner"] == "admin"
    assert (await api.get(f"/v1/jobs/{mine['id']}", headers=user)).status_code == 200
    assert (await api.get(f"/v1/jobs/{mine['id']}/logs", headers=user)).status_code == 200
    listed = (await api.get("/v1/jobs", headers=user)).json()["items"]
    assert [j["id"] for j in listed] == [mine["id"]]
    # A user never sees nor cancels another's job; admins (and the service) see all.
    problem(await api.get(f"/v1/jobs/{theirs['id']}", headers=user), 404)
    problem(await api.post(f"/v1/jobs/{theirs['id']}/cancel", headers=user), 404)
    every = (await api.get("/v1/jobs", headers=service)).json()["items"]
    assert {j["id"] for j in every} == {mine["id"], theirs["id"]}
    assert (await api.get("/metrics", headers=admin)).status_code == 200
    problem(await api.get("/metrics", headers=user), 403)
    added = await api.get("/add", params={"url": REPO}, headers=user)
    assert added.text.startswith("Job added: ")
    assert (await api.get("/all", headers=user)).status_code == 200
    cancelled = await api.post(f"/v1/jobs/{mine['id']}/cancel", headers=user)
    assert cancelled.json()["status"] == "cancelled"


async def test_a_token_without_roles_is_403(
    api: httpx.AsyncClient, oidc_provider: OidcProvider
) -> None:
    nobody = bearer(oidc_provider.password_token("nobody", "nobody-password"))
    problem(await api.get("/v1/jobs", headers=nobody), 403)
    problem(await api.post("/v1/jobs", json={"repo": REPO}, headers=nobody), 403)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _forgeries(provider: OidcProvider) -> dict[str, str]:
    now = int(time.time())
    real = provider.password_token("user", "user-password")
    header_b64, payload_b64, signature = real.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    payload["realm_access"] = {"roles": ["admin", "user"]}
    kid = jwt.get_unverified_header(real)["kid"]
    public = jwt.PyJWK(next(k for k in provider.jwks()["keys"] if k["kid"] == kid))
    pem = public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = provider.claims()
    hs256 = ".".join(
        (
            _b64({"alg": "HS256", "typ": "JWT", "kid": kid}),
            _b64(claims),
        )
    )
    import hashlib
    import hmac

    hs256_signature = (
        base64.urlsafe_b64encode(hmac.new(pem, hs256.encode(), hashlib.sha256).digest())
        .decode()
        .rstrip("=")
    )
    return {
        "garbage": "not.a.token",
        "expired": provider.sign(provider.claims(iat=now - 900, exp=now - 600)),
        "not yet valid": provider.sign(provider.claims(nbf=now + 600)),
        "wrong issuer": provider.sign(provider.claims(iss="https://evil.example/realms/reporun")),
        "wrong audience": provider.sign(provider.claims(aud="another-api")),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}.",
        "hs256 with the public key": f"{hs256}.{hs256_signature}",
        "another key, same kid": jwt.encode(claims, other, algorithm="RS256", headers={"kid": kid}),
        "another key, unknown kid": jwt.encode(
            claims, other, algorithm="RS256", headers={"kid": "not-the-issuers"}
        ),
        "edited roles": f"{header_b64}.{_b64(payload)}.{signature}",
        "no exp": provider.sign({k: v for k, v in claims.items() if k != "exp"}),
    }


async def test_forgeries_are_401(api: httpx.AsyncClient, oidc_provider: OidcProvider) -> None:
    plain = {  # what each refusal says, in a user's words (never PyJWT's)
        "garbage": "is not one the issuer",
        "expired": "has expired",
        "not yet valid": "not valid yet",
        "wrong issuer": "issued by another issuer",
        "wrong audience": "for another audience",
        "no exp": "lacks the 'exp' claim",
    }
    for name, token in _forgeries(oidc_provider).items():
        response = await api.get("/v1/jobs", headers=bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), name
        detail = response.json()["detail"]
        assert plain.get(name, "is not one the issuer") in detail, (name, detail)
    problem(await api.get("/v1/jobs"), 401)
    # The genuine article passes.
    genuine = oidc_provider.sign(oidc_provider.claims())
    assert (await api.get("/v1/jobs", headers=bearer(genuine))).status_code == 200


async def test_keycloak_azp_and_client_roles(
    settings: Settings, store: Store, oidc_provider: OidcProvider
) -> None:
    client, auth = await oidc_client(
        settings,
        store,
        oidc_provider,
        oidc_audience=None,
        oidc_azp="reporun-cli",
        oidc_roles_claim="resource_access.reporun-api.roles",
    )
    async with client:
        account = oidc_provider.password_token("admin", "admin-password", audience="account")
        assert jwt.decode(account, options={"verify_signature": False})["aud"] == "account"
        assert (await client.get("/v1/jobs", headers=bearer(account))).status_code == 200
        service = oidc_provider.client_credentials_token()  # azp reporun-service
        problem(await client.get("/v1/jobs", headers=bearer(service)), 401)
    await auth.close()


async def test_issuer_down_cached_keys_work_unknown_keys_are_503(
    settings: Settings, store: Store, tmp_path: Any
) -> None:
    provider = OidcProvider(log_dir=tmp_path)
    provider.start()
    try:
        client, auth = await oidc_client(settings, store, provider, oidc_jwks_refresh=0)
        token = provider.password_token("user", "user-password")
        async with client:
            assert (await client.get("/v1/jobs", headers=bearer(token))).status_code == 200
            provider.rotate_keys()
            rotated = provider.sign(provider.claims())
            provider.stop()
            assert (await client.get("/v1/jobs", headers=bearer(token))).status_code == 200
            problem(await client.get("/v1/jobs", headers=bearer(rotated)), 503)
        await auth.close()
    finally:
        provider.stop()
