"""A browser's sign-in: its session cookie, who it is, and the CSRF token of its forms.

The cookie holds a random secret; the store keeps its hash with the user, the roles and the
CSRF token (`reporun.store.sessions`). Cookies are HttpOnly and SameSite=Lax, and Secure unless
the browser came to a loopback address (where there is no TLS to require).
"""

from __future__ import annotations

import hmac
from urllib.parse import quote, urlsplit

from fastapi import Request, Response

from reporun.api.auth import Principal
from reporun.errors import Forbidden, Unauthorized
from reporun.paths import is_loopback_host
from reporun.store import Store
from reporun.store.sessions import WebSession

SESSION_COOKIE = "reporun_session"
CSRF_FIELD = "csrf"


class SignInNeeded(Unauthorized):
    """A page asked for by a browser with no session: it is sent to sign in, then back."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in to see this page")
        self.next_path = next_path


def secure_cookies(request: Request) -> bool:
    """Secure, unless the browser talks plain HTTP to loopback (behind a proxy, as
    REPORUN_PUBLIC_URL says)."""
    configured: str | None = request.app.state.web.config.public_url
    if configured:
        public = urlsplit(configured)
        return public.scheme == "https" or not is_loopback_host(public.hostname or "")
    return request.url.scheme == "https" or not is_loopback_host(request.url.hostname or "")


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int, path: str = "/"
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )


def clear_cookie(response: Response, request: Request, name: str, *, path: str = "/") -> None:
    response.delete_cookie(
        name, path=path, httponly=True, samesite="lax", secure=secure_cookies(request)
    )


async def session_of(request: Request, store: Store) -> WebSession | None:
    """The browser's session, while it lasts and the local token it came from (if one did)
    is neither revoked nor expired."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret or len(secret) > 128:
        return None
    session = await store.sessions.get(secret)
    if session is None or session.token_id is None:
        return session
    if await store.tokens.active(session.token_id) is None:
        await store.sessions.close(secret)
        return None
    return session


def principal_of(session: WebSession) -> Principal:
    return Principal(session.name, session.roles)


def here(request: Request) -> str:
    """The path and query of the page asked for (where sign-in leads back to)."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def signin_url(next_path: str) -> str:
    return f"/signin?next={quote(next_path, safe='')}"


def local_path(candidate: str | None) -> str:
    """A path on this server to go back to after sign-in; anything else (another site, a
    scheme, `//host`) is the jobs page."""
    if (
        not candidate
        or not candidate.startswith("/")
        or candidate.startswith(("//", "/\\"))
        or any(c in candidate for c in "\r\n\t\\")
    ):
        return "/jobs"
    return candidate


def check_csrf(session: WebSession, sent: str | None) -> None:
    """A form's CSRF token must be its session's (a forged POST from another site has none)."""
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden(
            "the form's CSRF token is missing or is not this session's: reload the page and "
            "try again",
            field=CSRF_FIELD,
        )
