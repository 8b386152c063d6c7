"""The queue: who runs which job next, under a lease, and waking the workers that wait.

Where the line runs: the store owns the job rows and every change of their state (through one
checked transition); a queue backend decides what a worker gets next, hands it out under a
lease, and wakes idle workers when work arrives. Every backend implements the whole
`QueueBackend`, so one contract test runs them all the same way: `sql` keeps the queue in the
jobs table (SQLite or PostgreSQL), `kafka` hands out PostgreSQL's rows through Kafka (with an
outbox and its relay), `memory` is for unit tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from reporun.jobs import Job, JobSpec, Lease, Outcome, Start
from reporun.store import Quota

__all__ = ["Lease", "Outcome", "QueueBackend", "QueueConfig", "Transport"]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    lease_seconds: float = 30.0
    max_attempts: int = 3
    # How often an idle worker looks for work when nothing wakes it.
    poll_interval: float = 0.2
    # PostgreSQL: wake idle workers with LISTEN/NOTIFY (False: poll only).
    notify: bool = True


@dataclass(frozen=True, slots=True)
class Transport:
    """How the messages of a broker-backed queue are doing (for /metrics)."""

    outbox_unpublished: int
    outbox_oldest_age: float | None
    # Messages the workers' group has not committed, by partition; None: the broker is away.
    consumer_lag: dict[int, int] | None


class QueueBackend(Protocol):
    config: QueueConfig
    # What /readyz calls the queue's check: `queue`, or the broker it depends on (`kafka`).
    check_name: str

    async def submit(self, spec: JobSpec, owner: str, *, quota: Quota | None = None) -> Job:
        """Store a queued job (within `quota`) and make it available to workers."""

    async def cancel(self, job_id: uuid.UUID, *, owner: str | None = None) -> Job:
        """End a queued job at once; flag a running one, whose worker then stops it.
        NotFound when there is no such job (or it is not `owner`'s)."""

    async def get(self, job_id: uuid.UUID) -> Job:
        """The job as it is now; NotFound when there is none."""

    async def claim(self, worker_id: str) -> Job | None:
        """Take the next job under a lease, fairly across owners; None when none is queued."""

    async def check(self, job: Job, worker_id: str) -> Lease:
        """Whether this run still holds the job, and whether it was asked to stop (no write).
        The one way a worker learns of a cancel, with `renew`."""

    async def renew(self, job: Job, worker_id: str) -> Lease:
        """Extend the lease on a running job; `held` is False when the job is no longer ours."""

    async def started(self, job: Job, worker_id: str, start: Start) -> None:
        """Record what a running job resolved to (`Start`)."""

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        """Write the one terminal record; None when the job was no longer ours."""

    async def release(
        self, job: Job, worker_id: str, reason: str, *, attempt_used: bool = True
    ) -> Job | None:
        """Give a running job back after a platform fault: queued again, or error past the
        maximum attempts. `attempt_used=False` (the worker was told to stop): queued again
        with its attempts as before the claim."""

    async def reap(self) -> int:
        """Give back running jobs whose lease expired (their worker is lost); how many."""

    async def wait(self, timeout: float) -> None:
        """Return when a job may be available, or after `timeout` seconds."""

    async def ping(self) -> None:
        """Raise unless the queue answers."""

    async def transport(self) -> Transport | None:
        """The outbox and the consumers' lag, for a queue with a broker; None for the rest."""

    async def close(self) -> None: ...
