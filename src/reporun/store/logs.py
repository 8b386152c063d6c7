"""Jobs' logs: chunks in order, each with the byte offset it begins at (a stream resumes
from an offset), written only by the run that holds the job."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reporun.jobs import JobStatus
from reporun.store.tables import job_logs, jobs


@dataclass(frozen=True, slots=True)
class LogChunk:
    seq: int
    offset: int  # where it begins in the log, in bytes
    data: bytes
    epoch: int = 0  # which log of the job it belongs to (Job.log_epoch)

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


# Jobs per query when many logs are read at once (SQLite's expressions stop at a depth of 1000).
BATCH = 200


def log_counters(data: bytes, *, truncated: bool) -> dict[str, Any]:
    """The job's columns a chunk of `data` changes: its log's length, and whether it was cut."""
    values: dict[str, Any] = {"log_bytes": jobs.c.log_bytes + len(data)}
    if truncated:
        values["log_truncated"] = True
    return values


async def insert_chunk(
    conn: AsyncConnection, job_id: uuid.UUID, seq: int, data: bytes, *, log_bytes: int, epoch: int
) -> None:
    """Store a chunk, in the transaction that counted it (`log_bytes`: the length with it)."""
    if data:
        await conn.execute(
            sa.insert(job_logs).values(
                job_id=job_id, seq=seq, data=data, offset=log_bytes - len(data), epoch=epoch
            )
        )


class Logs:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def append(
        self,
        job_id: uuid.UUID,
        seq: int,
        data: bytes,
        *,
        truncated: bool = False,
        worker: str | None = None,
        attempt: int | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """Add a chunk to a job's log; with `worker` and `attempt`, only while that run still
        holds the job (a worker that lost its lease writes nothing). `fields`: other columns of
        the job set in the same statement (the run's start)."""
        guard: list[sa.ColumnElement[bool]] = [jobs.c.id == job_id]
        if worker is not None:
            guard += [jobs.c.worker == worker, jobs.c.status == JobStatus.RUNNING.value]
        if attempt is not None:
            guard.append(jobs.c.attempts == attempt)
        values = {**(fields or {}), **log_counters(data, truncated=truncated)}
        async with self.engine.begin() as conn:
            held = await conn.execute(
                sa.update(jobs)
                .where(*guard)
                .values(**values)
                .returning(jobs.c.log_bytes, jobs.c.log_epoch)
            )
            row = held.first()
            if row is None:
                return False
            await insert_chunk(
                conn, job_id, seq, data, log_bytes=row.log_bytes, epoch=row.log_epoch
            )
        return True

    async def reset(
        self, job_id: uuid.UUID, *, worker: str | None = None, attempt: int | None = None
    ) -> bool:
        """Forget what earlier runs wrote, starting the job's next log (its epoch); with
        `worker` and `attempt`, only while that run still holds the job (a run that lost it
        leaves its successor's log alone)."""
        guard: list[sa.ColumnElement[bool]] = [jobs.c.id == job_id]
        if worker is not None:
            guard += [jobs.c.worker == worker, jobs.c.status == JobStatus.RUNNING.value]
        if attempt is not None:
            guard.append(jobs.c.attempts == attempt)
        async with self.engine.begin() as conn:
            held = await conn.execute(
                sa.update(jobs)
                .where(*guard)
                .values(log_bytes=0, log_truncated=False, log_epoch=jobs.c.log_epoch + 1)
            )
            if held.rowcount == 0:
                return False
            await conn.execute(sa.delete(job_logs).where(job_logs.c.job_id == job_id))
        return True

    async def read_from(
        self, job_id: uuid.UUID, offset: int, epoch: int, *, limit: int | None = None
    ) -> list[LogChunk]:
        """The chunks of a job's log `epoch` that hold bytes from `offset` on, in order (the
        first `limit` of them)."""
        stmt = (
            sa.select(job_logs.c.seq, job_logs.c.offset, job_logs.c.data, job_logs.c.epoch)
            .where(
                job_logs.c.job_id == job_id,
                job_logs.c.epoch == epoch,
                job_logs.c.offset + sa.func.length(job_logs.c.data) > offset,
            )
            .order_by(job_logs.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [
                LogChunk(row.seq, row.offset, bytes(row.data), row.epoch)
                for row in await conn.execute(stmt)
            ]

    async def read_after(
        self, after: Mapping[uuid.UUID, tuple[int, int]]
    ) -> dict[uuid.UUID, list[LogChunk]]:
        """For each job, the chunks of its log `after[job][0]` past seq `after[job][1]`: every
        followed log's new chunks, in a read per BATCH jobs."""
        found: dict[uuid.UUID, list[LogChunk]] = {}
        items = list(after.items())
        async with self.engine.connect() as conn:
            for at in range(0, len(items), BATCH):
                stmt = (
                    sa.select(
                        job_logs.c.job_id,
                        job_logs.c.seq,
                        job_logs.c.offset,
                        job_logs.c.data,
                        job_logs.c.epoch,
                    )
                    .where(
                        sa.or_(
                            *(
                                sa.and_(
                                    job_logs.c.job_id == job_id,
                                    job_logs.c.epoch == epoch,
                                    job_logs.c.seq > seq,
                                )
                                for job_id, (epoch, seq) in items[at : at + BATCH]
                            )
                        )
                    )
                    .order_by(job_logs.c.job_id, job_logs.c.seq)
                )
                for row in await conn.execute(stmt):
                    found.setdefault(row.job_id, []).append(
                        LogChunk(row.seq, row.offset, bytes(row.data), row.epoch)
                    )
        return found

    async def last_seqs(self, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Each job's last chunk's seq (-1: none yet), in a read per BATCH jobs."""
        found: dict[uuid.UUID, int] = {}
        async with self.engine.connect() as conn:
            for at in range(0, len(job_ids), BATCH):
                stmt = (
                    sa.select(job_logs.c.job_id, sa.func.max(job_logs.c.seq))
                    .where(job_logs.c.job_id.in_(job_ids[at : at + BATCH]))
                    .group_by(job_logs.c.job_id)
                )
                found |= {row[0]: row[1] for row in await conn.execute(stmt)}
        return {job_id: found.get(job_id, -1) for job_id in job_ids}

    async def read(self, job_id: uuid.UUID, *, after: int = -1) -> list[tuple[int, bytes]]:
        stmt = (
            sa.select(job_logs.c.seq, job_logs.c.data)
            .where(job_logs.c.job_id == job_id, job_logs.c.seq > after)
            .order_by(job_logs.c.seq)
        )
        async with self.engine.connect() as conn:
            return [(row.seq, bytes(row.data)) for row in await conn.execute(stmt)]
