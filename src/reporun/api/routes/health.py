"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from reporun.api.deps import ServicesDep, admin_user, authenticated, bearer
from reporun.api.problems import NotReady, answer, problem, responses
from reporun.api.schemas import PrometheusText, Ready
from reporun.jobs import TERMINAL

router = APIRouter(tags=["health"])

READY_TIMEOUT = 2.0
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


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


class _Snapshot:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


@router.get(
    "/metrics",
    response_class=PrometheusText,
    summary="Prometheus metrics",
    responses=responses(),
    dependencies=[Security(bearer)],
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    if not services.settings.metrics_public:
        await admin_user(await authenticated(request, services))
    store = services.store
    pending = await store.pending_counts()
    ended = await request.app.state.ended_jobs.totals(store)
    workers = await store.list_workers(alive_within=services.settings.lease_seconds)

    finished = CounterMetricFamily(
        "reporun_jobs_finished", "Jobs that ended, by final status", labels=["status"]
    )
    for status in sorted(TERMINAL):
        finished.add_metric([status.value], ended.finished.get(status.value, 0))
    waiting = GaugeMetricFamily("reporun_jobs_pending", "Jobs queued or running", labels=["status"])
    for state, count in pending.items():
        waiting.add_metric([state], count)
    alive = GaugeMetricFamily(
        "reporun_workers", "Workers with a recent heartbeat", labels=["state"]
    )
    states: dict[str, int] = {}
    for worker in workers:
        states[worker.state] = states.get(worker.state, 0) + 1
    for state, number in sorted(states.items()):
        alive.add_metric([state], number)
    decisions = await store.scaling.decisions(limit=1)
    desired = GaugeMetricFamily(
        "reporun_workers_desired", "Workers the observer's newest decision asked for"
    )
    if decisions:
        desired.add_metric([], decisions[0].desired)
    actual = GaugeMetricFamily("reporun_workers_actual", "Workers with a recent heartbeat")
    actual.add_metric([], len(workers))
    directions = await store.scaling.counts()
    scaled = CounterMetricFamily(
        "reporun_scaling_decisions", "Scaling decisions, by direction", labels=["direction"]
    )
    for direction in ("out", "in"):
        scaled.add_metric([direction], directions.get(direction, 0))
    families: list[Any] = [finished, waiting, alive, desired, actual, scaled]
    for name, doc, (buckets, total, count) in (
        ("wait", "Queue wait (created to started)", ended.wait),
        ("run", "Run time", ended.run),
    ):
        family = HistogramMetricFamily(f"reporun_job_{name}_seconds", doc)
        family.add_metric(
            [],
            [(str(b), c) for b, c in zip(BUCKETS, buckets, strict=True)] + [("+Inf", count)],
            sum_value=total,
        )
        families.append(family)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    body = generate_latest(registry) + generate_latest(request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
