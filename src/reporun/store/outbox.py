"""The outbox (REPORUN_QUEUE=kafka): a message for each job that became queued (to hand it out)
and for each job that ended (the seed's `results`), written in the same transaction as the
change, so Kafka never hears of a job, or of an end, that PostgreSQL rolled back. The relay
(reporun.queue.relay) publishes the rows and marks them published after the broker's ack."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reporun.jobs import Job, JobStatus
from reporun.store.dialect import OUTBOX_CHANNEL, clock, notify, read_clock
from reporun.store.tables import outbox


def _millis(stamp: datetime | None) -> int | None:
    return None if stamp is None else int(stamp.timestamp() * 1000)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def job_message(job: Job) -> dict[str, Any]:
    """What the `jobs` topic carries: which job to claim (the row holds the rest, and no
    repository URL, which may carry a credential, travels through the broker)."""
    return {
        "jobId": str(job.id),
        "attempt": job.attempts + 1,
        "timeJobPosted": _millis(job.created_at),
    }


def result_message(job: Job, requeued_at: datetime | None = None) -> dict[str, Any]:
    """What the `results` topic carries: the seed's fields (`code`, `timeJobPosted`,
    `timeExecution`, the wait), with the job's id and status. Times in milliseconds; the wait
    is that of the run that ended, from when the job last went back to the queue (as the SQL
    signal counts it: a lost worker's run is no wait)."""
    waited = None
    if job.started_at is not None:
        since = requeued_at if requeued_at is not None else job.created_at
        waited = max(0.0, (job.started_at - since).total_seconds())
    return {
        "jobId": str(job.id),
        "status": job.status.value,
        "code": "Finished" if job.status is JobStatus.SUCCEEDED else "Failed",
        "exitCode": job.exit_code,
        "attempts": job.attempts,
        "timeJobPosted": _millis(job.created_at),
        "timeFinished": _millis(job.finished_at),
        "timeExecution": _ms(job.run_seconds),
        "timeWaited": _ms(waited),
    }


@dataclass(frozen=True, slots=True)
class Outbox:
    """Where a change of a job is announced: the topics of its messages."""

    jobs_topic: str = "jobs"
    results_topic: str = "results"

    async def record(
        self, conn: AsyncConnection, job: Job, *, requeued_at: datetime | None = None
    ) -> None:
        """Add the message for the state `job` is now in (none for `running`), in `conn`'s
        transaction, and wake the relays when it commits."""
        if job.status is JobStatus.QUEUED:
            topic, payload = self.jobs_topic, job_message(job)
        elif job.status.terminal:
            topic, payload = self.results_topic, result_message(job, requeued_at)
        else:
            return
        await conn.execute(
            sa.insert(outbox).values(topic=topic, payload=payload, created_at=clock(conn.engine))
        )
        await notify(conn, OUTBOX_CHANNEL)


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    topic: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Backlog:
    unpublished: int
    oldest_age: float | None  # seconds


class OutboxRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def take(self, conn: AsyncConnection, limit: int) -> list[Pending]:
        """Lock up to `limit` unpublished rows, oldest first, skipping rows another relay holds:
        in `conn`'s transaction, which `mark`s them once the broker acked."""
        rows = await conn.execute(
            sa.select(outbox)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [Pending(r.id, r.topic, r.payload, r.created_at) for r in rows]

    async def mark(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        """Published, at the time of the broker's ack (not the transaction's start)."""
        acked = (
            sa.func.clock_timestamp() if conn.dialect.name == "postgresql" else clock(conn.engine)
        )
        await conn.execute(sa.update(outbox).where(outbox.c.id.in_(ids)).values(published_at=acked))

    async def backlog(self) -> Backlog:
        async with self.engine.connect() as conn:
            count, oldest = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
            now = await read_clock(conn)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
        return Backlog(int(count), age)

    async def prune(self, *, older_than: float, batch: int = 5000) -> int:
        """Forget up to `batch` rows published more than `older_than` seconds ago."""
        cutoff = clock(self.engine) - timedelta(seconds=older_than)
        old = (
            sa.select(outbox.c.id)
            .where(outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)
            .order_by(outbox.c.published_at)
            .limit(batch)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(outbox).where(outbox.c.id.in_(old)))
        return int(result.rowcount or 0)
