"""Rendering the dashboard's pages: the templates, the headers every page carries, and errors
as pages (a person reads them; the API's problem+json is for programs).

A page's route is an `HtmlRoute`: whatever reporun error or invalid request it meets becomes a
page with the same status the API would answer, saying what went wrong; a page that needs a
session and has none sends the browser to sign in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

from reporun import __version__
from reporun.api.problems import status_of
from reporun.errors import ReporunError
from reporun.web.session import SignInNeeded, signin_url

logger = logging.getLogger("reporun.web")


# Scripts and styles come from this server only; nothing inline, no frames.
def security_headers(form_targets: Sequence[str] = ()) -> dict[str, str]:
    """Every page's headers: nothing but this server's own script, style and connections, no
    framing, no caching; forms post here only, or (`form_targets`) to where a sign-out
    continues: the issuer's origin."""
    targets = " ".join(["'self'", *form_targets])
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; form-action {targets}; frame-ancestors 'none'; "
            "base-uri 'none'; object-src 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reporun.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["seconds"] = seconds
    env.filters["phase"] = phase_time
    env.filters["size"] = size
    env.globals["version"] = __version__
    return env


def when(stamp: datetime | None) -> str:
    if stamp is None:
        return "—"
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def phase_time(value: float | None) -> str:
    """A phase's time: most take milliseconds."""
    if value is not None and value < 1:
        return f"{value * 1000:.0f} ms"
    return seconds(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} bytes"


def page(
    request: Request, name: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    env: jinja2.Environment = request.app.state.web.templates
    body = env.get_template(name).render(request=request, **context)
    return HTMLResponse(body, status_code=status, headers=request.app.state.web.headers)


PAGE_PATHS = ("/jobs", "/signin", "/signout", "/workers")


def is_page(path: str) -> bool:
    """Whether `path` is the dashboard's (answered in HTML), not the API's."""
    return path == "/" or path.startswith(PAGE_PATHS)


def error_page(request: Request, status: int, message: str, field: str | None = None) -> Response:
    web = request.app.state.web
    body = web.templates.get_template("error.html").render(
        request=request,
        user=getattr(request.state, "web_user", None),
        csrf=getattr(request.state, "web_csrf", None),
        status=status,
        message=message,
        field=field,
    )
    return HTMLResponse(body, status_code=status, headers=request.app.state.web.headers)


class HtmlRoute(APIRoute):
    """A page: errors are answered as pages (see the module's docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded as exc:
                return RedirectResponse(signin_url(exc.next_path), status_code=303)
            except ReporunError as exc:
                status = status_of(exc)
                if status >= 500:
                    logger.warning("page error: %s", exc, extra={"action": "page_error"})
                return error_page(request, status, exc.message, getattr(exc, "field", None))
            except RequestValidationError as exc:
                errors = exc.errors()
                first = errors[0] if errors else {}
                where = ".".join(
                    str(p) for p in first.get("loc", ()) if p not in ("path", "query", "body")
                )
                message = str(first.get("msg", "invalid request"))
                return error_page(request, 422, f"{where}: {message}" if where else message, where)
            except DBAPIError as exc:
                logger.warning(
                    "database error: %s", type(exc).__name__, extra={"action": "db_error"}
                )
                return error_page(request, 503, "the database is not answering; try again shortly")

        return handle
