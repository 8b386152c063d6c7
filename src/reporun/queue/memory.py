"""An in-memory queue with the semantics of the SQL one, for unit tests (no I/O)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta

from reporun.jobs import Job, JobSpec, JobStatus, check_transition
from reporun.queue import Lease, Outcome
from reporun.store import utcnow


class MemoryQueue:
    def __init__(self, *, lease_seconds: float = 30.0, max_attempts: int = 3) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.jobs: dict[uuid.UUID, Job] = {}
        self.tags: dict[uuid.UUID, int] = {}
        self.leases: dict[uuid.UUID, datetime] = {}
        self._wakeup = asyncio.Event()

    def add(self, spec: JobSpec, owner: str) -> Job:
        """Store a queued job (what the store does for the SQL queue)."""
        queued = [j for j in self.jobs.values() if j.status is JobStatus.QUEUED]
        head = min((self.tags[j.id] for j in queued), default=max(self.tags.values(), default=0))
        last = max((self.tags[j.id] for j in queued if j.owner == owner), default=None)
        job = Job(
            id=uuid.uuid4(),
            owner=owner,
            repo=spec.repo,
            ref=spec.ref,
            commit=None,
            command=spec.command,
            status=JobStatus.QUEUED,
            exit_code=None,
            reason=None,
            attempts=0,
            worker=None,
            created_at=utcnow(),
            started_at=None,
            finished_at=None,
            log_bytes=0,
            log_truncated=False,
            limits=spec.limits,
            env=spec.env,
        )
        self.jobs[job.id] = job
        self.tags[job.id] = max(head, last + 1 if last is not None else 0)
        return job

    def _move(self, job: Job, target: JobStatus, **values: object) -> Job:
        check_transition(job.status, target)
        moved = job.model_copy(update={"status": target, **values})
        self.jobs[job.id] = moved
        return moved

    def _ours(self, job: Job, worker_id: str) -> Job | None:
        current = self.jobs.get(job.id)
        if (
            current is None
            or current.status is not JobStatus.RUNNING
            or current.worker != worker_id
            or current.attempts != job.attempts
        ):
            return None
        return current

    async def enqueue(self, job: Job) -> None:
        self._wakeup.set()

    async def claim(self, worker_id: str) -> Job | None:
        queued = [j for j in self.jobs.values() if j.status is JobStatus.QUEUED]
        if not queued:
            return None
        head = min(queued, key=lambda j: (self.tags[j.id], j.created_at, j.id))
        now = utcnow()
        self.leases[head.id] = now + self.lease
        return self._move(
            head, JobStatus.RUNNING, worker=worker_id, attempts=head.attempts + 1, started_at=now
        )

    async def renew(self, job: Job, worker_id: str) -> Lease:
        current = self._ours(job, worker_id)
        if current is None:
            return Lease(held=False)
        self.leases[job.id] = utcnow() + self.lease
        return Lease(held=True, cancel_requested=current.cancel_requested)

    async def started(self, job: Job, worker_id: str, *, commit: str, command: str) -> None:
        if (current := self._ours(job, worker_id)) is not None:
            self.jobs[job.id] = current.model_copy(update={"commit": commit, "command": command})

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        current = self._ours(job, worker_id)
        if current is None:
            return None
        return self._move(
            current,
            outcome.status,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            finished_at=utcnow(),
        )

    async def release(self, job: Job, worker_id: str, reason: str) -> Job | None:
        current = self._ours(job, worker_id)
        return self._give_back(current, reason) if current is not None else None

    def _give_back(self, job: Job, reason: str) -> Job:
        self.leases.pop(job.id, None)
        if job.cancel_requested:
            return self._move(
                job, JobStatus.CANCELLED, finished_at=utcnow(), reason=f"cancelled; {reason}"
            )
        if job.attempts < self.max_attempts:
            return self._move(job, JobStatus.QUEUED, worker=None, started_at=None)
        return self._move(
            job,
            JobStatus.ERROR,
            finished_at=utcnow(),
            reason=f"{reason}; gave up after {self.max_attempts} attempts",
        )

    async def reap(self) -> int:
        now = utcnow()
        expired = [
            job
            for job in self.jobs.values()
            if job.status is JobStatus.RUNNING and self.leases.get(job.id, now) < now
        ]
        for job in expired:
            self._give_back(job, f"worker {job.worker} was lost")
        return len(expired)

    def cancel(self, job_id: uuid.UUID) -> Job:
        job = self.jobs[job_id]
        if job.status is JobStatus.QUEUED:
            return self._move(job, JobStatus.CANCELLED, finished_at=utcnow())
        if job.status is JobStatus.RUNNING:
            self.jobs[job_id] = job = job.model_copy(update={"cancel_requested": True})
        return job

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
