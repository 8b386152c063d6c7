"""The one way a stored job changes state: a guarded UPDATE whose move `check_transition`
allows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from reporun.jobs import Job, JobStatus, check_transition, sources_of
from reporun.store.tables import jobs

if TYPE_CHECKING:
    from reporun.store.outbox import Outbox


def job_of(row: sa.Row[Any]) -> Job:
    return Job.model_validate(dict(row._mapping))


async def transition(
    conn: AsyncConnection,
    job_id: uuid.UUID | sa.ScalarSelect[Any],
    target: JobStatus,
    *,
    sources: Iterable[JobStatus] | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    values: dict[str, Any] | None = None,
    outbox: Outbox | None = None,
) -> Job | None:
    """Move a job to `target` if it is in one of `sources` (default: every state that may move
    there) and matches `where`; None when it did not. With an `outbox` (Kafka mode), the
    change is announced in the same transaction."""
    allowed = frozenset(sources) if sources is not None else sources_of(target)
    for source in allowed:
        check_transition(source, target)
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in allowed]), *where)
        .values(status=target.value, **(values or {}))
        .returning(*jobs.c)
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    job = job_of(row)
    if outbox is not None:
        await outbox.record(conn, job, requeued_at=row._mapping["requeued_at"])
    return job
