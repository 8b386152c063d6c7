"""OIDC settings a server refuses, and where roles are read from."""

from __future__ import annotations

import pytest

from reporun.api.oidc import OidcAuth, claim_at
from reporun.errors import ConfigError

CLAIMS = {
    "realm_access": {"roles": ["user", "offline_access"]},
    "resource_access": {"reporun-api": {"roles": ["admin"]}},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("realm_access.roles", ["user", "offline_access"]),
        ("resource_access.reporun-api.roles", ["admin"]),
        ("resource_access.other.roles", None),
        ("roles", None),
        ("realm_access.roles.0", None),
    ],
)
def test_claim_paths(path: str, value: object) -> None:
    assert claim_at(CLAIMS, path) == value


@pytest.mark.parametrize(
    ("algorithms", "audience", "azp", "message"),
    [
        (["HS256"], "api", None, "ALGORITHMS"),
        (["none"], "api", None, "ALGORITHMS"),
        ([], "api", None, "ALGORITHMS"),
        (["RS256"], None, None, "AUDIENCE"),
    ],
)
def test_unsafe_settings_are_refused(
    algorithms: list[str], audience: str | None, azp: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        OidcAuth(
            issuer="https://id.example.org/realms/x",
            audience=audience,
            azp=azp,
            roles_claim="realm_access.roles",
            algorithms=algorithms,
        )
