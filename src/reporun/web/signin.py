"""Signing in to the dashboard, and out.

Local tokens (`reporun serve`, REPORUN_AUTH=local): a sign-in link with a one-time code, which
`serve` prints when it starts and `reporun dashboard` asks for (`POST /v1/signin-links`), or a
token pasted into the sign-in page. Opening the link asks first and signs in by a POST from
this site's own page, so another site's link cannot sign a browser in as someone else. A
session opened with a local token ends when that token is revoked or expires. OIDC: the
issuer's own sign-in, by the authorization code flow with PKCE (`reporun.web.oidcflow`);
signing out ends the session at the issuer too.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from reporun.api.auth import LocalAuth, Principal
from reporun.api.deps import ServicesDep, current_user
from reporun.api.problems import responses
from reporun.errors import Forbidden, NotOffered, ReporunError, Unauthorized
from reporun.web.forms import read_form
from reporun.web.oidcflow import Flow, OidcSignin
from reporun.web.render import HtmlRoute, page
from reporun.web.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    check_csrf,
    clear_cookie,
    local_path,
    session_of,
    set_cookie,
)

FLOW_COOKIE = "reporun_signin"
FLOW_TTL = 600
CODE_TTL = 12 * 3600  # a link printed at start may be opened later in the day

pages = APIRouter(route_class=HtmlRoute, include_in_schema=False)
api = APIRouter(prefix="/v1", tags=["dashboard"])


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.web.config.public_url
    return (configured or str(request.base_url)).rstrip("/")


def same_origin(request: Request) -> None:
    """A form posted from another site (or from a sandboxed frame, whose Origin is "null") is
    refused; behind a proxy the site is REPORUN_PUBLIC_URL's."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not sent by a browser's cross-site form (they all send Origin with a POST)
    configured: str | None = request.app.state.web.config.public_url
    ours = urlsplit(configured).netloc if configured else request.headers.get("host")
    if origin == "null" or urlsplit(origin).netloc != ours:
        raise Forbidden("the form was sent from another site", field="origin")


def _oidc(request: Request) -> OidcSignin | None:
    signin: OidcSignin | None = request.app.state.web.oidc
    return signin


async def _start_session(
    request: Request,
    services: ServicesDep,
    user: Principal,
    next_path: str,
    *,
    id_token: str | None = None,
) -> Response:
    if not user.roles & {"user", "admin"}:
        raise Forbidden(f"{user.name} has neither the role user nor admin")
    ttl = lasting(request.app.state.web.config.session_ttl, user)
    sessions = services.store.sessions
    if previous := request.cookies.get(SESSION_COOKIE):
        await sessions.close(previous)  # a sign-in never keeps the session it replaces
    opened = await sessions.open(
        user.name, user.roles, ttl=ttl, id_token=id_token, token_id=user.token_id
    )
    response = RedirectResponse(local_path(next_path), status_code=303)
    set_cookie(response, request, SESSION_COOKIE, opened.secret, max_age=ttl)
    return response


def lasting(ttl: int, user: Principal) -> int:
    """`ttl` seconds, or fewer when the token signed in with expires before."""
    if user.expires_at is None:
        return ttl
    left = int((user.expires_at - datetime.now(UTC)).total_seconds())
    if left <= 0:
        raise Unauthorized("the token has expired")
    return min(ttl, left)


def _signin_page(request: Request, *, status: int = 200, **context: object) -> Response:
    defaults: dict[str, object] = {
        "user": None,
        "csrf": None,
        "next_path": "/jobs",
        "message": None,
        "signed_out": False,
        "oidc": _oidc(request) is not None,
        "code": None,
        "code_name": None,
    }
    return page(request, "signin.html", {**defaults, **context}, status=status)


@pages.get("/signin")
async def signin(
    request: Request,
    services: ServicesDep,
    next: Annotated[str | None, Query(max_length=2048)] = None,
    code: Annotated[str | None, Query(max_length=128)] = None,
    signed_out: Annotated[bool, Query()] = False,
) -> Response:
    next_path = local_path(next)
    oidc = _oidc(request)
    if code is not None and oidc is None:
        name = await services.store.sessions.peek(code)
        if name is None:
            return _used_link(request, next_path)
        return _signin_page(request, next_path=next_path, code=code, code_name=name)
    if oidc is None or signed_out:
        return _signin_page(request, next_path=next_path, signed_out=signed_out)
    flow = Flow.new(next_path)
    target = await oidc.authorize_url(flow, f"{base_url(request)}/signin/callback")
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request, FLOW_COOKIE, flow.cookie(), max_age=FLOW_TTL, path="/signin")
    return response


def _used_link(request: Request, next_path: str) -> Response:
    return _signin_page(
        request,
        status=401,
        next_path=next_path,
        message="This sign-in link was used already or has expired. Run `reporun dashboard` "
        "for a new one.",
    )


@pages.post("/signin/code")
async def signin_with_code(request: Request, services: ServicesDep) -> Response:
    """The sign-in link's confirmation: the code is used here, once."""
    same_origin(request)
    fields = await read_form(request)
    next_path = local_path(fields.get("next"))
    code = fields.get("code", "")
    if _oidc(request) is not None:
        raise NotOffered("this server signs in through its identity provider", field="code")
    redeemed = await services.store.sessions.redeem(code) if 0 < len(code) <= 128 else None
    if redeemed is None:
        return _used_link(request, next_path)
    if redeemed.token_id is not None:
        record = await services.store.tokens.active(redeemed.token_id)
        if record is None:
            return _used_link(request, next_path)
        user = Principal(
            redeemed.name,
            redeemed.roles,
            token_id=record.id,
            expires_at=record.expires_at,
        )
    else:
        user = Principal(redeemed.name, redeemed.roles)
    return await _start_session(request, services, user, next_path)


@pages.post("/signin/token")
async def signin_with_token(request: Request, services: ServicesDep) -> Response:
    same_origin(request)
    fields = await read_form(request)
    next_path = local_path(fields.get("next"))
    token = fields.get("token", "").strip()
    auth = services.auth
    if not isinstance(auth, LocalAuth):
        raise NotOffered("this server signs in through its identity provider", field="token")
    if not token:
        return _signin_page(request, status=422, next_path=next_path, message="Paste a token.")
    try:
        user = await auth.authenticate(token)
    except ReporunError as exc:
        return _signin_page(request, status=401, next_path=next_path, message=exc.message)
    return await _start_session(request, services, user, next_path)


@pages.get("/signin/callback")
async def signin_callback(
    request: Request,
    services: ServicesDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    error_description: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    oidc = _oidc(request)
    if oidc is None:
        raise NotOffered("this server signs in with local tokens, not an identity provider")
    flow = Flow.of_cookie(request.cookies.get(FLOW_COOKIE))
    if flow is None or state is None or not hmac.compare_digest(state, flow.state):
        # Checked first: only the browser that started a sign-in hears how it ended.
        answer = _signin_page(
            request,
            status=400,
            signed_out=True,
            message="This sign-in is not one this browser started (or it took over 10 "
            "minutes): sign in again.",
        )
        clear_cookie(answer, request, FLOW_COOKIE, path="/signin")
        return answer
    if error is not None or not code:
        message = f"The identity provider did not sign you in: {error_description or error}."
        answer = _signin_page(request, status=401, message=message, signed_out=True)
        clear_cookie(answer, request, FLOW_COOKIE, path="/signin")
        return answer
    signed = await oidc.finish(code, flow, f"{base_url(request)}/signin/callback")
    response = await _start_session(
        request, services, signed.principal, flow.next_path, id_token=signed.id_token
    )
    clear_cookie(response, request, FLOW_COOKIE, path="/signin")
    return response


@pages.post("/signout")
async def signout(request: Request, services: ServicesDep) -> Response:
    same_origin(request)
    fields = await read_form(request)
    session = await session_of(request, services.store)
    after = f"{base_url(request)}/signin?signed_out=true"
    target = "/signin?signed_out=true"
    if session is not None:
        check_csrf(session, fields.get(CSRF_FIELD))
        await services.store.sessions.close(request.cookies[SESSION_COOKIE])
        oidc = _oidc(request)
        if oidc is not None:
            target = await oidc.end_session_url(session.id_token, after) or target
    response = RedirectResponse(target, status_code=303)
    clear_cookie(response, request, SESSION_COOKIE)
    return response


class SigninLink(BaseModel):
    url: str = Field(description="open it in a browser to sign in; it works once")
    expires_in: int = Field(description="seconds it stays good for")


@api.post(
    "/signin-links",
    response_model=SigninLink,
    summary="A one-time sign-in link to the dashboard (local tokens)",
    responses=responses(
        422, why={422: "This server signs in through its identity provider instead."}
    ),
)
async def signin_link(
    request: Request,
    services: ServicesDep,
    user: Annotated[Principal, Depends(current_user)],
) -> SigninLink:
    if _oidc(request) is not None:
        raise NotOffered("this server's dashboard signs in through its identity provider")
    ttl = lasting(CODE_TTL, user)
    code = await services.store.sessions.new_code(
        user.name, user.roles, ttl=ttl, token_id=user.token_id
    )
    return SigninLink(url=f"{base_url(request)}/signin?code={code}", expires_in=ttl)
