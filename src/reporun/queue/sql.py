"""The queue kept in the jobs table (SQLite or PostgreSQL): the store's rows handed out under
leases, and idle workers woken by LISTEN/NOTIFY on PostgreSQL, by polling everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from reporun.jobs import Job, JobSpec, JobStatus, Lease, Outcome, Start
from reporun.queue import QueueConfig
from reporun.store import Quota, Store
from reporun.store.dialect import Listener, notifies, notify

logger = logging.getLogger("reporun.queue")

# With LISTEN/NOTIFY working, polling only backs it up (a lost notification, a reconnect).
LISTENING_POLL = 2.0


class SqlQueue:
    check_name = "queue"

    def __init__(self, store: Store, config: QueueConfig) -> None:
        self.store = store
        self.config = config
        self.lease = timedelta(seconds=config.lease_seconds)
        self._wakeup = asyncio.Event()
        self._found = False  # the last claim found a job
        self._notifies = notifies(store.engine)
        self._listener = (
            Listener(store.engine, self._wakeup.set) if config.notify and self._notifies else None
        )

    async def _wake(self) -> None:
        """A job became available: wake the workers waiting here and, on PostgreSQL, all."""
        self._wakeup.set()
        if self._notifies:
            async with self.store.engine.begin() as conn:
                await notify(conn)

    async def submit(self, spec: JobSpec, owner: str, *, quota: Quota | None = None) -> Job:
        job = await self.store.create_job(spec, owner, quota=quota)
        await self._wake()
        return job

    async def cancel(self, job_id: uuid.UUID, *, owner: str | None = None) -> Job:
        return await self.store.cancel(job_id, owner=owner)

    async def get(self, job_id: uuid.UUID) -> Job:
        return await self.store.get_job(job_id)

    async def claim(self, worker_id: str) -> Job | None:
        # An idle worker's polls look first (a read takes no write lock); right after a claim
        # that found a job, the queue is likely to hold more, and the look would cost a query.
        if not self._found and not await self.store.runs.any_queued():
            return None
        job = await self.store.runs.claim(worker_id, lease=self.lease)
        self._found = job is not None
        return job

    async def check(self, job: Job, worker_id: str) -> Lease:
        return await self.store.runs.check(job, worker_id)

    async def renew(self, job: Job, worker_id: str) -> Lease:
        return await self.store.runs.renew(job, worker_id, lease=self.lease)

    async def started(self, job: Job, worker_id: str, start: Start) -> None:
        await self.store.runs.started(job, worker_id, start)

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        return await self.store.runs.finish(job, worker_id, outcome)

    async def release(
        self, job: Job, worker_id: str, reason: str, *, attempt_used: bool = True
    ) -> Job | None:
        done = await self.store.runs.release(
            job,
            worker_id,
            reason,
            max_attempts=self.config.max_attempts,
            attempt_used=attempt_used,
        )
        if done is not None and done.status is JobStatus.QUEUED:
            await self._wake()
        return done

    async def reap(self) -> int:
        moved = await self.store.runs.reap(max_attempts=self.config.max_attempts)
        if any(job.status is JobStatus.QUEUED for job in moved):
            await self._wake()
        return len(moved)

    async def wait(self, timeout: float) -> None:
        poll = self.config.poll_interval
        if self._listener is not None:
            if not self._listener.alive:
                try:
                    await self._listener.start()
                except Exception as exc:
                    extra = {"action": "listen", "reason": str(exc)}
                    logger.warning("cannot LISTEN; polling", extra=extra)
            if self._listener.alive:
                poll = max(poll, LISTENING_POLL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), min(timeout, poll))
        self._wakeup.clear()

    async def ping(self) -> None:
        # The queue is the jobs table: the database's own readiness check already asked.
        return None

    async def transport(self) -> None:
        return None

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
