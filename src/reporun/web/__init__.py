"""The dashboard, served by the API process: server-rendered pages (Jinja2), a little script
of our own for the live log and refreshing lists, and sign-in in the browser."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import jinja2
    from fastapi import FastAPI

    from reporun.web.counts import StatusCounts
    from reporun.web.oidcflow import OidcSignin

STATIC = Path(__file__).resolve().parent / "static"
STATIC_URL = "/assets"


@dataclass(frozen=True, slots=True)
class WebConfig:
    public_url: str | None = None  # where browsers reach this server (None: as they came)
    session_ttl: int = 12 * 3600


@dataclass
class Web:
    templates: jinja2.Environment
    config: WebConfig
    oidc: OidcSignin | None  # None: local tokens (sign-in links)
    counts: StatusCounts  # the jobs page's counts by status
    headers: dict[str, str]  # every page's security headers

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()


def install(app: FastAPI, config: WebConfig, oidc: OidcSignin | None) -> Web:
    from fastapi.staticfiles import StaticFiles

    from reporun.web import pages, signin
    from reporun.web.counts import StatusCounts
    from reporun.web.render import environment, security_headers

    issuer = urlsplit(oidc.auth.issuer) if oidc is not None else None
    targets = [f"{issuer.scheme}://{issuer.netloc}"] if issuer is not None else []
    web = Web(environment(), config, oidc, StatusCounts(), security_headers(targets))
    app.state.web = web
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="web-assets")
    app.include_router(signin.api)
    app.include_router(signin.pages)
    app.include_router(pages.router)
    return web
