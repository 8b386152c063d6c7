"""Errors as application/problem+json (RFC 9457): mapped once for the whole app, and described
once for the OpenAPI document (`responses()` builds a route's `responses=`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPMethod
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema, models_json_schema
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from reporun.errors import (
    AuthError,
    ConfigError,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    IssuerUnavailable,
    NotFound,
    NotOffered,
    QuotaExceeded,
    ReporunError,
    RepoUnusable,
)

logger = logging.getLogger("reporun.api")

PROBLEM = "application/problem+json"
_REF = "#/components/schemas/"
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


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # absent, never null


class FieldError(BaseModel):
    field: str = Field(description="the field, dotted: `limits.memory`, `env.A`")
    message: str


class Problem(BaseModel):
    """An error as RFC 9457 problem details; more members may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["about:blank"])
    title: str = Field(examples=["Bad Request"])
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what went wrong, in one line")
    field: str | SkipJsonSchema[None] = Field(
        None, description="the request field at fault", json_schema_extra=_no_default
    )
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        None, description="every invalid field (422)", json_schema_extra=_no_default
    )


class NotReady(Problem):
    checks: dict[str, str] = Field(
        description="`ok` or `down: <error>` for the database and the queue (`kafka` in Kafka "
        "mode, naming the broker)",
        examples=[{"database": "ok", "queue": "down: TimeoutError"}],
    )


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


def status_of(exc: ReporunError) -> int:
    match exc:
        case RepoUnusable() | NotOffered():
            return 422
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


def _allowed(request: Request) -> str:
    """Every method the request's path takes: Starlette's 405 names only the first route's."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in sorted(HTTPMethod)
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def install(app: FastAPI) -> None:
    document(app)

    @app.exception_handler(ReporunError)
    async def _reporun(request: Request, exc: ReporunError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, QuotaExceeded):
            headers = {"Retry-After": str(exc.retry_after)}
        field = getattr(exc, "field", None)
        extra: dict[str, Any] = {}
        if status == 422 and field is not None:  # as a 422 from validation: `errors` lists it
            extra["errors"] = [{"field": field, "message": exc.message}]
        return problem(status, exc.message, field=field, headers=headers, **extra)

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
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return problem(exc.status_code, str(exc.detail), headers=headers)

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


# The OpenAPI document -------------------------------------------------------------------------

_RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
# What each status means wherever it is answered, and the headers it always (or may) carry.
_ANSWERS: dict[int, tuple[str, dict[str, dict[str, Any]]]] = {
    400: ("A value the server's policy refuses; `field` names it.", {}),
    401: (
        "No bearer token, or one that is not valid.",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
    ),
    403: ("The token lacks the role this call needs.", {}),
    404: ("No such job, or (for a non-admin) another user's.", {}),
    409: ("The job already ended.", {}),
    413: ("The body is larger than the server's REPORUN_MAX_BODY_BYTES.", {}),
    422: ("The request does not match this document; `errors` lists every invalid field.", {}),
    429: (
        "Over the caller's quota of pending jobs or submissions a minute.",
        {"Retry-After": {**_RETRY_AFTER, "required": True}},
    ),
    503: (
        "The database, the queue or the identity provider is not answering.",
        {"Retry-After": _RETRY_AFTER},
    ),
}


def answer(
    status: int, description: str | None = None, *, model: type[Problem] = Problem
) -> dict[str, Any]:
    """One documented problem+json answer."""
    default, headers = _ANSWERS[status]
    documented: dict[str, Any] = {
        "description": description or default,
        "content": {PROBLEM: {"schema": {"$ref": f"{_REF}{model.__name__}"}}},
    }
    if headers:
        documented["headers"] = headers
    return documented


def responses(
    *statuses: int, why: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """An authenticated route's `responses=`: the problems it answers besides those every such
    call may get, a refused token (401) or role (403) and a database or issuer down (503)."""
    every = sorted({*statuses, 401, 403, 503})
    return {status: answer(status, (why or {}).get(status)) for status in every}


def document(app: FastAPI) -> None:
    """Complete the app's OpenAPI document: the problem schemas the answers refer to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        if fresh:
            _, definitions = models_json_schema(
                [(Problem, "serialization"), (NotReady, "serialization")],
                ref_template=_REF + "{model}",
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(definitions["$defs"])
            # A header is sent or not: never null (an optional one's schema says string only).
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                for parameter in operation.get("parameters", []):
                    branches = parameter["schema"].get("anyOf", [])
                    if parameter["in"] == "header" and {"type": "null"} in branches:
                        kept = [b for b in branches if b != {"type": "null"}]
                        parameter["schema"] = {
                            **kept[0],
                            **{k: v for k, v in parameter["schema"].items() if k != "anyOf"},
                        }
            # The runtimes this server offers: any other name is refused (422).
            names = app.state.services.submissions.config.rules.runtimes.names()
            runtime = components["JobCreate"]["properties"]["runtime"]
            for branch in runtime.get("anyOf", [runtime]):
                if branch.get("type") == "string":
                    branch["enum"] = names
            # The network modes it offers (`open` only where the operator allows it).
            modes = app.state.services.submissions.config.rules.open_network.modes()
            network = components["JobCreate"]["properties"]["network"]
            for branch in network.get("anyOf", [network]):
                if "enum" in branch:
                    branch["enum"] = modes
            if app.state.services.config.metrics_public:
                # This server serves /metrics without a token (REPORUN_METRICS_PUBLIC).
                metrics = schema["paths"]["/metrics"]["get"]
                metrics.pop("security", None)
                for status in ("401", "403"):
                    metrics["responses"].pop(status, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend the document
