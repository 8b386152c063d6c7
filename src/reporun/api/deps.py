"""Dependency aliases the routes use: the app's services and who is calling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reporun.api.auth import Authenticator, Principal
from reporun.errors import Forbidden, Unauthorized
from reporun.queue import QueueBackend
from reporun.store import Store
from reporun.submit import Submissions
from reporun.web import WebConfig
from reporun.web.session import principal_of, session_of

if TYPE_CHECKING:
    from reporun.web.oidcflow import OidcSignin


@dataclass(frozen=True, slots=True)
class ApiConfig:
    max_body_bytes: int = 64 * 1024
    # Serve /metrics without a token (a scraper inside a private network).
    metrics_public: bool = False
    # A worker counts as alive while its last heartbeat is this recent (one lease).
    worker_alive: float = 30.0


@dataclass
class Services:
    config: ApiConfig
    store: Store
    queue: QueueBackend
    auth: Authenticator
    submissions: Submissions
    web: WebConfig = field(default_factory=WebConfig)
    # OIDC: the dashboard's sign-in through the issuer (None with local tokens).
    web_oidc: OidcSignin | None = None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# Declares the scheme in the OpenAPI document; `authenticated` reads the header itself, so a
# bad one gets reporun's own 401.
bearer = HTTPBearer(
    scheme_name="bearer",
    auto_error=False,
    description="a token from `reporun token create`, or the OIDC issuer's access token",
)


async def authenticated(
    request: Request,
    services: ServicesDep,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token>")
    return await services.auth.authenticate(token.strip())


async def current_user(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.roles & {"user", "admin"}:
        raise Forbidden("this call needs the role user or admin")
    return principal


async def admin_user(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this call needs the role admin")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def reader(
    request: Request,
    services: ServicesDep,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> Principal:
    """Who reads a job's log or events: a bearer token, else the dashboard's session cookie
    (a browser's EventSource cannot send a header). Only for calls that change nothing, so a
    cookie sent along by another site's page gains it nothing to forge."""
    if request.headers.get("authorization"):
        return await current_user(await authenticated(request, services))
    session = await session_of(request, services.store)
    if session is None:
        raise Unauthorized("send Authorization: Bearer <token>")
    return await current_user(principal_of(session))


Reader = Annotated[Principal, Depends(reader)]
