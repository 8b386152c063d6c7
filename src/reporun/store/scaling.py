"""What the observer reads and writes: the queue's recent waits and backlog, finished jobs, and
its scaling decisions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from reporun.jobs import TERMINAL, JobStatus
from reporun.store.dialect import clock, read_clock, seconds_between
from reporun.store.tables import UTCDateTime, jobs, scaling_decisions


def _running() -> sa.Select[Any]:
    return sa.select(jobs.c.worker, jobs.c.id).where(jobs.c.status == JobStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    at: datetime
    waits: list[float]  # queue waits of the jobs that started within the window
    queued: int
    running: int
    oldest_queued_age: float | None
    busy_workers: dict[str, uuid.UUID]  # worker -> the running job it holds


@dataclass(frozen=True, slots=True)
class FinishedJob:
    id: uuid.UUID
    owner: str
    status: str
    created_at: datetime
    finished_at: datetime
    wait_seconds: float | None
    run_seconds: float | None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    id: int
    at: datetime
    scaler: str
    direction: str
    actual: int
    desired: int
    reason: str
    inputs: dict[str, Any]


class ScalingRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def snapshot(self, window: float) -> QueueSnapshot:
        """The queue now: waits of jobs started in the last `window` seconds (index on
        started_at), queued and running counts, the oldest queued job's age. A job given back
        to the queue (its worker lost, or stopped) waits from then: the time it ran before is
        no wait of new work."""
        entered = sa.func.coalesce(jobs.c.requeued_at, jobs.c.created_at, type_=UTCDateTime)
        wait = seconds_between(entered, jobs.c.started_at, self.engine.dialect.name)
        queued = jobs.c.status == JobStatus.QUEUED.value
        async with self.engine.connect() as conn:
            now = await read_clock(conn)
            since = sa.literal(now - timedelta(seconds=window), type_=jobs.c.started_at.type)
            waits = [
                max(0.0, float(v))
                for (v,) in await conn.execute(sa.select(wait).where(jobs.c.started_at > since))
            ]
            count, oldest = (
                await conn.execute(sa.select(sa.func.count(), sa.func.min(entered)).where(queued))
            ).one()
            busy = (await conn.execute(_running())).all()
        return QueueSnapshot(
            at=now,
            waits=waits,
            queued=int(count),
            running=len(busy),
            oldest_queued_age=max(0.0, (now - oldest).total_seconds()) if oldest else None,
            busy_workers={worker: job_id for worker, job_id in busy if worker},
        )

    async def busy_workers(self) -> dict[str, uuid.UUID]:
        """Worker -> the running job it holds (what a heartbeat says only later)."""
        async with self.engine.connect() as conn:
            return {worker: job_id for worker, job_id in await conn.execute(_running()) if worker}

    async def finished_between(
        self,
        after: datetime | None,
        until: datetime,
        *,
        limit: int = 1000,
        after_id: uuid.UUID | None = None,
    ) -> list[FinishedJob]:
        """Jobs that ended in (after, until], oldest first (index on finished_at); with
        `after_id`, those that ended at `after` itself with a greater id too (keyset)."""
        stmt = (
            sa.select(
                jobs.c.id,
                jobs.c.owner,
                jobs.c.status,
                jobs.c.created_at,
                jobs.c.started_at,
                jobs.c.finished_at,
            )
            .where(
                jobs.c.finished_at <= sa.literal(until, type_=jobs.c.finished_at.type),
                jobs.c.status.in_([s.value for s in TERMINAL]),
            )
            .order_by(jobs.c.finished_at, jobs.c.id)
            .limit(limit)
        )
        if after is not None:
            stamp = sa.literal(after, type_=jobs.c.finished_at.type)
            if after_id is None:
                stmt = stmt.where(jobs.c.finished_at > stamp)
            else:
                key = sa.literal(after_id, type_=jobs.c.id.type)
                stmt = stmt.where(sa.tuple_(jobs.c.finished_at, jobs.c.id) > sa.tuple_(stamp, key))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            FinishedJob(
                id=row.id,
                owner=row.owner,
                status=row.status,
                created_at=row.created_at,
                finished_at=row.finished_at,
                wait_seconds=(row.started_at - row.created_at).total_seconds()
                if row.started_at
                else None,
                run_seconds=(row.finished_at - row.started_at).total_seconds()
                if row.started_at
                else None,
            )
            for row in rows
        ]

    async def record(
        self,
        *,
        scaler: str,
        direction: str,
        actual: int,
        desired: int,
        reason: str,
        inputs: dict[str, Any],
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.insert(scaling_decisions).values(
                    at=clock(self.engine),
                    scaler=scaler,
                    direction=direction,
                    actual=actual,
                    desired=desired,
                    reason=reason,
                    inputs=inputs,
                )
            )

    async def decisions(self, *, limit: int = 50) -> list[DecisionRecord]:
        """The newest decisions first."""
        stmt = sa.select(scaling_decisions).order_by(scaling_decisions.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [DecisionRecord(**dict(row._mapping)) for row in await conn.execute(stmt)]

    async def counts(self) -> dict[str, int]:
        """Decisions so far, by direction."""
        stmt = sa.select(scaling_decisions.c.direction, sa.func.count()).group_by(
            scaling_decisions.c.direction
        )
        async with self.engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(stmt)}
