"""The queue: who runs which job next, under a lease.

`QueueBackend` is the interface; `sql` keeps the queue in the jobs table (SQLite or PostgreSQL),
`memory` is for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from reporun.jobs import Job, JobStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as the worker reports it."""

    status: JobStatus
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """The answer to a renewal."""

    held: bool
    cancel_requested: bool = False


class QueueBackend(Protocol):
    async def enqueue(self, job: Job) -> None:
        """Make a stored, queued job available to workers."""

    async def claim(self, worker_id: str) -> Job | None:
        """Take the next job under a lease, fairly across owners; None when none is queued."""

    async def renew(self, job: Job, worker_id: str) -> Lease:
        """Extend the lease on a running job; `held` is False when the job is no longer ours."""

    async def started(self, job: Job, worker_id: str, *, commit: str, command: str) -> None:
        """Record what a running job resolved to: the commit and the command that runs."""

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        """Write the one terminal record; None when the job was no longer ours."""

    async def release(self, job: Job, worker_id: str, reason: str) -> Job | None:
        """Give a running job back after a platform fault: queued again, or error past the
        maximum attempts."""

    async def reap(self) -> int:
        """Handle running jobs whose lease expired (their worker is lost); returns how many."""

    async def wait(self, timeout: float) -> None:
        """Return when a job may be available, or after `timeout` seconds."""

    async def ping(self) -> None:
        """Raise unless the queue answers."""

    async def close(self) -> None: ...
