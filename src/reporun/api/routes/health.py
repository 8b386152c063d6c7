"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from reporun.api.deps import ServicesDep, admin_user, authenticated, bearer
from reporun.api.metrics import exposition
from reporun.api.problems import NotReady, answer, problem, responses
from reporun.api.schemas import PrometheusText, Ready
from reporun.health import down_of, readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="200 while the process lives")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Ready,
    summary="200 when the database and the queue (or its Kafka broker) answer, else 503",
    responses={
        503: answer(503, "The database, the queue or the broker is not answering.", model=NotReady)
    },
)
async def readyz(services: ServicesDep) -> Response:
    queue = services.queue
    checks = await readiness((("database", services.store.ping), (queue.check_name, queue.ping)))
    if down := down_of(checks):
        return problem(503, f"not ready: {', '.join(down)}", checks=checks)
    return JSONResponse({"status": "ready", "checks": checks})


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
        transport=await services.queue.transport(),
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
