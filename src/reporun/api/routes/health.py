"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from reporun.api.deps import ServicesDep, admin_user, authenticated, bearer
from reporun.api.metrics import exposition
from reporun.api.problems import NotReady, answer, problem, responses
from reporun.api.schemas import PrometheusText, Ready

router = APIRouter(tags=["health"])

READY_TIMEOUT = 2.0


@router.get("/healthz", summary="200 while the process lives")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Ready,
    summary="200 when the database and queue answer, else 503",
    responses={503: answer(503, "The database or the queue is not answering.", model=NotReady)},
)
async def readyz(services: ServicesDep) -> Response:
    checks: dict[str, str] = {}
    for name, probe in (("database", services.store.ping), ("queue", services.queue.ping)):
        try:
            await asyncio.wait_for(probe(), READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem(503, f"not ready: {down}", checks=checks)


@router.get(
    "/metrics",
    response_class=PrometheusText,
    summary="Prometheus metrics",
    responses=responses(),
    dependencies=[Security(bearer)],
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    if not services.config.metrics_public:
        await admin_user(await authenticated(request, services))
    state = request.app.state
    body = await exposition(
        services.store,
        state.ended_jobs,
        state.http_metrics,
        worker_alive=services.config.worker_alive,
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
