"""`reporun login` and `logout`: a token from the OIDC issuer for the other commands; and
`reporun dashboard`: a link that signs a browser in to the dashboard."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer

from reporun.cli.base import app, fail, run


@app.command()
def login(
    issuer: Annotated[
        str | None,
        typer.Option(metavar="URL", help="The OIDC issuer.", show_default="REPORUN_OIDC_ISSUER"),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="The issuer's client for the CLI.",
            show_default="REPORUN_OIDC_CLIENT_ID, else reporun-cli",
        ),
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Sign in with a password instead of a browser.",
            show_default=False,
        ),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    device: Annotated[
        bool | None,
        typer.Option(
            "--device/--password",
            help="Insist on the browser or the password flow.",
            show_default="the browser where the issuer offers it",
        ),
    ] = None,
) -> None:
    """Sign in to the OIDC issuer.

    The other commands then use that token (REPORUN_TOKEN still wins).
    """
    import getpass

    import httpx

    from reporun.cli.settings import ClientSettings
    from reporun.cli.signin import HTTP_TIMEOUT, CredentialCache, DeviceCode, Issuer
    from reporun.cli.signin import login as sign_in
    from reporun.paths import is_loopback_host

    settings = ClientSettings.from_env()
    issuer = issuer or settings.oidc_issuer
    if not issuer:
        fail("no issuer: pass --issuer or set REPORUN_OIDC_ISSUER")
    scheme, _, rest = issuer.partition("://")
    host = urlsplit(issuer).hostname or ""
    if scheme not in ("https", "http") or not rest:
        fail(f"--issuer must be an https:// URL, not {issuer!r}")
    if scheme == "http" and not is_loopback_host(host):
        fail(
            "--issuer must be https:// (http:// only on a loopback address): "
            "passwords and tokens cross it"
        )
    if password_stdin and username is None:
        fail("--password-stdin needs --username")
    secret = settings.client_secret

    if username is not None and not password_stdin and not sys.stdin.isatty():
        fail("no terminal to ask the password on: use --password-stdin")

    def ask_password() -> str:
        if password_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        return getpass.getpass(f"password for {username}: ")

    def show_code(code: DeviceCode) -> None:
        where = code.verification_uri_complete or code.verification_uri
        print(
            f"To sign in, open {where}\n"
            f"(or open {code.verification_uri} and enter the code {code.user_code})\n"
            "waiting for the browser...",
            file=sys.stderr,
            flush=True,
        )

    async def main() -> None:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            credentials = await sign_in(
                Issuer(http, issuer, client_id or settings.oidc_client_id, secret),
                username=username,
                ask_password=ask_password,
                show_code=show_code,
                device=device,
            )
        cache = CredentialCache(settings.credentials_path)
        cache.save(dataclasses.replace(credentials, server=settings.url.rstrip("/")))
        name, roles = credentials.who()
        print(
            f"signed in as {name} (roles: {', '.join(roles) or 'none'}) for {settings.url}; "
            f"token cached in {cache.path}"
        )

    run(main())


@app.command()
def logout() -> None:
    """Forget the token `reporun login` cached.

    It is revoked at the issuer too, where the issuer allows.
    """
    import httpx

    from reporun.cli.settings import ClientSettings
    from reporun.cli.signin import HTTP_TIMEOUT, CredentialCache, Issuer, LoginError

    settings = ClientSettings.from_env()
    cache = CredentialCache(settings.credentials_path)

    async def main() -> None:
        credentials = cache.load()
        if credentials is None:
            print("not signed in")
            return
        if credentials.refresh_token:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                issuer = Issuer(
                    http, credentials.issuer, credentials.client_id, settings.client_secret
                )
                with contextlib.suppress(LoginError):
                    await issuer.discover()
                    await issuer.revoke(credentials.refresh_token)
        cache.delete()
        print(f"signed out; removed {cache.path}")

    run(main())


@app.command()
def dashboard() -> None:
    """Print a one-time browser sign-in link.

    For servers with local tokens (`reporun serve`); with OIDC, open the server's address and
    sign in at the identity provider.
    """
    from reporun.cli.jobs import _client

    async def link() -> None:
        async with _client() as client:
            answer = await client.signin_link()
        print(answer["url"])
        hours = int(answer.get("expires_in", 0)) // 3600
        print(f"(it works once, within {hours} hours)", file=sys.stderr)

    run(link())
