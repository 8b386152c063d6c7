"""Every Prometheus family reporun exports: the HTTP requests the API served (counted as they
happen), and the jobs, workers and scaling figures read from the database at each scrape.

Totals of jobs that ended before a settle horizon (a few minutes back, so every transaction that
wrote them has committed) are added up once and remembered; each scrape reads only the jobs that
ended since. Every replica of the API derives the same totals from the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from reporun.jobs import TERMINAL
from reporun.queue import Transport
from reporun.store import EndedTotals, Store

SETTLE_SECONDS = 300.0
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# A job's phases: many take milliseconds.
PHASE_BUCKETS = (0.005, 0.01, 0.025, *BUCKETS)


class HttpMetrics:
    """Requests by method, route and status, and their latency; one registry per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "reporun_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "reporun_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


class EndedJobs:
    def __init__(
        self, buckets: Sequence[float] = BUCKETS, *, settle_seconds: float = SETTLE_SECONDS
    ) -> None:
        self.buckets = tuple(buckets)
        self.settle = timedelta(seconds=settle_seconds)
        self._settled = EndedTotals.empty(len(self.buckets))
        self._settled_until: datetime | None = None
        self._lock = asyncio.Lock()

    async def totals(self, store: Store) -> EndedTotals:
        async with self._lock:
            horizon = await store.now() - self.settle
            if self._settled_until is None or horizon > self._settled_until:
                newly = await self._ended(store, after=self._settled_until, until=horizon)
                self._settled = self._settled + newly
                self._settled_until = horizon
            return self._settled + await self._ended(store, after=self._settled_until)

    async def _ended(
        self, store: Store, *, after: datetime | None, until: datetime | None = None
    ) -> EndedTotals:
        totals = await store.figures.ended_totals(self.buckets, after=after, until=until)
        phases = await store.figures.phase_totals(PHASE_BUCKETS, after=after, until=until)
        return dataclasses.replace(totals, phases=phases)


class _Snapshot:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def exposition(
    store: Store,
    ended_jobs: EndedJobs,
    http: HttpMetrics,
    *,
    worker_alive: float,
    transport: Transport | None = None,
) -> bytes:
    """The Prometheus text of one scrape."""
    pending = await store.figures.pending_counts()
    ended = await ended_jobs.totals(store)
    workers = await store.list_workers(alive_within=worker_alive)

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
    phases = HistogramMetricFamily(
        "reporun_job_phase_seconds",
        "Where ended jobs' time went, by phase (wait, fetch, checkout, setup, sandbox_start,"
        " run, report)",
        labels=["phase"],
    )
    for name, (buckets, total, count) in ended.phases.items():
        phases.add_metric(
            [name],
            [(str(b), c) for b, c in zip(PHASE_BUCKETS, buckets, strict=True)] + [("+Inf", count)],
            sum_value=total,
        )
    families.append(phases)
    if transport is not None:
        families += _transport_families(transport)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry) + generate_latest(http.registry)


def _transport_families(transport: Transport) -> list[Metric]:
    """Kafka mode: the outbox not yet published, and the messages the workers have not taken."""
    backlog = GaugeMetricFamily(
        "reporun_outbox_unpublished", "Outbox messages not yet acknowledged by the broker"
    )
    backlog.add_metric([], transport.outbox_unpublished)
    oldest = GaugeMetricFamily(
        "reporun_outbox_oldest_seconds", "Age of the oldest unpublished outbox message"
    )
    oldest.add_metric([], transport.outbox_oldest_age or 0.0)
    families: list[Metric] = [backlog, oldest]
    if transport.consumer_lag is not None:
        lag = GaugeMetricFamily(
            "reporun_kafka_consumer_lag",
            "Messages on the jobs topic the workers' group has not committed",
            labels=["partition"],
        )
        for partition, behind in sorted(transport.consumer_lag.items()):
            lag.add_metric([str(partition)], behind)
        families.append(lag)
    up = GaugeMetricFamily("reporun_kafka_up", "1 when the broker answered this scrape")
    up.add_metric([], 0 if transport.consumer_lag is None else 1)
    families.append(up)
    return families
