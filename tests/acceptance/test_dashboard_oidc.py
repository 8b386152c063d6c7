"""The dashboard of `reporun api` in OIDC mode, in a real headless Chromium: signing in goes
through the issuer's login page (the authorization code flow with PKCE, the realm file's
client `reporun-web` and its redirect URI), and signing out ends the session at the issuer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.browser import chromium, offline_context
from tests.harness.processes import Processes
from tests.harness.server import Server
from tests.oidc_provider import OidcProvider

ROOT = Path(__file__).resolve().parents[2]
REALM = ROOT / "deploy" / "keycloak" / "realm-reporun.json"
PASSWORDS = {"REPORUN_USER_PASSWORD": "user-secret-1", "REPORUN_ADMIN_PASSWORD": "admin-secret-2"}


@pytest.fixture
def stack(tmp_path: Path, processes: Processes) -> Iterator[tuple[Server, OidcProvider]]:
    """The realm file served by the test provider, with the API's address as the public URL
    its redirect URIs name (as deploy/compose.yaml hands REPORUN_PUBLIC_URL to Keycloak)."""
    server = Server(processes, tmp_path / "data")
    provider = OidcProvider(
        realm_file=REALM,
        env={"REPORUN_PUBLIC_URL": server.url, "REPORUN_SERVICE_SECRET": "s3", **PASSWORDS},
        log_dir=tmp_path,
    )
    provider.start()
    try:
        server.env.update(
            REPORUN_AUTH="oidc",
            REPORUN_OIDC_ISSUER=provider.issuer,
            REPORUN_OIDC_AUDIENCE="reporun-api",
            REPORUN_PUBLIC_URL=server.url,
            REPORUN_DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}",
        )
        server.upgrade()
        server.api(tmp_path / "api.log")
        yield server, provider
    finally:
        provider.stop()


def test_sign_in_at_the_issuer_and_out_again(stack: tuple[Server, OidcProvider]) -> None:
    server, provider = stack
    with chromium() as browser:
        context, blocked = offline_context(browser, [server.url, provider.base_url])
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(f"{server.url}/jobs/new")
        # Sent to the issuer: its login form, with PKCE asked for.
        login = page.locator("#kc-form-login")
        login.wait_for()
        assert page.url.startswith(f"{provider.issuer}/")
        page.locator("input[name=username]").fill("admin")
        page.locator("input[name=password]").fill(PASSWORDS["REPORUN_ADMIN_PASSWORD"])
        page.locator("#kc-form-login button").click()
        page.wait_for_url(f"{server.url}/jobs/new")
        assert page.locator(".who .name").inner_text().startswith("admin")
        assert page.get_by_role("link", name="Workers").is_visible()  # an admin's roles came
        cookie = next(c for c in context.cookies() if c["name"] == "reporun_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert not any(c["name"] == "reporun_signin" for c in context.cookies(server.url))

        # The session is the API's user: the page's own calls are answered as theirs.
        page.goto(f"{server.url}/jobs")
        assert page.locator("h1").inner_text() == "Jobs"

        # Out, at the issuer too: its confirmation, then back to the dashboard, signed out.
        page.get_by_role("button", name="Sign out").click()
        page.locator("#kc-logout").click()
        page.wait_for_url(f"{server.url}/signin?signed_out=true")
        assert "signed out" in page.locator("main").inner_text()
        # The issuer forgot the sign-in: coming back asks for the password again.
        page.goto(f"{server.url}/jobs")
        page.locator("#kc-form-login").wait_for()

        # A sign-in this browser did not start is refused with words, not followed.
        refused = page.goto(f"{server.url}/signin/callback?code=stolen&state=forged")
        assert refused is not None and refused.status == 400
        assert "not one this browser started" in page.locator(".problem").inner_text()
        context.close()
    assert blocked == []

    # Sign-in links are local tokens' way in: an OIDC server refuses to make one.
    token = provider.password_token(
        "user", PASSWORDS["REPORUN_USER_PASSWORD"], client_id="reporun-cli", client_secret=None
    )
    refused_link = httpx.post(
        f"{server.url}/v1/signin-links",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        trust_env=False,
    )
    assert refused_link.status_code == 422, refused_link.text
    assert "identity provider" in refused_link.json()["detail"]
