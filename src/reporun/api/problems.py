"""Errors as application/problem+json (RFC 9457), mapped once for the whole app."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from reporun.errors import (
    AuthError,
    ConfigError,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    IssuerUnavailable,
    NotFound,
    QuotaExceeded,
    ReporunError,
)

logger = logging.getLogger("reporun.api")

PROBLEM = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _status_of(exc: ReporunError) -> int:
    match exc:
        case InvalidInput():
            return 400
        case Forbidden():
            return 403
        case AuthError():
            return 401
        case NotFound():
            return 404
        case IllegalTransition():
            return 409
        case IssuerUnavailable():
            return 503
        case QuotaExceeded():
            return 429
        case ConfigError():
            return 500
    return 500


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "body")


def install(app: FastAPI) -> None:
    @app.exception_handler(ReporunError)
    async def _reporun(request: Request, exc: ReporunError) -> JSONResponse:
        status = _status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, QuotaExceeded):
            headers = {"Retry-After": str(exc.retry_after)}
        return problem(status, exc.message, field=getattr(exc, "field", None), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return problem(400, "the body is not valid JSON", field="body")
        field = _field_of(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        return problem(
            422,
            f"{field}: {message}",
            field=field,
            errors=[
                {"field": _field_of(tuple(e.get("loc", ()))), "message": str(e.get("msg"))}
                for e in errors
            ],
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        logger.warning("database error: %s", exc.__class__.__name__, extra={"action": "db_error"})
        return problem(
            503, "the database is not answering; try again shortly", headers={"Retry-After": "2"}
        )

    @app.exception_handler(OSError)
    async def _os(request: Request, exc: OSError) -> JSONResponse:
        logger.warning("backend unreachable: %s", exc, extra={"action": "backend_error"})
        return problem(
            503, "a backend is not answering; try again shortly", headers={"Retry-After": "2"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", extra={"action": "error"})
        return problem(500, "internal error")
