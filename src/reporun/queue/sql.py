"""The queue kept in the jobs table: leases and fair claims, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from reporun.jobs import Job, JobStatus
from reporun.queue import Lease, Outcome
from reporun.store import Store
from reporun.store.dialect import Listener, clock, notifies, notify
from reporun.store.tables import jobs

logger = logging.getLogger("reporun.queue")

# With LISTEN/NOTIFY working, polling only backs it up (a lost notification, a reconnect).
LISTENING_POLL = 2.0


class SqlQueue:
    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float,
        max_attempts: int,
        poll_interval: float,
        listen: bool = True,
    ) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._listener = (
            Listener(store.engine, self._wakeup.set) if listen and notifies(store.engine) else None
        )

    async def enqueue(self, job: Job) -> None:
        # The row is the queue entry: wake the workers waiting here and, on PostgreSQL, all.
        self._wakeup.set()
        if notifies(self.store.engine):
            async with self.store.engine.begin() as conn:
                await notify(conn)

    async def claim(self, worker_id: str) -> Job | None:
        # A read first: idle polls then cost no write lock (SQLite) or row locks (PostgreSQL).
        async with self.store.engine.connect() as conn:
            waiting = await conn.execute(
                sa.select(jobs.c.id).where(jobs.c.status == JobStatus.QUEUED.value).limit(1)
            )
            if waiting.first() is None:
                return None
        now = clock(self.store.engine)
        head = (
            sa.select(jobs.c.id)
            .where(jobs.c.status == JobStatus.QUEUED.value)
            .order_by(jobs.c.fair_tag, jobs.c.created_at, jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self.store.engine.begin() as conn:
            return await Store.transition(
                conn,
                head,
                JobStatus.RUNNING,
                sources=[JobStatus.QUEUED],
                values={
                    "worker": worker_id,
                    "attempts": jobs.c.attempts + 1,
                    "started_at": now,
                    "lease_expires_at": now + self.lease,
                },
            )

    def _ours(self, job: Job, worker_id: str) -> list[sa.ColumnElement[bool]]:
        return [jobs.c.worker == worker_id, jobs.c.attempts == job.attempts]

    async def renew(self, job: Job, worker_id: str) -> Lease:
        async with self.store.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.update(jobs)
                    .where(
                        jobs.c.id == job.id,
                        jobs.c.status == JobStatus.RUNNING.value,
                        *self._ours(job, worker_id),
                    )
                    .values(lease_expires_at=clock(self.store.engine) + self.lease)
                    .returning(jobs.c.cancel_requested)
                )
            ).first()
        if row is None:
            return Lease(held=False)
        return Lease(held=True, cancel_requested=bool(row.cancel_requested))

    async def started(self, job: Job, worker_id: str, *, commit: str, command: str) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job.id, *self._ours(job, worker_id))
                .values(commit=commit, command=command)
            )

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        async with self.store.engine.begin() as conn:
            return await Store.transition(
                conn,
                job.id,
                outcome.status,
                sources=[JobStatus.RUNNING],
                where=self._ours(job, worker_id),
                values={
                    "exit_code": outcome.exit_code,
                    "reason": outcome.reason,
                    "finished_at": clock(self.store.engine),
                    "lease_expires_at": None,
                },
            )

    async def release(self, job: Job, worker_id: str, reason: str) -> Job | None:
        async with self.store.engine.begin() as conn:
            return await self._give_back(conn, job.id, reason, where=self._ours(job, worker_id))

    async def _give_back(
        self,
        conn: AsyncConnection,
        job_id: uuid.UUID,
        reason: str,
        where: list[sa.ColumnElement[bool]],
    ) -> Job | None:
        """Cancelled if asked, queued again while attempts remain, else error."""
        running = [JobStatus.RUNNING]
        now = clock(self.store.engine)
        done = await Store.transition(
            conn,
            job_id,
            JobStatus.CANCELLED,
            sources=running,
            where=[*where, jobs.c.cancel_requested.is_(True)],
            values={"finished_at": now, "lease_expires_at": None, "reason": f"cancelled; {reason}"},
        )
        if done is None:
            done = await Store.transition(
                conn,
                job_id,
                JobStatus.QUEUED,
                sources=running,
                where=[*where, jobs.c.attempts < self.max_attempts],
                values={"worker": None, "started_at": None, "lease_expires_at": None},
            )
            if done is not None:
                await notify(conn)
        if done is None:
            done = await Store.transition(
                conn,
                job_id,
                JobStatus.ERROR,
                sources=running,
                where=where,
                values={
                    "finished_at": now,
                    "lease_expires_at": None,
                    "reason": f"{reason}; gave up after {self.max_attempts} attempts",
                },
            )
        return done

    async def reap(self) -> int:
        now = clock(self.store.engine)
        async with self.store.engine.connect() as conn:
            expired = (
                await conn.execute(
                    sa.select(jobs.c.id, jobs.c.worker).where(
                        jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now
                    )
                )
            ).all()
        reaped = 0
        for job_id, worker in expired:
            async with self.store.engine.begin() as conn:
                guard = [jobs.c.worker == worker, jobs.c.lease_expires_at < now]
                if await self._give_back(conn, job_id, f"worker {worker} was lost", guard):
                    reaped += 1
        return reaped

    async def wait(self, timeout: float) -> None:
        poll = self.poll_interval
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

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
