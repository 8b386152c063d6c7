"""The rows of running jobs: claims under a lease, renewals, the one terminal record, and jobs
given back. The queue decides when to call these and wakes workers; every state change goes
through `transition`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reporun.jobs import Job, JobStatus, Lease, Outcome, Start
from reporun.store.dialect import clock
from reporun.store.logs import insert_chunk, log_counters
from reporun.store.moves import job_of, transition
from reporun.store.tables import jobs

if TYPE_CHECKING:
    from reporun.store.outbox import Outbox

RUNNING = [JobStatus.RUNNING]


def _held_by(job: Job, worker_id: str) -> list[sa.ColumnElement[bool]]:
    """This run of the job: the worker that claimed it, at the attempt it claimed."""
    return [jobs.c.worker == worker_id, jobs.c.attempts == job.attempts]


class Runs:
    def __init__(self, engine: AsyncEngine, outbox: Outbox | None = None) -> None:
        self.engine = engine
        self.outbox = outbox

    async def any_queued(self) -> bool:
        """A plain read: idle polls then cost no write lock (SQLite) or row locks (PostgreSQL)."""
        async with self.engine.connect() as conn:
            waiting = await conn.execute(
                sa.select(jobs.c.id).where(jobs.c.status == JobStatus.QUEUED.value).limit(1)
            )
            return waiting.first() is not None

    async def claim(
        self,
        worker_id: str,
        *,
        lease: timedelta,
        job_id: uuid.UUID | None = None,
        queued_for: float | None = None,
    ) -> Job | None:
        """Take the head of the queue (fair tag, then age) under a lease: of the jobs queued
        at least `queued_for` seconds, with `queued_for`; that one job, with `job_id` (None
        when it is no longer queued: running, ended or cancelled)."""
        now = clock(self.engine)
        target: uuid.UUID | sa.ScalarSelect[Any]
        if job_id is not None:
            target = job_id
        else:
            waiting = [jobs.c.status == JobStatus.QUEUED.value]
            if queued_for is not None:
                since = sa.func.coalesce(jobs.c.requeued_at, jobs.c.created_at)
                waiting.append(since <= now - timedelta(seconds=queued_for))
            target = (
                sa.select(jobs.c.id)
                .where(*waiting)
                .order_by(jobs.c.fair_tag, jobs.c.created_at, jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
        async with self.engine.begin() as conn:
            return await transition(
                conn,
                target,
                JobStatus.RUNNING,
                sources=[JobStatus.QUEUED],
                values={
                    "worker": worker_id,
                    "attempts": jobs.c.attempts + 1,
                    "started_at": now,
                    "lease_expires_at": now + lease,
                },
            )

    async def check(self, job: Job, worker_id: str) -> Lease:
        """Whether this run still holds the job and whether it was asked to stop (a read)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(jobs.c.cancel_requested).where(
                        jobs.c.id == job.id,
                        jobs.c.status == JobStatus.RUNNING.value,
                        *_held_by(job, worker_id),
                    )
                )
            ).first()
        if row is None:
            return Lease(held=False)
        return Lease(held=True, cancel_requested=bool(row.cancel_requested))

    async def renew(self, job: Job, worker_id: str, *, lease: timedelta) -> Lease:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.update(jobs)
                    .where(
                        jobs.c.id == job.id,
                        jobs.c.status == JobStatus.RUNNING.value,
                        *_held_by(job, worker_id),
                    )
                    .values(lease_expires_at=clock(self.engine) + lease)
                    .returning(jobs.c.cancel_requested)
                )
            ).first()
        if row is None:
            return Lease(held=False)
        return Lease(held=True, cancel_requested=bool(row.cancel_requested))

    async def started(self, job: Job, worker_id: str, start: Start) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job.id, *_held_by(job, worker_id))
                .values(start.values())
            )

    async def finish(self, job: Job, worker_id: str, outcome: Outcome) -> Job | None:
        """The end record, with what the run had not stored yet (its start, its log's tail),
        in one transaction: all of it, or nothing when the run no longer holds the job."""
        values: dict[str, Any] = {
            "exit_code": outcome.exit_code,
            "reason": outcome.reason,
            "phase_seconds": dict(outcome.phases),
            "finished_at": clock(self.engine),
            "lease_expires_at": None,
        }
        if outcome.start is not None:
            values |= outcome.start.values()
        tail = outcome.tail
        if tail is not None:
            values |= log_counters(tail.data, truncated=tail.truncated)
        async with self.engine.begin() as conn:
            done = await transition(
                conn,
                job.id,
                outcome.status,
                sources=RUNNING,
                where=_held_by(job, worker_id),
                values=values,
                outbox=self.outbox,
            )
            if done is not None and tail is not None:
                await insert_chunk(
                    conn,
                    job.id,
                    tail.seq,
                    tail.data,
                    log_bytes=done.log_bytes,
                    epoch=done.log_epoch,
                )
            return done

    async def release(
        self, job: Job, worker_id: str, reason: str, *, max_attempts: int, attempt_used: bool = True
    ) -> Job | None:
        """Give the job back: after a platform fault (the attempt is used), or on a stop the
        operator asked for (`attempt_used=False`: queued again as if never claimed)."""
        where = _held_by(job, worker_id)
        async with self.engine.begin() as conn:
            return await _give_back(
                conn, job.id, reason, where, max_attempts if attempt_used else None, self.outbox
            )

    async def release_workers(self, worker_ids: Sequence[str], reason: str) -> list[Job]:
        """Give back, without using an attempt, every job these workers still hold: they were
        stopped by the operator (and are gone), not lost."""
        if not worker_ids:
            return []
        async with self.engine.connect() as conn:
            held = (
                await conn.execute(
                    sa.select(jobs.c.id, jobs.c.worker).where(
                        jobs.c.status == JobStatus.RUNNING.value, jobs.c.worker.in_(worker_ids)
                    )
                )
            ).all()
        moved = []
        for job_id, worker in held:
            async with self.engine.begin() as conn:
                done = await _give_back(
                    conn, job_id, reason, [jobs.c.worker == worker], None, self.outbox
                )
            if done is not None:
                moved.append(done)
        return moved

    async def held_by(self, worker_ids: Sequence[str]) -> list[Job]:
        """The running jobs these workers hold, oldest claim first."""
        if not worker_ids:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(jobs)
                .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.worker.in_(worker_ids))
                .order_by(jobs.c.started_at, jobs.c.id)
            )
            return [job_of(row) for row in rows]

    async def reap(self, *, max_attempts: int) -> list[Job]:
        """Give back every running job whose lease expired (its worker is lost)."""
        now = clock(self.engine)
        async with self.engine.connect() as conn:
            expired = (
                await conn.execute(
                    sa.select(jobs.c.id, jobs.c.worker).where(
                        jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < now
                    )
                )
            ).all()
        moved = []
        for job_id, worker in expired:
            guard = [jobs.c.worker == worker, jobs.c.lease_expires_at < now]
            async with self.engine.begin() as conn:
                done = await _give_back(
                    conn, job_id, f"worker {worker} was lost", guard, max_attempts, self.outbox
                )
            if done is not None:
                moved.append(done)
        return moved


async def _give_back(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    reason: str,
    where: list[sa.ColumnElement[bool]],
    max_attempts: int | None,
    outbox: Outbox | None,
) -> Job | None:
    """Cancelled if asked, else queued again: with the claim's attempt given back when
    `max_attempts` is None (the operator stopped it), else while attempts remain, then error."""
    now = clock(conn.engine)
    done = await transition(
        conn,
        job_id,
        JobStatus.CANCELLED,
        sources=RUNNING,
        where=[*where, jobs.c.cancel_requested.is_(True)],
        values={"finished_at": now, "lease_expires_at": None, "reason": f"cancelled; {reason}"},
        outbox=outbox,
    )
    if done is not None:
        return done
    # The observer counts a re-queued job's wait from now: new work it is not.
    values: dict[str, Any] = {
        "worker": None,
        "started_at": None,
        "lease_expires_at": None,
        "requeued_at": now,
    }
    if max_attempts is None:
        values["attempts"] = sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0)
        return await transition(
            conn,
            job_id,
            JobStatus.QUEUED,
            sources=RUNNING,
            where=where,
            values=values,
            outbox=outbox,
        )
    done = await transition(
        conn,
        job_id,
        JobStatus.QUEUED,
        sources=RUNNING,
        where=[*where, jobs.c.attempts < max_attempts],
        values=values,
        outbox=outbox,
    )
    if done is None:
        done = await transition(
            conn,
            job_id,
            JobStatus.ERROR,
            sources=RUNNING,
            where=where,
            values={
                "finished_at": now,
                "lease_expires_at": None,
                "reason": f"{reason}; gave up after {max_attempts} attempts",
            },
            outbox=outbox,
        )
    return done
