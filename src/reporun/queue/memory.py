"""An in-memory queue with the semantics of the SQL one, for unit tests (no I/O)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta

from reporun.errors import NotFound
from reporun.jobs import Job, JobSpec, JobStatus, Lease, Outcome, Start, check_transition
from reporun.queue import QueueConfig
from reporun.store import Quota, utcnow


class MemoryQueue:
    check_name = "queue"

    def __init__(self, config: QueueConfig | None = None) -> None:
        self.config = config or QueueConfig()
        self.lease = timedelta(seconds=self.config.lease_seconds)
        self.max_attempts = self.config.max_attempts
        self.jobs: dict[uuid.UUID, Job] = {}
        self.tags: dict[uuid.UUID, int] = {}
        self.leases: dict[uuid.UUID, datetime] = {}
        self._wakeup = asyncio.Event()

    async def submit(self, spec: JobSpec, owner: str, *, quota: Quota | None = None) -> Job:
        if quota is not None:
            self._check_quota(quota, owner)
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
            local_sources=spec.local_sources,
            network_open=spec.network_open,
            runtime_requested=spec.runtime,
            setup=spec.setup,
            rerun_of=spec.rerun_of,
        )
        self.jobs[job.id] = job
        self.tags[job.id] = max(head, last + 1 if last is not None else 0)
        self._wakeup.set()
        return job

    def _check_quota(self, quota: Quota, owner: str) -> None:
        mine = [j for j in self.jobs.values() if j.owner == owner]
        pending = sum(1 for j in mine if not j.status.terminal)
        if quota.pending and pending >= quota.pending:
            raise quota.too_many_pending(pending)
        since = utcnow() - timedelta(seconds=60)
        if quota.per_minute and sum(1 for j in mine if j.created_at > since) >= quota.per_minute:
            raise quota.too_fast()

    async def get(self, job_id: uuid.UUID) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"no job {job_id}") from None

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

    async def check(self, job: Job, worker_id: str) -> Lease:
        current = self._ours(job, worker_id)
        if current is None:
            return Lease(held=False)
        return Lease(held=True, cancel_requested=current.cancel_requested)

    async def renew(self, job: Job, worker_id: str) -> Lease:
        current = self._ours(job, worker_id)
        if current is None:
            return Lease(held=False)
        self.leases[job.id] = utcnow() + self.lease
        return Lease(held=True, cancel_requested=current.cancel_requested)

    async def started(self, job: Job, worker_id: str, start: Start) -> None:
        if (current := self._ours(job, worker_id)) is not None:
            self.jobs[job.id] = current.model_copy(update=start.values())

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        current = self._ours(job, worker_id)
        if current is None:
            return None
        return self._move(
            current,
            outcome.status,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            phase_seconds=dict(outcome.phases),
            finished_at=utcnow(),
        )

    async def release(
        self, job: Job, worker_id: str, reason: str, *, attempt_used: bool = True
    ) -> Job | None:
        current = self._ours(job, worker_id)
        if current is None:
            return None
        if not attempt_used and not current.cancel_requested:
            self.leases.pop(job.id, None)
            attempts = max(current.attempts - 1, 0)
            done = self._move(
                current, JobStatus.QUEUED, worker=None, started_at=None, attempts=attempts
            )
        else:
            done = self._give_back(current, reason)
        if done.status is JobStatus.QUEUED:
            self._wakeup.set()
        return done

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
        if expired:
            self._wakeup.set()
        return len(expired)

    async def cancel(self, job_id: uuid.UUID, *, owner: str | None = None) -> Job:
        job = await self.get(job_id)
        if owner is not None and job.owner != owner:
            raise NotFound(f"no job {job_id}")
        if job.status is JobStatus.QUEUED:
            return self._move(
                job,
                JobStatus.CANCELLED,
                finished_at=utcnow(),
                reason="cancelled before it started",
                cancel_requested=True,
            )
        if job.status is JobStatus.RUNNING:
            self.jobs[job_id] = job = job.model_copy(update={"cancel_requested": True})
        return job

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    async def ping(self) -> None:
        return None

    async def transport(self) -> None:
        return None

    async def close(self) -> None:
        return None
