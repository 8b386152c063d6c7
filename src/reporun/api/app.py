"""The FastAPI application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reporun import __version__
from reporun.api import problems
from reporun.api.deps import Services
from reporun.api.docs import install_docs
from reporun.api.events import LogHub
from reporun.api.metrics import EndedJobs, HttpMetrics
from reporun.api.routes import health, jobs, legacy, runtimes, workers
from reporun.web import install as install_web
from reporun.web.render import error_page, is_page


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, before the app reads them. A body of
    unknown length (chunked) is read here up to the limit and handed on."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        await self.app(
            scope, _replay([{"type": "http.request", "body": bytes(body)}], receive), send
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.limit} bytes"
        if is_page(scope["path"]) and "app" in scope:
            response = error_page(Request(scope), 413, message, "body")
        else:
            response = problems.problem(413, message, field="body")
        await response(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def create_app(
    services: Services, *, on_shutdown: Callable[[], Awaitable[None]] | None = None
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.log_hub.close()
        await app.state.web.close()
        if on_shutdown is not None:
            await on_shutdown()

    app = FastAPI(
        title="reporun",
        version=__version__,
        summary="Run git repositories as sandboxed jobs.",
        lifespan=lifespan,
        # Served from the package (api/docs.py); ReDoc would load from a CDN, so none.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.log_hub = LogHub(services.store)
    app.state.ended_jobs = EndedJobs()
    app.state.http_metrics = http_metrics = HttpMetrics()
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(legacy.router)
    app.include_router(workers.router)
    app.include_router(runtimes.router)
    app.include_router(health.router)
    install_docs(app)
    install_web(app, services.web, services.web_oidc)

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        http_metrics.observe(
            request.method, route, response.status_code, time.perf_counter() - started
        )
        return response

    app.add_middleware(BodyLimit, limit=services.config.max_body_bytes)
    return app
