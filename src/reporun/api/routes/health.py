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
from reporun.errors import BrokerError, ReporunError

router = APIRouter(tags=["health"])

READY_TIMEOUT = 2.0


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
    checks: dict[str, str] = {}
    queue = services.queue
    for name, probe in (("database", services.store.ping), (queue.check_name, queue.ping)):
        try:
            await asyncio.wait_for(probe(), READY_TIMEOUT)
            checks[name] = "ok"
        except BrokerError as exc:
            # Jobs are still accepted (into the outbox) and run (workers take them from the
            # database): this replica stays in service.
            checks[name] = f"degraded: {exc.message}; jobs wait in the outbox"
        except ReporunError as exc:  # names what is down, e.g. the broker's address
            checks[name] = f"down: {exc.message}"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    if not any(v.startswith("down") for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(k for k, v in checks.items() if v.startswith("down"))
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
        transport=await services.queue.transport(),
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
