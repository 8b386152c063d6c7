"""The realm file a stock Keycloak imports holds what the README promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REALM = json.loads((ROOT / "deploy" / "keycloak" / "realm-reporun.json").read_text())


def client(client_id: str) -> dict[str, Any]:
    return next(c for c in REALM["clients"] if c["clientId"] == client_id)


def user(name: str) -> dict[str, Any]:
    return next(u for u in REALM["users"] if u["username"] == name)


def audiences(entry: dict[str, Any]) -> set[str]:
    return {
        m["config"]["included.client.audience"]
        for m in entry.get("protocolMappers", [])
        if m["protocolMapper"] == "oidc-audience-mapper"
        and m["config"]["access.token.claim"] == "true"
    }


def test_realm_and_roles() -> None:
    assert REALM["realm"] == "reporun" and REALM["enabled"] is True
    roles = {r["name"]: r for r in REALM["roles"]["realm"]}
    assert set(roles) == {"user", "admin"}
    assert roles["admin"]["composites"]["realm"] == ["user"]


def test_clients_and_audience_mappers() -> None:
    assert client("reporun-api")["bearerOnly"] is True
    cli = client("reporun-cli")
    assert cli["publicClient"] is True and cli["directAccessGrantsEnabled"] is True
    assert cli["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert audiences(cli) == {"reporun-api"}
    service = client("reporun-service")
    assert service["serviceAccountsEnabled"] is True and service["publicClient"] is False
    assert audiences(service) == {"reporun-api"}


def test_the_dashboard_signs_in_by_the_code_flow_with_pkce() -> None:
    web = client("reporun-web")
    assert web["publicClient"] is True and web["standardFlowEnabled"] is True
    assert web["directAccessGrantsEnabled"] is False
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
    public = "${REPORUN_PUBLIC_URL:http://localhost}"
    assert web["redirectUris"] == [f"{public}/signin/callback"]
    assert web["attributes"]["post.logout.redirect.uris"] == f"{public}/signin?signed_out=true"
    assert audiences(web) == {"reporun-api"}


def test_demo_users_and_the_service_account() -> None:
    assert user("user")["realmRoles"] == ["user"]
    assert set(user("admin")["realmRoles"]) == {"admin", "user"}
    assert user("service-account-reporun-service")["serviceAccountClientId"] == "reporun-service"
    assert user("service-account-reporun-service")["realmRoles"] == ["admin"]
    for name in ("user", "admin"):
        assert user(name)["credentials"][0]["temporary"] is False


def test_no_secret_is_written_in_the_file() -> None:
    """The client secret and the first users' passwords are Keycloak placeholders, resolved
    from the environment at import (deploy/make-env.sh makes them): none has a default (the
    dashboard's public address, no secret, has one)."""
    assert client("reporun-service")["secret"] == "${REPORUN_SERVICE_SECRET}"
    assert user("user")["credentials"][0]["value"] == "${REPORUN_USER_PASSWORD}"
    assert user("admin")["credentials"][0]["value"] == "${REPORUN_ADMIN_PASSWORD}"
    text = (ROOT / "deploy" / "keycloak" / "realm-reporun.json").read_text()
    assert 'password"' not in text.replace('"type": "password"', "")
    placeholders = {part.split("}")[0] for part in text.split("${")[1:]}
    assert {p for p in placeholders if ":" in p} == {"REPORUN_PUBLIC_URL:http://localhost"}


def test_the_readme_tells_how_to_use_it() -> None:
    readme = (ROOT / "README.md").read_text()
    for needed in (
        "deploy/keycloak/realm-reporun.json",
        "--import-realm",
        "REPORUN_OIDC_ISSUER=https://sso.example.org/realms/reporun",
        "REPORUN_OIDC_AUDIENCE=reporun-api",
        "REPORUN_OIDC_AZP",
    ):
        assert needed in readme, needed
